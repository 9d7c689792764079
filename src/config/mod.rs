//! Configuration: the typed [`Config`] with its defaults, and the public
//! load API. The work is split by role: `load` merges the defaults, a TOML
//! file and `POSTRELAY_*` overrides and names the key of any value that
//! does not deserialize; `secrets` resolves `*_file` secrets and root
//! fallbacks; `validate` checks ranges, URLs and the log filter and collects
//! warnings; `redact` is what `check-config` and messages may show.
//!
//! Invariant: everything is checked here, before any port is bound. A bad
//! value becomes a [`ConfigError`] naming the key and the expected form (the
//! binary exits 78, EX_CONFIG). Secrets live in [`SecretString`] so they
//! never reach a log or a `Debug` print; neither a secret nor a credential
//! in an `api_url` is ever part of an error text. Tools that need no
//! credentials (`queue`, `sendmail`) load with [`Mode::Tools`], which leaves
//! secrets unresolved.

mod access;
mod cidr;
mod load;
pub mod postmark;
mod redact;
mod secrets;
#[cfg(test)]
mod testing;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

pub use access::{TlsConfig, UserConfig};
pub use cidr::Cidr;
pub use redact::without_userinfo;
pub use secrets::Secrets;

/// Environment prefix for overrides: `POSTRELAY_SMTP__LISTEN=...`.
pub const ENV_PREFIX: &str = "POSTRELAY_";
/// The variable that names the config file; not itself a config key.
pub const ENV_CONFIG_PATH: &str = "POSTRELAY_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("{key}: {message}")]
    Key { key: String, message: String },
}

fn key_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Postmark,
    Postal,
    DryRun,
}

impl BackendKind {
    const ALL: [BackendKind; 3] = [
        BackendKind::Postmark,
        BackendKind::Postal,
        BackendKind::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Postmark => "postmark",
            BackendKind::Postal => "postal",
            BackendKind::DryRun => "dry-run",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub backend: BackendKind,
    pub ignore_unsupported_features: bool,
    /// How long a stopping daemon waits for SMTP transactions and API calls in flight.
    pub shutdown_timeout: Dur,
    pub smtp: SmtpConfig,
    pub spool: SpoolConfig,
    pub delivery: DeliveryConfig,
    pub postmark: PostmarkConfig,
    pub postal: PostalConfig,
    /// Health and metrics listener; off when the table is absent.
    pub http: Option<HttpConfig>,
    pub log: LogConfig,
    pub local: LocalConfig,
    pub sendmail: SendmailConfig,
    /// SMTP AUTH accounts (`[[users]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: BackendKind::DryRun,
            ignore_unsupported_features: false,
            shutdown_timeout: Dur::secs(30),
            smtp: SmtpConfig::default(),
            spool: SpoolConfig::default(),
            delivery: DeliveryConfig::default(),
            postmark: PostmarkConfig::default(),
            postal: PostalConfig::default(),
            http: None,
            log: LogConfig::default(),
            local: LocalConfig::default(),
            sendmail: SendmailConfig::default(),
            users: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    #[serde(deserialize_with = "load::socket_addr")]
    pub listen: SocketAddr,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_errors: u32,
    pub command_timeout: Dur,
    pub data_timeout: Dur,
    /// Bytes of header block a message may carry; more get `552 5.3.4` at DATA.
    pub max_header_size: usize,
    /// Bytes all DATA-time checks together may use; other checks wait.
    pub check_memory: usize,
    /// Clients that may send without AUTH (a list, or one comma-separated string).
    #[serde(deserialize_with = "load::cidr_list")]
    pub allowed_networks: Vec<Cidr>,
    /// Every client authenticates, loopback and `allowed_networks` too.
    pub require_auth: bool,
    /// Concurrent sessions from one client address; more get `421 4.7.0`.
    pub max_connections_per_ip: usize,
    /// STARTTLS and the implicit-TLS listener; absent = no TLS.
    pub tls: Option<TlsConfig>,
    /// AUTH is offered without TLS to non-loopback clients too.
    pub allow_plaintext_auth: bool,
    /// Wait before each `535 5.7.8`.
    pub auth_failure_delay: Dur,
    /// AUTH failures per client address per 10 minutes; then `421 4.7.0`.
    pub max_auth_failures: u32,
    /// The AUTH password is the backend credential itself (a Postmark server
    /// token, a Postal API key); the user name is ignored.
    pub auth_passthrough: bool,
    /// Longest a session may last, whatever it does; then `421 4.4.2`.
    pub max_session_time: Dur,
    /// Transactions (`MAIL` commands) per session; then `421 4.7.0`.
    pub max_transactions: u32,
    /// Prepend a `Received:` trace header to every accepted message.
    pub received_header: bool,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            hostname: "relay.local".into(),
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 1000,
            max_connections: 100,
            max_errors: 10,
            command_timeout: Dur::secs(300),
            data_timeout: Dur::secs(600),
            max_header_size: 1024 * 1024,
            check_memory: 256 * 1024 * 1024,
            allowed_networks: access::loopback_networks(),
            require_auth: false,
            max_connections_per_ip: 20,
            tls: None,
            allow_plaintext_auth: false,
            auth_failure_delay: Dur::secs(1),
            max_auth_failures: 5,
            auth_passthrough: false,
            max_session_time: Dur::secs(3600),
            max_transactions: 1000,
            received_header: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Refuse new mail (`452 4.3.1`) when the spool's filesystem has less free space than this.
    pub min_free_space: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("./postrelay-spool"),
            min_free_space: 100 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub rate_limit: u32,
    pub concurrency: usize,
    pub retry_initial: Dur,
    pub retry_max: Dur,
    pub max_age: Dur,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            rate_limit: 50,
            concurrency: 8,
            retry_initial: Dur::secs(5),
            retry_max: Dur::secs(15 * 60),
            max_age: Dur::secs(5 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostmarkConfig {
    #[serde(serialize_with = "redact::secret")]
    pub server_token: Option<SecretString>,
    pub server_token_file: Option<PathBuf>,
    #[serde(serialize_with = "redact::url")]
    pub api_url: String,
    pub message_stream: String,
    /// Send defaults for messages without the matching `X-PM-*` header;
    /// absent (or an empty tag) = the Postmark server's own setting.
    pub tag: String,
    pub track_opens: Option<bool>,
    pub track_links: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Messages per `POST /email/batch` when several are due; 1 = always
    /// `/email`. At most [`postmark::MAX_BATCH_SIZE`].
    pub batch_size: usize,
    /// Stamp the spool id into every request's `Metadata["postrelay-id"]`.
    pub trace_metadata: bool,
}

impl Default for PostmarkConfig {
    fn default() -> Self {
        PostmarkConfig {
            server_token: None,
            server_token_file: None,
            api_url: "https://api.postmarkapp.com".into(),
            message_stream: "outbound".into(),
            tag: String::new(),
            track_opens: None,
            track_links: None,
            metadata: Default::default(),
            batch_size: postmark::MAX_BATCH_SIZE,
            trace_metadata: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostalConfig {
    #[serde(serialize_with = "redact::opt_url")]
    pub api_url: Option<String>,
    #[serde(serialize_with = "redact::secret")]
    pub api_key: Option<SecretString>,
    pub api_key_file: Option<PathBuf>,
    /// Postal's own SMTP server caps messages at 14 MB; its API has no published cap.
    pub max_message_size: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    #[serde(deserialize_with = "load::socket_addr")]
    pub listen: SocketAddr,
    /// Open connections at once; more are closed at accept.
    pub max_connections: usize,
    /// Silence allowed on a connection (a request's headers, an idle keep-alive).
    pub header_read_timeout: Dur,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9025)),
            max_connections: 64,
            header_read_timeout: Dur::secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `postrelay=debug`), checked at load;
    /// `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// How mail from local programs names local users.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Qualifies bare names (`root` -> `root@<domain>`); empty: the host's
    /// FQDN, else its host name (see [`LocalConfig::effective_domain`]).
    pub domain: String,
    /// When set, mail for local users (a recipient without a domain) goes here.
    pub admin_address: String,
}

impl LocalConfig {
    /// `domain`, or when it is empty the host's FQDN (else its host name).
    pub fn effective_domain(&self) -> String {
        if self.domain.is_empty() {
            crate::message::local::host_fqdn()
        } else {
            self.domain.clone()
        }
    }

    /// `admin_address` when it is set.
    pub fn admin(&self) -> Option<&str> {
        Some(self.admin_address.as_str()).filter(|a| !a.is_empty())
    }
}

/// The local submission program.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendmailConfig {
    /// Where `postrelay sendmail` leaves mail the daemon cannot take now;
    /// outside the private spool. The daemon creates it and imports from it.
    pub maildrop: PathBuf,
}

impl Default for SendmailConfig {
    fn default() -> Self {
        SendmailConfig {
            maildrop: PathBuf::from("/var/spool/postrelay/maildrop"),
        }
    }
}

/// A duration written `30s`, `15m`, `2h`, `5d` (also `250ms`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// The loaded configuration plus what loading learned on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub secrets: Secrets,
    /// Non-fatal findings to log once logging is up (e.g. plain-http api_url).
    pub warnings: Vec<String>,
}

/// How much of the configuration a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `serve` and `check-config`: everything, secrets read and required.
    Full,
    /// `queue` and `sendmail`: everything but the secrets, which stay
    /// unread ([`Secrets`] is empty). An operator, or PHP running as
    /// `www-data`, may not be allowed to read the token, and needs none.
    Tools,
}

/// Loads the configuration from `path` (if any) and the process environment.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_with(path, &std::env::vars().collect(), Mode::Full)
}

/// Like [`load`], without reading or requiring secrets ([`Mode::Tools`]).
pub fn load_for_tools(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_with(path, &std::env::vars().collect(), Mode::Tools)
}

/// Same as [`load`], with the environment passed in (tests).
pub fn load_from(
    path: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Loaded, ConfigError> {
    load_with(path, env, Mode::Full)
}

/// Loads from `path` and `env` as `mode` asks: merge and deserialize, resolve
/// the secrets (in [`Mode::Full`]), then validate.
pub fn load_with(
    path: Option<&Path>,
    env: &HashMap<String, String>,
    mode: Mode,
) -> Result<Loaded, ConfigError> {
    let overrides = load::env_overrides(env);
    let config = load::merge(path, &overrides)?;
    let secrets = match mode {
        Mode::Full => Some(secrets::resolve(&config, &overrides, env)?),
        Mode::Tools => None,
    };
    let mut warnings = validate::validate(&config, secrets.as_ref())?;
    if mode == Mode::Full {
        let env_secrets: Vec<&str> = ["postmark__server_token", "postal__api_key"]
            .into_iter()
            .filter(|k| overrides.contains_key(*k))
            .collect();
        warnings.extend(access::permission_warnings(&config, path, &env_secrets));
    }
    Ok(Loaded {
        config,
        secrets: secrets.unwrap_or_default(),
        warnings,
    })
}

impl Config {
    /// The effective configuration as TOML: secrets and the user-info of
    /// `api_url`s redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}
