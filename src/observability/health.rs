//! What readiness depends on besides the spool's disk: whether the daemon is
//! draining, and the last configuration fault a backend reported (a rejected
//! credential, a suspended account). Cleared by the next successful delivery.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    fault: Mutex<Option<String>>,
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

    pub fn fault(&self) -> Option<String> {
        self.fault.lock().expect("health lock").clone()
    }
}
