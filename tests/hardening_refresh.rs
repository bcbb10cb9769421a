//! Findings of a security review about refresh tokens and flights, each a test of the safe
//! behaviour.

mod support;

use std::time::Duration;

use audience_cache::testing::{Failure, ResourceField};
use audience_cache::{Error, ScopeSet, TokenCache};
use support::*;

async fn authorized() -> (audience_cache::testing::AuthorizationServer, TokenCache) {
    let server = new_server();
    let cache = new_cache(
        &server,
        public_app(),
        [config(MCP).scopes(scopes("mcp:read"))],
    );
    let pending = cache
        .begin_authorization(&resource(MCP), &ScopeSet::empty())
        .unwrap();
    let redirect = approve(&server, &pending).await;
    cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    // Past the access token's usable lifetime: the next call refreshes.
    tokio::time::advance(USABLE + Duration::from_secs(1)).await;
    (server, cache)
}

/// F6: a 200 refresh response that the crate rejects (here: a `resource` member naming another
/// resource; equally a non-Bearer token_type, an invalid scope, a token with a space) carried
/// the rotated refresh token. It is dropped with the response, the old one stays in the slot,
/// and the next refresh presents the spent token: with reuse detection (RFC 9700 §4.14.2) the
/// server revokes the whole grant.
#[tokio::test(start_paused = true)]
async fn f6_a_rotated_refresh_token_survives_a_rejected_response() {
    let (server, cache) = authorized().await;
    server.script(|s| {
        s.resource_field = ResourceField::Value(serde_json::json!("https://other.example.com"))
    });
    let first = cache
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap_err();
    assert!(matches!(first, Error::Protocol { .. }), "{first:?}");
    // The server goes back to normal; the key's backoff (a protocol error: the maximum) ends.
    server.script(|s| s.resource_field = ResourceField::Omit);
    tokio::time::advance(Duration::from_secs(61)).await;
    let second = cache.token(&resource(MCP), &ScopeSet::empty()).await;
    assert!(
        second.is_ok(),
        "the grant is gone: {second:?}; requests: {:?}",
        server.requests()
    );
}

/// F7: a refresh failing with a non-transient error that does not drop the refresh token
/// (invalid_client, invalid_scope, unauthorized_client, any Protocol error) is not backed off
/// either, so every call sends another refresh request.
#[tokio::test(start_paused = true)]
async fn f7_non_transient_refresh_failures_back_off() {
    let (server, cache) = authorized().await;
    let before = server.token_requests();
    server.script(|s| {
        s.fail_always = Some(Failure::OAuth {
            status: 401,
            error: "invalid_client".into(),
        })
    });
    for _ in 0..5 {
        let error = cache
            .token(&resource(MCP), &ScopeSet::empty())
            .await
            .unwrap_err();
        assert!(error.oauth_error().is_some(), "{error:?}");
    }
    let sent = server.token_requests() - before;
    assert!(sent <= 1, "{sent} refresh requests for 5 calls, no backoff");
}

/// F8: when a refresh token is cached but the requested scopes exceed the original grant,
/// the error says no refresh token is cached, and does not name the missing scopes.
#[tokio::test(start_paused = true)]
async fn f8_scopes_beyond_the_grant_are_named() {
    let (_server, cache) = authorized().await;
    let error = cache
        .token(&resource(MCP), &scopes("files:write"))
        .await
        .unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.contains("files:write"),
        "the message does not say which scopes need a new authorization: {shown}"
    );
}

/// F12: a fetch whose task dies before it finishes (its runtime shut down; a panic in the
/// task) leaves its entry in the single-flight map for ever: every later call for that key
/// joins the dead flight and fails at once with "the token request was aborted".
#[test]
fn f12_a_dead_flight_does_not_poison_its_key() {
    let server = new_server();
    server.script(|s| s.latency = Duration::from_secs(5));
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let url = url(MCP);
    {
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        first.block_on(async {
            // The caller gives up; the flight keeps running in its spawned task...
            let _ = tokio::time::timeout(Duration::from_secs(1), cache.token_for(&url)).await;
        });
        // ...until its runtime shuts down.
    }
    server.script(|s| s.latency = Duration::ZERO);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = second.block_on(cache.token_for(&url));
    assert!(result.is_ok(), "{result:?}");
}
