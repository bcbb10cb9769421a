//! Each resource's current token: the token the store holds under the resource's default key,
//! read by a hit with one atomic load instead of a store lookup. It is set only where the store
//! is written ([`Shared::keep`]) and cleared wherever a token leaves the store (an eviction, an
//! invalidation, a refusal), so a hit never finds one the store has let go of.

use std::sync::Arc;

use tokio::time::Instant;

use url::Url;

use super::{Acquire, BearerToken, ResourceEntry, Shared};
use crate::key::CacheKey;
use crate::token::CachedToken;

impl Shared {
    /// `entry`'s current token, if it is fresh: a hit.
    pub(super) fn current(
        self: &Arc<Self>,
        entry: &Arc<ResourceEntry>,
        now: Instant,
    ) -> Option<Arc<CachedToken>> {
        let token = entry.current.load_full()?;
        if !token.is_fresh(now) {
            return None;
        }
        self.hit(entry, &entry.default_key, &Acquire::Configured, &token, now);
        Some(token)
    }

    /// A hit that needs no routing: `url` repeats an allowed decision for its resource's
    /// current token (see `route::memo`), and that token is fresh.
    pub(super) fn remembered(self: &Arc<Self>, url: &Url, now: Instant) -> Option<BearerToken> {
        self.outlet.routes.current_allowed(url, |entry, token| {
            if !token.is_fresh(now) {
                return None;
            }
            self.hit(entry, &entry.default_key, &Acquire::Configured, &token, now);
            Some(self.bearer(token))
        })
    }

    /// Counts a hit on `token` and marks it used, so that its refresh runs ahead of expiry
    /// (`ahead`). Only if no task serves the armed tokens (or it fell behind) does a hit in
    /// the refresh window start the refresh itself.
    pub(super) fn hit(
        self: &Arc<Self>,
        entry: &Arc<ResourceEntry>,
        key: &CacheKey,
        acquire: &Acquire,
        token: &CachedToken,
        now: Instant,
    ) {
        self.counters.hit();
        token.mark_used();
        if token.wants_refresh(now)
            && !self.ahead.serves(now)
            && self.backoff.check(key, now).is_ok()
        {
            // This caller is served now; one fetch starts in the background.
            let _started = self.flights.start(self, entry, key, acquire, true);
        }
    }

    /// Stores `token`, makes it its entry's current token if it is for the entry's default
    /// key, and arms its refresh (obtained as `acquire` says). Every write to the store goes
    /// through here.
    pub(crate) async fn keep(&self, token: &Arc<CachedToken>, acquire: &Acquire) {
        self.store.insert(token.clone());
        self.ahead.arm(token, acquire);
        if let Some(entry) = self.outlet.routes.entry(&token.resource)
            && token.key == entry.default_key
        {
            entry.keep(token);
            // An eviction of this token between the two writes found no current token to
            // clear: ask the store again, so that an entry never keeps a token the store has
            // let go of (one that a 401 invalidated, say).
            if !self.store.holds(token) {
                entry.forget(token);
            }
        }
    }
}
