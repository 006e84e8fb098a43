//! Where the reader starts: after the committed cursor, or by the first-start policy.
//!
//! The cursor (`s=…;i=…;b=…;m=…;t=…;x=…`, libsystemd's own format) of the
//! last entry of a batch is stored by the spool atomically with that batch,
//! so the committed cursor never points past what is durable. On start:
//!
//! 1. **Resume.** Seek to the cursor and step onto the entry there; if
//!    `sd_journal_test_cursor` confirms it is the very entry, the next read
//!    is the one after it: no loss, no duplicate.
//! 2. **Gap.** If that entry is gone (vacuumed or rotated away while weir was
//!    down, or hidden by a filter added since), seek to the cursor's
//!    wall-clock time (`t=`, µs) and resume at the oldest entry from then on.
//!    The caller counts it in `weir_journal_cursor_gaps_total` and logs one
//!    warning. An entry written in the same microsecond as the lost one may
//!    be delivered twice rather than lost. The journal is never replayed from
//!    its head.
//! 3. **Unreadable cursor** (no `t=`): start at the tail, counted as a gap.
//! 4. **First start** (no cursor): `start_at` (`tail`, `head`, `-1h`), never
//!    reaching further back than `max_age`.
//!
//! A cursor from an earlier boot needs nothing special: libsystemd seeks by
//! the cursor's sequence number within its sequence (`s=`, shared by all the
//! files one journald writes, across reboots), not by boot, so the next entry
//! is the first of the new boot (`a_cursor_from_an_earlier_boot_…` test).
//!
//! While reading, [`missed_between`] turns a jump in sequence numbers between
//! two batch cursors into a count of entries stepped over (vacuumed before
//! they were read, or in a file libsystemd could not read).

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use systemd::journal::Journal;

use super::config::{Config, StartAt};

/// How the reader was positioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positioned {
    /// Right after the committed entry.
    Resumed,
    /// The committed entry is gone; resuming at its time (`None`: at the tail).
    Gap { since_us: Option<u64> },
    /// No cursor: by the first-start policy.
    FirstStart,
}

/// The wall-clock time of a cursor's entry in µs since the epoch (`t=`, hex).
pub fn realtime_of(cursor: &str) -> Option<u64> {
    cursor
        .split(';')
        .find_map(|part| part.strip_prefix("t="))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
}

/// The sequence number of a cursor's entry and the id of the sequence it
/// belongs to (`s=` and `i=`, hex): journald numbers the entries of all the
/// files it writes (system, user, rotated and archived) in one sequence.
pub fn seqnum_of(cursor: &str) -> Option<(&str, u64)> {
    let mut id = None;
    let mut num = None;
    for part in cursor.split(';') {
        if let Some(s) = part.strip_prefix("s=") {
            id = Some(s);
        } else if let Some(i) = part.strip_prefix("i=") {
            num = u64::from_str_radix(i, 16).ok();
        }
    }
    Some((id?, num?))
}

/// How many entries lie between `prev` and `next` that were not among the
/// `read` entries read after `prev` up to and including `next`: the
/// sequence jumped over entries vacuumed before they were read, or lost in
/// a corrupt file that libsystemd stepped over. 0 when the two cursors are
/// of different sequences (another journald instance, files from
/// `systemd-journal-remote`): then nothing can be told, and nothing is
/// claimed. Entries of other sequences interleaved in between only make the
/// figure smaller, never larger.
pub fn missed_between(prev: &str, next: &str, read: u64) -> u64 {
    match (seqnum_of(prev), seqnum_of(next)) {
        (Some((a, i)), Some((b, j))) if a == b && j > i => (j - i).saturating_sub(read),
        _ => 0,
    }
}

/// Positions `j` so that the next `next()` returns the first entry to ingest.
pub fn position(j: &mut Journal, cursor: Option<&str>, config: &Config) -> io::Result<Positioned> {
    let Some(cursor) = cursor else {
        first_start(j, config, now_us())?;
        return Ok(Positioned::FirstStart);
    };
    if j.seek_cursor(cursor).is_ok() && j.next()? == 1 && j.test_cursor(cursor)? {
        return Ok(Positioned::Resumed);
    }
    match realtime_of(cursor) {
        Some(t) => {
            j.seek_realtime_usec(t)?;
            Ok(Positioned::Gap { since_us: Some(t) })
        }
        None => {
            seek_end(j)?;
            Ok(Positioned::Gap { since_us: None })
        }
    }
}

/// The realtime to start a first run from, or `None` for the tail (or, with
/// no age limit, the head: `Some(0)`).
pub fn first_start_from(start_at: StartAt, max_age: Option<Duration>, now_us: u64) -> Option<u64> {
    let floor = max_age.map_or(0, |a| now_us.saturating_sub(micros(a)));
    match start_at {
        StartAt::Tail => None,
        StartAt::Head => Some(floor),
        StartAt::Ago(d) => Some(now_us.saturating_sub(micros(d)).max(floor)),
    }
}

fn first_start(j: &mut Journal, config: &Config, now_us: u64) -> io::Result<()> {
    match first_start_from(config.start_at, config.max_age.0, now_us) {
        None => seek_end(j),
        Some(0) => j.seek_head(),
        Some(t) => j.seek_realtime_usec(t),
    }
}

/// Onto the last entry, so that `next()` returns only entries written later.
fn seek_end(j: &mut Journal) -> io::Result<()> {
    j.seek_tail()?;
    j.previous()?;
    Ok(())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Now, in µs since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_realtime_of_a_cursor() {
        let c = "s=7c516225405d43e3824b8014bc3fa53c;i=3;b=421663fc5f374491bd9b562099ea5c0a;m=299b05ce;t=660d20f39e973;x=6fe686c8a8eeff47";
        assert_eq!(realtime_of(c), Some(0x660d20f39e973));
        assert_eq!(realtime_of("s=1;i=2"), None);
        assert_eq!(realtime_of("t=zz"), None);
        assert_eq!(realtime_of(""), None);
    }

    #[test]
    fn counts_the_entries_a_sequence_jumped_over() {
        let at = |s: &str, i: u64| format!("s={s};i={i:x};b=b;m=1;t=660d20f39e973;x=1");
        assert_eq!(seqnum_of(&at("aa", 0x1f)), Some(("aa", 0x1f)));
        assert_eq!(seqnum_of("s=aa;t=1"), None);
        // 10 read after entry 100, the last one 110: nothing missed.
        assert_eq!(missed_between(&at("aa", 100), &at("aa", 110), 10), 0);
        // 10 read, but the last one is 130: 20 were stepped over.
        assert_eq!(missed_between(&at("aa", 100), &at("aa", 130), 10), 20);
        // Entries of another sequence were read in between: no overcount.
        assert_eq!(missed_between(&at("aa", 100), &at("aa", 105), 10), 0);
        // Another sequence, or going back (a reopened older file): no claim.
        assert_eq!(missed_between(&at("aa", 100), &at("bb", 500), 1), 0);
        assert_eq!(missed_between(&at("aa", 100), &at("aa", 50), 1), 0);
        assert_eq!(missed_between("garbage", &at("aa", 50), 1), 0);
    }

    #[test]
    fn first_start_is_bounded_by_max_age() {
        let h = 3_600_000_000u64;
        let now = 1000 * h;
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(first_start_from(StartAt::Tail, day, now), None);
        assert_eq!(
            first_start_from(StartAt::Head, day, now),
            Some(now - 24 * h)
        );
        assert_eq!(first_start_from(StartAt::Head, None, now), Some(0));
        let hour_ago = StartAt::Ago(Duration::from_secs(3600));
        assert_eq!(first_start_from(hour_ago, day, now), Some(now - h));
        let week_ago = StartAt::Ago(Duration::from_secs(7 * 86_400));
        assert_eq!(first_start_from(week_ago, day, now), Some(now - 24 * h));
        assert_eq!(first_start_from(week_ago, None, now), Some(now - 168 * h));
    }
}
