//! The APIs postrelay delivers to. Each backend turns a spooled message into
//! API calls (through the pure `mapping` code) and each API answer into one
//! [`Outcome`]; nothing outside a backend knows what an HTTP status means.
//! Backends never touch the spool: `delivery` records what they report.

pub mod dry_run;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{BackendKind, Config, Secrets};
use crate::delivery::outcome::Outcome;
use crate::mapping::{self, ApiCall, Mapped, MappingError, MappingOptions};
use crate::message::Envelope;

/// Postmark's limit on one message, measured after base64 encoding.
pub const POSTMARK_MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// Postal's default `smtp_server.max_message_size`.
pub const POSTAL_MAX_MESSAGE: usize = 14 * 1024 * 1024;

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

pub trait Backend: Send + Sync {
    /// `postmark`, `postal` or `dry-run`: a log and metrics label.
    fn name(&self) -> &'static str;
    /// The API calls for this message, or why the API would refuse it. Pure:
    /// called at `DATA` (to answer the client) and again before each delivery.
    fn map(&self, envelope: &Envelope, raw: &[u8]) -> Result<Mapped, MappingError>;
    /// Makes one API call. `part` numbers the calls of a split message from 0.
    fn send<'a>(&'a self, id: &'a str, part: usize, call: &'a ApiCall) -> SendFuture<'a>;
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Mapping options for the Postmark request shape (Postmark and dry-run).
pub fn postmark_options(cfg: &Config) -> MappingOptions {
    MappingOptions {
        default_stream: cfg.postmark.message_stream.clone(),
        ignore_unsupported: cfg.ignore_unsupported_features,
        max_message_size: POSTMARK_MAX_MESSAGE,
    }
}

pub fn postal_options(cfg: &Config) -> MappingOptions {
    MappingOptions {
        default_stream: cfg.postmark.message_stream.clone(),
        ignore_unsupported: cfg.ignore_unsupported_features,
        max_message_size: cfg.postal.max_message_size.unwrap_or(POSTAL_MAX_MESSAGE),
    }
}

/// Builds the configured backend.
pub fn build(cfg: &Config, secrets: &Secrets, spool_root: &Path) -> Result<Arc<dyn Backend>, BackendError> {
    let _ = secrets;
    match cfg.backend {
        BackendKind::DryRun | BackendKind::Postmark | BackendKind::Postal => Ok(Arc::new(dry_run::DryRun::new(
            spool_root.join("dry-run"),
            postmark_options(cfg),
        )?)),
    }
}

#[allow(dead_code)]
fn _postal_map(e: &Envelope, r: &[u8], o: &MappingOptions) -> Result<Mapped, MappingError> {
    mapping::postal::map(e, r, o)
}
