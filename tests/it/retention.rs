//! Retention (issue 23, item 8): the real file sink loop with `max_age`
//! deletes files whose last write is older, at start and without traffic,
//! keeps younger ones, and keeps delivering.

use std::fs::File;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use weir::event::{Event, Origin};
use weir::problems::Problems;
use weir::sink::file;
use weir::spool::{self, Spool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_deletes_files_older_than_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let aged = |n: u32, age: Duration| {
        let p = dir.path().join(format!("events.ndjson.{n}"));
        File::create(&p).unwrap().set_modified(now - age).unwrap();
        p
    };
    let young = aged(1, 6 * day);
    let old = aged(2, 8 * day);
    let older = aged(3, 30 * day);

    let raw: file::RawConfig = toml::from_str(&format!(
        "path = \"{}\"\nkeep_files = 5\nmax_age = \"7d\"",
        path.display()
    ))
    .unwrap();
    let mut problems = Problems::default();
    let config = raw.validate("sinks.kept", &mut problems);
    let spool_config = spool::RawConfig::default().validate("spool", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(spool_dir.path(), &spool_config, &["kept".to_owned()]).unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(file::run(
        "kept".into(),
        config,
        spool.reader("kept").unwrap(),
        stop.clone(),
    ));

    // No event yet: retention must not wait for traffic.
    for _ in 0..500 {
        if !old.exists() && !older.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!old.exists() && !older.exists(), "files older than 7d kept");
    assert!(
        young.exists(),
        "a 6-day-old file was deleted by max_age = 7d"
    );

    spool
        .append(
            &[Event::new(now_ns(), Origin::Docker, "still delivered")],
            None,
        )
        .await
        .unwrap();
    for _ in 0..500 {
        if std::fs::read_to_string(&path).is_ok_and(|s| s.contains("still delivered")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("still delivered"));
    stop.cancel();
    task.await.unwrap();
}

#[test]
fn max_age_is_off_by_default() {
    let raw: file::RawConfig = toml::from_str("path = \"/var/log/weir/x.ndjson\"").unwrap();
    let config = raw.validate("sinks.x", &mut Problems::default());
    assert!(config.max_age.0.is_zero());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_drops_events_older_than_max_age_and_counts_them() {
    let mut problems = Problems::default();
    let config = toml::from_str::<spool::RawConfig>("max_age = \"7d\"")
        .unwrap()
        .validate("spool", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    // The default is Loki's 7 days.
    let default = spool::RawConfig::default().validate("spool", &mut problems);
    assert_eq!(default.max_age.0, Duration::from_secs(7 * 86_400));

    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), &config, &["aged".to_owned()]).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let at = |age: Duration| (now - age).as_nanos() as i64;
    let day = Duration::from_secs(86_400);
    spool
        .append(
            &[
                Event::new(at(8 * day), Origin::Docker, "eight days old"),
                Event::new(at(6 * day), Origin::Docker, "six days old"),
                Event::new(at(30 * day), Origin::Docker, "a month old"),
                Event::new(at(Duration::ZERO), Origin::Docker, "fresh"),
            ],
            None,
        )
        .await
        .unwrap();
    let mut reader = spool.reader("aged").unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(10), reader.next_batch(100, 1 << 20))
        .await
        .unwrap()
        .unwrap();
    let messages: Vec<_> = batch
        .events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.message).into_owned())
        .collect();
    assert_eq!(messages, ["six days old", "fresh"]);
    let dropped = spool.metrics().value(
        "weir_spool_dropped_events_total",
        &[("sink", "aged"), ("reason", "max_age")],
    );
    assert_eq!(dropped, Some(2.0));
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}
