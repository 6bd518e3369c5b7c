//! Per-principal limits: how many calls one principal may have in flight,
//! and how fast it may start them (a token bucket), so that one runaway
//! agent cannot starve the rest of the team.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;

type Keyed = RateLimiter<
    String,
    governor::state::keyed::HashMapStateStore<String>,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// The limits, shared by every session of a gateway.
#[derive(Clone)]
pub struct PrincipalLimits {
    inner: Arc<Inner>,
}

struct Inner {
    concurrency: usize,
    rate: Option<(Keyed, DefaultClock)>,
    in_flight: Mutex<HashMap<String, usize>>,
}

/// Why a principal must wait.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct Busy {
    /// The sentence for the caller.
    pub message: String,
    /// When trying again may work.
    pub retry_after: Duration,
}

/// A call slot of one principal, given back when dropped.
pub struct Permit {
    limits: Arc<Inner>,
    principal: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut in_flight = self.limits.in_flight.lock();
        if let Some(n) = in_flight.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.principal);
            }
        }
    }
}

impl PrincipalLimits {
    /// At most `concurrency` calls in flight per principal (0: no limit),
    /// and `per_minute` calls a minute with bursts of `burst` (0: no limit).
    pub fn new(concurrency: usize, per_minute: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_minute).map(|per_minute| {
            let burst = NonZeroU32::new(burst).unwrap_or(per_minute);
            let clock = DefaultClock::default();
            (
                RateLimiter::new(
                    Quota::per_minute(per_minute).allow_burst(burst),
                    governor::state::keyed::HashMapStateStore::default(),
                    clock.clone(),
                ),
                clock,
            )
        });
        PrincipalLimits {
            inner: Arc::new(Inner {
                concurrency,
                rate,
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A slot for one call of `principal`, or why it must wait.
    pub fn admit(&self, principal: &str) -> Result<Permit, Busy> {
        let inner = &self.inner;
        {
            let mut in_flight = inner.in_flight.lock();
            let n = in_flight.entry(principal.to_owned()).or_default();
            if inner.concurrency > 0 && *n >= inner.concurrency {
                return Err(Busy {
                    message: format!(
                        "busy: {} already has {} calls in flight, its limit \
                         (SOPHIA_PRINCIPAL_CONCURRENCY); retry in 1 s, once one of them has ended",
                        sophia_kit::vetting::shown(principal),
                        inner.concurrency
                    ),
                    retry_after: Duration::from_secs(1),
                });
            }
            *n += 1;
        }
        let permit = Permit {
            limits: inner.clone(),
            principal: principal.to_owned(),
        };
        if let Some((limiter, clock)) = &inner.rate
            && let Err(not_until) = limiter.check_key(&principal.to_owned())
        {
            let wait = not_until.wait_time_from(clock.now());
            // Whole milliseconds, at least one.
            let retry_after = Duration::from_millis((wait.as_millis() as u64).max(1));
            return Err(Busy {
                message: format!(
                    "busy: {} is calling faster than its rate limit \
                     (SOPHIA_PRINCIPAL_RATE_PER_MIN); retry in {} ms",
                    sophia_kit::vetting::shown(principal),
                    retry_after.as_millis()
                ),
                retry_after,
            });
        }
        Ok(permit)
    }

    /// Forgets rate state of principals idle for a while (bounded memory).
    pub fn tidy(&self) {
        if let Some((limiter, _)) = &self.inner.rate {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_over_its_concurrency_waits_and_others_do_not() {
        let limits = PrincipalLimits::new(2, 0, 0);
        let a1 = limits.admit("alice").unwrap();
        let _a2 = limits.admit("alice").unwrap();
        let busy = limits.admit("alice").err().unwrap();
        assert!(
            busy.message.contains("2 calls in flight"),
            "{}",
            busy.message
        );
        assert!(limits.admit("bob").is_ok());
        drop(a1);
        assert!(limits.admit("alice").is_ok());
    }

    #[test]
    fn a_principal_over_its_rate_is_told_when_to_retry() {
        let limits = PrincipalLimits::new(0, 60, 2);
        assert!(limits.admit("alice").is_ok());
        assert!(limits.admit("alice").is_ok());
        let busy = limits.admit("alice").err().unwrap();
        assert!(busy.retry_after > Duration::ZERO && busy.retry_after <= Duration::from_secs(1));
        assert!(busy.message.contains("retry in"), "{}", busy.message);
        assert!(limits.admit("bob").is_ok());
        // The refused call holds no slot.
        assert!(limits.inner.in_flight.lock().get("alice").is_none());
    }
}
