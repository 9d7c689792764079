//! The `dry-run` backend: takes the calls mapped exactly as for Postmark,
//! writes each request body it would have sent to `<spool>/dry-run/<id>.json`
//! (further parts of a split message: `<id>.2.json`, ...), and reports it
//! delivered. Nothing leaves the host.

use std::path::PathBuf;

use super::{BackendError, SendFuture, Sender};
use crate::backends::Outcome;
use crate::mapping::ApiCall;

pub struct DryRun {
    dir: PathBuf,
}

impl DryRun {
    pub fn new(dir: PathBuf) -> Result<DryRun, BackendError> {
        std::fs::create_dir_all(&dir).map_err(|source| BackendError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(DryRun { dir })
    }

    fn file_for(&self, id: &str, part: usize) -> PathBuf {
        match part {
            0 => self.dir.join(format!("{id}.json")),
            n => self.dir.join(format!("{id}.{}.json", n + 1)),
        }
    }
}

impl Sender for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn send<'a>(&'a self, id: &'a str, part: usize, call: &'a ApiCall) -> SendFuture<'a> {
        Box::pin(async move {
            let path = self.file_for(id, part);
            let mut body = match serde_json::to_vec_pretty(&call.body()) {
                Ok(b) => b,
                Err(e) => {
                    return Outcome::Permanent {
                        code: None,
                        reason: format!("request does not serialize: {e}"),
                    };
                }
            };
            body.push(b'\n');
            let written = tokio::task::spawn_blocking(move || write_whole(&path, &body)).await;
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

/// Writes `bytes` beside `path` and renames it into place, so a reader never
/// sees half a request. Not fsynced: dry-run output is for inspection only.
fn write_whole(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", ulid::Ulid::generate()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
