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
//!
//! Each entry is read together with its generation record, and is current only under it
//! ([`generation`]); invalidating a token moves the record on ([`access_tokens`]), as does
//! every write of a shared refresh token ([`refresh_tokens`]).

mod access_tokens;
mod connection;
mod entry;
mod generation;
mod refresh_tokens;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::stats::Counters;
use super::{Acquire, ResourceEntry, Shared};
use crate::error::Error;
use crate::key::CacheKey;
// The sealing code is the credential store's (a layer below): one envelope format for both.
use crate::store::seal;
use crate::token::CachedToken;
use connection::{Connection, Failure};
use entry::{Kind, Names};
use generation::{Generation, Opened};

pub(crate) use refresh_tokens::SharedRefresh;
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
    /// The newest generation record this process saw of each key, by the record's name: a
    /// record older than that was written back (a restored copy of Redis), and is refused.
    floors: generation::Memory,
    /// The generation of each shared refresh token this process holds as the newest (it
    /// wrote it or read it as current), by the name of the grant's value: the refresh token of
    /// a process whose generation is the record's is the newest, whatever value Redis holds.
    refresh_generations: generation::Memory,
}

/// How many rounds a compare-and-set of a generation tries before it gives up (another
/// process changing the same key each time).
const CAS_ROUNDS: usize = 3;

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
        // Only the client's own tokens are shared (see `Shared::fetch`).
        shared.keep(&token, &Acquire::Configured).await;
        tracing::debug!(key = %token.key, "took a token from the shared level");
        token
    }

    /// The first place (newest sealing key first) that holds a value: the place, the value
    /// and its generation record, read with every other place's in one `MGET`.
    async fn read_first<'n>(
        &self,
        names: &'n Names,
    ) -> Result<Option<(&'n entry::Place, Vec<u8>, Option<Vec<u8>>)>, Failure> {
        let mut read = self.connection.get_all(&names.to_read()).await?.into_iter();
        for place in &names.places {
            let (Some(value), Some(record)) = (read.next(), read.next()) else {
                break;
            };
            if let Some(value) = value {
                return Ok(Some((place, value, record)));
            }
        }
        Ok(None)
    }

    /// Writes `plaintext` at the current place, sealed under the generation its record holds
    /// (or a new one: when there is no record that opens, or `new_generation`), in a script
    /// that first checks the record is still the one read. `Ok(Some)` with the generation
    /// written under; `Ok(None)` if the record changed between the read and the write.
    async fn write_value(
        &self,
        names: &Names,
        plaintext: &[u8],
        ttl: Duration,
        new_generation: bool,
    ) -> Result<Option<Generation>, Failure> {
        let Some(place) = names.current() else {
            return Ok(None);
        };
        let read = self.connection.get(&place.generation).await?;
        let found = read
            .as_deref()
            .and_then(|record| generation::open_record(&self.sealer, names, record));
        let floor = self.floors.get(&place.generation);
        let (generation, record) = match found {
            Some(current) if !new_generation && floor.is_none_or(|floor| current >= floor) => {
                (current, None)
            }
            // None that opens, one older than this process saw (written back), or a new one
            // asked for: a generation above all of them.
            found => {
                let next = Generation::after(found.max(floor));
                (next, generation::seal_record(&self.sealer, names, next))
            }
        };
        let Some(value) = generation::seal_value(&self.sealer, names, generation, plaintext) else {
            return Ok(None);
        };
        let written = self
            .connection
            .write_under_generation(
                &place.generation,
                &place.value,
                read.as_deref().unwrap_or_default(),
                record.as_deref().unwrap_or_default(),
                &value,
                ttl,
            )
            .await?;
        if written {
            self.floors.admit(&place.generation, generation);
        }
        Ok(written.then_some(generation))
    }

    /// Moves the generation of every place of `names` that holds a value or a record, so that
    /// no value sealed before opens as current again, whoever writes its bytes back. A current
    /// value whose plaintext `keep` accepts is sealed again under the new generation (same
    /// TTL). The record lives at least `lifetime` and as long as a kept value. The new
    /// generation of the current place, if it was written.
    async fn supersede(
        &self,
        key: &CacheKey,
        names: &Names,
        lifetime: Duration,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Option<Generation> {
        let mut newest = None;
        for (index, place) in names.places.iter().enumerate() {
            for round in 1..=CAS_ROUNDS {
                let read = self
                    .connection
                    .get_all(&[place.value.as_str(), place.generation.as_str()])
                    .await;
                let (value, record) = match read.as_deref() {
                    Ok([value, record]) => (value.as_deref(), record.as_deref()),
                    Ok(_) => break,
                    Err(failure) => {
                        self.failed(key, failure);
                        return newest;
                    }
                };
                if value.is_none() && record.is_none() {
                    break;
                }
                let current =
                    record.and_then(|record| generation::open_record(&self.sealer, names, record));
                let next = Generation::after(current.max(self.floors.get(&place.generation)));
                // Never a value under a record older than this process saw (written back with
                // it): sealing it again would make it current.
                let kept = match (current, value) {
                    (Some(current), Some(value))
                        if self.floors.admit(&place.generation, current) =>
                    {
                        match generation::open_value(&self.sealer, names, current, value) {
                            Opened::Current(plaintext) if keep(&plaintext) => {
                                generation::seal_value(&self.sealer, names, next, &plaintext)
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let Some(new_record) = generation::seal_record(&self.sealer, names, next) else {
                    return newest;
                };
                let done = self
                    .connection
                    .supersede(
                        &place.generation,
                        &place.value,
                        record.unwrap_or_default(),
                        value.unwrap_or_default(),
                        &new_record,
                        kept.as_deref().unwrap_or_default(),
                        lifetime,
                    )
                    .await;
                match done {
                    Ok(true) => {
                        self.floors.admit(&place.generation, next);
                        if index == 0 {
                            newest = Some(next);
                        }
                        break;
                    }
                    Ok(false) if round < CAS_ROUNDS => continue,
                    Ok(false) => tracing::warn!(
                        key = %key,
                        "the shared-level entry kept changing while it was invalidated; left \
                         as it is"
                    ),
                    Err(failure) => {
                        self.failed(key, &failure);
                        return newest;
                    }
                }
            }
        }
        newest
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

impl crate::cache::TokenCache {
    /// Not a stable API: for `benches/shared_level.rs`. The shared level's read of
    /// `resource`'s default-scope token alone, bypassing the in-memory level and storing
    /// nothing: the entry's names (HMAC-SHA-256 of the key), one `MGET` of the entry and its
    /// generation record, opening both, parsing and checking the payload, the schedule,
    /// reading `aud`. `None` without a shared level or a usable entry.
    #[doc(hidden)]
    pub async fn read_shared_level(
        &self,
        resource: &crate::resource::ResourceUri,
    ) -> Option<crate::cache::BearerToken> {
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
