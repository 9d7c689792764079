//! Loading: the embedded defaults, a TOML file, then `POSTRELAY_*`
//! environment overrides, merged by the `config` crate and deserialized into
//! [`Config`], plus the deserializers that say what form a value takes.
//!
//! Invariant: the key an error names is the path the deserializer was at
//! when it failed (tracked by `serde_path_to_error`), and the message is
//! built from the typed error, never by reading another crate's error text.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::{
    BackendKind, Cidr, Config, ConfigError, Dur, ENV_CONFIG_PATH, ENV_PREFIX, LogFormat, key_error,
};

/// `POSTRELAY_SMTP__LISTEN` → `smtp__listen`; the config path variable is not a key.
pub(super) fn env_overrides(env: &HashMap<String, String>) -> HashMap<String, String> {
    env.iter()
        .filter(|(k, _)| k.as_str() != ENV_CONFIG_PATH)
        .filter_map(|(k, v)| {
            k.strip_prefix(ENV_PREFIX)
                .map(|rest| (rest.to_ascii_lowercase(), v.clone()))
        })
        .collect()
}

/// Merges the file at `path` (if any) and the `overrides` over the defaults.
pub(super) fn merge(
    path: Option<&Path>,
    overrides: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
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
    // A build error is a file that is not TOML: its text names the file.
    let merged = builder
        .build()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    serde_path_to_error::deserialize(merged).map_err(|e| {
        let at_root = e.path().iter().next().is_none();
        let key = e.path().to_string();
        let (problem, origin) = describe(e.into_inner());
        let message = match origin {
            Some(origin) => format!("{problem} ({origin})"),
            None => problem,
        };
        // At the root the merged value as a whole did not fit: no key to name.
        if at_root {
            ConfigError::Invalid(message)
        } else {
            key_error(&key, message)
        }
    })
}

/// The problem and where the value came from (`in the environment`, `in
/// /etc/postrelay.toml`), without the key the `config` crate adds: the
/// path from the deserializer names it.
fn describe(err: config::ConfigError) -> (String, Option<String>) {
    match err {
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            ..
        } => (
            format!("invalid type: {unexpected}, expected {expected}"),
            origin.map(|o| format!("in {o}")),
        ),
        config::ConfigError::At { error, origin, .. } => {
            let (problem, inner) = describe(*error);
            (problem, inner.or(origin.map(|o| format!("in {o}"))))
        }
        // Our own deserializers' messages (`Message`) and anything else.
        other => (other.to_string(), None),
    }
}

impl<'de> Deserialize<'de> for BackendKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(d, BackendKind::ALL.map(|k| (k.as_str(), k)))
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(d, [("text", LogFormat::Text), ("json", LogFormat::Json)])
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

/// A string that must be one of `choices`; the error lists them all, e.g.
/// `unknown value "xml", expected "text" or "json"`.
fn one_of<'de, D: Deserializer<'de>, T: Copy, const N: usize>(
    d: D,
    choices: [(&'static str, T); N],
) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
        return Ok(*value);
    }
    let names: Vec<String> = choices
        .iter()
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(serde::de::Error::custom(format!(
        "unknown value {text:?}, expected {expected}"
    )))
}

/// `host:port`; the error says so, with an example.
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|e| {
        serde::de::Error::custom(format!("{e}, expected host:port, e.g. \"127.0.0.1:2525\""))
    })
}

/// An optional `host:port`.
pub(super) fn opt_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

/// CIDR blocks: a TOML list, or one comma-separated string (the environment).
pub(super) fn cidr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        One(String),
    }
    let items = match Form::deserialize(d)? {
        Form::List(v) => v,
        Form::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    };
    items
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::Mode;
    use super::super::testing::{err, load_env, load_toml};
    use super::*;

    #[test]
    fn env_strings_that_look_like_numbers_stay_strings() {
        let l = load_env(&[
            ("POSTRELAY_SMTP__HOSTNAME", "0123"),
            ("POSTRELAY_POSTMARK__MESSAGE_STREAM", "007"),
        ])
        .unwrap();
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
            ("POSTRELAY_HTTP__LISTEN", "127.0.0.1:9999"),
        ])
        .unwrap();
        assert_eq!(l.config.delivery.rate_limit, 7);
        assert!(l.config.ignore_unsupported_features);
        assert_eq!(l.config.smtp.max_message_size, 100);
        assert_eq!(l.config.spool.min_free_space, u64::MAX);
        assert_eq!(l.config.postal.max_message_size, Some(2048));
        assert_eq!(l.config.delivery.retry_max, Dur::secs(7200));
        assert_eq!(
            l.config.http.map(|h| h.listen),
            Some(SocketAddr::from(([127, 0, 0, 1], 9999)))
        );
    }

    #[test]
    fn environment_errors_name_the_key_path_and_the_expected_form() {
        let cases = [
            (
                "POSTRELAY_DELIVERY__RATE_LIMIT",
                "fast",
                "delivery.rate_limit: invalid type: string \"fast\", expected an integer (in the environment)",
            ),
            (
                "POSTRELAY_DELIVERY__MAX_AGE",
                "soon",
                "delivery.max_age: \"soon\" is not a duration (e.g. \"30s\", \"15m\", \"5d\")",
            ),
            (
                "POSTRELAY_POSTAL__MAX_MESSAGE_SIZE",
                "big",
                "postal.max_message_size: invalid type: string \"big\", expected an integer (in the environment)",
            ),
            (
                "POSTRELAY_HTTP__LISTEN",
                "9025",
                "http.listen: invalid socket address syntax, expected host:port, e.g. \"127.0.0.1:2525\"",
            ),
            (
                "POSTRELAY_BACKEND",
                "Postmark",
                "backend: unknown value \"Postmark\", expected \"postmark\", \"postal\" or \"dry-run\"",
            ),
            (
                "POSTRELAY_LOG__FORMAT",
                "xml",
                "log.format: unknown value \"xml\", expected \"text\" or \"json\"",
            ),
            (
                "POSTRELAY_IGNORE_UNSUPPORTED_FEATURES",
                "maybe",
                "ignore_unsupported_features: invalid type: string \"maybe\", expected a boolean (in the environment)",
            ),
        ];
        for (var, value, want) in cases {
            assert_eq!(err(&[(var, value)]), want, "{var}={value}");
        }
    }

    #[test]
    fn file_errors_name_the_key_path_and_the_file() {
        let e = load_toml("[smtp]\nmax_recipients = \"many\"\n", &[], Mode::Tools).unwrap_err();
        assert!(
            e.starts_with(
                "smtp.max_recipients: invalid type: string \"many\", expected an integer (in "
            ) && e.ends_with("postrelay.toml)"),
            "{e}"
        );
        let e = load_toml("[delivery]\nmax_age = 5\n", &[], Mode::Tools).unwrap_err();
        assert_eq!(
            e,
            "delivery.max_age: \"5\" is not a duration (e.g. \"30s\", \"15m\", \"5d\")"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_table() {
        let e = err(&[("POSTRELAY_SMTP__BOGUS", "1")]);
        assert!(
            e.starts_with("smtp.bogus: unknown field `bogus`, expected one of `listen`"),
            "{e}"
        );
        let e = load_toml("[http]\nport = 1\n", &[], Mode::Tools).unwrap_err();
        assert!(e.starts_with("http.port: unknown field `port`"), "{e}");
        let e = load_toml("bogus_key = 1\n", &[], Mode::Tools).unwrap_err();
        assert!(e.starts_with("bogus_key: unknown field `bogus_key`"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_toml_or_absent_is_refused() {
        let e = load_toml("not toml at all [[[\n", &[], Mode::Tools).unwrap_err();
        assert!(e.contains("postrelay.toml"), "{e}");
        let missing = std::path::Path::new("/nonexistent/postrelay.toml");
        let e = super::super::load_from(Some(missing), &Default::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config file /nonexistent/postrelay.toml does not exist or is not a file"
        );
    }
}
