//! Building a [`TokenCache`]: defaults, checks, and the HTTP client for token requests.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::backoff::{Backoff, BackoffPolicy};
use super::{Shared, TokenCache};
use crate::config::{self, ClientAuth, ClientRegistration, Grant, ResourceConfig};
use crate::error::BuildError;
use crate::grant::{Exchange, GrantClient, Limits, Transport};
use crate::resource::ParseOptions;
use crate::store::CredentialStore;
use crate::token::Timing;

/// Builds a [`TokenCache`]. Every setting has a safe default, documented on its setter; the
/// configuration is checked by [`build`](Self::build).
#[derive(Debug, Default)]
pub struct TokenCacheBuilder {
    clients: Vec<ClientRegistration>,
    resources: Vec<ResourceConfig>,
    timing: Timing,
    limits: Limits,
    backoff: BackoffPolicy,
    max_capacity: Option<u64>,
    http_client: Option<reqwest::ClientBuilder>,
    options: ParseOptions,
    /// Token requests go here instead of over reqwest (the testing module's in-process
    /// server).
    exchange: Option<Arc<dyn Exchange>>,
    /// Where client registrations without a DPoP key of their own get one (feature `dpop`).
    dpop_keys: crate::dpop::Keys,
    /// Resources that use DPoP, and whether they require it.
    dpop_resources: Vec<(crate::resource::ResourceUri, crate::dpop::Use)>,
    #[cfg(feature = "redis")]
    shared_level: Option<super::SharedLevel>,
    credential_store: Option<Arc<dyn CredentialStore>>,
}

/// The default capacity: 64 MiB of tokens (weighed by their size).
const DEFAULT_CAPACITY: u64 = 64 * 1024 * 1024;

impl TokenCacheBuilder {
    /// Registers the client at one authorization server. One registration per issuer (tokens
    /// and credentials are kept apart per authorization server).
    pub fn client(mut self, registration: ClientRegistration) -> Self {
        self.clients.push(registration);
        self
    }

    /// Adds a resource.
    pub fn resource(mut self, resource: ResourceConfig) -> Self {
        self.resources.push(resource);
        self
    }

    /// Subtracted from every token's lifetime, so that a token is never sent in its last
    /// moments (time in transit, and a resource server's clock ahead of the authorization
    /// server's: `expires_in` is relative, so the client's own clock does not matter). Default
    /// 30 s; applied to at most half of a token's lifetime. A token a resource server finds
    /// expired anyway is answered 401 and replaced once.
    pub fn skew(mut self, skew: Duration) -> Self {
        self.timing.skew = skew;
        self
    }

    /// The lifetime assumed for a token whose response has no `expires_in` (RFC 6749 §5.1
    /// only recommends it). Default 300 s: short, because such a token may expire at any time;
    /// a 401 from the resource server evicts it sooner.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.timing.default_lifetime = lifetime;
        self
    }

    /// How long before a token's expiry its refresh starts, at most, while the token keeps
    /// being served. Default 120 s; shorter tokens get a share of their usable lifetime instead
    /// ([`refresh_ahead_share`](Self::refresh_ahead_share)). The refresh runs in the
    /// background, started by a task of the cache's own on the runtime's timer, for a token
    /// used since it was stored; no caller waits for it.
    pub fn refresh_ahead(mut self, window: Duration) -> Self {
        self.timing.refresh_ahead = window;
        self
    }

    /// The share of a token's usable lifetime (its lifetime less the skew) that the
    /// refresh-ahead window may take, in percent, from 1 to 50. Default 10.
    ///
    /// Why a share: a window of a fixed length costs short tokens dearly. Under steady use a
    /// token is replaced when its window opens, so a client makes lifetime ÷ (usable − window)
    /// token requests per lifetime. With the defaults (30 s skew, 10 %, 120 s at most), a
    /// 300 s token is replaced after 243 s, 1.23 requests per lifetime, and a 3,600 s token
    /// after 3,450 s, 1.04; with a fixed 120 s window bounded to half the usable lifetime (the
    /// former default, with a 60 s skew) the 300 s token was replaced after 120 s, 2.5 requests
    /// per lifetime. Raise it where the authorization server is slow or flaky: a larger window
    /// leaves more time for a refresh to succeed before the token runs out.
    pub fn refresh_ahead_share(mut self, percent: u8) -> Self {
        self.timing.refresh_ahead_share = percent;
        self
    }

    /// The time limit for one token request, body included. Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout = timeout;
        self
    }

    /// The largest token endpoint response accepted. Default 64 KiB.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_body = bytes;
        self
    }

    /// The first and the largest wait after failed token requests for a key (bounded
    /// exponential backoff with jitter). Defaults 1 s and 60 s.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = BackoffPolicy { base: first, max };
        self
    }

    /// The most token bytes kept (each entry weighs its token's length plus 256 bytes). Beyond
    /// it, a token that was not handed out again since it was stored (or since the eviction
    /// hand last passed it) is evicted first; a token in use gets a second chance. A token
    /// heavier than the whole capacity is kept alone. Default 64 MiB.
    pub fn max_capacity(mut self, bytes: u64) -> Self {
        self.max_capacity = Some(bytes);
        self
    }

    /// The reqwest client builder for token requests (proxies, TLS roots, a user agent...).
    /// The crate turns its redirects off before building it: a client that followed a token
    /// endpoint's redirect would re-send the request, secrets included, wherever it pointed.
    /// By default the crate builds its own client.
    pub fn http_client_builder(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.http_client = Some(builder);
        self
    }

    /// The development switch: accepts plain `http` for issuers, endpoints and resources on a
    /// loopback host (`localhost`, `127.0.0.0/8`, `[::1]`), for trying the crate against servers
    /// on this machine. Off by default: what it gives up is TLS (anything on the path can read
    /// the token) and the guarantee that the server is the one named (anything on the machine
    /// can listen there). An [`AuthorizedClient`](crate::http::AuthorizedClient)'s discovery follows
    /// this switch, so it is set once, here. See [`ParseOptions::allow_insecure_http_on_loopback`].
    pub fn allow_insecure_http_on_loopback(mut self, allow: bool) -> Self {
        self.options = self.options.allow_insecure_http_on_loopback(allow);
        self
    }

    /// Sends token requests through `exchange` instead of reqwest.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn exchange(mut self, exchange: Arc<dyn Exchange>) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// Gives every client registration without a DPoP key of its own this one (RFC 9449,
    /// feature `dpop`): one key shared by those clients, as a fleet that shares tokens needs
    /// (load it in every process with [`DpopKey::from_pkcs8_pem`](crate::DpopKey::from_pkcs8_pem)).
    /// Authorization servers that see the same key can tell that their clients are one; to
    /// keep them apart, give each registration its own
    /// ([`ClientRegistration::dpop_key`](crate::ClientRegistration::dpop_key),
    /// [`PreRegistered::dpop_key`](crate::PreRegistered::dpop_key)) or use
    /// [`generate_dpop_keys`](Self::generate_dpop_keys) instead.
    ///
    /// With a key, a client's token requests for the resources that use DPoP carry a proof
    /// signed with it, a `token_type: DPoP` answer is kept as bound to it, and a bound token
    /// goes out only as `Authorization: DPoP` with a fresh proof signed with the same key for
    /// that exact request, made after the crate's decision for its URL. Which resources use
    /// DPoP: those named with [`use_dpop_for`](Self::use_dpop_for) or
    /// [`require_dpop_for`](Self::require_dpop_for), and those that ask for it (their
    /// metadata's `dpop_bound_access_tokens_required`, or a resource server that offers only
    /// the `DPoP` challenge). A client's key thumbprint is part of every cache key of its
    /// tokens (a token bound to one key is never served for another; a new key starts with an
    /// empty cache). By default no client has a key, and a resource that requires DPoP fails
    /// with an error naming these settings.
    #[cfg(feature = "dpop")]
    pub fn dpop_key(mut self, key: crate::config::DpopKey) -> Self {
        self.dpop_keys = match self.dpop_keys {
            crate::dpop::Keys::PerClient => crate::dpop::Keys::Conflict,
            _ => crate::dpop::Keys::Shared(key),
        };
        self
    }

    /// Generates a DPoP key (RFC 9449, feature `dpop`) for every client registration without
    /// one of its own when it is added to the cache (at [`build`](Self::build), or when
    /// discovery adds a client): no two authorization servers see the same key. Generated keys
    /// live as long as the cache: tokens bound to them are not shared with other processes
    /// (each has its own keys), and a restart starts with new keys (a public client's
    /// refresh tokens, which are bound to the key, then need a new authorization). Not
    /// together with [`dpop_key`](Self::dpop_key) ([`build`](Self::build) says so).
    #[cfg(feature = "dpop")]
    pub fn generate_dpop_keys(mut self) -> Self {
        self.dpop_keys = match self.dpop_keys {
            crate::dpop::Keys::Shared(_) => crate::dpop::Keys::Conflict,
            _ => crate::dpop::Keys::PerClient,
        };
        self
    }

    /// Uses DPoP for `resource`: its token requests carry a proof, and a `Bearer` answer (an
    /// authorization server that does not bind tokens) is kept as a bearer token and logged.
    /// Needs a DPoP key for the resource's client registration ([`build`](Self::build) fails
    /// without one; see [`dpop_key`](Self::dpop_key)).
    /// Default: resources use bearer tokens until they ask for DPoP.
    pub fn use_dpop_for(mut self, resource: crate::resource::ResourceUri) -> Self {
        self.dpop_resources
            .push((resource, crate::dpop::Use::Asked));
        self
    }

    /// Requires DPoP-bound tokens for `resource` (what its metadata's
    /// `dpop_bound_access_tokens_required` says, RFC 9449 §5.2): like
    /// [`use_dpop_for`](Self::use_dpop_for), and a `Bearer` answer is refused.
    pub fn require_dpop_for(mut self, resource: crate::resource::ResourceUri) -> Self {
        self.dpop_resources
            .push((resource, crate::dpop::Use::Required));
        self
    }

    /// Puts a shared second level on Redis behind the in-memory cache, so that the processes
    /// of a fleet share tokens (feature `redis`; see [`SharedLevel`](super::SharedLevel)).
    /// By default there is none.
    #[cfg(feature = "redis")]
    pub fn shared_level(mut self, level: super::SharedLevel) -> Self {
        self.shared_level = Some(level);
        self
    }

    /// Keeps refresh tokens in `store` as well as in memory, so that they survive a restart
    /// (a `FileStore` for a command-line tool, with feature `file-store`; see
    /// [`CredentialStore`] for when the cache reads, writes and locks it). Dynamic registration
    /// keeps the clients it registers there too (a refresh token is bound to its client, so a
    /// client registered anew at the next start could not use it), unless it was given a store
    /// of its own ([`DynamicRegistration::store`](crate::authorization::DynamicRegistration::store)).
    /// By default there is none: refresh tokens live as long as the cache.
    /// Not together with [`SharedLevel::share_refresh_tokens`](super::SharedLevel::share_refresh_tokens)
    /// (two places would each claim the newest refresh token).
    pub fn credential_store(mut self, store: Arc<dyn CredentialStore>) -> Self {
        self.credential_store = Some(store);
        self
    }

    /// Checks the configuration and builds the cache.
    pub fn build(mut self) -> Result<TokenCache, BuildError> {
        let day = Duration::from_secs(86_400);
        config::check_duration("skew", self.timing.skew, Duration::ZERO, day)?;
        config::check_duration(
            "default_lifetime",
            self.timing.default_lifetime,
            Duration::from_secs(1),
            day,
        )?;
        config::check_duration(
            "refresh_ahead",
            self.timing.refresh_ahead,
            Duration::ZERO,
            day,
        )?;
        if !(1..=50).contains(&self.timing.refresh_ahead_share) {
            return Err(BuildError::Setting {
                setting: "refresh_ahead_share",
                reason: format!(
                    "{}% is not a share from 1% to 50% of a token's usable lifetime; the default is 10%",
                    self.timing.refresh_ahead_share
                ),
            });
        }
        config::check_duration(
            "request_timeout",
            self.limits.timeout,
            Duration::from_millis(1),
            Duration::from_secs(600),
        )?;
        config::check_duration(
            "backoff",
            self.backoff.base,
            Duration::from_millis(1),
            self.backoff.max,
        )?;
        config::check_duration("backoff maximum", self.backoff.max, self.backoff.base, day)?;
        if self.limits.max_body < 1024 {
            return Err(BuildError::Setting {
                setting: "max_response_bytes",
                reason: "at least 1024 bytes are needed for a token response".to_owned(),
            });
        }
        let transport = self.transport()?;
        let dpop = crate::dpop::Dpop::new(std::mem::take(&mut self.dpop_keys))?;
        for (resource, use_) in &self.dpop_resources {
            dpop.raise(resource, *use_);
        }
        let counters = Arc::new(super::stats::Counters::default());
        #[cfg(feature = "redis")]
        let shared_level = match self.shared_level.take() {
            Some(level) => Some(level.build(counters.clone())?),
            None => None,
        };
        #[cfg(feature = "redis")]
        if self.credential_store.is_some()
            && shared_level
                .as_ref()
                .is_some_and(|level| level.shares_refresh_tokens())
        {
            return Err(BuildError::Setting {
                setting: "credential_store",
                reason: "the shared level shares refresh tokens too (SharedLevel::share_refresh_tokens); \
                         keep them in one place: drop one of the two settings"
                    .to_owned(),
            });
        }
        let flights = super::flight::Flights::default();
        let outlet = Arc::new(super::bearer::Outlet {
            routes: super::route::Routes::default(),
            dpop: Arc::new(dpop),
        });
        let (forget, forget_current) = (flights.clone(), outlet.clone());
        // A token that leaves the store takes the flight that produced it along, and is no
        // longer its resource's current token.
        let store = super::tokens::Tokens::new(
            self.max_capacity.unwrap_or(DEFAULT_CAPACITY),
            move |token| {
                forget.forget(&token);
                forget_current.routes.forget(&token);
            },
        );
        let shared = Arc::new_cyclic(|shared| Shared {
            clients: RwLock::new(HashMap::new()),
            outlet,
            store,
            flights,
            ahead: super::ahead::Refresher::new(shared.clone()),
            backoff: Backoff::new(self.backoff),
            #[cfg(not(feature = "redis"))]
            refresh_tokens: super::refresh::RefreshTokens::new(self.credential_store.take()),
            #[cfg(feature = "redis")]
            refresh_tokens: super::refresh::RefreshTokens::new(self.credential_store.take())
                .shared(
                    shared_level
                        .as_ref()
                        .filter(|level| level.shares_refresh_tokens())
                        .cloned(),
                ),
            timing: self.timing,
            limits: self.limits,
            transport,
            options: self.options,
            counters,
            #[cfg(feature = "redis")]
            shared_level,
        });
        for registration in self.clients {
            shared.add_client(registration)?;
        }
        shared.add_resources(self.resources)?;
        // A resource named for DPoP whose client has no key could never get a token.
        for (resource, _) in &self.dpop_resources {
            if let Some(entry) = shared.outlet.routes.entry(resource)
                && entry.client.registration().dpop_key.is_none()
            {
                return Err(crate::dpop::missing_key(resource));
            }
        }
        Ok(TokenCache { shared })
    }

    fn transport(&mut self) -> Result<Transport, BuildError> {
        if let Some(exchange) = &self.exchange {
            return Ok(Transport::Other(exchange.clone()));
        }
        self.http_client
            .take()
            .unwrap_or_default()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(Transport::Http)
            .map_err(|e| BuildError::HttpClient {
                reason: e.to_string(),
            })
    }
}

/// Checks one client registration and makes its grant client.
pub(crate) fn check_client(
    registration: ClientRegistration,
    transport: &Transport,
    limits: Limits,
    options: &ParseOptions,
) -> Result<GrantClient, BuildError> {
    let issuer = registration.issuer.clone();
    config::check_issuer(&issuer, options)?;
    if registration.client_id.is_empty() {
        return Err(BuildError::EmptyClientId { issuer });
    }
    let mut registration = registration;
    registration.token_endpoint = config::check_endpoint(
        &issuer,
        "token endpoint",
        &registration.token_endpoint,
        options,
    )?;
    if let Some(endpoint) = &registration.authorization_endpoint {
        registration.authorization_endpoint = Some(config::check_endpoint(
            &issuer,
            "authorization endpoint",
            endpoint,
            options,
        )?);
    }
    if registration.grant.is_none() {
        registration.grant = Some(match &registration.auth {
            ClientAuth::None => {
                return Err(BuildError::AuthorizationCode {
                    issuer,
                    reason: "a public client (no secret) needs Grant::AuthorizationCode with its redirect URI".to_owned(),
                });
            }
            _ => Grant::ClientCredentials,
        });
    }
    if let Some(Grant::AuthorizationCode { redirect_uri }) = &registration.grant {
        if registration.authorization_endpoint.is_none() {
            return Err(BuildError::AuthorizationCode {
                issuer,
                reason: "the authorization code grant needs an authorization endpoint".to_owned(),
            });
        }
        // RFC 6749 §3.1.2 and MCP 2025-11-25 §11.3.
        if let Some(reason) = crate::redirect_uri::redirect_uri_problem(redirect_uri) {
            return Err(BuildError::AuthorizationCode { issuer, reason });
        }
    }
    if let Some(Grant::IdJag { idp, .. }) = &mut registration.grant {
        // The IdP gets the user's ID token: its endpoint is held to the same rules.
        config::check_issuer(&idp.issuer, options)?;
        if idp.client_id.is_empty() {
            return Err(BuildError::EmptyClientId {
                issuer: idp.issuer.clone(),
            });
        }
        idp.token_endpoint = config::check_endpoint(
            &idp.issuer,
            "identity provider's token endpoint",
            &idp.token_endpoint,
            options,
        )?;
    }
    if matches!(registration.grant, Some(Grant::ClientCredentials))
        && matches!(registration.auth, ClientAuth::None)
    {
        return Err(BuildError::MissingSecret { issuer });
    }
    Ok(GrantClient::new(
        registration,
        transport.clone(),
        limits,
        *options,
    ))
}
