//! The token the cache hands out: bound to the resource it was requested for, and turned into
//! a header only through the crate's one decision ([`route::decide`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use secrecy::ExposeSecret;
use tokio::time::Instant;
use url::Url;

use super::route::{self, Route, Routes};
use crate::audience::Refusal;
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
    routes: Arc<Routes>,
}

impl BearerToken {
    pub(crate) fn new(token: Arc<CachedToken>, routes: Arc<Routes>) -> Self {
        Self { token, routes }
    }

    /// Decides whether the token may be sent to `request`, and if so returns the
    /// `Authorization: Bearer` header value, marked sensitive so that HTTP libraries keep it
    /// out of their logs. The decision: the URL passes the checks every request URL must pass
    /// (no userinfo, a path every server reads the same way); the longest configured resource
    /// that covers it is the token's resource (a token for `https://h/` is refused for
    /// `https://h/b/x` when `https://h/b` is configured); and a readable `aud` agrees.
    pub fn header_for(&self, request: &Url) -> Result<HeaderValue, Refusal> {
        self.routes.decide(request, &self.token)?;
        self.header_value(request)
    }

    /// The header for a request whose URL is already resolved to `route`: the one decision,
    /// then the header value.
    pub(crate) fn header_on(&self, route: &Route<'_>) -> Result<HeaderValue, Refusal> {
        route::decide(route, &self.token)?;
        self.header_value(route.url())
    }

    /// The header value, marked sensitive; only after the decision.
    fn header_value(&self, request: &Url) -> Result<HeaderValue, Refusal> {
        let mut value = HeaderValue::try_from(format!(
            "Bearer {}",
            self.token.access_token.expose_secret()
        ))
        .map_err(|_| Refusal::unusable_token(&self.token.resource, request))?;
        value.set_sensitive(true);
        Ok(value)
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
            .field("token", &"[redacted]")
            .finish()
    }
}
