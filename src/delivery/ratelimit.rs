//! The outbound pace shared by every worker: at most `rate` messages per
//! second sent to the API, counted per message (a batch call of `n`
//! messages counts `n`), so no one-second window ever holds more than
//! `rate`, even after a few milliseconds of network jitter between here and
//! the API (every window is measured 1% longer). Calls are spaced evenly:
//! after a call of `n` messages the next waits `n/rate` s plus 1%, and a
//! call also waits until the window before it has room for all of its
//! messages. A throttling answer from the API (429) pushes the next call out
//! for the whole queue.
//!
//! Unlimited (`rate = 0`) costs one atomic load per call: no lock, no
//! allocation, no sleep unless the API said to slow down.
//!
//! Slot arithmetic on tokio's clock instead of a GCRA crate: burst 1 is all
//! we need, and tokio time keeps tests deterministic.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The window a rate counts in, with the 1% margin for jitter.
const WINDOW: Duration = Duration::from_millis(1010);

#[derive(Debug)]
pub struct Pacer {
    limited: Option<Limited>,
    /// Nobody sends before `base` plus this many nanoseconds (a 429); 0: no pause.
    paused_until: AtomicU64,
    base: Instant,
}

#[derive(Debug)]
struct Limited {
    rate: u32,
    interval: Duration,
    window: Mutex<Window>,
}

/// The calls reserved within the last [`WINDOW`] (their slots may lie in
/// the future), oldest first, with the number of messages each carries.
#[derive(Debug)]
struct Window {
    next: Instant,
    calls: VecDeque<(Instant, u32)>,
}

impl Pacer {
    /// `rate` messages per second; 0 means unlimited.
    pub fn new(rate: u32) -> Pacer {
        let now = Instant::now();
        Pacer {
            limited: (rate > 0).then(|| Limited {
                rate,
                interval: Duration::from_secs(1) / rate * 101 / 100,
                window: Mutex::new(Window {
                    next: now,
                    calls: VecDeque::new(),
                }),
            }),
            paused_until: AtomicU64::new(0),
            base: now,
        }
    }

    /// The most messages one call may carry: `rate`, or `None` when unlimited.
    pub fn max_per_call(&self) -> Option<usize> {
        self.limited.as_ref().map(|l| l.rate as usize)
    }

    /// Waits for the slot of a call carrying `messages` (at least 1, at most
    /// [`max_per_call`](Self::max_per_call)). Returns how long it waited.
    pub async fn acquire(&self, messages: usize) -> Duration {
        let now = Instant::now();
        let paused = match self.paused_until.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.base + Duration::from_nanos(nanos)),
        };
        let slot = match &self.limited {
            None => paused.map_or(now, |p| p.max(now)),
            Some(limited) => limited.reserve(messages, paused.unwrap_or(now).max(now)),
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
        slot - now
    }

    /// Holds every caller back for `pause` (the API said slow down).
    pub fn slow_down(&self, pause: Duration) {
        let until = (Instant::now() + pause).saturating_duration_since(self.base);
        let nanos = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.paused_until.fetch_max(nanos, Ordering::Relaxed);
    }
}

impl Limited {
    /// The earliest slot at or after `earliest` for a call of `messages`,
    /// recorded as taken.
    fn reserve(&self, messages: usize, earliest: Instant) -> Instant {
        let n = u32::try_from(messages)
            .unwrap_or(u32::MAX)
            .clamp(1, self.rate);
        let mut window = self.window.lock().expect("pacer lock");
        let mut slot = window.next.max(earliest);
        // The newest calls that, with this one, would exceed the rate: this
        // call waits until the oldest of them has left the window.
        let mut count = n;
        for &(at, carried) in window.calls.iter().rev() {
            count += carried;
            if count > self.rate {
                slot = slot.max(at + WINDOW);
                break;
            }
        }
        while window
            .calls
            .front()
            .is_some_and(|&(at, _)| at + WINDOW <= slot)
        {
            window.calls.pop_front();
        }
        window.calls.push_back((slot, n));
        window.next = slot + self.interval * n;
        slot
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
            pacer.acquire(1).await;
            stamps.push(Instant::now() - start);
        }
        // Any 11 consecutive calls span at least one second.
        for w in stamps.windows(11) {
            assert!(w[10] - w[0] >= Duration::from_secs(1), "{w:?}");
        }
    }

    /// Most messages any one-second window holds, calls given as (time, n).
    fn busiest_second(calls: &[(Duration, usize)]) -> usize {
        calls
            .iter()
            .map(|&(start, _)| {
                calls
                    .iter()
                    .filter(|&&(t, _)| t >= start && t < start + Duration::from_secs(1))
                    .map(|&(_, n)| n)
                    .sum()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn batches_count_each_message_against_the_ceiling() {
        // Singles then a full batch, batches of every size, concurrent callers.
        let pacer = std::sync::Arc::new(Pacer::new(10));
        let start = Instant::now();
        let sizes = [
            1, 1, 1, 1, 1, 1, 1, 1, 1, 10, 3, 10, 1, 7, 4, 10, 10, 2, 9, 1, 5,
        ];
        let mut tasks = Vec::new();
        for (i, n) in sizes.into_iter().enumerate() {
            let pacer = pacer.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i as u64 * 37)).await;
                pacer.acquire(n).await;
                (Instant::now() - start, n)
            }));
        }
        let mut calls = Vec::new();
        for t in tasks {
            calls.push(t.await.unwrap());
        }
        assert_eq!(pacer.max_per_call(), Some(10));
        assert!(busiest_second(&calls) <= 10, "{calls:?}");
        // And not slower than the ceiling requires: 92 messages at 10/s.
        let last = calls.iter().map(|c| c.0).max().unwrap();
        assert!(last < Duration::from_secs(12), "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits_unless_told_to_slow_down() {
        let pacer = Pacer::new(0);
        assert_eq!(pacer.max_per_call(), None);
        for n in [1, 500, 1] {
            assert_eq!(pacer.acquire(n).await, Duration::ZERO);
        }
        pacer.slow_down(Duration::from_secs(3));
        let waited = pacer.acquire(1).await;
        assert_eq!(waited, Duration::from_secs(3));
        assert_eq!(pacer.acquire(1).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_down_delays_the_next_slot_of_a_limited_pace_too() {
        let pacer = Pacer::new(100);
        pacer.slow_down(Duration::from_secs(3));
        assert_eq!(pacer.acquire(1).await, Duration::from_secs(3));
    }
}
