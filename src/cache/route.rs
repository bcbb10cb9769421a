//! Which configured resource a request URL belongs to, and the one decision that lets a token
//! go to it.
//!
//! Every way a token leaves the crate runs through [`decide`]: [`TokenCache::token_for`],
//! [`BearerToken::header_for`] after [`TokenCache::token`], and each hop of the request loop of
//! `AuthorizedClient` and `AudienceMiddleware`. A URL is resolved once per hop into a
//! [`Route`] (the longest configured resource that covers it, after the checks every request
//! URL must pass whatever resource is configured), and the decision compares the token with
//! that route. Resolving in one place and deciding in one place is what keeps a token for
//! `https://h/` away from `https://h/b/x` when `https://h/b` is configured at another
//! authorization server: the longest match owns the URL, and only its token goes there.
//!
//! [`TokenCache::token_for`]: super::TokenCache::token_for
//! [`TokenCache::token`]: super::TokenCache::token
//! [`BearerToken::header_for`]: super::BearerToken::header_for

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use url::Url;

use crate::audience::{AudiencePolicy, Refusal, RefusalKind};
use crate::config::ResourceConfig;
use crate::error::BuildError;
use crate::grant::GrantClient;
use crate::key::CacheKey;
use crate::resource::{self, Coverage, CoverageRefusal, ResourceUri};
use crate::token::CachedToken;

/// A configured resource with what hand-outs need, resolved once.
pub(crate) struct ResourceEntry {
    pub(crate) config: ResourceConfig,
    pub(crate) policy: Arc<AudiencePolicy>,
    pub(crate) client: Arc<GrantClient>,
    /// The key for the default scopes and no account, made once (the usual hand-out).
    pub(crate) default_key: CacheKey,
}

/// The configured resources, shared by the cache and every token it hands out (a token decides
/// against the resources configured when its header is made, not when it was fetched).
#[derive(Default)]
pub(crate) struct Routes {
    entries: RwLock<Vec<Arc<ResourceEntry>>>,
}

/// A request URL resolved to the resource that owns it: made once per hop, carried to where
/// the header is built. It borrows the URL (a hit allocates nothing for it); the request loop,
/// which keeps it across the send, owns a copy ([`Route::into_owned`]).
#[derive(Clone)]
pub(crate) struct Route<'u> {
    entry: Arc<ResourceEntry>,
    url: Cow<'u, Url>,
    /// The normalized path when it differs from the URL's (it has escapes to normalize).
    normalized: Option<Box<str>>,
}

/// Why a URL has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unrouted {
    /// The URL is refused whatever resource is configured: nothing is sent there with a
    /// token, and nothing is probed.
    Refused(CoverageRefusal),
    /// No configured resource covers the URL.
    NoResource,
}

impl Routes {
    /// The route of `url`: the URL checks first ([`resource::check_request`]: userinfo, a path
    /// servers could read two ways), then the longest configured resource that covers it.
    pub(crate) fn route<'u>(&self, url: &'u Url) -> Result<Route<'u>, Unrouted> {
        let path = resource::check_request(url).map_err(Unrouted::Refused)?;
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let entry = owner(&entries, url, &path)
            .cloned()
            .ok_or(Unrouted::NoResource)?;
        // A plain path is borrowed as it is; only a normalized one is kept.
        let normalized = match path {
            Cow::Borrowed(_) => None,
            Cow::Owned(path) => Some(path.into_boxed_str()),
        };
        Ok(Route {
            entry,
            url: Cow::Borrowed(url),
            normalized,
        })
    }

    /// [`route`](Self::route) and [`decide`] at once, under one read of the resources and
    /// without keeping the route: what [`BearerToken::header_for`](super::BearerToken::header_for)
    /// does for a URL it has no route for yet.
    pub(crate) fn decide(&self, url: &Url, token: &CachedToken) -> Result<(), Refusal> {
        let path = resource::check_request(url)
            .map_err(|reason| unrouted(token, url, Unrouted::Refused(reason)))?;
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        match owner(&entries, url, &path) {
            Some(entry) => decide_on(entry, url, &path, token),
            None => Err(unrouted(token, url, Unrouted::NoResource)),
        }
    }

    /// The entry configured for exactly `resource`.
    pub(crate) fn entry(&self, resource: &ResourceUri) -> Option<Arc<ResourceEntry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .find(|entry| entry.config.resource == *resource)
            .cloned()
    }

    /// Adds an entry; a resource configured already is an error.
    pub(crate) fn add(&self, entry: ResourceEntry) -> Result<(), BuildError> {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries
            .iter()
            .any(|r| r.config.resource == entry.config.resource)
        {
            return Err(BuildError::DuplicateResource {
                resource: entry.config.resource.key().to_owned(),
            });
        }
        entries.push(Arc::new(entry));
        Ok(())
    }
}

impl Routes {
    /// Puts `entry` in place of the entry configured for the same resource (which must
    /// exist), and returns the one it replaced: a resource whose authorization server changed
    /// (RFC 9728 §5.2).
    pub(crate) fn replace(&self, entry: ResourceEntry) -> Option<Arc<ResourceEntry>> {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let slot = entries
            .iter_mut()
            .find(|r| r.config.resource == entry.config.resource)?;
        Some(std::mem::replace(slot, Arc::new(entry)))
    }
}

impl Route<'_> {
    /// The route with its own copy of the URL.
    pub(crate) fn into_owned(self) -> Route<'static> {
        Route {
            entry: self.entry,
            url: Cow::Owned(self.url.into_owned()),
            normalized: self.normalized,
        }
    }

    /// The configured resource that owns the URL.
    pub(crate) fn entry(&self) -> &Arc<ResourceEntry> {
        &self.entry
    }

    /// The resource that owns the URL.
    pub(crate) fn resource(&self) -> &ResourceUri {
        &self.entry.config.resource
    }

    /// The URL this route is for.
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The URL's path, normalized.
    fn path(&self) -> &str {
        self.normalized.as_deref().unwrap_or(self.url.path())
    }
}

/// The decision: may `token` be sent on `route`? The token must be for the resource that owns
/// the URL (the longest match: a broader resource's token never goes into a nested one), from
/// the authorization server the resource uses now, and then the owner's audience policy must
/// allow it (provenance, and a readable `aud` that covers the URL or is an alias).
pub(crate) fn decide(route: &Route<'_>, token: &CachedToken) -> Result<(), Refusal> {
    decide_on(&route.entry, route.url(), route.path(), token)
}

/// The longest configured resource that covers `url` (whose path [`resource::check_request`]
/// normalized to `path`). Resources are compared by the length of their match key: two
/// resources that both cover a URL are on its origin, and the one whose path (or query) is
/// longer is nested in the other.
fn owner<'e>(
    entries: &'e [Arc<ResourceEntry>],
    url: &Url,
    path: &str,
) -> Option<&'e Arc<ResourceEntry>> {
    let mut best: Option<&Arc<ResourceEntry>> = None;
    for entry in entries {
        let resource = &entry.config.resource;
        if resource.covers_checked(url, path) == Coverage::Covered
            && best.is_none_or(|b| resource.key().len() > b.config.resource.key().len())
        {
            best = Some(entry);
        }
    }
    best
}

/// The rule behind [`decide`], for the entry that owns `url`.
fn decide_on(
    owner: &ResourceEntry,
    url: &Url,
    path: &str,
    token: &CachedToken,
) -> Result<(), Refusal> {
    let resource = &owner.config.resource;
    if !token.resource.is_same(resource) {
        let kind = if token.resource.covers_checked(url, path) == Coverage::Covered {
            RefusalKind::OwnedByAnotherResource {
                owner: resource.key().to_owned(),
            }
        } else {
            RefusalKind::NotCovered
        };
        return Err(Refusal::for_kind(&token.resource, url, kind));
    }
    // A resource that moved to another authorization server (RFC 9728 §5.2) takes only that
    // server's tokens: one a caller kept from before the move goes nowhere.
    if token.key.issuer() != owner.config.issuer {
        let kind = RefusalKind::IssuedByAnotherServer {
            issuer: token.key.issuer().to_owned(),
            current: owner.config.issuer.clone(),
        };
        return Err(Refusal::for_kind(&token.resource, url, kind));
    }
    // Provenance holds: the token is for the resource found covering the URL, from its
    // authorization server.
    owner
        .policy
        .decide_audience(&token.resource, url, path, &token.audience)
}

/// The refusal for a token whose request URL has no route.
pub(crate) fn unrouted(token: &CachedToken, url: &Url, why: Unrouted) -> Refusal {
    match why {
        Unrouted::Refused(reason) => Refusal::request_refused(&token.resource, url, reason),
        // Had the token's resource covered the URL, the URL would have a route.
        Unrouted::NoResource => Refusal::for_kind(&token.resource, url, RefusalKind::NotCovered),
    }
}
