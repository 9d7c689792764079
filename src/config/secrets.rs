//! Secrets: the Postmark server token and the Postal API key, from the
//! value itself, a `*_file`, or the root fallback variables
//! (`POSTMARK_SERVER_TOKEN`, `POSTMARK_SERVER_TOKEN_FILE`, ...).
//!
//! Invariant: whatever the source, a resolved secret is trimmed and can be
//! sent as an HTTP header value; no error text ever contains the secret.

use std::collections::HashMap;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use super::{Config, ConfigError, Secrets, key_error};

/// Where one secret may come from.
struct Source<'a> {
    /// The config key (`postmark.server_token`); `{key}_file` names a file.
    key: &'static str,
    /// The value from the file or the environment, and the file to read it from.
    value: Option<&'a SecretString>,
    file: Option<&'a Path>,
    /// Whether the `POSTRELAY_*` environment set the value, and the file.
    env_value: bool,
    env_file: bool,
    /// The root fallback variable (`POSTMARK_SERVER_TOKEN`); `{fallback}_FILE`
    /// names a file.
    fallback: &'static str,
}

/// Resolves both secrets; `overrides` are the `POSTRELAY_*` keys, lower-case
/// (`postmark__server_token`), `env` the whole environment.
pub(super) fn resolve(
    config: &Config,
    overrides: &HashMap<String, String>,
    env: &HashMap<String, String>,
) -> Result<Secrets, ConfigError> {
    let env_has = |key: &str| overrides.contains_key(key);
    Ok(Secrets {
        postmark_token: resolve_one(
            Source {
                key: "postmark.server_token",
                value: config.postmark.server_token.as_ref(),
                file: config.postmark.server_token_file.as_deref(),
                env_value: env_has("postmark__server_token"),
                env_file: env_has("postmark__server_token_file"),
                fallback: "POSTMARK_SERVER_TOKEN",
            },
            env,
        )?,
        postal_key: resolve_one(
            Source {
                key: "postal.api_key",
                value: config.postal.api_key.as_ref(),
                file: config.postal.api_key_file.as_deref(),
                env_value: env_has("postal__api_key"),
                env_file: env_has("postal__api_key_file"),
                fallback: "POSTAL_API_KEY",
            },
            env,
        )?,
    })
}

/// Precedence: `POSTRELAY_*` environment, then the file, then the root
/// fallback. The value and its `*_file` from the same level conflict.
fn resolve_one(
    src: Source<'_>,
    env: &HashMap<String, String>,
) -> Result<Option<SecretString>, ConfigError> {
    let key = src.key;
    let file_key = format!("{key}_file");
    let direct = |v: &SecretString| clean(key, v.expose_secret(), None).map(Some);
    let from_file = |p: &Path| read_file(&file_key, p).map(Some);
    match (src.value, src.file) {
        (Some(v), Some(_)) if src.env_value && !src.env_file => direct(v),
        (Some(_), Some(p)) if src.env_file && !src.env_value => from_file(p),
        (Some(_), Some(_)) => Err(key_error(
            key,
            format!("set either {key} or {file_key}, not both"),
        )),
        (Some(v), None) => direct(v),
        (None, Some(p)) => from_file(p),
        (None, None) => {
            // An empty root fallback (`POSTMARK_SERVER_TOKEN=` from a compose
            // file) counts as unset; it is not postrelay's own key.
            if let Some(v) = env.get(src.fallback).filter(|v| !v.trim().is_empty()) {
                return clean(src.fallback, v, None).map(Some);
            }
            let fallback_file = format!("{}_FILE", src.fallback);
            match env.get(&fallback_file) {
                Some(p) => read_file(&fallback_file, Path::new(p)).map(Some),
                None => Ok(None),
            }
        }
    }
}

fn read_file(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| key_error(key, format!("cannot read {}: {e}", path.display())))?;
    clean(key, &text, Some(path))
}

/// Trims a secret and checks it can be sent as an HTTP header value: not
/// empty, nothing but visible ASCII, spaces and tabs. The value itself is
/// never part of the error.
fn clean(key: &str, raw: &str, file: Option<&Path>) -> Result<SecretString, ConfigError> {
    let trimmed = raw.trim();
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
        let subject = file.map_or(String::new(), |p| format!("{} ", p.display()));
        return Err(key_error(
            key,
            format!(
                "{subject}contains a character an HTTP header cannot carry (a control character, line break or non-ASCII); the value is not shown"
            ),
        ));
    }
    Ok(SecretString::from(trimmed.to_string()))
}
