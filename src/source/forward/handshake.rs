//! The Forward protocol's authentication handshake (TCP listeners only).
//!
//! ```text
//! server: ["HELO", {"nonce": bin16, "auth": salt-or-"", "keepalive": true}]
//! client: ["PING", client_hostname, shared_key_salt,
//!          hex(sha512(shared_key_salt + client_hostname + nonce + shared_key)),
//!          username, hex(sha512(auth_salt + username + password))]
//! server: ["PONG", true, "", server_hostname,
//!          hex(sha512(shared_key_salt + server_hostname + nonce + shared_key))]
//!    or   ["PONG", false, reason, "", ""] and the connection is closed.
//! ```
//!
//! The username and password digest are only checked when `users` is set.
//! Unix sockets need no handshake: file permissions are their access control.

use bytes::BytesMut;
use sha2::{Digest, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::decode::{Reader, Value};
use super::frame::{self, Limits, Scan};

/// A user allowed in by the handshake (`users` in the config).
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Shared-key authentication settings of a TCP listener.
#[derive(Debug, Clone)]
pub struct Auth {
    pub shared_key: String,
    pub users: Vec<User>,
    /// Our name in PONG (clients may check it).
    pub hostname: String,
}

/// Why a handshake failed. Carries no credentials.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed the connection during the handshake")]
    Closed,
    #[error("malformed PING: {0}")]
    BadPing(&'static str),
    #[error("shared key mismatch")]
    SharedKey,
    #[error("unknown user or wrong password")]
    User,
}

impl HandshakeError {
    /// The `reason` label of `weir_source_decode_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Io(_) | HandshakeError::Closed => "handshake_io",
            HandshakeError::BadPing(_) => "bad_ping",
            HandshakeError::SharedKey | HandshakeError::User => "auth_failed",
        }
    }
}

/// The biggest PING accepted.
const MAX_PING: usize = 64 * 1024;

/// Runs the server side; on success, bytes the client sent after its PING
/// are left in `buf`.
pub async fn server<S>(
    stream: &mut S,
    auth: &Auth,
    buf: &mut BytesMut,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let nonce: [u8; 16] = rand::random();
    let auth_salt: [u8; 16] = rand::random();
    let mut helo = Vec::new();
    rmp::encode::write_array_len(&mut helo, 2).expect("vec");
    rmp::encode::write_str(&mut helo, "HELO").expect("vec");
    rmp::encode::write_map_len(&mut helo, 3).expect("vec");
    rmp::encode::write_str(&mut helo, "nonce").expect("vec");
    rmp::encode::write_bin(&mut helo, &nonce).expect("vec");
    rmp::encode::write_str(&mut helo, "auth").expect("vec");
    if auth.users.is_empty() {
        rmp::encode::write_str(&mut helo, "").expect("vec");
    } else {
        rmp::encode::write_bin(&mut helo, &auth_salt).expect("vec");
    }
    rmp::encode::write_str(&mut helo, "keepalive").expect("vec");
    rmp::encode::write_bool(&mut helo, true).expect("vec");
    stream.write_all(&helo).await?;

    let limits = Limits {
        max_bytes: MAX_PING,
        max_depth: 4,
    };
    let len = loop {
        match frame::scan(buf, limits).map_err(|_| HandshakeError::BadPing("not msgpack"))? {
            Scan::Complete(n) => break n,
            Scan::Incomplete { .. } => {
                if stream.read_buf(buf).await? == 0 {
                    return Err(HandshakeError::Closed);
                }
            }
        }
    };
    let ping = buf.split_to(len);
    let result = check_ping(&ping, auth, &nonce, &auth_salt);
    let mut pong = Vec::new();
    rmp::encode::write_array_len(&mut pong, 5).expect("vec");
    rmp::encode::write_str(&mut pong, "PONG").expect("vec");
    match &result {
        Ok(shared_key_salt) => {
            rmp::encode::write_bool(&mut pong, true).expect("vec");
            rmp::encode::write_str(&mut pong, "").expect("vec");
            rmp::encode::write_str(&mut pong, &auth.hostname).expect("vec");
            let digest = hex_sha512(&[
                shared_key_salt,
                auth.hostname.as_bytes(),
                &nonce,
                auth.shared_key.as_bytes(),
            ]);
            rmp::encode::write_str(&mut pong, &digest).expect("vec");
        }
        Err(e) => {
            rmp::encode::write_bool(&mut pong, false).expect("vec");
            rmp::encode::write_str(&mut pong, &e.to_string()).expect("vec");
            rmp::encode::write_str(&mut pong, "").expect("vec");
            rmp::encode::write_str(&mut pong, "").expect("vec");
        }
    }
    stream.write_all(&pong).await?;
    result.map(|_| ())
}

/// Checks a PING; returns the client's shared key salt.
fn check_ping(
    ping: &[u8],
    auth: &Auth,
    nonce: &[u8],
    auth_salt: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    let mut r = Reader::new(ping);
    let mut fields = Vec::with_capacity(6);
    // A 6-element array has a one-byte header (0x96).
    if ping.first() != Some(&0x96) {
        return Err(HandshakeError::BadPing("expected 6 elements"));
    }
    r.pos = 1;
    for _ in 0..6 {
        match r.value() {
            Ok(Value::Str(s)) => fields.push(s),
            _ => return Err(HandshakeError::BadPing("element is not a string")),
        }
    }
    let [kind, hostname, salt, digest, username, password_digest] = fields[..] else {
        return Err(HandshakeError::BadPing("expected 6 elements"));
    };
    if kind != b"PING" {
        return Err(HandshakeError::BadPing("not a PING"));
    }
    let want = hex_sha512(&[salt, hostname, nonce, auth.shared_key.as_bytes()]);
    if !constant_time_eq(want.as_bytes(), digest) {
        return Err(HandshakeError::SharedKey);
    }
    if !auth.users.is_empty() {
        let ok = auth.users.iter().any(|u| {
            let want = hex_sha512(&[auth_salt, u.username.as_bytes(), u.password.as_bytes()]);
            u.username.as_bytes() == username && constant_time_eq(want.as_bytes(), password_digest)
        });
        if !ok {
            return Err(HandshakeError::User);
        }
    }
    Ok(salt.to_vec())
}

/// Lowercase hex of the SHA-512 of the concatenated parts.
pub fn hex_sha512(parts: &[&[u8]]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without branching on the bytes (`subtle`), so the time taken
/// tells an attacker nothing about how much of a digest was right. (The
/// lengths are public: a SHA-512 hex digest is always 128 bytes.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(users: Vec<User>) -> Auth {
        Auth {
            shared_key: "s3cret".into(),
            users,
            hostname: "weir-host".into(),
        }
    }

    /// A client following the protocol: reads HELO, sends PING, reads PONG.
    async fn client(
        mut s: tokio::io::DuplexStream,
        key: &str,
        user: (&str, &str),
    ) -> (bool, String) {
        let mut buf = BytesMut::new();
        let limits = Limits {
            max_bytes: 4096,
            max_depth: 4,
        };
        // HELO
        let helo = loop {
            if let Scan::Complete(n) = frame::scan(&buf, limits).unwrap() {
                break buf.split_to(n);
            }
            assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        };
        let v: rmpv_value::Helo = rmp_serde::from_slice(&helo).unwrap();
        assert_eq!(v.0, "HELO");
        let salt = b"client-salt";
        let mut ping = Vec::new();
        rmp::encode::write_array_len(&mut ping, 6).unwrap();
        rmp::encode::write_str(&mut ping, "PING").unwrap();
        rmp::encode::write_str(&mut ping, "client-host").unwrap();
        rmp::encode::write_bin(&mut ping, salt).unwrap();
        let digest = hex_sha512(&[salt, b"client-host", &v.1.nonce, key.as_bytes()]);
        rmp::encode::write_str(&mut ping, &digest).unwrap();
        rmp::encode::write_str(&mut ping, user.0).unwrap();
        let pw = hex_sha512(&[&v.1.auth, user.0.as_bytes(), user.1.as_bytes()]);
        rmp::encode::write_str(&mut ping, &pw).unwrap();
        s.write_all(&ping).await.unwrap();
        let pong = loop {
            if let Scan::Complete(n) = frame::scan(&buf, limits).unwrap() {
                break buf.split_to(n);
            }
            if s.read_buf(&mut buf).await.unwrap() == 0 {
                panic!("closed before PONG");
            }
        };
        let p: (String, bool, String, String, String) = rmp_serde::from_slice(&pong).unwrap();
        if p.1 {
            let want = hex_sha512(&[salt, b"weir-host", &v.1.nonce, key.as_bytes()]);
            assert_eq!(p.4, want, "server digest");
        }
        (p.1, p.2)
    }

    mod rmpv_value {
        #[derive(serde::Deserialize)]
        pub struct Opts {
            #[serde(with = "serde_bytes_like")]
            pub nonce: Vec<u8>,
            #[serde(with = "serde_bytes_like")]
            pub auth: Vec<u8>,
        }
        #[derive(serde::Deserialize)]
        pub struct Helo(pub String, pub Opts);

        /// Accepts msgpack bin or str as bytes.
        mod serde_bytes_like {
            use serde::de::{Deserializer, Visitor};
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Vec<u8>;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("bytes")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                        Ok(v.to_vec())
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Vec<u8>, E> {
                        Ok(v.as_bytes().to_vec())
                    }
                }
                d.deserialize_any(V)
            }
        }
    }

    async fn run(
        a: Auth,
        key: &'static str,
        user: (&'static str, &'static str),
    ) -> (bool, String, bool) {
        let (c, mut s) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            super::server(&mut s, &a, &mut buf).await.is_ok()
        });
        let (ok, reason) = client(c, key, user).await;
        (ok, reason, server.await.unwrap())
    }

    #[tokio::test]
    async fn right_key_passes_and_wrong_key_fails() {
        assert_eq!(
            run(auth(vec![]), "s3cret", ("", "")).await,
            (true, String::new(), true)
        );
        let (ok, reason, server_ok) = run(auth(vec![]), "guess", ("", "")).await;
        assert!(!ok && !server_ok);
        assert_eq!(reason, "shared key mismatch");
    }

    #[tokio::test]
    async fn users_are_checked_when_configured() {
        let users = vec![User {
            username: "docker".into(),
            password: "pw".into(),
        }];
        assert!(run(auth(users.clone()), "s3cret", ("docker", "pw")).await.0);
        let (ok, reason, _) = run(auth(users), "s3cret", ("docker", "nope")).await;
        assert!(!ok);
        assert_eq!(reason, "unknown user or wrong password");
    }
}
