//! Refresh tokens in the shared level (only with `SharedLevel::share_refresh_tokens`): sealed
//! like access tokens under the grant's name, and a fleet lock per grant around each refresh.
//!
//! Every write of a grant's refresh token moves its generation (see [`super::generation`]):
//! a rotated refresh token, written back to Redis, no longer opens as current, so it is not
//! presented again (which, with rotation, would make the server revoke the grant).

use secrecy::SecretString;
use tokio::time::Instant;

use super::entry::{self, Kind};
use super::generation::{self, Generation, Opened};
use super::{Held, Level, POLL_FIRST, POLL_MAX, REFRESH_TOKEN_TTL};
use crate::key::CacheKey;
use crate::scope::ScopeSet;

/// What the shared level says about a grant's refresh token.
pub(crate) enum SharedRefresh {
    /// The grant's newest refresh token, and the scopes of the original grant.
    Newest(SecretString, ScopeSet),
    /// Redis holds a newer generation than this process's refresh token, and no usable
    /// value (one superseded since and written back, or tampered with): this process's own
    /// refresh token is spent, or may be; it must not be presented.
    Superseded,
    /// Nothing to go by (no entry, Redis did not answer, or this process's refresh token is
    /// the newest): the process goes on with its own.
    Nothing,
}

impl Level {
    /// Writes the grant's refresh token (sealed, kept [`REFRESH_TOKEN_TTL`]) under a new
    /// generation, which this process then holds as the newest.
    pub(crate) async fn write_refresh_token(
        &self,
        key: &CacheKey,
        token: &SecretString,
        granted: &ScopeSet,
    ) {
        let names = self.names(Kind::RefreshToken, &grant_key(key));
        let plaintext = entry::refresh_plaintext(token, granted.as_str());
        for _ in 0..super::CAS_ROUNDS {
            match self
                .write_value(&names, &plaintext, REFRESH_TOKEN_TTL, true)
                .await
            {
                Ok(Some(generation)) => {
                    self.counters.l2_write();
                    return self.hold_refresh_generation(&names, Some(generation));
                }
                // Another process wrote meanwhile (outside the grant's lock: a new grant).
                Ok(None) => {}
                Err(failure) => return self.failed(key, &failure),
            }
        }
        tracing::warn!(key = %key, "a shared refresh token kept changing; not written");
    }

    /// The grant's refresh token as stored in Redis, checked against its generation record.
    pub(crate) async fn read_refresh_token(&self, key: &CacheKey) -> SharedRefresh {
        let names = self.names(Kind::RefreshToken, &grant_key(key));
        let (place, value, record) = match self.read_first(&names).await {
            Ok(Some(read)) => read,
            Ok(None) => return SharedRefresh::Nothing,
            Err(failure) => {
                self.failed(key, &failure);
                return SharedRefresh::Nothing;
            }
        };
        // No record: nothing tells which refresh token is the newest; this process's own is
        // as good a guess as any (and the value is not used).
        let Some(current) = record
            .as_deref()
            .and_then(|record| generation::open_record(&self.sealer, &names, record))
        else {
            tracing::warn!(
                key = %key,
                "a shared refresh token has no generation record that opens; not used"
            );
            return SharedRefresh::Nothing;
        };
        // Older than a record this process saw: written back with its value (a restored copy
        // of Redis). Whatever this process holds is newer.
        if !self.floors.admit(&place.generation, current) {
            self.counters.l2_decrypt_failure();
            tracing::warn!(
                key = %key,
                "a shared refresh token and its generation record older than one this process \
                 saw were written back to Redis; not used"
            );
            return SharedRefresh::Nothing;
        }
        let opened = match generation::open_value(&self.sealer, &names, current, &value) {
            Opened::Current(plaintext) => entry::read_refresh(&plaintext).and_then(|stored| {
                Some((stored.refresh_token, ScopeSet::parse(&stored.granted).ok()?))
            }),
            Opened::Superseded => {
                tracing::warn!(
                    key = %key,
                    "a refresh token rotated since was written back to Redis (someone with \
                     write access to Redis replayed it); not used"
                );
                None
            }
            Opened::Unopenable => {
                tracing::warn!(key = %key, "a shared refresh token did not open; not used");
                None
            }
        };
        if let Some((token, granted)) = opened {
            self.hold_refresh_generation(&names, Some(current));
            return SharedRefresh::Newest(token, granted);
        }
        self.counters.l2_decrypt_failure();
        if self.holds_refresh_generation(&names, current) {
            SharedRefresh::Nothing
        } else {
            SharedRefresh::Superseded
        }
    }

    /// Drops the grant's refresh token from Redis (the server said it is spent): its
    /// generation moves on, so the spent value, written back, is not used either.
    pub(crate) async fn delete_refresh_token(&self, key: &CacheKey) {
        let names = self.names(Kind::RefreshToken, &grant_key(key));
        let newest = self
            .supersede(key, &names, REFRESH_TOKEN_TTL, |_| false)
            .await;
        self.hold_refresh_generation(&names, newest);
    }

    /// Remembers `generation` as the one of the refresh token this process holds for the
    /// grant of `names` (none: forgets it).
    fn hold_refresh_generation(&self, names: &entry::Names, generation: Option<Generation>) {
        if let Some(place) = names.current() {
            self.refresh_generations.set(&place.value, generation);
        }
    }

    fn holds_refresh_generation(&self, names: &entry::Names, generation: Generation) -> bool {
        names
            .current()
            .is_some_and(|place| self.refresh_generations.get(&place.value) == Some(generation))
    }

    /// Takes the grant's fleet lock for a refresh, waiting a bounded time for another
    /// process's refresh to end. `None` if Redis does not answer or the wait ran out: the
    /// refresh then goes on as without a shared level.
    pub(crate) async fn lock_refresh(&self, key: &CacheKey) -> Option<RefreshLock<'_>> {
        let names = self.names(Kind::RefreshToken, &grant_key(key));
        let deadline = Instant::now() + self.wait_for_entry;
        let mut pause = POLL_FIRST;
        let mut waited = false;
        loop {
            match self.try_lock(&names).await {
                Ok(Some(held)) => return Some(RefreshLock { level: self, held }),
                Ok(None) if Instant::now() < deadline => {
                    if !waited {
                        waited = true;
                        self.counters.l2_lock_wait();
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
                Ok(None) => {
                    tracing::warn!(key = %key, "another process held the refresh lock too long; refreshing without it");
                    return None;
                }
                Err(()) => return None,
            }
        }
    }
}

/// The fleet lock of a grant's refresh, released with [`release`](Self::release).
pub(crate) struct RefreshLock<'a> {
    level: &'a Level,
    held: Held,
}

impl RefreshLock<'_> {
    pub(crate) async fn release(self) {
        self.level.release(self.held).await;
    }
}

/// The key a refresh token is shared under: the grant's (issuer, client, account, resource),
/// without the scopes, as one refresh token serves every scope set of its grant.
fn grant_key(key: &CacheKey) -> CacheKey {
    key.with_scopes(&ScopeSet::empty())
}
