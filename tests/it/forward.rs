//! The forward source against real clients, over a temporary unix socket,
//! with the real pipeline (`weir::run`, file sink) behind it.

mod attacks;
mod bad_input;
mod clients;
mod docker;
mod flow;
mod listen;
mod reload;
mod tcp;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::{complete_lines, wait_for};

/// A weir pipeline running in this process on a temporary directory: one
/// forward source named `name` on `socket`, one file sink.
pub struct Weir {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub name: String,
    /// The pipeline's registry.
    pub metrics: weir::metrics::Metrics,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The config of a test pipeline; `extra` goes into the source's section.
pub fn config_text(dir: &Path, name: &str, socket: &Path, extra: &str) -> String {
    let listen = format!("unix://{}", socket.display());
    config_text_listen(dir, name, &listen, extra)
}

/// The config of a test pipeline listening on `listen`.
pub fn config_text_listen(dir: &Path, name: &str, listen: &str, extra: &str) -> String {
    format!(
        r#"
state_dir = "{dir}/state"
hostname = "test-host"

[sources.{name}]
type = "forward"
listen = "{listen}"
{extra}

[sinks.out]
type = "file"
path = "{dir}/events.ndjson"

[metrics]
listen = ""
"#,
        dir = dir.display(),
    )
}

impl Weir {
    /// Starts the pipeline and waits until the socket accepts connections.
    pub fn start(name: &str, extra: &str) -> Weir {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/forward.sock");
        let text = config_text(dir.path(), name, &socket, extra);
        let weir = Weir::launch(dir, socket, name, &text);
        let mut probe = wait_for("the forward socket", Duration::from_secs(20), || {
            UnixStream::connect(&weir.socket).ok()
        });
        // An empty Forward frame with a chunk: acknowledged, no event.
        probe
            .write_all(b"\x93\xa1t\x90\x81\xa5chunk\xa5probe")
            .unwrap();
        assert_eq!(read_ack(&mut probe), "probe");
        drop(probe);
        // The probe connection holds a slot until the server sees it close.
        wait_for("the probe to close", Duration::from_secs(10), || {
            (weir.metric("weir_source_connections", &[]) == 0.0).then_some(())
        });
        weir
    }

    /// Starts a pipeline listening on TCP; returns it and the port.
    pub fn start_tcp(name: &str, extra: &str) -> (Weir, u16) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("tcp://127.0.0.1:{port}");
        let text = config_text_listen(dir.path(), name, &listen, extra);
        let weir = Weir::launch(dir, PathBuf::new(), name, &text);
        wait_for("the TCP listener", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        (weir, port)
    }

    fn launch(dir: tempfile::TempDir, socket: PathBuf, name: &str, text: &str) -> Weir {
        let config = weir::config::parse(text, "test").unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let metrics = weir::metrics::Metrics::new();
        let registry = metrics.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(weir::pipeline::run_counting_in(
                config, stop, None, &registry,
            ))
            .expect("weir::run");
        });
        Weir {
            dir,
            socket,
            name: name.to_owned(),
            metrics,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Every event the file sink has written so far: complete lines only.
    /// The sink may be in the middle of writing a line when this reads the
    /// file; a line is complete (and must be valid JSON) once its '\n' is
    /// there.
    pub fn events(&self) -> Vec<Value> {
        let bytes = std::fs::read(self.dir.path().join("events.ndjson")).unwrap_or_default();
        complete_lines(&bytes)
            .map(|l| serde_json::from_slice(l).expect("the file sink writes JSON lines"))
            .collect()
    }

    /// Waits until at least `n` events were written; returns them all.
    pub fn wait_events(&self, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} events"), Duration::from_secs(60), || {
            let e = self.events();
            (e.len() >= n).then_some(e)
        })
    }

    /// A metric of this source (0 when the series does not exist yet).
    pub fn metric(&self, family: &str, extra: &[(&str, &str)]) -> f64 {
        let mut labels = vec![("source", self.name.as_str())];
        labels.extend_from_slice(extra);
        self.metrics.value(family, &labels).unwrap_or(0.0)
    }

    /// Stops the pipeline (graceful shutdown) and waits for it.
    pub fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            t.join().expect("weir thread");
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Events whose message starts with `prefix`, as strings.
pub fn messages_with(events: &[Value], prefix: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// A Message-mode frame `[tag, EventTime, record, {chunk}?]`.
pub fn message_frame(tag: &str, record: &[(&str, &str)], chunk: Option<&str>) -> Vec<u8> {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, if chunk.is_some() { 4 } else { 3 }).unwrap();
    rmp::encode::write_str(&mut f, tag).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    f.extend_from_slice(&[0xd7, 0x00]);
    f.extend_from_slice(&(now.as_secs() as u32).to_be_bytes());
    f.extend_from_slice(&now.subsec_nanos().to_be_bytes());
    rmp::encode::write_map_len(&mut f, record.len() as u32).unwrap();
    for (k, v) in record {
        rmp::encode::write_str(&mut f, k).unwrap();
        rmp::encode::write_str(&mut f, v).unwrap();
    }
    if let Some(c) = chunk {
        rmp::encode::write_map_len(&mut f, 1).unwrap();
        rmp::encode::write_str(&mut f, "chunk").unwrap();
        rmp::encode::write_str(&mut f, c).unwrap();
    }
    f
}

/// A CompressedPackedForward frame `[tag, gzip(entries), {chunk?, compressed: "gzip"}]`:
/// `entries` are msgpack `[time, record]` arrays (or any bytes, for hostile
/// input), compressed at `level`.
pub fn gzip_frame(
    tag: &str,
    entries: &[u8],
    level: flate2::Compression,
    chunk: Option<&str>,
) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
    enc.write_all(entries).unwrap();
    let gz = enc.finish().unwrap();
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, tag).unwrap();
    rmp::encode::write_bin(&mut f, &gz).unwrap();
    rmp::encode::write_map_len(&mut f, if chunk.is_some() { 2 } else { 1 }).unwrap();
    if let Some(c) = chunk {
        rmp::encode::write_str(&mut f, "chunk").unwrap();
        rmp::encode::write_str(&mut f, c).unwrap();
    }
    rmp::encode::write_str(&mut f, "compressed").unwrap();
    rmp::encode::write_str(&mut f, "gzip").unwrap();
    f
}

/// A connected client with a read timeout.
pub fn connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends one Message-mode event with a chunk and checks its ack.
pub fn send_acked(s: &mut UnixStream, message: &str, chunk: &str) {
    s.write_all(&message_frame("test", &[("message", message)], Some(chunk)))
        .unwrap();
    assert_eq!(read_ack(s), chunk);
}

/// Reads one `{"ack": chunk}` answer.
pub fn read_ack(s: &mut UnixStream) -> String {
    #[derive(serde::Deserialize)]
    struct Ack {
        ack: String,
    }
    let ack: Ack = rmp_serde::from_read(&mut *s).expect("an ack");
    ack.ack
}

/// True once the server closed `s` (EOF or reset) within the read timeout.
pub fn closed_by_server(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}
