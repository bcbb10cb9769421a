//! The shared level (feature `redis`): a second level on Redis behind the in-memory cache, so
//! that the processes of a fleet share tokens and make one token request per key between them.
//!
//! On an in-memory miss (inside the process's own single-flight, so one Redis read per process
//! per key), the flight reads the key's entry; a fresh one is stored in memory and handed out
//! (the audience decision runs on it as on any token). Otherwise the flight takes the key's
//! fleet lock (`SET NX PX` with a random token), reads once more, asks the authorization
//! server, writes the sealed token and releases the lock (compare-and-delete). A flight that
//! finds the lock taken polls for the entry for a bounded time, then fetches itself. Every
//! Redis call is bounded by a timeout; an error degrades to the in-memory behaviour.

mod connection;
mod entry;
mod refresh_tokens;
mod seal;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::stats::Counters;
use super::{Acquire, ResourceEntry, Shared};
use crate::config::{self};
use crate::error::BuildError;
use crate::token::CachedToken;
use crate::{CacheKey, Error, ScopeSet};
use connection::{Connection, Failure};
use entry::{Kind, Names};

pub use seal::SealingKey;

/// How long a shared refresh token is kept in Redis without being used: refresh tokens carry
/// no expiry the client can read.
const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The first and the longest pause between two reads while another process holds the lock.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(100);

/// A shared second level on Redis for a [`TokenCache`](crate::TokenCache), set with
/// [`TokenCacheBuilder::shared_level`](crate::TokenCacheBuilder::shared_level) (feature
/// `redis`).
///
/// The processes of a fleet that use the same Redis, namespace and keys share their access
/// tokens: a new process starts warm, and concurrent misses on one key make one token request
/// for the whole fleet. The in-memory cache stays the first level.
///
/// - **Storage.** Each token is its own entry, `{namespace}:tok:{digest}` where the digest is
///   the hex HMAC-SHA-256 of the [`CacheKey`]'s unambiguous [encoding](CacheKey::encoded)
///   under a secret derived from the sealing key (so a reader of Redis cannot check a guessed
///   issuer, resource, client or account against the names), with a TTL equal to the token's
///   remaining usable lifetime (after the skew). The entry also carries the
///   absolute expiry, the resource and the scopes; a reader decides freshness from them with
///   its own skew, never from the TTL alone, and checks that the resource and scopes are the
///   key's.
/// - **Encryption at rest.** Values are sealed with XChaCha20-Poly1305 under the first of the
///   [`SealingKey`]s; any listed key opens (rotation: put the new key first, keep the old one
///   listed until its entries have expired; a reader looks under the names of every listed key
///   in one `MGET`, and writes under the new key's name. While a rotation rolls out, processes
///   that seal with different keys use different locks, so a key may be fetched once per
///   group). The associated data is the namespace, the kind
///   of value and the key's encoding, so a value copied under another key does not open. The
///   192-bit nonces are random: safe across any number of processes sealing under one key,
///   with no coordination. A value that does not open is a miss, counted in
///   [`Stats::l2_decrypt_failures`](crate::Stats::l2_decrypt_failures), never an error.
/// - **One request per key for the fleet.** A miss takes the key's lock,
///   `{namespace}:lock:{digest}`, with `SET NX PX` and a random token, and releases it with a
///   compare-and-delete script. A process that finds the lock taken reads the entry again
///   (10 ms, then up to every 100 ms) for at most [`wait_for_entry`](Self::wait_for_entry),
///   taking the lock itself if it is released empty, and then fetches on its own rather than
///   fail. Refreshes ahead of expiry take the same lock, so the fleet refreshes once.
/// - **Refresh tokens** stay in memory unless [`share_refresh_tokens`](Self::share_refresh_tokens)
///   is on (see there).
/// - **Failure.** Every Redis call is bounded by [`op_timeout`](Self::op_timeout). An error
///   or timeout is logged (without tokens), counted in
///   [`Stats::l2_errors`](crate::Stats::l2_errors), and the request goes on in memory, as
///   without a shared level. After a timeout or a lost connection the shared level is left
///   alone for a second (so an outage costs no Redis timeout per miss); then the connection
///   reconnects by itself, as soon as Redis is back.
/// - **Audience.** A token read from Redis goes through the same audience decision as a
///   fetched one, and its `aud` is read again from the token, never taken from Redis.
///
/// `Debug` shows the namespace, the key ids and the settings; never the keys or the Redis
/// address (which may hold a password).
///
/// ```no_run
/// use audience_cache::{
///     ClientRegistration, ResourceConfig, ResourceUri, SealingKey, SharedLevel, TokenCache,
/// };
/// use url::Url;
///
/// # fn key_from_secret_store(_: &str) -> [u8; 32] { [0; 32] }
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let level = SharedLevel::new(
///     "redis://127.0.0.1:6379/",
///     [
///         SealingKey::new(2, key_from_secret_store("token-cache-key-2")), // seals
///         SealingKey::new(1, key_from_secret_store("token-cache-key-1")), // still opens
///     ],
/// )?
/// .namespace("my-gateway");
/// let cache = TokenCache::builder()
///     .client(
///         ClientRegistration::new(
///             "https://auth.example.com",
///             Url::parse("https://auth.example.com/oauth/token")?,
///             "my-client",
///         )
///         .client_secret_basic(std::env::var("CLIENT_SECRET")?.into()),
///     )
///     .resource(ResourceConfig::new(
///         ResourceUri::parse("https://mcp.example.com/mcp")?,
///         "https://auth.example.com",
///     ))
///     .shared_level(level)
///     .build()?;
/// # let _ = cache;
/// # Ok(())
/// # }
/// ```
pub struct SharedLevel {
    client: redis::Client,
    keys: Vec<SealingKey>,
    namespace: String,
    lock_ttl: Duration,
    wait_for_entry: Duration,
    op_timeout: Duration,
    share_refresh_tokens: bool,
}

impl SharedLevel {
    /// A shared level on the Redis at `redis` (a `redis://` URL or a
    /// [`redis::ConnectionInfo`]), sealing with the first of `keys` and opening with any.
    /// No connection is made here: the first request connects, and a Redis that is down
    /// then only means misses in the shared level.
    ///
    /// The connection is plain TCP (`redis://`, or `redis+unix://`): this build of the client
    /// has no TLS, so `rediss://` is refused. What travels and rests is sealed, but the Redis
    /// password (if any) is not: keep Redis on a private network or loopback.
    ///
    /// # Errors
    ///
    /// [`BuildError::Setting`] if the address does not parse (the message does not repeat it:
    /// it may hold a password).
    pub fn new(
        redis: impl redis::IntoConnectionInfo,
        keys: impl IntoIterator<Item = SealingKey>,
    ) -> Result<Self, BuildError> {
        let client = redis::Client::open(redis).map_err(|e| BuildError::Setting {
            setting: "shared_level",
            reason: format!("the Redis address is not usable ({:?})", e.kind()),
        })?;
        Ok(Self {
            client,
            keys: keys.into_iter().collect(),
            namespace: "audience-cache".to_owned(),
            lock_ttl: Duration::from_secs(15),
            wait_for_entry: Duration::from_secs(5),
            op_timeout: Duration::from_millis(250),
            share_refresh_tokens: false,
        })
    }

    /// The prefix of every Redis key this level uses. Default `audience-cache`. Caches that
    /// must never share tokens (other tenants of one Redis, say) need other namespaces or
    /// other sealing keys; the namespace is also sealed into every value. 1 to 128 visible
    /// ASCII characters.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long a fleet lock lives if its holder never releases it (it crashed, or Redis
    /// lost the release). Default 15 s: longer than a token request usually takes, short
    /// enough that a crashed holder costs little. Between 100 ms and 10 min.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// How long a process that finds another one fetching waits for its token to appear,
    /// before it fetches itself. Default 5 s. Between zero and 10 min.
    pub fn wait_for_entry(mut self, wait: Duration) -> Self {
        self.wait_for_entry = wait;
        self
    }

    /// The time limit of each Redis call (connecting included). Default 250 ms: a shared
    /// level slower than that is worse than none. Between 1 ms and 60 s.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Also share refresh tokens (authorization code grant) through Redis, sealed like access
    /// tokens under `{namespace}:rt:{digest}` (the digest of the key without its scopes, as
    /// one refresh token serves every scope set of its grant), kept 30 days. Default off.
    ///
    /// Off, each process refreshes with the refresh token it got itself, and shares only the
    /// access tokens. On, every refresh holds the grant's fleet lock
    /// (`{namespace}:lock:rt:{digest}`) and reads the newest refresh token from Redis after
    /// taking it, so a token rotated by another process is the one used: with rotation, two
    /// processes refreshing with one refresh token would make the server revoke the whole
    /// token family (RFC 9700 §4.14.2). Turn it on only when all processes share the grant
    /// (one user's session served by several replicas).
    pub fn share_refresh_tokens(mut self, share: bool) -> Self {
        self.share_refresh_tokens = share;
        self
    }

    /// Checks the settings and makes the running level.
    pub(crate) fn build(self, counters: Arc<Counters>) -> Result<Arc<Level>, BuildError> {
        let setting = |reason: &str| BuildError::Setting {
            setting: "shared_level",
            reason: reason.to_owned(),
        };
        if self.keys.is_empty() {
            return Err(setting("at least one sealing key is needed"));
        }
        for (i, key) in self.keys.iter().enumerate() {
            if self.keys[..i].iter().any(|k| k.id() == key.id()) {
                return Err(setting(&format!(
                    "two sealing keys have the id {}; give every key its own",
                    key.id()
                )));
            }
        }
        let ns = &self.namespace;
        if ns.is_empty() || ns.len() > 128 || !ns.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(setting(
                "the namespace must be 1 to 128 visible ASCII characters",
            ));
        }
        config::check_duration(
            "shared_level lock_ttl",
            self.lock_ttl,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        config::check_duration(
            "shared_level wait_for_entry",
            self.wait_for_entry,
            Duration::ZERO,
            Duration::from_secs(600),
        )?;
        config::check_duration(
            "shared_level op_timeout",
            self.op_timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        Ok(Arc::new(Level {
            connection: Connection::new(self.client, self.op_timeout),
            sealer: seal::Sealer::new(&self.keys),
            namespace: self.namespace,
            lock_ttl: self.lock_ttl,
            wait_for_entry: self.wait_for_entry,
            share_refresh_tokens: self.share_refresh_tokens,
            counters,
        }))
    }
}

impl fmt::Debug for SharedLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLevel")
            .field("namespace", &self.namespace)
            .field(
                "keys",
                &self.keys.iter().map(SealingKey::id).collect::<Vec<_>>(),
            )
            .field("lock_ttl", &self.lock_ttl)
            .field("wait_for_entry", &self.wait_for_entry)
            .field("op_timeout", &self.op_timeout)
            .field("share_refresh_tokens", &self.share_refresh_tokens)
            .finish_non_exhaustive()
    }
}

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
            Found::Usable(token) => Some(self.shared.bearer(token)),
            Found::Nothing | Found::Unavailable => None,
        }
    }
}
