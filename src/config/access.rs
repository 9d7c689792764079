//! Who may send: the client networks, AUTH and TLS keys of `[smtp]`, their
//! checks and the start-up warnings about them.
//!
//! Invariant: a relay is never open by accident. `require_auth` without any
//! way to authenticate is an error, and a listener outside loopback that no
//! client outside loopback could use is a warning naming the key to change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{Cidr, Config, ConfigError, Dur, key_error};

/// `[smtp.tls]`: the certificate enables STARTTLS; `listen` adds an
/// implicit-TLS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Optional second listener speaking TLS from the first byte (port-465 style).
    #[serde(default, deserialize_with = "super::load::opt_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// `MAIL` before STARTTLS gets `530 5.7.0` (loopback clients exempt).
    #[serde(default)]
    pub required: bool,
    /// Time allowed for the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Dur,
}

/// A hash is not the password, but a printed config need not help cracking it.
fn redacted<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some("[redacted]"),
        None => s.serialize_none(),
    }
}

fn default_handshake_timeout() -> Dur {
    Dur::secs(10)
}

/// One `[[users]]` account for SMTP AUTH (PLAIN, LOGIN).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// A PHC string (`$argon2id$...`), as `postrelay hash-password` prints it.
    #[serde(default, serialize_with = "redacted")]
    pub password_hash: Option<String>,
    /// Or a file holding the password itself (trimmed).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Envelope senders and `From:` addresses this user may use: an
    /// address, or `@domain` for a whole domain; empty = any.
    #[serde(default)]
    pub allowed_from: Vec<String>,
    /// This user's own Postmark server token (else the global one).
    #[serde(default, serialize_with = "super::redact::secret")]
    pub server_token: Option<SecretString>,
    #[serde(default)]
    pub server_token_file: Option<PathBuf>,
    /// This user's own Postal API key (else the global one).
    #[serde(default, serialize_with = "super::redact::secret")]
    pub api_key: Option<SecretString>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The `MessageStream` of this user's mail when the message has no
    /// `X-PM-Message-Stream` header (else `postmark.message_stream`).
    #[serde(default)]
    pub message_stream: Option<String>,
}

/// The default `smtp.allowed_networks`: loopback only.
pub(super) fn loopback_networks() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|s| s.parse().expect("valid literal"))
        .collect()
}

/// Checks the access keys; returns the warnings.
pub(super) fn validate(c: &Config) -> Result<Vec<String>, ConfigError> {
    let s = &c.smtp;
    let mut warnings = Vec::new();
    if s.max_connections_per_ip == 0 {
        return Err(key_error(
            "smtp.max_connections_per_ip",
            "must be at least 1, e.g. 20",
        ));
    }
    users(c)?;
    if s.max_transactions == 0 {
        return Err(key_error(
            "smtp.max_transactions",
            "must be at least 1, e.g. 1000",
        ));
    }
    let t = s.max_session_time.0;
    if t < Duration::from_secs(1) || t > Duration::from_secs(24 * 3600) {
        return Err(key_error(
            "smtp.max_session_time",
            "must be between 1s and 24h, e.g. \"1h\"",
        ));
    }
    if s.max_auth_failures == 0 {
        return Err(key_error(
            "smtp.max_auth_failures",
            "must be at least 1, e.g. 5",
        ));
    }
    if s.auth_failure_delay.0 > Duration::from_secs(60) {
        return Err(key_error(
            "smtp.auth_failure_delay",
            "must be at most 1m, e.g. \"1s\"",
        ));
    }
    if s.require_auth && !auth_configured(c) {
        return Err(key_error(
            "smtp.require_auth",
            "no client could send: add [[users]] accounts or set auth_passthrough = true, or set require_auth = false",
        ));
    }
    if let Some(tls) = &s.tls {
        let t = tls.handshake_timeout.0;
        if t < Duration::from_millis(100) || t > Duration::from_secs(300) {
            return Err(key_error(
                "smtp.tls.handshake_timeout",
                "must be between 100ms and 5m, e.g. \"10s\"",
            ));
        }
    }
    if let Some(http) = &c.http {
        if http.max_connections == 0 || http.max_connections > 10_000 {
            return Err(key_error(
                "http.max_connections",
                "must be between 1 and 10000, e.g. 64",
            ));
        }
        let t = http.header_read_timeout.0;
        if t < Duration::from_millis(100) || t > Duration::from_secs(300) {
            return Err(key_error(
                "http.header_read_timeout",
                "must be between 100ms and 5m, e.g. \"10s\"",
            ));
        }
    }
    let listens = std::iter::once(s.listen).chain(s.tls.as_ref().and_then(|t| t.listen));
    let outside_can_send = auth_configured(c)
        || s.allowed_networks.iter().any(|n| !n.is_loopback()) && !s.require_auth;
    for addr in listens {
        if !addr.ip().is_loopback() && !outside_can_send {
            warnings.push(format!(
                "smtp: listening on {addr}, but only loopback clients may send (smtp.allowed_networks is loopback-only, no [[users]] are configured and auth_passthrough is off): add the clients' networks to smtp.allowed_networks, e.g. [\"10.0.0.0/8\"], or listen on 127.0.0.1"
            ));
        }
    }
    Ok(warnings)
}

/// Each account: a unique name, one way to check its password, a PHC
/// string that parses, a stream that is not empty, well-formed
/// `allowed_from` entries.
fn users(c: &Config) -> Result<(), ConfigError> {
    for (i, u) in c.users.iter().enumerate() {
        let at = |field: &str| format!("users[{i}].{field}");
        if u.name.is_empty()
            || u.name
                .chars()
                .any(|ch| ch.is_control() || ch.is_whitespace())
        {
            return Err(key_error(
                &at("name"),
                "must be a non-empty name without spaces",
            ));
        }
        if c.users[..i].iter().any(|o| o.name == u.name) {
            return Err(key_error(
                &at("name"),
                format!("{:?} is defined twice", u.name),
            ));
        }
        match (&u.password_hash, &u.password_file) {
            (Some(_), Some(_)) => {
                return Err(key_error(
                    &at("password_hash"),
                    "set either password_hash or password_file, not both",
                ));
            }
            (None, None) => {
                return Err(key_error(
                    &at("password_hash"),
                    "each user needs password_hash (from `postrelay hash-password`) or password_file",
                ));
            }
            (Some(h), None) => {
                if argon2::PasswordHash::new(h).is_err() {
                    return Err(key_error(
                        &at("password_hash"),
                        "is not a PHC string like \"$argon2id$v=19$m=19456,t=2,p=1$...\" (run `postrelay hash-password`)",
                    ));
                }
            }
            (None, Some(_)) => {}
        }
        if u.message_stream
            .as_ref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(key_error(&at("message_stream"), "must not be empty"));
        }
        for entry in &u.allowed_from {
            let ok = match entry.split_once('@') {
                Some((_, domain)) => !domain.is_empty() && !entry.contains(char::is_whitespace),
                None => false,
            };
            if !ok {
                return Err(key_error(
                    &at("allowed_from"),
                    format!("{entry:?} is neither an address nor \"@domain\""),
                ));
            }
        }
    }
    Ok(())
}

/// Start-up warnings about secrets others may read: a secret file readable
/// by group or others, and inline secrets in a config file anyone can read.
/// `env_secrets` lists the inline secret keys the environment set (they are
/// not in the file).
pub(super) fn permission_warnings(
    c: &Config,
    path: Option<&std::path::Path>,
    env_secrets: &[&str],
) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode());
    let mut files: Vec<(String, Option<&PathBuf>)> = vec![
        (
            "postmark.server_token_file".into(),
            c.postmark.server_token_file.as_ref(),
        ),
        ("postal.api_key_file".into(), c.postal.api_key_file.as_ref()),
        (
            "smtp.tls.key_file".into(),
            c.smtp.tls.as_ref().map(|t| &t.key_file),
        ),
    ];
    for (i, u) in c.users.iter().enumerate() {
        files.push((
            format!("users[{i}].password_file"),
            u.password_file.as_ref(),
        ));
        files.push((
            format!("users[{i}].server_token_file"),
            u.server_token_file.as_ref(),
        ));
        files.push((format!("users[{i}].api_key_file"), u.api_key_file.as_ref()));
    }
    let mut warnings: Vec<String> = files
        .into_iter()
        .filter_map(|(key, p)| {
            let p = p?;
            let m = mode(p)?;
            (m & 0o077 != 0).then(|| {
                format!(
                    "{key}: {} is readable by group or others (mode {:04o}): chmod 600 it",
                    p.display(),
                    m & 0o7777
                )
            })
        })
        .collect();
    let inline = (c.postmark.server_token.is_some()
        && !env_secrets.contains(&"postmark__server_token"))
        || (c.postal.api_key.is_some() && !env_secrets.contains(&"postal__api_key"))
        || c.users
            .iter()
            .any(|u| u.server_token.is_some() || u.api_key.is_some());
    if let Some(path) = path
        && inline
        && let Some(m) = mode(path)
        && m & 0o004 != 0
    {
        warnings.push(format!(
            "{} holds secrets inline and anyone on this host can read it (mode {:04o}): chmod 600 it, or move the secrets to *_file keys",
            path.display(),
            m & 0o7777
        ));
    }
    warnings
}

/// True when some client can authenticate.
pub(super) fn auth_configured(c: &Config) -> bool {
    !c.users.is_empty() || c.smtp.auth_passthrough
}

impl Config {
    /// True when some client can authenticate (SMTP AUTH is offered).
    pub fn auth_available(&self) -> bool {
        auth_configured(self)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Mode;
    use super::super::testing::load_toml;

    #[test]
    fn networks_come_from_a_list_or_a_comma_separated_variable() {
        let l = load_toml(
            "[smtp]\nallowed_networks = [\"10.0.0.0/8\", \"::1\"]\n",
            &[],
            Mode::Tools,
        )
        .unwrap();
        let shown: Vec<String> = l
            .config
            .smtp
            .allowed_networks
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1/128"]);
        let l = load_toml(
            "",
            &[(
                "POSTRELAY_SMTP__ALLOWED_NETWORKS",
                "172.16.0.0/12, 127.0.0.1",
            )],
            Mode::Tools,
        )
        .unwrap();
        let shown: Vec<String> = l
            .config
            .smtp
            .allowed_networks
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(shown, ["172.16.0.0/12", "127.0.0.1/32"]);
        let e = load_toml(
            "[smtp]\nallowed_networks = [\"10.0.0.0/40\"]\n",
            &[],
            Mode::Tools,
        )
        .unwrap_err();
        assert!(e.starts_with("smtp.allowed_networks"), "{e}");
    }

    #[test]
    fn default_networks_are_loopback_only() {
        let l = load_toml("", &[], Mode::Tools).unwrap();
        assert!(
            l.config
                .smtp
                .allowed_networks
                .iter()
                .all(|n| n.is_loopback())
        );
        assert!(!l.config.smtp.allowed_networks.is_empty());
    }

    #[test]
    fn a_public_listen_nobody_outside_could_use_is_a_warning() {
        let env = [("POSTRELAY_SMTP__LISTEN", "0.0.0.0:2525")];
        let l = load_toml("", &env, Mode::Tools).unwrap();
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("only loopback clients may send")),
            "{:?}",
            l.warnings
        );
        let l = load_toml(
            "[smtp]\nallowed_networks = [\"10.0.0.0/8\"]\n",
            &env,
            Mode::Tools,
        )
        .unwrap();
        assert!(
            !l.warnings.iter().any(|w| w.contains("only loopback")),
            "{:?}",
            l.warnings
        );
        let l = load_toml("", &[], Mode::Tools).unwrap();
        assert!(!l.warnings.iter().any(|w| w.contains("only loopback")));
    }

    #[test]
    fn readable_secret_files_and_world_readable_inline_secrets_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0k3n\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let toml = format!(
            "[postmark]\nserver_token_file = {:?}\n",
            token.display().to_string()
        );
        let l = load_toml(&toml, &[], Mode::Full).unwrap();
        assert!(
            l.warnings
                .iter()
                .any(|w| w.starts_with("postmark.server_token_file:") && w.contains("0644")),
            "{:?}",
            l.warnings
        );
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let l = load_toml(&toml, &[], Mode::Full).unwrap();
        assert!(
            !l.warnings.iter().any(|w| w.contains("readable")),
            "{:?}",
            l.warnings
        );

        // load_toml writes the file with the umask's mode; make it world-readable.
        let path = dir.path().join("inline.toml");
        std::fs::write(&path, "[postmark]\nserver_token = \"t0k3n\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let l = super::super::load_with(Some(&path), &Default::default(), Mode::Full).unwrap();
        assert!(
            l.warnings
                .iter()
                .any(|w| w.contains("holds secrets inline")),
            "{:?}",
            l.warnings
        );
        let env = std::collections::HashMap::from([(
            "POSTRELAY_POSTMARK__SERVER_TOKEN".to_string(),
            "t0k3n".to_string(),
        )]);
        std::fs::write(&path, "").unwrap();
        let l = super::super::load_with(Some(&path), &env, Mode::Full).unwrap();
        assert!(
            !l.warnings.iter().any(|w| w.contains("inline")),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn require_auth_without_accounts_is_an_error() {
        let e = load_toml("[smtp]\nrequire_auth = true\n", &[], Mode::Tools).unwrap_err();
        assert!(
            e.starts_with("smtp.require_auth: no client could send"),
            "{e}"
        );
    }

    #[test]
    fn a_users_message_stream_is_read_and_must_not_be_empty() {
        let user = |stream: &str| {
            format!(
                "[[users]]\nname = \"billing\"\npassword_file = \"/unused\"\nmessage_stream = {stream:?}\n"
            )
        };
        let e = load_toml(&user(" "), &[], Mode::Tools).unwrap_err();
        assert!(
            e.starts_with("users[0].message_stream: must not be empty"),
            "{e}"
        );
        let c = load_toml(&user("billing"), &[], Mode::Tools).unwrap();
        assert_eq!(c.config.users[0].message_stream.as_deref(), Some("billing"));
    }

    #[test]
    fn connection_cap_per_address_must_be_positive() {
        let e = load_toml("[smtp]\nmax_connections_per_ip = 0\n", &[], Mode::Tools).unwrap_err();
        assert!(e.starts_with("smtp.max_connections_per_ip"), "{e}");
    }
}
