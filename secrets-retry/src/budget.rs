//! [`RetryBudget`]: a token bucket shared by many callers so that, when a
//! backend fails for everyone, retries cannot multiply the load on it.
//!
//! Each retry takes one token; each call that succeeds puts back `ratio` of
//! one. With a ratio of 0.2 retries stay at about 20 % of successful traffic
//! once the initial allowance (`capacity` tokens) is spent.

use std::sync::atomic::{AtomicU64, Ordering};

const MILLI: u64 = 1000;

/// A shared allowance of retries.
#[derive(Debug)]
pub struct RetryBudget {
    /// Tokens in thousandths.
    milli_tokens: AtomicU64,
    capacity: u64,
    deposit: u64,
}

impl RetryBudget {
    /// A full bucket of `capacity` retries, refilled by `ratio` per success.
    pub fn new(capacity: u32, ratio: f64) -> Self {
        let capacity = u64::from(capacity) * MILLI;
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        Self {
            milli_tokens: AtomicU64::new(capacity),
            capacity,
            deposit: (ratio * MILLI as f64) as u64,
        }
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_withdraw(&self) -> bool {
        self.milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                t.checked_sub(MILLI)
            })
            .is_ok()
    }

    /// Credits a success.
    pub fn deposit(&self) {
        if self.deposit == 0 || self.milli_tokens.load(Ordering::Relaxed) >= self.capacity {
            return;
        }
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + self.deposit).min(self.capacity))
            });
    }

    /// Whole retries left.
    pub fn remaining(&self) -> u64 {
        self.milli_tokens.load(Ordering::Relaxed) / MILLI
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spends_and_refills() {
        let budget = RetryBudget::new(2, 0.5);
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        budget.deposit();
        assert!(!budget.try_withdraw(), "half a token is not a retry");
        budget.deposit();
        assert!(budget.try_withdraw());
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), 2, "never above capacity");
    }
}
