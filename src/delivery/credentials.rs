//! Which secret sends a message: the spool record names a credential
//! ([`Credential`]), this book turns it into the secret at send time, from
//! the configuration loaded now (so fixing a user's token and restarting
//! releases that user's held mail).
//!
//! Invariant: `None` means the backend's configured credential; a secret
//! from the book is only ever handed to the backend, never logged.

use std::collections::HashMap;

use secrecy::SecretString;

use crate::spool::Credential;

#[derive(Default)]
pub struct CredentialBook {
    /// Users' own tokens (`[[users]] server_token` / `api_key`), by name.
    users: HashMap<String, SecretString>,
}

impl std::fmt::Debug for CredentialBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("CredentialBook")
            .field("users", &names)
            .finish()
    }
}

impl CredentialBook {
    pub fn new(users: HashMap<String, SecretString>) -> CredentialBook {
        CredentialBook { users }
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
}
