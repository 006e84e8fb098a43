//! Incident 2 end to end: large batches against a Loki whose message limit
//! they exceed (500 ResourceExhausted), while weir logs into the very
//! journald its journal source reads.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::{merge, scale, spawn_clients, Books, Loki, Setup};
use crate::journald_harness::Journald;
use crate::loki_receiver::Limits;

const MARK: &str = "PAYLOADMARK";

#[test]
fn e2e_incident_2_resource_exhausted_no_growth_no_payload_in_own_log() {
    let per_client: u64 = scale(100, 1000);
    let j = Journald::start("e2einc2");
    // Loki's ResourceExhausted text and behaviour, with a limit below weir's
    // 4 MB cap so big batches really hit it (a Loki tuned lower than the default).
    let loki = Loki::start(Limits {
        limit: 1_000_000,
        ..Limits::default()
    });
    let setup = Setup::new(
        None,
        &loki.receiver.url(),
        false,
        "",
        // A batch gathers for 5 s: the clients' 4 MB are all in it, so the
        // push is over the limit however fast weir delivers (with 200 ms
        // batches a quick machine sent pushes under 1 MB and never hit it).
        "batch_max_bytes = \"32MiB\"\nbatch_timeout = \"5s\"",
        &format!(
            "[sources.journal]\ntype = \"journal\"\nnamespace = \"{}\"\nstart_at = \"head\"\nmax_age = \"off\"\nexclude_identifiers = [\"systemd-journald\"]\n",
            j.namespace
        ),
    );
    // Logging into the namespace's journal, as under systemd.
    let mut cmd = j.command(crate::common::weir_bin());
    cmd.env("INVOCATION_ID", "0123456789abcdef0123456789abcdef");
    let mut weir = setup.start_with(&mut cmd);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(
        2,
        &setup.socket,
        &format!("{MARK}c"),
        20_000,
        Some(per_client),
        &stop,
    );
    let app_lines: Vec<String> = (0..20)
        .map(|i| format!("e2ejournal-{i} app line"))
        .collect();
    let refs: Vec<&str> = app_lines.iter().map(String::as_str).collect();
    j.systemd_cat("e2eapp", "info", &refs);
    let logs: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let (sent, acked) = merge(&logs);
    let mut want = acked.clone();
    want.extend(
        app_lines
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_owned()),
    );
    let delivered = loki.wait_ids(&want, Duration::from_secs(180));
    // Growth loop check: weir's own entries stop growing once delivery is done.
    let own = |j: &Journald| j.entries(&["SYSLOG_IDENTIFIER=weir"]).len();
    let own_before = own(&j);
    std::thread::sleep(Duration::from_secs(5));
    let own_after = own(&j);
    weir.assert_alive();
    let mut books = Books::count(&sent, &acked, &delivered, &loki);
    books.lost = want.difference(&delivered).count();
    books.print("incident2");
    let stats = loki.receiver.stats();
    println!(
        "incident2: {} pushes, statuses {:?}, weir journal entries {own_after}",
        stats.requests, stats.statuses
    );
    assert_eq!(books.lost, 0, "{books:?}");
    assert!(
        stats.statuses.get(&500).copied().unwrap_or(0) >= 1,
        "the limit was never hit: {stats:?}"
    );
    assert!(own_after <= 50, "weir logged {own_after} journal entries");
    assert_eq!(own_before, own_after, "weir's journal entries keep growing");
    // Nothing but our own events was delivered: no weir log line ingested.
    let expected: HashSet<&str> = want.iter().map(String::as_str).collect();
    let foreign: Vec<String> = loki
        .receiver
        .entries()
        .into_iter()
        .map(|e| e.line)
        .filter(|l| !expected.contains(l.split(' ').next().unwrap_or("")))
        .collect();
    assert!(
        foreign.is_empty(),
        "weir ingested foreign lines (its own log?): {foreign:?}"
    );
    // No payload in weir's log, neither on stderr nor in the journal.
    let journal = String::from_utf8_lossy(&j.journalctl(&["-o", "cat"]).stdout).into_owned();
    assert!(!journal.contains(MARK), "payload in weir's journal");
    assert!(!setup.log().contains(MARK), "payload in weir's stderr");
    assert!(
        !journal.contains("larger than max"),
        "response body in weir's log"
    );
}
