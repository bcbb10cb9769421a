//! The crate as a `reqwest_middleware::Middleware` (feature `middleware`).

use std::sync::Arc;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use tokio::sync::OnceCell;

use super::{Policy, RunError, SendError, probe};
use crate::cache::TokenCache;
use crate::error::BuildError;
use crate::error::Error;

/// A `reqwest_middleware::Middleware` that attaches audience-checked tokens, with the same
/// behaviour as [`AuthorizedClient`](crate::http::AuthorizedClient): the token only after the
/// audience decision allows it for the exact URL, redirects followed by the middleware with a
/// new decision at every hop, one retry after 401 `invalid_token` or 403 `insufficient_scope`.
///
/// reqwest follows redirects below every middleware, so the `reqwest::Client` inside the
/// `ClientWithMiddleware` must not follow redirects; otherwise reqwest would re-send the token
/// on a same-origin redirect without asking this middleware. Build the client with
/// [`into_client_builder`](Self::into_client_builder), which turns redirects off on the
/// builder you give it and puts the middleware in the chain:
///
/// ```no_run
/// # fn build(cache: audience_cache::TokenCache) -> Result<(), Box<dyn std::error::Error>> {
/// use audience_cache::AudienceMiddleware;
///
/// let client = AudienceMiddleware::new(cache)
///     .into_client_builder(reqwest::Client::builder())?
///     .build();
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
///
/// Added to a chain by hand (`ClientBuilder::new(client).with(middleware)`), the middleware
/// cannot see how the client was built, so before the first token is attached it sends one
/// probe through the rest of the chain to a listener of its own on 127.0.0.1 that answers
/// with a redirect; if the client follows it (or the probe fails), every request fails with
/// [`BuildError::RedirectingClient`](crate::error::BuildError::RedirectingClient) and no token is
/// sent.
#[derive(Debug, Clone)]
pub struct AudienceMiddleware {
    policy: Arc<Policy>,
    /// Set once the client below is known not to follow redirects.
    no_redirects: Arc<OnceCell<()>>,
}

impl AudienceMiddleware {
    /// A middleware drawing tokens from `cache`.
    pub fn new(cache: TokenCache) -> Self {
        Self {
            policy: Arc::new(Policy::new(cache)),
            no_redirects: Arc::new(OnceCell::new()),
        }
    }

    /// A `reqwest_middleware` client builder over a client built from `builder` with
    /// redirects turned off (whatever `builder` said), with this middleware first in the
    /// chain: add more with `.with(…)` and finish with `.build()`. This is the way to use the
    /// middleware; it needs no probe. Fails only when reqwest cannot build the client (its
    /// TLS setup, say).
    pub fn into_client_builder(
        self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest_middleware::ClientBuilder, Error> {
        let inner = builder
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                Error::Configuration(BuildError::HttpClient {
                    reason: crate::error::describe(&e),
                })
            })?;
        // The client was just built without redirects: nothing to probe.
        let _ = self.no_redirects.set(());
        Ok(reqwest_middleware::ClientBuilder::new(inner).with(self))
    }

    /// Follows cross-origin redirects that re-send the body, as
    /// [`AuthorizedClient::allow_cross_origin_replay`](crate::http::AuthorizedClient::allow_cross_origin_replay)
    /// does (off by default).
    pub fn allow_cross_origin_replay(mut self, allow: bool) -> Self {
        Policy::unique(&mut self.policy).replay_across_origins = allow;
        self
    }

    /// Discovers URLs no configured resource covers, as
    /// [`AuthorizedClient::with_discovery`](crate::http::AuthorizedClient::with_discovery) does.
    pub fn with_discovery(
        mut self,
        discovery: crate::discovery::Discovery,
        clients: impl Into<crate::authorization::ClientRegistrar>,
    ) -> Self {
        let policy = Policy::unique(&mut self.policy);
        let discovery = policy.follow_cache(&discovery);
        policy.discovery = Some((discovery, clients.into()));
        self
    }

    /// Lets a user authorize where a resource needs it, as
    /// [`AuthorizedClient::with_authorization`](crate::http::AuthorizedClient::with_authorization)
    /// does.
    pub fn with_authorization(
        mut self,
        handler: Arc<dyn crate::authorization::AuthorizationHandler>,
    ) -> Self {
        Policy::unique(&mut self.policy).handler = Some(handler);
        self
    }
}

#[async_trait::async_trait]
impl Middleware for AudienceMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let extensions: &Extensions = extensions;
        let checked = self
            .no_redirects
            .get_or_try_init(|| {
                probe::check_no_redirects(|probe| {
                    let next = next.clone();
                    async move {
                        let mut copy = extensions.clone();
                        next.run(probe, &mut copy)
                            .await
                            .map_err(SendError::Middleware)
                    }
                })
            })
            .await;
        if let Err(error) = checked {
            return Err(reqwest_middleware::Error::middleware(error));
        }
        let result = super::run(&self.policy, request, |request| {
            let next = next.clone();
            async move {
                // The chain below runs once per hop or attempt, each with a copy of the
                // extensions (reqwest-retry does the same).
                let mut copy = extensions.clone();
                next.run(request, &mut copy)
                    .await
                    .map_err(SendError::Middleware)
            }
        })
        .await;
        match result {
            Ok(response) => Ok(response),
            Err(RunError::Crate(error)) => Err(reqwest_middleware::Error::middleware(error)),
            Err(RunError::Send(SendError::Middleware(error))) => Err(error),
            Err(RunError::Send(SendError::Reqwest(error))) => Err(error.into()),
        }
    }
}
