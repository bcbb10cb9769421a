//! The crate as a `reqwest_middleware::Middleware` (feature `middleware`).

use std::sync::Arc;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use super::{Policy, RunError, SendError};
use crate::TokenCache;

/// A `reqwest_middleware::Middleware` that attaches audience-checked tokens, with the same
/// behaviour as [`AuthorizedClient`](crate::AuthorizedClient): the token only after the
/// audience decision allows it for the exact URL, redirects followed by the middleware with a
/// new decision at every hop, one retry after 401 `invalid_token` or 403 `insufficient_scope`.
///
/// reqwest follows redirects below every middleware, so the `reqwest::Client` inside the
/// `ClientWithMiddleware` must be built with `redirect::Policy::none()`; otherwise reqwest
/// would re-send the token on a same-origin redirect without asking this middleware.
///
/// ```no_run
/// # fn build(cache: audience_cache::TokenCache) -> Result<(), Box<dyn std::error::Error>> {
/// use audience_cache::AudienceMiddleware;
///
/// let inner = reqwest::Client::builder()
///     .redirect(reqwest::redirect::Policy::none())
///     .build()?;
/// let client = reqwest_middleware::ClientBuilder::new(inner)
///     .with(AudienceMiddleware::new(cache))
///     .build();
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AudienceMiddleware {
    policy: Arc<Policy>,
}

impl AudienceMiddleware {
    /// A middleware drawing tokens from `cache`.
    pub fn new(cache: TokenCache) -> Self {
        Self {
            policy: Arc::new(Policy::new(cache)),
        }
    }

    /// Discovers URLs no configured resource covers, as
    /// [`AuthorizedClient::with_discovery`](crate::AuthorizedClient::with_discovery) does.
    pub fn with_discovery(
        mut self,
        discovery: crate::Discovery,
        clients: impl Into<crate::ClientRegistrar>,
    ) -> Self {
        Policy::unique(&mut self.policy).discovery = Some((discovery, clients.into()));
        self
    }

    /// Lets a user authorize where a resource needs it, as
    /// [`AuthorizedClient::with_authorization`](crate::AuthorizedClient::with_authorization)
    /// does.
    pub fn with_authorization(mut self, handler: Arc<dyn crate::AuthorizationHandler>) -> Self {
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
