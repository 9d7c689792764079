//! What readiness depends on besides the spool's disk: whether the daemon is
//! draining, whether a core task (the delivery engine, the SMTP listener)
//! has died, and the last configuration fault a backend reported (a rejected
//! credential, a suspended account). The fault is cleared by the next
//! successful delivery; a dead core task is never cleared (the process exits).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    fault: Mutex<Option<String>>,
    broken: Mutex<Option<String>>,
}

impl Health {
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
