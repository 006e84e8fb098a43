//! Extra rules from `[[scrub.rules]]`: a regex and an action.
//!
//! Rules run after the built-in detectors, on their output, one regex search
//! per rule (the `regex` crate's own literal prefilters keep a non-matching
//! line cheap). With a capture group only the first group is rewritten, else
//! the whole match. A match that is already this rule's pseudonym
//! (`NAME:3f9a2b1c5d`) or starts one, or is the mask token, is left alone, so a rule whose
//! pattern does not match its own output is idempotent. A match whose edges
//! would split a UTF-8 character is skipped rather than corrupt the text.

use regex::bytes::Regex;

use super::config::{Action, Rule};
use super::hash::{self, Keyring};
use super::ScrubError;
use crate::metrics::Counter;

pub struct Compiled {
    name: String,
    prefix: Vec<u8>,
    regex: Regex,
    action: Action,
    counter: Counter,
}

impl Compiled {
    pub fn new(rule: &Rule) -> Result<Compiled, ScrubError> {
        let regex = Regex::new(&rule.pattern).map_err(|e| ScrubError::Rule {
            name: rule.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Compiled {
            prefix: format!("{}:", rule.name).into_bytes(),
            counter: Counter::default(),
            name: rule.name.clone(),
            regex,
            action: rule.action,
        })
    }

    /// Counts this rule's rewrites in `registry`.
    pub fn count_in(&mut self, registry: &crate::metrics::Metrics) {
        self.counter = super::rewrite_counter(registry, &self.name, self.action);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Applies the rule to `s`; `None` when nothing changed.
    pub fn apply(
        &self,
        s: &[u8],
        keys: &Keyring,
        timestamp_ns: i64,
        mask: &[u8],
        mut spans: Option<&mut Vec<(usize, usize)>>,
    ) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut key = None;
        let mut locs = self.regex.capture_locations();
        let mut at = 0;
        while at <= s.len() {
            let Some(m) = self.regex.captures_read_at(&mut locs, s, at) else {
                break;
            };
            at = if m.end() > m.start() {
                m.end()
            } else {
                m.end() + 1
            };
            let (start, end) = if locs.len() > 1 {
                match locs.get(1) {
                    Some(span) => span,
                    None => continue,
                }
            } else {
                (m.start(), m.end())
            };
            let v = &s[start..end];
            if start < copied
                || start == end
                || v == mask
                || hash::prefixed_len(&s[start..], &self.prefix).is_some()
                || !char_boundary(s, start)
                || !char_boundary(s, end)
            {
                continue;
            }
            if let Some(spans) = spans.as_deref_mut() {
                spans.push((start, end));
            }
            let buf = out.get_or_insert_with(|| Vec::with_capacity(s.len() + 16));
            buf.extend_from_slice(&s[copied..start]);
            match self.action {
                Action::Hash => {
                    let key = key.get_or_insert_with(|| keys.key_for(timestamp_ns));
                    hash::pseudonym(key, self.name.as_bytes(), v, &self.prefix, buf);
                }
                _ => buf.extend_from_slice(mask),
            }
            copied = end;
            self.counter.inc();
        }
        let mut buf = out?;
        buf.extend_from_slice(&s[copied..]);
        Some(buf)
    }
}

/// Whether `i` does not fall inside a UTF-8 multi-byte sequence.
fn char_boundary(s: &[u8], i: usize) -> bool {
    s.get(i).is_none_or(|&c| !(0x80..0xc0).contains(&c))
}
