//! Configuration: the embedded defaults, a TOML file, and `POSTRELAY_*`
//! environment overrides, resolved into one typed [`Config`].
//!
//! Everything is checked here, before any port is bound: unknown keys, bad
//! or out-of-range values and missing secrets become a [`ConfigError`] that
//! names the key and the expected form (the binary exits 78, EX_CONFIG).
//! Secrets live in [`SecretString`] so they never reach a log or a `Debug`
//! print; a secret or a credential in an `api_url` is never part of an error
//! text. Tools that need no credentials (`queue`, `sendmail`) load with
//! [`Mode::Tools`], which leaves secrets unresolved.

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
    /// Bytes of header block a message may carry; more get `552 5.3.4` at DATA.
    pub max_header_size: usize,
    /// Bytes all DATA-time checks together may use; other checks wait.
    pub check_memory: usize,
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
    #[serde(serialize_with = "redact_url")]
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
    #[serde(serialize_with = "redact_opt_url")]
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

fn redact_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&without_userinfo(url))
}

fn redact_opt_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&without_userinfo(u)),
        None => s.serialize_none(),
    }
}

/// `http://user:pass@host/x` → `http://[redacted]@host/x`. Works on the text,
/// so it also covers values that are not valid URLs (error messages).
pub fn without_userinfo(url: &str) -> String {
    if let Ok(parsed) = reqwest::Url::parse(url)
        && parsed.has_host()
    {
        if parsed.username().is_empty() && parsed.password().is_none() {
            return url.to_string();
        }
        {
            return format!(
                "{}://[redacted]@{}",
                parsed.scheme(),
                &parsed[url::Position::BeforeHost..]
            );
        }
    }
    // Not a URL we can read: cut at the last '@' anywhere, since a password
    // may itself hold '/', '?' or '#'; over-redacting a message is the safe side.
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => format!("{}[redacted]{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
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

/// Loads from `path` and `env` as `mode` asks.
pub fn load_with(
    path: Option<&Path>,
    env: &HashMap<String, String>,
    mode: Mode,
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
    // Values stay strings: `try_parsing(true)` would turn a token or host name
    // like "0123" into the integer 123. Numbers, booleans and durations are
    // still parsed from strings when their field is deserialized.
    builder = builder.add_source(
        config::Environment::default()
            .separator("__")
            .try_parsing(false)
            .source(Some(overrides.clone())),
    );
    let raw = builder.build().map_err(describe)?;
    let config: Config = raw.try_deserialize().map_err(describe)?;

    let secrets = match mode {
        Mode::Full => Some(resolve_secrets(&config, &overrides, env)?),
        Mode::Tools => None,
    };
    let warnings = validate(&config, secrets.as_ref())?;
    Ok(Loaded {
        config,
        secrets: secrets.unwrap_or_default(),
        warnings,
    })
}

fn resolve_secrets(
    config: &Config,
    overrides: &HashMap<String, String>,
    env: &HashMap<String, String>,
) -> Result<Secrets, ConfigError> {
    let env_has = |key: &str| overrides.contains_key(key);
    Ok(Secrets {
        postmark_token: resolve_secret(
            "postmark.server_token",
            config.postmark.server_token.as_ref(),
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
            config.postal.api_key.as_ref(),
            config.postal.api_key_file.as_deref(),
            (env_has("postal__api_key"), env_has("postal__api_key_file")),
            env,
            "POSTAL_API_KEY",
        )?,
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
/// (`POSTMARK_SERVER_TOKEN`, `POSTMARK_SERVER_TOKEN_FILE`). Whatever the
/// source, the secret is trimmed and checked by [`clean_secret`].
fn resolve_secret(
    key: &str,
    value: Option<&SecretString>,
    file: Option<&Path>,
    (env_value, env_file): (bool, bool),
    env: &HashMap<String, String>,
    fallback: &str,
) -> Result<Option<SecretString>, ConfigError> {
    let file_key = format!("{key}_file");
    let direct = |v: &SecretString| clean_secret(key, v.expose_secret(), None).map(Some);
    let from_file = |p: &Path| read_secret_file(&file_key, p).map(Some);
    match (value, file) {
        (Some(v), Some(_)) if env_value && !env_file => direct(v),
        (Some(_), Some(p)) if env_file && !env_value => from_file(p),
        (Some(_), Some(_)) => Err(key_error(
            key,
            format!("set either {key} or {file_key}, not both"),
        )),
        (Some(v), None) => direct(v),
        (None, Some(p)) => from_file(p),
        (None, None) => {
            // An empty root fallback (`POSTMARK_SERVER_TOKEN=` from a compose
            // file) counts as unset; it is not postrelay's own key.
            if let Some(v) = env.get(fallback).filter(|v| !v.trim().is_empty()) {
                return clean_secret(fallback, v, None).map(Some);
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
    clean_secret(key, &text, Some(path))
}

/// Trims a secret and checks it can be sent as an HTTP header value: not
/// empty, nothing but visible ASCII, spaces and tabs. The value itself is
/// never part of the error.
fn clean_secret(key: &str, raw: &str, file: Option<&Path>) -> Result<SecretString, ConfigError> {
    let trimmed = raw.trim();
    let subject = match file {
        Some(p) => format!("{} ", p.display()),
        None => String::new(),
    };
    if trimmed.is_empty() {
        return Err(key_error(
            key,
            match file {
                Some(p) => format!("{} is empty", p.display()),
                None => "must not be empty or only whitespace".into(),
            },
        ));
    }
    if !trimmed
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(key_error(
            key,
            format!(
                "{subject}contains a character an HTTP header cannot carry (a control character, line break or non-ASCII); the value is not shown"
            ),
        ));
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

/// Upper bound for `smtp.max_connections` and `delivery.concurrency`: far
/// above any real need, far below what a semaphore or a task set can hold.
const MAX_PARALLEL: usize = 100_000;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// `1..=max`, else "must be at least 1 and at most {max} (got {value})".
fn check_count(key: &str, value: usize, max: usize) -> Result<(), ConfigError> {
    if value == 0 || value > max {
        return Err(key_error(
            key,
            format!("must be at least 1 and at most {max} (got {value})"),
        ));
    }
    Ok(())
}

/// `min..=max`; `range` and `example` are how the message spells them.
fn check_duration(
    key: &str,
    value: Dur,
    (min, max): (Duration, Duration),
    range: &str,
    example: &str,
) -> Result<(), ConfigError> {
    if value.0 < min || value.0 > max {
        return Err(key_error(
            key,
            format!(
                "must be {range} (got {}), e.g. \"{example}\"",
                humantime::format_duration(value.0)
            ),
        ));
    }
    Ok(())
}

/// Checks what deserializing cannot; `secrets` is `None` in [`Mode::Tools`],
/// which skips the "backend needs a credential" checks.
fn validate(c: &Config, secrets: Option<&Secrets>) -> Result<Vec<String>, ConfigError> {
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
    if c.smtp.max_header_size < 1024 {
        return Err(key_error(
            "smtp.max_header_size",
            "must be at least 1024 bytes, e.g. 1048576",
        ));
    }
    if c.smtp.check_memory < 1024 * 1024 {
        return Err(key_error(
            "smtp.check_memory",
            "must be at least 1048576 bytes (1 MiB), e.g. 268435456",
        ));
    }
    check_count("smtp.max_connections", c.smtp.max_connections, MAX_PARALLEL)?;
    let timeout = (Duration::from_millis(100), HOUR);
    let timeout_range = "between 100ms and 1h";
    check_duration(
        "smtp.command_timeout",
        c.smtp.command_timeout,
        timeout,
        timeout_range,
        "5m",
    )?;
    check_duration(
        "smtp.data_timeout",
        c.smtp.data_timeout,
        timeout,
        timeout_range,
        "10m",
    )?;
    check_duration(
        "shutdown_timeout",
        c.shutdown_timeout,
        (Duration::ZERO, HOUR),
        "between 0s and 1h",
        "30s",
    )?;
    check_count("delivery.concurrency", c.delivery.concurrency, MAX_PARALLEL)?;
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
    check_duration(
        "delivery.retry_max",
        c.delivery.retry_max,
        (Duration::ZERO, 30 * DAY),
        "at most 30d",
        "15m",
    )?;
    check_duration(
        "delivery.max_age",
        c.delivery.max_age,
        (Duration::from_nanos(1), 365 * DAY),
        "longer than 0s and at most 365d",
        "5d",
    )?;
    match c.backend {
        BackendKind::Postmark => {
            if secrets.is_some_and(|s| s.postmark_token.is_none()) {
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
            if secrets.is_some_and(|s| s.postal_key.is_none()) {
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

/// Messages show the URL with any user-info replaced by `[redacted]`.
fn check_url(key: &str, url: &str, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let shown = without_userinfo(url);
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        key_error(
            key,
            format!("{shown:?} is not a URL ({e}), e.g. \"https://api.postmarkapp.com\""),
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
                    "{key} {shown:?} is plain http on a non-loopback host: the credential travels unencrypted"
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
        return Err(key_error(key, format!("{shown:?} has no host")));
    }
    Ok(())
}

impl Config {
    /// The effective configuration as TOML: secrets and the user-info of
    /// `api_url`s redacted.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        load_from(None, &env(pairs))
    }

    fn load_toml(toml: &str, pairs: &[(&str, &str)], mode: Mode) -> Result<Loaded, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postrelay.toml");
        std::fs::write(&path, toml).unwrap();
        load_with(Some(&path), &env(pairs), mode).map_err(|e| e.to_string())
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        load_env(pairs).expect_err("should be refused").to_string()
    }

    fn token(l: &Loaded) -> &str {
        l.secrets.postmark_token.as_ref().unwrap().expose_secret()
    }

    #[test]
    fn env_strings_that_look_like_numbers_stay_strings() {
        let l = load_env(&[
            ("POSTRELAY_BACKEND", "postmark"),
            ("POSTRELAY_POSTMARK__SERVER_TOKEN", "00123456789"),
            ("POSTRELAY_SMTP__HOSTNAME", "0123"),
            ("POSTRELAY_POSTMARK__MESSAGE_STREAM", "007"),
        ])
        .unwrap();
        assert_eq!(token(&l), "00123456789");
        assert_eq!(l.config.smtp.hostname, "0123");
        assert_eq!(l.config.postmark.message_stream, "007");
    }

    #[test]
    fn env_numbers_booleans_and_durations_still_parse() {
        let l = load_env(&[
            ("POSTRELAY_DELIVERY__RATE_LIMIT", "7"),
            ("POSTRELAY_IGNORE_UNSUPPORTED_FEATURES", "true"),
            ("POSTRELAY_SMTP__MAX_MESSAGE_SIZE", "100"),
            ("POSTRELAY_SPOOL__MIN_FREE_SPACE", "18446744073709551615"),
            ("POSTRELAY_POSTAL__MAX_MESSAGE_SIZE", "2048"),
            ("POSTRELAY_DELIVERY__RETRY_MAX", "2h"),
        ])
        .unwrap();
        assert_eq!(l.config.delivery.rate_limit, 7);
        assert!(l.config.ignore_unsupported_features);
        assert_eq!(l.config.smtp.max_message_size, 100);
        assert_eq!(l.config.spool.min_free_space, u64::MAX);
        assert_eq!(l.config.postal.max_message_size, Some(2048));
        assert_eq!(l.config.delivery.retry_max, Dur::secs(7200));
        assert_eq!(
            err(&[("POSTRELAY_DELIVERY__RATE_LIMIT", "fast")]),
            "delivery.rate_limit: invalid type: string \"fast\", expected an integer (in the environment)"
        );
    }

    #[test]
    fn empty_or_blank_secrets_are_refused_naming_the_key() {
        for value in ["", "   ", "\t\n"] {
            let e = err(&[("POSTRELAY_POSTMARK__SERVER_TOKEN", value)]);
            assert_eq!(
                e, "postmark.server_token: must not be empty or only whitespace",
                "{value:?}"
            );
        }
        let e = load_toml("[postal]\napi_key = \"  \"\n", &[], Mode::Full).unwrap_err();
        assert_eq!(e, "postal.api_key: must not be empty or only whitespace");
    }

    #[test]
    fn direct_secrets_are_trimmed_like_file_secrets() {
        let l = load_env(&[
            ("POSTRELAY_BACKEND", "postmark"),
            ("POSTRELAY_POSTMARK__SERVER_TOKEN", "  tok-123\n"),
        ])
        .unwrap();
        assert_eq!(token(&l), "tok-123");
        let l = load_toml(
            "backend = \"postmark\"\n[postmark]\nserver_token = \" inline \"\n",
            &[],
            Mode::Full,
        )
        .unwrap();
        assert_eq!(token(&l), "inline");
    }

    #[test]
    fn secrets_an_http_header_cannot_carry_are_refused_without_showing_them() {
        for value in [
            "abc\ndef-hidden",
            "abc\rdef-hidden",
            "abc\u{1}def-hidden",
            "abcdéf-hidden",
        ] {
            let e = err(&[("POSTRELAY_POSTMARK__SERVER_TOKEN", value)]);
            assert!(
                e.starts_with(
                    "postmark.server_token: contains a character an HTTP header cannot carry"
                ),
                "{value:?}: {e}"
            );
            assert!(!e.contains("hidden"), "{e}");
        }
        let e = err(&[("POSTAL_API_KEY", "key\u{7f}-hidden")]);
        assert!(e.starts_with("POSTAL_API_KEY: contains"), "{e}");
        assert!(!e.contains("hidden"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "line-one\nline-two-hidden\n").unwrap();
        let e = err(&[(
            "POSTRELAY_POSTMARK__SERVER_TOKEN_FILE",
            file.to_str().unwrap(),
        )]);
        assert!(
            e.starts_with(&format!(
                "postmark.server_token_file: {} contains",
                file.display()
            )),
            "{e}"
        );
        assert!(!e.contains("hidden"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_refused_naming_key_and_range() {
        let cases = [
            (
                "POSTRELAY_SMTP__MAX_CONNECTIONS",
                "100001",
                "smtp.max_connections: must be at least 1 and at most 100000 (got 100001)",
            ),
            (
                "POSTRELAY_SMTP__MAX_CONNECTIONS",
                "0",
                "smtp.max_connections: must be at least 1 and at most 100000 (got 0)",
            ),
            (
                "POSTRELAY_DELIVERY__CONCURRENCY",
                "18446744073709551615",
                "delivery.concurrency: must be at least 1 and at most 100000",
            ),
            (
                "POSTRELAY_DELIVERY__RETRY_MAX",
                "31d",
                "delivery.retry_max: must be at most 30d (got 1month",
            ),
            (
                "POSTRELAY_DELIVERY__MAX_AGE",
                "366d",
                "delivery.max_age: must be longer than 0s and at most 365d",
            ),
            (
                "POSTRELAY_DELIVERY__MAX_AGE",
                "0s",
                "delivery.max_age: must be longer than 0s and at most 365d (got 0s)",
            ),
            (
                "POSTRELAY_SHUTDOWN_TIMEOUT",
                "2h",
                "shutdown_timeout: must be between 0s and 1h (got 2h)",
            ),
            (
                "POSTRELAY_SMTP__COMMAND_TIMEOUT",
                "99ms",
                "smtp.command_timeout: must be between 100ms and 1h (got 99ms)",
            ),
            (
                "POSTRELAY_SMTP__DATA_TIMEOUT",
                "61m",
                "smtp.data_timeout: must be between 100ms and 1h (got 1h 1m)",
            ),
        ];
        for (var, value, want) in cases {
            let e = err(&[(var, value)]);
            assert!(e.starts_with(want), "{var}={value}: {e}");
        }
        // The edges are allowed.
        load_env(&[
            ("POSTRELAY_SMTP__MAX_CONNECTIONS", "100000"),
            ("POSTRELAY_DELIVERY__CONCURRENCY", "100000"),
            ("POSTRELAY_DELIVERY__RETRY_MAX", "30d"),
            ("POSTRELAY_DELIVERY__MAX_AGE", "365d"),
            ("POSTRELAY_SHUTDOWN_TIMEOUT", "0s"),
            ("POSTRELAY_SMTP__COMMAND_TIMEOUT", "100ms"),
            ("POSTRELAY_SMTP__DATA_TIMEOUT", "1h"),
        ])
        .unwrap();
    }

    #[test]
    fn credentials_in_api_url_never_reach_a_message_or_the_printed_config() {
        let l = load_env(&[
            ("POSTRELAY_BACKEND", "postmark"),
            ("POSTRELAY_POSTMARK__SERVER_TOKEN", "t"),
            (
                "POSTRELAY_POSTMARK__API_URL",
                "http://user:s3cret@10.0.0.1/base",
            ),
        ])
        .unwrap();
        assert_eq!(
            l.warnings,
            vec![
                "postmark.api_url \"http://[redacted]@10.0.0.1/base\" is plain http on a non-loopback host: the credential travels unencrypted"
            ]
        );
        let printed = l.config.to_toml();
        assert!(
            printed.contains("api_url = \"http://[redacted]@10.0.0.1/base\""),
            "{printed}"
        );
        assert!(!printed.contains("s3cret"), "{printed}");
        // The real value is still what the backend gets.
        assert_eq!(
            l.config.postmark.api_url,
            "http://user:s3cret@10.0.0.1/base"
        );

        for url in [
            "http://user:s3cret@[::1",
            "gopher://user:s3cret@h",
            "user:s3cret@h/x",
        ] {
            let e = err(&[
                ("POSTRELAY_BACKEND", "postal"),
                ("POSTRELAY_POSTAL__API_KEY", "k"),
                ("POSTRELAY_POSTAL__API_URL", url),
            ]);
            assert!(e.starts_with("postal.api_url: "), "{e}");
            assert!(!e.contains("s3cret"), "{url}: {e}");
        }
        let l = load_env(&[
            ("POSTRELAY_BACKEND", "postal"),
            ("POSTRELAY_POSTAL__API_KEY", "k"),
            (
                "POSTRELAY_POSTAL__API_URL",
                "https://u:s3cret@postal.example.com",
            ),
        ])
        .unwrap();
        assert!(!l.config.to_toml().contains("s3cret"));
    }

    #[test]
    fn userinfo_is_cut_from_url_text() {
        for (url, shown) in [
            ("https://api.postmarkapp.com", "https://api.postmarkapp.com"),
            (
                "http://u:p@h:8080/x?y=@z",
                "http://[redacted]@h:8080/x?y=@z",
            ),
            ("http://a@b@h/", "http://[redacted]@h/"),
            ("u:p@h", "[redacted]@h"),
            ("http://h/path@x", "http://h/path@x"),
            ("https://u:p/w@h.example/", "https://[redacted]@h.example/"),
            (
                "https://u:p?w#x@h.example:99999/",
                "https://[redacted]@h.example:99999/",
            ),
        ] {
            assert_eq!(without_userinfo(url), shown);
        }
    }

    #[test]
    fn tools_mode_neither_reads_nor_requires_secrets() {
        let toml =
            "backend = \"postmark\"\n[postmark]\nserver_token_file = \"/nonexistent/token\"\n";
        let full = load_toml(toml, &[], Mode::Full).unwrap_err();
        assert!(
            full.starts_with("postmark.server_token_file: cannot read"),
            "{full}"
        );
        let l = load_toml(toml, &[], Mode::Tools).unwrap();
        assert!(l.secrets.postmark_token.is_none());

        let l = load_toml(
            "backend = \"postal\"\n[postal]\napi_url = \"https://p.example\"\n",
            &[],
            Mode::Tools,
        )
        .unwrap();
        assert!(l.secrets.postal_key.is_none());
        // Everything else is still checked.
        let e = load_toml(
            "backend = \"postmark\"\n[delivery]\nconcurrency = 0\n",
            &[],
            Mode::Tools,
        )
        .unwrap_err();
        assert!(
            e.starts_with("delivery.concurrency: must be at least 1"),
            "{e}"
        );
    }
}
