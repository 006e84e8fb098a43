//! Integration tests: one binary, a module per area (ripgrep's layout).
//! Tests that need root, Docker or journald run for real; where a peer cannot
//! be had they fail loudly rather than skip (see `common`).

mod cli;
mod common;
mod scrub;
