//! The `dry-run` backend: maps the message exactly as for Postmark, writes the
//! request body it would have sent to `<spool>/dry-run/<id>.json` (further
//! parts of a split message: `<id>.2.json`, ...), and reports it delivered.
//! Nothing leaves the host.

use std::path::PathBuf;

use super::{Backend, BackendError, SendFuture};
use crate::delivery::outcome::Outcome;
use crate::mapping::{self, ApiCall, Mapped, MappingError, MappingOptions};
use crate::message::Envelope;
use crate::spool::fsio;

pub struct DryRun {
    dir: PathBuf,
    options: MappingOptions,
}

impl DryRun {
    pub fn new(dir: PathBuf, options: MappingOptions) -> Result<DryRun, BackendError> {
        std::fs::create_dir_all(&dir).map_err(|source| BackendError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(DryRun { dir, options })
    }

    fn file_for(&self, id: &str, part: usize) -> PathBuf {
        match part {
            0 => self.dir.join(format!("{id}.json")),
            n => self.dir.join(format!("{id}.{}.json", n + 1)),
        }
    }
}

impl Backend for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn map(&self, envelope: &Envelope, raw: &[u8]) -> Result<Mapped, MappingError> {
        mapping::postmark::map(envelope, raw, &self.options)
    }

    fn check(&self, envelope: &Envelope, raw: &[u8]) -> Result<Vec<String>, MappingError> {
        super::postmark_check(envelope, raw, &self.options)
    }

    fn send<'a>(&'a self, id: &'a str, part: usize, call: &'a ApiCall) -> SendFuture<'a> {
        Box::pin(async move {
            let path = self.file_for(id, part);
            let mut body = match serde_json::to_vec_pretty(&call.body) {
                Ok(b) => b,
                Err(e) => {
                    return Outcome::Permanent {
                        code: None,
                        reason: format!("request does not serialize: {e}"),
                    };
                }
            };
            body.push(b'\n');
            let written =
                tokio::task::spawn_blocking(move || fsio::write_atomic(&path, &body)).await;
            match written {
                Ok(Ok(())) => Outcome::Delivered {
                    api_id: Some(format!("dry-run-{id}-{}", part + 1)),
                    note: None,
                },
                Ok(Err(e)) => Outcome::Transient {
                    reason: format!("cannot write dry-run output: {e}"),
                    retry_after: None,
                    throttled: false,
                },
                Err(e) => Outcome::Transient {
                    reason: format!("dry-run writer failed: {e}"),
                    retry_after: None,
                    throttled: false,
                },
            }
        })
    }
}
