//! Counters, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the cache's counters since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Hand-outs served from the cache (a fresh token was stored).
    pub hits: u64,
    /// Hand-outs that found no fresh token and waited for a fetch (their own or a shared one).
    pub misses: u64,
    /// Token requests sent to authorization servers (every grant).
    pub fetches: u64,
    /// Of those, requests that renewed a token ahead of its expiry or through a refresh token.
    pub refreshes: u64,
    /// Hand-outs refused by the audience decision.
    pub refusals: u64,
    /// Token requests that failed, and misses answered with an error while backing off.
    pub errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    refreshes: AtomicU64,
    refusals: AtomicU64,
    errors: AtomicU64,
}

macro_rules! counter {
    ($name:ident, $field:ident) => {
        pub(crate) fn $name(&self) {
            self.$field.fetch_add(1, Ordering::Relaxed);
        }
    };
}

impl Counters {
    counter!(hit, hits);
    counter!(miss, misses);
    counter!(fetch, fetches);
    counter!(refresh, refreshes);
    counter!(refusal, refusals);
    counter!(error, errors);

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            fetches: self.fetches.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            refusals: self.refusals.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}
