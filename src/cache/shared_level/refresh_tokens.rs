//! Refresh tokens in the shared level (only with `SharedLevel::share_refresh_tokens`): sealed
//! like access tokens under the grant's name, and a fleet lock per grant around each refresh.

use secrecy::SecretString;
use tokio::time::Instant;

use super::entry::{self, Kind};
use super::{Held, Level, POLL_FIRST, POLL_MAX, REFRESH_TOKEN_TTL};
use crate::{CacheKey, ScopeSet};

impl Level {
    /// Writes the grant's refresh token (sealed, kept [`REFRESH_TOKEN_TTL`]).
    pub(crate) async fn write_refresh_token(
        &self,
        key: &CacheKey,
        token: &SecretString,
        granted: &ScopeSet,
    ) {
        let names = self.names(Kind::RefreshToken, &grant_key(key));
        let plaintext = entry::refresh_plaintext(token, granted.as_str());
        let Some(envelope) = self.sealer.seal(&names.context, &plaintext) else {
            return;
        };
        match self
            .connection
            .set(&names.value, &envelope, REFRESH_TOKEN_TTL)
            .await
        {
            Ok(()) => self.counters.l2_write(),
            Err(failure) => self.failed(key, &failure),
        }
    }

    /// The grant's refresh token and scopes as stored in Redis, if any opens.
    pub(crate) async fn read_refresh_token(
        &self,
        key: &CacheKey,
    ) -> Option<(SecretString, ScopeSet)> {
        let names = self.names(Kind::RefreshToken, &grant_key(key));
        let envelope = match self.connection.get_first(names.candidates()).await {
            Ok(found) => found?.1,
            Err(failure) => {
                self.failed(key, &failure);
                return None;
            }
        };
        let stored = self
            .sealer
            .open(&names.context, &envelope)
            .and_then(|plaintext| entry::read_refresh(&plaintext))
            .and_then(|stored| {
                Some((stored.refresh_token, ScopeSet::parse(&stored.granted).ok()?))
            });
        if stored.is_none() {
            self.counters.l2_decrypt_failure();
            tracing::warn!(key = %key, "a shared refresh token did not open; treated as absent");
        }
        stored
    }

    /// Drops the grant's refresh token from Redis (the server said it is spent).
    pub(crate) async fn delete_refresh_token(&self, key: &CacheKey) {
        let names = self.names(Kind::RefreshToken, &grant_key(key));
        if let Err(failure) = self.connection.delete(names.candidates()).await {
            self.failed(key, &failure);
        }
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
