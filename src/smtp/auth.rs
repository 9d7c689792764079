//! SMTP AUTH (RFC 4954), PLAIN and LOGIN: decoding the SASL messages
//! (pure), checking a password against an account, and throttling
//! failures per client address.
//!
//! Invariant: a password is compared in constant time (argon2's own
//! verification for a PHC hash, [`same_bytes`] for a `password_file`), an
//! unknown user costs the same hash verification as a known one, and no
//! password or decoded SASL message ever reaches a log line or a `Debug`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::config::{Config, Secrets};
use crate::spool::Credential;

/// The window AUTH failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(600);

/// The mechanisms offered, in EHLO order.
pub const MECHANISMS: [&str; 2] = ["PLAIN", "LOGIN"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

/// Why a SASL message cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("not base64")]
    Base64,
    #[error("not a PLAIN message (authzid NUL user NUL password)")]
    Plain,
    #[error("the client cancelled")]
    Cancelled,
}

/// A user name and password as the client sent them.
pub struct Credentials {
    pub user: String,
    pub password: SecretString,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// One base64 response line; `*` cancels the exchange.
pub fn decode(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let line = line.trim_ascii();
    if line == b"*" {
        return Err(SaslError::Cancelled);
    }
    if line == b"=" {
        return Ok(Vec::new());
    }
    B64.decode(line).map_err(|_| SaslError::Base64)
}

/// `[authzid] NUL authcid NUL passwd` (RFC 4616); the authzid must be
/// empty or the user itself.
pub fn parse_plain(message: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authz), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Plain);
    };
    if user.is_empty() || (!authz.is_empty() && authz != user) {
        return Err(SaslError::Plain);
    }
    Ok(Credentials {
        user: text(user)?,
        password: SecretString::from(text(pass)?),
    })
}

/// A LOGIN field (user or password), as UTF-8.
pub fn text(bytes: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| SaslError::Plain)
}

/// The `334` challenge text for a LOGIN step (`Username:` / `Password:`).
pub fn login_prompt(password: bool) -> String {
    B64.encode(if password { "Password:" } else { "Username:" })
}

/// How one account's password is checked.
enum Verifier {
    Hash(String),
    Password(SecretString),
}

/// An authenticated user's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Empty = any sender.
    pub allowed_from: Vec<String>,
    /// What delivers this user's mail.
    pub credential: Credential,
    /// `[[users]] message_stream`: the default stream of this user's mail.
    pub message_stream: Option<String>,
}

/// The `[[users]]` accounts, and whether a password may be a backend token.
pub struct Accounts {
    users: Vec<(User, Verifier)>,
    /// `smtp.auth_passthrough`.
    passthrough: bool,
    /// Verified when the user is unknown, so its cost does not tell.
    decoy: String,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.users.iter().map(|(u, _)| u.name.as_str()).collect();
        f.debug_struct("Accounts").field("users", &names).finish()
    }
}

impl Accounts {
    /// From a validated config; `password_file` contents come from `secrets`.
    pub fn from_config(config: &Config, secrets: &Secrets) -> Accounts {
        let users = config
            .users
            .iter()
            .filter_map(|u| {
                let verifier = match (&u.password_hash, secrets.user_passwords.get(&u.name)) {
                    (Some(h), _) => Verifier::Hash(h.clone()),
                    (None, Some(p)) => Verifier::Password(p.clone()),
                    (None, None) => return None,
                };
                let user = User {
                    name: u.name.clone(),
                    allowed_from: u.allowed_from.clone(),
                    credential: Credential::User(u.name.clone()),
                    message_stream: u.message_stream.clone(),
                };
                Some((user, verifier))
            })
            .collect();
        Accounts {
            users,
            passthrough: config.smtp.auth_passthrough,
            decoy: hash_password(b"decoy").unwrap_or_default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && !self.passthrough
    }

    /// The user, if the password is right; with passthrough, a password
    /// that is no account's becomes the credential itself (the API judges
    /// it). CPU-heavy (argon2): call it off the async threads.
    pub fn verify(&self, creds: &Credentials) -> Option<User> {
        let password = creds.password.expose_secret();
        let account = match self.users.iter().find(|(u, _)| u.name == creds.user) {
            Some((user, verifier)) => {
                let ok = match verifier {
                    Verifier::Hash(h) => verify_hash(h, password.as_bytes()),
                    Verifier::Password(p) => {
                        same_bytes(p.expose_secret().as_bytes(), password.as_bytes())
                    }
                };
                ok.then(|| user.clone())
            }
            None => {
                let _ = verify_hash(&self.decoy, password.as_bytes());
                None
            }
        };
        if account.is_some() || !self.passthrough {
            return account;
        }
        token_shaped(password).then(|| User {
            name: PASSTHROUGH_USER.into(),
            allowed_from: Vec::new(),
            credential: Credential::Passthrough(password.to_string()),
            message_stream: None,
        })
    }
}

/// How a passthrough session's user is named in logs and `Received:`.
pub const PASSTHROUGH_USER: &str = "passthrough";

/// A string that can be an API credential header: 8 to 256 visible ASCII
/// characters (Postmark tokens are UUIDs, Postal keys 24 letters/digits).
fn token_shaped(s: &str) -> bool {
    (8..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

fn verify_hash(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .and_then(|h| Argon2::default().verify_password(password, &h))
        .is_ok()
}

/// Equality whose time depends only on the lengths.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// An argon2id PHC string for `password` with a fresh salt (the default
/// parameters: m=19456 KiB, t=2, p=1).
pub fn hash_password(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;
    let mut seed = [0u8; 16];
    rand::fill(&mut seed);
    let salt = SaltString::encode_b64(&seed)?;
    Ok(Argon2::default()
        .hash_password(password, &salt)?
        .to_string())
}

/// AUTH failures per client address in the last [`FAILURE_WINDOW`].
#[derive(Debug)]
pub struct Throttle {
    max: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    pub fn new(max: u32) -> Throttle {
        Throttle {
            max,
            failures: Mutex::default(),
        }
    }

    /// True while `ip` has used up its failures for the window.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
        map.get(&ip).is_some_and(|(_, n)| *n >= self.max)
    }

    /// Counts one failure; true when that used up the last one.
    pub fn fail(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 >= self.max
    }
}

/// True when `addr` is allowed by `allowed` (exact, case-insensitive, or
/// `@domain`); an empty list allows any address, the null sender included.
pub fn sender_allowed(allowed: &[String], addr: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let domain = addr.rsplit_once('@').map(|(_, d)| d);
    allowed.iter().any(|a| match a.strip_prefix('@') {
        Some(d) => domain.is_some_and(|x| x.eq_ignore_ascii_case(d)),
        None => a.eq_ignore_ascii_case(addr),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_decode_or_are_refused() {
        let ok = parse_plain(b"\0billing\0s3cret").unwrap();
        assert_eq!(ok.user, "billing");
        assert_eq!(ok.password.expose_secret(), "s3cret");
        assert!(parse_plain(b"billing\0billing\0pw").is_ok());
        for bad in [
            &b"other\0billing\0pw"[..],
            b"\0\0pw",
            b"billing\0pw",
            b"a\0b\0c\0d",
        ] {
            assert!(parse_plain(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode(b"*\r\n"), Err(SaslError::Cancelled));
        assert_eq!(decode(b"!!!"), Err(SaslError::Base64));
        assert_eq!(decode(b"AGEAYg==").unwrap(), b"\0a\0b");
        assert!(!format!("{ok:?}").contains("s3cret"));
    }

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(same_bytes(b"", b""));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"abcd"));
        assert!(!same_bytes(b"abc\0", b"abc"));
    }

    #[test]
    fn hashed_and_file_passwords_verify_and_unknown_users_fail() {
        let mut config = Config::default();
        let hash = hash_password(b"right horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        config.users = vec![
            crate::config::UserConfig {
                name: "billing".into(),
                password_hash: Some(hash),
                password_file: None,
                allowed_from: vec!["@example.com".into()],
                ..Default::default()
            },
            crate::config::UserConfig {
                name: "cron".into(),
                password_hash: None,
                password_file: Some("/unused".into()),
                allowed_from: vec![],
                ..Default::default()
            },
        ];
        let mut secrets = Secrets::default();
        secrets
            .user_passwords
            .insert("cron".into(), SecretString::from("tick tock"));
        let accounts = Accounts::from_config(&config, &secrets);
        let creds = |u: &str, p: &str| Credentials {
            user: u.into(),
            password: SecretString::from(p.to_string()),
        };
        let billing = accounts.verify(&creds("billing", "right horse")).unwrap();
        assert_eq!(billing.allowed_from, ["@example.com"]);
        assert!(accounts.verify(&creds("billing", "wrong")).is_none());
        assert!(accounts.verify(&creds("cron", "tick tock")).is_some());
        assert!(accounts.verify(&creds("cron", "tick")).is_none());
        assert!(accounts.verify(&creds("nobody", "right horse")).is_none());
        assert_eq!(
            accounts
                .verify(&creds("cron", "tick tock"))
                .unwrap()
                .credential,
            Credential::User("cron".into())
        );

        config.smtp.auth_passthrough = true;
        let accounts = Accounts::from_config(&config, &secrets);
        let token = "0a1b2c3d-0000-4000-8000-00000000abcd";
        let p = accounts.verify(&creds("anything", token)).unwrap();
        assert_eq!(p.credential, Credential::Passthrough(token.into()));
        assert!(!format!("{p:?}").contains(token), "never in Debug");
        assert_eq!(
            accounts
                .verify(&creds("cron", "tick tock"))
                .unwrap()
                .credential,
            Credential::User("cron".into()),
            "an account still wins"
        );
        assert!(accounts.verify(&creds("x", "short")).is_none());
        assert!(accounts.verify(&creds("x", "has space inside")).is_none());
    }

    #[test]
    fn failures_block_an_address_for_the_window_only() {
        let t = Throttle::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        assert!(!t.fail(ip, now));
        assert!(!t.blocked(ip, now));
        assert!(t.fail(ip, now + Duration::from_secs(1)));
        assert!(t.blocked(ip, now + Duration::from_secs(2)));
        assert!(!t.blocked(other, now + Duration::from_secs(2)));
        assert!(!t.blocked(ip, now + FAILURE_WINDOW + Duration::from_secs(1)));
    }

    #[test]
    fn allowed_from_matches_addresses_and_domains() {
        let allowed = vec![
            "billing@example.com".to_string(),
            "@corp.example".to_string(),
        ];
        let table = [
            ("billing@example.com", true),
            ("Billing@Example.com", true),
            ("other@example.com", false),
            ("anyone@corp.example", true),
            ("anyone@sub.corp.example", false),
            ("", false),
        ];
        for (addr, want) in table {
            assert_eq!(sender_allowed(&allowed, addr), want, "{addr}");
        }
        assert!(sender_allowed(&[], ""));
    }
}
