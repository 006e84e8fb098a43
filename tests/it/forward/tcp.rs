//! The optional TCP listener: TLS (rustls) and the HELO/PING/PONG handshake,
//! driven by a client written from the protocol specification.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

use super::{message_frame, messages_with, Weir};

fn hex_sha512(parts: &[&[u8]]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads one msgpack value from the stream.
async fn read_value<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Vec<u8> {
    use weir::source::forward::frame::{scan, Limits, Scan};
    let limits = Limits {
        max_bytes: 1 << 16,
        max_depth: 8,
    };
    loop {
        if let Scan::Complete(n) = scan(buf, limits).unwrap() {
            return buf.drain(..n).collect();
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// HELO's nonce and auth salt (bin or str in the map).
fn helo_fields(helo: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut nonce = Vec::new();
    let mut auth = Vec::new();
    // ["HELO", {k: v, ...}] with short keys: walk it with rmp's readers.
    let mut rd = helo;
    assert_eq!(rmp::decode::read_array_len(&mut rd).unwrap(), 2);
    let mut tag = [0u8; 8];
    assert_eq!(rmp::decode::read_str(&mut rd, &mut tag).unwrap(), "HELO");
    let n = rmp::decode::read_map_len(&mut rd).unwrap();
    for _ in 0..n {
        let mut k = [0u8; 16];
        let key = rmp::decode::read_str(&mut rd, &mut k).unwrap().to_owned();
        let marker = rd[0];
        let value = match marker {
            0xc4 => {
                let len = rmp::decode::read_bin_len(&mut rd).unwrap() as usize;
                let v = rd[..len].to_vec();
                rd = &rd[len..];
                v
            }
            0xa0..=0xbf => {
                let len = rmp::decode::read_str_len(&mut rd).unwrap() as usize;
                let v = rd[..len].to_vec();
                rd = &rd[len..];
                v
            }
            _ => {
                rd = &rd[1..]; // keepalive: a bool
                Vec::new()
            }
        };
        match key.as_str() {
            "nonce" => nonce = value,
            "auth" => auth = value,
            _ => {}
        }
    }
    (nonce, auth)
}

/// Runs the client side of the handshake; returns PONG's (ok, reason).
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: &str,
    user: (&str, &str),
) -> (bool, String) {
    let mut buf = Vec::new();
    let helo = read_value(s, &mut buf).await;
    let (nonce, auth_salt) = helo_fields(&helo);
    assert_eq!(nonce.len(), 16);
    let salt = b"client-salt-1234";
    let mut ping = Vec::new();
    rmp::encode::write_array_len(&mut ping, 6).unwrap();
    rmp::encode::write_str(&mut ping, "PING").unwrap();
    rmp::encode::write_str(&mut ping, "client.example").unwrap();
    rmp::encode::write_str(&mut ping, std::str::from_utf8(salt).unwrap()).unwrap();
    let digest = hex_sha512(&[salt, b"client.example", &nonce, key.as_bytes()]);
    rmp::encode::write_str(&mut ping, &digest).unwrap();
    rmp::encode::write_str(&mut ping, user.0).unwrap();
    let pw = hex_sha512(&[&auth_salt, user.0.as_bytes(), user.1.as_bytes()]);
    rmp::encode::write_str(&mut ping, &pw).unwrap();
    s.write_all(&ping).await.unwrap();
    let pong = read_value(s, &mut buf).await;
    let (kind, ok, reason, host, digest): (String, bool, String, String, String) =
        rmp_serde::from_slice(&pong).unwrap();
    assert_eq!(kind, "PONG");
    if ok {
        assert_eq!(host, "weir-test");
        let want = hex_sha512(&[salt, b"weir-test", &nonce, key.as_bytes()]);
        assert_eq!(digest, want, "server proved it knows the key");
    }
    (ok, reason)
}

/// A self-signed certificate for `localhost`, made by openssl.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    (cert, key)
}

#[test]
fn tls_and_handshake_with_users() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\nshared_key = \"s3cret\"\nself_hostname = \"weir-test\"\nusers = [{{ username = \"docker\", password = \"pw\" }}]",
        cert.display(),
        key.display()
    );
    let (weir, port) = Weir::start_tcp("fwd_tls", &extra);

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.expect("TLS handshake")
        };
        // Right key and user: events flow and acks come back.
        let mut s = connect().await;
        assert_eq!(
            handshake(&mut s, "s3cret", ("docker", "pw")).await,
            (true, String::new())
        );
        s.write_all(&message_frame(
            "tls",
            &[("message", "over tls")],
            Some("t1"),
        ))
        .await
        .unwrap();
        let mut buf = Vec::new();
        let ack = read_value(&mut s, &mut buf).await;
        let ack: std::collections::HashMap<String, String> = rmp_serde::from_slice(&ack).unwrap();
        assert_eq!(ack["ack"], "t1");

        // Wrong password, then wrong key: refused with a reason, closed, counted.
        let mut s = connect().await;
        let (ok, reason) = handshake(&mut s, "s3cret", ("docker", "guess")).await;
        assert!(!ok);
        assert_eq!(reason, "unknown user or wrong password");
        let mut s = connect().await;
        let (ok, reason) = handshake(&mut s, "wrong", ("docker", "pw")).await;
        assert!(!ok);
        assert_eq!(reason, "shared key mismatch");
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(rest.is_empty());

        // A client that does not speak TLS is refused. (The readiness probe
        // of start_tcp was one already.)
        let tls_failures = || {
            weir.metric(
                "weir_source_decode_errors_total",
                &[("reason", "tls_handshake")],
            )
        };
        let before = tls_failures();
        let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        plain
            .write_all(&message_frame("plain", &[("message", "no tls")], None))
            .await
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest)).await;
        crate::common::wait_for("the TLS failure count", Duration::from_secs(5), || {
            (tls_failures() == before + 1.0).then_some(())
        });
    });
    let events = weir.wait_events(1);
    assert_eq!(messages_with(&events, "over tls").len(), 1);
    assert!(messages_with(&events, "no tls").is_empty());
    assert_eq!(
        weir.metric(
            "weir_source_decode_errors_total",
            &[("reason", "auth_failed")]
        ),
        2.0
    );
}

/// Issue 20: 1,100 TCP connections that never sent a ClientHello kept
/// authenticated clients out, also 60 s later. Now silent connections give
/// way to new ones, and those left are closed after `handshake_timeout`.
#[test]
fn connections_that_never_start_tls_keep_no_one_out() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\nshared_key = \"s3cret\"\nself_hostname = \"weir-test\"\nmax_connections = 64\nhandshake_timeout = \"2s\"",
        cert.display(),
        key.display()
    );
    let (weir, port) = Weir::start_tcp("fwd_tls_flood", &extra);
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut silent = Vec::new();
        for _ in 0..300 {
            silent.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
        }
        let authenticated = |chunk: &'static str| {
            let connector = connector.clone();
            async move {
                let started = std::time::Instant::now();
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut s = connector.connect(name, tcp).await.expect("TLS handshake");
                assert_eq!(
                    handshake(&mut s, "s3cret", ("", "")).await,
                    (true, String::new())
                );
                s.write_all(&message_frame("tls", &[("message", chunk)], Some(chunk)))
                    .await
                    .unwrap();
                let mut buf = Vec::new();
                let ack = read_value(&mut s, &mut buf).await;
                let ack: std::collections::HashMap<String, String> =
                    rmp_serde::from_slice(&ack).unwrap();
                assert_eq!(ack["ack"], chunk);
                started.elapsed()
            }
        };
        // Beside 300 silent connections (64 slots): served at once.
        let took = tokio::time::timeout(Duration::from_secs(5), authenticated("flood-1"))
            .await
            .expect("an authenticated client got in");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        // The silent connections still holding slots are closed after
        // handshake_timeout.
        crate::common::wait_for("handshake timeouts", Duration::from_secs(10), || {
            (weir.metric(
                "weir_source_decode_errors_total",
                &[("reason", "handshake_timeout")],
            ) >= 1.0)
                .then_some(())
        });
        let took = tokio::time::timeout(Duration::from_secs(5), authenticated("flood-2"))
            .await
            .expect("an authenticated client got in later");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        drop(silent);
    });
    let events = weir.wait_events(2);
    assert_eq!(messages_with(&events, "flood-").len(), 2);
    assert!(
        weir.metric("weir_source_decode_errors_total", &[("reason", "gave_way")]) >= 1.0,
        "silent connections gave way"
    );
}
