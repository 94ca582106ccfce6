//! [`Backoff`]: how long to wait before each retry — exponential growth capped
//! at a maximum, with one of four [`Jitter`] modes.

use std::time::Duration;

/// How randomness is added to the exponential delay `d = min(base·factor^n, max)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly `d`.
    None,
    /// `d + U(0, f·d)`: the predecessor's mode, with `f` = 0.1 by default.
    Proportional(f64),
    /// `U(0, d)` ("full jitter").
    Full,
    /// `d/2 + U(0, d/2)` ("equal jitter").
    Equal,
    /// `min(max, U(base, 3·previous))` ("decorrelated jitter"); the first
    /// previous delay is `base`.
    Decorrelated,
}

/// Exponential backoff with jitter.
///
/// ```
/// use std::time::Duration;
/// use mlflow_secrets_auth_retry::{Backoff, Jitter, fastrand};
/// let backoff = Backoff::default().with_jitter(Jitter::None);
/// let delays: Vec<_> = backoff.delays(fastrand::Rng::with_seed(1)).take(3).collect();
/// assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay (default 1 s).
    pub base: Duration,
    /// Growth per retry (default 2).
    pub factor: f64,
    /// Cap on the exponential delay (default 30 s).
    pub max: Duration,
    /// Randomness (default `Proportional(0.1)`).
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(30),
            jitter: Jitter::Proportional(0.1),
        }
    }
}

impl Backoff {
    /// Sets the first delay.
    #[must_use]
    pub fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets the growth factor (values below 1 are taken as 1).
    #[must_use]
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the cap on the exponential delay.
    #[must_use]
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets the jitter mode.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The capped exponential delay before retry `retry` (0-based), without jitter.
    pub fn exponential(&self, retry: u32) -> Duration {
        let factor = if self.factor.is_finite() && self.factor >= 1.0 {
            self.factor
        } else {
            1.0
        };
        let scale = factor.powi(i32::try_from(retry).unwrap_or(i32::MAX));
        let secs = self.base.as_secs_f64() * scale;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The longest wait [`Self::delay`] can choose before retry `retry`
    /// (the exponential delay plus the most its jitter can add).
    pub fn longest(&self, retry: u32) -> Duration {
        let d = self.exponential(retry);
        match self.jitter {
            Jitter::Proportional(f) if f.is_finite() && f > 0.0 => d.saturating_add(
                Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(Duration::MAX),
            ),
            Jitter::Decorrelated => self.max,
            _ => d,
        }
    }

    /// The delay before retry `retry`, given the delay used before the previous one.
    pub fn delay(&self, retry: u32, previous: Duration, rng: &mut fastrand::Rng) -> Duration {
        let d = self.exponential(retry);
        match self.jitter {
            Jitter::None => d,
            Jitter::Proportional(f) => {
                let f = if f.is_finite() { f.max(0.0) } else { 0.0 };
                let extra = Duration::try_from_secs_f64(d.as_secs_f64() * f * rng.f64())
                    .unwrap_or(Duration::MAX);
                d.saturating_add(extra)
            }
            Jitter::Full => d.mul_f64(rng.f64()),
            Jitter::Equal => d / 2 + (d / 2).mul_f64(rng.f64()),
            Jitter::Decorrelated => {
                let low = self.base.min(self.max);
                let high = previous.max(low).saturating_mul(3);
                let drawn = low + (high - low).mul_f64(rng.f64());
                drawn.min(self.max)
            }
        }
    }

    /// The endless sequence of delays, drawing randomness from `rng`.
    pub fn delays(&self, mut rng: fastrand::Rng) -> impl Iterator<Item = Duration> {
        let backoff = *self;
        let mut previous = backoff.base;
        (0u32..).map(move |retry| {
            previous = backoff.delay(retry, previous, &mut rng);
            previous
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_caps_at_max_and_never_overflows() {
        let b = Backoff::default();
        assert_eq!(b.exponential(0), Duration::from_secs(1));
        assert_eq!(b.exponential(4), Duration::from_secs(16));
        assert_eq!(b.exponential(5), Duration::from_secs(30));
        assert_eq!(b.exponential(u32::MAX), Duration::from_secs(30));
        let nan = Backoff::default().with_factor(f64::NAN);
        assert_eq!(nan.exponential(10), Duration::from_secs(1));
    }
}
