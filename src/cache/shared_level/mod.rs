//! The shared level (feature `redis`): a second level on Redis behind the in-memory cache, so
//! that the processes of a fleet share tokens and make one token request per key between them.
//!
//! On an in-memory miss (inside the process's own single-flight, so one Redis read per process
//! per key), the flight reads the key's entry; a fresh one is stored in memory and handed out
//! (the audience decision runs on it as on any token). Otherwise the flight takes the key's
//! fleet lock (`SET NX PX` with a random token, in a script), reads once more, asks the authorization
//! server, writes the sealed token and releases the lock (compare-and-delete). A flight that
//! finds the lock taken polls for the entry for a bounded time, then fetches itself. Every
//! Redis call is bounded by a timeout; an error degrades to the in-memory behaviour.

mod connection;
mod entry;
mod refresh_tokens;
mod seal;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::stats::Counters;
use super::{Acquire, ResourceEntry, Shared};
use crate::token::CachedToken;
use crate::{CacheKey, Error, ScopeSet};
use connection::{Connection, Failure};
use entry::{Kind, Names};

pub use seal::SealingKey;
pub use settings::SharedLevel;

/// How long a shared refresh token is kept in Redis without being used: refresh tokens carry
/// no expiry the client can read.
const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The first and the longest pause between two reads while another process holds the lock.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(100);

/// The running shared level of one cache.
pub(crate) struct Level {
    connection: Connection,
    sealer: seal::Sealer,
    namespace: String,
    lock_ttl: Duration,
    wait_for_entry: Duration,
    share_refresh_tokens: bool,
    counters: Arc<Counters>,
}

/// What a read of the shared level found.
enum Found {
    /// A token that opened, for this key, fresh (and, for a refresh ahead, out of its window).
    Usable(Arc<CachedToken>),
    /// Nothing usable: no entry, a stale one, or one that did not open.
    Nothing,
    /// Redis did not answer: go on in memory.
    Unavailable,
}

/// A fleet lock this process holds.
struct Held {
    name: String,
    token: String,
}

impl Level {
    /// The Redis names and sealing context of `key`'s entry of `kind`.
    fn names(&self, kind: Kind, key: &CacheKey) -> Names {
        Names::new(&self.namespace, kind, key, &self.sealer)
    }

    pub(crate) fn shares_refresh_tokens(&self) -> bool {
        self.share_refresh_tokens
    }

    /// The fetch for `key` through the shared level (see the module's documentation).
    pub(crate) async fn fetch(
        &self,
        shared: &Arc<Shared>,
        entry: &ResourceEntry,
        key: &CacheKey,
        acquire: &Acquire,
        ahead: bool,
    ) -> Result<Arc<CachedToken>, Error> {
        let names = self.names(Kind::AccessToken, key);
        let mut seen = None;
        match self
            .read(shared, entry, key, &names, ahead, &mut seen)
            .await
        {
            Found::Usable(token) => return Ok(self.take(shared, token).await),
            Found::Unavailable => {
                return self.ask_server(shared, entry, key, acquire, ahead).await;
            }
            Found::Nothing => {}
        }
        match self.try_lock(&names).await {
            Ok(Some(held)) => {
                return self
                    .fetch_locked(shared, entry, key, acquire, ahead, &names, held, seen)
                    .await;
            }
            Ok(None) => {}
            Err(()) => return self.ask_server(shared, entry, key, acquire, ahead).await,
        }
        // Another process is fetching: wait for its token, a bounded time.
        self.counters.l2_lock_wait();
        let deadline = Instant::now() + self.wait_for_entry;
        let mut pause = POLL_FIRST;
        while Instant::now() < deadline {
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(POLL_MAX);
            match self
                .read(shared, entry, key, &names, ahead, &mut seen)
                .await
            {
                Found::Usable(token) => return Ok(self.take(shared, token).await),
                Found::Unavailable => break,
                Found::Nothing => {}
            }
            // Released with nothing written (its request failed, or it crashed and the lock
            // expired): this process is the one to ask now.
            match self.try_lock(&names).await {
                Ok(Some(held)) => {
                    return self
                        .fetch_locked(shared, entry, key, acquire, ahead, &names, held, seen)
                        .await;
                }
                Ok(None) => {}
                Err(()) => break,
            }
        }
        self.ask_server(shared, entry, key, acquire, ahead).await
    }

    /// With the key's lock held: read once more (another process may have just written),
    /// else fetch (which writes the token), then release.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_locked(
        &self,
        shared: &Arc<Shared>,
        entry: &ResourceEntry,
        key: &CacheKey,
        acquire: &Acquire,
        ahead: bool,
        names: &Names,
        held: Held,
        mut seen: Option<Vec<u8>>,
    ) -> Result<Arc<CachedToken>, Error> {
        let result = match self.read(shared, entry, key, names, ahead, &mut seen).await {
            Found::Usable(token) => Ok(self.take(shared, token).await),
            Found::Nothing | Found::Unavailable => {
                self.ask_server(shared, entry, key, acquire, ahead).await
            }
        };
        self.release(held).await;
        result
    }

    /// A token from the authorization server (stored in memory and written here by
    /// `store_response`).
    async fn ask_server(
        &self,
        shared: &Arc<Shared>,
        entry: &ResourceEntry,
        key: &CacheKey,
        acquire: &Acquire,
        ahead: bool,
    ) -> Result<Arc<CachedToken>, Error> {
        self.counters.l2_miss();
        shared.fetch_from_server(entry, key, acquire, ahead).await
    }

    /// Keeps a token read from the shared level in memory.
    async fn take(&self, shared: &Shared, token: Arc<CachedToken>) -> Arc<CachedToken> {
        self.counters.l2_hit();
        shared.backoff.succeeded(&token.key);
        shared.store.insert(token.key.clone(), token.clone()).await;
        tracing::debug!(key = %token.key, "took a token from the shared level");
        token
    }

    /// Reads the key's entry. `seen` is the value this flight read last: the same value again
    /// is no news (and a value that did not open is counted once).
    async fn read(
        &self,
        shared: &Shared,
        entry: &ResourceEntry,
        key: &CacheKey,
        names: &Names,
        ahead: bool,
        seen: &mut Option<Vec<u8>>,
    ) -> Found {
        let envelope = match self.connection.get_first(names.candidates()).await {
            Ok(Some((_, envelope))) => envelope,
            Ok(None) => return Found::Nothing,
            Err(failure) => {
                self.failed(key, &failure);
                return Found::Unavailable;
            }
        };
        if seen.as_ref() == Some(&envelope) {
            return Found::Nothing;
        }
        let envelope = &*seen.insert(envelope);
        let Some(token) = self.open_access(shared, entry, key, names, envelope) else {
            self.counters.l2_decrypt_failure();
            tracing::warn!(
                key = %key,
                "a shared-level value did not open (tampered with, copied from another key's \
                 entry, or malformed); treated as absent"
            );
            return Found::Nothing;
        };
        let now = Instant::now();
        let usable = token.is_fresh(now) && !(ahead && token.wants_refresh(now));
        if usable {
            Found::Usable(Arc::new(token))
        } else {
            Found::Nothing
        }
    }

    /// Opens an access-token envelope read for `key` and rebuilds the token: its schedule by
    /// this process's [`Timing`](crate::token::Timing), its audience read from the token.
    fn open_access(
        &self,
        shared: &Shared,
        entry: &ResourceEntry,
        key: &CacheKey,
        names: &Names,
        envelope: &[u8],
    ) -> Option<CachedToken> {
        let plaintext = self.sealer.open(&names.context, envelope)?;
        let stored = entry::read_access(&plaintext)?;
        // The associated data already binds the value to the key; a second net.
        if stored.resource != key.resource().key() || stored.requested != key.scopes().as_str() {
            return None;
        }
        let scopes = ScopeSet::parse(&stored.granted).ok()?;
        let (received_at, lifetime) = stored.received();
        let audience = super::flight::audience_of(entry, &stored.access_token);
        Some(CachedToken {
            access_token: stored.access_token,
            key: key.clone(),
            resource: entry.config.resource.clone(),
            scopes,
            audience,
            schedule: shared.timing.schedule(received_at, Some(lifetime)),
        })
    }

    /// Writes a token just received, sealed, with a TTL of its remaining usable lifetime.
    pub(crate) async fn write(&self, token: &CachedToken) {
        let ttl = token
            .schedule
            .expires_at
            .saturating_duration_since(Instant::now());
        if ttl.is_zero() {
            return;
        }
        let names = self.names(Kind::AccessToken, &token.key);
        let plaintext = entry::access_plaintext(token);
        let Some(envelope) = self.sealer.seal(&names.context, &plaintext) else {
            return;
        };
        match self.connection.set(&names.value, &envelope, ttl).await {
            Ok(()) => self.counters.l2_write(),
            Err(failure) => self.failed(&token.key, &failure),
        }
    }

    /// Removes `token` from the shared level if it is the one stored there (it was evicted:
    /// rejected by a resource server, or refused by the audience decision). A newer token
    /// written by another process stays.
    pub(crate) async fn forget(&self, shared: &Shared, entry: &ResourceEntry, token: &CachedToken) {
        use secrecy::ExposeSecret as _;
        let names = self.names(Kind::AccessToken, &token.key);
        let (name, envelope) = match self.connection.get_first(names.candidates()).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(failure) => return self.failed(&token.key, &failure),
        };
        let same = self
            .open_access(shared, entry, &token.key, &names, &envelope)
            .is_some_and(|stored| {
                stored.access_token.expose_secret() == token.access_token.expose_secret()
            });
        if same && let Err(failure) = self.connection.delete_if(name, &envelope).await {
            self.failed(&token.key, &failure);
        }
    }

    /// `Ok(Some)` with the lock, `Ok(None)` if another process holds it, `Err` if Redis did not
    /// answer (counted and logged).
    async fn try_lock(&self, names: &Names) -> Result<Option<Held>, ()> {
        let token = format!("{:032x}", rand::random::<u128>());
        match self
            .connection
            .lock(&names.lock, &token, self.lock_ttl)
            .await
        {
            Ok(true) => Ok(Some(Held {
                name: names.lock.clone(),
                token,
            })),
            Ok(false) => Ok(None),
            Err(failure) => {
                if !matches!(failure, Failure::Paused) {
                    self.counters.l2_error();
                    tracing::warn!("shared level: {failure}; going on in memory");
                }
                Err(())
            }
        }
    }

    async fn release(&self, held: Held) {
        if let Err(failure) = self
            .connection
            .delete_if(&held.name, held.token.as_bytes())
            .await
        {
            if !matches!(failure, Failure::Paused) {
                self.counters.l2_error();
            }
            tracing::warn!("shared level: {failure}; the lock will expire by itself");
        }
    }

    fn failed(&self, key: &CacheKey, failure: &Failure) {
        if matches!(failure, Failure::Paused) {
            tracing::debug!(key = %key, "shared level: {failure}; going on in memory");
            return;
        }
        self.counters.l2_error();
        tracing::warn!(key = %key, "shared level: {failure}; going on in memory");
    }
}

impl crate::TokenCache {
    /// Not a stable API: for `benches/shared_level.rs`. The shared level's read of
    /// `resource`'s default-scope token alone, bypassing the in-memory level and storing
    /// nothing: the entry's name (HMAC-SHA-256 of the key), one `GET`, opening the envelope,
    /// parsing and checking the payload, the schedule, reading `aud`. `None` without a shared
    /// level or a usable entry.
    #[doc(hidden)]
    pub async fn read_shared_level(
        &self,
        resource: &crate::ResourceUri,
    ) -> Option<crate::BearerToken> {
        let level = self.shared.shared_level.as_ref()?;
        let entry = self.shared.resource(resource).ok()?;
        let key = &entry.default_key;
        let names = level.names(Kind::AccessToken, key);
        match level
            .read(&self.shared, &entry, key, &names, false, &mut None)
            .await
        {
            Found::Usable(token) => Some(crate::BearerToken::new(token, entry.policy.clone())),
            Found::Nothing | Found::Unavailable => None,
        }
    }
}
