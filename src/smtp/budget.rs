//! The memory budget of DATA-time checks (`smtp.check_memory`). Reading a
//! message back and mapping it costs a multiple of its size plus about a
//! kilobyte per header line and MIME part ([`estimate`]); each check
//! first takes that many bytes from one semaphore shared by every
//! connection, so however many large messages arrive at once, their checks
//! together stay within the budget and the rest wait their turn. A message's
//! weight is clamped to the whole budget, so any single message can run.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Semaphore permits are counted in KiB, so budgets past 4 GiB still fit a `u32`.
const UNIT: usize = 1024;

/// Bytes a check allocates per byte of message: the raw copy read back,
/// the parsed tree, decoded parts and the encoded request. Measured on 9 MB
/// messages: at most 5.6 (Postmark, one large attachment) plus the copy.
pub const BYTES_PER_MESSAGE_BYTE: usize = 8;
/// Bytes per header line or MIME boundary (see [`codec::DataFramer::structure_lines`]):
/// measured at 0.9 KiB per line of a 1 MiB header block and 1.2 KiB per part
/// of a message of a million empty parts.
///
/// [`codec::DataFramer::structure_lines`]: super::codec::DataFramer::structure_lines
pub const BYTES_PER_STRUCTURE_LINE: usize = 1536;
/// What a check of an empty message still allocates.
pub const BASE: usize = 64 * 1024;

/// An upper estimate, in bytes, of what checking a message allocates.
pub fn estimate(size: usize, structure_lines: usize) -> usize {
    BASE.saturating_add(size.saturating_mul(BYTES_PER_MESSAGE_BYTE))
        .saturating_add(structure_lines.saturating_mul(BYTES_PER_STRUCTURE_LINE))
}

#[derive(Debug)]
pub struct CheckBudget {
    permits: Semaphore,
    capacity: u32,
}

impl CheckBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> CheckBudget {
        let capacity = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).max(1);
        CheckBudget {
            permits: Semaphore::new(capacity as usize),
            capacity,
        }
    }

    /// Permits a check of this message takes: its estimate, clamped to the budget.
    pub fn weight(&self, size: usize, structure_lines: usize) -> u32 {
        let units = estimate(size, structure_lines).div_ceil(UNIT);
        u32::try_from(units)
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity)
    }

    /// Waits until the check of this message fits in the budget.
    pub async fn acquire(&self, size: usize, structure_lines: usize) -> SemaphorePermit<'_> {
        self.permits
            .acquire_many(self.weight(size, structure_lines))
            .await
            .expect("the check budget is never closed")
    }

    /// Bytes not currently taken by a running check.
    pub fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_grows_with_size_and_is_clamped_to_the_budget() {
        let budget = CheckBudget::new(256 << 20);
        let small = budget.weight(1000, 10);
        let big = budget.weight(10 << 20, 10);
        let many_parts = budget.weight(1000, 100_000);
        assert!(small >= 1 && small < big && small < many_parts);
        assert_eq!(budget.weight(usize::MAX, usize::MAX), 256 << 10);
        // A budget smaller than one unit still lets a check run.
        assert_eq!(CheckBudget::new(10).weight(10 << 20, 0), 1);
    }

    #[tokio::test]
    async fn checks_over_the_budget_wait_for_the_running_ones() {
        let budget = CheckBudget::new(100 << 20);
        // Two 5 MiB messages weigh 40 MiB each and 10 000 parts 15 MiB more:
        // the second waits for the first.
        let first = budget.acquire(5 << 20, 10_000).await;
        let second = budget.acquire(5 << 20, 10_000);
        tokio::pin!(second);
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        drop(first);
        let _second = second.await;
        assert!(budget.available() < 100 << 20);
    }

    /// Polls a future once: `Some` if it completed.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = f => Some(out),
            _ = std::future::ready(()) => None,
        }
    }
}
