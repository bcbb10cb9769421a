//! Access tokens in the shared level: reading a key's entry against its generation record,
//! writing a token just received, and invalidating one so that its old bytes, written back,
//! do not open as current (see [`super::generation`]).

use std::sync::Arc;

use secrecy::ExposeSecret as _;
use tokio::time::Instant;

use super::entry::{self, Kind, Names};
use super::generation::{self, Opened};
use super::{Found, Level};
use crate::cache::{ResourceEntry, Shared};
use crate::key::CacheKey;
use crate::scope::ScopeSet;
use crate::token::CachedToken;

/// What the key's entry held, when it did not hold a current token.
enum Refused {
    /// No generation record that opens: deleted, expired, or tampered with.
    NoRecord,
    /// A value of this key sealed under an older generation: written back after it was
    /// invalidated.
    Superseded,
    /// A record older than one this process saw, with its value: both written back.
    RolledBack,
    /// Not a value of this key (or its payload does not match the key).
    Unopenable,
}

impl Level {
    /// Reads the key's entry. `seen` is the value this flight read last: the same value again
    /// is no news (and a value that was refused is counted once).
    pub(super) async fn read(
        &self,
        shared: &Shared,
        entry: &ResourceEntry,
        key: &CacheKey,
        names: &Names,
        ahead: bool,
        seen: &mut Option<Vec<u8>>,
    ) -> Found {
        let (place, value, record) = match self.read_first(names).await {
            Ok(Some(read)) => read,
            Ok(None) => return Found::Nothing,
            Err(failure) => {
                self.failed(key, &failure);
                return Found::Unavailable;
            }
        };
        if seen.as_ref() == Some(&value) {
            return Found::Nothing;
        }
        let value = &*seen.insert(value);
        let record = record
            .as_deref()
            .map(|record| (place.generation.as_str(), record));
        let token = match self.open_access(shared, entry, key, names, record, value) {
            Ok(token) => token,
            Err(refused) => {
                self.refused(key, &refused);
                return Found::Nothing;
            }
        };
        let now = Instant::now();
        let usable = token.is_fresh(now) && !(ahead && token.wants_refresh(now));
        if usable {
            Found::Usable(Arc::new(token))
        } else {
            Found::Nothing
        }
    }

    fn refused(&self, key: &CacheKey, refused: &Refused) {
        match refused {
            // Redis may evict a record under memory pressure: a miss, not an attack.
            Refused::NoRecord => tracing::warn!(
                key = %key,
                "a shared-level entry has no generation record that opens (deleted, expired, \
                 or tampered with); treated as absent"
            ),
            Refused::Superseded => {
                self.counters.l2_decrypt_failure();
                tracing::warn!(
                    key = %key,
                    "a shared-level value invalidated since was written back to Redis (someone \
                     with write access to Redis replayed it); refused"
                );
            }
            Refused::RolledBack => {
                self.counters.l2_decrypt_failure();
                tracing::warn!(
                    key = %key,
                    "a shared-level entry and its generation record older than one this \
                     process saw were written back to Redis (a restored copy?); refused"
                );
            }
            Refused::Unopenable => {
                self.counters.l2_decrypt_failure();
                tracing::warn!(
                    key = %key,
                    "a shared-level value did not open (tampered with, copied from another \
                     key's entry, or malformed); treated as absent"
                );
            }
        }
    }

    /// Opens an access-token value read for `key` against its generation record (its name
    /// and value) and rebuilds the token: its schedule by this process's
    /// [`Timing`](crate::token::Timing), its audience read from the token.
    fn open_access(
        &self,
        shared: &Shared,
        entry: &ResourceEntry,
        key: &CacheKey,
        names: &Names,
        record: Option<(&str, &[u8])>,
        value: &[u8],
    ) -> Result<CachedToken, Refused> {
        let (record_name, record) = record.ok_or(Refused::NoRecord)?;
        let current =
            generation::open_record(&self.sealer, names, record).ok_or(Refused::NoRecord)?;
        if !self.floors.admit(record_name, current) {
            return Err(Refused::RolledBack);
        }
        let plaintext = match generation::open_value(&self.sealer, names, current, value) {
            Opened::Current(plaintext) => plaintext,
            Opened::Superseded => return Err(Refused::Superseded),
            Opened::Unopenable => return Err(Refused::Unopenable),
        };
        let stored = entry::read_access(&plaintext).ok_or(Refused::Unopenable)?;
        // The associated data already binds the value to the key; a second net.
        if stored.resource != key.resource().key() || stored.requested != key.scopes().as_str() {
            return Err(Refused::Unopenable);
        }
        let scopes = ScopeSet::parse(&stored.granted).map_err(|_| Refused::Unopenable)?;
        let (received_at, lifetime) = stored.received();
        let audience = crate::cache::flight::audience_of(entry, &stored.access_token);
        Ok(CachedToken::new(
            stored.access_token,
            key.clone(),
            entry.config.resource.clone(),
            scopes,
            audience,
            shared.timing.schedule(received_at, Some(lifetime)),
            stored.dpop,
        ))
    }

    /// Writes a token just received, sealed under the key's current generation, with a TTL of
    /// its remaining usable lifetime. If the key was invalidated between reading its
    /// generation and writing, nothing is written (the token may be fine, but a miss is the
    /// safe side).
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
        match self.write_value(&names, &plaintext, ttl, false).await {
            Ok(Some(_)) => self.counters.l2_write(),
            Ok(None) => tracing::debug!(
                key = %token.key,
                "the key was invalidated while its token was written; not written"
            ),
            Err(failure) => self.failed(&token.key, &failure),
        }
    }

    /// Invalidates `token` in the shared level (it was evicted: rejected by a resource
    /// server, or refused by the audience decision): the key's generation moves on, so the
    /// token's value, even written back byte for byte, no longer opens as current. The record
    /// lives at least as long as the token could. A newer token another process wrote stays
    /// usable (sealed again under the new generation).
    pub(crate) async fn forget(&self, token: &CachedToken) {
        let names = self.names(Kind::AccessToken, &token.key);
        let lifetime = token
            .schedule
            .expires_at
            .saturating_duration_since(Instant::now());
        let another = |plaintext: &[u8]| {
            entry::read_access(plaintext).is_some_and(|stored| {
                stored.access_token.expose_secret() != token.access_token.expose_secret()
            })
        };
        self.supersede(&token.key, &names, lifetime, another).await;
    }
}
