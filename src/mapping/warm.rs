//! Mappings made at `DATA`, kept for delivery: the check already mapped
//! the message for its spool id, so the first attempt takes that mapping
//! instead of parsing and mapping the same bytes again.
//!
//! Invariants: a kept mapping is handed out at most once, and only for the
//! same id, envelope and stream it was made from (a spool entry's bytes
//! never change, and the mapper is fixed for the process's life); anything
//! else maps afresh. What is kept never exceeds the budget: the oldest
//! mappings go first, so one never taken (a message deleted or failed
//! before delivery) ages out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::Mapped;
use crate::message::Envelope;

/// Bytes of messages whose mappings are kept at most, by default.
pub const WARM_BUDGET: usize = 4 << 20;

struct Kept {
    envelope: Envelope,
    stream: Option<String>,
    mapped: Mapped,
    bytes: usize,
    seq: u64,
}

#[derive(Default)]
struct Inner {
    kept: HashMap<String, Kept>,
    /// Kept ids, oldest first.
    order: BTreeMap<u64, String>,
    bytes: usize,
    next: u64,
}

/// Kept mappings, shared by the SMTP listener and the delivery engine.
pub struct Warm {
    budget: usize,
    inner: Mutex<Inner>,
}

impl Warm {
    /// Keeps mappings of messages up to `budget` bytes in all (0: none).
    pub fn new(budget: usize) -> Warm {
        Warm {
            budget,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `mapped`, made for entry `id` from `envelope`, `stream` and a
    /// message of `bytes`, evicting the oldest kept mappings to make room.
    pub fn keep(
        &self,
        id: &str,
        envelope: &Envelope,
        stream: Option<&str>,
        mapped: Mapped,
        bytes: usize,
    ) {
        if bytes > self.budget || self.budget == 0 {
            return;
        }
        let mut t = self.lock();
        while t.bytes + bytes > self.budget {
            let Some((_, oldest)) = t.order.pop_first() else {
                break;
            };
            if let Some(gone) = t.kept.remove(&oldest) {
                t.bytes -= gone.bytes;
            }
        }
        let seq = t.next;
        t.next += 1;
        let kept = Kept {
            envelope: envelope.clone(),
            stream: stream.map(str::to_string),
            mapped,
            bytes,
            seq,
        };
        if let Some(old) = t.kept.insert(id.to_string(), kept) {
            t.order.remove(&old.seq);
            t.bytes -= old.bytes;
        }
        t.order.insert(seq, id.to_string());
        t.bytes += bytes;
    }

    /// The mapping kept for `id`, when it was made from this `envelope` and
    /// `stream`; it is no longer kept either way.
    pub fn take(&self, id: &str, envelope: &Envelope, stream: Option<&str>) -> Option<Mapped> {
        let mut t = self.lock();
        let kept = t.kept.remove(id)?;
        t.order.remove(&kept.seq);
        t.bytes -= kept.bytes;
        drop(t);
        (kept.envelope == *envelope && kept.stream.as_deref() == stream).then_some(kept.mapped)
    }

    /// Bytes of messages whose mappings are kept now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(rcpt: &[&str]) -> Envelope {
        Envelope {
            mail_from: "a@example.com".into(),
            rcpt_to: rcpt.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn mapped(note: &str) -> Mapped {
        Mapped {
            calls: Vec::new(),
            warnings: vec![note.to_string()],
        }
    }

    #[test]
    fn a_kept_mapping_is_taken_once_for_the_same_input_only() {
        let warm = Warm::new(1000);
        let env = envelope(&["b@example.org", "c@example.org"]);
        // (kept for, taken with, expected)
        let table: [(Option<&str>, Envelope, Option<&str>, bool); 4] = [
            (None, env.clone(), None, true),
            (Some("s"), env.clone(), Some("s"), true),
            (None, envelope(&["c@example.org"]), None, false), // one recipient done
            (Some("s"), env.clone(), None, false),             // another stream
        ];
        for (kept, env_now, stream_now, hit) in table {
            warm.keep("ID", &env, kept, mapped("m"), 10);
            let got = warm.take("ID", &env_now, stream_now);
            assert_eq!(
                got.is_some(),
                hit,
                "{kept:?} / {env_now:?} / {stream_now:?}"
            );
            assert!(warm.take("ID", &env, kept).is_none(), "taken only once");
            assert_eq!(warm.bytes(), 0);
        }
        assert!(warm.take("OTHER", &env, None).is_none());
    }

    #[test]
    fn the_oldest_mappings_go_to_stay_within_the_budget() {
        let warm = Warm::new(100);
        let env = envelope(&["b@example.org"]);
        for id in ["A", "B", "C"] {
            warm.keep(id, &env, None, mapped(id), 40);
        }
        assert_eq!(warm.bytes(), 80, "A went to make room for C");
        assert!(warm.take("A", &env, None).is_none());
        warm.keep("BIG", &env, None, mapped("big"), 101);
        assert!(
            warm.take("BIG", &env, None).is_none(),
            "over the whole budget"
        );
        assert_eq!(warm.take("C", &env, None).unwrap().warnings, ["C"]);
        assert_eq!(warm.take("B", &env, None).unwrap().warnings, ["B"]);
        assert_eq!(warm.bytes(), 0);
        let none = Warm::new(0);
        none.keep("A", &env, None, mapped("a"), 1);
        assert!(none.take("A", &env, None).is_none());
    }
}
