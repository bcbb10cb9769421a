//! The token the cache hands out: bound to the resource it was requested for, and turned into
//! a header only through the crate's one decision ([`route::decide`]). A DPoP-bound token's
//! proof (RFC 9449 §7) is made by the same call that makes the decision, for the URL the
//! decision approved: no path gets a proof without it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use tokio::time::Instant;
use url::Url;

use super::route::{self, Route, Routes};
use crate::audience::Refusal;
use crate::dpop::Dpop;
use crate::key::CacheKey;
use crate::resource::ResourceUri;
use crate::scope::ScopeSet;
use crate::token::CachedToken;

/// An access token handed out by the cache, bound to the resource it was requested for.
///
/// The token itself is reachable only through explicit calls:
/// [`header_for`](Self::header_for), which makes the crate's one decision for the URL the
/// header is meant for (the same one `AuthorizedClient` makes at every hop: the URL's owner is
/// the longest configured resource that covers it, and the token must be for that resource
/// and pass its audience policy) and marks the header value sensitive, and
/// [`expose_secret`](Self::expose_secret), for code that must pass the raw token on (and so
/// takes over the responsibility of checking where it goes). `Debug` shows the resource,
/// scopes and remaining lifetime, never the token.
///
/// ```no_run
/// # async fn run(cache: audience_cache::TokenCache) -> Result<(), Box<dyn std::error::Error>> {
/// use audience_cache::{ResourceUri, ScopeSet};
/// use url::Url;
///
/// let mcp = ResourceUri::parse("https://mcp.example.com/mcp")?;
/// let token = cache.token(&mcp, &ScopeSet::empty()).await?;
/// // Checked again for the exact URL the header is for:
/// let header = token.header_for(&Url::parse("https://mcp.example.com/mcp/tools")?)?;
/// assert!(header.is_sensitive());
/// // A URL outside the resource is refused, and the token stays unsent.
/// assert!(token.header_for(&Url::parse("https://api.example.com/")?).is_err());
/// println!("{token:?}"); // BearerToken { resource: .., token: "[redacted]", .. }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BearerToken {
    token: Arc<CachedToken>,
    outlet: Arc<Outlet>,
}

/// What a handed-out token makes its headers with: the configured resources, for the one
/// decision (a token decides against the resources configured when its header is made, not
/// when it was fetched), and the cache's DPoP keys and nonces, for a bound token's proofs. One
/// allocation shared by the cache and every handle, so that a handle adds one reference to it.
pub(crate) struct Outlet {
    pub(crate) routes: Routes,
    pub(crate) dpop: Arc<Dpop>,
}

/// The headers that carry a token on one request, made after the crate's decision for that
/// request's URL: `Authorization` (marked sensitive), and for a DPoP-bound token the `DPoP`
/// proof made for that request's method and for the URL the decision approved (RFC 9449 §7).
/// A proof is for one request only: make new headers for every request, redirect hop and
/// retry.
#[derive(Clone)]
pub struct AuthorizationHeaders {
    authorization: HeaderValue,
    dpop: Option<HeaderValue>,
}

impl AuthorizationHeaders {
    /// `Authorization: Bearer <token>` or, for a DPoP-bound token, `Authorization: DPoP
    /// <token>`; marked sensitive.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// The `DPoP` proof header, for a DPoP-bound token.
    pub fn dpop(&self) -> Option<&HeaderValue> {
        self.dpop.as_ref()
    }

    /// Sets the headers on `headers`, replacing an `Authorization` or `DPoP` already there (a
    /// proof is never left over from another request).
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(http::header::AUTHORIZATION, self.authorization);
        headers.remove(crate::dpop::DPOP);
        if let Some(proof) = self.dpop {
            headers.insert(crate::dpop::DPOP, proof);
        }
    }
}

impl fmt::Debug for AuthorizationHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationHeaders")
            .field("authorization", &"[redacted]")
            .field("dpop", &self.dpop.as_ref().map(|_| "[proof]"))
            .finish()
    }
}

impl BearerToken {
    pub(crate) fn new(token: Arc<CachedToken>, outlet: Arc<Outlet>) -> Self {
        Self { token, outlet }
    }

    /// Decides whether the token may be sent to `request`, and if so returns the
    /// `Authorization: Bearer` header value, marked sensitive so that HTTP libraries keep it
    /// out of their logs. The decision: the URL passes the checks every request URL must pass
    /// (no userinfo, a path every server reads the same way); the longest configured resource
    /// that covers it is the token's resource (a token for `https://h/` is refused for
    /// `https://h/b/x` when `https://h/b` is configured); and a readable `aud` agrees.
    ///
    /// For a DPoP-bound token ([`is_dpop_bound`](Self::is_dpop_bound)) the value is
    /// `DPoP <token>`, which a resource server accepts only with a proof: use
    /// [`headers_for`](Self::headers_for), which makes both.
    pub fn header_for(&self, request: &Url) -> Result<HeaderValue, Refusal> {
        self.outlet.routes.decide(request, &self.token)?;
        self.authorization(request)
    }

    /// Like [`header_for`](Self::header_for), for a request with `method`: the one decision
    /// for `request`, then the `Authorization` header and, for a DPoP-bound token, a fresh
    /// `DPoP` proof for `method` and `request` (its `htu` the URL without query and fragment,
    /// `ath` the token's hash, and the nonce the server last gave, RFC 9449 §7, §9). Make new
    /// headers for each request: a proof is never reused.
    pub fn headers_for(
        &self,
        method: &Method,
        request: &Url,
    ) -> Result<AuthorizationHeaders, Refusal> {
        self.outlet.routes.decide(request, &self.token)?;
        self.headers(method, request)
    }

    /// The headers for a request with `method` whose URL is already resolved to `route`: the
    /// one decision, then the headers, the proof for the URL the decision approved.
    pub(crate) fn headers_on(
        &self,
        method: &Method,
        route: &Route<'_>,
    ) -> Result<AuthorizationHeaders, Refusal> {
        route::decide(route, &self.token)?;
        self.headers(method, route.url())
    }

    /// The headers; only after the decision for `request`.
    fn headers(&self, method: &Method, request: &Url) -> Result<AuthorizationHeaders, Refusal> {
        let authorization = self.authorization(request)?;
        let dpop = if self.token.dpop_bound {
            let token = self.token.access_token.expose_secret();
            // The key the token is bound to: the one its cache key names, never another.
            let proof = (self.token.key.dpop_thumbprint())
                .and_then(|thumbprint| self.outlet.dpop.key_with_thumbprint(thumbprint))
                .and_then(|key| {
                    self.outlet
                        .dpop
                        .proof(&key, method.as_str(), request, Some(token))
                })
                .ok_or_else(|| Refusal::unusable_token(&self.token.resource, request))?;
            Some(proof)
        } else {
            None
        };
        Ok(AuthorizationHeaders {
            authorization,
            dpop,
        })
    }

    /// The `Authorization` value, marked sensitive; only after the decision. Made when the
    /// token was received (with the DPoP scheme for a bound token, RFC 9449 §7.1): a
    /// reference count, no copy of the token.
    fn authorization(&self, request: &Url) -> Result<HeaderValue, Refusal> {
        self.token
            .access_token
            .header()
            .cloned()
            .ok_or_else(|| Refusal::unusable_token(&self.token.resource, request))
    }

    /// Whether the token is bound to its client's DPoP key (RFC 9449 `token_type: DPoP`): it
    /// goes out as `Authorization: DPoP` with a proof ([`headers_for`](Self::headers_for)).
    pub fn is_dpop_bound(&self) -> bool {
        self.token.dpop_bound
    }

    /// The raw access token. Whoever calls this must make sure it only goes to the resource
    /// ([`resource`](Self::resource)); prefer [`header_for`](Self::header_for).
    pub fn expose_secret(&self) -> &str {
        self.token.access_token.expose_secret()
    }

    /// The resource the token was requested for and may be sent to.
    pub fn resource(&self) -> &ResourceUri {
        &self.token.resource
    }

    /// The scopes granted (the requested ones when the server did not say).
    pub fn scopes(&self) -> &ScopeSet {
        &self.token.scopes
    }

    /// The scopes the token was requested with: its cache key's (the granted
    /// [`scopes`](Self::scopes) may be narrower or wider).
    pub fn requested_scopes(&self) -> &ScopeSet {
        self.token.key.scopes()
    }

    /// The audiences of the token's `aud` claim, if it is a readable JWT with one.
    pub fn audiences(&self) -> Option<Vec<&str>> {
        self.token.audience.values()
    }

    /// How long the cache will keep serving this token (its lifetime less the skew).
    pub fn expires_in(&self) -> Duration {
        self.token
            .schedule
            .expires_at
            .saturating_duration_since(Instant::now())
    }

    /// The cache key the token is stored under.
    pub fn key(&self) -> &CacheKey {
        &self.token.key
    }

    /// Whether two handles hold the same token (the same fetch), without showing it.
    pub fn same_token_as(&self, other: &BearerToken) -> bool {
        Arc::ptr_eq(&self.token, &other.token)
    }

    pub(crate) fn cached(&self) -> &Arc<CachedToken> {
        &self.token
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("resource", &self.token.resource.key())
            .field("scopes", &self.token.scopes.as_str())
            .field("expires_in", &self.expires_in())
            .field("dpop_bound", &self.token.dpop_bound)
            .field("token", &"[redacted]")
            .finish()
    }
}
