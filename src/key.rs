//! The cache key: the one identity used for storing tokens and for de-duplicating fetches.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::{ResourceUri, ScopeSet};

/// The identity of a cached token (rules §15): issuer, resource, scopes, client and account.
///
/// Two keys are equal exactly when all five parts are equal: the issuer as an exact string
/// (no case folding or slash normalization, RFC 8414 §3.3), the resource by its match key, the
/// scopes in canonical form, the client id exactly, and the optional account discriminator
/// exactly. The same key is used to store a token and to merge concurrent fetches, so a fetch
/// is never shared between requests that would be cached apart (the bug behind MSAL JS PR
/// #8680 and Duende foss #360).
///
/// [`encoded`](Self::encoded) is an unambiguous byte encoding: every part is length-prefixed,
/// so no two different keys encode alike whatever their parts contain.
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

struct Inner {
    issuer: Box<str>,
    resource: ResourceUri,
    scopes: ScopeSet,
    client_id: Box<str>,
    account: Option<Box<str>>,
    exchanged: bool,
    encoded: Box<[u8]>,
}

/// Version of the encoding; a later part (a DPoP key thumbprint, say) bumps it.
const ENCODING_VERSION: u8 = 1;

impl CacheKey {
    /// A key with no account discriminator.
    pub fn new(issuer: &str, resource: &ResourceUri, scopes: &ScopeSet, client_id: &str) -> Self {
        Self::build(issuer, resource, scopes, client_id, None, false)
    }

    /// The same key for one account (a user, a tenant, a subject): tokens for different
    /// accounts are never shared.
    pub fn with_account(self, account: &str) -> Self {
        let inner = &self.inner;
        Self::build(
            &inner.issuer,
            &inner.resource,
            &inner.scopes,
            &inner.client_id,
            Some(account),
            inner.exchanged,
        )
    }

    /// The same key for a token obtained by RFC 8693 token exchange. Such a token acts for the
    /// subject whose token was exchanged, so it is never shared with a token of the client's
    /// own grant for the same account.
    pub fn exchanged(self) -> Self {
        let inner = &self.inner;
        Self::build(
            &inner.issuer,
            &inner.resource,
            &inner.scopes,
            &inner.client_id,
            inner.account.as_deref(),
            true,
        )
    }

    /// The same key with other scopes.
    pub fn with_scopes(&self, scopes: &ScopeSet) -> Self {
        let inner = &self.inner;
        Self::build(
            &inner.issuer,
            &inner.resource,
            scopes,
            &inner.client_id,
            inner.account.as_deref(),
            inner.exchanged,
        )
    }

    fn build(
        issuer: &str,
        resource: &ResourceUri,
        scopes: &ScopeSet,
        client_id: &str,
        account: Option<&str>,
        exchanged: bool,
    ) -> Self {
        let encoded = encode(
            issuer,
            resource.key(),
            scopes.as_str(),
            client_id,
            account,
            exchanged,
        );
        Self {
            inner: Arc::new(Inner {
                issuer: issuer.into(),
                resource: resource.clone(),
                scopes: scopes.clone(),
                client_id: client_id.into(),
                account: account.map(Into::into),
                exchanged,
                encoded,
            }),
        }
    }

    /// The issuer, exactly as given.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The resource.
    pub fn resource(&self) -> &ResourceUri {
        &self.inner.resource
    }

    /// The requested scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.inner.scopes
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The account discriminator, if any.
    pub fn account(&self) -> Option<&str> {
        self.inner.account.as_deref()
    }

    /// Whether the key is for a token obtained by token exchange.
    pub fn is_exchanged(&self) -> bool {
        self.inner.exchanged
    }

    /// The unambiguous encoding: a version byte, then each part as an 8-byte big-endian length
    /// and its bytes, in the order issuer, resource key, scope key, client id; then `0` for no
    /// account or `1` followed by the account's length and bytes; then `1` for a token from
    /// token exchange or `0` otherwise.
    pub fn encoded(&self) -> &[u8] {
        &self.inner.encoded
    }
}

fn encode(
    issuer: &str,
    resource: &str,
    scopes: &str,
    client_id: &str,
    account: Option<&str>,
    exchanged: bool,
) -> Box<[u8]> {
    let parts = [issuer, resource, scopes, client_id];
    let size =
        2 + parts.iter().map(|p| 8 + p.len()).sum::<usize>() + account.map_or(0, |a| 8 + a.len());
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
    out.push(u8::from(exchanged));
    out.into_boxed_slice()
}

/// A part as its length (8 bytes, big-endian: no length a `usize` can hold is cut) and bytes.
fn push_part(out: &mut Vec<u8>, part: &str) {
    out.extend_from_slice(&(part.len() as u64).to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.encoded == other.inner.encoded
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.encoded.hash(state);
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
            .field("exchanged", &self.is_exchanged())
            .finish()
    }
}

/// `issuer | resource | scopes | client_id[ | account]`, for logs and messages.
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
        if self.is_exchanged() {
            f.write_str(", by token exchange")?;
        }
        Ok(())
    }
}
