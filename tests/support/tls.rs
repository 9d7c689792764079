//! TLS for tests: a self-signed certificate for `localhost` and 127.0.0.1
//! made by the `openssl` CLI, a rustls client that trusts only it, and a
//! small async SMTP dialogue over any stream (plain or TLS).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Writes `<name>.pem` and `<name>.key` into `dir`.
pub fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI");
    assert!(out.status.success(), "openssl: {out:?}");
    (cert, key)
}

/// The `[smtp.tls]` table for a pair.
pub fn tls_toml(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[smtp.tls]\ncert_file = {:?}\nkey_file = {:?}\n{extra}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// A client handshake with `stream`, trusting only `cert`.
pub async fn handshake<S>(stream: S, cert: &Path) -> std::io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}

/// One SMTP dialogue over an async stream.
pub struct Dialogue<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Dialogue<S> {
    pub fn new(stream: S) -> Dialogue<S> {
        Dialogue {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next complete reply (all its lines), or "" when the peer closed.
    pub async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).to_string();
                reply.push_str(&line);
                if line.len() < 4 || line.as_bytes()[3] == b' ' {
                    return reply;
                }
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.stream.read(&mut chunk),
            )
            .await
            .expect("a reply within 20s");
            match read {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return reply,
            }
        }
    }

    /// Sends `line` and checks the reply starts with `want`.
    pub async fn cmd(&mut self, line: &str, want: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        let r = self.reply().await;
        assert!(r.starts_with(want), "{line}: want {want}, got {r:?}");
        r
    }

    /// Bytes received but not yet read as a reply.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_inner(self) -> S {
        self.stream
    }
}

/// Connects from `local` (e.g. 127.0.0.2) to `addr`.
pub async fn connect_from(local: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.expect("connect")
}
