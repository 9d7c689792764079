//! Secrets: the Postmark server token and the Postal API key, from the
//! value itself, a `*_file`, or the root fallback variables
//! (`POSTMARK_SERVER_TOKEN`, `POSTMARK_SERVER_TOKEN_FILE`, ...).
//!
//! Invariant: whatever the source, a resolved secret is trimmed and can be
//! sent as an HTTP header value; no error text ever contains the secret.

use std::collections::HashMap;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use super::{Config, ConfigError, key_error};

/// Secrets after resolution, ready for the backends.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub postmark_token: Option<SecretString>,
    pub postal_key: Option<SecretString>,
    /// `[[users]]` passwords read from their `password_file`, by user name.
    pub user_passwords: HashMap<String, SecretString>,
    /// `[[users]]` own backend credentials (the chosen backend's: server
    /// token or API key), by user name.
    pub user_tokens: HashMap<String, SecretString>,
}

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
        user_passwords: user_passwords(config)?,
        user_tokens: user_tokens(config)?,
    })
}

/// Each user's own credential for the chosen backend, from the value or its `*_file`.
fn user_tokens(config: &Config) -> Result<HashMap<String, SecretString>, ConfigError> {
    let mut out = HashMap::new();
    for (i, u) in config.users.iter().enumerate() {
        let (field, value, file) = match config.backend {
            super::BackendKind::Postal => ("api_key", &u.api_key, &u.api_key_file),
            _ => ("server_token", &u.server_token, &u.server_token_file),
        };
        let key = format!("users[{i}].{field}");
        let token = match (value, file) {
            (Some(_), Some(_)) => {
                return Err(key_error(
                    &key,
                    format!("set either {key} or {key}_file, not both"),
                ));
            }
            (Some(v), None) => clean(&key, v.expose_secret(), None)?,
            (None, Some(p)) => read_file(&format!("{key}_file"), p)?,
            (None, None) => continue,
        };
        out.insert(u.name.clone(), token);
    }
    Ok(out)
}

/// Reads each `[[users]] password_file`; the password is trimmed and must not be empty.
fn user_passwords(config: &Config) -> Result<HashMap<String, SecretString>, ConfigError> {
    let mut out = HashMap::new();
    for (i, u) in config.users.iter().enumerate() {
        let Some(path) = &u.password_file else {
            continue;
        };
        let key = format!("users[{i}].password_file");
        let text = std::fs::read_to_string(path)
            .map_err(|e| key_error(&key, format!("cannot read {}: {e}", path.display())))?;
        let password = text.trim();
        if password.is_empty() {
            return Err(key_error(&key, format!("{} is empty", path.display())));
        }
        out.insert(u.name.clone(), SecretString::from(password.to_string()));
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::super::testing::{err, load_env, load_toml};
    use super::super::{Loaded, Mode};
    use super::*;

    fn token(l: &Loaded) -> &str {
        l.secrets.postmark_token.as_ref().unwrap().expose_secret()
    }

    #[test]
    fn secrets_that_look_like_numbers_stay_strings() {
        let l = load_env(&[
            ("POSTRELAY_BACKEND", "postmark"),
            ("POSTRELAY_POSTMARK__SERVER_TOKEN", "00123456789"),
        ])
        .unwrap();
        assert_eq!(token(&l), "00123456789");
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
    fn environment_beats_the_file_and_the_root_fallback_fills_in() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let file = file.to_str().unwrap();
        let toml = format!("backend = \"postmark\"\n[postmark]\nserver_token_file = \"{file}\"\n");
        let l = load_toml(
            &toml,
            &[("POSTRELAY_POSTMARK__SERVER_TOKEN", "from-env")],
            Mode::Full,
        )
        .unwrap();
        assert_eq!(token(&l), "from-env");
        let l = load_toml(&toml, &[("POSTMARK_SERVER_TOKEN", "root")], Mode::Full).unwrap();
        assert_eq!(token(&l), "from-file");

        // Root fallbacks: a blank value counts as unset, then `_FILE` is read.
        let l = load_toml(
            "backend = \"postmark\"\n",
            &[
                ("POSTMARK_SERVER_TOKEN", " "),
                ("POSTMARK_SERVER_TOKEN_FILE", file),
            ],
            Mode::Full,
        )
        .unwrap();
        assert_eq!(token(&l), "from-file");

        let both = "[postmark]\nserver_token = \"a\"\nserver_token_file = \"/x\"\n";
        let e = load_toml(both, &[], Mode::Full).unwrap_err();
        assert_eq!(
            e,
            "postmark.server_token: set either postmark.server_token or postmark.server_token_file, not both"
        );
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
