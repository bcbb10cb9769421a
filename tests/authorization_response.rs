//! The authorization response (RFC 6749 §4.1.2) as the completion of an authorization reads it:
//! the redirect URI (its query included), then `state`, then RFC 9207 `iss`, and only then
//! `code` or `error`. A forged redirect leaves the pending authorization for the real one;
//! pending authorizations expire; the account is fixed when the authorization URL is made.
//! In process against the embedded authorization server, on paused time.

mod support;

use std::time::Duration;

use audience_cache::testing::AuthorizationServer;
use audience_cache::{Error, Grant, PendingAuthorization, ScopeSet, TokenCache};
use support::*;
use url::Url;

fn empty() -> ScopeSet {
    ScopeSet::empty()
}

/// A cache for the public client `app` with MCP, redirected to `redirect_uri`.
fn cache_with_redirect(server: &AuthorizationServer, redirect_uri: &str) -> TokenCache {
    new_cache(
        server,
        public_app().grant(Grant::AuthorizationCode {
            redirect_uri: url(redirect_uri),
        }),
        [config(MCP)],
    )
}

fn app_cache(server: &AuthorizationServer) -> TokenCache {
    cache_with_redirect(server, REDIRECT)
}

/// `base` (a redirect URI) with `pairs` added to its query.
fn redirect_to(base: &str, pairs: &[(&str, &str)]) -> Url {
    let mut redirect = url(base);
    redirect.query_pairs_mut().extend_pairs(pairs);
    redirect
}

/// The `detail` of an [`Error::AuthorizationResponse`]; anything else fails the test.
fn refusal(error: Error) -> String {
    match error {
        Error::AuthorizationResponse { detail } => detail,
        other => panic!("not a refused authorization response: {other:?}"),
    }
}

fn state_of(pending: &PendingAuthorization) -> String {
    param(pending.url(), "state").unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_forged_error_redirect_is_refused_without_its_description() {
    let server = new_server();
    let cache = app_cache(&server);
    let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    let forged = redirect_to(
        REDIRECT,
        &[
            ("error", "access_denied"),
            (
                "error_description",
                "Session expired: log in at https://evil.example",
            ),
            ("state", "forged"),
        ],
    );
    let error = cache
        .complete_authorization(&pending, &forged)
        .await
        .unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains("evil.example") && !shown.contains("access_denied"),
        "{shown}"
    );
    assert!(refusal(error).contains("the state does not match"));
    assert_eq!(server.token_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_error_redirect_with_another_issuers_iss_is_a_mix_up() {
    let server = new_server();
    let cache = app_cache(&server);
    let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    let state = state_of(&pending);
    let mixed_up = redirect_to(
        REDIRECT,
        &[
            ("error", "access_denied"),
            ("error_description", "denied"),
            ("state", &state),
            ("iss", "https://attacker.example"),
        ],
    );
    let detail = refusal(
        cache
            .complete_authorization(&pending, &mixed_up)
            .await
            .unwrap_err(),
    );
    assert!(
        detail.contains("RFC 9207 mix-up") && !detail.contains("access_denied"),
        "{detail}"
    );
    // The same error from this issuer is relayed as its answer.
    let denied = redirect_to(
        REDIRECT,
        &[
            ("error", "access_denied"),
            ("error_description", "denied\r\nforged: line"),
            ("state", &state),
            ("iss", ISSUER),
        ],
    );
    let detail = refusal(
        cache
            .complete_authorization(&pending, &denied)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        detail,
        r#"the authorization server answered access_denied (denied\r\nforged: line)"#
    );
    assert_eq!(server.token_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_forged_redirect_leaves_the_pending_authorization_to_the_real_one() {
    let server = new_server();
    let cache = app_cache(&server);
    let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    let real = approve(&server, &pending).await;
    let state = state_of(&pending);
    let forgeries = [
        // Another state, with a code the attacker holds.
        redirect_to(REDIRECT, &[("code", "attacker"), ("state", "forged")]),
        // No state.
        redirect_to(REDIRECT, &[("code", "attacker")]),
        // The right state (leaked), but another issuer's code.
        redirect_to(
            REDIRECT,
            &[
                ("code", "attacker"),
                ("state", &state),
                ("iss", "https://attacker.example"),
            ],
        ),
        // Another redirect URI.
        redirect_to(
            "http://127.0.0.1:53683/callback",
            &[("code", "attacker"), ("state", &state)],
        ),
    ];
    for forged in &forgeries {
        let error = cache
            .complete_authorization(&pending, forged)
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::AuthorizationResponse { .. }),
            "{error:?}"
        );
    }
    assert_eq!(server.token_requests(), 0);

    let token = cache.complete_authorization(&pending, &real).await.unwrap();
    assert!(token.header_for(&url(&format!("{MCP}/tools"))).is_ok());
    assert_eq!(server.token_requests(), 1);
    assert_eq!(
        server.requests()[0].grant_type.as_deref(),
        Some("authorization_code")
    );

    // The real redirect once more: the authorization is used up, no second code exchange.
    let detail = refusal(
        cache
            .complete_authorization(&pending, &real)
            .await
            .unwrap_err(),
    );
    assert!(detail.contains("already completed"), "{detail}");
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pending_authorization_expires_after_ten_minutes() {
    let server = new_server();
    let cache = app_cache(&server);

    let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    tokio::time::advance(Duration::from_secs(599)).await;
    let redirect = approve(&server, &pending).await;
    cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    assert_eq!(server.token_requests(), 1);

    let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    tokio::time::advance(Duration::from_secs(600)).await;
    let redirect = approve(&server, &pending).await;
    let detail = refusal(
        cache
            .complete_authorization(&pending, &redirect)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        detail,
        "the authorization began 10 minutes ago or more and has expired; call TokenCache::begin_authorization again and send the user to the new URL"
    );
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_account_is_fixed_when_the_authorization_url_is_made() {
    let server = new_server();
    let cache = app_cache(&server);
    let pending = cache
        .begin_authorization_for_account(&resource(MCP), &empty(), "alice")
        .unwrap();
    assert!(format!("{pending:?}").contains("\"alice\""), "{pending:?}");
    let redirect = approve(&server, &pending).await;
    cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    cache
        .token_for_account(&resource(MCP), &empty(), "alice")
        .await
        .unwrap();
    for other in [None, Some("bob")] {
        let error = match other {
            None => cache.token(&resource(MCP), &empty()).await.unwrap_err(),
            Some(account) => cache
                .token_for_account(&resource(MCP), &empty(), account)
                .await
                .unwrap_err(),
        };
        assert!(
            matches!(error, Error::AuthorizationRequired { .. }),
            "{error:?}"
        );
    }
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_redirect_uri_is_compared_with_its_query() {
    const TENANT_A: &str = "http://127.0.0.1:53682/callback?tenant=a";
    let server = new_server();
    let cache = cache_with_redirect(&server, TENANT_A);
    let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    let real = approve(&server, &pending).await;
    // RFC 6749 §3.1.2: the server keeps the redirect URI's query and adds its parameters.
    assert_eq!(param(&real, "tenant").as_deref(), Some("a"));
    let code = param(&real, "code").unwrap();
    let state = state_of(&pending);
    let response = [
        ("code", code.as_str()),
        ("state", state.as_str()),
        ("iss", ISSUER),
    ];
    for other in [
        "http://127.0.0.1:53682/callback?tenant=b",
        "http://127.0.0.1:53682/callback",
        "http://127.0.0.1:53682/callback?tenant=a&tenant=b",
        "http://127.0.0.1:53682/callback?tenant=a&admin=1",
    ] {
        let detail = refusal(
            cache
                .complete_authorization(&pending, &redirect_to(other, &response))
                .await
                .unwrap_err(),
        );
        assert!(detail.contains("not the redirect URI"), "{other}: {detail}");
    }
    assert_eq!(server.token_requests(), 0);
    cache.complete_authorization(&pending, &real).await.unwrap();
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn two_completions_of_one_authorization_at_once_exchange_its_code_once() {
    let server = new_server();
    let cache = app_cache(&server);
    let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    let real = approve(&server, &pending).await;
    let (first, second) = tokio::join!(
        cache.complete_authorization(&pending, &real),
        cache.complete_authorization(&pending, &real)
    );
    let (token, refused) = match (first, second) {
        (Ok(token), Err(error)) | (Err(error), Ok(token)) => (token, error),
        other => panic!("not one token and one refusal: {other:?}"),
    };
    assert!(token.header_for(&url(&format!("{MCP}/tools"))).is_ok());
    assert!(refusal(refused).contains("already completed"));
    assert_eq!(server.token_requests(), 1);
}
