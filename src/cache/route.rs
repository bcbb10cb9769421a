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
/// the header is built.
#[derive(Clone)]
pub(crate) struct Route {
    entry: Arc<ResourceEntry>,
    url: Url,
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
    /// Resources are compared by the length of their match key: two resources that both cover
    /// a URL are on its origin, and the one whose path (or query) is longer is nested in the
    /// other.
    pub(crate) fn route(&self, url: &Url) -> Result<Route, Unrouted> {
        let path = resource::check_request(url).map_err(Unrouted::Refused)?;
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut best: Option<&Arc<ResourceEntry>> = None;
        for entry in entries.iter() {
            let resource = &entry.config.resource;
            if resource.covers_checked(url, &path) == Coverage::Covered
                && best.is_none_or(|b| resource.key().len() > b.config.resource.key().len())
            {
                best = Some(entry);
            }
        }
        let entry = best.cloned().ok_or(Unrouted::NoResource)?;
        let normalized = (path != url.path()).then(|| path.into());
        Ok(Route {
            entry,
            url: url.clone(),
            normalized,
        })
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

impl Route {
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
/// the URL (the longest match: a broader resource's token never goes into a nested one), and
/// then the owner's audience policy must allow it (provenance, and a readable `aud` that
/// covers the URL or is an alias).
pub(crate) fn decide(route: &Route, token: &CachedToken) -> Result<(), Refusal> {
    if token.resource != *route.resource() {
        let kind = if token.resource.covers_checked(route.url(), route.path()) == Coverage::Covered
        {
            RefusalKind::OwnedByAnotherResource {
                owner: route.resource().key().to_owned(),
            }
        } else {
            RefusalKind::NotCovered
        };
        return Err(Refusal::for_kind(&token.resource, route.url(), kind));
    }
    route
        .entry
        .policy
        .decide_checked(&token.resource, route.url(), route.path(), &token.audience)
}

/// The refusal for a token whose request URL has no route.
pub(crate) fn unrouted(token: &CachedToken, url: &Url, why: Unrouted) -> Refusal {
    match why {
        Unrouted::Refused(reason) => Refusal::request_refused(&token.resource, url, reason),
        // Had the token's resource covered the URL, the URL would have a route.
        Unrouted::NoResource => Refusal::for_kind(&token.resource, url, RefusalKind::NotCovered),
    }
}
