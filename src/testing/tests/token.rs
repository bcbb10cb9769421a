//! The token endpoint: client credentials, RFC 8707 audiences, client authentication, token
//! exchange, response fields, metadata.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::testing::{
    AudienceStyle, ClientAuthMethod, ResourceField, ResourcePolicy, ScopeField, TokenFormat,
};

fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap_or_default();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap_or_default()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn client_credentials_token_is_an_at_jwt_for_the_resource_sent() {
    let server = server();
    let body = client_credentials(&server, RS, "read write").await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "read write");
    assert!(body.get("refresh_token").is_none());
    assert!(body.get("resource").is_none());

    let token = access_token(&body);
    assert_eq!(segment(token, 0), json!({"alg": "HS256", "typ": "at+jwt"}));
    let claims = segment(token, 1);
    assert_eq!(claims["iss"], server.issuer());
    assert_eq!(claims["aud"], RS);
    assert_eq!(claims["sub"], "svc");
    assert_eq!(claims["client_id"], "svc");
    assert_eq!(claims["scope"], "read write");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    assert!(claims["jti"].is_string());

    let info = server.validate(token).unwrap();
    assert_eq!(info.audiences, [RS]);
    assert_eq!(info.scopes(), ["read", "write"]);
    assert_eq!(
        (info.subject.as_str(), info.client_id.as_str()),
        ("svc", "svc")
    );
    assert!(info.expires_at.is_some());
}

#[tokio::test]
async fn aud_is_the_resource_byte_for_byte_and_repeats_become_an_array() {
    let server = server();
    // No normalization: the trailing slash and the case survive.
    let body = client_credentials(&server, "https://RS.example/", "").await;
    assert_eq!(
        server.validate(access_token(&body)).unwrap().audiences,
        ["https://RS.example/"]
    );

    let (status, body) = post(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "s3cret"),
            ("resource", "https://a.example/mcp"),
            ("resource", "https://b.example/mcp"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        segment(access_token(&body), 1)["aud"],
        json!(["https://a.example/mcp", "https://b.example/mcp"])
    );
    assert_eq!(
        server.requests()[1].resources,
        ["https://a.example/mcp", "https://b.example/mcp"]
    );
}

#[tokio::test]
async fn without_a_resource_the_aud_is_the_default_audience() {
    let server = server();
    let (status, body) = post(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "s3cret"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        segment(access_token(&body), 1)["aud"],
        "urn:audience-cache:default-audience"
    );
    server.script(|s| s.default_audience = "https://fallback.example".into());
    let (_, body) = post(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "s3cret"),
        ],
    )
    .await;
    assert_eq!(
        server.validate(access_token(&body)).unwrap().audiences,
        ["https://fallback.example"]
    );
}

#[tokio::test]
async fn audience_styles() {
    let server = server();
    let cases = [
        (AudienceStyle::Resource, Some(json!(RS)), vec![RS]),
        (
            AudienceStyle::Fixed(vec!["urn:api".into()]),
            Some(json!("urn:api")),
            vec!["urn:api"],
        ),
        (
            AudienceStyle::Fixed(vec!["a".into(), "b".into()]),
            Some(json!(["a", "b"])),
            vec!["a", "b"],
        ),
        (AudienceStyle::Array(vec![]), Some(json!([RS])), vec![RS]),
        (
            AudienceStyle::Array(vec!["https://other.example".into()]),
            Some(json!([RS, "https://other.example"])),
            vec![RS, "https://other.example"],
        ),
        (AudienceStyle::Missing, None, vec![]),
        (AudienceStyle::Raw(json!(42)), Some(json!(42)), vec![]),
        (
            AudienceStyle::Raw(json!([RS, 1])),
            Some(json!([RS, 1])),
            vec![],
        ),
    ];
    for (style, claim, audiences) in cases {
        for format in [TokenFormat::Jwt, TokenFormat::Opaque] {
            server.script(|s| {
                s.audience = style.clone();
                s.token_format = format;
            });
            let body = client_credentials(&server, RS, "read").await;
            let token = access_token(&body);
            if format == TokenFormat::Jwt {
                assert_eq!(segment(token, 1).get("aud").cloned(), claim, "{style:?}");
            }
            assert_eq!(
                server.validate(token).unwrap().audiences,
                audiences,
                "{style:?} {format:?}"
            );
        }
    }
}

#[tokio::test]
async fn opaque_tokens_are_32_random_bytes_that_only_their_server_knows() {
    let server = server();
    server.script(|s| s.token_format = TokenFormat::Opaque);
    let first = client_credentials(&server, RS, "read").await;
    let second = client_credentials(&server, RS, "read").await;
    let token = access_token(&first);
    assert_eq!(
        URL_SAFE_NO_PAD.decode(token).map(|b| b.len()).ok(),
        Some(32)
    );
    assert_ne!(token, access_token(&second));
    assert_eq!(server.validate(token).unwrap().audiences, [RS]);
    // Still valid after switching back to JWTs; unknown to another server.
    server.script(|s| s.token_format = TokenFormat::Jwt);
    assert!(server.validate(token).is_some());
    assert!(super::server().validate(token).is_none());
}

#[tokio::test]
async fn jwts_do_not_validate_at_another_server_or_after_tampering() {
    let (one, two) = (server(), super::server());
    let token = access_token(&client_credentials(&one, RS, "read").await).to_owned();
    assert!(two.validate(&token).is_none());
    let forged = token.replacen('.', ".x", 1);
    assert!(one.validate(&forged).is_none());
    assert_eq!(one.hs256_key().len(), 64);
    assert_ne!(one.hs256_key(), two.hs256_key());
}

#[tokio::test(start_paused = true)]
async fn tokens_expire_on_the_servers_clock_which_follows_tokio_time() {
    let server = server();
    server.script(|s| s.expires_in = Some(Duration::from_secs(60)));
    let token = access_token(&client_credentials(&server, RS, "read").await).to_owned();
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(server.validate(&token).is_some());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(server.validate(&token).is_none());

    server.script(|s| s.expires_in = None);
    let body = client_credentials(&server, RS, "read").await;
    assert!(body.get("expires_in").is_none());
    assert!(segment(access_token(&body), 1).get("exp").is_none());
    tokio::time::advance(Duration::from_secs(10 * 365 * 86_400)).await;
    assert_eq!(
        server.validate(access_token(&body)).map(|i| i.expires_at),
        Some(None)
    );
}

#[tokio::test]
async fn resource_policies_answer_invalid_target() {
    let server = server();
    let request = |resource: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "s3cret"),
            ("resource", resource),
        ]
    };
    for bad in [
        "urn:example:api",
        "https://rs.example/mcp#frag",
        "/mcp",
        "ftp://rs.example/",
    ] {
        let (status, body) = post(&server, &request(bad)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_target")),
            "{bad}"
        );
    }
    server.script(|s| s.resources = ResourcePolicy::allow_only([RS]).required());
    assert_eq!(post(&server, &request(RS)).await.0, StatusCode::OK);
    assert_eq!(
        post(&server, &request("https://rs.example/other")).await.1["error"],
        "invalid_target"
    );
    let no_resource = [
        ("grant_type", "client_credentials"),
        ("client_id", "svc"),
        ("client_secret", "s3cret"),
    ];
    assert_eq!(
        post(&server, &no_resource).await.1["error"],
        "invalid_target"
    );
    server.script(|s| s.resources = ResourcePolicy::deny_if(|r| r.ends_with("/admin")));
    assert_eq!(
        post(&server, &request("https://rs.example/admin")).await.1["error"],
        "invalid_target"
    );
    assert_eq!(post(&server, &request(RS)).await.0, StatusCode::OK);

    let last = server.requests().pop().unwrap();
    assert_eq!(last.status, Some(StatusCode::OK));
    let refused = &server.requests()[0];
    assert_eq!(
        (refused.status, refused.error.as_deref()),
        (Some(StatusCode::BAD_REQUEST), Some("invalid_target"))
    );
}

#[tokio::test]
async fn client_secret_basic_with_special_characters_end_to_end() {
    let secret = "a:+/%& b";
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", secret))
        .in_process();
    let pairs = [("grant_type", "client_credentials"), ("resource", RS)];
    let ok = server
        .handle(token_request_basic("svc", secret, &pairs))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);

    let wrong = server
        .handle(token_request_basic("svc", "a:+/%&b", &pairs))
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(&wrong)["error"], "invalid_client");
    assert!(
        wrong.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );

    let post_wrong = post(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "x"),
        ],
    );
    let (status, body) = post_wrong.await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let no_challenge = server
        .handle(token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
        ]))
        .await;
    assert!(no_challenge.headers().get("www-authenticate").is_none());

    let methods: Vec<_> = server.requests().iter().map(|r| r.client_auth).collect();
    assert_eq!(
        methods,
        [
            Some(ClientAuthMethod::ClientSecretBasic),
            Some(ClientAuthMethod::ClientSecretBasic),
            Some(ClientAuthMethod::ClientSecretPost),
            Some(ClientAuthMethod::None),
        ]
    );
    // Records and their Debug output hold no secret and no token.
    let debug = format!("{:?}", server.requests());
    assert!(!debug.contains(secret) && !debug.contains("a:+/%&b"));
    assert!(!debug.contains(access_token(&json(&ok))));
}

#[tokio::test]
async fn malformed_requests_get_oauth_errors() {
    let server = server();
    let cc = [("client_id", "svc"), ("client_secret", "s3cret")];
    let with = |extra: &[(&'static str, &'static str)]| [&cc[..], extra].concat();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (with(&[]), "invalid_request"),
        (
            with(&[
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ]),
            "invalid_request",
        ),
        (
            with(&[("grant_type", "password")]),
            "unsupported_grant_type",
        ),
        (
            with(&[
                ("grant_type", "client_credentials"),
                ("scope", "a"),
                ("scope", "b"),
            ]),
            "invalid_request",
        ),
        (
            vec![("grant_type", "client_credentials"), ("client_id", "app")],
            "unauthorized_client",
        ),
    ];
    for (pairs, error) in cases {
        let (status, body) = post(&server, &pairs).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(error)),
            "{pairs:?}"
        );
    }
    let json_body = Request::post("/token")
        .header("content-type", "application/json")
        .body(br#"{"grant_type":"client_credentials"}"#.to_vec())
        .unwrap();
    let response = server.handle(json_body).await;
    assert_eq!(
        (response.status(), json(&response)["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let garbage = Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            [
                &b"grant_type=client_credentials&"[..],
                &[0xff, b'%', b'=', 0, b'&', b'&'],
            ]
            .concat(),
        )
        .unwrap();
    assert_eq!(
        server.handle(garbage).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(server.token_requests(), 7);
}

#[tokio::test]
async fn token_exchange_issues_an_access_token_for_the_new_resource() {
    let server = server();
    let subject = access_token(&client_credentials(&server, RS, "read write").await).to_owned();
    let exchange = |subject: &str, subject_type: &str| {
        token_request(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("client_id", "svc"),
            ("client_secret", "s3cret"),
            ("subject_token", subject),
            ("subject_token_type", subject_type),
            ("resource", "https://downstream.example/api"),
            ("audience", "urn:downstream"),
            ("scope", "read"),
        ])
    };
    const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
    let response = server.handle(exchange(&subject, AT)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(&response);
    assert_eq!(body["issued_token_type"], AT);
    let info = server.validate(access_token(&body)).unwrap();
    assert_eq!(
        info.audiences,
        ["https://downstream.example/api", "urn:downstream"]
    );
    assert_eq!(
        (info.subject.as_str(), info.scope.as_deref()),
        ("svc", Some("read"))
    );

    let record = server.requests().pop().unwrap();
    assert!(record.subject_token_presented);
    assert_eq!(record.audiences, ["urn:downstream"]);
    for (token, kind) in [
        ("not-a-token", AT),
        (subject.as_str(), "urn:ietf:params:oauth:token-type:jwt"),
    ] {
        let response = server.handle(exchange(token, kind)).await;
        assert_eq!(json(&response)["error"], "invalid_request", "{kind}");
    }
}

#[tokio::test]
async fn scope_and_resource_response_fields_are_scriptable() {
    let server = server();
    server.script(|s| s.scope_field = ScopeField::Omit);
    let body = client_credentials(&server, RS, "read write").await;
    assert!(body.get("scope").is_none());
    assert_eq!(
        server
            .validate(access_token(&body))
            .unwrap()
            .scope
            .as_deref(),
        Some("read write")
    );

    server.script(|s| s.scope_field = ScopeField::Fixed("read".into()));
    let body = client_credentials(&server, RS, "read write").await;
    assert_eq!(body["scope"], "read");
    assert_eq!(
        server
            .validate(access_token(&body))
            .unwrap()
            .scope
            .as_deref(),
        Some("read")
    );

    server.script(|s| s.resource_field = ResourceField::Echo);
    assert_eq!(
        client_credentials(&server, RS, "read").await["resource"],
        RS
    );
    server.script(|s| s.resource_field = ResourceField::Value(json!("https://rs.example/other")));
    assert_eq!(
        client_credentials(&server, RS, "read").await["resource"],
        "https://rs.example/other"
    );
}

#[tokio::test]
async fn metadata_is_rfc_8414_and_scriptable() {
    let server = AuthorizationServer::builder()
        .scopes_supported(["read", "write"])
        .in_process();
    let get = || {
        Request::get(server.metadata_url())
            .body(Vec::new())
            .unwrap()
    };
    let metadata = json(&server.handle(get()).await);
    let issuer = server.issuer();
    assert_eq!(issuer, "https://as.in-process.test");
    assert_eq!(metadata["issuer"], issuer);
    assert_eq!(metadata["token_endpoint"], server.token_endpoint());
    assert_eq!(
        metadata["authorization_endpoint"],
        server.authorization_endpoint()
    );
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(metadata["scopes_supported"], json!(["read", "write"]));
    assert_eq!(
        metadata["authorization_response_iss_parameter_supported"],
        true
    );
    assert_eq!(metadata["response_types_supported"], json!(["code"]));
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(
        metadata["grant_types_supported"].as_array().map(Vec::len),
        Some(4)
    );

    server.script(|s| {
        s.metadata_issuer = Some("https://evil.example".into());
        s.advertise_pkce = false;
    });
    let metadata = json(&server.handle(get()).await);
    assert_eq!(metadata["issuer"], "https://evil.example");
    assert_eq!(metadata["token_endpoint"], server.token_endpoint());
    assert!(metadata.get("code_challenge_methods_supported").is_none());
    assert_eq!(server.metadata_requests(), 2);
    server.reset_counts();
    assert_eq!(server.metadata_requests(), 0);
}

#[tokio::test]
async fn requests_for_another_origin_are_misdirected() {
    let server = server();
    let request = Request::get("https://elsewhere.example/.well-known/oauth-authorization-server")
        .body(Vec::new())
        .unwrap();
    assert_eq!(
        server.handle(request).await.status(),
        StatusCode::MISDIRECTED_REQUEST
    );
    assert_eq!(server.metadata_requests(), 0);
    let other = AuthorizationServer::builder().in_process_at("https://as2.example");
    assert_eq!(other.issuer(), "https://as2.example");
    let request = Request::get(other.metadata_url()).body(Vec::new()).unwrap();
    assert_eq!(
        json(&other.handle(request).await)["issuer"],
        "https://as2.example"
    );
}
