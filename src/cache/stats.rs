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
    /// Fetches answered by the shared level (feature `redis`): a token another process
    /// stored, opened and fresh, taken instead of asking the authorization server. Zero
    /// without a shared level.
    pub l2_hits: u64,
    /// Fetches that looked in the shared level and were not answered by it (nothing there, a
    /// stale or unopenable entry, Redis unreachable), so the token came from the
    /// authorization server. `l2_hits + l2_misses` is the number of fetches that went
    /// through the shared level.
    pub l2_misses: u64,
    /// Fetches that found another process holding the fleet lock for their key and waited
    /// for its token to appear in the shared level (and shared refreshes that waited for
    /// another process's refresh of the same grant).
    pub l2_lock_waits: u64,
    /// Shared-level values that failed to open (tampered with, copied from another key's
    /// entry, or malformed), or that were invalidated or rotated since and written back to
    /// Redis. Each is treated as absent. Entries of a sealing key no longer
    /// listed are not found at all (their names derive from that key), so they count as
    /// misses, not here.
    pub l2_decrypt_failures: u64,
    /// Redis operations that failed or timed out. Each degrades to the in-memory behaviour;
    /// none fails a request. For a second after a timeout or a lost connection, the shared
    /// level is not asked (and those skipped calls are not counted).
    pub l2_errors: u64,
    /// Tokens written to the shared level.
    pub l2_writes: u64,
    /// Token requests that asked for a DPoP-bound token (RFC 9449, for a resource named with
    /// `use_dpop_for`) and were answered with a bearer token, which was kept as one (a
    /// resource that requires DPoP refuses such an answer instead, as an error).
    pub dpop_declined: u64,
    /// Resources moved to another authorization server because their protected resource
    /// metadata stopped listing the one they used (RFC 9728 §5.2): each time, a client was
    /// obtained at the new server and the old server's tokens and refresh tokens for the
    /// resource were dropped (a `warn` log line names the resource and both servers).
    pub authorization_server_moves: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    refreshes: AtomicU64,
    refusals: AtomicU64,
    errors: AtomicU64,
    l2_hits: AtomicU64,
    l2_misses: AtomicU64,
    l2_lock_waits: AtomicU64,
    l2_decrypt_failures: AtomicU64,
    l2_errors: AtomicU64,
    l2_writes: AtomicU64,
    dpop_declined: AtomicU64,
    authorization_server_moves: AtomicU64,
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
    counter!(dpop_declined, dpop_declined);
    counter!(authorization_server_move, authorization_server_moves);
}

/// The shared level's counters, counted only where there is one.
#[cfg(feature = "redis")]
impl Counters {
    counter!(l2_hit, l2_hits);
    counter!(l2_miss, l2_misses);
    counter!(l2_lock_wait, l2_lock_waits);
    counter!(l2_decrypt_failure, l2_decrypt_failures);
    counter!(l2_error, l2_errors);
    counter!(l2_write, l2_writes);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            fetches: self.fetches.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            refusals: self.refusals.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            l2_hits: self.l2_hits.load(Ordering::Relaxed),
            l2_misses: self.l2_misses.load(Ordering::Relaxed),
            l2_lock_waits: self.l2_lock_waits.load(Ordering::Relaxed),
            l2_decrypt_failures: self.l2_decrypt_failures.load(Ordering::Relaxed),
            l2_errors: self.l2_errors.load(Ordering::Relaxed),
            l2_writes: self.l2_writes.load(Ordering::Relaxed),
            dpop_declined: self.dpop_declined.load(Ordering::Relaxed),
            authorization_server_moves: self.authorization_server_moves.load(Ordering::Relaxed),
        }
    }
}
