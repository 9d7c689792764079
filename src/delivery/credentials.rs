//! Which secret sends a message, and with which default stream: the spool
//! record names a credential ([`Credential`]), this book turns it into the
//! secret at send time, from the configuration loaded now (so fixing a
//! user's token and restarting releases that user's held mail), and into
//! the user's own `message_stream`, if any.
//!
//! Invariant: `None` means the backend's configured credential; a secret
//! from the book is only ever handed to the backend, never logged.

use std::collections::HashMap;

use secrecy::SecretString;

use crate::config::UserConfig;
use crate::spool::Credential;

#[derive(Default)]
pub struct CredentialBook {
    /// Users' own tokens (`[[users]] server_token` / `api_key`), by name.
    users: HashMap<String, SecretString>,
    /// Users' own default streams (`[[users]] message_stream`), by name.
    streams: HashMap<String, String>,
}

impl std::fmt::Debug for CredentialBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("CredentialBook")
            .field("users", &names)
            .field("streams", &self.streams)
            .finish()
    }
}

impl CredentialBook {
    pub fn new(users: HashMap<String, SecretString>) -> CredentialBook {
        CredentialBook {
            users,
            streams: HashMap::new(),
        }
    }

    /// The same book with each user's `message_stream` from `users`.
    pub fn with_streams(mut self, users: &[UserConfig]) -> CredentialBook {
        self.streams = users
            .iter()
            .filter_map(|u| Some((u.name.clone(), u.message_stream.clone()?)))
            .collect();
        self
    }

    /// The default stream of mail sent as `credential`: the user's own, or
    /// `None` for the configured one.
    pub fn stream(&self, credential: &Credential) -> Option<&str> {
        match credential {
            Credential::User(name) => self.streams.get(name).map(String::as_str),
            Credential::Global | Credential::Passthrough(_) => None,
        }
    }

    /// The secret for `credential`; `None`: the backend's own. A user
    /// without a token of their own (or no longer configured) sends with
    /// the global one.
    pub fn resolve(&self, credential: &Credential) -> Option<SecretString> {
        match credential {
            Credential::Global => None,
            Credential::User(name) => self.users.get(name).cloned(),
            Credential::Passthrough(token) => Some(SecretString::from(token.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn each_credential_resolves_to_its_secret_or_the_global_one() {
        let book = CredentialBook::new(HashMap::from([(
            "billing".to_string(),
            SecretString::from("billing-token"),
        )]));
        let shown = |c: &Credential| book.resolve(c).map(|s| s.expose_secret().to_string());
        assert_eq!(shown(&Credential::Global), None);
        assert_eq!(
            shown(&Credential::User("billing".into())).as_deref(),
            Some("billing-token")
        );
        assert_eq!(
            shown(&Credential::User("cron".into())),
            None,
            "no own token"
        );
        assert_eq!(
            shown(&Credential::Passthrough("pt".into())).as_deref(),
            Some("pt")
        );
        assert!(!format!("{book:?}").contains("billing-token"));
    }

    #[test]
    fn only_a_users_own_stream_replaces_the_default() {
        let users = [
            UserConfig {
                name: "billing".into(),
                message_stream: Some("billing".into()),
                ..Default::default()
            },
            UserConfig {
                name: "cron".into(),
                ..Default::default()
            },
        ];
        let book = CredentialBook::default().with_streams(&users);
        let table = [
            (Credential::User("billing".into()), Some("billing")),
            (Credential::User("cron".into()), None),
            (Credential::User("gone".into()), None),
            (Credential::Global, None),
            (Credential::Passthrough("pt".into()), None),
        ];
        for (credential, want) in table {
            assert_eq!(book.stream(&credential), want, "{credential:?}");
        }
    }
}
