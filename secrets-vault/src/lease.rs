//! The Vault token's lifecycle, as pure decisions on a given `now`: renew
//! it (renew-self) at about two thirds of its TTL, with jitter so a fleet
//! does not renew at once; log in again when it cannot be renewed, when a
//! renewal no longer extends it (its `max_ttl`), or when a renewal fails;
//! never use it past its expiry; back off between failed logins.

use std::time::{Duration, Instant};

/// The fraction of the TTL after which a token is renewed (or replaced),
/// before jitter.
const RENEW_AT: f64 = 2.0 / 3.0;

/// Jitter: the renewal point moves by up to this fraction of the TTL,
/// earlier or later.
const JITTER: f64 = 0.05;

/// The first wait after a failed login; doubled after each, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between failed logins.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a token is: how it was obtained and how long it lives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Lease {
    /// When the TTL below was reported.
    pub(crate) since: Instant,
    /// The TTL reported (zero: it never expires, as a root token).
    pub(crate) ttl: Duration,
    /// Whether renew-self may extend it.
    pub(crate) renewable: bool,
    /// Whether this provider may log in for a new one (not for a token the
    /// user gave, which is renewed but never replaced).
    pub(crate) replaceable: bool,
    /// The renewal point's jitter, in `-1.0..=1.0` (fixed per lease, so
    /// asking twice gives the same answer).
    pub(crate) jitter: f64,
    /// Renewals that failed in a row; each holds the next one off longer.
    pub(crate) failures: u32,
    /// No renewal or replacement before this (after a failed renewal).
    pub(crate) held_until: Option<Instant>,
}

/// What to do with the token now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Use it.
    Use,
    /// Renew it (renew-self), using it meanwhile if that fails.
    Renew,
    /// Log in for a new one (it is still usable if the login fails).
    Replace,
    /// It has expired: log in, or fail if it cannot be replaced.
    Expired,
}

impl Lease {
    /// A lease reported at `since`, with its jitter drawn now.
    pub(crate) fn new(since: Instant, ttl: Duration, renewable: bool, replaceable: bool) -> Self {
        Self {
            since,
            ttl,
            renewable,
            replaceable,
            jitter: fastrand::f64().mul_add(2.0, -1.0),
            failures: 0,
            held_until: None,
        }
    }

    /// When it expires (`None`: never).
    pub(crate) fn expires(&self) -> Option<Instant> {
        (!self.ttl.is_zero())
            .then(|| self.since.checked_add(self.ttl))
            .flatten()
    }

    /// When it is renewed or replaced (`None`: never).
    pub(crate) fn due(&self) -> Option<Instant> {
        if self.ttl.is_zero() {
            return None;
        }
        let fraction = RENEW_AT + self.jitter.clamp(-1.0, 1.0) * JITTER;
        self.since.checked_add(self.ttl.mul_f64(fraction))
    }

    /// What to do at `now`.
    pub(crate) fn step(&self, now: Instant) -> Step {
        if self.expires().is_some_and(|at| now >= at) {
            return Step::Expired;
        }
        if self.due().is_none_or(|at| now < at) || self.held_until.is_some_and(|at| now < at) {
            return Step::Use;
        }
        match (self.renewable, self.replaceable) {
            (true, _) => Step::Renew,
            (false, true) => Step::Replace,
            // A token of the user's that cannot be renewed: used until it
            // expires.
            (false, false) => Step::Use,
        }
    }

    /// The lease after a renewal at `now` that reported `ttl`. A renewal
    /// that does not extend the token past where it ended (its `max_ttl`)
    /// leaves a lease that is replaced, not renewed again.
    pub(crate) fn renewed(&self, now: Instant, ttl: Duration) -> Self {
        let before = self.expires();
        // A renewal answering no TTL for a token that had one: it ends
        // where it did (never taken for a token that no longer expires).
        let ttl = match before {
            Some(at) if ttl.is_zero() => at.saturating_duration_since(now),
            _ => ttl,
        };
        let mut next = Self::new(now, ttl, self.renewable, self.replaceable);
        let grew = match (before, next.expires()) {
            (Some(before), Some(after)) => after > before,
            _ => true,
        };
        if !grew {
            next.renewable = false;
        }
        next
    }
}

impl Lease {
    /// The lease after a renewal failed at `now`: the same, with the next
    /// renewal (or replacement) held off by [`backoff`], at most half of
    /// the time left.
    pub(crate) fn held(&self, now: Instant) -> Self {
        let failures = self.failures.saturating_add(1);
        // Never held past half of what is left: a token whose renewal
        // failed near its end gets more tries before it runs out.
        let wait = match self.expires() {
            Some(at) => backoff(failures).min(at.saturating_duration_since(now) / 2),
            None => backoff(failures),
        };
        Self {
            failures,
            held_until: now.checked_add(wait),
            ..*self
        }
    }
}

/// The wait before a new login after a read was refused just after one: a
/// 403 that a fresh token gets is the policy's, which a new login does not
/// change (a fixed policy applies to the current token at once).
pub(crate) fn after_refused_read() -> Duration {
    MAX_BACKOFF.mul_f64(1.0 - fastrand::f64() / 2.0)
}

/// The wait before the next login after `failures` failed ones in a row:
/// doubling from one second up to a minute, less up to half of it at random
/// (so a fleet that failed together does not try again together).
pub(crate) fn backoff(failures: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    full.mul_f64(1.0 - fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn lease(ttl: u64, renewable: bool, replaceable: bool) -> (Instant, Lease) {
        let start = Instant::now();
        let lease = Lease {
            since: start,
            ttl: secs(ttl),
            renewable,
            replaceable,
            jitter: 0.0,
            failures: 0,
            held_until: None,
        };
        (start, lease)
    }

    #[test]
    fn a_renewable_token_is_renewed_at_two_thirds_and_never_used_past_expiry() {
        let (t0, lease) = lease(300, true, true);
        assert_eq!(lease.step(t0 + secs(199)), Step::Use);
        assert_eq!(lease.step(t0 + secs(200)), Step::Renew);
        assert_eq!(lease.step(t0 + secs(299)), Step::Renew);
        assert_eq!(lease.step(t0 + secs(300)), Step::Expired);
    }

    #[test]
    fn the_jitter_moves_the_point_by_at_most_five_percent() {
        let (t0, mut lease) = lease(300, true, true);
        lease.jitter = 1.0;
        assert_eq!(lease.step(t0 + secs(214)), Step::Use);
        assert_eq!(lease.step(t0 + secs(215)), Step::Renew);
        lease.jitter = -1.0;
        assert_eq!(lease.step(t0 + secs(184)), Step::Use);
        assert_eq!(lease.step(t0 + secs(185)), Step::Renew);
        for _ in 0..100 {
            let drawn = Lease::new(t0, secs(300), true, true);
            let due = drawn.due().unwrap() - t0;
            assert!(due >= secs(185) && due <= secs(215), "{due:?}");
        }
    }

    #[test]
    fn a_token_that_cannot_be_renewed_is_replaced_or_kept_to_its_end() {
        // A batch token from a login: replaced at two thirds.
        let (t0, batch) = lease(90, false, true);
        assert_eq!(batch.step(t0 + secs(60)), Step::Replace);
        // The user's own, not renewable: used until it expires.
        let (t0, given) = lease(90, false, false);
        assert_eq!(given.step(t0 + secs(89)), Step::Use);
        assert_eq!(given.step(t0 + secs(90)), Step::Expired);
        // A root token never expires.
        let (t0, root) = lease(0, false, false);
        assert_eq!(root.step(t0 + secs(10_000_000)), Step::Use);
        assert_eq!(root.expires(), None);
    }

    #[test]
    fn a_renewal_stopped_by_max_ttl_leads_to_a_new_login() {
        let (t0, lease) = lease(300, true, true);
        // Renewed at 200 s for another 300 s: it grew (its next point, with
        // jitter, between 385 and 415 s).
        let renewed = lease.renewed(t0 + secs(200), secs(300));
        assert!(renewed.renewable);
        assert_eq!(renewed.step(t0 + secs(416)), Step::Renew);
        // The next renewal at 400 s gets only 100 s: the token ends at 500 s
        // as before (its max_ttl); it is not renewed again but replaced.
        let capped = renewed.renewed(t0 + secs(400), secs(100));
        assert!(!capped.renewable);
        assert_eq!(capped.step(t0 + secs(472)), Step::Replace);
        assert_eq!(capped.step(t0 + secs(500)), Step::Expired);
    }

    #[test]
    fn a_renewal_answering_no_ttl_does_not_make_a_token_last_forever() {
        let (t0, lease) = lease(300, true, true);
        let renewed = lease.renewed(t0 + secs(200), Duration::ZERO);
        assert_eq!(renewed.expires(), Some(t0 + secs(300)));
        assert!(!renewed.renewable, "it did not grow");
        assert_eq!(renewed.step(t0 + secs(300)), Step::Expired);
    }

    #[test]
    fn a_failed_renewal_holds_the_next_one_off_and_never_the_expiry() {
        let (t0, lease) = lease(300, true, false);
        let held = lease.held(t0 + secs(200));
        assert!(held.renewable, "tried again later, not given up");
        assert_eq!(held.step(t0 + secs(200)), Step::Use);
        assert_eq!(held.step(t0 + secs(201)), Step::Renew, "after at most 1 s");
        let twice = held.held(t0 + secs(201));
        assert_eq!(twice.failures, 2);
        assert!(twice.held_until.unwrap() <= t0 + secs(203));
        assert_eq!(twice.step(t0 + secs(300)), Step::Expired);
        // Near its end: held for at most half of what is left.
        let late = Lease {
            failures: 10,
            ..lease
        }
        .held(t0 + secs(290));
        assert!(late.held_until.unwrap() <= t0 + secs(295), "{late:?}");
    }

    #[test]
    fn failed_logins_back_off_doubling_to_a_minute_with_jitter() {
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (7, 60), (40, 60)] {
            for _ in 0..50 {
                let wait = backoff(failures);
                assert!(
                    wait <= secs(full) && wait >= secs(full) / 2,
                    "{failures}: {wait:?}"
                );
            }
        }
    }
}
