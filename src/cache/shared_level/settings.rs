//! The public face of the shared level: [`SharedLevel`], its settings and their checks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Level;
use super::connection::Connection;
use super::seal::{self, SealingKey};
use crate::cache::stats::Counters;
use crate::config;
use crate::error::BuildError;

/// A shared second level on Redis for a [`TokenCache`](crate::cache::TokenCache), set with
/// [`TokenCacheBuilder::shared_level`](crate::cache::TokenCacheBuilder::shared_level) (feature
/// `redis`).
///
/// The processes of a fleet that use the same Redis, namespace and keys share their access
/// tokens: a new process starts warm, and concurrent misses on one key make one token request
/// for the whole fleet. The in-memory cache stays the first level.
///
/// - **Storage.** Each token is its own entry, `{namespace}:tok:{digest}` where the digest is
///   the hex HMAC-SHA-256 of the [`CacheKey`](crate::key::CacheKey)'s unambiguous
///   [encoding](crate::key::CacheKey::encoded) under a secret derived from the sealing key (so a
///   reader of Redis cannot check a guessed issuer, resource, client or account against the
///   names), with a TTL equal to the token's remaining usable lifetime (after the skew). The
///   entry also carries the absolute expiry, the resource and the scopes; a reader decides
///   freshness from them with its own skew, never from the TTL alone, and checks that the
///   resource and scopes are the key's.
/// - **Encryption at rest.** Values are sealed with XChaCha20-Poly1305 under the first of the
///   [`SealingKey`]s; any listed key opens (rotation: put the new key first, keep the old one
///   listed until its entries have expired; a reader looks under the names of every listed key
///   in one `MGET`, and writes under the new key's name. While a rotation rolls out, processes
///   that seal with different keys use different locks, so a key may be fetched once per
///   group). The associated data is the namespace, the kind
///   of value and the key's encoding, so a value copied under another key does not open. The
///   192-bit nonces are random: safe across any number of processes sealing under one key,
///   with no coordination. A value that does not open is a miss, counted in
///   [`Stats::l2_decrypt_failures`](crate::cache::Stats::l2_decrypt_failures), never an error.
/// - **Invalidation that sticks (rollback).** Next to each entry is its generation record,
///   `{namespace}:gen:{digest}`: a number, sealed for the key. A value is sealed under the
///   generation of the record it is written under (the number is part of its associated
///   data), and opens as current only while the record holds that number; an entry with no
///   record is not current. Invalidating a token (after a 401, or a refusal by the audience
///   decision) writes a new number, with a TTL of at least the token's remaining lifetime,
///   and drops the entry (a newer token another process wrote is sealed again under the new
///   number), in a compare-and-set script. So someone who can write to Redis and puts back
///   the bytes of an invalidated token's entry gets a miss, counted in
///   [`Stats::l2_decrypt_failures`](crate::cache::Stats::l2_decrypt_failures) and logged; deleting
///   the record as well only makes the entry a miss. Each process also remembers the newest
///   record it saw of each key, and refuses an older one: someone who kept *both* the entry
///   and its record from before the invalidation and writes both back (a copy of Redis
///   restored) is refused by every process that saw the newer record, the one that
///   invalidated included, and its next write moves the generation above the restored one.
///   What remains: a process that never saw the newer record (one started since, say) cannot
///   tell the restored pair from a current one, and serves the invalidated token until the
///   expiry sealed inside it, or until a process that saw the newer record writes, to the
///   resource that rejected it (the audience decision still runs; the token cannot be moved
///   to another key or resource). Anyone who can write to Redis can also delete everything
///   in it: misses, never a token for the wrong audience.
/// - **One request per key for the fleet.** A miss takes the key's lock,
///   `{namespace}:lock:{digest}`, with a random token (`SET NX PX`, in a script that also
///   knows the lock as its own when a lost answer is asked again), and releases it with a
///   compare-and-delete script. A process that finds the lock taken reads the entry again
///   (10 ms, then up to every 100 ms) for at most [`wait_for_entry`](Self::wait_for_entry),
///   taking the lock itself if it is released empty, and then fetches on its own rather than
///   fail. Refreshes ahead of expiry take the same lock, so the fleet refreshes once.
/// - **Refresh tokens** stay in memory unless [`share_refresh_tokens`](Self::share_refresh_tokens)
///   is on (see there).
/// - **Failure.** Every Redis call is bounded by [`op_timeout`](Self::op_timeout). An error
///   or timeout is logged (without tokens), counted in
///   [`Stats::l2_errors`](crate::cache::Stats::l2_errors), and the request goes on in memory, as
///   without a shared level. A call that finds its connection gone (Redis restarted while
///   the process asked nothing) reconnects and is sent once more, so the first call after a
///   restart is answered. After a timeout, or a connection still lost, the shared level is
///   left alone for a second (so an outage costs no Redis timeout per miss); then the
///   connection reconnects by itself, as soon as Redis is back.
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
/// # fn key_from_secret_store(_: &str) -> [u8; 32] { [0x42; 32] }
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
    /// The connection is plain TCP (`redis://`, or `redis+unix://`): TLS is not supported yet,
    /// so `rediss://` is refused. What travels and rests is sealed, but the Redis password (if
    /// any) is not: keep Redis on a private network or loopback.
    ///
    /// # Errors
    ///
    /// [`BuildError::Setting`] if the address does not parse, has no `redis://` scheme, or asks
    /// for TLS; the message says which, and does not repeat the address (it may hold a
    /// password).
    pub fn new(
        redis: impl redis::IntoConnectionInfo,
        keys: impl IntoIterator<Item = SealingKey>,
    ) -> Result<Self, BuildError> {
        let client = redis::Client::open(redis).map_err(|e| BuildError::Setting {
            setting: "shared_level",
            reason: address_error(&e),
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

    /// The time limit of each Redis call (connecting included); a call that finds the
    /// connection gone is sent once more, with the same limit. Default 250 ms: a shared
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
    ///
    /// Every write of a grant's refresh token moves its generation record
    /// (`{namespace}:gen:rt:{digest}`, see the type's documentation), and each process
    /// remembers the generation of the refresh token it holds. A rotated refresh token whose
    /// bytes are written back to Redis is not used; a process whose own refresh token is
    /// older than the record does not present it either, and asks for a new authorization
    /// instead ([`Error::AuthorizationRequired`](crate::error::Error::AuthorizationRequired)) rather
    /// than have the grant revoked; the process that wrote the newest keeps refreshing with
    /// it, also when a rotated token is written back together with its old record. Such a
    /// pair does make a process that never saw the newer record present the rotated token
    /// once, and the server revoke the grant: a denial of service, as deleting the refresh
    /// token is.
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
        if let Some(zero) = self.keys.iter().find(|k| k.is_all_zero()) {
            return Err(setting(&format!(
                "sealing key {} is all zero bytes, which anyone can seal with (an unfilled \
                 buffer?): give every key 32 random bytes, e.g. from `openssl rand -hex 32` \
                 (hex-decoded) kept in your secret store",
                zero.id()
            )));
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
            floors: Default::default(),
            refresh_generations: Default::default(),
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

/// Why the Redis address was refused, without the address (it may hold a password). The
/// client's parse errors are fixed texts; they are matched here, not repeated.
fn address_error(error: &redis::RedisError) -> String {
    let text = error.to_string();
    if text.contains("TLS") {
        // `rediss://` (or `valkeys://`): the client is built without a TLS stack.
        "TLS (rediss://) is not supported yet: use a redis:// address on loopback or a \
         private network (values are sealed either way, the Redis password is not), or reach \
         a TLS Redis through a local TLS tunnel"
            .to_owned()
    } else if text.contains("did not parse") {
        // No scheme (`127.0.0.1:6379`), another scheme (`http://`), or not a URL at all.
        "the Redis address needs the redis:// scheme, as in redis://127.0.0.1:6379/ or \
         redis://:password@host:6379/0 (or redis+unix:///path/to/socket)"
            .to_owned()
    } else {
        let known = [
            "Missing hostname",
            "wildcard address",
            "Invalid database number",
            "not valid UTF-8",
            "Missing path",
        ];
        match known.iter().find(|known| text.contains(*known)) {
            Some(cause) => format!(
                "the Redis address is not usable ({cause}): expected \
                 redis://[:password@]host[:port][/db]"
            ),
            None => format!(
                "the Redis address is not usable ({:?}): expected \
                 redis://[:password@]host[:port][/db]",
                error.kind()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(address: &str) -> String {
        match redis::Client::open(address) {
            Ok(_) => panic!("{address} was accepted"),
            Err(error) => address_error(&error),
        }
    }

    #[test]
    fn each_unusable_address_says_why_and_never_repeats_it() {
        let cases = [
            (
                "rediss://:pw-rediss@127.0.0.1/",
                "TLS (rediss://) is not supported yet: ",
            ),
            (
                "valkeys://:pw-valkeys@127.0.0.1/",
                "TLS (rediss://) is not supported yet: ",
            ),
            ("127.0.0.1:6379", "needs the redis:// scheme"),
            (":pw-bare@127.0.0.1:6379", "needs the redis:// scheme"),
            ("https://:pw-https@127.0.0.1/", "needs the redis:// scheme"),
            ("redis://:pw-wild@0.0.0.0/", "(wildcard address)"),
            ("redis://:pw-db@127.0.0.1/zero", "(Invalid database number)"),
        ];
        for (address, says) in cases {
            let reason = refused(address);
            assert!(reason.contains(says), "{address}: {reason}");
            assert!(!reason.contains("pw-"), "{address}: {reason}");
        }
    }

    #[test]
    fn a_plain_address_is_accepted() {
        for address in ["redis://127.0.0.1/", "redis://:pw@localhost:6380/2"] {
            assert!(redis::Client::open(address).is_ok(), "{address}");
        }
    }
}
