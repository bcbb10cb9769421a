//! Interop tests against a real authorization server: panva/oidc-provider 9.13.3, configured in
//! `tests/interop/oidc-provider/server.mjs` (clients, resources and behaviours in its README).
//!
//! Each test starts its own server with `node server.mjs` on an ephemeral port (Node.js 20 or
//! later is required; `npm ci` runs there first if `node_modules` is missing), so the token
//! requests counted at `/_test/stats` are exactly the test's own. The resource servers named
//! below (`http://127.0.0.1:8001/mcp` and so on) are audiences only: nothing connects to them.

mod interop_support;

use std::time::Duration;

use audience_cache::{
    AudienceMode, AudiencePolicy, ClientRegistration, Error, Grant, ParseOptions, RefusalKind,
    ResourceConfig, ResourceUri, TokenCache,
};
use interop_support::browser::{self, param, with_param};
use interop_support::server::{AuthServer, Settings, TokenRequest};
use interop_support::{jwt, loopback, scopes};
use serde_json::json;
use url::Url;

fn url(s: &str) -> Url {
    Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A cache for one client registration, with http allowed on loopback (the test server's
/// issuer and the resources are `http://127.0.0.1:…`).
fn cache(
    registration: ClientRegistration,
    resources: impl IntoIterator<Item = ResourceConfig>,
) -> TokenCache {
    let mut builder = TokenCache::builder()
        .client(registration)
        .allow_insecure_http_on_loopback(true)
        .request_timeout(Duration::from_secs(10));
    for resource in resources {
        builder = builder.resource(resource);
    }
    builder.build().expect("a valid configuration")
}

// ---------------------------------------------------------------------------------------------
// 1. Client credentials, with each way of presenting the client secret.

#[tokio::test]
async fn client_credentials_with_client_secret_basic() {
    client_credentials("cc-client", "client_secret_basic", "cc-secret").await;
}

#[tokio::test]
async fn client_credentials_with_client_secret_post() {
    client_credentials("cc-post", "client_secret_post", "cc-secret-post").await;
}

/// RFC 6749 §2.3.1: the id and secret are form-urlencoded before they go into the Basic
/// credentials; oidc-provider refuses `s3cr3t:+/%&` sent raw.
#[tokio::test]
async fn client_credentials_with_a_secret_that_needs_form_encoding() {
    client_credentials("cc-special", "client_secret_basic", "s3cr3t:+/%&").await;
}

/// One token request with `resource`, a JWT whose `aud` is exactly the resource's wire form,
/// then a cache hit.
async fn client_credentials(client_id: &str, method: &str, secret: &str) {
    let server = AuthServer::start().await;
    let resource = loopback("http://127.0.0.1:8001/mcp");
    assert_eq!(resource.wire(), "http://127.0.0.1:8001/mcp");
    let registration = server.registration(client_id);
    let registration = match method {
        "client_secret_basic" => registration.client_secret_basic(secret.into()),
        "client_secret_post" => registration.client_secret_post(secret.into()),
        other => unreachable!("no such method {other}"),
    };
    let cache = cache(
        registration,
        [ResourceConfig::new(resource.clone(), server.issuer()).scopes(scopes("mcp:read"))],
    );
    let request = url("http://127.0.0.1:8001/mcp/tools/list");

    let token = cache.token_for(&request).await.expect("a token");
    let (header, claims) = jwt(token.expose_secret());
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["aud"], json!("http://127.0.0.1:8001/mcp"));
    assert_eq!(claims["iss"], json!(server.issuer()));
    assert_eq!(claims["client_id"], json!(client_id));
    assert_eq!(claims["sub"], json!(client_id));
    assert_eq!(claims["scope"], json!("mcp:read"));
    assert_eq!(token.audiences(), Some(vec!["http://127.0.0.1:8001/mcp"]));
    assert_eq!(token.resource(), &resource);
    assert_eq!(token.scopes(), &scopes("mcp:read"));
    let header = token
        .header_for(&request)
        .expect("the token covers its own resource");
    assert_eq!(
        header.to_str().expect("ASCII"),
        format!("Bearer {}", token.expose_secret())
    );
    assert!(header.is_sensitive());

    let again = cache.token_for(&request).await.expect("a cached token");
    assert!(again.same_token_as(&token));

    let stats = server.stats().await;
    assert_eq!(stats.token_requests, 1);
    assert_eq!(
        stats.requests,
        [TokenRequest::ok(
            "client_credentials",
            "http://127.0.0.1:8001/mcp",
            Some("mcp:read"),
            method
        )]
    );
    assert_eq!(stats.resources, ["http://127.0.0.1:8001/mcp"]);
    let counters = cache.stats();
    assert_eq!(
        (
            counters.misses,
            counters.hits,
            counters.fetches,
            counters.errors
        ),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn a_wrong_client_secret_is_invalid_client_and_backs_off() {
    let server = AuthServer::start().await;
    let resource = loopback("http://127.0.0.1:8001/mcp");
    let cache = cache(
        server
            .registration("cc-client")
            .client_secret_basic("not-the-secret".into()),
        [ResourceConfig::new(resource, server.issuer())],
    );
    let request = url("http://127.0.0.1:8001/mcp");

    let error = cache.token_for(&request).await.expect_err("refused");
    let Error::OAuth { error: oauth, .. } = &error else {
        panic!("expected an OAuth error, got {error:?}");
    };
    assert_eq!(oauth.code, "invalid_client");
    assert!(!error.is_transient());
    let again = cache.token_for(&request).await.expect_err("backing off");
    assert!(
        matches!(again, Error::BackingOff { failures: 1, .. }),
        "{again:?}"
    );
    assert_eq!(
        again.oauth_error().map(|e| e.code),
        Some("invalid_client".into())
    );

    let stats = server.stats().await;
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.requests[0].status, 401);
}

// ---------------------------------------------------------------------------------------------
// 2. Several resources and callers: a token per resource, one token request per key.

#[tokio::test]
async fn two_resources_get_two_tokens_that_never_cross() {
    let server = AuthServer::start().await;
    let a = loopback("http://127.0.0.1:8001/mcp-a");
    let b = loopback("http://127.0.0.1:8002/mcp-b");
    let cache = cache(
        server
            .registration("cc-client")
            .client_secret_basic("cc-secret".into()),
        [
            ResourceConfig::new(a.clone(), server.issuer()),
            ResourceConfig::new(b.clone(), server.issuer()),
        ],
    );
    let a_url = url("http://127.0.0.1:8001/mcp-a/tools");
    let b_url = url("http://127.0.0.1:8002/mcp-b/tools");

    let a_token = cache.token_for(&a_url).await.expect("a token for A");
    let b_token = cache.token_for(&b_url).await.expect("a token for B");
    assert!(!b_token.same_token_as(&a_token));
    assert_ne!(b_token.expose_secret(), a_token.expose_secret());
    assert_eq!(jwt(a_token.expose_secret()).1["aud"], json!(a.wire()));
    assert_eq!(jwt(b_token.expose_secret()).1["aud"], json!(b.wire()));
    assert_eq!(b_token.resource(), &b);

    // Asking again, in any order, gives each URL its own resource's token and nothing else.
    for _ in 0..2 {
        let for_b = cache.token_for(&b_url).await.expect("B's token");
        assert!(for_b.same_token_as(&b_token));
        assert_eq!(jwt(for_b.expose_secret()).1["aud"], json!(b.wire()));
        let for_a = cache.token_for(&a_url).await.expect("A's token");
        assert!(for_a.same_token_as(&a_token));
    }

    // A's token, asked for by resource, refuses to become a header for anything outside A:
    // B, B's path on A's origin, and a path that only shares A's prefix.
    let bound_to_a = cache
        .token(&a, &audience_cache::ScopeSet::empty())
        .await
        .expect("A's token");
    assert!(bound_to_a.same_token_as(&a_token));
    bound_to_a.header_for(&a_url).expect("A's token for A");
    for elsewhere in [
        "http://127.0.0.1:8002/mcp-b/tools",
        "http://127.0.0.1:8001/mcp-b/tools",
        "http://127.0.0.1:8001/mcp-a-admin",
    ] {
        let refusal = bound_to_a
            .header_for(&url(elsewhere))
            .expect_err("A's token is not for this URL");
        assert_eq!(refusal.resource(), "http://127.0.0.1:8001/mcp-a");
        assert_eq!(refusal.request(), elsewhere);
        assert_eq!(refusal.kind(), &RefusalKind::NotCovered);
        assert!(
            refusal.to_string().contains("http://127.0.0.1:8001/mcp-a"),
            "{refusal}"
        );
    }

    // A URL no resource covers gets no token and causes no token request.
    let error = cache
        .token_for(&url("http://127.0.0.1:8001/mcp-a-admin"))
        .await
        .expect_err("no resource");
    assert!(matches!(error, Error::NoResource { .. }), "{error:?}");

    let stats = server.stats().await;
    assert_eq!(stats.token_requests, 2);
    assert_eq!(stats.resources, [a.wire(), b.wire()]);
    assert!(stats.requests.iter().all(|r| r.status == 200));
}

/// Concurrent misses on one key share one token request over real HTTP; `invalidate` (after a
/// 401 from the resource server, say) makes the next hand-out fetch a new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_request_and_invalidate_fetches_anew() {
    let server = AuthServer::start().await;
    let a = loopback("http://127.0.0.1:8001/mcp-a");
    let b = loopback("http://127.0.0.1:8002/mcp-b");
    let cache = cache(
        server
            .registration("cc-client")
            .client_secret_basic("cc-secret".into()),
        [
            ResourceConfig::new(a.clone(), server.issuer()),
            ResourceConfig::new(b.clone(), server.issuer()),
        ],
    );
    let a_url = url("http://127.0.0.1:8001/mcp-a/tools");
    let b_url = url("http://127.0.0.1:8002/mcp-b/tools");

    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let cache = cache.clone();
            let request = if i % 2 == 0 {
                a_url.clone()
            } else {
                b_url.clone()
            };
            tokio::spawn(async move { cache.token_for(&request).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.expect("the task ran").expect("a token"));
    }
    let (a_token, b_token) = (&tokens[0], &tokens[1]);
    for (i, token) in tokens.iter().enumerate() {
        let expected = if i % 2 == 0 { a_token } else { b_token };
        assert!(token.same_token_as(expected));
    }
    assert!(!a_token.same_token_as(b_token));
    assert_eq!(server.stats().await.token_requests, 2);

    assert!(cache.invalidate(a_token).await);
    assert!(!cache.invalidate(a_token).await, "already gone");
    let fresh = cache.token_for(&a_url).await.expect("a new token");
    assert!(!fresh.same_token_as(a_token));
    assert!(
        cache
            .token_for(&b_url)
            .await
            .expect("B's token")
            .same_token_as(b_token)
    );
    let stats = server.stats().await;
    assert_eq!(stats.token_requests, 3);
    // The first two in whichever order the tasks ran.
    let mut first_two = stats.resources[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, [a.wire(), b.wire()]);
    assert_eq!(stats.resources[2], a.wire());
}

// ---------------------------------------------------------------------------------------------
// 3. The audience decision on oidc-provider's tokens.
//
// oidc-provider sets `aud` to exactly the `resource` sent, and the crate sends each resource's
// own wire form, so the server never hands the cache a token whose `aud` disagrees with the
// resource it was requested for: a cache-level `AudienceMismatch` cannot be produced honestly
// with this server. The test below runs the same decision (`AudiencePolicy::decide`, which
// hand-outs run on the stored audience) on a real token for B presented as if the server had
// answered A's request with it.

#[tokio::test]
async fn the_aud_check_reads_real_tokens() {
    let server = AuthServer::start().await;
    let a = loopback("http://127.0.0.1:8001/mcp-a");
    let b = loopback("http://127.0.0.1:8002/mcp-b");
    let strict = loopback("http://127.0.0.1:8003/mcp");
    let provenance = loopback("http://127.0.0.1:8004/mcp");
    let cache = cache(
        server
            .registration("cc-client")
            .client_secret_basic("cc-secret".into()),
        [
            ResourceConfig::new(a.clone(), server.issuer()),
            ResourceConfig::new(b.clone(), server.issuer()),
            ResourceConfig::new(strict.clone(), server.issuer())
                .audience(AudiencePolicy::new(AudienceMode::RequireAud)),
            ResourceConfig::new(provenance.clone(), server.issuer())
                .audience(AudiencePolicy::new(AudienceMode::ProvenanceOnly)),
        ],
    );
    let a_url = url("http://127.0.0.1:8001/mcp-a/tools");
    let b_token = cache
        .token_for(&url("http://127.0.0.1:8002/mcp-b/tools"))
        .await
        .expect("a token for B");

    // B's token, had it come back for A, is refused for A's URL by its `aud` alone (the
    // provenance check would pass: the cache would believe it was requested for A).
    let refusal = AudiencePolicy::default()
        .decide(&a, &a_url, b_token.expose_secret())
        .expect_err("B's aud does not cover A");
    assert_eq!(refusal.resource(), a.key());
    assert_eq!(
        refusal.kind(),
        &RefusalKind::AudienceMismatch {
            audiences: vec![b.wire().to_owned()]
        }
    );
    assert_eq!(refusal.audiences(), [b.wire()]);
    assert!(
        refusal.to_string().contains("http://127.0.0.1:8002/mcp-b"),
        "{refusal}"
    );
    AudiencePolicy::new(AudienceMode::RequireAud)
        .decide(&a, &a_url, b_token.expose_secret())
        .expect_err("refused in the strict mode too");
    // Provenance only never reads `aud`; that mode relies on the server alone.
    AudiencePolicy::new(AudienceMode::ProvenanceOnly)
        .decide(&a, &a_url, b_token.expose_secret())
        .expect("provenance only: allowed");

    // Every oidc-provider token for a resource is a JWT with `aud`, so RequireAud works with it.
    let strict_token = cache
        .token_for(&url("http://127.0.0.1:8003/mcp/x"))
        .await
        .expect("RequireAud accepts oidc-provider's JWT");
    assert_eq!(strict_token.audiences(), Some(vec![strict.wire()]));
    // ProvenanceOnly stores no audience at all, though the JWT has one.
    let provenance_token = cache
        .token_for(&url("http://127.0.0.1:8004/mcp/x"))
        .await
        .expect("a token");
    assert_eq!(provenance_token.audiences(), None);
    assert_eq!(
        jwt(provenance_token.expose_secret()).1["aud"],
        json!(provenance.wire())
    );

    assert_eq!(server.stats().await.token_requests, 3);
}

/// rules §1: a resource taken from protected resource metadata is sent verbatim, oidc-provider puts
/// that exact string in `aud`, and the crate recognises it as the same resource.
#[tokio::test]
async fn a_resource_from_metadata_is_sent_verbatim_and_its_aud_is_accepted() {
    let server = AuthServer::start().await;
    let options = ParseOptions::strict().allow_insecure_http_on_loopback(true);
    let verbatim = "http://LocalHost:8001/%6dcp";
    let resource = ResourceUri::from_metadata(verbatim, &options).expect("a valid resource");
    assert_eq!(resource.key(), "http://localhost:8001/mcp");
    assert_eq!(resource.wire(), verbatim);
    let cache = cache(
        server
            .registration("cc-client")
            .client_secret_basic("cc-secret".into()),
        [ResourceConfig::new(resource, server.issuer())],
    );
    let request = url("http://localhost:8001/mcp/tools");

    let token = cache.token_for(&request).await.expect("a token");
    assert_eq!(jwt(token.expose_secret()).1["aud"], json!(verbatim));
    token.header_for(&request).expect("the aud covers the URL");
    let refusal = token
        .header_for(&url("http://localhost:8001/mcpx"))
        .expect_err("not covered");
    assert_eq!(refusal.kind(), &RefusalKind::NotCovered);
    assert_eq!(server.stats().await.resources, [verbatim]);
}

// ---------------------------------------------------------------------------------------------
// 4. invalid_target: not transient, and not retried at once.

#[tokio::test]
async fn invalid_target_is_final_and_backs_off() {
    let server = AuthServer::start().await;
    let refused = loopback("http://127.0.0.1:8001/unknown-mcp");
    let fine = loopback("http://127.0.0.1:8001/mcp");
    let cache = cache(
        server
            .registration("cc-client")
            .client_secret_basic("cc-secret".into()),
        [
            ResourceConfig::new(refused.clone(), server.issuer()),
            ResourceConfig::new(fine, server.issuer()),
        ],
    );
    let request = url("http://127.0.0.1:8001/unknown-mcp/tools");

    let error = cache.token_for(&request).await.expect_err("invalid_target");
    let Error::InvalidTarget {
        issuer,
        resource,
        description,
    } = &error
    else {
        panic!("expected InvalidTarget, got {error:?}");
    };
    assert_eq!(issuer, server.issuer());
    assert_eq!(resource, refused.key());
    assert_eq!(
        description.as_deref(),
        Some("resource indicator is missing, or unknown")
    );
    assert!(!error.is_transient());
    assert_eq!(
        error.oauth_error().map(|e| e.code),
        Some("invalid_target".into())
    );

    let again = cache.token_for(&request).await.expect_err("backing off");
    let Error::BackingOff { failures, last, .. } = &again else {
        panic!("expected BackingOff, got {again:?}");
    };
    assert_eq!(*failures, 1);
    assert!(matches!(**last, Error::InvalidTarget { .. }), "{last:?}");
    assert!(!again.is_transient());
    assert!(again.retry_after().is_some_and(|d| d > Duration::ZERO));

    // The backoff is per key: another resource of the same server is not held back.
    cache
        .token_for(&url("http://127.0.0.1:8001/mcp/tools"))
        .await
        .expect("the other resource works");

    let stats = server.stats().await;
    assert_eq!(stats.token_requests, 2);
    assert_eq!(stats.requests[0].resource.as_deref(), Some(refused.wire()));
    assert_eq!(stats.requests[0].status, 400);
    assert_eq!(stats.requests[1].status, 200);
}

// ---------------------------------------------------------------------------------------------
// 5. Authorization code with PKCE, then refresh with rotation.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_for_a_public_client() {
    authorization_code("code-client", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_for_a_confidential_client() {
    authorization_code("code-confidential", Some("code-secret")).await;
}

/// The redirect URI registered for the code clients; oidc-provider accepts any port on
/// loopback for native clients. Nothing listens there and nothing connects to it.
fn redirect_uri() -> Url {
    url("http://127.0.0.1:8976/callback")
}

fn code_registration(
    server: &AuthServer,
    client_id: &str,
    secret: Option<&str>,
) -> ClientRegistration {
    let registration = server
        .registration(client_id)
        .grant(Grant::AuthorizationCode {
            redirect_uri: redirect_uri(),
        });
    match secret {
        Some(secret) => registration.client_secret_basic(secret.into()),
        None => registration,
    }
}

/// A cache for a code client whose tokens, when the server gives them 2 s, are served for 1 s
/// (the skew); no refresh ahead, so every refresh happens on a miss, where a test sees it.
fn code_cache(
    server: &AuthServer,
    client_id: &str,
    secret: Option<&str>,
    resource: &ResourceUri,
) -> TokenCache {
    TokenCache::builder()
        .client(code_registration(server, client_id, secret))
        .resource(ResourceConfig::new(resource.clone(), server.issuer()))
        .allow_insecure_http_on_loopback(true)
        .request_timeout(Duration::from_secs(10))
        .skew(Duration::from_secs(1))
        .refresh_ahead(Duration::ZERO)
        .build()
        .expect("a valid configuration")
}

/// Begin (the URL's parameters), the user's login and consent followed headlessly, complete
/// (a token for the resource), then refreshes on expiry: without `scope` and with it, with the
/// rotated refresh token each time, and concurrently for two keys of the one grant.
async fn authorization_code(client_id: &str, secret: Option<&str>) {
    let server = AuthServer::start_with(Settings {
        access_token_ttl: Some(2),
    })
    .await;
    let metadata = server.metadata().clone();
    assert_eq!(metadata.issuer, server.issuer());
    assert_eq!(metadata.code_challenge_methods_supported, ["S256"]);
    assert!(metadata.authorization_response_iss_parameter_supported);
    let resource = loopback("http://127.0.0.1:8001/mcp");
    let cache = code_cache(&server, client_id, secret, &resource);
    let client_auth = if secret.is_some() {
        "client_secret_basic"
    } else {
        "none"
    };
    let wire = resource.wire();
    let granted = scopes("mcp:read mcp:write");
    let request = url("http://127.0.0.1:8001/mcp/tools/list");

    // Nothing yet: a user has to authorize first.
    let error = cache
        .token(&resource, &granted)
        .await
        .expect_err("no grant");
    assert!(
        matches!(error, Error::AuthorizationRequired { .. }),
        "{error:?}"
    );

    let pending = cache
        .begin_authorization(&resource, &granted)
        .expect("an authorization request");
    let authorization_url = pending.url().clone();
    assert_eq!(
        authorization_url[..url::Position::AfterPath],
        metadata.authorization_endpoint[..url::Position::AfterPath]
    );
    assert_eq!(
        param(&authorization_url, "response_type").as_deref(),
        Some("code")
    );
    assert_eq!(
        param(&authorization_url, "client_id").as_deref(),
        Some(client_id)
    );
    assert_eq!(
        param(&authorization_url, "redirect_uri").as_deref(),
        Some(redirect_uri().as_str())
    );
    assert_eq!(param(&authorization_url, "resource").as_deref(), Some(wire));
    assert_eq!(
        param(&authorization_url, "scope").as_deref(),
        Some("mcp:read mcp:write")
    );
    assert_eq!(
        param(&authorization_url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let challenge = param(&authorization_url, "code_challenge").expect("a PKCE challenge");
    assert_eq!(challenge.len(), 43, "base64url of a SHA-256 digest");
    let state = param(&authorization_url, "state").expect("a state");
    assert!(
        state.len() >= 16,
        "state {state:?} is too short to be unguessable"
    );
    assert_eq!(param(&authorization_url, "code_verifier"), None);
    assert!(!format!("{pending:?}").contains(&state));
    assert_eq!(pending.redirect_uri(), &redirect_uri());

    let redirect = browser::authorize(&authorization_url, &redirect_uri()).await;
    assert_eq!(param(&redirect, "state"), Some(state));
    assert_eq!(param(&redirect, "iss").as_deref(), Some(server.issuer()));
    assert!(param(&redirect, "code").is_some(), "{redirect}");

    let token = cache
        .complete_authorization(pending, &redirect)
        .await
        .expect("the code is exchanged");
    let claims = jwt(token.expose_secret()).1;
    assert_eq!(claims["aud"], json!(wire));
    assert_eq!(claims["sub"], json!("alice"));
    assert_eq!(claims["client_id"], json!(client_id));
    assert_eq!(claims["scope"], json!("mcp:read mcp:write"));
    assert_eq!(token.scopes(), &granted);
    token
        .header_for(&request)
        .expect("the token covers its resource");
    let hit = cache.token(&resource, &granted).await.expect("cached");
    assert!(hit.same_token_as(&token));

    // The resource has no default scopes, so `token_for` asks for none: another cache key,
    // served by the refresh token without `scope`, which means the whole grant.
    let unscoped = cache.token_for(&request).await.expect("a refreshed token");
    assert!(!unscoped.same_token_as(&token));
    let claims = jwt(unscoped.expose_secret()).1;
    assert_eq!(claims["aud"], json!(wire));
    assert_eq!(claims["scope"], json!("mcp:read mcp:write"));

    // Both tokens go stale; each miss refreshes with the refresh token the previous refresh
    // returned. oidc-provider rotates on every refresh and, if a used refresh token comes back,
    // answers invalid_grant and revokes the grant, so these two refreshes succeed only if the
    // cache kept the rotated token each time.
    let stale = token.expires_in().max(unscoped.expires_in());
    tokio::time::sleep(stale + Duration::from_millis(100)).await;
    let refreshed = cache
        .token(&resource, &granted)
        .await
        .expect("refreshed with the rotated refresh token");
    assert!(!refreshed.same_token_as(&token));
    assert_ne!(refreshed.expose_secret(), token.expose_secret());
    assert_eq!(jwt(refreshed.expose_secret()).1["aud"], json!(wire));
    assert_eq!(refreshed.scopes(), &granted);
    let refreshed_unscoped = cache
        .token_for(&request)
        .await
        .expect("refreshed again with the next rotated refresh token");
    assert!(!refreshed_unscoped.same_token_as(&unscoped));
    assert_eq!(
        jwt(refreshed_unscoped.expose_secret()).1["aud"],
        json!(wire)
    );

    let stats = server.stats().await;
    assert_eq!(
        stats.requests,
        [
            TokenRequest::ok("authorization_code", wire, None, client_auth),
            TokenRequest::ok("refresh_token", wire, None, client_auth),
            TokenRequest::ok(
                "refresh_token",
                wire,
                Some("mcp:read mcp:write"),
                client_auth
            ),
            TokenRequest::ok("refresh_token", wire, None, client_auth),
        ]
    );

    // Stale again, and now both keys miss at once, two callers each: one refresh per key
    // (single flight), and the two refreshes take turns with the one refresh token (sent
    // together, the second would be a reuse and revoke the grant).
    let stale = refreshed.expires_in().max(refreshed_unscoped.expires_in());
    tokio::time::sleep(stale + Duration::from_millis(100)).await;
    let (scoped_1, scoped_2, unscoped_1, unscoped_2) = tokio::join!(
        cache.token(&resource, &granted),
        cache.token(&resource, &granted),
        cache.token_for(&request),
        cache.token_for(&request),
    );
    let (scoped_1, scoped_2) = (scoped_1.expect("refreshed"), scoped_2.expect("refreshed"));
    let (unscoped_1, unscoped_2) = (
        unscoped_1.expect("refreshed"),
        unscoped_2.expect("refreshed"),
    );
    assert!(scoped_1.same_token_as(&scoped_2));
    assert!(unscoped_1.same_token_as(&unscoped_2));
    assert!(!scoped_1.same_token_as(&refreshed));
    assert!(!unscoped_1.same_token_as(&refreshed_unscoped));

    let stats = server.stats().await;
    assert_eq!(stats.by_grant.get("authorization_code"), Some(&1));
    assert_eq!(stats.by_grant.get("refresh_token"), Some(&5));
    let mut last_two = stats.requests[4..].to_vec();
    last_two.sort_by(|a, b| a.scope.cmp(&b.scope));
    assert_eq!(
        last_two,
        [
            TokenRequest::ok("refresh_token", wire, None, client_auth),
            TokenRequest::ok(
                "refresh_token",
                wire,
                Some("mcp:read mcp:write"),
                client_auth
            ),
        ]
    );
    let errors: Vec<String> = server
        .log()
        .into_iter()
        .filter(|line| line.contains(".error"))
        .collect();
    assert!(errors.is_empty(), "the server logged errors: {errors:#?}");
    let counters = cache.stats();
    assert_eq!((counters.fetches, counters.refreshes), (6, 5));
}

/// `openid` is part of the grant but not of the access token: oidc-provider answers the code
/// exchange for `openid mcp:read` with `"scope": "mcp:read"`, the token restricted to the
/// resource's scopes (RFC 8707 §2.2), while the refresh token keeps `openid`. The key the user
/// authorized must stay refreshable.
#[tokio::test]
async fn a_grant_with_scopes_beyond_the_resource_stays_refreshable() {
    let server = AuthServer::start_with(Settings {
        access_token_ttl: Some(2),
    })
    .await;
    let resource = loopback("http://127.0.0.1:8001/mcp");
    let cache = code_cache(&server, "code-client", None, &resource);
    let asked = scopes("openid mcp:read");

    let pending = cache
        .begin_authorization(&resource, &asked)
        .expect("started");
    let redirect = browser::authorize(pending.url(), &redirect_uri()).await;
    let token = cache
        .complete_authorization(pending, &redirect)
        .await
        .expect("the code is exchanged");
    assert_eq!(
        token.scopes(),
        &scopes("mcp:read"),
        "the token's scope, as the server said"
    );
    assert!(
        cache
            .token(&resource, &asked)
            .await
            .expect("cached")
            .same_token_as(&token)
    );

    tokio::time::sleep(token.expires_in() + Duration::from_millis(100)).await;
    let refreshed = cache
        .token(&resource, &asked)
        .await
        .expect("the authorized key is refreshed with the grant's refresh token");
    assert!(!refreshed.same_token_as(&token));
    assert_eq!(jwt(refreshed.expose_secret()).1["scope"], json!("mcp:read"));

    let stats = server.stats().await;
    assert_eq!(
        stats.requests,
        [
            TokenRequest::ok("authorization_code", resource.wire(), None, "none"),
            TokenRequest::ok(
                "refresh_token",
                resource.wire(),
                Some("mcp:read openid"),
                "none"
            ),
        ]
    );
}

/// oidc-provider leaves `offline_access` out of the grant when the authorization request has no
/// `prompt=consent` (OpenID Connect Core §11) and says so only through the token's `scope`,
/// which cannot tell "not granted" from "not for this resource". Refreshing the authorized key
/// then asks for it and the server answers `invalid_scope`: final for that key, but the refresh
/// token is not spent (the server checks scope before it rotates) and still serves the scopes
/// the grant has.
#[tokio::test]
async fn a_scope_left_out_of_the_grant_is_invalid_scope_on_refresh() {
    let server = AuthServer::start_with(Settings {
        access_token_ttl: Some(2),
    })
    .await;
    let resource = loopback("http://127.0.0.1:8001/mcp");
    let cache = code_cache(&server, "code-client", None, &resource);
    let asked = scopes("offline_access mcp:read");

    let pending = cache
        .begin_authorization(&resource, &asked)
        .expect("started");
    let redirect = browser::authorize(pending.url(), &redirect_uri()).await;
    let token = cache
        .complete_authorization(pending, &redirect)
        .await
        .expect("the code is exchanged");
    assert_eq!(token.scopes(), &scopes("mcp:read"));

    tokio::time::sleep(token.expires_in() + Duration::from_millis(100)).await;
    let error = cache
        .token(&resource, &asked)
        .await
        .expect_err("invalid_scope");
    let oauth = error.oauth_error().expect("an OAuth error");
    assert_eq!(oauth.code, "invalid_scope");
    assert_eq!(
        oauth.description.as_deref(),
        Some("refresh token missing requested scope")
    );
    assert!(!error.is_transient());
    let read = cache
        .token(&resource, &scopes("mcp:read"))
        .await
        .expect("the refresh token still works for the granted scope");
    assert_eq!(jwt(read.expose_secret()).1["scope"], json!("mcp:read"));

    let stats = server.stats().await;
    assert_eq!(
        stats.requests,
        [
            TokenRequest::ok("authorization_code", resource.wire(), None, "none"),
            TokenRequest {
                status: 400,
                ..TokenRequest::ok(
                    "refresh_token",
                    resource.wire(),
                    Some("mcp:read offline_access"),
                    "none"
                )
            },
            TokenRequest::ok("refresh_token", resource.wire(), Some("mcp:read"), "none"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Redirects that must not complete an authorization.

#[tokio::test]
async fn a_redirect_with_the_wrong_state_or_iss_is_refused() {
    let server = AuthServer::start().await;
    let resource = loopback("http://127.0.0.1:8001/mcp");
    let refused = loopback("http://127.0.0.1:8001/unknown-mcp");
    let cache = cache(
        code_registration(&server, "code-client", None),
        [
            ResourceConfig::new(resource.clone(), server.issuer()).scopes(scopes("mcp:read")),
            ResourceConfig::new(refused.clone(), server.issuer()).scopes(scopes("mcp:read")),
        ],
    );
    let none = audience_cache::ScopeSet::empty();

    // Two authorizations in flight: the redirect of the second does not complete the first.
    let first = cache
        .begin_authorization(&resource, &none)
        .expect("started");
    let second = cache
        .begin_authorization(&resource, &none)
        .expect("started");
    let second_redirect = browser::authorize(second.url(), &redirect_uri()).await;
    let error = cache
        .complete_authorization(first, &second_redirect)
        .await
        .expect_err("another request's state");
    let Error::AuthorizationResponse { detail } = &error else {
        panic!("expected AuthorizationResponse, got {error:?}");
    };
    assert!(detail.contains("state"), "{detail}");
    assert!(!error.is_transient());
    // Refused before the code was sent anywhere: it still completes its own request.
    assert_eq!(server.stats().await.token_requests, 0);
    cache
        .complete_authorization(second, &second_redirect)
        .await
        .expect("the right state completes");

    // A redirect whose `iss` names another server (RFC 9207 mix-up) is refused.
    let third = cache
        .begin_authorization(&resource, &none)
        .expect("started");
    let third_redirect = browser::authorize(third.url(), &redirect_uri()).await;
    let mixed_up = with_param(&third_redirect, "iss", "http://127.0.0.1:9/");
    assert_eq!(param(&mixed_up, "state"), param(&third_redirect, "state"));
    let error = cache
        .complete_authorization(third, &mixed_up)
        .await
        .expect_err("another issuer");
    let Error::AuthorizationResponse { detail } = &error else {
        panic!("expected AuthorizationResponse, got {error:?}");
    };
    assert!(detail.contains("iss"), "{detail}");

    // A refused resource comes back as an error redirect, with the server's words.
    let fourth = cache.begin_authorization(&refused, &none).expect("started");
    let error_redirect = browser::authorize(fourth.url(), &redirect_uri()).await;
    assert_eq!(
        param(&error_redirect, "error").as_deref(),
        Some("invalid_target")
    );
    let error = cache
        .complete_authorization(fourth, &error_redirect)
        .await
        .expect_err("an error redirect");
    let Error::AuthorizationResponse { detail } = &error else {
        panic!("expected AuthorizationResponse, got {error:?}");
    };
    assert!(detail.contains("invalid_target"), "{detail}");
    let error = cache.token(&refused, &none).await.expect_err("no grant");
    assert!(
        matches!(error, Error::AuthorizationRequired { .. }),
        "{error:?}"
    );

    let stats = server.stats().await;
    assert_eq!(
        stats.requests,
        [TokenRequest::ok(
            "authorization_code",
            resource.wire(),
            None,
            "none"
        )]
    );
}
