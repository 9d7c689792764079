//! Who may connect and send: the admission decision at connect (pure) and
//! the per-address connection count.
//!
//! Invariant: a client outside `smtp.allowed_networks` never sends without
//! authenticating; when nobody can authenticate it is refused at connect
//! (`554 5.7.1`). The per-address count always returns to zero: each
//! admitted connection holds a [`Slot`] that gives its place back on drop.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::session::Client;
use crate::config::Cidr;

/// The access rules of one listener.
#[derive(Debug, Clone)]
pub struct Policy {
    pub allowed_networks: Vec<Cidr>,
    pub require_auth: bool,
    /// Some client could authenticate (AUTH is configured).
    pub auth_available: bool,
    /// `[smtp.tls] required`.
    pub tls_required: bool,
    /// `smtp.allow_plaintext_auth`: AUTH before TLS off loopback too.
    pub allow_plaintext_auth: bool,
}

impl Policy {
    /// The client's standing at connect, or `None`: refuse it (`554 5.7.1`).
    /// `tls` says the listener speaks TLS from the first byte.
    pub fn admit(&self, ip: IpAddr, tls: bool) -> Option<Client> {
        let ip = canonical(ip);
        let trusted = !self.require_auth && self.allowed_networks.iter().any(|n| n.contains(ip));
        if !trusted && !self.auth_available {
            return None;
        }
        Some(Client {
            trusted,
            tls_required: self.tls_required && !ip.is_loopback(),
            tls,
            auth_available: self.auth_available,
            plaintext_auth: self.allow_plaintext_auth || ip.is_loopback(),
        })
    }
}

/// `::ffff:a.b.c.d` is the IPv4 client `a.b.c.d` (a dual-stack listener).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Concurrent connections per client address, capped.
#[derive(Debug, Clone)]
pub struct PerAddress {
    max: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection's place in the count.
#[derive(Debug)]
pub struct Slot {
    ip: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    pub fn new(max: usize) -> PerAddress {
        PerAddress {
            max,
            counts: Arc::default(),
        }
    }

    /// A slot for `ip`, or `None` when it already holds `max` connections.
    pub fn enter(&self, ip: IpAddr) -> Option<Slot> {
        let ip = canonical(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Addresses currently holding at least one connection.
    pub fn addresses(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(networks: &[&str], require_auth: bool, auth: bool, tls: bool) -> Policy {
        Policy {
            allowed_networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            require_auth,
            auth_available: auth,
            tls_required: tls,
            allow_plaintext_auth: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn admission_follows_networks_auth_and_tls() {
        let local = policy(&["127.0.0.1/32"], false, false, false);
        let loopback = Client {
            plaintext_auth: true,
            ..Client::trusted()
        };
        assert_eq!(local.admit(ip("127.0.0.1"), false), Some(loopback));
        assert_eq!(local.admit(ip("::ffff:127.0.0.1"), false), Some(loopback));
        assert_eq!(
            local.admit(ip("127.0.0.2"), false),
            None,
            "no AUTH: refused at connect"
        );

        let with_auth = policy(&["127.0.0.1/32"], false, true, false);
        let outside = with_auth.admit(ip("10.0.0.1"), false).unwrap();
        assert!(!outside.trusted, "must authenticate");
        assert!(!outside.offers_auth(), "not before TLS off loopback");
        assert!(!outside.offers_auth(), "not before TLS off loopback");

        let everyone_auths = policy(&["127.0.0.0/8"], true, true, false);
        assert!(
            !everyone_auths
                .admit(ip("127.0.0.1"), false)
                .unwrap()
                .trusted
        );

        let tls = policy(&["0.0.0.0/0"], false, false, true);
        assert!(
            !tls.admit(ip("127.0.0.1"), false).unwrap().tls_required,
            "loopback exempt"
        );
        assert!(tls.admit(ip("10.1.1.1"), false).unwrap().tls_required);
        assert!(tls.admit(ip("10.1.1.1"), true).unwrap().tls);
    }

    #[test]
    fn per_address_cap_counts_and_releases() {
        let cap = PerAddress::new(2);
        let a = cap.enter(ip("10.0.0.1")).unwrap();
        let _b = cap.enter(ip("::ffff:10.0.0.1")).unwrap();
        assert!(cap.enter(ip("10.0.0.1")).is_none());
        let _other = cap.enter(ip("10.0.0.2")).unwrap();
        drop(a);
        let _c = cap.enter(ip("10.0.0.1")).unwrap();
        drop(_c);
        drop(_b);
        drop(_other);
        assert_eq!(
            cap.addresses(),
            0,
            "the map does not grow with past clients"
        );
    }
}
