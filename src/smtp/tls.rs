//! TLS for the listener: the rustls server configuration (TLS 1.2 and 1.3
//! only, aws-lc-rs), the certificate chain and key read from PEM files, and
//! their reload (SIGHUP) without touching the listeners.
//!
//! Invariant: a handshake always sees a complete, matching chain and key.
//! A reload that fails (missing file, bad PEM, a key that does not match the
//! certificate) keeps the pair in use and says why.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the private key {key} does not fit the certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// The server side of TLS, shared by STARTTLS and the implicit-TLS listener.
pub struct Tls {
    acceptor: TlsAcceptor,
    store: Arc<CertStore>,
    handshake_timeout: Duration,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.store.cert_file)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Tls {
    /// Reads the chain and key now: a bad pair fails the start.
    pub fn new(
        cert_file: &Path,
        key_file: &Path,
        handshake_timeout: Duration,
    ) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = load(cert_file, key_file, &provider)?;
        let store = Arc::new(CertStore {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            provider: provider.clone(),
            current: RwLock::new(current),
        });
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            store,
            handshake_timeout,
        })
    }

    /// Reads the files again; on error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(
            &self.store.cert_file,
            &self.store.key_file,
            &self.store.provider,
        )?;
        *self
            .store
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// The server handshake, within the handshake timeout.
    pub async fn accept<S>(&self, stream: S) -> std::io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

/// Hands every handshake the pair loaded last.
struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_file", &self.cert_file)
            .finish()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, private, provider)
        .map(Arc::new)
        .map_err(|e| TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A self-signed pair made by the `openssl` CLI, into `dir` as `name`.pem/`name`.key.
    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl CLI");
        assert!(status.status.success(), "{status:?}");
        (cert, key)
    }

    #[test]
    fn a_matching_pair_loads_and_a_bad_reload_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "a");
        let tls = Tls::new(&cert, &key, Duration::from_secs(5)).expect("loads");
        let before = tls.store.current.read().unwrap().clone();

        std::fs::write(&cert, "not pem").unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::Cert { .. })));
        assert!(Arc::ptr_eq(&before, &tls.store.current.read().unwrap()));

        let (other_cert, _) = self_signed(dir.path(), "b");
        std::fs::copy(&other_cert, &cert).unwrap();
        assert!(
            matches!(tls.reload(), Err(TlsError::Mismatch { .. })),
            "key of a, cert of b"
        );

        let (c, k) = self_signed(dir.path(), "c");
        std::fs::copy(&c, &cert).unwrap();
        std::fs::copy(&k, &key).unwrap();
        tls.reload().expect("a fresh pair reloads");
        assert!(!Arc::ptr_eq(&before, &tls.store.current.read().unwrap()));
    }

    #[test]
    fn a_missing_key_fails_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed(dir.path(), "a");
        let e = Tls::new(&cert, &dir.path().join("nope.key"), Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("nope.key"), "{e}");
    }
}
