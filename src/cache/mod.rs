//! The token cache: storage by [`CacheKey`] (`tokens`), single-flight fetches, refresh ahead
//! of expiry on the runtime's timer (`ahead`), and the hand-out through the crate's one
//! decision (`route`: which resource owns a URL, and whether a token may go there). It knows
//! nothing of discovery or MCP: the authorization layer above gives it client registrations
//! and resources.

mod ahead;
mod authorize;
mod backoff;
mod bearer;
mod builder;
mod current;
mod flight;
mod moving;
mod refresh;
mod route;
#[cfg(feature = "redis")]
mod shared_level;
mod stats;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::time::Instant;
use url::Url;

use crate::audience::Refusal;
use crate::config::{ClientRegistration, Grant, ResourceConfig};
use crate::error::BuildError;
use crate::error::Error;
use crate::grant::{GrantClient, Limits, SubjectToken, Transport};
use crate::key::{CacheKey, GrantPart};
use crate::resource::{ParseOptions, ResourceUri};
use crate::scope::ScopeSet;
use crate::token::{CachedToken, Timing};

pub use authorize::PendingAuthorization;
pub use bearer::{AuthorizationHeaders, BearerToken};
pub use builder::TokenCacheBuilder;
#[cfg(feature = "redis")]
pub use shared_level::SharedLevel;
pub use stats::Stats;

use backoff::Backoff;
use bearer::Outlet;
use flight::Flights;
use refresh::RefreshTokens;
use route::Unrouted;
pub(crate) use route::{ResourceEntry, Route};

/// An OAuth 2.0 token cache that keeps tokens apart by audience.
///
/// Every token is stored under a [`CacheKey`] (issuer, resource, scopes, client, account) and
/// handed out only after the audience decision has allowed it for the request URL. A miss
/// fetches a token with the RFC 8707 `resource` parameter; concurrent misses on one key share
/// one token request; a token in use is refreshed in the background when its refresh window
/// opens, by a task of the cache's own on the runtime's timer, so no caller waits for it (nor
/// starts a task). Cloning is cheap and clones share the cache.
///
/// ```no_run
/// use audience_cache::{ClientRegistration, ResourceConfig, ResourceUri, TokenCache};
/// use url::Url;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
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
///     .build()?;
///
/// let url = Url::parse("https://mcp.example.com/mcp/tools")?;
/// let token = cache.token_for(&url).await?;
/// let header = token.header_for(&url)?; // Authorization: Bearer …, marked sensitive
/// # let _ = header;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.shared.store.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// How a miss gets its token.
#[derive(Clone)]
pub(crate) enum Acquire {
    /// As the client registration's grant says (client credentials or a refresh token).
    Configured,
    /// RFC 8693 token exchange of this subject token.
    Exchange(SubjectToken),
}

pub(crate) struct Shared {
    clients: RwLock<HashMap<String, Arc<GrantClient>>>,
    /// The configured resources and the DPoP keys, shared with every token handed out.
    outlet: Arc<Outlet>,
    store: tokens::Tokens,
    flights: Flights,
    /// Refresh ahead, on the runtime's timer.
    ahead: ahead::Refresher,
    backoff: Backoff,
    refresh_tokens: RefreshTokens,
    timing: Timing,
    limits: Limits,
    transport: Transport,
    options: ParseOptions,
    counters: Arc<stats::Counters>,
    /// The shared second level, if one is configured (feature `redis`).
    #[cfg(feature = "redis")]
    shared_level: Option<Arc<shared_level::Level>>,
}

impl TokenCache {
    /// A builder with safe defaults.
    pub fn builder() -> TokenCacheBuilder {
        TokenCacheBuilder::default()
    }

    /// A token for a request to `url`, with the default scopes of the resource that covers it.
    ///
    /// The resource is the longest configured one that covers the URL. The token comes from
    /// the cache or from one token request shared by all concurrent callers; it is returned
    /// only if the crate's decision allows it for `url` (the same decision as
    /// [`BearerToken::header_for`]). A refused token is evicted. A URL with userinfo, or whose
    /// path servers could read two ways, is refused whatever resources are configured.
    pub async fn token_for(&self, url: &Url) -> Result<BearerToken, Error> {
        self.token_for_scopes(url, &ScopeSet::empty()).await
    }

    /// Like [`token_for`](Self::token_for), asking for `extra` scopes on top of the resource's
    /// default scopes.
    pub async fn token_for_scopes(
        &self,
        url: &Url,
        extra: &ScopeSet,
    ) -> Result<BearerToken, Error> {
        // The usual hit, with no future of its own: a request that repeats an allowed
        // decision for its resource's current token, or else the route's current token,
        // decided for the URL. Anything else (another key, a miss, a refusal to record) is
        // boxed, so that this future stays small for the hit that moves it.
        if extra.is_empty() {
            let now = Instant::now();
            if let Some(token) = self.shared.remembered(url, now) {
                return Ok(token);
            }
            let route = self.route(url)?;
            if let Some(token) = self.shared.current(route.entry(), now) {
                return match self.shared.outlet.routes.allow(&route, &token) {
                    Ok(()) => Ok(self.shared.bearer(token)),
                    Err(refusal) => Err(Box::pin(self.shared.refused(&token, refusal)).await),
                };
            }
            return Box::pin(self.token_for_route(route, extra)).await;
        }
        let route = self.route(url)?;
        Box::pin(self.token_for_route(route, extra)).await
    }

    async fn token_for_route(
        &self,
        route: Route<'_>,
        extra: &ScopeSet,
    ) -> Result<BearerToken, Error> {
        let token = self.token_on(&route, extra).await?;
        self.shared.hand_out(&route, token.cached()).await?;
        Ok(token)
    }

    /// The route of a request URL: the configured resource that owns it, or why there is
    /// none (a refused URL is an [`Error::Refused`], counted as a refusal).
    pub(crate) fn route<'u>(&self, url: &'u Url) -> Result<Route<'u>, Error> {
        self.shared.route(url)
    }

    /// A token for `route`'s resource with its default scopes plus `extra`, not yet decided
    /// for the route's URL: [`header`](Self::header) decides.
    pub(crate) async fn token_on(
        &self,
        route: &Route<'_>,
        extra: &ScopeSet,
    ) -> Result<BearerToken, Error> {
        let entry = route.entry();
        let key = if extra.is_empty() {
            entry.default_key.clone()
        } else {
            self.shared
                .key(entry, &entry.config.scopes.union(extra), None)
        };
        let token = self.shared.get(entry, &key, &Acquire::Configured).await?;
        Ok(self.shared.bearer(token))
    }

    /// The headers for `token` on a `method` request on `route`, after the crate's one
    /// decision (with a DPoP proof for a bound token); a token refused by its audience policy
    /// is evicted, as [`token_for`](Self::token_for) does.
    pub(crate) async fn headers(
        &self,
        token: &BearerToken,
        method: &http::Method,
        route: &Route<'_>,
    ) -> Result<AuthorizationHeaders, Error> {
        match token.headers_on(method, route) {
            Ok(header) => Ok(header),
            Err(refusal) => Err(self.shared.refused(token.cached(), refusal).await),
        }
    }

    /// A token for a resource the caller already knows (an MCP transport, say), with the
    /// resource's default scopes plus `scopes`. It is bound to that resource: the audience
    /// decision runs when it is turned into a header with [`BearerToken::header_for`].
    pub async fn token(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<BearerToken, Error> {
        self.token_with(resource, scopes, None, &Acquire::Configured)
            .await
    }

    /// Like [`token`](Self::token), for one account (a user or a subject): tokens for different
    /// accounts are never shared.
    pub async fn token_for_account(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
        account: &str,
    ) -> Result<BearerToken, Error> {
        self.token_with(resource, scopes, Some(account), &Acquire::Configured)
            .await
    }

    /// A token for `resource` obtained by RFC 8693 token exchange of `subject`, cached for that
    /// subject token: its key holds a keyed fingerprint of the subject token (see
    /// [`CacheKey`]), so a different or forged subject token is a miss and another exchange.
    /// `account` is a label kept with the key (for logs and [`CacheKey::account`]), not an
    /// identity: two subject tokens with one account never share a token.
    pub async fn exchange_token(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
        subject: SubjectToken,
        account: &str,
    ) -> Result<BearerToken, Error> {
        self.token_with(resource, scopes, Some(account), &Acquire::Exchange(subject))
            .await
    }

    async fn token_with(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
        account: Option<&str>,
        acquire: &Acquire,
    ) -> Result<BearerToken, Error> {
        let entry = self.shared.resource(resource)?;
        let scopes = entry.config.scopes.union(scopes);
        let mut key = self.shared.key(&entry, &scopes, account);
        if let Acquire::Exchange(subject) = acquire {
            // An exchanged token acts for the subject whose token was exchanged: never shared
            // with the client's own, nor with another subject token's under the same account.
            key = key.exchanged(entry.client.subject_fingerprint(subject));
        }
        let token = self.shared.get(&entry, &key, acquire).await?;
        Ok(self.shared.bearer(token))
    }

    /// Evicts `token` if it is still the cached one for its key (for example after the
    /// resource server answered 401 `invalid_token`). A newer token is left alone. Returns
    /// whether it was evicted.
    pub async fn invalidate(&self, token: &BearerToken) -> bool {
        self.shared.evict_if_current(token.cached()).await
    }

    /// Adds a resource after the cache was built (for example one found by discovery). Its
    /// issuer needs a client registration.
    pub fn register_resource(&self, resource: ResourceConfig) -> Result<(), BuildError> {
        self.shared.add_resource(resource)
    }

    /// Whether the client registration for `issuer` came from discovery; `None` when there
    /// is none.
    pub(crate) fn client_was_discovered(&self, issuer: &str) -> Option<bool> {
        let clients = self
            .shared
            .clients
            .read()
            .unwrap_or_else(|p| p.into_inner());
        clients.get(issuer).map(|c| c.registration().discovered)
    }

    /// The issuer configured for exactly `resource`, if it is configured.
    pub(crate) fn issuer_of(&self, resource: &ResourceUri) -> Option<String> {
        self.shared
            .outlet
            .routes
            .entry(resource)
            .map(|entry| entry.config.issuer.clone())
    }

    /// Adds a client registration after the cache was built.
    pub fn register_client(&self, registration: ClientRegistration) -> Result<(), BuildError> {
        self.shared.add_client(registration)
    }

    /// The configured resource that a request to `url` belongs to (the longest that covers
    /// it), if any; `None` also for a URL the crate refuses (userinfo, an ambiguous path).
    pub fn resource_for(&self, url: &Url) -> Option<ResourceUri> {
        self.shared
            .outlet
            .routes
            .route(url)
            .ok()
            .map(|route| route.resource().clone())
    }

    /// Whether the development switch
    /// ([`TokenCacheBuilder::allow_insecure_http_on_loopback`]) is on.
    pub(crate) fn allows_insecure_http_on_loopback(&self) -> bool {
        self.shared.options.allows_insecure_http_on_loopback()
    }

    /// The credential store given to the builder
    /// ([`TokenCacheBuilder::credential_store`]), if any: dynamic registration keeps the
    /// clients it registers there too, unless it was given a store of its own.
    pub(crate) fn credential_store(&self) -> Option<&Arc<dyn crate::store::CredentialStore>> {
        self.shared.refresh_tokens.credential_store()
    }

    /// The cache's DPoP state: its clients' keys, the nonces servers gave, the resources that
    /// use DPoP.
    pub(crate) fn dpop(&self) -> &crate::dpop::Dpop {
        &self.shared.outlet.dpop
    }

    /// The DPoP key of the client registration for `issuer`, if it has one.
    pub(crate) fn dpop_key_at(&self, issuer: &str) -> Option<crate::config::DpopKey> {
        let clients = self
            .shared
            .clients
            .read()
            .unwrap_or_else(|p| p.into_inner());
        clients
            .get(issuer)
            .and_then(|c| c.registration().dpop_key.clone())
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

impl Shared {
    /// The key for `scopes` and `account` on `entry`: its default key (see [`key_for`]) with
    /// these scopes and account, sharing the default key's issuer, resource, client and DPoP
    /// parts in memory.
    fn key(&self, entry: &ResourceEntry, scopes: &ScopeSet, account: Option<&str>) -> CacheKey {
        let scopes = requested(entry.client.registration(), scopes);
        let key = entry.default_key.with_scopes(&scopes);
        match account {
            Some(account) => key.with_account(account),
            None => key,
        }
    }

    /// The route of `url` (see [`route::Routes::route`]), with the crate's errors.
    fn route<'u>(&self, url: &'u Url) -> Result<Route<'u>, Error> {
        self.outlet.routes.route(url).map_err(|why| match why {
            Unrouted::Refused(reason) => {
                self.counters.refusal();
                Error::Refused(Refusal::request_refused_before_routing(url, reason))
            }
            Unrouted::NoResource => Error::NoResource {
                request: crate::audience::redacted_url(url),
            },
        })
    }

    fn resource(&self, resource: &ResourceUri) -> Result<Arc<ResourceEntry>, Error> {
        self.outlet
            .routes
            .entry(resource)
            .ok_or_else(|| Error::UnknownResource {
                resource: resource.key().to_owned(),
            })
    }

    /// A handle on `token` for the caller.
    pub(crate) fn bearer(&self, token: Arc<CachedToken>) -> BearerToken {
        BearerToken::new(token, self.outlet.clone())
    }

    /// The crate's decision for a hand-out on `route` (remembered when it allows); a refused
    /// token is evicted.
    async fn hand_out(&self, route: &Route<'_>, token: &Arc<CachedToken>) -> Result<(), Error> {
        match self.outlet.routes.allow(route, token) {
            Ok(()) => Ok(()),
            Err(refusal) => Err(self.refused(token, refusal).await),
        }
    }

    async fn refused(&self, token: &Arc<CachedToken>, refusal: Refusal) -> Error {
        self.counters.refusal();
        tracing::warn!(
            key = %token.key,
            audiences = ?token.audience.values(),
            "refused to hand out a token: {refusal}"
        );
        let error = Error::Refused(refusal);
        if self.evict_if_current(token).await {
            // A server that keeps issuing tokens for the wrong audience is not asked again at
            // every call: the key waits like any other that retrying cannot fix.
            self.backoff
                .failed(&token.key, &error, tokio::time::Instant::now());
        }
        error
    }

    /// A fresh token for `key`: from the store, or from a fetch shared with concurrent callers.
    /// The default scopes' token is read from its entry's current token (one atomic load, no
    /// lock: the usual hit); another key, or a default key with no current token, from the
    /// store.
    async fn get(
        self: &Arc<Self>,
        entry: &Arc<ResourceEntry>,
        key: &CacheKey,
        acquire: &Acquire,
    ) -> Result<Arc<CachedToken>, Error> {
        let now = Instant::now();
        if *key == entry.default_key
            && let Some(token) = self.current(entry, now)
        {
            return Ok(token);
        }
        if let Some(token) = self.store.get(key)
            && token.is_fresh(now)
        {
            self.hit(entry, key, acquire, &token, now);
            return Ok(token);
        }
        self.counters.miss();
        if let Err(backing_off) = self.backoff.check(key, now) {
            self.counters.error();
            return Err(backing_off);
        }
        self.flights.join(self, entry, key, acquire).await
    }

    async fn evict_if_current(&self, token: &Arc<CachedToken>) -> bool {
        let removed = self
            .store
            .remove_if(&token.key, |current| Arc::ptr_eq(current, token))
            .is_some();
        // Nor is it a hit's current token any more.
        self.outlet.routes.forget(token);
        // Whether or not the store's listener has run yet, the flight that produced this token
        // must not hand it out again.
        self.flights.forget(token);
        // Nor may another process, or the next miss here, read it back from the shared level.
        #[cfg(feature = "redis")]
        if let Some(level) = &self.shared_level {
            level.forget(token).await;
        }
        removed
    }

    fn add_client(&self, mut registration: ClientRegistration) -> Result<(), BuildError> {
        registration.dpop_key = self.outlet.dpop.key_of_client(registration.dpop_key.take());
        let client =
            builder::check_client(registration, &self.transport, self.limits, &self.options)?
                .with_dpop(self.outlet.dpop.clone());
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        let issuer = client.registration().issuer.clone();
        if clients.contains_key(&issuer) {
            return Err(BuildError::DuplicateClient { issuer });
        }
        clients.insert(issuer, Arc::new(client));
        Ok(())
    }

    fn add_resource(&self, config: ResourceConfig) -> Result<(), BuildError> {
        self.add_resources(std::iter::once(config))
    }

    /// Adds resources, all or none (each issuer needs a client registration).
    fn add_resources(
        &self,
        configs: impl IntoIterator<Item = ResourceConfig>,
    ) -> Result<(), BuildError> {
        let clients = self.clients.read().unwrap_or_else(|p| p.into_inner());
        let entries = configs
            .into_iter()
            .map(|config| entry_for(&clients, config))
            .collect::<Result<Vec<_>, _>>()?;
        drop(clients);
        self.outlet.routes.add(entries)
    }

    /// The entry of a resource, for a resource added and for one that moves: its
    /// configuration with the client registered for its issuer and the key of its default
    /// scopes.
    fn entry_for(&self, config: ResourceConfig) -> Result<ResourceEntry, BuildError> {
        let clients = self.clients.read().unwrap_or_else(|p| p.into_inner());
        entry_for(&clients, config)
    }

    /// The grant a miss uses for this entry.
    fn grant(entry: &ResourceEntry) -> Grant {
        let registration = entry.client.registration();
        match registration.effective_grant() {
            Some(grant) => grant.clone(),
            None => Grant::ClientCredentials,
        }
    }
}

/// The entry of `config`'s resource, with the client of `clients` registered for its issuer.
fn entry_for(
    clients: &HashMap<String, Arc<GrantClient>>,
    config: ResourceConfig,
) -> Result<ResourceEntry, BuildError> {
    let Some(client) = clients.get(&config.issuer).cloned() else {
        return Err(BuildError::UnknownIssuer {
            resource: config.resource.key().to_owned(),
            issuer: config.issuer.clone(),
        });
    };
    let default_key = key_for(
        client.registration(),
        &config.resource,
        &config.scopes,
        None,
    );
    Ok(ResourceEntry::new(config, client, default_key))
}

/// The one place a hand-out's cache key is made: the client registration's issuer and client
/// id, the resource, the scopes (with `offline_access` when the registration asks for refresh
/// tokens: it changes what the server returns, rules §12), the account, the grant (the JWT
/// bearer grants' tokens are keyed apart from the client's own), and the thumbprint of the
/// registration's DPoP key if it has one (RFC 9449: a token bound to one key is never served
/// for another). A resource's other keys are its default key with other scopes and an account
/// ([`Shared::key`]), which is the same key.
fn key_for(
    registration: &ClientRegistration,
    resource: &ResourceUri,
    scopes: &ScopeSet,
    account: Option<&str>,
) -> CacheKey {
    let key = CacheKey::new(
        &registration.issuer,
        resource,
        &requested(registration, scopes),
        &registration.client_id,
    );
    let key = match account {
        Some(account) => key.with_account(account),
        None => key,
    };
    // How the token is obtained: a workload's or a user's JWT is not the client's own grant.
    let key = match registration.effective_grant() {
        Some(Grant::JwtBearer { .. }) => key.obtained_by(GrantPart::JwtBearer),
        Some(Grant::IdJag { idp, .. }) => key.obtained_by(GrantPart::IdJag(idp.issuer().into())),
        _ => key,
    };
    match &registration.dpop_key {
        Some(dpop_key) => key.with_dpop(dpop_key.thumbprint()),
        None => key,
    }
}

/// The scopes a key holds for a request of `scopes`: with `offline_access` when the
/// registration asks for refresh tokens.
fn requested(registration: &ClientRegistration, scopes: &ScopeSet) -> ScopeSet {
    if registration.offline_access {
        scopes.union(
            &ScopeSet::parse(crate::scope::OFFLINE_ACCESS).unwrap_or_else(|_| ScopeSet::empty()),
        )
    } else {
        scopes.clone()
    }
}

/// What the cache's unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use std::time::Duration;

    use url::Url;

    use crate::testing::{AuthorizationServer, Client};
    use crate::{ClientRegistration, ResourceConfig, ResourceUri, TokenCache};

    /// The resource of [`one_resource`]'s cache.
    pub(crate) const MCP: &str = "https://mcp.example.com/mcp";

    /// The embedded server in process, granting tokens of `lifetime` (its own default for
    /// `None`), and a cache of one resource ([`MCP`]) on it.
    pub(crate) fn one_resource(lifetime: Option<Duration>) -> (AuthorizationServer, TokenCache) {
        let server = AuthorizationServer::builder()
            .client(Client::confidential("svc", "s3cret"))
            .in_process();
        if let Some(lifetime) = lifetime {
            server.script(|s| s.expires_in = Some(lifetime));
        }
        let cache = TokenCache::builder()
            .in_process(&server)
            .client(
                ClientRegistration::new(
                    server.issuer(),
                    Url::parse(&server.token_endpoint()).unwrap(),
                    "svc",
                )
                .client_secret_basic("s3cret".into()),
            )
            .resource(ResourceConfig::new(
                ResourceUri::parse(MCP).unwrap(),
                server.issuer(),
            ))
            .build()
            .unwrap();
        (server, cache)
    }
}
