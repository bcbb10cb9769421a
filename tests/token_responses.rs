//! What a token endpoint answer must be, for every grant alike (client credentials, token
//! exchange, the code exchange and a refresh): a `200` with an `application/json` body
//! (RFC 6749 §5.1), an `error` member meaning the OAuth error it names (§5.2) whatever the
//! status, a lifetime that is not zero, and for token exchange an `issued_token_type`
//! (RFC 8693 §2.2.1). Against the embedded server, in process, on paused time.

mod support;

use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, Failure};
use audience_cache::{BearerToken, Error, ScopeSet, SubjectToken, TokenCache};
use serde_json::json;
use support::*;

const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

fn empty() -> ScopeSet {
    ScopeSet::empty()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum GrantKind {
    ClientCredentials,
    TokenExchange,
    AuthorizationCode,
    Refresh,
}

const GRANTS: [GrantKind; 4] = [
    GrantKind::ClientCredentials,
    GrantKind::TokenExchange,
    GrantKind::AuthorizationCode,
    GrantKind::Refresh,
];

impl GrantKind {
    fn grant_type(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            Self::AuthorizationCode => "authorization_code",
            Self::Refresh => "refresh_token",
        }
    }
}

/// A token request of `grant` that meets `answer`, with everything before it done against a
/// well-behaved server; returns the result, the server and the cache. Exactly one request of
/// that grant type was sent.
async fn answered(
    grant: GrantKind,
    answer: Failure,
) -> (Result<BearerToken, Error>, AuthorizationServer, TokenCache) {
    let server = new_server();
    let mcp = resource(MCP);
    let (result, cache) = match grant {
        GrantKind::ClientCredentials => {
            let cache = new_cache(&server, confidential(), [config(MCP)]);
            server.script(|s| s.fail_next(1, answer));
            (cache.token(&mcp, &empty()).await, cache)
        }
        GrantKind::TokenExchange => {
            let cache = new_cache(&server, confidential(), [config(MCP), config(API)]);
            let token = cache.token(&resource(API), &empty()).await.unwrap();
            let subject = SubjectToken::access_token(secret(token.expose_secret()));
            server.script(|s| s.fail_next(1, answer));
            let result = cache.exchange_token(&mcp, &empty(), subject, "alice").await;
            (result, cache)
        }
        GrantKind::AuthorizationCode => {
            let cache = new_cache(&server, public_app(), [config(MCP)]);
            let pending = cache.begin_authorization(&mcp, &empty()).unwrap();
            let redirect = approve(&server, &pending).await;
            server.script(|s| s.fail_next(1, answer));
            (
                cache.complete_authorization(pending, &redirect).await,
                cache,
            )
        }
        GrantKind::Refresh => {
            let cache = authorized(&server).await;
            server.script(|s| s.fail_next(1, answer));
            (cache.token(&mcp, &empty()).await, cache)
        }
    };
    let sent = server
        .requests()
        .iter()
        .filter(|r| r.grant_type.as_deref() == Some(grant.grant_type()))
        .count();
    assert_eq!(sent, 1, "{grant:?}");
    (result, server, cache)
}

/// A public client's cache, authorized for MCP, with its access token past its lifetime: the
/// next call refreshes.
async fn authorized(server: &AuthorizationServer) -> TokenCache {
    let cache = new_cache(server, public_app(), [config(MCP)]);
    let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    let redirect = approve(server, &pending).await;
    cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    tokio::time::advance(USABLE + Duration::from_secs(1)).await;
    cache
}

/// A complete, valid token response body for the grant, as a well-behaved server sends it.
fn token_body(grant: GrantKind) -> serde_json::Value {
    let mut body = json!({
        "access_token": "2YotnFZFEjr1zCsicMWpAA",
        "token_type": "Bearer",
        "expires_in": 3600,
    });
    if grant == GrantKind::TokenExchange {
        body["issued_token_type"] = json!(ACCESS_TOKEN_TYPE);
    }
    body
}

fn answer(status: u16, content_type: Option<&str>, body: serde_json::Value) -> Failure {
    Failure::Answer {
        status,
        content_type: content_type.map(str::to_owned),
        body: body.to_string(),
    }
}

fn assert_protocol(result: &Result<BearerToken, Error>, says: &str, context: &str) {
    match result {
        Err(Error::Protocol { detail, .. }) => {
            assert!(
                detail.contains(says),
                "{context}: {detail:?} lacks {says:?}"
            )
        }
        other => panic!("{context}: expected a protocol error saying {says:?}, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn every_grant_accepts_a_json_200_however_the_media_type_is_spelled() {
    for grant in GRANTS {
        for content_type in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
        ] {
            let (result, _, _) =
                answered(grant, answer(200, Some(content_type), token_body(grant))).await;
            assert!(result.is_ok(), "{grant:?} {content_type}: {result:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_grant_refuses_a_token_that_is_not_a_json_200() {
    for grant in GRANTS {
        let cases = [
            (
                answer(200, Some("text/html"), token_body(grant)),
                "text/html",
            ),
            (
                answer(200, Some("application/jsonp"), token_body(grant)),
                "application/jsonp",
            ),
            (answer(200, None, token_body(grant)), "no Content-Type"),
            (
                answer(201, Some("application/json"), token_body(grant)),
                "HTTP 201",
            ),
            (
                answer(202, Some("application/json"), token_body(grant)),
                "HTTP 202",
            ),
        ];
        for (failure, says) in cases {
            let context = format!("{grant:?} {failure:?}");
            let (result, _, _) = answered(grant, failure).await;
            assert_protocol(&result, says, &context);
            let error = result.unwrap_err();
            assert!(!error.is_transient(), "{context}");
            assert!(!format!("{error} {error:?}").contains("2YotnFZFEjr1zCsicMWpAA"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_exchange_answer_must_name_an_access_token_as_issued() {
    let mut missing = token_body(GrantKind::TokenExchange);
    missing.as_object_mut().unwrap().remove("issued_token_type");
    let (result, _, _) = answered(
        GrantKind::TokenExchange,
        answer(200, Some("application/json"), missing),
    )
    .await;
    assert_protocol(&result, "issued_token_type", "missing");

    let mut other = token_body(GrantKind::TokenExchange);
    other["issued_token_type"] = json!("urn:ietf:params:oauth:token-type:refresh_token");
    let (result, _, _) = answered(
        GrantKind::TokenExchange,
        answer(200, Some("application/json"), other),
    )
    .await;
    assert_protocol(&result, "not an access token", "a refresh token");

    // The other grants are not RFC 8693 answers: the member is neither needed nor read.
    let (result, _, _) = answered(
        GrantKind::ClientCredentials,
        answer(
            200,
            Some("application/json"),
            token_body(GrantKind::Refresh),
        ),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn an_error_member_in_a_200_is_the_oauth_error_it_names() {
    for grant in GRANTS {
        let body = json!({"error": "invalid_client", "error_description": "bad client"});
        let (result, _, _) = answered(grant, answer(200, Some("application/json"), body)).await;
        let error = result.unwrap_err();
        assert!(
            matches!(&error, Error::OAuth { error: oauth, .. }
                if oauth.code == "invalid_client"
                    && oauth.description.as_deref() == Some("bad client")),
            "{grant:?}: {error:?}"
        );
        // A body with a token and an error is still the error: the token is not taken.
        let mut both = token_body(grant);
        both["error"] = json!("invalid_client");
        let (result, _, _) = answered(grant, answer(200, Some("application/json"), both)).await;
        assert_eq!(
            result.unwrap_err().oauth_error().map(|e| e.code),
            Some("invalid_client".to_owned()),
            "{grant:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_in_a_200_refresh_answer_drops_the_refresh_token() {
    let (result, server, cache) = answered(
        GrantKind::Refresh,
        answer(
            200,
            Some("application/json"),
            json!({"error": "invalid_grant"}),
        ),
    )
    .await;
    let error = result.unwrap_err();
    assert_eq!(
        error.oauth_error().map(|e| e.code),
        Some("invalid_grant".to_owned()),
        "{error:?}"
    );
    let sent = server.token_requests();
    // Long past any backoff: the next call needs a new authorization and asks no server.
    tokio::time::advance(Duration::from_secs(600)).await;
    let next = cache.token(&resource(MCP), &empty()).await.unwrap_err();
    assert!(
        matches!(next, Error::AuthorizationRequired { .. }),
        "{next:?}"
    );
    assert_eq!(server.token_requests(), sent);
}

#[tokio::test(start_paused = true)]
async fn expires_in_zero_is_a_protocol_error_that_backs_off() {
    let server = new_server();
    server.script(|s| s.expires_in = Some(Duration::ZERO));
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let mut errors = Vec::new();
    for _ in 0..5 {
        errors.push(cache.token(&resource(MCP), &empty()).await.unwrap_err());
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(server.token_requests(), 1, "{errors:?}");
    assert!(
        matches!(&errors[0], Error::Protocol { detail, .. } if detail.contains("expires_in")),
        "{:?}",
        errors[0]
    );
    for later in &errors[1..] {
        assert!(
            matches!(later, Error::BackingOff { failures: 1, .. }),
            "{later:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn expires_in_zero_on_a_refresh_keeps_the_rotated_refresh_token() {
    let server = new_server();
    let cache = authorized(&server).await;
    server.script(|s| s.expires_in = Some(Duration::ZERO));
    let error = cache.token(&resource(MCP), &empty()).await.unwrap_err();
    assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
    // The server rotated the refresh token in that answer; presenting the old one again would
    // revoke the grant (reuse detection, RFC 9700 §4.14.2).
    server.script(|s| s.expires_in = Some(Duration::from_secs(3600)));
    tokio::time::advance(Duration::from_secs(61)).await;
    let token = cache.token(&resource(MCP), &empty()).await;
    assert!(token.is_ok(), "{token:?}; {:?}", server.requests());
    let statuses: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| (r.grant_type.unwrap(), r.status.unwrap().as_u16()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("authorization_code".to_owned(), 200),
            ("refresh_token".to_owned(), 200),
            ("refresh_token".to_owned(), 200),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_status_without_an_oauth_error_is_a_protocol_error() {
    for grant in GRANTS {
        let cases = [
            (
                Failure::Answer {
                    status: 400,
                    content_type: Some("text/html".into()),
                    body: "<html>Bad Request</html>".into(),
                },
                "HTTP 400 without an OAuth error body",
            ),
            (
                answer(401, Some("application/json"), json!({"error": 5})),
                "`error` member that is not a string",
            ),
        ];
        for (failure, says) in cases {
            let context = format!("{grant:?} {failure:?}");
            let (result, _, _) = answered(grant, failure).await;
            assert_protocol(&result, says, &context);
        }
    }
}
