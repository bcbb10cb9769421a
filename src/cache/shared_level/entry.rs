//! What one shared-level entry is: its Redis names, the context it is sealed for, and the
//! plaintext it carries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::seal::Sealer;
use crate::key::CacheKey;
use crate::token::CachedToken;

/// Which kind of value an entry holds: part of both its Redis name and its sealing context,
/// so a refresh token never opens as an access token or the other way round.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    AccessToken,
    RefreshToken,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Self::AccessToken => "tok",
            Self::RefreshToken => "rt",
        }
    }

    /// The tag of the kind's generation records (see [`super::generation`]).
    fn generation_tag(self) -> &'static str {
        match self {
            Self::AccessToken => "gen",
            Self::RefreshToken => "gen:rt",
        }
    }
}

/// Where one entry may be: its value's name and its generation record's name, both under
/// one sealing key's naming secret.
pub(crate) struct Place {
    pub(crate) value: String,
    pub(crate) generation: String,
}

/// The Redis names of one entry and its lock, and the contexts its value and its generation
/// record are sealed for.
pub(crate) struct Names {
    /// Under the sealing key first (where values are written, and read first), then under
    /// the other listed keys, in order (where values sealed before a rotation are).
    pub(crate) places: Vec<Place>,
    pub(crate) lock: String,
    pub(crate) context: Vec<u8>,
    pub(crate) generation_context: Vec<u8>,
}

impl Names {
    /// `{ns}:tok:{digest}`, `{ns}:gen:{digest}` and `{ns}:lock:{digest}` (`rt`, `gen:rt` and
    /// `lock:rt` for refresh tokens), with the digest the hex HMAC-SHA-256 of the key's
    /// unambiguous encoding under a secret derived from a sealing key: without the key, a name
    /// cannot be matched to a guessed issuer, resource, client or account.
    pub(crate) fn new(namespace: &str, kind: Kind, key: &CacheKey, sealer: &Sealer) -> Self {
        let (tag, generation_tag) = (kind.tag(), kind.generation_tag());
        let places: Vec<Place> = sealer
            .digests(&key.encoded())
            .into_iter()
            .map(|digest| Place {
                value: format!("{namespace}:{tag}:{digest}"),
                generation: format!("{namespace}:{generation_tag}:{digest}"),
            })
            .collect();
        let digest = places
            .first()
            .and_then(|p| p.value.rsplit(':').next())
            .unwrap_or_default();
        let lock = match kind {
            Kind::AccessToken => format!("{namespace}:lock:{digest}"),
            Kind::RefreshToken => format!("{namespace}:lock:{tag}:{digest}"),
        };
        Self {
            context: context(namespace, tag, key),
            generation_context: context(namespace, generation_tag, key),
            places,
            lock,
        }
    }

    /// The place values are written to: the sealing key's.
    pub(crate) fn current(&self) -> Option<&Place> {
        self.places.first()
    }

    /// Every name to read for the entry, in one `MGET`: each place's value and generation
    /// record, in order.
    pub(crate) fn to_read(&self) -> Vec<&str> {
        self.places
            .iter()
            .flat_map(|p| [p.value.as_str(), p.generation.as_str()])
            .collect()
    }
}

/// The sealing context of a value of `tag` for `key`: length-prefixed like the key's own
/// encoding, so no two (namespace, tag, key) agree.
fn context(namespace: &str, tag: &str, key: &CacheKey) -> Vec<u8> {
    let encoded = key.encoded();
    let mut context = Vec::with_capacity(64 + namespace.len() + encoded.len());
    context.extend_from_slice(b"audience-cache shared level\0");
    for part in [namespace.as_bytes(), tag.as_bytes()] {
        context.extend_from_slice(&(part.len() as u64).to_be_bytes());
        context.extend_from_slice(part);
    }
    context.extend_from_slice(&encoded);
    context
}

/// The plaintext of an access-token entry, as written.
#[derive(Serialize)]
struct AccessOut<'a> {
    access_token: &'a str,
    /// When the token request was sent, Unix milliseconds (wall clock: processes share no
    /// monotonic clock).
    sent_at: u64,
    /// The absolute expiry the server granted (before the skew), Unix milliseconds.
    expires_at: u64,
    resource: &'a str,
    /// The scopes of the key (requested).
    requested: &'a str,
    /// The scopes granted.
    granted: &'a str,
    /// Bound to the DPoP key whose thumbprint is in the key (RFC 9449); absent for a bearer
    /// token, so bearer entries read the same as before.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dpop: bool,
}

/// The plaintext of an access-token entry, as read.
#[derive(Deserialize)]
pub(crate) struct AccessIn {
    pub(crate) access_token: SecretString,
    pub(crate) sent_at: u64,
    pub(crate) expires_at: u64,
    pub(crate) resource: String,
    pub(crate) requested: String,
    pub(crate) granted: String,
    #[serde(default)]
    pub(crate) dpop: bool,
}

impl AccessIn {
    /// When the request was sent, on this process's clock, and the lifetime granted.
    pub(crate) fn received(&self) -> (Instant, Duration) {
        let lifetime = Duration::from_millis(self.expires_at.saturating_sub(self.sent_at));
        (instant_of(self.sent_at), lifetime)
    }
}

pub(crate) fn access_plaintext(token: &CachedToken) -> Zeroizing<Vec<u8>> {
    let sent_at = unix_millis_of(token.schedule.received_at);
    let lifetime = u64::try_from(token.schedule.lifetime.as_millis()).unwrap_or(u64::MAX);
    let out = AccessOut {
        access_token: token.access_token.expose_secret(),
        sent_at,
        expires_at: sent_at.saturating_add(lifetime),
        resource: token.resource.key(),
        requested: token.key.scopes().as_str(),
        granted: token.scopes.as_str(),
        dpop: token.dpop_bound,
    };
    Zeroizing::new(serde_json::to_vec(&out).unwrap_or_default())
}

pub(crate) fn read_access(plaintext: &[u8]) -> Option<AccessIn> {
    serde_json::from_slice(plaintext).ok()
}

/// The plaintext of a refresh-token entry, as written.
#[derive(Serialize)]
struct RefreshOut<'a> {
    refresh_token: &'a str,
    /// The scopes of the original grant: a refresh never asks for more.
    granted: &'a str,
}

/// The plaintext of a refresh-token entry, as read.
#[derive(Deserialize)]
pub(crate) struct RefreshIn {
    pub(crate) refresh_token: SecretString,
    pub(crate) granted: String,
}

pub(crate) fn refresh_plaintext(token: &SecretString, granted: &str) -> Zeroizing<Vec<u8>> {
    let out = RefreshOut {
        refresh_token: token.expose_secret(),
        granted,
    };
    Zeroizing::new(serde_json::to_vec(&out).unwrap_or_default())
}

pub(crate) fn read_refresh(plaintext: &[u8]) -> Option<RefreshIn> {
    serde_json::from_slice(plaintext).ok()
}

/// `instant` on the wall clock, in Unix milliseconds.
fn unix_millis_of(instant: Instant) -> u64 {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let at = match now.checked_duration_since(instant) {
        Some(ago) => wall.checked_sub(ago),
        None => wall.checked_add(instant.saturating_duration_since(now)),
    };
    at.and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A wall-clock time in Unix milliseconds as an instant of this process. A time in the future
/// (another host's clock ahead of ours) counts as now: a token is never made to live longer.
fn instant_of(unix_millis: u64) -> Instant {
    let now = Instant::now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ago = wall.saturating_sub(Duration::from_millis(unix_millis));
    now.checked_sub(ago).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceUri;
    use crate::scope::ScopeSet;

    #[test]
    fn names_follow_the_key_encoding_the_kind_and_the_sealing_keys() {
        use crate::store::SealingKey;
        let resource = ResourceUri::parse("https://mcp.example.com/mcp").unwrap();
        let key = CacheKey::new("https://as", &resource, &ScopeSet::empty(), "c");
        let other = key.clone().with_account("a");
        let sealer = Sealer::new(&[SealingKey::new(1, [7; 32])]);
        let a = Names::new("ns", Kind::AccessToken, &key, &sealer);
        let value = &a.places[0].value;
        assert!(value.starts_with("ns:tok:") && value.len() == "ns:tok:".len() + 64);
        assert_eq!(a.places.len(), 1);
        assert_eq!(a.lock, value.replace(":tok:", ":lock:"));
        assert_eq!(a.places[0].generation, value.replace(":tok:", ":gen:"));
        assert_eq!(a.to_read(), [value.as_str(), &a.places[0].generation]);
        let r = Names::new("ns", Kind::RefreshToken, &key, &sealer);
        assert_eq!(r.places[0].value, value.replace(":tok:", ":rt:"));
        assert_eq!(r.places[0].generation, value.replace(":tok:", ":gen:rt:"));
        assert_eq!(r.lock, value.replace(":tok:", ":lock:rt:"));
        // Four contexts, none like another: a value never opens as another kind's, nor as a
        // generation record.
        let contexts = [
            &a.context,
            &a.generation_context,
            &r.context,
            &r.generation_context,
        ];
        for (i, x) in contexts.iter().enumerate() {
            for y in &contexts[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_ne!(
            Names::new("ns", Kind::AccessToken, &other, &sealer).places[0].value,
            *value
        );
        assert_ne!(
            Names::new("ns2", Kind::AccessToken, &key, &sealer).context,
            a.context
        );
        // Not the plain SHA-256 of the encoding: a guessed key cannot be checked without the
        // sealing key. Another key names the entry differently; a rotation reads both.
        use sha2::Digest as _;
        let plain: String = sha2::Sha256::digest(key.encoded())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!value.ends_with(&plain));
        let rotated = Sealer::new(&[SealingKey::new(2, [9; 32]), SealingKey::new(1, [7; 32])]);
        let b = Names::new("ns", Kind::AccessToken, &key, &rotated);
        assert_ne!(b.places[0].value, *value);
        assert_eq!(b.places[1].value, *value);
        assert_eq!(b.places[1].generation, a.places[0].generation);
        assert_eq!(b.lock.len(), a.lock.len());
        assert_ne!(b.lock, a.lock);
    }

    #[tokio::test]
    async fn wall_clock_round_trip() {
        let earlier = Instant::now() - Duration::from_secs(10);
        let back = instant_of(unix_millis_of(earlier));
        let diff = if back > earlier {
            back - earlier
        } else {
            earlier - back
        };
        assert!(diff < Duration::from_millis(5), "{diff:?}");
        let future = SystemTime::now() + Duration::from_secs(60);
        let ms = future.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(instant_of(ms) <= Instant::now());
    }
}
