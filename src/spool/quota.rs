//! Freeing space: dropping the oldest segment when the spool is full, and
//! deleting segments every sink has acknowledged.
//!
//! Both only edit the in-memory [`State`] (under its lock) and queue the
//! file for the writer thread, which unlinks it after its current write and
//! fsyncs the directory; the append path therefore never waits for a
//! syscall to free space.

use super::state::State;
use super::Offset;

/// Drops the oldest segment unless it is the tail or at/after `keep_from`
/// (the writer passes the segment it is writing: deleting that frees nothing).
/// Every sink that had not read all of it loses the unread events, counted
/// in `weir_spool_dropped_events_total{reason="spool_full"}`; lagging
/// readers and cursors move to the next segment. Returns `false` when there
/// is nothing to drop.
pub fn drop_oldest(st: &mut State, keep_from: Offset) -> bool {
    let Some((&base, _)) = st.segments.first_key_value() else {
        return false;
    };
    // The tail (and any segment the writer has not finished) stays.
    if st.segments.len() < 2 || base >= keep_from {
        return false;
    }
    let (_, seg) = st.segments.pop_first().expect("checked above");
    let next_base = *st.segments.keys().next().expect("len >= 2");
    let mut total_lost = 0;
    for sink in st.sinks.values_mut() {
        // `read_events_in_seg` counts events handed out from the segment
        // holding `read`, a record only partly handed out included.
        let lost = if sink.read >= seg.end {
            0
        } else if sink.read < base {
            seg.events
        } else if sink.read_seg == base {
            seg.events.saturating_sub(sink.read_events_in_seg)
        } else {
            seg.events
        };
        if sink.read < next_base {
            sink.read = next_base;
            sink.read_seg = next_base;
            sink.read_events_in_seg = 0;
        }
        sink.acked = sink.acked.max(next_base);
        if lost > 0 {
            sink.dropped.add(lost);
            sink.dropped_total += lost;
            total_lost += lost;
        }
    }
    st.bytes -= seg.disk_len;
    st.deletions.push(base);
    tracing::warn!(
        segment_base = base,
        segment_bytes = seg.disk_len,
        events_lost_by_sinks = total_lost,
        "spool full: dropped the oldest segment (when_full = \"drop_oldest\")"
    );
    true
}

/// Removes the segments that every sink has acknowledged (as stored in the
/// cursor files, so a crash cannot bring back a cursor pointing into a
/// deleted segment) and queues them for deletion. Returns how many.
pub fn release_acknowledged(st: &mut State) -> usize {
    let min_stored = st
        .sinks
        .values()
        .map(|s| s.stored)
        .min()
        .unwrap_or(Offset::MAX);
    let mut released = 0;
    // A segment can go once the next one starts at or before the cursor.
    while st.segments.len() >= 2 {
        let mut keys = st.segments.keys();
        let (first, second) = (*keys.next().expect("len"), *keys.next().expect("len"));
        if second > min_stored {
            break;
        }
        let seg = st.segments.remove(&first).expect("present");
        st.bytes -= seg.disk_len;
        st.deletions.push(first);
        released += 1;
    }
    released
}

#[cfg(test)]
mod tests {
    use super::super::state::{SegMeta, SinkState};
    use super::*;

    fn state() -> State {
        let mut st = State::new_for_test();
        for (base, end, events) in [(0, 100, 10), (100, 200, 10), (200, 250, 5)] {
            st.segments.insert(
                base,
                SegMeta {
                    header_len: 40,
                    end,
                    events,
                    disk_len: 40 + end - base,
                },
            );
            st.bytes += 40 + end - base;
        }
        st.next = 250;
        st
    }

    #[test]
    fn drop_counts_unread_events_per_sink() {
        let mut st = state();
        st.sinks
            .insert("behind".into(), SinkState::new_for_test("behind", 0));
        let mut mid = SinkState::new_for_test("mid", 50);
        mid.read = 50;
        mid.read_seg = 0;
        mid.read_events_in_seg = 4;
        st.sinks.insert("mid".into(), mid);
        let mut done = SinkState::new_for_test("done", 100);
        done.read = 150;
        done.read_seg = 100;
        st.sinks.insert("done".into(), done);
        assert!(drop_oldest(&mut st, 200));
        assert_eq!(st.sinks["behind"].dropped_total, 10);
        assert_eq!(st.sinks["mid"].dropped_total, 6);
        assert_eq!(st.sinks["done"].dropped_total, 0);
        assert_eq!(
            (st.sinks["behind"].read, st.sinks["behind"].acked),
            (100, 100)
        );
        assert_eq!(st.sinks["done"].read, 150);
        assert_eq!(st.deletions, vec![0]);
        assert_eq!(st.bytes, 140 + 90);
        // The segment the writer is still on is never dropped.
        assert!(!drop_oldest(&mut st, 100));
        assert!(drop_oldest(&mut st, 200));
        assert!(!drop_oldest(&mut st, 200), "the tail stays");
    }

    /// Regression: a reader exactly at the end of a segment was credited
    /// with the events it had read there against the next segment.
    #[test]
    fn reader_at_a_segment_end_loses_the_whole_next_segment() {
        let mut st = state();
        let mut s = SinkState::new_for_test("s", 0);
        s.read = 100; // all of segment 0 read, none of segment 100
        s.read_seg = 0;
        s.read_events_in_seg = 10;
        st.sinks.insert("s".into(), s);
        assert!(drop_oldest(&mut st, Offset::MAX));
        assert_eq!(st.sinks["s"].dropped_total, 0);
        assert!(drop_oldest(&mut st, Offset::MAX));
        assert_eq!(st.sinks["s"].dropped_total, 10);
    }

    #[test]
    fn release_follows_the_slowest_stored_cursor() {
        let mut st = state();
        let mut a = SinkState::new_for_test("a", 250);
        a.stored = 250;
        let mut b = SinkState::new_for_test("b", 250);
        b.stored = 150; // acked more, but not yet stored
        st.sinks.insert("a".into(), a);
        st.sinks.insert("b".into(), b);
        assert_eq!(release_acknowledged(&mut st), 1);
        assert_eq!(st.deletions, vec![0]);
        st.sinks.get_mut("b").unwrap().stored = 250;
        assert_eq!(release_acknowledged(&mut st), 1);
        assert_eq!(st.segments.len(), 1, "the tail stays");
    }
}
