//! The outbound pace shared by every worker: at most `rate` API calls per
//! second, spaced evenly (one slot every `1/rate` s plus 1%, no burst), so no
//! one-second window ever holds more than `rate` calls, even after a few
//! milliseconds of network jitter between here and the API. A throttling answer
//! from the API (429) pushes the next slot out for the whole queue.
//!
//! Twenty lines of slot arithmetic on tokio's clock instead of a GCRA crate:
//! burst 1 is all we need, and tokio time keeps tests deterministic.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Pacer {
    /// `rate` calls per second; 0 means unlimited.
    pub fn new(rate: u32) -> Pacer {
        Pacer {
            interval: (rate > 0).then(|| Duration::from_secs(1) / rate * 101 / 100),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot. Returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let now = Instant::now();
        let slot = {
            let mut next = self.next.lock().expect("pacer lock");
            let slot = (*next).max(now);
            *next = slot + self.interval.unwrap_or_default();
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
        slot - now
    }

    /// Holds every caller back for `pause` (the API said slow down).
    pub fn slow_down(&self, pause: Duration) {
        let mut next = self.next.lock().expect("pacer lock");
        *next = (*next).max(Instant::now() + pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_calls_evenly_without_burst() {
        let pacer = Pacer::new(10);
        let start = Instant::now();
        let mut stamps = Vec::new();
        for _ in 0..25 {
            pacer.acquire().await;
            stamps.push(Instant::now() - start);
        }
        // Any 11 consecutive calls span at least one second.
        for w in stamps.windows(11) {
            assert!(w[10] - w[0] >= Duration::from_secs(1), "{w:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_down_delays_the_next_slot() {
        let pacer = Pacer::new(0);
        pacer.slow_down(Duration::from_secs(3));
        let waited = pacer.acquire().await;
        assert_eq!(waited, Duration::from_secs(3));
    }
}
