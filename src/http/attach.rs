//! One hop's token: the route of its URL, the token for that route's resource (taking a user
//! through an authorization where one is needed and allowed), and the header, built after the
//! crate's one decision.

use http::header::AUTHORIZATION;
use reqwest::Request;

use super::Policy;
use crate::cache::{BearerToken, Route};
use crate::error::Error;
use crate::resource::ResourceUri;
use crate::scope::ScopeSet;

/// The most authorizations (and scope step-ups) for one request (MCP 2025-11-25 §10.1: bound
/// them, so that a server that will never be satisfied does not loop the user through consent).
const MAX_AUTHORIZATIONS: usize = 3;

/// What one request has retried so far.
#[derive(Default)]
pub(super) struct Retries {
    /// A 401 `invalid_token` was retried with a new token (once: a second one is the server's
    /// problem, not the token's).
    pub(super) new_token: bool,
    /// 403 `insufficient_scope` retries, each asking for more than the token had.
    pub(super) step_ups: usize,
    /// A 401 `use_dpop_nonce` was retried with the nonce it gave (once: a second one is an
    /// error, never a loop; RFC 9449 §9).
    pub(super) dpop_nonce: bool,
    /// Authorizations a user was taken through.
    authorizations: usize,
    /// Authorization server moves followed (RFC 9728 §5.2; at most the authorization
    /// module's `MAX_MOVES`).
    pub(super) moves: usize,
    /// Whether the resource's metadata was fetched again after this attempt's 401 (once per
    /// attempt: a 401 that does not come from a move is handled as before).
    pub(super) issuer_rechecked: bool,
}

/// Attaches a token for the request's URL, after resolving it once to its route and making
/// the crate's one decision where the header is built. The first hop (`first` is `Some`, with
/// the route the caller resolved already, if any) must get a token (fail closed) and may take
/// the user through an authorization; a later hop gets one only where its route is the first
/// hop's resource, and goes without one elsewhere. A refused URL is an error on every hop.
pub(super) async fn attach(
    policy: &Policy,
    request: &mut Request,
    first: Option<Option<Route<'static>>>,
    bound: &mut Option<ResourceUri>,
    stepping_up: Option<&ScopeSet>,
    retries: &mut Retries,
) -> Result<Option<BearerToken>, Error> {
    request.headers_mut().remove(AUTHORIZATION);
    // A proof is for one request: never one left from another hop or attempt.
    request.headers_mut().remove(crate::dpop::DPOP);
    let first_hop = first.is_some();
    let route = match (first, bound.as_ref()) {
        (Some(Some(route)), _) => route,
        (Some(None), _) | (None, None) => policy.cache.route(request.url())?,
        (None, Some(resource)) => match policy.cache.route(request.url()) {
            // The same resource must still own the URL: a more specific resource configured
            // for it (perhaps at another issuer) owns it otherwise.
            Ok(route) if route.resource() == resource => route,
            Ok(_) | Err(Error::NoResource { .. }) => return Ok(None),
            Err(error) => return Err(error),
        },
    };
    let resource = route.resource().clone();
    let scopes = {
        let step_up = policy.step_up.lock().unwrap_or_else(|p| p.into_inner());
        let remembered = step_up.get(resource.key()).cloned().unwrap_or_default();
        match stepping_up {
            Some(scopes) => remembered.union(scopes),
            None => remembered,
        }
    };
    let token = match policy.cache.token_on(&route, &scopes).await {
        Err(Error::AuthorizationRequired { .. }) if policy.handler.is_some() && first_hop => {
            let turn = policy.authorization_turn(&resource);
            let _turn = turn.lock().await;
            // Another request may have authorized while this one waited its turn.
            match policy.cache.token_on(&route, &scopes).await {
                Err(Error::AuthorizationRequired { .. }) => {
                    authorize(policy, &resource, &scopes, retries).await?;
                    policy.cache.token_on(&route, &scopes).await?
                }
                other => other?,
            }
        }
        other => other?,
    };
    // The decision, the Authorization header and a bound token's proof in one call, for this
    // hop's method and the URL the decision approved (RFC 9449 §7: each hop its own proof).
    let method = request.method().clone();
    let headers = policy.cache.headers(&token, &method, &route).await?;
    headers.apply(request.headers_mut());
    *bound = Some(resource);
    Ok(Some(token))
}

/// How many 403 `insufficient_scope` retries one request may make: one for tokens the cache
/// fetches by itself, up to [`MAX_AUTHORIZATIONS`] where a user authorizes each new scope set.
pub(super) fn step_up_limit(policy: &Policy) -> usize {
    if policy.handler.is_some() {
        MAX_AUTHORIZATIONS
    } else {
        1
    }
}

/// Takes the user through one authorization for `resource` and `scopes` (its default scopes
/// plus these), through the policy's handler; the token lands in the cache.
async fn authorize(
    policy: &Policy,
    resource: &ResourceUri,
    scopes: &ScopeSet,
    retries: &mut Retries,
) -> Result<(), Error> {
    let Some(handler) = &policy.handler else {
        return Ok(());
    };
    if retries.authorizations >= MAX_AUTHORIZATIONS {
        return Err(Error::Authorization {
            detail: format!(
                "{} needed {MAX_AUTHORIZATIONS} authorizations in one request and still asks for another; giving up so the user is not looped through consent (check the scopes the server asks for and the ones the authorization server grants)",
                resource.wire()
            ),
        });
    }
    retries.authorizations += 1;
    let pending = policy.cache.begin_authorization(resource, scopes)?;
    tracing::info!(
        resource = resource.wire(),
        attempt = retries.authorizations,
        "authorization required: handing the authorization URL to the handler"
    );
    let redirect = handler.authorize(pending.url()).await?;
    policy
        .cache
        .complete_authorization(pending, &redirect)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::sync::Arc;

    use url::Url;

    use super::*;
    use crate::authorization::{AuthorizationFuture, AuthorizationHandler};
    use crate::cache::TokenCache;

    /// Counts the authorizations it is asked for, and completes none.
    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl AuthorizationHandler for Counting {
        fn redirect_uri(&self) -> Url {
            Url::parse("http://127.0.0.1/callback").unwrap()
        }

        fn authorize<'a>(&'a self, _url: &'a Url) -> AuthorizationFuture<'a> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                Err(Error::Authorization {
                    detail: "test".to_owned(),
                })
            })
        }
    }

    #[tokio::test]
    async fn a_fourth_authorization_in_one_request_is_refused_before_the_handler_runs() {
        let handler = Arc::new(Counting::default());
        let mut policy = Policy::new(TokenCache::builder().build().unwrap());
        policy.handler = Some(handler.clone());
        let resource = ResourceUri::parse("https://mcp.example.com/mcp").unwrap();
        let mut retries = Retries {
            authorizations: MAX_AUTHORIZATIONS,
            ..Retries::default()
        };
        let error = authorize(&policy, &resource, &ScopeSet::empty(), &mut retries)
            .await
            .unwrap_err();
        assert_eq!(handler.0.load(Ordering::SeqCst), 0);
        assert_eq!(retries.authorizations, MAX_AUTHORIZATIONS);
        let message = error.to_string();
        assert!(matches!(error, Error::Authorization { .. }), "{error:?}");
        assert!(
            message.contains("https://mcp.example.com/mcp") && message.contains("3 authorizations"),
            "{message}"
        );
        // Below the limit the attempt is made and counted (here it stops at once: the resource
        // is not configured).
        retries.authorizations = MAX_AUTHORIZATIONS - 1;
        let error = authorize(&policy, &resource, &ScopeSet::empty(), &mut retries)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::UnknownResource { .. }), "{error:?}");
        assert_eq!(retries.authorizations, MAX_AUTHORIZATIONS);
    }
}
