//! Integration tests: one binary, a module per area (ripgrep's layout).
//! Tests that need root, Docker or journald run for real; where a peer cannot
//! be had they fail loudly rather than skip (see `common`).

mod cli;
mod common;
mod docker_harness;
mod e2e;
mod forward;
mod gelf;
mod journal;
mod journald_harness;
mod loki;
mod loki_receiver;
mod metrics;
mod package;
mod pipeline;
mod retention;
mod scrub;
mod selflog;
mod sink_errors;
mod sink_status;
mod spool;
mod systemd;
mod tap;
mod thin_disk;
