//! The top of the pipeline: sending requests with audience-checked tokens. A wrapper around
//! `reqwest::Client` and (with the `middleware` feature) a `reqwest_middleware::Middleware`
//! share one loop: the first request to an unknown server discovers it (`discover`, one
//! discovery per origin at a time), each hop's URL is resolved once and the token attached
//! after the crate's one decision (`attach`), redirects are checked and followed by the crate
//! (`redirect`), and a 401 `invalid_token` or 403 `insufficient_scope` is retried once (the
//! first request to a resource going alone, `first_contact`, so that what it learns applies to
//! the others).

mod attach;
mod discover;
mod first_contact;
#[cfg(feature = "middleware")]
mod middleware;
mod moved;
#[cfg(feature = "middleware")]
mod probe;
mod redirect;
#[cfg(feature = "rmcp")]
mod rmcp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Request, Response};
use url::Url;

use crate::cache::{BearerToken, TokenCache};
use crate::challenge::{ChallengeErrorCode, Challenges, TokenType};
use crate::error::Error;
use crate::scope::ScopeSet;
use attach::{Retries, attach, step_up_limit};

#[cfg(feature = "middleware")]
pub use middleware::AudienceMiddleware;
#[cfg(feature = "rmcp")]
pub use rmcp::McpHttpClient;

/// The most redirects followed for one request.
const DEFAULT_MAX_REDIRECTS: usize = 10;
/// A `reqwest::Client` that attaches audience-checked tokens from a [`TokenCache`].
///
/// For every request it picks the configured resource that covers the URL, gets a token for
/// it and attaches `Authorization: Bearer` (marked sensitive) only if the audience decision
/// allows that token for that exact URL; otherwise the request fails with the crate's error and
/// is not sent. An `Authorization` header set by the caller is left alone. Redirects are
/// followed by the crate, a bounded number of hops, deciding again at each: the token goes
/// along only where the same resource covers the new URL. A 401 `invalid_token` evicts the
/// rejected token and retries once with a new one; a 403 `insufficient_scope` retries once with
/// the challenged scopes added (and remembers them for the resource).
///
/// ```no_run
/// # async fn run(cache: audience_cache::TokenCache) -> Result<(), Box<dyn std::error::Error>> {
/// use audience_cache::AuthorizedClient;
///
/// let client = AuthorizedClient::new(cache)?;
/// let request = client.get("https://mcp.example.com/mcp/tools").build()?;
/// let response = client.execute(request).await?;
/// # let _ = response;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AuthorizedClient {
    inner: reqwest::Client,
    policy: Arc<Policy>,
}

/// What the wrapper and the middleware share.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) cache: TokenCache,
    pub(crate) max_redirects: usize,
    /// Whether a cross-origin 307/308 (or a 301/302 that keeps its body) is followed.
    pub(crate) replay_across_origins: bool,
    /// Scopes added after a 403 `insufficient_scope`, per resource (match key).
    step_up: Mutex<HashMap<String, ScopeSet>>,
    /// Discovery for URLs no configured resource covers, with how to get a client there.
    pub(crate) discovery: Option<(
        crate::discovery::Discovery,
        crate::authorization::ClientRegistrar,
    )>,
    /// The discoveries under way, one per origin.
    discoveries: Arc<discover::Discoveries>,
    /// The first request to each resource, which the others wait for.
    first_contacts: Arc<first_contact::FirstContacts>,
    /// Where a user authorizes when a resource needs it.
    pub(crate) handler: Option<Arc<dyn crate::authorization::AuthorizationHandler>>,
    /// One authorization at a time per resource (match key): concurrent requests that all
    /// need one wait for the first instead of taking the user through consent once each.
    authorizing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Policy {
    /// The lock that lets one request at a time take the user through an authorization for
    /// `resource`.
    fn authorization_turn(
        &self,
        resource: &crate::resource::ResourceUri,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.authorizing.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(resource.key().to_owned()).or_default().clone()
    }

    /// The policy to configure: this one, or a copy if it is shared already (a client cloned
    /// before it was configured keeps its own settings).
    pub(crate) fn unique(policy: &mut Arc<Self>) -> &mut Self {
        if Arc::get_mut(policy).is_none() {
            let mut fresh = Policy::new(policy.cache.clone());
            fresh.max_redirects = policy.max_redirects;
            fresh.replay_across_origins = policy.replay_across_origins;
            fresh.discovery = policy.discovery.clone();
            fresh.handler = policy.handler.clone();
            *policy = Arc::new(fresh);
        }
        Arc::get_mut(policy).unwrap_or_else(|| unreachable!("made unique above"))
    }

    /// `discovery` with the cache's development switch: one switch, set once.
    pub(crate) fn follow_cache(
        &self,
        discovery: &crate::discovery::Discovery,
    ) -> crate::discovery::Discovery {
        discovery.with_insecure_http_on_loopback(self.cache.allows_insecure_http_on_loopback())
    }

    pub(crate) fn new(cache: TokenCache) -> Self {
        Self {
            cache,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            replay_across_origins: false,
            step_up: Mutex::default(),
            discovery: None,
            discoveries: Arc::default(),
            first_contacts: Arc::default(),
            handler: None,
            authorizing: Mutex::default(),
        }
    }
}

impl AuthorizedClient {
    /// A client for `cache`, over a reqwest client built with automatic redirects off.
    pub fn new(cache: TokenCache) -> Result<Self, Error> {
        let inner = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                Error::Configuration(crate::error::BuildError::HttpClient {
                    reason: e.to_string(),
                })
            })?;
        Ok(Self {
            inner,
            policy: Arc::new(Policy::new(cache)),
        })
    }

    /// Follows at most `max` redirects per request (default 10).
    pub fn max_redirects(mut self, max: usize) -> Self {
        self.policy_mut().max_redirects = max;
        self
    }

    /// Follows redirects to another origin that re-send the request's method and body (a 307 or
    /// 308 of a POST, PUT, PATCH or DELETE; a 301 or 302 of a method other than GET, HEAD and
    /// POST). Off by default: such a redirect is an [`Error::Redirect`], because the server
    /// that answers it chooses where the body goes. When on, the body goes along with only the
    /// headers any origin may see (`Accept`, `Accept-Encoding`, `Accept-Language`,
    /// `User-Agent`, `Cache-Control`, `Pragma`, and `Content-Type`, `Content-Language`,
    /// `Content-Encoding`, `Content-Length`); the token goes only where its resource owns the
    /// new URL. Other cross-origin hops (a GET, or a POST that a 301/302/303 turns into one)
    /// are followed either way, with the first six of those headers only.
    pub fn allow_cross_origin_replay(mut self, allow: bool) -> Self {
        self.policy_mut().replay_across_origins = allow;
        self
    }

    /// Discovers the resource and authorization server of URLs that no configured resource
    /// covers, the way MCP clients must (MCP 2025-11-25 §4): the request is sent once without a
    /// token; if the answer is 401, its challenge leads to the protected resource metadata and
    /// the authorization server's metadata, `client` is registered there, the resource is added
    /// to the cache, and the request is sent again with a token. Any other answer is returned
    /// as it is. `clients` says how to get a client at the authorization server found: a
    /// [`PreRegistered`](crate::config::PreRegistered) client, or a [`ClientRegistrar`](crate::authorization::ClientRegistrar)
    /// that can also use a client ID metadata document or dynamic registration.
    ///
    /// A discovered resource whose authorization server changes is followed (RFC 9728 §5.2):
    /// a 401 to one of its tokens has its protected resource metadata fetched again, and if
    /// the metadata no longer lists the issuer in use, `clients` gets a client at the issuer it
    /// lists now exactly as at first contact (a pre-registered client only at the issuers it
    /// is registered at), the resource moves there, the old issuer's tokens and refresh tokens
    /// for it are dropped from the cache, the credential store and the shared level, and the
    /// request is sent again. One move per request; metadata that moves the resource again
    /// within the same request is
    /// [`DiscoveryError::AuthorizationServerMovedAgain`](crate::discovery::DiscoveryError::AuthorizationServerMovedAgain).
    /// Each move is counted in [`Stats::authorization_server_moves`](crate::cache::Stats::authorization_server_moves)
    /// and logged at `warn`. Resources configured on the cache with their issuer are never
    /// moved by a server.
    ///
    /// Plain http on loopback (development against servers on this machine) is decided by the
    /// cache's one switch, [`TokenCacheBuilder::allow_insecure_http_on_loopback`](crate::cache::TokenCacheBuilder::allow_insecure_http_on_loopback):
    /// the discovery follows it, whatever its own options say.
    pub fn with_discovery(
        mut self,
        discovery: crate::discovery::Discovery,
        clients: impl Into<crate::authorization::ClientRegistrar>,
    ) -> Self {
        let policy = self.policy_mut();
        let discovery = policy.follow_cache(&discovery);
        policy.discovery = Some((discovery, clients.into()));
        self
    }

    /// Lets a user authorize where a resource needs it: when the cache has no token for a
    /// request and no refresh token to get one
    /// ([`Error::AuthorizationRequired`]), or when a 403 `insufficient_scope` asks for scopes
    /// the user has not granted, the handler is given the authorization URL (with
    /// `resource`, the scopes, `state` and PKCE) and its redirect completes the authorization;
    /// the request then goes out with the new token. At most three authorizations (and scope
    /// step-ups) per request; after that the request fails with [`Error::Authorization`]. The
    /// handler's redirect URI is also the one dynamically registered clients are registered
    /// with.
    pub fn with_authorization(
        mut self,
        handler: Arc<dyn crate::authorization::AuthorizationHandler>,
    ) -> Self {
        self.policy_mut().handler = Some(handler);
        self
    }

    fn policy_mut(&mut self) -> &mut Policy {
        Policy::unique(&mut self.policy)
    }

    /// Starts a GET request (build it with `.build()` and pass it to
    /// [`execute`](Self::execute)).
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.inner.get(url)
    }

    /// Starts a POST request.
    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.inner.post(url)
    }

    /// Starts a request with any method.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.inner.request(method, url)
    }

    /// Sends `request` with a token for its URL, following redirects and retrying once on
    /// 401 `invalid_token` or 403 `insufficient_scope`, as described on the type.
    pub async fn execute(&self, request: Request) -> Result<Response, Error> {
        let inner = self.inner.clone();
        run(&self.policy, request, move |request| {
            let inner = inner.clone();
            async move { inner.execute(request).await.map_err(SendError::Reqwest) }
        })
        .await
        .map_err(|e| match e {
            RunError::Crate(e) => e,
            RunError::Send(SendError::Reqwest(e)) => crate::error::request_error(&e),
            #[cfg(feature = "middleware")]
            RunError::Send(SendError::Middleware(e)) => Error::Request {
                url: "the server".to_owned(),
                detail: e.to_string(),
                transient: false,
            },
        })
    }
}

/// A failure of the underlying client.
#[derive(Debug)]
pub(crate) enum SendError {
    Reqwest(reqwest::Error),
    #[cfg(feature = "middleware")]
    Middleware(reqwest_middleware::Error),
}

pub(crate) enum RunError {
    Crate(Error),
    Send(SendError),
}

impl From<Error> for RunError {
    fn from(error: Error) -> Self {
        Self::Crate(error)
    }
}

/// What the loop decided about a response.
enum Next {
    Done,
    Redirect(redirect::Hop),
    RetryWithNewToken,
    RetryWithScopes(ScopeSet),
    /// RFC 9449 §9: the same token with a new proof that carries the nonce the server gave.
    RetryWithNonce,
    /// The resource answered a bearer token with a `DPoP` challenge only: it requires DPoP;
    /// a new, bound token is fetched.
    RetryWithDpop,
    /// A 401 to a token of a discovered resource: its metadata is fetched again, in case its
    /// authorization server changed (RFC 9728 §5.2).
    RecheckIssuer,
    /// The resource moved to another authorization server: sent again with a token from there.
    RetryAfterMove,
}

/// The one loop: attach, send, and decide about redirects and challenges.
pub(crate) async fn run<S, F>(
    policy: &Policy,
    request: Request,
    mut send: S,
) -> Result<Response, RunError>
where
    S: FnMut(Request) -> F,
    F: Future<Output = Result<Response, SendError>>,
{
    let caller_authorized = request.headers().contains_key(AUTHORIZATION);
    // The first hop's route, resolved once: a URL the crate refuses is refused here, before
    // anything is sent (also before a discovery probe).
    let mut first_route = if caller_authorized {
        None
    } else {
        match policy.cache.route(request.url()) {
            Ok(route) => Some(route.into_owned()),
            Err(Error::NoResource { .. }) if policy.discovery.is_some() => None,
            Err(error) => return Err(RunError::Crate(error)),
        }
    };
    if !caller_authorized
        && first_route.is_none()
        && let Some((discovery, clients)) = &policy.discovery
    {
        match discover::route_or_discover(policy, (discovery, clients), &request, &mut send).await?
        {
            discover::Found::Route(route) => first_route = Some(route),
            discover::Found::Response(response) => return Ok(response),
        }
    }
    // The first request to a resource goes alone; the others wait for what it learns.
    let contact = match &first_route {
        Some(route) => policy.first_contacts.first(route.resource().key()).await,
        None => None,
    };
    let result = hops(policy, request, first_route, caller_authorized, &mut send).await;
    if let Some(contact) = contact {
        contact.ended();
    }
    result
}

/// The hops of one request: attach, send, and decide about redirects and challenges.
async fn hops<S, F>(
    policy: &Policy,
    request: Request,
    mut first_route: Option<crate::cache::Route<'static>>,
    caller_authorized: bool,
    send: &mut S,
) -> Result<Response, RunError>
where
    S: FnMut(Request) -> F,
    F: Future<Output = Result<Response, SendError>>,
{
    let start = request.url().clone();
    let mut request = request;
    let mut hops = 0;
    let mut retries = Retries::default();
    // Scopes a 403 asked for: used for the retry, remembered for the resource only once the
    // retry is not refused for scope again (a server that will not grant them must not
    // poison every later request).
    let mut stepping_up: Option<(String, ScopeSet)> = None;
    // The resource the first hop's token is for: a later hop gets a token only where that
    // same resource covers the new URL.
    let mut bound: Option<crate::resource::ResourceUri> = None;
    loop {
        let attached = if caller_authorized {
            None
        } else {
            let pending = stepping_up.as_ref().map(|(_, scopes)| scopes);
            attach(
                policy,
                &mut request,
                (hops == 0).then(|| first_route.take()),
                &mut bound,
                pending,
                &mut retries,
            )
            .await?
        };
        // A copy to follow a 307/308 or to retry; a streaming body cannot be copied.
        let replay = request.try_clone();
        let url = request.url().clone();
        let response = send(request).await.map_err(RunError::Send)?;
        // RFC 9449 §9: a nonce from a server that was sent a proof is used by the next proof
        // to its origin. Only those servers: another cannot fill the cache's nonces.
        let new_nonce = attached.as_ref().is_some_and(BearerToken::is_dpop_bound)
            && policy.cache.dpop().remember(&url, response.headers());
        // The client below must not follow redirects on its own: it would re-send the token
        // without a decision. The request may already have gone; nothing more is sent.
        if !same_resource(response.url(), &url) {
            return Err(RunError::Crate(Error::Redirect {
                url: crate::audience::redacted_url(&url),
                detail: "the HTTP client below the crate followed a redirect itself; build it with redirect::Policy::none()".to_owned(),
            }));
        }
        if let Some((resource, scopes)) = stepping_up.take()
            && response.status() != StatusCode::FORBIDDEN
        {
            let mut step_up = policy.step_up.lock().unwrap_or_else(|p| p.into_inner());
            let entry = step_up.entry(resource).or_default();
            *entry = entry.union(&scopes);
        }
        let mut next = decide(
            policy,
            &response,
            (&start, &url),
            attached.as_ref(),
            &retries,
            hops,
            new_nonce,
        )?;
        if let (Next::RecheckIssuer, Some(token)) = (&next, &attached) {
            retries.issuer_rechecked = true;
            next = if moved::recheck(policy, (&url, response.headers()), token, &retries).await? {
                Next::RetryAfterMove
            } else {
                decide(
                    policy,
                    &response,
                    (&start, &url),
                    attached.as_ref(),
                    &retries,
                    hops,
                    new_nonce,
                )?
            };
        }
        let not_replayable = || {
            RunError::Crate(Error::NotReplayable {
                url: crate::audience::redacted_url(&url),
            })
        };
        request = match next {
            Next::Done => return Ok(response),
            Next::Redirect(hop) => {
                hops += 1;
                redirect::follow(hop, replay, policy.replay_across_origins)?
            }
            Next::RetryWithNewToken => {
                if let Some(token) = &attached {
                    policy.cache.invalidate(token).await;
                }
                retries.new_token = true;
                replay.ok_or_else(not_replayable)?
            }
            Next::RetryWithNonce => {
                retries.dpop_nonce = true;
                replay.ok_or_else(not_replayable)?
            }
            Next::RetryAfterMove => {
                retries.moves += 1;
                // The token from the new server may be answered 401 in its turn.
                retries.issuer_rechecked = false;
                replay.ok_or_else(not_replayable)?
            }
            Next::RecheckIssuer => return Ok(response),
            Next::RetryWithDpop => {
                if let Some(token) = &attached {
                    let resource = token.resource();
                    policy
                        .cache
                        .dpop()
                        .raise(resource, crate::dpop::Use::Required);
                    let issuer = policy.cache.issuer_of(resource);
                    if issuer.and_then(|i| policy.cache.dpop_key_at(&i)).is_none() {
                        return Err(RunError::Crate(Error::Configuration(
                            crate::dpop::missing_key(resource),
                        )));
                    }
                    tracing::info!(
                        resource = resource.key(),
                        "the resource server asks for DPoP-bound tokens: the bearer token is \
                         dropped and a bound one requested"
                    );
                    policy.cache.invalidate(token).await;
                }
                retries.new_token = true;
                replay.ok_or_else(not_replayable)?
            }
            Next::RetryWithScopes(scopes) => {
                if let Some(token) = &attached {
                    stepping_up = Some((token.resource().key().to_owned(), scopes));
                }
                retries.step_ups += 1;
                replay.ok_or_else(not_replayable)?
            }
        };
    }
}

/// What to do after `response`, the answer to a request to `url` that started at `start`.
fn decide(
    policy: &Policy,
    response: &Response,
    (start, url): (&Url, &Url),
    attached: Option<&BearerToken>,
    retries: &Retries,
    hops: usize,
    new_nonce: bool,
) -> Result<Next, Error> {
    let status = response.status();
    if let Some(hop) = redirect::hop(start, url, status, response.headers()) {
        if hops >= policy.max_redirects {
            return Err(Error::TooManyRedirects {
                url: crate::audience::redacted_url(url),
                limit: policy.max_redirects,
            });
        }
        return hop.map(Next::Redirect);
    }
    let Some(token) = attached else {
        return Ok(Next::Done);
    };
    if !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Ok(Next::Done);
    }
    let Ok(challenges) = Challenges::parse(response.headers().get_all(WWW_AUTHENTICATE)) else {
        return Ok(Next::Done);
    };
    if status == StatusCode::UNAUTHORIZED
        && let Some(next) = dpop_challenge(&challenges, token, retries, new_nonce)
    {
        return Ok(next);
    }
    // RFC 9728 §5.2: a 401 is how a resource whose authorization server changed answers the
    // old server's tokens, with or without an error code.
    if status == StatusCode::UNAUTHORIZED && policy.discovery.is_some() && !retries.issuer_rechecked
    {
        return Ok(Next::RecheckIssuer);
    }
    let token_type = if token.is_dpop_bound() {
        TokenType::DPoP
    } else {
        TokenType::Bearer
    };
    let Ok(selected) = challenges.select(url, token_type) else {
        return Ok(Next::Done);
    };
    match (status, selected.error()) {
        (StatusCode::UNAUTHORIZED, Some(ChallengeErrorCode::InvalidToken))
            if !retries.new_token && retries.step_ups == 0 =>
        {
            Ok(Next::RetryWithNewToken)
        }
        (StatusCode::FORBIDDEN, Some(ChallengeErrorCode::InsufficientScope))
            if !retries.new_token && retries.step_ups < step_up_limit(policy) =>
        {
            match selected.scope() {
                // Never loop: only a challenge asking for more than the token has, and more
                // than it was asked for (a server that grants less than asked would otherwise
                // hand the same token back every time).
                Some(scope)
                    if !token.scopes().is_superset_of(scope)
                        && !token.requested_scopes().is_superset_of(scope) =>
                {
                    Ok(Next::RetryWithScopes(scope.clone()))
                }
                _ => Ok(Next::Done),
            }
        }
        _ => Ok(Next::Done),
    }
}

/// What a 401 asks of DPoP, if anything: for a bound token, `use_dpop_nonce` with a nonce not
/// tried yet is retried once (RFC 9449 §9); for a bearer token, a `DPoP` challenge without a
/// `Bearer` one means the resource takes only DPoP-bound tokens (RFC 9449 §7.1), retried once
/// with a bound token.
/// Whether the answer came from the URL the request was sent to: equal but for the fragment,
/// which never leaves the client (RFC 9110 §4.2.5) and which reqwest's answer does not carry.
fn same_resource(answered: &Url, sent: &Url) -> bool {
    answered[..url::Position::AfterQuery] == sent[..url::Position::AfterQuery]
}

fn dpop_challenge(
    challenges: &Challenges,
    token: &BearerToken,
    retries: &Retries,
    new_nonce: bool,
) -> Option<Next> {
    let dpop = challenges.iter().find(|c| c.is_scheme("DPoP"))?;
    if token.is_dpop_bound() {
        let asks_nonce = matches!(
            dpop.error(),
            Some(ChallengeErrorCode::Other(code)) if &*code == crate::dpop::USE_DPOP_NONCE
        );
        return (asks_nonce && new_nonce && !retries.dpop_nonce).then_some(Next::RetryWithNonce);
    }
    (challenges.requires_dpop() && !retries.new_token && retries.step_ups == 0)
        .then_some(Next::RetryWithDpop)
}
