//! `/authorize`, PKCE, the authorization-code grant and refresh-token rotation.

use std::time::Duration;

use http::StatusCode;

use super::*;
use crate::testing::{AuthorizeOutcome, Failure, IssParameter, ResourcePolicy};

const A: &str = "https://a.example/mcp";
const B: &str = "https://b.example/mcp";

#[tokio::test]
async fn authorize_redirects_with_code_state_and_iss() {
    let server = server();
    let pairs = authorization_params(&[("resource", A), ("resource", B), ("scope", "read write")]);
    let (status, location) = authorize(&server, &pairs).await;
    assert_eq!(status, StatusCode::FOUND);
    let location = location.unwrap();
    assert!(location.as_str().starts_with(REDIRECT));
    assert_eq!(param(&location, "state").as_deref(), Some("xyz"));
    assert_eq!(param(&location, "iss").as_deref(), Some(server.issuer()));
    assert!(param(&location, "code").is_some_and(|c| c.len() == 43));

    let record = &server.authorization_requests()[0];
    assert_eq!(record.resources, [A, B]);
    assert_eq!(record.scope.as_deref(), Some("read write"));
    assert_eq!(record.client_id.as_deref(), Some("app"));
    assert!(record.state_presented && record.code_challenge_presented);
    assert_eq!(record.code_challenge_method.as_deref(), Some("S256"));
    assert_eq!(record.error, None);
    assert!(!format!("{record:?}").contains(CHALLENGE));
}

#[tokio::test]
async fn bad_client_or_redirect_uri_is_answered_without_redirecting() {
    let server = server();
    let cases = [
        vec![("client_id", "nobody"), ("redirect_uri", REDIRECT)],
        vec![
            ("client_id", "app"),
            ("redirect_uri", "https://evil.example/cb"),
        ],
        vec![
            ("client_id", "app"),
            ("redirect_uri", "https://127.0.0.1:8443/cb"),
        ],
        vec![("client_id", "app")],
    ];
    for pairs in cases {
        let pairs = [
            &pairs[..],
            &[
                ("response_type", "code"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ],
        ]
        .concat();
        let (status, location) = authorize(&server, &pairs).await;
        assert_eq!(
            (status, location),
            (StatusCode::BAD_REQUEST, None),
            "{pairs:?}"
        );
    }
    assert!(
        server
            .authorization_requests()
            .iter()
            .all(|r| r.error.as_deref() == Some("invalid_request"))
    );
}

#[tokio::test]
async fn authorization_errors_are_redirected_with_state_and_iss() {
    let server = server();
    let without = |name: &str| {
        authorization_params(&[])
            .into_iter()
            .filter(|(k, _)| *k != name)
            .collect::<Vec<_>>()
    };
    let replace = |name: &'static str, value: &'static str| {
        let mut pairs = without(name);
        pairs.push((name, value));
        pairs
    };
    let cases = [
        (
            replace("response_type", "token"),
            "unsupported_response_type",
        ),
        (without("code_challenge"), "invalid_request"),
        (without("code_challenge_method"), "invalid_request"),
        (replace("code_challenge_method", "plain"), "invalid_request"),
        (
            authorization_params(&[("resource", "https://a.example/#x")]),
            "invalid_target",
        ),
    ];
    for (pairs, error) in cases {
        let (status, location) = authorize(&server, &pairs).await;
        assert_eq!(status, StatusCode::FOUND);
        let location = location.unwrap();
        assert_eq!(
            param(&location, "error").as_deref(),
            Some(error),
            "{pairs:?}"
        );
        assert_eq!(param(&location, "state").as_deref(), Some("xyz"));
        assert_eq!(param(&location, "iss").as_deref(), Some(server.issuer()));
        assert!(param(&location, "code").is_none());
    }
    server.script(|s| s.resources = ResourcePolicy::allow_only([A]).required());
    let (_, location) = authorize(&server, &authorization_params(&[])).await;
    assert_eq!(
        location.and_then(|l| param(&l, "error")).as_deref(),
        Some("invalid_target")
    );

    server.script(|s| s.authorize = AuthorizeOutcome::Deny);
    let (_, location) = authorize(&server, &authorization_params(&[("resource", A)])).await;
    assert_eq!(
        location.and_then(|l| param(&l, "error")).as_deref(),
        Some("access_denied")
    );
    let errors: Vec<_> = server
        .authorization_requests()
        .into_iter()
        .map(|r| r.error)
        .collect();
    assert_eq!(errors.len(), 7);
    assert_eq!(errors[6].as_deref(), Some("access_denied"));
}

#[tokio::test]
async fn iss_parameter_can_be_omitted_or_wrong() {
    let server = server();
    server.script(|s| s.iss_parameter = IssParameter::Omit);
    let (_, location) = authorize(&server, &authorization_params(&[])).await;
    let location = location.unwrap();
    assert!(param(&location, "code").is_some());
    assert_eq!(param(&location, "iss"), None);
    server.script(|s| s.iss_parameter = IssParameter::Wrong("https://attacker.example".into()));
    let (_, location) = authorize(&server, &authorization_params(&[])).await;
    assert_eq!(
        location.and_then(|l| param(&l, "iss")).as_deref(),
        Some("https://attacker.example")
    );
}

#[tokio::test]
async fn pkce_verifier_must_hash_to_the_challenge_and_codes_are_single_use() {
    let server = server();
    let wrong_verifier = "a".repeat(43);
    let post_code = |code: &str, verifier: Option<&str>| {
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("client_id", "app"),
            ("code", code),
            ("redirect_uri", REDIRECT),
        ];
        if let Some(verifier) = verifier {
            pairs.push(("code_verifier", verifier));
        }
        pairs
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect::<Vec<_>>()
    };
    let send = |pairs: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        server.handle(token_request(&pairs))
    };
    for verifier in [Some(wrong_verifier.as_str()), None, Some("short")] {
        let code = code(&server, &[]).await;
        let response = send(post_code(&code, verifier)).await;
        assert_eq!(json(&response)["error"], "invalid_grant", "{verifier:?}");
        // A failed attempt uses the code up.
        let retry = send(post_code(&code, Some(VERIFIER))).await;
        assert_eq!(json(&retry)["error"], "invalid_grant");
    }
    let code = code(&server, &[]).await;
    let (status, body) = redeem(&server, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["refresh_token"].is_string());
    assert_eq!(
        server.validate(access_token(&body)).unwrap().subject,
        "user"
    );
    let (status, body) = redeem(&server, &code, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let record = server.requests().pop().unwrap();
    assert!(record.code_presented && record.code_verifier_presented);
}

#[tokio::test(start_paused = true)]
async fn codes_expire_after_ten_minutes_of_tokio_time() {
    let server = server();
    let fresh = code(&server, &[]).await;
    let stale = code(&server, &[]).await;
    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(redeem(&server, &fresh, &[]).await.0, StatusCode::OK);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        redeem(&server, &stale, &[]).await.1["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn code_is_bound_to_client_and_redirect_uri() {
    let server = server();
    let code1 = code(&server, &[]).await;
    let other_redirect = [("redirect_uri", "http://127.0.0.1:1/other")];
    let pairs = [
        ("grant_type", "authorization_code"),
        ("client_id", "app"),
        ("code", code1.as_str()),
        ("redirect_uri", other_redirect[0].1),
        ("code_verifier", VERIFIER),
    ];
    assert_eq!(post(&server, &pairs).await.1["error"], "invalid_grant");
    let code2 = code(&server, &[]).await;
    let pairs = [
        ("grant_type", "authorization_code"),
        ("client_id", "svc"),
        ("client_secret", "s3cret"),
        ("code", code2.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    assert_eq!(post(&server, &pairs).await.1["error"], "invalid_grant");
}

#[tokio::test]
async fn code_token_requests_may_narrow_the_granted_resources_only() {
    let server = server();
    let granted = [("resource", A), ("resource", B), ("scope", "read")];
    let c = code(&server, &granted).await;
    let (_, body) = redeem(&server, &c, &[("resource", A)]).await;
    assert_eq!(server.validate(access_token(&body)).unwrap().audiences, [A]);
    let c = code(&server, &granted).await;
    let (_, body) = redeem(&server, &c, &[]).await;
    let info = server.validate(access_token(&body)).unwrap();
    assert_eq!(
        (info.audiences, info.scope.as_deref()),
        (vec![A.to_owned(), B.to_owned()], Some("read"))
    );
    let c = code(&server, &granted).await;
    let (status, body) = redeem(&server, &c, &[("resource", "https://c.example/mcp")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
}

/// A refresh token from the code flow, granted `A` and `B` with scope `read write`.
async fn refresh_token(server: &AuthorizationServer) -> String {
    let c = code(
        server,
        &[("resource", A), ("resource", B), ("scope", "read write")],
    )
    .await;
    let (_, body) = redeem(server, &c, &[("resource", A)]).await;
    body["refresh_token"].as_str().unwrap().to_owned()
}

async fn refresh(
    server: &AuthorizationServer,
    token: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut pairs = vec![
        ("grant_type", "refresh_token"),
        ("client_id", "app"),
        ("refresh_token", token),
    ];
    pairs.extend_from_slice(extra);
    post(server, &pairs).await
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let server = server();
    let first = refresh_token(&server).await;
    let (status, body) = refresh(&server, &first, &[("resource", B)]).await;
    assert_eq!(status, StatusCode::OK);
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(server.validate(access_token(&body)).unwrap().audiences, [B]);

    let (status, body) = refresh(&server, &second, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let third = body["refresh_token"].as_str().unwrap().to_owned();
    // Reusing a rotated token is invalid_grant and revokes the live one (RFC 9700 §4.14.2).
    assert_eq!(
        refresh(&server, &first, &[]).await.1["error"],
        "invalid_grant"
    );
    assert_eq!(
        refresh(&server, &third, &[]).await.1["error"],
        "invalid_grant"
    );
    let record = server.requests().pop().unwrap();
    assert!(record.refresh_token_presented);
    assert_eq!(record.error.as_deref(), Some("invalid_grant"));
}

#[tokio::test]
async fn without_rotation_a_refresh_token_is_reusable() {
    let server = server();
    server.script(|s| s.rotate_refresh_tokens = false);
    let token = refresh_token(&server).await;
    for _ in 0..2 {
        let (status, body) = refresh(&server, &token, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.get("refresh_token").is_none());
    }
}

#[tokio::test]
async fn refresh_stays_within_the_original_scope_and_resources() {
    let server = server();
    let token = refresh_token(&server).await;
    let (status, body) = refresh(&server, &token, &[("scope", "read write admin")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let (status, body) = refresh(&server, &token, &[("resource", "https://c.example/mcp")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    // Refused requests do not rotate: the same token still works.
    let (status, body) = refresh(&server, &token, &[("scope", "read")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["scope"], "read");
    let next = body["refresh_token"].as_str().unwrap().to_owned();
    // An omitted scope and resource mean the whole original grant.
    let (_, body) = refresh(&server, &next, &[]).await;
    let info = server.validate(access_token(&body)).unwrap();
    assert_eq!(
        (info.audiences, info.scope.as_deref()),
        (vec![A.to_owned(), B.to_owned()], Some("read write"))
    );
}

#[tokio::test]
async fn refresh_tokens_belong_to_their_client() {
    let server = server();
    let token = refresh_token(&server).await;
    let pairs = [
        ("grant_type", "refresh_token"),
        ("client_id", "svc"),
        ("client_secret", "s3cret"),
        ("refresh_token", token.as_str()),
    ];
    assert_eq!(post(&server, &pairs).await.1["error"], "invalid_grant");
    assert_eq!(
        refresh(&server, "made-up", &[]).await.1["error"],
        "invalid_grant"
    );
    assert_eq!(refresh(&server, &token, &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn scripted_failures_change_no_grant_state() {
    let server = server();
    let token = refresh_token(&server).await;
    server.script(|s| s.fail_next(2, Failure::ServiceUnavailable));
    assert_eq!(
        refresh(&server, &token, &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        refresh(&server, &token, &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(refresh(&server, &token, &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn client_credentials_can_be_scripted_to_return_a_refresh_token() {
    let server = server();
    server.script(|s| s.refresh_on_client_credentials = true);
    let body = client_credentials(&server, A, "read").await;
    let token = body["refresh_token"].as_str().unwrap();
    let pairs = [
        ("grant_type", "refresh_token"),
        ("client_id", "svc"),
        ("client_secret", "s3cret"),
        ("refresh_token", token),
        ("resource", A),
    ];
    let (status, body) = post(&server, &pairs).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.validate(access_token(&body)).unwrap().subject, "svc");
}
