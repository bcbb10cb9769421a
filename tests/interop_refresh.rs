//! Refresh grants against oidc-provider 9.13.3 (tests/interop/oidc-provider): a grant that
//! holds `offline_access` stays refreshable though the server's answers never name it.
//!
//! Each test starts its own server (Node.js 20 or later), so the token requests counted at
//! `/_test/stats` are exactly the test's own. `http://127.0.0.1:8001/mcp` is an audience only.

mod interop_support;

use std::time::Duration;

use audience_cache::{ClientRegistration, Grant, ResourceConfig, ScopeSet, TokenCache};
use interop_support::browser::{self, param};
use interop_support::server::{AuthServer, Settings, TokenRequest};
use interop_support::{jwt, loopback, scopes};
use serde_json::json;
use url::Url;

/// A loopback redirect URI; oidc-provider accepts any port for native clients. Nothing
/// listens there.
fn redirect_uri() -> Url {
    Url::parse("http://127.0.0.1:8976/callback").unwrap_or_else(|e| panic!("{e}"))
}

/// The public code client, asking for refresh tokens (`offline_access`).
fn offline_registration(server: &AuthServer) -> ClientRegistration {
    server
        .registration("code-client")
        .grant(Grant::AuthorizationCode {
            redirect_uri: redirect_uri(),
        })
        .request_offline_access(true)
}

/// oidc-provider grants `offline_access` (OpenID Connect Core §11) but answers the code
/// exchange and every refresh with `"scope": "mcp:read"`: an access token for a resource
/// carries only that resource's scopes. The grant the cache records is what it asked for,
/// `offline_access` included, so the key it asked for refreshes, again and again.
#[tokio::test]
async fn an_offline_access_grant_refreshes_though_the_answers_leave_it_out() {
    let server = AuthServer::start_with(Settings {
        access_token_ttl: Some(2),
    })
    .await;
    let resource = loopback("http://127.0.0.1:8001/mcp");
    let cache = TokenCache::builder()
        .client(offline_registration(&server))
        .resource(ResourceConfig::new(resource.clone(), server.issuer()).scopes(scopes("mcp:read")))
        .allow_insecure_http_on_loopback(true)
        .request_timeout(Duration::from_secs(10))
        .skew(Duration::from_secs(1))
        .refresh_ahead(Duration::ZERO)
        .build()
        .expect("a valid configuration");

    let pending = cache
        .begin_authorization(&resource, &ScopeSet::empty())
        .expect("started");
    assert_eq!(
        param(pending.url(), "scope").as_deref(),
        Some("mcp:read offline_access")
    );
    // oidc-provider drops `offline_access` from an authorization request without
    // `prompt=consent` (OpenID Connect Core §11); the user agent adds it here.
    let mut url = pending.url().clone();
    url.query_pairs_mut().append_pair("prompt", "consent");
    let redirect = browser::authorize(&url, &redirect_uri()).await;
    let token = cache
        .complete_authorization(pending, &redirect)
        .await
        .expect("the code is exchanged");
    assert_eq!(jwt(token.expose_secret()).1["scope"], json!("mcp:read"));
    assert_eq!(token.scopes(), &scopes("mcp:read"), "as the server said");

    let mut last = token;
    for round in 1..=2 {
        tokio::time::sleep(last.expires_in() + Duration::from_millis(100)).await;
        let refreshed = cache
            .token(&resource, &ScopeSet::empty())
            .await
            .unwrap_or_else(|e| panic!("refresh {round}: {e}"));
        assert!(!refreshed.same_token_as(&last));
        let claims = jwt(refreshed.expose_secret()).1;
        assert_eq!(claims["scope"], json!("mcp:read"));
        assert_eq!(claims["aud"], json!(resource.wire()));
        last = refreshed;
    }

    let stats = server.stats().await;
    let refresh = || {
        TokenRequest::ok(
            "refresh_token",
            resource.wire(),
            Some("mcp:read offline_access"),
            "none",
        )
    };
    assert_eq!(
        stats.requests,
        [
            TokenRequest::ok("authorization_code", resource.wire(), None, "none"),
            refresh(),
            refresh(),
        ]
    );
    let errors: Vec<String> = server
        .log()
        .into_iter()
        .filter(|line| line.contains(".error"))
        .collect();
    assert!(errors.is_empty(), "the server logged errors: {errors:#?}");
    let counters = cache.stats();
    assert_eq!((counters.fetches, counters.refreshes), (3, 2));
}
