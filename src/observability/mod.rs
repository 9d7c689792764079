//! Logging set-up (text or JSON, filter from `RUST_LOG` or `[log] level`,
//! which config validated at load),
//! the mail log, the readiness state, and (when `[http]` is set) the admin
//! HTTP listener.

pub mod alloc;
pub mod escape;
pub mod health;
pub mod http;
pub mod http_limits;
pub mod maillog;
pub mod metrics;
pub mod notify;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; logs go to stderr.
pub fn init_logging(cfg: &LogConfig) {
    // `log.level` was parsed the same way at load, so the `info` fallback
    // only serves a `LogConfig` built without `config::load`.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}
