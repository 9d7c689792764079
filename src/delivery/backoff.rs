//! Retry delays: exponential from `retry_initial`, doubling per attempt,
//! capped at `retry_max`, with full jitter; an API's `Retry-After` is a floor.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// `initial` must be non-zero and not above `max` (config validation checks both).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        assert!(
            !initial.is_zero() && initial <= max,
            "invalid backoff bounds"
        );
        Backoff { initial, max }
    }

    /// The ceiling for the delay after `attempt` failed attempts (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A delay drawn uniformly from `[0, ceiling]`, raised to `floor` (a `Retry-After`).
    pub fn delay(&self, attempt: u32, floor: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let jittered = Duration::from_millis(rng.random_range(0..=ceiling.as_millis() as u64));
        jittered.max(floor.unwrap_or_default())
    }

    /// The delay for a uniform draw `unit` in `[0, 1]`: `unit` × ceiling,
    /// raised to `floor`. The deterministic core of [`delay`](Backoff::delay).
    pub fn jittered(&self, attempt: u32, floor: Option<Duration>, unit: f64) -> Duration {
        let jittered = self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0));
        jittered.max(floor.unwrap_or_default())
    }

    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let got: Vec<u64> = (1..=6).map(|a| b.ceiling(a).as_secs()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(b.ceiling(200), Duration::from_secs(60));
    }

    #[test]
    fn delay_stays_within_ceiling_and_honours_floor() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let mut rng = rand::rng();
        for attempt in 1..10 {
            let d = b.delay(attempt, None, &mut rng);
            assert!(d <= b.ceiling(attempt));
        }
        let d = b.delay(1, Some(Duration::from_secs(30)), &mut rng);
        assert_eq!(d, Duration::from_secs(30));
    }
}
