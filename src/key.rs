//! The cache key: the one identity used for storing tokens and for de-duplicating fetches.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use secrecy::zeroize::Zeroizing;
use sha2::Sha256;

use crate::resource::ResourceUri;
use crate::scope::ScopeSet;

/// The identity of a cached token (rules §15): issuer, resource, scopes, client, account, how
/// the token was obtained (the grant), and for a token from RFC 8693 token exchange the subject
/// token it was exchanged for.
///
/// Two keys are equal exactly when all parts are equal: the issuer as an exact string
/// (no case folding or slash normalization, RFC 8414 §3.3), the resource by its match key, the
/// scopes in canonical form, the client id exactly, the optional account discriminator
/// exactly, and the subject token's fingerprint. The same key is used to store a token and to
/// merge concurrent fetches, so a fetch is never shared between requests that would be cached
/// apart (the bug behind MSAL JS PR #8680 and Duende foss #360).
///
/// The grant part tells apart tokens of one client obtained in different ways: the client's own
/// grant (client credentials, or a user's authorization and its refresh), token exchange, the
/// JWT bearer grant with a workload's assertion, and the JWT bearer grant with an ID-JAG from an
/// enterprise IdP (whose issuer is part of the key). A token obtained one way is never served,
/// nor fetched in a shared flight, for a request that would obtain it another way.
///
/// An exchanged token acts for its subject, so its key holds a keyed fingerprint of the
/// subject token and its type (HMAC-SHA-256 under a random key of the cache's client, never a
/// plain hash): another subject token, or a forged one, with the same `account` is another
/// key, a miss, and a flight of its own. The account is a label, not an identity. The
/// fingerprint is never shown: `Display` and `Debug` say only "by token exchange" with the
/// fingerprint's first four bytes.
///
/// [`encoded`](Self::encoded) is an unambiguous byte encoding: every part is length-prefixed,
/// so no two different keys encode alike whatever their parts contain. Keys are equal exactly
/// when their encodings are (they compare the parts the encoding is made of); the encoding
/// itself is made when asked for (the shared level's names, a file store's places), not kept
/// in every key.
///
/// ```
/// use audience_cache::{CacheKey, ResourceUri, ScopeSet};
///
/// let a = CacheKey::new(
///     "https://auth.example.com",
///     &ResourceUri::parse("https://mcp.example.com/mcp")?,
///     &ScopeSet::parse("b a")?,
///     "client-1",
/// );
/// let b = CacheKey::new(
///     "https://auth.example.com",
///     &ResourceUri::parse("https://MCP.example.com:443/mcp")?,
///     &ScopeSet::parse("a b")?,
///     "client-1",
/// );
/// assert_eq!(a, b);
/// assert_ne!(a, b.clone().with_account("alice"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct CacheKey {
    inner: Arc<Inner>,
}

/// A key's parts. Those that many keys have in common (issuer, resource, client, DPoP key:
/// every key of one resource and client) are one allocation that the keys derived from one
/// another share, so that a million keys of one resource hold one copy of them beside their
/// encodings. (The encoding is made with the key, not when first asked for: a lazily filled
/// cell would make the key a mutable key type to clippy, in the maps of every user.)
struct Inner {
    common: Arc<Common>,
    scopes: ScopeSet,
    account: Option<Box<str>>,
    /// How the token was obtained.
    grant: GrantPart,
    /// For a token from token exchange: its subject token's fingerprint (boxed: most keys
    /// have none, and would carry its room).
    subject: Option<Box<SubjectFingerprint>>,
}

struct Common {
    issuer: Box<str>,
    resource: ResourceUri,
    client_id: Box<str>,
    /// The RFC 7638 thumbprint of the DPoP key of the cache that holds the token.
    dpop: Option<Box<str>>,
}

/// Version of the encoding; a later part bumps it. Version 2 added the subject token's
/// fingerprint to exchanged tokens' keys, version 3 the DPoP key's thumbprint, version 4 the
/// grant: an entry written under an older version is another key, never read as one of these.
const ENCODING_VERSION: u8 = 4;

/// How a token was obtained: a part of its key (encoding version 4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GrantPart {
    /// The client's own grant: client credentials, or a user's authorization (the code grant
    /// and its refresh). A client registration has one of the two, so its client id tells
    /// them apart; they share the part every key had before the grant was part of it.
    Client,
    /// RFC 8693 token exchange (the subject part says of which subject token).
    TokenExchange,
    /// The JWT bearer grant (RFC 7523 §2.1) with a workload's assertion.
    JwtBearer,
    /// The JWT bearer grant with an ID-JAG issued by this enterprise IdP (its issuer).
    IdJag(Box<str>),
}

impl GrantPart {
    /// The tag byte of the encoding.
    fn tag(&self) -> u8 {
        match self {
            Self::Client => 0,
            Self::TokenExchange => 1,
            Self::JwtBearer => 2,
            Self::IdJag(_) => 3,
        }
    }
}

impl CacheKey {
    /// A key with no account discriminator.
    pub fn new(issuer: &str, resource: &ResourceUri, scopes: &ScopeSet, client_id: &str) -> Self {
        let common = Common {
            issuer: issuer.into(),
            resource: resource.clone(),
            client_id: client_id.into(),
            dpop: None,
        };
        Self::build(Arc::new(common), scopes, None, &GrantPart::Client, None)
    }

    /// The same key for one account (a user, a tenant, a subject): tokens for different
    /// accounts are never shared.
    pub fn with_account(self, account: &str) -> Self {
        let inner = &self.inner;
        Self::build(
            inner.common.clone(),
            &inner.scopes,
            Some(account),
            &inner.grant,
            inner.subject.as_deref().copied(),
        )
    }

    /// The same key for a token obtained by RFC 8693 token exchange of the subject token with
    /// this fingerprint. Such a token acts for that subject, so it is never shared with a token
    /// of the client's own grant, nor with one exchanged for another subject token, whatever
    /// the account.
    pub(crate) fn exchanged(self, subject: SubjectFingerprint) -> Self {
        let inner = &self.inner;
        Self::build(
            inner.common.clone(),
            &inner.scopes,
            inner.account.as_deref(),
            &GrantPart::TokenExchange,
            Some(subject),
        )
    }

    /// The same key for a token obtained by `grant` (see [`GrantPart`]).
    pub(crate) fn obtained_by(self, grant: GrantPart) -> Self {
        let inner = &self.inner;
        Self::build(
            inner.common.clone(),
            &inner.scopes,
            inner.account.as_deref(),
            &grant,
            inner.subject.as_deref().copied(),
        )
    }

    /// The same key for a cache whose DPoP key has this RFC 7638 `thumbprint` (RFC 9449): a
    /// token bound to one key is never served for another, and a key rotation starts with an
    /// empty cache (in memory and in a shared level alike).
    pub(crate) fn with_dpop(self, thumbprint: &str) -> Self {
        let inner = &self.inner;
        let common = Common {
            issuer: inner.common.issuer.clone(),
            resource: inner.common.resource.clone(),
            client_id: inner.common.client_id.clone(),
            dpop: Some(thumbprint.into()),
        };
        Self::build(
            Arc::new(common),
            &inner.scopes,
            inner.account.as_deref(),
            &inner.grant,
            inner.subject.as_deref().copied(),
        )
    }

    /// The same key with other scopes.
    pub fn with_scopes(&self, scopes: &ScopeSet) -> Self {
        let inner = &self.inner;
        Self::build(
            inner.common.clone(),
            scopes,
            inner.account.as_deref(),
            &inner.grant,
            inner.subject.as_deref().copied(),
        )
    }

    fn build(
        common: Arc<Common>,
        scopes: &ScopeSet,
        account: Option<&str>,
        grant: &GrantPart,
        subject: Option<SubjectFingerprint>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                common,
                scopes: scopes.clone(),
                account: account.map(Into::into),
                grant: grant.clone(),
                subject: subject.map(Box::new),
            }),
        }
    }

    /// The issuer, exactly as given.
    pub fn issuer(&self) -> &str {
        &self.inner.common.issuer
    }

    /// The resource.
    pub fn resource(&self) -> &ResourceUri {
        &self.inner.common.resource
    }

    /// The requested scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.inner.scopes
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.inner.common.client_id
    }

    /// The account discriminator, if any.
    pub fn account(&self) -> Option<&str> {
        self.inner.account.as_deref()
    }

    /// Whether the key is for a token obtained by token exchange.
    pub fn is_exchanged(&self) -> bool {
        self.inner.subject.is_some()
    }

    /// The grant the token is obtained by, in words: `"client"` (client credentials, or a
    /// user's authorization), `"token exchange"`, `"jwt-bearer"` (a workload's assertion) or
    /// `"id-jag"` (an ID-JAG from an enterprise IdP).
    pub fn grant(&self) -> &'static str {
        match self.inner.grant {
            GrantPart::Client => "client",
            GrantPart::TokenExchange => "token exchange",
            GrantPart::JwtBearer => "jwt-bearer",
            GrantPart::IdJag(_) => "id-jag",
        }
    }

    /// Whether the token acts for a subject whose credential only this process holds (token
    /// exchange's subject token, an ID-JAG's user, a workload's own assertion): such a token
    /// is never written to, nor read from, a level shared with other processes.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn stays_in_process(&self) -> bool {
        !matches!(self.inner.grant, GrantPart::Client)
    }

    /// The RFC 7638 thumbprint of the DPoP key of the cache the key belongs to, if it has one.
    pub fn dpop_thumbprint(&self) -> Option<&str> {
        self.inner.common.dpop.as_deref()
    }

    /// The unambiguous encoding: a version byte (4), then each part as an 8-byte big-endian
    /// length and its bytes, in the order issuer, resource key, scope key, client id; then `0`
    /// for no account or `1` followed by the account's length and bytes; then the grant's tag
    /// (`0` the client's own grant, `1` token exchange, `2` JWT bearer with a workload's
    /// assertion, `3` ID-JAG followed by the IdP issuer's length and bytes); then `0`, or for a
    /// token from token exchange `1` followed by the 32 bytes of the subject token's
    /// fingerprint; then `0`, or for a cache with a DPoP key `1` followed by its thumbprint's
    /// length and bytes.
    pub fn encoded(&self) -> Vec<u8> {
        let (inner, common) = (&self.inner, &self.inner.common);
        encode(
            &common.issuer,
            common.resource.key(),
            inner.scopes.as_str(),
            &common.client_id,
            inner.account.as_deref(),
            &inner.grant,
            inner.subject.as_deref(),
            common.dpop.as_deref(),
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn encode(
    issuer: &str,
    resource: &str,
    scopes: &str,
    client_id: &str,
    account: Option<&str>,
    grant: &GrantPart,
    subject: Option<&SubjectFingerprint>,
    dpop: Option<&str>,
) -> Vec<u8> {
    let parts = [issuer, resource, scopes, client_id];
    // The exact length: the version, the length-prefixed parts, the account's flag and part,
    // the grant's tag and IdP, the subject's flag and fingerprint, the DPoP flag and
    // thumbprint (checked below, so that the layout and its length cannot drift apart).
    let idp = match grant {
        GrantPart::IdJag(idp) => Some(&**idp),
        _ => None,
    };
    let size = 1
        + parts.iter().map(|p| 8 + p.len()).sum::<usize>()
        + 1
        + account.map_or(0, |a| 8 + a.len())
        + 1
        + idp.map_or(0, |i| 8 + i.len())
        + 1
        + subject.map_or(0, |_| FINGERPRINT_LEN)
        + 1
        + dpop.map_or(0, |t| 8 + t.len());
    let mut out = Vec::with_capacity(size);
    out.push(ENCODING_VERSION);
    for p in parts {
        push_part(&mut out, p);
    }
    match account {
        None => out.push(0),
        Some(account) => {
            out.push(1);
            push_part(&mut out, account);
        }
    }
    out.push(grant.tag());
    if let Some(idp) = idp {
        push_part(&mut out, idp);
    }
    match subject {
        None => out.push(0),
        Some(subject) => {
            out.push(1);
            out.extend_from_slice(&subject.0);
        }
    }
    match dpop {
        None => out.push(0),
        Some(thumbprint) => {
            out.push(1);
            push_part(&mut out, thumbprint);
        }
    }
    debug_assert_eq!(out.len(), size, "the key's encoding is as long as computed");
    out
}

/// A part as its length (8 bytes, big-endian: no length a `usize` can hold is cut) and bytes.
fn push_part(out: &mut Vec<u8>, part: &str) {
    out.extend_from_slice(&(part.len() as u64).to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

/// Equal exactly when the encodings are: the encoding is injective in these parts.
impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&*self.inner, &*other.inner);
        std::ptr::eq(a, b)
            || (a.common.same_as(&b.common)
                && a.scopes == b.scopes
                && a.account == b.account
                && a.grant == b.grant
                && a.subject == b.subject)
    }
}

impl Eq for CacheKey {}

/// The parts [`PartialEq`] compares, each hashed with its length or variant, so that equal
/// keys hash alike.
impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (inner, common) = (&*self.inner, &*self.inner.common);
        common.issuer.hash(state);
        common.resource.key().hash(state);
        common.client_id.hash(state);
        common.dpop.hash(state);
        inner.scopes.as_str().hash(state);
        inner.account.hash(state);
        inner.grant.hash(state);
        inner.subject.hash(state);
    }
}

impl Common {
    /// The same issuer, resource (by key), client and DPoP key: shared, or alike.
    fn same_as(self: &Arc<Self>, other: &Arc<Self>) -> bool {
        Arc::ptr_eq(self, other)
            || (self.issuer == other.issuer
                && self.resource.key() == other.resource.key()
                && self.client_id == other.client_id
                && self.dpop == other.dpop)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheKey")
            .field("issuer", &self.issuer())
            .field("resource", &self.resource().key())
            .field("scopes", &self.scopes().as_str())
            .field("client_id", &self.client_id())
            .field("account", &self.account())
            .field("grant", &self.inner.grant)
            .field("exchanged", &self.inner.subject)
            .field("dpop", &self.dpop_thumbprint())
            .finish()
    }
}

/// Issuer, resource, scopes, client, account (if any) and "by token exchange" (with the subject
/// fingerprint's first bytes) for logs and messages.
impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "issuer {:?}, resource {}, scopes {:?}, client {:?}",
            self.issuer(),
            self.resource().key(),
            self.scopes().as_str(),
            self.client_id()
        )?;
        if let Some(account) = self.account() {
            write!(f, ", account {account:?}")?;
        }
        match &self.inner.grant {
            GrantPart::Client | GrantPart::TokenExchange => {}
            GrantPart::JwtBearer => f.write_str(", by jwt-bearer grant")?,
            GrantPart::IdJag(idp) => write!(f, ", by ID-JAG from {idp:?}")?,
        }
        if let Some(subject) = &self.inner.subject {
            write!(f, ", by token exchange for subject {subject:?}")?;
        }
        if let Some(thumbprint) = self.dpop_thumbprint() {
            write!(f, ", DPoP key {thumbprint}")?;
        }
        Ok(())
    }
}

const FINGERPRINT_LEN: usize = 32;

/// HMAC-SHA-256 of a subject token and its type under a [`SubjectKey`]: which subject an
/// exchanged token acts for, without the subject token. Shown only as its first four bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SubjectFingerprint([u8; FINGERPRINT_LEN]);

impl fmt::Debug for SubjectFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

/// The random key subject tokens are fingerprinted under: 32 bytes from the operating
/// system's generator (through `rand`'s thread generator), made once per client of a cache
/// and never shown. Keyed, so that a fingerprint (in a key's encoding, or a shared level's
/// entry names derived from it) cannot be checked against a guessed or stolen token.
pub(crate) struct SubjectKey {
    mac: Hmac<Sha256>,
}

impl SubjectKey {
    pub(crate) fn random() -> Self {
        // RFC 2104 §2: a key shorter than the hash's block (64 bytes for SHA-256) is padded
        // with zeros. Padding the 32 random bytes here gives the same HMAC, through the
        // constructor that takes a block-sized key and cannot fail.
        let mut block = Zeroizing::new([0u8; 64]);
        rand::thread_rng().fill_bytes(&mut block[..32]);
        Self {
            mac: <Hmac<Sha256> as KeyInit>::new(&(*block).into()),
        }
    }

    /// The fingerprint of `token` of RFC 8693 §3 type `token_type`, both length-prefixed so
    /// that no two (type, token) pairs are fed alike.
    pub(crate) fn fingerprint(&self, token_type: &str, token: &[u8]) -> SubjectFingerprint {
        let mut mac = self.mac.clone();
        for part in [token_type.as_bytes(), token] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        SubjectFingerprint(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey([redacted])")
    }
}

/// The grant part's tests (kept apart to keep this file short).
#[cfg(test)]
mod grant_tests;

#[cfg(test)]
mod tests;
