//! Configuration: the embedded defaults, a TOML file, and `POSTRELAY_*`
//! environment overrides, resolved into one typed [`Config`].
//!
//! Everything is checked here, before any port is bound: unknown keys, bad
//! values and missing secrets become a [`ConfigError`] that names the key and
//! the expected form (the binary exits 78, EX_CONFIG). Secrets live in
//! [`SecretString`] so they never reach a log or a `Debug` print.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Postmark,
    Postal,
    DryRun,
}

impl BackendKind {
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
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub listen: SocketAddr,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_errors: u32,
    pub command_timeout: Dur,
    pub data_timeout: Dur,
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
    #[serde(serialize_with = "redact")]
    pub server_token: Option<SecretString>,
    pub server_token_file: Option<PathBuf>,
    pub api_url: String,
    pub message_stream: String,
}

impl Default for PostmarkConfig {
    fn default() -> Self {
        PostmarkConfig {
            server_token: None,
            server_token_file: None,
            api_url: "https://api.postmarkapp.com".into(),
            message_stream: "outbound".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostalConfig {
    pub api_url: Option<String>,
    #[serde(serialize_with = "redact")]
    pub api_key: Option<SecretString>,
    pub api_key_file: Option<PathBuf>,
    /// Postal's own SMTP server caps messages at 14 MB; its API has no published cap.
    pub max_message_size: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9025)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `postrelay=debug`); `RUST_LOG` wins when set.
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

fn redact<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some("[redacted]"),
        None => s.serialize_none(),
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

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Dur)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration (e.g. \"30s\", \"15m\", \"5d\")"
                ))
            })
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// Secrets after resolution, ready for the backends.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub postmark_token: Option<SecretString>,
    pub postal_key: Option<SecretString>,
}

/// The loaded configuration plus what loading learned on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub secrets: Secrets,
    /// Non-fatal findings to log once logging is up (e.g. plain-http api_url).
    pub warnings: Vec<String>,
}

/// Loads the configuration from `path` (if any) and the process environment.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    load_from(path, &env)
}

/// Same as [`load`], with the environment passed in (tests).
pub fn load_from(
    path: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Loaded, ConfigError> {
    let overrides = env_overrides(env);
    let mut builder = config::Config::builder();
    if let Some(path) = path {
        if !path.is_file() {
            return Err(ConfigError::Invalid(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::default()
            .separator("__")
            .try_parsing(true)
            .source(Some(overrides.clone())),
    );
    let raw = builder.build().map_err(describe)?;
    let config: Config = raw.try_deserialize().map_err(describe)?;

    let env_has = |key: &str| overrides.contains_key(key);
    let secrets = Secrets {
        postmark_token: resolve_secret(
            "postmark.server_token",
            config.postmark.server_token.clone(),
            config.postmark.server_token_file.as_deref(),
            (
                env_has("postmark__server_token"),
                env_has("postmark__server_token_file"),
            ),
            env,
            "POSTMARK_SERVER_TOKEN",
        )?,
        postal_key: resolve_secret(
            "postal.api_key",
            config.postal.api_key.clone(),
            config.postal.api_key_file.as_deref(),
            (env_has("postal__api_key"), env_has("postal__api_key_file")),
            env,
            "POSTAL_API_KEY",
        )?,
    };
    let warnings = validate(&config, &secrets)?;
    Ok(Loaded {
        config,
        secrets,
        warnings,
    })
}

/// `POSTRELAY_SMTP__LISTEN` → `smtp__listen`; the config path variable is not a key.
fn env_overrides(env: &HashMap<String, String>) -> HashMap<String, String> {
    env.iter()
        .filter(|(k, _)| k.as_str() != ENV_CONFIG_PATH)
        .filter_map(|(k, v)| {
            k.strip_prefix(ENV_PREFIX)
                .map(|rest| (rest.to_ascii_lowercase(), v.clone()))
        })
        .collect()
}

/// Precedence: `POSTRELAY_*` environment, then the file, then the root fallback
/// (`POSTMARK_SERVER_TOKEN`, `POSTMARK_SERVER_TOKEN_FILE`).
fn resolve_secret(
    key: &str,
    value: Option<SecretString>,
    file: Option<&Path>,
    (env_value, env_file): (bool, bool),
    env: &HashMap<String, String>,
    fallback: &str,
) -> Result<Option<SecretString>, ConfigError> {
    let file_key = format!("{key}_file");
    let from_file = |p: &Path| read_secret_file(&file_key, p).map(Some);
    match (value, file) {
        (Some(v), Some(_)) if env_value && !env_file => Ok(Some(v)),
        (Some(_), Some(p)) if env_file && !env_value => from_file(p),
        (Some(_), Some(_)) => Err(key_error(
            key,
            format!("set either {key} or {file_key}, not both"),
        )),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(p)) => from_file(p),
        (None, None) => {
            if let Some(v) = env.get(fallback).filter(|v| !v.trim().is_empty()) {
                return Ok(Some(SecretString::from(v.trim().to_string())));
            }
            let fallback_file = format!("{fallback}_FILE");
            match env.get(&fallback_file) {
                Some(p) => read_secret_file(&fallback_file, Path::new(p)).map(Some),
                None => Ok(None),
            }
        }
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| key_error(key, format!("cannot read {}: {e}", path.display())))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(key_error(key, format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

/// Rewrites the config crate's "<problem> for key `k` in <origin>" as
/// "k: <problem>, expected ... (in <origin>)".
fn describe(err: config::ConfigError) -> ConfigError {
    let text = err.to_string();
    let Some(start) = text.find(" for key `") else {
        return ConfigError::Invalid(text);
    };
    let rest = &text[start + " for key `".len()..];
    let Some(end) = rest.find('`') else {
        return ConfigError::Invalid(text);
    };
    let key = &rest[..end];
    let origin = rest[end + 1..].trim();
    let mut message = hint(key, &text[..start]);
    if !origin.is_empty() {
        message = format!("{message} ({origin})");
    }
    key_error(key, message)
}

/// Adds the expected form where the deserializer's text lacks it.
fn hint(key: &str, problem: &str) -> String {
    if let Some(value) = problem.split("variant constructor ").nth(1) {
        let expected = match key {
            "backend" => "\"postmark\", \"postal\" or \"dry-run\"",
            "log.format" => "\"text\" or \"json\"",
            _ => "one of the documented values",
        };
        return format!("unknown value {value:?}, expected {expected}");
    }
    if problem.contains("socket address") {
        return format!("{problem}, expected host:port, e.g. \"127.0.0.1:2525\"");
    }
    problem.to_string()
}

fn validate(c: &Config, secrets: &Secrets) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    if c.smtp.hostname.trim().is_empty() || c.smtp.hostname.contains(char::is_whitespace) {
        return Err(key_error(
            "smtp.hostname",
            "must be a host name without spaces, e.g. \"relay.local\"",
        ));
    }
    if c.smtp.max_message_size == 0 {
        return Err(key_error(
            "smtp.max_message_size",
            "must be a positive number of bytes",
        ));
    }
    if c.smtp.max_recipients == 0 {
        return Err(key_error("smtp.max_recipients", "must be at least 1"));
    }
    if c.smtp.max_connections == 0 {
        return Err(key_error("smtp.max_connections", "must be at least 1"));
    }
    if c.delivery.concurrency == 0 {
        return Err(key_error("delivery.concurrency", "must be at least 1"));
    }
    if c.delivery.retry_initial.0.is_zero() {
        return Err(key_error(
            "delivery.retry_initial",
            "must be longer than 0s, e.g. \"5s\"",
        ));
    }
    if c.delivery.retry_initial > c.delivery.retry_max {
        return Err(key_error(
            "delivery.retry_initial",
            "must not be longer than delivery.retry_max",
        ));
    }
    if c.delivery.max_age.0.is_zero() {
        return Err(key_error(
            "delivery.max_age",
            "must be longer than 0s, e.g. \"5d\"",
        ));
    }
    match c.backend {
        BackendKind::Postmark => {
            if secrets.postmark_token.is_none() {
                return Err(key_error(
                    "postmark.server_token",
                    "backend \"postmark\" needs a server token (postmark.server_token, postmark.server_token_file, POSTRELAY_POSTMARK__SERVER_TOKEN or POSTMARK_SERVER_TOKEN)",
                ));
            }
            check_url("postmark.api_url", &c.postmark.api_url, &mut warnings)?;
            if c.postmark.message_stream.trim().is_empty() {
                return Err(key_error(
                    "postmark.message_stream",
                    "must not be empty, e.g. \"outbound\"",
                ));
            }
        }
        BackendKind::Postal => {
            let Some(url) = &c.postal.api_url else {
                return Err(key_error(
                    "postal.api_url",
                    "backend \"postal\" needs the URL of your Postal server, e.g. \"https://postal.example.com\"",
                ));
            };
            check_url("postal.api_url", url, &mut warnings)?;
            if secrets.postal_key.is_none() {
                return Err(key_error(
                    "postal.api_key",
                    "backend \"postal\" needs an API key (postal.api_key, postal.api_key_file, POSTRELAY_POSTAL__API_KEY or POSTAL_API_KEY)",
                ));
            }
        }
        BackendKind::DryRun => {}
    }
    Ok(warnings)
}

fn check_url(key: &str, url: &str, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        key_error(
            key,
            format!("{url:?} is not a URL ({e}), e.g. \"https://api.postmarkapp.com\""),
        )
    })?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback {
                warnings.push(format!(
                    "{key} {url:?} is plain http on a non-loopback host: the credential travels unencrypted"
                ));
            }
        }
        other => {
            return Err(key_error(
                key,
                format!(
                    "scheme {other:?} is not supported; use https:// (or http:// for a local server)"
                ),
            ));
        }
    }
    if parsed.host().is_none() {
        return Err(key_error(key, format!("{url:?} has no host")));
    }
    Ok(())
}

impl Config {
    /// The effective configuration as TOML, secrets redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Exposes a secret for an HTTP header; the only place secrets leave their wrapper.
pub fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}
