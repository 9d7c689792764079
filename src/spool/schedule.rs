//! Who is due when: an ordered index `(due, id)` of entries not in flight,
//! the in-flight set, and [`Claim`], the guard a worker or an operator
//! action holds while it owns an entry. Times are on the tokio clock;
//! wall-clock time exists only on disk and is converted at the edges.
//!
//! Ids are held inline ([`Key`]), not as one heap string per index.
//!
//! Invariant: an id is in `ready` exactly when its slot exists and is not
//! in flight, under the same key `(slot.due, id)`; every claim ends in
//! exactly one give-back (reschedule, release, complete, dead letter, or
//! the claim's drop).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Spool, SpoolError, fsio};

/// Longest id the index holds inline: spool ids are 26-character ULIDs.
const KEY_LEN: usize = 26;

/// An id as the index holds it: inline, no heap string per index entry.
/// Shorter ids are padded with NULs, which sort first, so keys order as
/// their ids do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key([u8; KEY_LEN]);

impl Key {
    /// `None` for an id that cannot be an entry's (too long, or with a NUL).
    fn of(id: &str) -> Option<Key> {
        let bytes = id.as_bytes();
        if bytes.len() > KEY_LEN || bytes.contains(&0) {
            return None;
        }
        let mut key = [0; KEY_LEN];
        key[..bytes.len()].copy_from_slice(bytes);
        Some(Key(key))
    }

    fn id(&self) -> String {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(KEY_LEN);
        String::from_utf8_lossy(&self.0[..len]).into_owned()
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    due: Instant,
    received: SystemTime,
    in_flight: bool,
}

#[derive(Debug, Default)]
pub(super) struct Schedule {
    slots: HashMap<Key, Slot>,
    ready: BTreeSet<(Instant, Key)>,
}

impl Schedule {
    /// Adds (or replaces) an entry, not in flight.
    pub(super) fn insert(&mut self, id: &str, due: Instant, received: SystemTime) {
        let Some(key) = Key::of(id) else {
            tracing::error!(id = %id, "not a spool id; not scheduled");
            return;
        };
        self.remove(id);
        self.slots.insert(
            key,
            Slot {
                due,
                received,
                in_flight: false,
            },
        );
        self.ready.insert((due, key));
    }

    /// Whether `id` is queued (in flight or not).
    pub(super) fn contains(&self, id: &str) -> bool {
        Key::of(id).is_some_and(|k| self.slots.contains_key(&k))
    }

    pub(super) fn remove(&mut self, id: &str) {
        let Some(key) = Key::of(id) else { return };
        if let Some(s) = self.slots.remove(&key) {
            self.ready.remove(&(s.due, key));
        }
    }

    /// Marks up to `max` due entries in flight, earliest due first (ties by id).
    fn take_due(&mut self, now: Instant, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.ready.first() {
                Some((due, _)) if *due <= now => {}
                _ => break,
            }
            let (_, key) = self.ready.pop_first().expect("checked");
            if let Some(s) = self.slots.get_mut(&key) {
                s.in_flight = true;
            }
            out.push(key.id());
        }
        out
    }

    /// Marks one queued entry in flight.
    fn take(&mut self, id: &str) -> Result<(), SpoolError> {
        let key = Key::of(id);
        match key.and_then(|k| self.slots.get_mut(&k).map(|s| (k, s))) {
            None => Err(SpoolError::NotFound(id.to_string())),
            Some((_, s)) if s.in_flight => Err(SpoolError::InFlight(id.to_string())),
            Some((key, s)) => {
                s.in_flight = true;
                self.ready.remove(&(s.due, key));
                Ok(())
            }
        }
    }

    /// A new slot, in flight from the start; false when the id is known.
    fn reserve(&mut self, id: &str, due: Instant, received: SystemTime) -> bool {
        let Some(key) = Key::of(id) else {
            return false;
        };
        if self.slots.contains_key(&key) {
            return false;
        }
        self.slots.insert(
            key,
            Slot {
                due,
                received,
                in_flight: true,
            },
        );
        true
    }

    /// An in-flight entry back in the index, due at `due`.
    fn put_back(&mut self, id: &str, due: Instant) {
        let Some(key) = Key::of(id) else { return };
        if let Some(s) = self.slots.get_mut(&key) {
            self.ready.remove(&(s.due, key));
            s.due = due;
            s.in_flight = false;
            self.ready.insert((due, key));
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.ready.first().map(|(due, _)| *due)
    }

    /// Entries and the oldest receive time: a walk over every slot, for
    /// the metrics scrape (an ordered index by receive time would cost
    /// every entry memory and every commit an insertion).
    pub(super) fn depth(&self) -> (usize, Option<SystemTime>) {
        let oldest = self.slots.values().map(|s| s.received).min();
        (self.slots.len(), oldest)
    }
}

/// Ownership of one entry. Dropped without being handed back (a panic, an
/// early return), it gives the entry back due at once and logs a warning.
#[derive(Debug)]
pub struct Claim {
    id: String,
    spool: Arc<Spool>,
    armed: bool,
}

impl Claim {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Handed back explicitly: the drop does nothing more.
    pub(super) fn disarm(mut self) -> String {
        self.armed = false;
        std::mem::take(&mut self.id)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!(id = %self.id, "spool entry given back without a result; due again now");
            self.spool.give_back(&self.id, Instant::now());
        }
    }
}

/// The tokio-clock instant of wall time `wall` (never before `now`).
pub fn due_from_wall(wall: SystemTime, wall_now: SystemTime, now: Instant) -> Instant {
    now + wall.duration_since(wall_now).unwrap_or(Duration::ZERO)
}

/// The wall time of tokio-clock instant `due` (never before `wall_now`).
pub fn wall_from_due(due: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    wall_now + due.saturating_duration_since(now)
}

impl Spool {
    /// Due entries (due <= now) not in flight, earliest due first (ties by
    /// id), at most `max`, each now in flight. O(log n) per entry.
    pub fn claim_due(self: &Arc<Self>, now: Instant, max: usize) -> Vec<Claim> {
        let ids = self.sched().take_due(now, max);
        ids.into_iter().map(|id| self.claim_for(id)).collect()
    }

    /// Earliest due time of an entry not in flight.
    pub fn next_due(&self) -> Option<Instant> {
        self.sched().next_due()
    }

    /// Resolves when an entry is queued or released.
    pub async fn changed(&self) {
        self.wake.notified().await
    }

    /// Gives the entry back unchanged on disk, due at `due`.
    pub fn release(&self, claim: Claim, due: Instant) {
        let id = claim.disarm();
        self.give_back(&id, due);
    }

    /// Claims one queued entry for an operator action, under the lock the
    /// scheduler claims with: refused while a worker holds it.
    pub(super) fn claim_one(self: &Arc<Self>, id: &str) -> Result<Claim, SpoolError> {
        self.sched().take(id)?;
        Ok(self.claim_for(id.to_string()))
    }

    /// Claims an id that is not in the schedule (a dead letter coming back):
    /// refused with `AlreadyQueued` when the id is queued or in flight.
    pub(super) fn claim_new(self: &Arc<Self>, id: &str) -> Result<Claim, SpoolError> {
        let now = Instant::now();
        if !self.sched().reserve(id, now, SystemTime::now()) {
            return Err(SpoolError::AlreadyQueued(id.to_string()));
        }
        Ok(self.claim_for(id.to_string()))
    }

    /// Ends a claim with the entry (re)entered in the index as `due`, received at `received`.
    pub(super) fn enqueue(&self, claim: Claim, due: Instant, received: SystemTime) {
        let id = claim.disarm();
        self.sched().insert(&id, due, received);
        self.wake.notify_one();
    }

    /// Ends a claim with the entry out of the schedule for good; its id.
    pub(super) fn forget(&self, claim: Claim) -> String {
        let id = claim.disarm();
        self.sched().remove(&id);
        id
    }

    /// Back in the index due at `due`; an entry whose record is gone leaves the schedule.
    fn give_back(&self, id: &str, due: Instant) {
        if self.log.contains(id) || fsio::is_file(&self.queue.join(format!("{id}.json"))) {
            self.sched().put_back(id, due);
            self.wake.notify_one();
        } else {
            self.sched().remove(id);
        }
    }

    fn claim_for(self: &Arc<Self>, id: String) -> Claim {
        Claim {
            id,
            spool: self.clone(),
            armed: true,
        }
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn keys_order_as_their_ids_and_give_them_back() {
        let ids = ["", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "A", "AB", "B"];
        for pair in ids.windows(2) {
            let (a, b) = (Key::of(pair[0]).unwrap(), Key::of(pair[1]).unwrap());
            assert!(a < b, "{pair:?}");
        }
        for id in ids {
            assert_eq!(Key::of(id).unwrap().id(), id);
        }
    }

    #[test]
    fn an_id_no_entry_can_have_is_never_taken_for_another() {
        let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        let mut s = Schedule::default();
        s.insert(id, Instant::now(), SystemTime::now());
        for other in [format!("{id}X"), format!("{id}\0"), "A\0".to_string()] {
            assert!(Key::of(&other).is_none(), "{other:?}");
            assert!(matches!(s.take(&other), Err(SpoolError::NotFound(_))));
        }
        assert!(s.take(id).is_ok());
    }
}
