//! A reader of the Prometheus text format (0.0.4), enough for what weir
//! writes: `# HELP`, `# TYPE`, and samples with optional labels and an
//! optional timestamp. Used by `weir status` and by the tests.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, or `""` (as Prometheus treats a missing label).
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// Family name -> `counter`, `gauge`, ...
    pub types: BTreeMap<String, String>,
    /// Family name -> HELP text (unescaped).
    pub help: BTreeMap<String, String>,
}

/// A line that is not valid exposition text.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
}

impl Scrape {
    /// Parses a whole exposition.
    pub fn parse(text: &str) -> Result<Scrape, ParseError> {
        let mut scrape = Scrape::default();
        for (i, line) in text.lines().enumerate() {
            let err = |reason| ParseError {
                line: i + 1,
                reason,
            };
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('#') {
                let mut words = rest.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(name), help) => {
                        scrape
                            .help
                            .insert(name.to_owned(), unescape_help(help.unwrap_or("")));
                    }
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        if !matches!(
                            kind,
                            "counter" | "gauge" | "histogram" | "summary" | "untyped"
                        ) {
                            return Err(err("unknown TYPE"));
                        }
                        scrape.types.insert(name.to_owned(), kind.to_owned());
                    }
                    (Some("TYPE"), _, _) => return Err(err("TYPE without a type")),
                    _ => {} // a comment
                }
                continue;
            }
            scrape.samples.push(parse_sample(line).map_err(err)?);
        }
        Ok(scrape)
    }

    /// Samples of family `name`.
    pub fn family<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    // Sums fold from +0.0: `Iterator::sum` of no floats is -0.0, printed "-0".

    /// The sum over every series of `name` (0 when absent).
    pub fn sum(&self, name: &str) -> f64 {
        self.family(name).map(|s| s.value).fold(0.0, |a, b| a + b)
    }

    /// The sum of `name`'s series grouped by the values of `label`.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.family(name) {
            *out.entry(s.label(label).to_owned()).or_insert(0.0) += s.value;
        }
        out
    }

    /// The sum of `name`'s series whose `label` is `value`.
    pub fn get(&self, name: &str, label: &str, value: &str) -> f64 {
        self.family(name)
            .filter(|s| s.label(label) == value)
            .map(|s| s.value)
            .fold(0.0, |a, b| a + b)
    }

    /// Whether any series of `name` has `label` = `value`.
    pub fn has(&self, name: &str, label: &str, value: &str) -> bool {
        self.family(name).any(|s| s.label(label) == value)
    }
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    if name_end == 0 {
        return Err("sample without a metric name");
    }
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let consumed;
        loop {
            // Skip separators, find a label name or the closing brace.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated label set");
            };
            if c == '}' {
                consumed = start + 1;
                break;
            }
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if is_name_char(c, i == start) {
                    chars.next();
                    end = i + c.len_utf8();
                } else {
                    break;
                }
            }
            if end == start {
                return Err("bad label name");
            }
            let label = after[start..end].to_owned();
            if chars.next().map(|(_, c)| c) != Some('=')
                || chars.next().map(|(_, c)| c) != Some('"')
            {
                return Err("label without =\"value\"");
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated label value"),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("bad escape in label value"),
                    },
                    Some((_, '\n')) => return Err("newline in label value"),
                    Some((_, c)) => value.push(c),
                }
            }
            labels.push((label, value));
        }
        rest = &after[consumed..];
    }
    if !rest.starts_with(' ') {
        return Err("no space before the value");
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next().ok_or("sample without a value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "value is not a number")?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| "timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("trailing text after the sample");
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_registry_renders() {
        let r = crate::metrics::Registry::default();
        r.counter(
            "weir_t_total",
            "A \\ help\nline.",
            &[("sink", "a\"b\\c\nd"), ("reason", "x")],
        )
        .add(5);
        r.gauge("weir_g", "G.", &[]).set(-2);
        let s = Scrape::parse(&r.render()).unwrap();
        assert_eq!(s.types["weir_t_total"], "counter");
        assert_eq!(s.help["weir_t_total"], "A \\ help\nline.");
        assert_eq!(s.get("weir_t_total", "sink", "a\"b\\c\nd"), 5.0);
        assert_eq!(s.sum("weir_g"), -2.0);
        assert_eq!(s.by("weir_t_total", "reason")["x"], 5.0);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "{a=\"b\"} 1",
            "m{a=\"b} 1",
            "m{a=b} 1",
            "m 1 2 3",
            "m{a=\"\\x\"} 1",
            "m one",
            "# TYPE m sometype",
        ] {
            assert!(Scrape::parse(bad).is_err(), "{bad}");
        }
        let ok = Scrape::parse("m{a=\"1\",} +Inf 123\n# just a comment\n").unwrap();
        assert_eq!(ok.samples[0].value, f64::INFINITY);
    }
}
