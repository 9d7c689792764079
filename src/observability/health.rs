//! What readiness depends on besides the spool's disk: whether the daemon is
//! draining, whether a core task (the delivery engine, the SMTP listener)
//! has died, and the last configuration fault a backend reported (a rejected
//! credential, a suspended account). The fault is cleared by the next
//! successful delivery; a dead core task is never cleared (the process exits).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    fault: Mutex<Option<String>>,
    broken: Mutex<Option<String>>,
    /// Rejected per-message credentials (a user's own token, a passthrough
    /// token), by label (`user billing`): only their own mail is held, so
    /// they do not make the daemon unready; `/readyz` lists them.
    held: Mutex<BTreeMap<String, String>>,
}

impl Health {
    /// The API rejected the credential named `label` (never the secret).
    pub fn set_credential_fault(&self, label: &str, reason: &str) {
        self.held
            .lock()
            .expect("health lock")
            .insert(label.to_string(), reason.to_string());
    }

    /// The credential named `label` delivered a message.
    pub fn clear_credential_fault(&self, label: &str) {
        self.held.lock().expect("health lock").remove(label);
    }

    /// Rejected per-message credentials: (label, reason).
    pub fn credential_faults(&self) -> Vec<(String, String)> {
        self.held
            .lock()
            .expect("health lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn set_fault(&self, reason: &str) {
        *self.fault.lock().expect("health lock") = Some(reason.to_string());
    }

    pub fn clear_fault(&self) {
        self.fault.lock().expect("health lock").take();
    }

    /// A core task died: readiness fails from now on.
    pub fn set_broken(&self, reason: &str) {
        *self.broken.lock().expect("health lock") = Some(reason.to_string());
    }

    /// What makes the daemon unable to deliver: a dead core task first,
    /// then the backend's configuration fault.
    pub fn fault(&self) -> Option<String> {
        if let Some(broken) = self.broken.lock().expect("health lock").clone() {
            return Some(broken);
        }
        self.fault.lock().expect("health lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_user_credential_is_listed_apart_from_the_backend_fault() {
        let health = Health::default();
        health.set_credential_fault("user billing", "Postmark rejected the server token");
        assert_eq!(health.fault(), None, "other mail still flows");
        assert_eq!(
            health.credential_faults(),
            [(
                "user billing".to_string(),
                "Postmark rejected the server token".to_string()
            )]
        );
        health.clear_credential_fault("user billing");
        assert!(health.credential_faults().is_empty());
    }

    #[test]
    fn a_dead_core_task_stays_a_fault_after_a_delivery_clears_the_backend_fault() {
        let health = Health::default();
        health.set_fault("bad token");
        health.set_broken("the delivery engine failed");
        health.clear_fault();
        assert_eq!(
            health.fault().as_deref(),
            Some("the delivery engine failed")
        );
    }
}
