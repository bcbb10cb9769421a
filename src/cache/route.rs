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
//! An allowed decision is remembered by the URL's text and the token, under one version of the
//! configured resources (see `memo`), and a request that repeats all three takes that answer
//! instead of routing and deciding again: the decision depends on nothing else.
//!
//! [`TokenCache::token_for`]: super::TokenCache::token_for
//! [`TokenCache::token`]: super::TokenCache::token
//! [`BearerToken::header_for`]: super::BearerToken::header_for

mod index;
mod memo;

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

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
    /// The token the store holds under `default_key`, if any: what a hit for the default
    /// scopes reads, with one atomic load, instead of looking the key up in the store. Set
    /// and cleared only beside the store's own writes (see `Shared::keep`), so it never holds
    /// a token the store has let go of.
    pub(crate) current: ArcSwapOption<CachedToken>,
}

impl ResourceEntry {
    /// The entry for `config`, with no current token.
    pub(crate) fn new(
        config: ResourceConfig,
        client: Arc<GrantClient>,
        default_key: CacheKey,
    ) -> Self {
        Self {
            policy: Arc::new(config.audience.clone()),
            config,
            client,
            default_key,
            current: ArcSwapOption::empty(),
        }
    }

    /// Makes `token` the current one if it is stored under this entry's default key.
    pub(crate) fn keep(&self, token: &Arc<CachedToken>) {
        if token.key == self.default_key {
            self.current.store(Some(token.clone()));
        }
    }

    /// Clears the current token if it is `token`.
    pub(crate) fn forget(&self, token: &Arc<CachedToken>) {
        let current = self.current.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, token)) {
            self.current.compare_and_swap(&*current, None);
        }
    }
}

/// The configured resources, shared by the cache and every token it hands out (a token decides
/// against the resources configured when its header is made, not when it was fetched).
///
/// An immutable index behind an atomic pointer: a request reads it without a lock; an added
/// resource makes a new index (copying only its host's part) under a writers' lock.
#[derive(Default)]
pub(crate) struct Routes {
    index: ArcSwap<index::Index>,
    writer: Mutex<()>,
}

/// A request URL resolved to the resource that owns it: made once per hop, carried to where
/// the header is built. It borrows the URL (a hit allocates nothing for it); the request loop,
/// which keeps it across the send, owns a copy ([`Route::into_owned`]).
#[derive(Clone)]
pub(crate) struct Route<'u> {
    entry: Arc<ResourceEntry>,
    /// The version of the configured resources it was found in.
    generation: u64,
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
        let index = self.index.load();
        let entry = index
            .owner(url, &path)
            .cloned()
            .ok_or(Unrouted::NoResource)?;
        // A plain path is borrowed as it is; only a normalized one is kept.
        let normalized = match path {
            Cow::Borrowed(_) => None,
            Cow::Owned(path) => Some(path.into_boxed_str()),
        };
        Ok(Route {
            entry,
            generation: index.generation(),
            url: Cow::Borrowed(url),
            normalized,
        })
    }

    /// [`route`](Self::route) and [`decide`] at once, without keeping the route: what
    /// [`BearerToken::header_for`](super::BearerToken::header_for) does for a URL it has no
    /// route for yet. An allowed decision remembered for `url` and `token` under the resources
    /// configured now is the answer (see [`memo`]); an allowed decision made here is
    /// remembered.
    pub(crate) fn decide(&self, url: &Url, token: &Arc<CachedToken>) -> Result<(), Refusal> {
        let index = self.index.load();
        let memo = index.memo();
        if memo
            .with(url, |allowed| allowed.is_for(token).then_some(()))
            .is_some()
        {
            return Ok(());
        }
        let path = resource::check_request(url)
            .map_err(|reason| unrouted(token, url, Unrouted::Refused(reason)))?;
        let Some(entry) = index.owner(url, &path) else {
            return Err(unrouted(token, url, Unrouted::NoResource));
        };
        decide_on(entry, url, &path, token)?;
        memo.remember(url, entry, token);
        Ok(())
    }

    /// [`decide`] on `route`, remembered when it allows (for as long as the resources
    /// configured are the ones the route was found in).
    pub(crate) fn allow(&self, route: &Route<'_>, token: &Arc<CachedToken>) -> Result<(), Refusal> {
        decide(route, token)?;
        let index = self.index.load();
        if index.generation() == route.generation {
            index.memo().remember(route.url(), &route.entry, token);
        }
        Ok(())
    }

    /// A request to `url` that repeats an allowed decision for its owner's current token:
    /// `then` is given the owner and that token. `None` when no decision for `url` is
    /// remembered under the resources configured now, or when it was for another token than
    /// the current one (then the request is routed and decided as any other).
    pub(crate) fn current_allowed<R>(
        &self,
        url: &Url,
        then: impl FnOnce(&Arc<ResourceEntry>, Arc<CachedToken>) -> Option<R>,
    ) -> Option<R> {
        self.index.load().memo().with(url, |allowed| {
            let token = allowed.entry.current.load_full()?;
            if !allowed.is_for(&token) {
                return None;
            }
            then(&allowed.entry, token)
        })
    }

    /// The entry configured for exactly `resource`.
    pub(crate) fn entry(&self, resource: &ResourceUri) -> Option<Arc<ResourceEntry>> {
        self.index.load().exact(resource).cloned()
    }

    /// Clears `token` from its entry's current token, if it is that (the store let it go).
    pub(crate) fn forget(&self, token: &Arc<CachedToken>) {
        if let Some(entry) = self.index.load().exact(&token.resource) {
            entry.forget(token);
        }
    }

    /// Every configured entry.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<Arc<ResourceEntry>> {
        self.index.load().entries().cloned().collect()
    }

    /// Adds entries, all or none; a resource configured already (or twice among them) is an
    /// error. One new index for them all: a builder with thousands of resources does not copy
    /// the index once per resource.
    pub(crate) fn add(
        &self,
        entries: impl IntoIterator<Item = ResourceEntry>,
    ) -> Result<(), BuildError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.index.load().next();
        for entry in entries {
            if next.exact(&entry.config.resource).is_some() {
                return Err(BuildError::DuplicateResource {
                    resource: entry.config.resource.key().to_owned(),
                });
            }
            next.insert(Arc::new(entry));
        }
        self.index.store(Arc::new(next.sealed()));
        Ok(())
    }
}

impl Routes {
    /// Puts `entry` in place of the entry configured for the same resource (which must
    /// exist), and returns the one it replaced: a resource whose authorization server changed
    /// (RFC 9728 §5.2).
    /// A new index of the next generation, so that no decision remembered under the old one
    /// holds for the moved resource.
    pub(crate) fn replace(&self, entry: ResourceEntry) -> Option<Arc<ResourceEntry>> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.index.load().next();
        let old = next.replace(Arc::new(entry))?;
        self.index.store(Arc::new(next.sealed()));
        Some(old)
    }
}

impl Route<'_> {
    /// The route with its own copy of the URL.
    pub(crate) fn into_owned(self) -> Route<'static> {
        Route {
            entry: self.entry,
            generation: self.generation,
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

/// The linear scan the index replaced, kept as its oracle: the longest configured resource that
/// covers `url` (whose path [`resource::check_request`] normalized to `path`), the first
/// configured among equal lengths.
#[cfg(test)]
fn owner_by_scan<'e>(
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

#[cfg(test)]
mod memo_tests;
#[cfg(test)]
mod tests;

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
