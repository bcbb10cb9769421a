//! Decisions remembered by the URL's text, for the next request to the same URL.
//!
//! [`decide`](super::decide) is a function of three things only: the request URL's text, the
//! token (whose resource, issuer and `aud` never change once it is received) and the
//! configured resources (each entry's resource, authorization server and audience policy,
//! which an entry never changes: a change is a new entry in a new [`Index`](super::index)).
//! So an allowed decision is the answer for as long as those three are the same, and a
//! request that repeats them can take it instead of routing and deciding again:
//!
//! - the memo belongs to one version of the configured resources: each index has its own,
//!   made empty, so a resource added or moved leaves every remembered decision behind;
//! - a slot is found by a hash of the URL's text, and used only if it holds that very text
//!   (a collision is a miss, never another URL's decision);
//! - it names the token by its allocation, held by a [`Weak`] so that no other token can be
//!   allocated there while the slot names it, and keeps no token alive (a token the store lets
//!   go of is dropped, and its secret with it, as before).
//!
//! Only allowed decisions are remembered; a refusal is decided again every time (and counted
//! every time). A slot holds one decision: a newer one for a resource's current token replaces
//! it, a newer one for another token only when the slot is empty or its token is gone (see
//! [`Memo::remember`]). The table has a fixed size, so URLs a server steers the client to
//! cannot grow it.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use url::Url;

use super::ResourceEntry;
use crate::token::CachedToken;

/// The fewest slots an index's memo has, and the most.
const MIN_SLOTS: usize = 256;
const MAX_SLOTS: usize = 16_384;

/// Allowed decisions by URL, for one version of the configured resources.
pub(super) struct Memo {
    slots: Box<[ArcSwapOption<Allowed>]>,
}

/// An allowed decision: `token` may go to `url`, whose owner is `entry`.
pub(super) struct Allowed {
    url: Box<str>,
    pub(super) entry: Arc<ResourceEntry>,
    token: Weak<CachedToken>,
}

impl Allowed {
    /// Whether the decision is for `token`.
    pub(super) fn is_for(&self, token: &Arc<CachedToken>) -> bool {
        std::ptr::eq(self.token.as_ptr(), Arc::as_ptr(token))
    }
}

impl Memo {
    /// An empty memo with room for the URLs of about `resources` resources.
    pub(super) fn for_resources(resources: usize) -> Self {
        let slots = resources
            .saturating_mul(4)
            .clamp(MIN_SLOTS, MAX_SLOTS)
            .next_power_of_two();
        Self {
            slots: (0..slots).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// The allowed decision remembered for exactly `url`'s text, if any, with `then` applied
    /// to it while the slot is held.
    pub(super) fn with<R>(&self, url: &Url, then: impl FnOnce(&Allowed) -> Option<R>) -> Option<R> {
        let slot = self.slot(url.as_str())?;
        let allowed = slot.load();
        let allowed = allowed.as_deref()?;
        if *allowed.url != *url.as_str() {
            return None;
        }
        then(allowed)
    }

    /// Remembers that `token` was allowed on `url`, owned by `entry`. The decision for the
    /// entry's current token (what `token_for` hits read) takes the slot unless it holds that
    /// very decision; any other token's (another account's, other scopes') only takes an empty
    /// slot or one whose token is gone, so that callers alternating between such tokens on one
    /// URL do not replace each other's decision (and allocate) on every request.
    pub(super) fn remember(&self, url: &Url, entry: &Arc<ResourceEntry>, token: &Arc<CachedToken>) {
        let Some(slot) = self.slot(url.as_str()) else {
            return;
        };
        let held = slot.load();
        if let Some(held) = held.as_deref() {
            if *held.url == *url.as_str() && held.is_for(token) {
                return;
            }
            let current = entry
                .current
                .load()
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, token));
            if !current && held.token.strong_count() > 0 {
                return;
            }
        }
        slot.store(Some(Arc::new(Allowed {
            url: url.as_str().into(),
            entry: entry.clone(),
            token: Arc::downgrade(token),
        })));
    }

    fn slot(&self, url: &str) -> Option<&ArcSwapOption<Allowed>> {
        self.slots.get(self.slot_of_text(url)?)
    }

    fn slot_of_text(&self, url: &str) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let hash = super::index::hash(url.as_bytes());
        // The high bits of a multiplicative hash are its best mixed.
        Some((hash >> 32) as usize & mask)
    }

    /// Which slot `url` takes.
    #[cfg(test)]
    pub(super) fn slot_of(&self, url: &Url) -> Option<usize> {
        self.slot_of_text(url.as_str())
    }
}

impl Default for Memo {
    /// A memo with no slots: it remembers nothing (the index before any resource is added).
    fn default() -> Self {
        Self {
            slots: Box::default(),
        }
    }
}
