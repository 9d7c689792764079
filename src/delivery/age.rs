//! A message's age for `max_age`, robust to wall-clock jumps.
//!
//! The wall clock is read once per message per process: the first time the
//! engine loads it, its age is `now_wall - received_at` (0 if negative).
//! From then on the age grows with the monotonic (tokio) clock only. A wall
//! clock stepped forward while running therefore cannot dead-letter the
//! queue, and one stepped back cannot stall it; a jump while the daemon is
//! down counts once, at the next start, as real elapsed time would.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct Ages {
    /// id → (wall age when first seen, tokio time then).
    seen: Mutex<HashMap<String, (Duration, Instant)>>,
}

impl Ages {
    /// The age of message `id` received at `received_at`.
    pub fn age(&self, id: &str, received_at: SystemTime, now: Instant) -> Duration {
        let mut seen = self.seen.lock().expect("ages lock");
        let (wall_age, at) = *seen.entry(id.to_string()).or_insert_with(|| {
            let wall_age = SystemTime::now()
                .duration_since(received_at)
                .unwrap_or_default();
            (wall_age, now)
        });
        wall_age + now.saturating_duration_since(at)
    }

    /// The message left the queue.
    pub fn forget(&self, id: &str) {
        self.seen.lock().expect("ages lock").remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn age_grows_with_the_tokio_clock_from_the_first_wall_reading() {
        let ages = Ages::default();
        let received = SystemTime::now() - Duration::from_secs(100);
        let t0 = Instant::now();
        let first = ages.age("a", received, t0);
        assert!(first >= Duration::from_secs(100) && first < Duration::from_secs(101));
        // Later readings ignore the wall clock: a received_at far in the
        // past (as after a forward wall jump) changes nothing.
        let later = ages.age("a", SystemTime::UNIX_EPOCH, t0 + Duration::from_secs(50));
        assert_eq!(later, first + Duration::from_secs(50));
    }

    #[test]
    fn a_message_from_the_future_is_new() {
        let ages = Ages::default();
        let received = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(ages.age("a", received, Instant::now()), Duration::ZERO);
    }
}
