//! Per-key backoff after failed token requests: bounded exponential with jitter, so that an
//! authorization server that is down is not hammered, and so the error can say when the next
//! attempt is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;

use crate::error::Error;
use crate::key::CacheKey;

/// The schedule: the first retry after `base` (times a jitter factor in `[0.5, 1]`), doubling
/// per consecutive failure, never more than `max`. Errors that retrying cannot fix (OAuth
/// errors, `invalid_target`) wait `max` at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BackoffPolicy {
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

struct State {
    failures: u32,
    next_try: Instant,
    last: Error,
}

#[derive(Default)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    states: Mutex<HashMap<CacheKey, State>>,
}

impl Backoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            states: Mutex::default(),
        }
    }

    /// `Err` while the key is backing off.
    pub(crate) fn check(&self, key: &CacheKey, now: Instant) -> Result<(), Error> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        match states.get(key) {
            Some(state) if now < state.next_try => Err(Error::BackingOff {
                key: key.to_string(),
                failures: state.failures,
                retry_in: state.next_try - now,
                last: Box::new(state.last.clone()),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn failed(&self, key: &CacheKey, error: &Error, now: Instant) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let failures = states.get(key).map_or(0, |s| s.failures).saturating_add(1);
        let delay = if error.is_transient() {
            let exponent = (failures - 1).min(16);
            let nominal = self
                .policy
                .base
                .saturating_mul(1 << exponent)
                .min(self.policy.max);
            nominal.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
        } else {
            self.policy.max
        };
        let delay = delay.max(
            error
                .retry_after()
                .unwrap_or_default()
                .min(self.policy.max * 10),
        );
        states.insert(
            key.clone(),
            State {
                failures,
                next_try: now + delay,
                last: error.clone(),
            },
        );
    }

    pub(crate) fn succeeded(&self, key: &CacheKey) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.remove(key);
    }
}
