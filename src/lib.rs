//! weir: a host log agent for Linux servers that run Docker.
//!
//! ```text
//!  docker (fluentd driver) --unix socket--> source::forward --\
//!                                                              >--> Ingest: scrub --> spool (WAL) --> sink::loki
//!  systemd-journald -------sd_journal------> source::journal --/                                  \--> sink::gelf
//!                                                                                                  \-> sink::file
//! ```
//!
//! - [`event::Event`] is the one type passed between stages.
//! - [`ingest::Ingest`] scrubs personal data out of every event *before* the
//!   spool write: nothing private touches disk.
//! - [`spool::Spool`] is the only buffer: sources append (and may wait for
//!   durability before acknowledging a client or committing a cursor); each
//!   sink reads from its own cursor and acknowledges what its server accepted.
//! - weir's own log ([`selflog`]) never carries payload bytes and is
//!   rate-limited per call site; the journal source never reads it back.
//!
//! [`pipeline::run`] wires it together from a validated [`config::Config`]
//! and runs until its shutdown token is cancelled.

pub mod backoff;
pub mod config;
pub mod event;
pub mod hostname;
pub mod ingest;
pub mod metrics;
pub mod net;
pub mod pagecache;
pub mod pipeline;
pub mod problems;
pub mod reload;
pub mod scrub;
pub mod secret;
pub mod selflog;
pub mod sink;
pub mod source;
pub mod spool;
pub mod statefile;
pub mod statelock;
pub mod status;
pub mod systemd;
pub mod tap;
pub mod units;

pub use config::Config;
pub use event::Event;
pub use pipeline::run;
