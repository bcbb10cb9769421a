//! Token requests as the authorization server sees them, and what each kind of token endpoint
//! answer becomes: every grant against the embedded server, in process, on paused time.

mod support;

use std::time::Duration;

use audience_cache::testing::{
    AuthorizationServer, Client, ClientAuthMethod, Failure, ResourceField, ResourcePolicy,
    ScopeField, TokenRequestRecord,
};
use audience_cache::{
    BuildError, ClientRegistration, Error, Grant, ParseOptions, ResourceConfig, ResourceUri,
    ScopeSet, SubjectToken, TokenCache,
};
use serde_json::json;
use support::*;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

fn empty() -> ScopeSet {
    ScopeSet::empty()
}

/// (grant_type, resources) of every token request so far.
fn grants(server: &AuthorizationServer) -> Vec<(String, Vec<String>)> {
    server
        .requests()
        .into_iter()
        .map(|r| (r.grant_type.unwrap_or_default(), r.resources))
        .collect()
}

fn pair(grant: &str, resource: &str) -> (String, Vec<String>) {
    (grant.to_owned(), vec![resource.to_owned()])
}

/// A subject token for token exchange: an access token the server issued.
async fn subject_token(server: &AuthorizationServer) -> SubjectToken {
    let cache = new_cache(server, confidential(), [config(API)]);
    let token = cache.token(&resource(API), &empty()).await.unwrap();
    SubjectToken::access_token(secret(token.expose_secret()))
}

/// Runs every grant for `configured` (client credentials and token exchange as `svc`, the code
/// flow and a refresh as `app`), looking the resource up as `lookup`, and returns the server.
async fn every_grant(configured: &ResourceUri, lookup: &ResourceUri) -> AuthorizationServer {
    let server = new_server();
    let config = ResourceConfig::new(configured.clone(), ISSUER);

    let svc = new_cache(&server, confidential(), [config.clone()]);
    let token = svc.token(lookup, &empty()).await.unwrap();
    assert_eq!(token.resource().wire(), configured.wire());
    let subject = SubjectToken::access_token(secret(token.expose_secret()));
    svc.exchange_token(lookup, &empty(), subject, "alice")
        .await
        .unwrap();

    let app = new_cache(&server, public_app(), [config]);
    let pending = app.begin_authorization(lookup, &empty()).unwrap();
    let redirect = approve(&server, &pending).await;
    app.complete_authorization(pending, &redirect)
        .await
        .unwrap();
    tokio::time::advance(USABLE).await;
    app.token(lookup, &empty()).await.unwrap();
    server
}

#[tokio::test(start_paused = true)]
async fn every_grant_sends_the_configured_wire_form_as_resource() {
    let options = ParseOptions::strict();
    let cases = [
        // A configured origin is sent without the root slash (MCP 2025-11-25 §8.1).
        (resource(MCP), "https://mcp.example.com"),
        // RFC 9728 metadata is sent verbatim, slash and all.
        (
            ResourceUri::from_metadata("https://mcp.example.com/", &options).unwrap(),
            "https://mcp.example.com/",
        ),
    ];
    for (configured, wire) in cases {
        let server = every_grant(&configured, &configured).await;
        assert_eq!(
            grants(&server),
            [
                pair("client_credentials", wire),
                pair(TOKEN_EXCHANGE, wire),
                pair("authorization_code", wire),
                pair("refresh_token", wire),
            ],
            "{wire}"
        );
        let authorizations = server.authorization_requests();
        assert_eq!(authorizations.len(), 1);
        assert_eq!(authorizations[0].resources, [wire]);
        assert!(
            server
                .requests()
                .iter()
                .all(|r| r.status == Some(http::StatusCode::OK))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_equivalent_spelling_still_sends_the_configured_wire_form() {
    // The caller names the resource without the slash; the configuration came from metadata
    // with it. Both have one match key, and the configured wire form is what goes out.
    let configured =
        ResourceUri::from_metadata("https://mcp.example.com/", &ParseOptions::strict()).unwrap();
    let lookup = resource(MCP);
    let server = every_grant(&configured, &lookup).await;
    let wire = "https://mcp.example.com/";
    assert_eq!(server.authorization_requests()[0].resources, [wire]);
    assert_eq!(
        grants(&server),
        [
            pair("client_credentials", wire),
            pair(TOKEN_EXCHANGE, wire),
            pair("authorization_code", wire),
            pair("refresh_token", wire),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn token_exchange_is_cached_per_account() {
    let server = new_server();
    let subject = subject_token(&server).await;
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let mcp = resource(MCP);

    let alice = cache
        .exchange_token(&mcp, &empty(), subject.clone(), "alice")
        .await
        .unwrap();
    let again = cache
        .exchange_token(&mcp, &empty(), subject.clone(), "alice")
        .await
        .unwrap();
    let bob = cache
        .exchange_token(&mcp, &empty(), subject, "bob")
        .await
        .unwrap();

    assert!(alice.same_token_as(&again));
    assert!(!alice.same_token_as(&bob));
    assert_eq!(alice.key().account(), Some("alice"));
    assert_eq!(bob.key().account(), Some("bob"));
    // One client credentials request for the subject token, then one exchange per account.
    let records = server.requests();
    assert_eq!(records.len(), 3);
    for record in &records[1..] {
        assert_eq!(record.grant_type.as_deref(), Some(TOKEN_EXCHANGE));
        assert!(record.subject_token_presented);
        assert_eq!(record.resources, ["https://mcp.example.com"]);
        assert_eq!(record.status, Some(http::StatusCode::OK));
    }
    let info = server.validate(alice.expose_secret()).unwrap();
    assert_eq!(info.audiences, ["https://mcp.example.com"]);
}

#[tokio::test(start_paused = true)]
async fn scope_is_sent_only_when_non_empty_and_in_canonical_form() {
    let server = new_server();
    let subject = subject_token(&server).await;
    server.reset_counts();
    let cache = new_cache(
        &server,
        confidential(),
        [config(MCP), config(API).scopes(scopes("b a"))],
    );
    let (mcp, api) = (resource(MCP), resource(API));

    cache.token(&mcp, &empty()).await.unwrap();
    let token = cache
        .token(&mcp, &scopes("write  read read"))
        .await
        .unwrap();
    assert_eq!(token.scopes().as_str(), "read write");
    // The resource's default scopes and the extra ones, as one set.
    cache.token(&api, &scopes("c a")).await.unwrap();
    cache
        .exchange_token(&mcp, &scopes(" z y "), subject.clone(), "alice")
        .await
        .unwrap();
    cache
        .exchange_token(&mcp, &empty(), subject, "bob")
        .await
        .unwrap();

    let sent: Vec<(Option<String>, Option<String>)> = server
        .requests()
        .into_iter()
        .map(|r| (r.grant_type, r.scope))
        .collect();
    let cc = || Some("client_credentials".to_owned());
    let te = || Some(TOKEN_EXCHANGE.to_owned());
    assert_eq!(
        sent,
        [
            (cc(), None),
            (cc(), Some("read write".to_owned())),
            (cc(), Some("a b c".to_owned())),
            (te(), Some("y z".to_owned())),
            (te(), None),
        ]
    );
}

/// Both secret methods, with the grant oauth2 builds (client credentials) and the one the
/// crate builds itself (token exchange).
async fn authenticate_with(method: ClientAuthMethod, id: &str) -> Vec<TokenRequestRecord> {
    let server = AuthorizationServer::builder()
        .client(Client::confidential(id, SECRET).auth_method(method))
        .in_process();
    let registration = ClientRegistration::new(ISSUER, token_endpoint(), id);
    let registration = match method {
        ClientAuthMethod::ClientSecretPost => registration.client_secret_post(secret(SECRET)),
        _ => registration.client_secret_basic(secret(SECRET)),
    };
    let cache = new_cache(&server, registration, [config(MCP), config(API)]);
    let token = cache.token(&resource(API), &empty()).await.unwrap();
    let subject = SubjectToken::access_token(secret(token.expose_secret()));
    cache
        .exchange_token(&resource(MCP), &empty(), subject, "alice")
        .await
        .unwrap();
    server.requests()
}

#[tokio::test(start_paused = true)]
async fn client_secret_basic_form_encodes_the_id_and_the_secret() {
    // RFC 6749 §2.3.1: a secret with `:+/%& ` and an id with `:` survive the encoding; the
    // server refuses the request if either arrives altered.
    let records = authenticate_with(ClientAuthMethod::ClientSecretBasic, "svc:1").await;
    assert_eq!(records.len(), 2);
    for record in records {
        assert_eq!(
            record.client_auth,
            Some(ClientAuthMethod::ClientSecretBasic)
        );
        assert_eq!(record.client_id.as_deref(), Some("svc:1"));
        assert_eq!(record.status, Some(http::StatusCode::OK));
    }
}

#[tokio::test(start_paused = true)]
async fn client_secret_post_puts_the_secret_in_the_body() {
    let records = authenticate_with(ClientAuthMethod::ClientSecretPost, SVC).await;
    assert_eq!(records.len(), 2);
    for record in records {
        assert_eq!(record.client_auth, Some(ClientAuthMethod::ClientSecretPost));
        assert_eq!(record.client_id.as_deref(), Some(SVC));
        assert_eq!(record.status, Some(http::StatusCode::OK));
    }
}

#[tokio::test(start_paused = true)]
async fn a_public_client_sends_only_its_client_id() {
    let server = new_server();
    let subject = subject_token(&server).await;
    server.reset_counts();
    let app = new_cache(&server, public_app(), [config(MCP), config(API)]);
    let mcp = resource(MCP);
    let pending = app.begin_authorization(&mcp, &empty()).unwrap();
    let redirect = approve(&server, &pending).await;
    app.complete_authorization(pending, &redirect)
        .await
        .unwrap();
    tokio::time::advance(USABLE).await;
    app.token(&mcp, &empty()).await.unwrap();
    app.exchange_token(&resource(API), &empty(), subject, "alice")
        .await
        .unwrap();

    let records = server.requests();
    let grant_types: Vec<_> = records.iter().map(|r| r.grant_type.as_deref()).collect();
    assert_eq!(
        grant_types,
        [
            Some("authorization_code"),
            Some("refresh_token"),
            Some(TOKEN_EXCHANGE)
        ]
    );
    for record in &records {
        // `none`: a client_id and no secret (the server refuses a secret from a public client).
        assert_eq!(record.client_auth, Some(ClientAuthMethod::None));
        assert_eq!(record.client_id.as_deref(), Some(APP));
        assert_eq!(record.status, Some(http::StatusCode::OK));
    }
}

// ---------------------------------------------------------------------------------------------
// Token endpoint failures. Each case uses a fresh cache: a failure puts the key into backoff.

/// The error of the first token request for MCP, which meets `failure`; exactly one request
/// was sent.
async fn first_error(server: &AuthorizationServer, cache: &TokenCache) -> Error {
    let error = cache.token(&resource(MCP), &empty()).await.unwrap_err();
    assert_eq!(server.token_requests(), 1, "{error}");
    error
}

async fn scripted_error(failure: Failure) -> Error {
    let server = new_server();
    server.script(|s| s.fail_next(1, failure));
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    first_error(&server, &cache).await
}

/// Neither the message nor `Debug` shows the body: no JWT (they all start with `eyJ`, base64
/// of `{"`), no member names or values.
fn assert_shows_no_body(error: &Error, body_fragments: &[&str]) {
    let shown = format!("{error} | {error:?}");
    for fragment in ["eyJ", "token_type", "expires_in"]
        .iter()
        .chain(body_fragments)
    {
        assert!(!shown.contains(fragment), "{fragment:?} in {shown}");
    }
}

#[tokio::test(start_paused = true)]
async fn server_failures_are_unavailable_and_transient() {
    for (failure, status) in [
        (Failure::InternalServerError, "HTTP 500"),
        (Failure::ServiceUnavailable, "HTTP 503"),
    ] {
        let error = scripted_error(failure).await;
        assert!(
            matches!(&error, Error::Unavailable { endpoint, detail, retry_after: None }
                if endpoint == "https://as.in-process.test/token" && detail == status),
            "{error:?}"
        );
        assert!(error.is_transient());
        assert_eq!(error.retry_after(), None);
        assert_eq!(error.oauth_error(), None);
        assert!(error.to_string().contains("a later attempt may succeed"));
    }
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_reports_retry_after() {
    let error = scripted_error(Failure::TooManyRequests {
        retry_after: Duration::from_secs(7),
    })
    .await;
    assert!(
        matches!(&error, Error::Unavailable { detail, .. } if detail == "HTTP 429"),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test(start_paused = true)]
async fn malformed_json_is_a_protocol_error_without_the_body() {
    // The scripted body is `{"access_token": "abc", "token_` (cut off).
    let error = scripted_error(Failure::MalformedJson).await;
    assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
    assert!(!error.is_transient());
    assert_shows_no_body(&error, &["abc"]);
}

#[tokio::test(start_paused = true)]
async fn an_oversized_body_is_a_protocol_error() {
    // 1 MiB against the default 64 KiB cap.
    let error = scripted_error(Failure::OversizedBody).await;
    assert!(
        matches!(&error, Error::Protocol { detail, .. }
            if detail == "response body larger than 65536 bytes"),
        "{error:?}"
    );
    assert!(!error.is_transient());
    assert_shows_no_body(&error, &["AAAA"]);

    // A valid response over a configured cap of 2 KiB is refused for its size alone.
    let server = new_server();
    let padding = format!("https://mcp.example.com/{}", "A".repeat(4096));
    server.script(|s| s.resource_field = ResourceField::Value(json!(padding)));
    let cache = builder(&server, confidential())
        .resource(config(MCP))
        .max_response_bytes(2048)
        .build()
        .unwrap();
    let error = first_error(&server, &cache).await;
    assert!(
        matches!(&error, Error::Protocol { detail, .. }
            if detail == "response body larger than 2048 bytes"),
        "{error:?}"
    );
    assert_shows_no_body(&error, &["AAAA"]);
}

#[tokio::test(start_paused = true)]
async fn a_resource_in_the_response_must_be_the_one_requested() {
    let cases = [
        json!("https://other.example.com"),
        json!(["https://mcp.example.com", "https://other.example.com"]),
        json!(["https://mcp.example.com", "https://mcp.example.com/"]),
        json!([]),
    ];
    for value in cases {
        let server = new_server();
        server.script(|s| s.resource_field = ResourceField::Value(value.clone()));
        let cache = new_cache(&server, confidential(), [config(MCP)]);
        let error = first_error(&server, &cache).await;
        assert!(
            matches!(&error, Error::Protocol { detail, .. } if detail.contains("discarded")),
            "{value}: {error:?}"
        );
        assert!(!error.is_transient());
        assert_shows_no_body(&error, &[]);
    }
    // The same resource, even spelled with the root slash, is accepted.
    for value in [
        json!("https://mcp.example.com"),
        json!("https://mcp.example.com/"),
    ] {
        let server = new_server();
        server.script(|s| s.resource_field = ResourceField::Value(value.clone()));
        let cache = new_cache(&server, confidential(), [config(MCP)]);
        assert!(
            cache.token(&resource(MCP), &empty()).await.is_ok(),
            "{value}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_target_has_its_own_error() {
    let server = new_server();
    server.script(|s| s.resources = ResourcePolicy::allow_only([API]));
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let error = first_error(&server, &cache).await;
    assert!(
        matches!(&error, Error::InvalidTarget { issuer, resource, description: Some(_) }
            if issuer == ISSUER && resource == "https://mcp.example.com/"),
        "{error:?}"
    );
    assert!(!error.is_transient());
    assert_eq!(error.oauth_error().unwrap().code, "invalid_target");
    let shown = error.to_string();
    assert!(shown.contains("invalid_target"), "{shown}");
    assert!(
        shown.contains("check that the resource is registered there"),
        "{shown}"
    );
}

#[tokio::test(start_paused = true)]
async fn another_oauth_error_carries_code_description_and_a_next_step() {
    let server = new_server();
    let wrong = ClientRegistration::new(ISSUER, token_endpoint(), SVC)
        .client_secret_basic(secret("not the secret"));
    let cache = new_cache(&server, wrong, [config(MCP)]);
    let error = first_error(&server, &cache).await;
    let Error::OAuth {
        issuer,
        resource,
        error: oauth,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(issuer, ISSUER);
    assert_eq!(resource, "https://mcp.example.com/");
    assert_eq!(oauth.code, "invalid_client");
    assert_eq!(oauth.description.as_deref(), Some("bad client secret"));
    assert!(!error.is_transient());
    assert_eq!(
        error.to_string(),
        "authorization server https://as.in-process.test refused the token request for \
         https://mcp.example.com/: invalid_client (bad client secret); check the client id, \
         secret and authentication method configured for this issuer"
    );
    assert!(!format!("{error:?}").contains("not the secret"));
}

#[tokio::test(start_paused = true)]
async fn granted_scope_is_what_the_token_carries() {
    // Narrower than requested: the granted set.
    let server = new_server();
    server.script(|s| s.scope_field = ScopeField::Fixed("read".into()));
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let token = cache
        .token(&resource(MCP), &scopes("read write"))
        .await
        .unwrap();
    assert_eq!(token.scopes(), &scopes("read"));
    assert_eq!(server.requests()[0].scope.as_deref(), Some("read write"));

    // No `scope` member: the requested set (RFC 6749 §5.1).
    let server = new_server();
    server.script(|s| s.scope_field = ScopeField::Omit);
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let token = cache
        .token(&resource(MCP), &scopes("write read"))
        .await
        .unwrap();
    assert_eq!(token.scopes(), &scopes("read write"));
}

#[tokio::test(start_paused = true)]
async fn lifetime_comes_from_expires_in_or_the_default() {
    let server = new_server();
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let token = cache.token(&resource(MCP), &empty()).await.unwrap();
    assert_eq!(token.expires_in(), USABLE);

    // No `expires_in`: the default 300 s, less the 30 s skew.
    let server = new_server();
    server.script(|s| s.expires_in = None);
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let token = cache.token(&resource(MCP), &empty()).await.unwrap();
    assert_eq!(token.expires_in(), Duration::from_secs(270));
    tokio::time::advance(Duration::from_secs(100)).await;
    assert_eq!(token.expires_in(), Duration::from_secs(170));

    // A configured default lifetime.
    let server = new_server();
    server.script(|s| s.expires_in = None);
    let cache = builder(&server, confidential())
        .resource(config(MCP))
        .default_lifetime(Duration::from_secs(900))
        .build()
        .unwrap();
    let token = cache.token(&resource(MCP), &empty()).await.unwrap();
    assert_eq!(token.expires_in(), Duration::from_secs(870));
}

#[tokio::test(start_paused = true)]
async fn a_server_slower_than_the_request_timeout_is_unavailable() {
    let server = new_server();
    server.script(|s| s.latency = Duration::from_secs(60));
    let cache = builder(&server, confidential())
        .resource(config(MCP))
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let error = first_error(&server, &cache).await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(
        matches!(&error, Error::Unavailable { detail, retry_after: None, .. }
            if detail == "no answer within 5.0 s"),
        "{error:?}"
    );
    assert!(error.is_transient());
}

// ---------------------------------------------------------------------------------------------
// A token type other than Bearer. The embedded server always says Bearer, so this answer
// comes from a stub token endpoint on a loopback socket (real time; nothing is timed).

async fn stub_token_endpoint(body: serde_json::Value) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, task)
}

async fn token_type_result(token_type: &str) -> Result<(), Error> {
    let body = json!({
        "access_token": "2YotnFZFEjr1zCsicMWpAA",
        "token_type": token_type,
        "expires_in": 3600,
    });
    let (origin, task) = stub_token_endpoint(body).await;
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(
            ClientRegistration::new(origin.as_str(), url(&format!("{origin}/token")), SVC)
                .client_secret_basic(secret(SECRET)),
        )
        .resource(ResourceConfig::new(resource(MCP), origin.as_str()))
        .build()
        .unwrap();
    let result = cache.token(&resource(MCP), &empty()).await.map(|_| ());
    task.abort();
    result
}

#[tokio::test]
async fn only_bearer_tokens_are_accepted() {
    // RFC 6749 §5.1: the type is case-insensitive.
    for accepted in ["Bearer", "bearer", "BEARER"] {
        assert!(token_type_result(accepted).await.is_ok(), "{accepted}");
    }
    for refused in ["DPoP", "mac", "N_A"] {
        let error = token_type_result(refused).await.unwrap_err();
        assert!(
            matches!(&error, Error::Protocol { detail, .. } if detail.contains("only Bearer")),
            "{refused}: {error:?}"
        );
        assert!(!error.is_transient());
        assert_shows_no_body(&error, &["2YotnFZFEjr1zCsicMWpAA"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Configurations the builder refuses: each names the entry and says what to do.

fn build_error(builder: audience_cache::TokenCacheBuilder) -> BuildError {
    builder.build().unwrap_err()
}

fn assert_says(error: &BuildError, parts: &[&str]) {
    let shown = error.to_string();
    for part in parts {
        assert!(shown.contains(part), "{part:?} not in {shown:?}");
    }
}

#[test]
fn an_http_issuer_is_refused_off_loopback() {
    let issuer = "http://auth.example.com";
    for allow_loopback in [false, true] {
        let error = build_error(
            TokenCache::builder()
                .allow_insecure_http_on_loopback(allow_loopback)
                .client(
                    ClientRegistration::new(issuer, url("http://auth.example.com/token"), SVC)
                        .client_secret_basic(secret(SECRET)),
                ),
        );
        assert!(
            matches!(&error, BuildError::InvalidIssuer { issuer: i, .. } if i == issuer),
            "{error:?}"
        );
        assert_says(&error, &[issuer, "must be https"]);
    }
}

#[test]
fn an_issuer_with_a_query_is_refused() {
    let issuer = "https://auth.example.com?tenant=1";
    let error = build_error(
        TokenCache::builder().client(
            ClientRegistration::new(issuer, url("https://auth.example.com/token"), SVC)
                .client_secret_basic(secret(SECRET)),
        ),
    );
    assert!(
        matches!(&error, BuildError::InvalidIssuer { issuer: i, .. } if i == issuer),
        "{error:?}"
    );
    assert_says(&error, &[issuer, "query", "remove"]);
}

#[test]
fn an_empty_client_id_is_refused() {
    let error = build_error(TokenCache::builder().client(
        ClientRegistration::new(ISSUER, token_endpoint(), "").client_secret_basic(secret(SECRET)),
    ));
    assert_eq!(
        error,
        BuildError::EmptyClientId {
            issuer: ISSUER.to_owned()
        }
    );
    assert_says(&error, &[ISSUER, "client id", "set"]);
}

#[test]
fn a_resource_of_an_unregistered_issuer_is_refused() {
    let other = "https://other-as.example.com";
    let error = build_error(
        TokenCache::builder()
            .client(confidential())
            .resource(ResourceConfig::new(resource(MCP), other)),
    );
    assert_eq!(
        error,
        BuildError::UnknownIssuer {
            resource: "https://mcp.example.com/".to_owned(),
            issuer: other.to_owned(),
        }
    );
    assert_says(
        &error,
        &[
            "https://mcp.example.com/",
            other,
            "TokenCacheBuilder::client",
        ],
    );
}

#[test]
fn a_resource_configured_twice_is_refused() {
    // Two spellings of one resource have one match key.
    let error = build_error(
        TokenCache::builder()
            .client(confidential())
            .resource(config(MCP))
            .resource(config("https://MCP.example.com:443/").scopes(scopes("read"))),
    );
    assert_eq!(
        error,
        BuildError::DuplicateResource {
            resource: "https://mcp.example.com/".to_owned()
        }
    );
    assert_says(&error, &["https://mcp.example.com/", "twice", "keep one"]);
}

#[test]
fn a_public_client_needs_the_authorization_code_grant() {
    let error = build_error(TokenCache::builder().client(ClientRegistration::new(
        ISSUER,
        token_endpoint(),
        APP,
    )));
    assert!(
        matches!(&error, BuildError::AuthorizationCode { issuer, .. } if issuer == ISSUER),
        "{error:?}"
    );
    assert_says(
        &error,
        &[ISSUER, "public client", "Grant::AuthorizationCode"],
    );
}

#[test]
fn client_credentials_needs_a_secret() {
    let error = build_error(TokenCache::builder().client(
        ClientRegistration::new(ISSUER, token_endpoint(), APP).grant(Grant::ClientCredentials),
    ));
    assert!(
        matches!(&error, BuildError::MissingSecret { issuer } if issuer == ISSUER),
        "{error:?}"
    );
    assert_says(
        &error,
        &[
            ISSUER,
            "client credentials",
            "client secret",
            "client_secret_basic",
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn an_absurd_expires_in_is_bounded_instead_of_overflowing() {
    // `expires_in` is a JSON number the server chooses; u64::MAX seconds does not fit after
    // any instant. The lifetime is bounded (a year, less the skew).
    let bounded = Duration::from_secs(365 * 86_400 - 30);
    let server = new_server();
    server.script(|s| s.expires_in = Some(Duration::from_secs(u64::MAX)));
    let svc = new_cache(&server, confidential(), [config(MCP)]);
    let token = svc.token(&resource(MCP), &empty()).await.unwrap();
    assert_eq!(token.expires_in(), bounded);

    // The code flow stores its token in the caller's task.
    let app = new_cache(&server, public_app(), [config(MCP)]);
    let pending = app.begin_authorization(&resource(MCP), &empty()).unwrap();
    let redirect = approve(&server, &pending).await;
    let token = app
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    assert_eq!(token.expires_in(), bounded);
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn token_exchange_failures_map_like_the_other_grants() {
    // The crate builds and reads the RFC 8693 request itself (oauth2 has no token exchange), so
    // its answers are checked separately.
    type Expected = fn(&Error) -> bool;
    let cases: Vec<(Failure, Expected)> = vec![
        (
            Failure::ServiceUnavailable,
            |e| matches!(e, Error::Unavailable { detail, .. } if detail == "HTTP 503"),
        ),
        (
            Failure::TooManyRequests {
                retry_after: Duration::from_secs(9),
            },
            |e| e.retry_after() == Some(Duration::from_secs(9)),
        ),
        (Failure::MalformedJson, |e| {
            matches!(e, Error::Protocol { .. })
        }),
        (
            Failure::OversizedBody,
            |e| matches!(e, Error::Protocol { detail, .. } if detail.contains("larger than")),
        ),
        (
            Failure::InvalidTarget,
            |e| matches!(e, Error::InvalidTarget { resource, .. } if resource == "https://mcp.example.com/"),
        ),
        (
            Failure::OAuth {
                status: 401,
                error: "invalid_client".into(),
            },
            |e| {
                matches!(e, Error::OAuth { error, .. }
                    if error.code == "invalid_client"
                        && error.description.as_deref() == Some("scripted failure"))
                    && e.to_string().contains("check the client id")
            },
        ),
    ];
    for (failure, expected) in cases {
        let server = new_server();
        let subject = subject_token(&server).await;
        server.script(|s| s.fail_next(1, failure.clone()));
        let cache = new_cache(&server, confidential(), [config(MCP)]);
        let error = cache
            .exchange_token(&resource(MCP), &empty(), subject, "alice")
            .await
            .unwrap_err();
        assert!(expected(&error), "{failure:?}: {error:?}");
        assert_eq!(
            error.is_transient(),
            matches!(
                failure,
                Failure::ServiceUnavailable | Failure::TooManyRequests { .. }
            ),
            "{failure:?}"
        );
        assert_shows_no_body(&error, &["AAAA", "abc"]);
        assert_eq!(server.token_requests(), 2, "{failure:?}");
    }

    // A resource in the exchange response is checked as in any other.
    let server = new_server();
    let subject = subject_token(&server).await;
    server.script(|s| s.resource_field = ResourceField::Value(json!("https://other.example")));
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let error = cache
        .exchange_token(&resource(MCP), &empty(), subject, "alice")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
}

#[test]
fn an_http_token_endpoint_off_loopback_is_refused() {
    let error = build_error(
        TokenCache::builder().client(
            ClientRegistration::new(ISSUER, url("http://as.in-process.test/token"), SVC)
                .client_secret_basic(secret(SECRET)),
        ),
    );
    assert!(
        matches!(&error, BuildError::InvalidEndpoint { issuer, endpoint: "token endpoint", .. }
            if issuer == ISSUER),
        "{error:?}"
    );
    assert_says(&error, &[ISSUER, "token endpoint", "must be https"]);
}

#[tokio::test(start_paused = true)]
async fn an_exchanged_token_is_never_a_client_credentials_token_cached_for_the_account() {
    let server = new_server();
    let subject = subject_token(&server).await;
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let mcp = resource(MCP);
    let service = cache
        .token_for_account(&mcp, &empty(), "alice")
        .await
        .unwrap();
    let exchanged = cache
        .exchange_token(&mcp, &empty(), subject, "alice")
        .await
        .unwrap();
    assert!(!exchanged.same_token_as(&service));
    let grant_types: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| r.grant_type.unwrap_or_default())
        .collect();
    assert_eq!(
        grant_types,
        ["client_credentials", "client_credentials", TOKEN_EXCHANGE]
    );
}
