//! DPoP (RFC 9449): sender-constrained tokens. Each client registration proves possession
//! with its own [`DpopKey`] (one it was given, the cache's shared one, or one generated for
//! it): its token requests for a resource that uses DPoP carry a fresh proof, a
//! `token_type: DPoP` answer is kept as bound to that key, and a bound token goes out only as
//! `Authorization: DPoP` with a proof made with that same key for that exact request's method
//! and URL (built by the cache after its one decision, never here). This module holds what the
//! layers above share: how a registration gets its key, the keys by thumbprint (a token names
//! its key by the thumbprint in its cache key), the nonces servers handed out (RFC 9449 §8,
//! §9, remembered per origin), and which resources use DPoP.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use http::{HeaderMap, HeaderValue};
use url::Url;

use crate::error::BuildError;
use crate::resource::ResourceUri;

use crate::config::DpopKey;

/// The `DPoP` header of requests (RFC 9449 §4.1) and the `DPoP-Nonce` header of answers
/// (§8.1).
pub(crate) const DPOP: &str = "dpop";
/// RFC 9449 §8.1.
pub(crate) const DPOP_NONCE: &str = "dpop-nonce";
/// RFC 9449 §8, §9: the error code of an answer that asks for a nonce.
pub(crate) const USE_DPOP_NONCE: &str = "use_dpop_nonce";

/// How a resource uses DPoP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Use {
    /// Plain bearer tokens (the default): no proof goes to the token endpoint for it.
    Off,
    /// Token requests carry a proof; a `Bearer` answer is kept as a bearer token (the
    /// authorization server chose not to bind it), and logged.
    Asked,
    /// The resource requires bound tokens (configured, its metadata's
    /// `dpop_bound_access_tokens_required`, or a `DPoP` challenge): a `Bearer` answer is
    /// refused, and without a key nothing is requested.
    Required,
}

/// The most origins whose nonce is remembered: a nonce is a hint, and a server that hands out
/// nonces from many origins must not grow the cache without bound.
const MAX_NONCE_ORIGINS: usize = 1024;
/// The longest nonce accepted (RFC 9449 §8.1 sets no bound; a proof carries it every time).
const MAX_NONCE_LEN: usize = 512;

/// Where a client registration without a key of its own gets one.
#[derive(Debug, Clone, Default)]
pub(crate) enum Keys {
    /// Nowhere: such a registration has no key (the default).
    #[default]
    None,
    /// The cache's key, shared by every registration without one of its own.
    #[cfg(feature = "dpop")]
    Shared(DpopKey),
    /// A key generated for each such registration when it is added to the cache.
    #[cfg(feature = "dpop")]
    PerClient,
    /// Both of the above were asked for: [`Dpop::new`] refuses it.
    #[cfg(feature = "dpop")]
    Conflict,
}

/// The DPoP state of one cache: where registrations get keys, the keys in use, the nonces of
/// the servers it talks to, and the resources that use DPoP.
#[derive(Default)]
pub(crate) struct Dpop {
    keys: Keys,
    /// Every key a registration of the cache proves with, by RFC 7638 thumbprint: a bound
    /// token's proof is made with the key its cache key names, and no other.
    in_use: RwLock<HashMap<String, DpopKey>>,
    /// The last `DPoP-Nonce` of each origin (RFC 9449 §8.2: the next proof carries it).
    nonces: Mutex<HashMap<String, String>>,
    /// How each resource (by match key) uses DPoP; absent is [`Use::Off`].
    uses: RwLock<HashMap<String, Use>>,
}

impl std::fmt::Debug for Dpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dpop")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Dpop {
    pub(crate) fn new(keys: Keys) -> Result<Self, BuildError> {
        #[cfg(feature = "dpop")]
        if let Keys::Conflict = keys {
            return Err(BuildError::Setting {
                setting: "dpop_key",
                reason: "TokenCacheBuilder::dpop_key gives every client one shared key and \
                         TokenCacheBuilder::generate_dpop_keys a key of its own: choose one of \
                         the two (a registration's own key, ClientRegistration::dpop_key, goes \
                         with either)"
                    .to_owned(),
            });
        }
        Ok(Self {
            keys,
            ..Self::default()
        })
    }

    /// The key a client registration proves with: its own if it has one, else the cache's
    /// shared key or a new one, as the cache was built; none otherwise. The key is recorded
    /// by thumbprint, so that tokens bound to it find it.
    pub(crate) fn key_of_client(&self, own: Option<DpopKey>) -> Option<DpopKey> {
        let key = match (own, &self.keys) {
            (Some(own), _) => own,
            #[cfg(feature = "dpop")]
            (None, Keys::Shared(shared)) => shared.clone(),
            #[cfg(feature = "dpop")]
            (None, Keys::PerClient) => DpopKey::generate(),
            (None, Keys::None) => return None,
            #[cfg(feature = "dpop")]
            (None, Keys::Conflict) => return None,
        };
        let mut in_use = self.in_use.write().unwrap_or_else(|p| p.into_inner());
        in_use
            .entry(key.thumbprint().to_owned())
            .or_insert_with(|| key.clone());
        Some(key)
    }

    /// Whether the cache generates a key for each client registration without one.
    pub(crate) fn generates_keys(&self) -> bool {
        #[cfg(feature = "dpop")]
        return matches!(self.keys, Keys::PerClient);
        #[cfg(not(feature = "dpop"))]
        false
    }

    /// The key with this thumbprint, if a registration of the cache proves with it.
    pub(crate) fn key_with_thumbprint(&self, thumbprint: &str) -> Option<DpopKey> {
        let in_use = self.in_use.read().unwrap_or_else(|p| p.into_inner());
        in_use.get(thumbprint).cloned()
    }

    /// How `resource` uses DPoP.
    pub(crate) fn use_for(&self, resource: &ResourceUri) -> Use {
        let uses = self.uses.read().unwrap_or_else(|p| p.into_inner());
        uses.get(resource.key()).copied().unwrap_or(Use::Off)
    }

    /// Raises how `resource` uses DPoP to at least `to` (never lowers it: a server cannot talk
    /// the client out of DPoP). Returns whether it changed.
    pub(crate) fn raise(&self, resource: &ResourceUri, to: Use) -> bool {
        let mut uses = self.uses.write().unwrap_or_else(|p| p.into_inner());
        let current = uses.entry(resource.key().to_owned()).or_insert(Use::Off);
        let changed = *current < to;
        *current = (*current).max(to);
        changed
    }

    /// The key to prove possession with for a token request for `resource` by a client
    /// registration whose key is `client_key`: none where the resource does not use DPoP; an
    /// error naming the settings where it does and the registration has no key.
    pub(crate) fn key_for<'k>(
        &self,
        resource: &ResourceUri,
        client_key: Option<&'k DpopKey>,
    ) -> Result<Option<&'k DpopKey>, BuildError> {
        match (self.use_for(resource), client_key) {
            (Use::Off, _) => Ok(None),
            (_, Some(key)) => Ok(Some(key)),
            (Use::Asked | Use::Required, None) => Err(missing_key(resource)),
        }
    }

    /// A fresh proof with `key` for a request with `method` to `url`, with the nonce last
    /// remembered for `url`'s origin and, for a resource request, `ath` of `access_token`.
    pub(crate) fn proof(
        &self,
        key: &DpopKey,
        method: &str,
        url: &Url,
        access_token: Option<&str>,
    ) -> Option<HeaderValue> {
        let nonce = {
            let nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
            nonces.get(&origin(url)).cloned()
        };
        let proof = key.proof(method, &htu(url), access_token, nonce.as_deref());
        HeaderValue::try_from(proof).ok()
    }

    /// Remembers the `DPoP-Nonce` of an answer from `url`, if it has a well-formed one
    /// (RFC 9449 §8.1: `1*NQCHAR`). Returns whether the nonce is new for the origin (a
    /// retry with the same nonce would fail the same way).
    pub(crate) fn remember(&self, url: &Url, headers: &HeaderMap) -> bool {
        let Some(nonce) = headers
            .get(DPOP_NONCE)
            .and_then(|v| v.to_str().ok())
            .filter(|n| is_nonce(n))
        else {
            return false;
        };
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let origin = origin(url);
        if nonces.get(&origin).is_some_and(|n| n == nonce) {
            return false;
        }
        if nonces.len() >= MAX_NONCE_ORIGINS && !nonces.contains_key(&origin) {
            nonces.clear();
        }
        nonces.insert(origin, nonce.to_owned());
        true
    }

    /// RFC 9449 §5.1 and §5.2: where `resource` uses DPoP and its client registration has a
    /// key (`client_key`), the algorithm lists the authorization server (`issuer`) and the
    /// resource publish, where they publish one, must name the key's algorithm; otherwise
    /// every proof would be refused, so the error says so before any is sent.
    pub(crate) fn check_algorithm(
        &self,
        resource: &ResourceUri,
        (issuer, client_key): (&str, Option<&DpopKey>),
        server: Option<&[String]>,
        resource_metadata: Option<&[String]>,
    ) -> Result<(), BuildError> {
        let Some(key) = client_key else {
            return Ok(());
        };
        if self.use_for(resource) == Use::Off {
            return Ok(());
        }
        let algorithm = key.algorithm();
        for (who, list) in [
            (format!("the authorization server {issuer}"), server),
            (
                format!("the resource {}", resource.key()),
                resource_metadata,
            ),
        ] {
            if let Some(list) = list
                && !list.iter().any(|listed| listed == algorithm)
            {
                return Err(BuildError::Setting {
                    setting: "dpop_key",
                    reason: format!(
                        "{who} accepts DPoP proofs signed with {} only \
                         (dpop_signing_alg_values_supported), and the client's DPoP key signs \
                         with {algorithm}, the one algorithm the crate supports: no proof of \
                         it would be accepted",
                        shown_list(list)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A server's list of algorithm names, bounded and escaped for a message.
fn shown_list(list: &[String]) -> String {
    let shown: Vec<String> = list
        .iter()
        .take(8)
        .map(|name| format!("{:?}", name.chars().take(20).collect::<String>()))
        .collect();
    match list.len() {
        0 => "no algorithm".to_owned(),
        n if n > 8 => format!("{}, …", shown.join(", ")),
        _ => shown.join(", "),
    }
}

/// The error for a resource that requires DPoP in a cache without a key.
pub(crate) fn missing_key(resource: &ResourceUri) -> BuildError {
    BuildError::Setting {
        setting: "dpop_key",
        reason: format!(
            "{} uses DPoP-bound tokens (RFC 9449: named with use_dpop_for or require_dpop_for, \
             or asked for by its metadata or a DPoP challenge), and its client registration has \
             no DPoP key: give it one with ClientRegistration::dpop_key or PreRegistered::dpop_key, \
             or give every client one with TokenCacheBuilder::dpop_key or \
             TokenCacheBuilder::generate_dpop_keys (feature `dpop`)",
            resource.key()
        ),
    }
}

/// RFC 9449 §4.2: `htu` is the request URI without query and fragment.
pub(crate) fn htu(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// RFC 9449 §8.1: `nonce = 1*NQCHAR`, NQCHAR = %x21 / %x23-5B / %x5D-7E.
fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= MAX_NONCE_LEN
        && nonce
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htu_drops_query_and_fragment_only() {
        let url = Url::parse("https://RS.example:443/mcp/a%20b?x=1#frag").unwrap();
        assert_eq!(htu(&url), "https://rs.example/mcp/a%20b");
        let url = Url::parse("http://127.0.0.1:8080/token").unwrap();
        assert_eq!(htu(&url), "http://127.0.0.1:8080/token");
    }

    #[test]
    fn nonces_are_remembered_per_origin_and_checked() {
        let dpop = Dpop::new(Keys::None).unwrap();
        let a = Url::parse("https://a.example/token").unwrap();
        let a_other_path = Url::parse("https://a.example/mcp").unwrap();
        let b = Url::parse("https://b.example/token").unwrap();
        let headers = |nonce: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(DPOP_NONCE, HeaderValue::from_str(nonce).unwrap());
            headers
        };
        assert!(dpop.remember(&a, &headers("n1")));
        // The same nonce again is no news; the origin's other paths share it.
        assert!(!dpop.remember(&a_other_path, &headers("n1")));
        assert!(dpop.remember(&b, &headers("n2")));
        assert!(!dpop.remember(&a, &headers("bad\"quote")));
        assert!(!dpop.remember(&a, &headers("has space")));
        assert!(!dpop.remember(&a, &HeaderMap::new()));
        let nonces = dpop.nonces.lock().unwrap();
        assert_eq!(
            nonces.get("https://a.example").map(String::as_str),
            Some("n1")
        );
        assert_eq!(
            nonces.get("https://b.example").map(String::as_str),
            Some("n2")
        );
    }

    #[test]
    fn a_resource_requiring_dpop_without_a_key_is_an_error_naming_the_setting() {
        let dpop = Dpop::new(Keys::None).unwrap();
        let resource = ResourceUri::parse("https://rs.example/mcp").unwrap();
        assert!(matches!(dpop.key_for(&resource, None), Ok(None)));
        assert!(dpop.raise(&resource, Use::Required));
        // Never lowered.
        assert!(!dpop.raise(&resource, Use::Asked));
        assert_eq!(dpop.use_for(&resource), Use::Required);
        let error = dpop.key_for(&resource, None).unwrap_err().to_string();
        assert!(
            error.contains("ClientRegistration::dpop_key")
                && error.contains("TokenCacheBuilder::generate_dpop_keys")
                && error.contains("https://rs.example/mcp"),
            "{error}"
        );
    }
}
