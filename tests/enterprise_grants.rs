//! Enterprise-managed authorization (the Identity Assertion JWT Authorization Grant): the user's
//! ID token is exchanged at the enterprise IdP for an ID-JAG (RFC 8693), which the client
//! checks and presents to the MCP authorization server with the JWT bearer grant (RFC 7523).
//! Two embedded servers in process (the IdP and the authorization server, which trusts the
//! IdP's assertions), on paused time; every count and parameter from their own records.

mod enterprise_support;
mod support;

use std::time::Duration;

use audience_cache::testing::{
    AuthorizationServer, ClientAuthMethod, Failure, TokenRequestRecord, fingerprint,
};
use audience_cache::{AssertionSource, Error, Grant, IdentityProvider, SubjectToken, TokenCache};
use enterprise_support::*;
use support::*;

/// The one exchange the IdP saw, every parameter asserted.
fn assert_exchange(record: &TokenRequestRecord, id_token: &str, scope: &str) {
    assert_eq!(record.grant_type.as_deref(), Some(TOKEN_EXCHANGE));
    assert_eq!(record.client_id.as_deref(), Some(SVC));
    assert_eq!(record.client_auth, Some(ClientAuthMethod::None));
    assert_eq!(record.resources, [MCP]);
    assert_eq!(record.audiences, [ISSUER]);
    assert_eq!(record.scope.as_deref(), Some(scope));
    assert_eq!(record.subject_token_type.as_deref(), Some(ID_TOKEN_TYPE));
    assert_eq!(record.requested_token_type.as_deref(), Some(ID_JAG_TYPE));
    assert_eq!(
        record.subject_token_fingerprint,
        Some(fingerprint(id_token))
    );
    assert_eq!(record.assertion_fingerprint, None);
    assert!(!record.refresh_token_presented && !record.code_presented);
    assert_eq!(record.status, Some(http::StatusCode::OK), "{record:?}");
}

/// The one JWT bearer request the authorization server saw, every parameter asserted.
fn assert_bearer(record: &TokenRequestRecord, scope: &str) {
    assert_eq!(record.grant_type.as_deref(), Some(JWT_BEARER));
    assert_eq!(record.client_id.as_deref(), Some(SVC));
    assert_eq!(
        record.client_auth,
        Some(ClientAuthMethod::ClientSecretBasic)
    );
    assert_eq!(record.resources, [MCP]);
    assert!(record.audiences.is_empty());
    assert_eq!(record.scope.as_deref(), Some(scope));
    assert!(record.assertion_fingerprint.is_some());
    assert!(!record.subject_token_presented);
    assert_eq!(record.subject_token_type, None);
    assert_eq!(record.requested_token_type, None);
    assert_eq!(record.status, Some(http::StatusCode::OK), "{record:?}");
}

#[tokio::test(start_paused = true)]
async fn an_id_token_becomes_an_id_jag_at_the_idp_then_a_token_at_the_authorization_server() {
    let (auth, idp) = servers();
    let id_token = idp.id_token(USER, SVC);
    let cache = cache(&auth, &idp, &id_token);

    let token = cache.token_for(&mcp_url()).await.unwrap();
    assert_eq!(idp.token_requests(), 1);
    assert_eq!(auth.token_requests(), 1);
    assert_exchange(&idp.requests()[0], &id_token, "mcp:read");
    assert_bearer(&auth.requests()[0], "mcp:read");
    // The token acts for the user, for the resource and the client.
    let info = auth.validate(token.expose_secret()).unwrap();
    assert_eq!(info.subject, USER);
    assert_eq!(info.audiences, [MCP]);
    assert_eq!(info.client_id, SVC);
    // Keyed as obtained by an ID-JAG from this IdP.
    assert_eq!(token.key().grant(), "id-jag");
    assert!(token.key().to_string().contains(IDP), "{}", token.key());
    assert!(token.header_for(&mcp_url()).is_ok());

    // Cached like every token: no request at all the second time.
    let again = cache.token_for(&mcp_url()).await.unwrap();
    assert!(again.same_token_as(&token));
    assert_eq!((idp.token_requests(), auth.token_requests()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_make_one_exchange_and_one_token_request() {
    let (auth, idp) = servers();
    idp.script(|s| s.latency = Duration::from_secs(2));
    auth.script(|s| s.latency = Duration::from_secs(2));
    let id_token = idp.id_token(USER, SVC);
    let cache = cache(&auth, &idp, &id_token);

    let calls = (0..8).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.token_for(&mcp_url()).await })
    });
    let tokens: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert!(tokens.iter().all(|t| t.same_token_as(&tokens[0])));
    assert_eq!((idp.token_requests(), auth.token_requests()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn accounts_with_one_id_token_share_one_id_jag_while_it_lasts() {
    let (auth, idp) = servers();
    idp.script(|s| s.latency = Duration::from_secs(2));
    let id_token = idp.id_token(USER, SVC);
    let cache = cache(&auth, &idp, &id_token);
    let mcp = resource(MCP);
    let empty = audience_cache::ScopeSet::empty();

    // Two accounts are two access-token keys, but one user (one ID token), one resource and
    // the same scopes: one ID-JAG, exchanged once even when both miss at the same time.
    let (a, b) = tokio::join!(
        cache.token_for_account(&mcp, &empty, "tab-1"),
        cache.token_for_account(&mcp, &empty, "tab-2"),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(!a.same_token_as(&b));
    assert_eq!((idp.token_requests(), auth.token_requests()), (1, 2));
    let presented: Vec<_> = auth
        .requests()
        .into_iter()
        .map(|r| r.assertion_fingerprint)
        .collect();
    assert_eq!(presented[0], presented[1], "the same ID-JAG");

    // Still kept: the access token is invalidated, the next miss presents the ID-JAG again.
    assert!(cache.invalidate(&a).await);
    tokio::time::advance(Duration::from_secs(60)).await;
    cache
        .token_for_account(&mcp, &empty, "tab-1")
        .await
        .unwrap();
    assert_eq!((idp.token_requests(), auth.token_requests()), (1, 3));

    // Past its lifetime (300 s, less 10 s kept in reserve) it is exchanged again.
    let a = cache
        .token_for_account(&mcp, &empty, "tab-1")
        .await
        .unwrap();
    assert!(cache.invalidate(&a).await);
    tokio::time::advance(Duration::from_secs(240)).await;
    cache
        .token_for_account(&mcp, &empty, "tab-1")
        .await
        .unwrap();
    assert_eq!((idp.token_requests(), auth.token_requests()), (2, 4));
    assert_exchange(&idp.requests()[1], &id_token, "mcp:read");
}

#[tokio::test(start_paused = true)]
async fn another_user_is_another_id_jag_and_another_scope_another_exchange() {
    let (auth, idp) = servers();
    let path = std::env::temp_dir().join(format!("ac-id-token-{}", std::process::id()));
    let alice = idp.id_token(USER, SVC);
    let bob = idp.id_token("bob@example.com", SVC);
    std::fs::write(&path, &alice).unwrap();
    let cache = cache_with(&auth, &idp, registration(AssertionSource::file(&path)));
    let mcp = resource(MCP);

    let first = cache.token(&mcp, &scopes("mcp:write")).await.unwrap();
    assert_exchange(&idp.requests()[0], &alice, "mcp:read mcp:write");
    assert!(cache.invalidate(&first).await);
    // The file now holds another user's ID token: its own ID-JAG, never alice's.
    std::fs::write(&path, &bob).unwrap();
    let second = cache.token(&mcp, &scopes("mcp:write")).await.unwrap();
    assert_eq!((idp.token_requests(), auth.token_requests()), (2, 2));
    assert_exchange(&idp.requests()[1], &bob, "mcp:read mcp:write");
    assert_eq!(
        auth.validate(second.expose_secret()).unwrap().subject,
        "bob@example.com"
    );
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refused_id_jag_is_not_presented_again_and_no_other_grant_is_tried() {
    let (auth, idp) = servers();
    let id_token = idp.id_token(USER, SVC);
    let cache = cache(&auth, &idp, &id_token);
    auth.script(|s| s.fail_next(1, Failure::InvalidGrant));

    let error = cache.token_for(&mcp_url()).await.unwrap_err();
    assert!(
        matches!(&error, Error::OAuth { error, .. } if error.code == "invalid_grant"),
        "{error:?}"
    );
    assert_eq!((idp.token_requests(), auth.token_requests()), (1, 1));
    // Backing off: nothing is sent at once.
    assert!(matches!(
        cache.token_for(&mcp_url()).await,
        Err(Error::BackingOff { .. })
    ));
    assert_eq!((idp.token_requests(), auth.token_requests()), (1, 1));
    // After the backoff the ID token is exchanged again: the refused ID-JAG was dropped.
    tokio::time::advance(Duration::from_secs(61)).await;
    cache.token_for(&mcp_url()).await.unwrap();
    assert_eq!((idp.token_requests(), auth.token_requests()), (2, 2));
    let seen = auth.requests();
    assert_ne!(seen[0].assertion_fingerprint, seen[1].assertion_fingerprint);
    assert!(
        seen.iter()
            .chain(idp.requests().iter())
            .all(|r| matches!(r.grant_type.as_deref(), Some(JWT_BEARER | TOKEN_EXCHANGE)))
    );
}

#[tokio::test(start_paused = true)]
async fn an_idp_that_refuses_the_id_token_is_reported_and_the_id_token_never_shown() {
    let (auth, idp) = servers();
    // An ID token the IdP did not issue.
    let stranger = AuthorizationServer::builder().in_process_at("https://other-idp.test");
    let id_token = stranger.id_token(USER, SVC);
    let registration = registration(AssertionSource::value(secret(&id_token)));
    assert!(!format!("{registration:?}").contains(&id_token));
    let cache = cache_with(&auth, &idp, registration);

    let error = cache.token_for(&mcp_url()).await.unwrap_err();
    assert!(
        matches!(&error, Error::OAuth { issuer, error, .. }
            if issuer == IDP && error.code == "invalid_request"),
        "{error:?}"
    );
    assert!(!error.to_string().contains(&id_token));
    assert!(!format!("{error:?}").contains(&id_token));
    assert!(!format!("{cache:?}").contains(&id_token));
    assert_eq!((idp.token_requests(), auth.token_requests()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_missing_id_token_makes_no_request() {
    let (auth, idp) = servers();
    let cache = cache_with(
        &auth,
        &idp,
        registration(AssertionSource::env("AUDIENCE_CACHE_TEST_NO_SUCH_ID_TOKEN")),
    );
    let error = cache.token_for(&mcp_url()).await.unwrap_err().to_string();
    assert!(error.contains("Grant::IdJag id_token"), "{error}");
    assert!(error.contains("is not set"), "{error}");
    assert_eq!((idp.token_requests(), auth.token_requests()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn tokens_of_different_grants_are_keyed_apart_and_never_share_a_flight() {
    let (auth, idp) = servers();
    auth.script(|s| s.latency = Duration::from_secs(2));
    let id_token = idp.id_token(USER, SVC);
    let cache = cache(&auth, &idp, &id_token);
    // A subject token for token exchange (the authorization server's own access token).
    let subject = {
        let plain = new_cache(&auth, confidential(), [config(API)]);
        let token = plain
            .token(&resource(API), &scopes("mcp:read"))
            .await
            .unwrap();
        assert_eq!(token.key().grant(), "client");
        SubjectToken::access_token(secret(token.expose_secret()))
    };
    auth.reset_counts();
    idp.reset_counts();
    let mcp = resource(MCP);
    let empty = audience_cache::ScopeSet::empty();
    let (by_id_jag, by_exchange) = tokio::join!(
        cache.token_for_account(&mcp, &empty, "alice"),
        cache.exchange_token(&mcp, &empty, subject, "alice"),
    );
    let (by_id_jag, by_exchange) = (by_id_jag.unwrap(), by_exchange.unwrap());
    assert_ne!(by_id_jag.key(), by_exchange.key());
    assert_eq!(by_id_jag.key().grant(), "id-jag");
    assert_eq!(by_exchange.key().grant(), "token exchange");
    assert!(!by_id_jag.same_token_as(&by_exchange));
    let mut grants: Vec<_> = auth.requests().into_iter().map(|r| r.grant_type).collect();
    grants.sort();
    assert_eq!(
        grants,
        [Some(JWT_BEARER.to_owned()), Some(TOKEN_EXCHANGE.to_owned())]
    );
    assert_eq!(idp.token_requests(), 1);
}

#[test]
fn an_identity_provider_endpoint_is_held_to_the_endpoint_rules() {
    let idp = IdentityProvider::new(IDP, url("http://idp.example.com/token"), SVC);
    let error = TokenCache::builder()
        .client(confidential().grant(Grant::IdJag {
            idp,
            id_token: AssertionSource::env("ID_TOKEN"),
        }))
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("identity provider's token endpoint"),
        "{error}"
    );
    assert!(error.contains("https"), "{error}");
}
