//! The APIs postrelay delivers to. Each backend turns a spooled message into
//! API calls (through the pure `mapping` code) and each API answer into one
//! [`Outcome`]; nothing outside a backend knows what an HTTP status means.
//! Backends never touch the spool: `delivery` records what they report.

pub mod dry_run;
pub mod http;
pub mod postal;
pub mod postmark;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{BackendKind, Config, Secrets};
use crate::delivery::outcome::Outcome;
use crate::mapping::{self, ApiCall, Mapped, MappingError, MappingOptions};
use crate::message::Envelope;

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

pub trait Backend: Send + Sync {
    /// `postmark`, `postal` or `dry-run`: a log and metrics label.
    fn name(&self) -> &'static str;
    /// The API calls for this message, or why the API would refuse it. Pure:
    /// called at `DATA` (to answer the client) and again before each delivery.
    fn map(&self, envelope: &Envelope, raw: &[u8]) -> Result<Mapped, MappingError>;
    /// What `DATA` runs before answering: the checks of [`map`](Backend::map),
    /// returning its warnings. Backends that split a message override it to
    /// check the first call only: the calls share the message content and
    /// differ only in their recipient fields.
    fn check(&self, envelope: &Envelope, raw: &[u8]) -> Result<Vec<String>, MappingError> {
        self.map(envelope, raw).map(|m| m.warnings)
    }
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
        max_message_size: mapping::POSTMARK_MAX_MESSAGE_SIZE,
    }
}

pub fn postal_options(cfg: &Config) -> MappingOptions {
    MappingOptions {
        default_stream: cfg.postmark.message_stream.clone(),
        ignore_unsupported: cfg.ignore_unsupported_features,
        max_message_size: cfg
            .postal
            .max_message_size
            .unwrap_or(mapping::POSTAL_MAX_MESSAGE_SIZE),
    }
}

/// Postmark's `DATA` check: maps only the first call (at most 50 recipients),
/// so a 1000-recipient message is not encoded twenty times while the client waits.
pub fn postmark_check(
    envelope: &Envelope,
    raw: &[u8],
    opts: &MappingOptions,
) -> Result<Vec<String>, MappingError> {
    let first = Envelope {
        mail_from: envelope.mail_from.clone(),
        rcpt_to: mapping::unique_recipients(&envelope.rcpt_to)
            .into_iter()
            .take(mapping::postmark::MAX_RECIPIENTS_PER_CALL)
            .collect(),
    };
    mapping::postmark::map(&first, raw, opts).map(|m| m.warnings)
}

/// The configured backend's mapping, without building its client (`queue show`).
pub fn map_for(cfg: &Config, envelope: &Envelope, raw: &[u8]) -> Result<Mapped, MappingError> {
    match cfg.backend {
        BackendKind::Postal => mapping::postal::map(envelope, raw, &postal_options(cfg)),
        BackendKind::Postmark | BackendKind::DryRun => {
            mapping::postmark::map(envelope, raw, &postmark_options(cfg))
        }
    }
}

/// Builds the configured backend.
pub fn build(
    cfg: &Config,
    secrets: &Secrets,
    spool_root: &Path,
) -> Result<Arc<dyn Backend>, BackendError> {
    let missing = |key: &str| BackendError::Http(format!("{key} is not set"));
    Ok(match cfg.backend {
        BackendKind::DryRun => Arc::new(dry_run::DryRun::new(
            spool_root.join("dry-run"),
            postmark_options(cfg),
        )?),
        BackendKind::Postmark => {
            let token = secrets
                .postmark_token
                .clone()
                .ok_or_else(|| missing("postmark.server_token"))?;
            let client = http::build_client().map_err(|e| BackendError::Http(e.to_string()))?;
            Arc::new(Postmark {
                client: postmark::PostmarkClient::new(client, &cfg.postmark.api_url, token),
                options: postmark_options(cfg),
            })
        }
        BackendKind::Postal => {
            let key = secrets
                .postal_key
                .clone()
                .ok_or_else(|| missing("postal.api_key"))?;
            let url = cfg
                .postal
                .api_url
                .clone()
                .ok_or_else(|| missing("postal.api_url"))?;
            let client = http::build_client().map_err(|e| BackendError::Http(e.to_string()))?;
            Arc::new(Postal {
                client: postal::PostalClient::new(client, &url, key),
                options: postal_options(cfg),
            })
        }
    })
}

/// Postmark's `/email`: one call per (at most 50-recipient) part.
struct Postmark {
    client: postmark::PostmarkClient,
    options: MappingOptions,
}

impl Backend for Postmark {
    fn name(&self) -> &'static str {
        "postmark"
    }

    fn map(&self, envelope: &Envelope, raw: &[u8]) -> Result<Mapped, MappingError> {
        mapping::postmark::map(envelope, raw, &self.options)
    }

    fn check(&self, envelope: &Envelope, raw: &[u8]) -> Result<Vec<String>, MappingError> {
        postmark_check(envelope, raw, &self.options)
    }

    fn send<'a>(&'a self, _id: &'a str, _part: usize, call: &'a ApiCall) -> SendFuture<'a> {
        Box::pin(self.client.send(&call.body))
    }
}

/// Postal's `/api/v1/send/raw`: the message itself, one call for all recipients.
struct Postal {
    client: postal::PostalClient,
    options: MappingOptions,
}

impl Backend for Postal {
    fn name(&self) -> &'static str {
        "postal"
    }

    fn map(&self, envelope: &Envelope, raw: &[u8]) -> Result<Mapped, MappingError> {
        mapping::postal::map(envelope, raw, &self.options)
    }

    fn send<'a>(&'a self, _id: &'a str, _part: usize, call: &'a ApiCall) -> SendFuture<'a> {
        Box::pin(self.client.send(&call.body))
    }
}
