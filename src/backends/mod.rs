//! The APIs postrelay delivers to: the I/O side of delivery. A [`Sender`]
//! makes one API call (already built by `mapping`) and classifies the answer
//! into one [`Outcome`]; nothing outside a backend knows what an HTTP status
//! means. A backend with a batch endpoint (Postmark) also offers a
//! [`BatchSender`], which answers one [`Outcome`] per call it carried.
//! Backends import neither `delivery` nor `spool`: the engine records what
//! they report.

pub mod dry_run;
pub mod http;
pub mod outcome;
pub mod postal;
pub mod postmark;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

pub use outcome::Outcome;

/// The scripted API stand-in the integration tests use: one HTTP mock for
/// the whole crate.
#[cfg(test)]
#[path = "../../tests/support/api_mock.rs"]
mod api_mock;

use secrecy::SecretString;

use crate::config::{BackendKind, Config, Secrets};
use crate::mapping::ApiCall;

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;
/// One [`Outcome`] per element of a batch, in order.
pub type BatchFuture<'a> = Pin<Box<dyn Future<Output = Vec<Outcome>> + Send + 'a>>;

/// One API call in, one [`Outcome`] out.
pub trait Sender: Send + Sync {
    /// `postmark`, `postal` or `dry-run`: a log and metrics label.
    fn name(&self) -> &'static str;
    /// Makes one API call for message `id`; `part` numbers the calls of a
    /// split message from 0.
    fn send<'a>(&'a self, id: &'a str, part: usize, call: &'a ApiCall) -> SendFuture<'a>;
    /// Like [`send`](Self::send) with `credential` in place of the
    /// configured one (a user's own token, a passthrough token); `None`
    /// uses the configured one. Backends without credentials ignore it.
    fn send_as<'a>(
        &'a self,
        id: &'a str,
        part: usize,
        call: &'a ApiCall,
        credential: Option<&'a SecretString>,
    ) -> SendFuture<'a> {
        let _ = credential;
        self.send(id, part, call)
    }
    /// The backend's batch endpoint, when it has one and batches are
    /// configured; `None` (the default): every call goes through `send_as`.
    fn batch(&self) -> Option<&dyn BatchSender> {
        None
    }
}

/// Several API calls in one request. Only a backend that has a batch
/// endpoint implements it; the engine gives it batches of at most
/// [`max_elements`](Self::max_elements) calls and
/// [`max_body_bytes`](Self::max_body_bytes) of JSON, all sent with one
/// credential.
pub trait BatchSender: Send + Sync {
    /// Most calls in one batch, at least 2.
    fn max_elements(&self) -> usize;
    /// Most bytes of JSON body in one batch: the calls' encoded lengths,
    /// plus the array's brackets and commas.
    fn max_body_bytes(&self) -> usize;
    /// Sends `calls` in one request with `credential` (`None`: the
    /// configured one); one outcome per call, in order.
    fn send_batch<'a>(
        &'a self,
        calls: &'a [&'a ApiCall],
        credential: Option<&'a SecretString>,
    ) -> BatchFuture<'a>;
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// A setting the config should have refused (URL, credential).
    #[error("{0}")]
    Config(String),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Builds the configured backend's sender.
pub fn build(
    cfg: &Config,
    secrets: &Secrets,
    dry_run_dir: &Path,
) -> Result<Arc<dyn Sender>, BackendError> {
    let missing = |key: &str| BackendError::Http(format!("{key} is not set"));
    Ok(match cfg.backend {
        BackendKind::DryRun => Arc::new(dry_run::DryRun::new(dry_run_dir.to_path_buf())?),
        BackendKind::Postmark => {
            let token = secrets
                .postmark_token
                .clone()
                .ok_or_else(|| missing("postmark.server_token"))?;
            let client = http::build_client().map_err(|e| BackendError::Http(e.to_string()))?;
            Arc::new(
                postmark::PostmarkClient::new(client, &cfg.postmark.api_url, token)?
                    .with_batch_size(cfg.postmark.batch_size),
            )
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
            Arc::new(postal::PostalClient::new(client, &url, key)?)
        }
    })
}

/// Postmark's `/email`: one call per (at most 50-recipient) part.
impl Sender for postmark::PostmarkClient {
    fn name(&self) -> &'static str {
        "postmark"
    }

    fn send<'a>(&'a self, _id: &'a str, _part: usize, call: &'a ApiCall) -> SendFuture<'a> {
        Box::pin(postmark::PostmarkClient::send(self, call))
    }

    fn send_as<'a>(
        &'a self,
        _id: &'a str,
        _part: usize,
        call: &'a ApiCall,
        credential: Option<&'a SecretString>,
    ) -> SendFuture<'a> {
        Box::pin(postmark::PostmarkClient::send_with(self, call, credential))
    }

    fn batch(&self) -> Option<&dyn BatchSender> {
        (self.batch_size() > 1).then_some(self as &dyn BatchSender)
    }
}

/// Postmark's `/email/batch`: up to `postmark.batch_size` messages and 50 MB.
impl BatchSender for postmark::PostmarkClient {
    fn max_elements(&self) -> usize {
        self.batch_size()
    }

    fn max_body_bytes(&self) -> usize {
        crate::config::postmark::MAX_BATCH_BYTES
    }

    fn send_batch<'a>(
        &'a self,
        calls: &'a [&'a ApiCall],
        credential: Option<&'a SecretString>,
    ) -> BatchFuture<'a> {
        Box::pin(postmark::PostmarkClient::send_batch_with(
            self, calls, credential,
        ))
    }
}

/// Postal's `/api/v1/send/raw`: the message itself, one call for all recipients.
impl Sender for postal::PostalClient {
    fn name(&self) -> &'static str {
        "postal"
    }

    fn send<'a>(&'a self, _id: &'a str, _part: usize, call: &'a ApiCall) -> SendFuture<'a> {
        Box::pin(postal::PostalClient::send(self, call))
    }

    fn send_as<'a>(
        &'a self,
        _id: &'a str,
        _part: usize,
        call: &'a ApiCall,
        credential: Option<&'a SecretString>,
    ) -> SendFuture<'a> {
        Box::pin(postal::PostalClient::send_with(self, call, credential))
    }
}
