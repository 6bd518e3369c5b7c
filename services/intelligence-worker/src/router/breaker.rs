//! A provider's health as the router keeps it: a circuit breaker over its
//! consecutive failures, a cool-down after a 429, and the requests
//! outstanding at it.
//!
//! A call at a provider holds a [`Permit`]. A permit that is dropped
//! without an outcome (the call was cancelled, or panicked) gives its
//! half-open trial back, so a breaker is never left waiting for a trial
//! that will not report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::RoutingConfig;
use crate::provider::Provider;

/// A circuit breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; counts consecutive failures.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// One trial call decides whether to close or open again.
    HalfOpen,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

/// One provider and what the router knows of its health.
pub(super) struct ProviderState {
    pub(super) provider: Provider,
    outstanding: AtomicUsize,
    breaker: Mutex<Breaker>,
    cooldown_until: Mutex<Option<Instant>>,
}

/// The longest a breaker stays open before a trial, whatever
/// `breaker_open_ms` says: a number the clock cannot hold never panics.
const MAX_OPEN: Duration = Duration::from_secs(86_400);

/// `now + d`, or `None` where the clock cannot go that far.
fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

impl ProviderState {
    pub(super) fn new(provider: Provider) -> Self {
        Self {
            provider,
            outstanding: AtomicUsize::new(0),
            breaker: Mutex::new(Breaker::default()),
            cooldown_until: Mutex::new(None),
        }
    }

    pub(super) fn state(&self) -> BreakerState {
        match self.breaker.lock().open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Requests outstanding here now.
    pub(super) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Outstanding requests per unit of weight.
    pub(super) fn load(&self) -> f64 {
        self.outstanding() as f64 / self.provider.config.weight as f64
    }

    /// A permit to call this provider now, if it may be called; reserves
    /// the half-open trial.
    pub(super) fn try_acquire(&self) -> Option<Permit<'_>> {
        if let Some(t) = *self.cooldown_until.lock()
            && Instant::now() < t
        {
            return None;
        }
        let mut b = self.breaker.lock();
        let trial = match b.open_until {
            None => false,
            Some(t) if Instant::now() < t => return None,
            Some(_) if b.trial_in_flight => return None,
            Some(_) => {
                b.trial_in_flight = true;
                true
            }
        };
        Some(Permit {
            state: self,
            trial,
            settled: false,
        })
    }

    /// Holds calls back for `d` (a 429's `Retry-After`); returns until when.
    /// The caller bounds `d`; a wait the clock cannot hold is not kept.
    pub(super) fn cool_down(&self, d: Duration) -> Option<Instant> {
        let until = after(d)?;
        *self.cooldown_until.lock() = Some(until);
        Some(until)
    }

    fn succeeded(&self) {
        let mut b = self.breaker.lock();
        if b.open_until.is_some() {
            tracing::info!(provider = %self.provider.config.name, "circuit breaker closed");
        }
        *b = Breaker::default();
    }

    fn failed(&self, routing: &RoutingConfig) {
        let mut b = self.breaker.lock();
        b.failures = b.failures.saturating_add(1);
        let reopen = b.trial_in_flight || b.failures >= routing.breaker_failures;
        b.trial_in_flight = false;
        if reopen {
            b.open_until = after(Duration::from_millis(routing.breaker_open_ms).min(MAX_OPEN));
            tracing::warn!(provider = %self.provider.config.name, failures = b.failures, "circuit breaker open");
        }
    }

    fn release_trial(&self) {
        self.breaker.lock().trial_in_flight = false;
    }
}

/// A call in flight at a provider: counted as outstanding while alive, and
/// settled with the call's outcome.
pub(super) struct Permit<'a> {
    state: &'a ProviderState,
    trial: bool,
    settled: bool,
}

impl Permit<'_> {
    /// Counts the call as outstanding until the returned guard drops.
    pub(super) fn outstanding(&self) -> Outstanding<'_> {
        self.state.outstanding.fetch_add(1, Ordering::SeqCst);
        Outstanding(&self.state.outstanding)
    }

    /// The call worked: the breaker closes.
    pub(super) fn succeeded(mut self) {
        self.settled = true;
        self.state.succeeded();
    }

    /// The call failed in a way that counts against the provider.
    pub(super) fn failed(mut self, routing: &RoutingConfig) {
        self.settled = true;
        self.state.failed(routing);
    }

    /// The call failed in a way that says nothing of the provider (the
    /// request itself was refused): the trial, if this was one, is given back.
    pub(super) fn released(self) {
        // Dropping does it.
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled && self.trial {
            self.state.release_trial();
        }
    }
}

/// Counts a request outstanding at a provider while alive.
pub(super) struct Outstanding<'a>(&'a AtomicUsize);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;

    fn state() -> ProviderState {
        ProviderState::new(Provider::new(ProviderConfig {
            name: "p".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key_env: None,
            models: vec![],
            weight: 1,
            timeout_ms: 1_000,
            discover: false,
        }))
    }

    fn half_open(s: &ProviderState) {
        let routing = RoutingConfig {
            breaker_failures: 1,
            breaker_open_ms: 0,
            ..RoutingConfig::default()
        };
        s.try_acquire().unwrap().failed(&routing);
        assert_eq!(s.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn a_trial_dropped_without_an_outcome_is_given_back() {
        let s = state();
        half_open(&s);
        let trial = s.try_acquire().expect("the trial");
        assert!(s.try_acquire().is_none(), "one trial at a time");
        drop(trial); // cancelled mid-call, or a panic unwound through it
        assert!(s.try_acquire().is_some(), "the next call is the trial");
    }

    #[test]
    fn a_refused_request_gives_the_trial_back_and_a_success_closes() {
        let s = state();
        half_open(&s);
        s.try_acquire().unwrap().released();
        s.try_acquire().unwrap().succeeded();
        assert_eq!(s.state(), BreakerState::Closed);
    }

    #[test]
    fn a_cool_down_the_clock_cannot_hold_is_not_kept() {
        let s = state();
        assert_eq!(s.cool_down(Duration::MAX), None);
        assert!(s.try_acquire().is_some(), "not held back forever");
        assert!(s.cool_down(Duration::from_secs(3600)).is_some());
        assert!(s.try_acquire().is_none());
    }

    #[test]
    fn outstanding_counts_while_the_guard_lives() {
        let s = state();
        let permit = s.try_acquire().unwrap();
        let guard = permit.outstanding();
        assert_eq!(s.outstanding(), 1);
        drop(guard);
        assert_eq!(s.outstanding(), 0);
    }
}
