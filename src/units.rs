//! Human-readable sizes (`"64MiB"`) and durations (`"500ms"`) for the config.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A size in bytes, written as an integer or `"<n><unit>"` with unit one of
/// `B`, `KB`/`MB`/`GB` (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB` (powers
/// of 1024). At most [`ByteSize::MAX`]: a size beyond any disk is a typo,
/// and letting it saturate would silently turn a quota into no quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The largest size a config may hold: 1 PiB (1024TiB).
    pub const MAX: u64 = 1 << 50;

    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num.parse().map_err(|_| {
            format!("`{s}` is not a size: expected e.g. \"64MiB\", \"500KB\" or 1024")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit `{other}`: use B, KB, MB, GB, KiB, MiB, GiB or TiB"
                ))
            }
        };
        ByteSize::checked((num * mult as f64).round(), s)
    }

    /// `bytes` as a size, or why it is beyond sense (`written` as the user
    /// wrote it).
    fn checked(bytes: f64, written: &str) -> Result<ByteSize, String> {
        if !bytes.is_finite() || bytes > ByteSize::MAX as f64 {
            return Err(format!(
                "`{written}` is more than the largest size weir accepts, 1024TiB"
            ));
        }
        Ok(ByteSize(bytes as u64))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{}{unit}", b / m);
            }
        }
        write!(f, "{b}B")
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))?;
                self.visit_u64(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                ByteSize::checked(v as f64, &v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                if v < 0.0 || v.fract() != 0.0 {
                    return Err(E::custom("a size is a whole number of bytes"));
                }
                ByteSize::checked(v, &v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as `"<n><unit>"`, unit one of `ms`, `s`, `m`, `h`, `d`
/// (several may follow each other: `"1h30m"`). At most a year
/// ([`HumanDuration::MAX`]): no timeout, interval or age weir has makes
/// sense beyond it, and a longer one is most likely a unit typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The longest duration a config may hold: 365 days.
    pub const MAX: Duration = Duration::from_secs(365 * 86_400);

    pub fn parse(s: &str) -> Result<HumanDuration, String> {
        let bad = || {
            format!("`{s}` is not a duration: expected e.g. \"500ms\", \"10s\", \"5m\", \"1h30m\"")
        };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let too_long = || format!("`{s}` is longer than a year (365d), the most weir accepts");
            let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let (ms_per, secs_per) = match unit {
                "ms" => (1, 0),
                "s" => (0, 1),
                "m" | "min" => (0, 60),
                "h" => (0, 3600),
                "d" => (0, 86400),
                _ => return Err(bad()),
            };
            let part = if ms_per == 1 {
                Duration::from_millis(n)
            } else {
                Duration::from_secs(n.checked_mul(secs_per).ok_or_else(too_long)?)
            };
            total = total
                .checked_add(part)
                .filter(|t| *t <= HumanDuration::MAX)
                .ok_or_else(too_long)?;
        }
        Ok(HumanDuration(total))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => f.write_str("0s"),
            ms if ms % 86_400_000 == 0 => write!(f, "{}d", ms / 86_400_000),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("1GiB").unwrap().0, 1 << 30);
        assert_eq!(ByteSize::parse("500KB").unwrap().0, 500_000);
        assert_eq!(ByteSize::parse("1.5KiB").unwrap().0, 1536);
        assert_eq!(ByteSize::parse("42").unwrap().0, 42);
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
    }

    #[test]
    fn sizes_beyond_sense_are_refused_not_saturated() {
        assert_eq!(ByteSize::parse("1024TiB").unwrap().0, 1 << 50);
        let infinite = format!("{}B", "9".repeat(400));
        for bad in [
            "99999999999999999999TiB",
            "1025TiB",
            &infinite,
            "18446744073709551615",
        ] {
            let err = ByteSize::parse(bad).unwrap_err();
            assert!(err.contains("largest size"), "{bad}: {err}");
        }
        let toml = |v: &str| {
            toml::from_str::<std::collections::BTreeMap<String, ByteSize>>(&format!("x = {v}"))
        };
        assert_eq!(toml("1024").unwrap()["x"], ByteSize(1024));
        assert!(toml("4000000000000000000").is_err());
        assert!(toml("-1").is_err());
    }

    #[test]
    fn durations_beyond_a_year_are_refused_and_never_overflow() {
        assert_eq!(HumanDuration::parse("365d").unwrap().0, HumanDuration::MAX);
        for bad in [
            "366d",
            "365d1ms",
            "8761h",
            "99999999999999999999s",
            "18446744073709551615d",
            "18446744073709551615ms18446744073709551615ms",
        ] {
            let err = HumanDuration::parse(bad).unwrap_err();
            assert!(err.contains("longer than a year"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            HumanDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            HumanDuration::parse("1h30m").unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(
            HumanDuration::parse("2d").unwrap().0,
            Duration::from_secs(172_800)
        );
        for bad in ["", "5", "ms", "5 parsecs", "-1s"] {
            assert!(HumanDuration::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(HumanDuration(Duration::from_secs(120)).to_string(), "2m");
    }
}
