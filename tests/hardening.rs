//! Findings of a security review (F1–F13). Each doc comment describes the attack or bug the
//! finding was about; each test asserts the safe behaviour that now holds.

use audience_cache::testing::{
    AudienceStyle, AuthorizationServer, Client, ClientAuthMethod, Redirect, ResourceServer,
};
use audience_cache::{
    AuthorizedClient, ClientRegistration, Discovery, DiscoveryOptions, Error, ParseOptions,
    PreRegistered, ResourceConfig, ResourceUri, TokenCache,
};
use url::Url;

fn loopback(uri: &str) -> ResourceUri {
    ResourceUri::parse_with(
        uri,
        &ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .unwrap()
}

async fn get(client: &AuthorizedClient, url: &str) -> Result<reqwest::Response, Error> {
    client.execute(client.get(url).build().unwrap()).await
}

/// An authorization server on 127.0.0.1 that knows the client `svc` / `s3cret`.
async fn auth_server() -> AuthorizationServer {
    AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .start()
        .await
        .unwrap()
}

/// The client `svc` at `auth` (client_secret_basic).
fn registration(auth: &AuthorizationServer) -> ClientRegistration {
    ClientRegistration::new(
        auth.issuer(),
        Url::parse(&auth.token_endpoint()).unwrap(),
        "svc",
    )
    .client_secret_basic("s3cret".into())
}

/// A cache builder for loopback servers with the client registered at `auth`.
fn cache_builder(auth: &AuthorizationServer) -> audience_cache::TokenCacheBuilder {
    TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration(auth))
}

/// A client that discovers unknown URLs with `client`.
fn discovering(cache: &TokenCache, client: PreRegistered) -> AuthorizedClient {
    AuthorizedClient::new(cache.clone())
        .unwrap()
        .with_discovery(
            Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true))
                .unwrap(),
            client,
        )
}

/// F1: with `with_discovery`, any server that answers 401 can name its own authorization
/// server, and the pre-registered client's secret is sent to that server's token endpoint.
#[tokio::test]
async fn f1_discovery_never_sends_the_secret_to_an_issuer_the_client_is_not_registered_at() {
    // The authorization server the secret was issued by, and its MCP server.
    let good = auth_server().await;
    let good_mcp = ResourceServer::builder(&good)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    // An attacker's MCP server naming the attacker's authorization server. The attacker's AS
    // "knows" svc/s3cret only so that a 200 proves it received and verified the secret.
    let evil = auth_server().await;
    let evil_mcp = ResourceServer::builder(&evil)
        .path("/mcp")
        .start()
        .await
        .unwrap();

    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap();
    let client = discovering(
        &cache,
        PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(good.issuer()),
    );
    assert_eq!(get(&client, &good_mcp.url()).await.unwrap().status(), 200);
    // The application is pointed at another URL (a tool result, a user-supplied server...).
    let _ = get(&client, &evil_mcp.url()).await;

    let leaked: Vec<_> = evil
        .requests()
        .into_iter()
        .filter(|r| r.client_id.as_deref() == Some("svc"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the client secret went to an authorization server chosen by the resource server: {leaked:?}"
    );
}

/// F2: a redirect to a URL that a more specific configured resource owns still carries the
/// first hop's token (from another authorization server), though `resource_for` and
/// `token_for` pick the more specific resource for that URL (rules §20, MCP 2025-11-25 §9.2).
#[tokio::test]
async fn f2_a_redirect_hop_respects_the_longest_match() {
    let a = auth_server().await;
    let b = auth_server().await;
    // One origin: `/` protected by A; `/b` is a separate resource protected by B.
    let rs = ResourceServer::builder(&a).path("/").start().await.unwrap();
    let origin = rs.origin().to_owned();
    rs.script(|s| s.redirects = vec![Redirect::temporary("/a", "/b/x")]);
    let root = loopback(&origin);
    let tenant_b = loopback(&format!("{origin}/b"));
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration(&a))
        .client(registration(&b))
        .resource(ResourceConfig::new(root.clone(), a.issuer()))
        .resource(ResourceConfig::new(tenant_b.clone(), b.issuer()))
        .build()
        .unwrap();
    let hop = Url::parse(&format!("{origin}/b/x")).unwrap();
    assert_eq!(cache.resource_for(&hop), Some(tenant_b.clone()));

    let client = AuthorizedClient::new(cache.clone()).unwrap();
    let _ = get(&client, &format!("{origin}/a")).await;
    let records = rs.requests();
    let second = records
        .iter()
        .find(|r| r.path == "/b/x")
        .expect("hop followed");
    assert!(
        !second.bearer_presented,
        "A's token for {} was sent to {hop}, which belongs to {} (issuer B)",
        root.key(),
        tenant_b.key()
    );
}

/// F3: a token endpoint 307 is followed by a caller-supplied reqwest client (the default
/// policy), re-posting the body (client_secret_post, refresh_token, code_verifier,
/// subject_token) to the Location, and the answer from there is cached as the issuer's token.
#[tokio::test]
async fn f3_a_callers_client_builder_never_follows_token_endpoint_redirects() {
    use axum::http::{HeaderMap, StatusCode, header};
    let evil = AuthorizationServer::builder()
        .client(
            Client::confidential("svc", "s3cret").auth_method(ClientAuthMethod::ClientSecretPost),
        )
        .start()
        .await
        .unwrap();
    let target = evil.token_endpoint();
    // The "real" token endpoint answers 307 to the attacker's endpoint.
    let app = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move {
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, target.parse().unwrap());
            (StatusCode::TEMPORARY_REDIRECT, headers)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let issuer = format!("http://{addr}");

    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        // A caller's client builder with reqwest's default redirect policy: the crate turns
        // redirects off before building it.
        .http_client_builder(reqwest::Client::builder())
        .client(
            ClientRegistration::new(
                &issuer,
                Url::parse(&format!("{issuer}/token")).unwrap(),
                "svc",
            )
            .client_secret_post("s3cret".into()),
        )
        .resource(ResourceConfig::new(
            loopback("http://127.0.0.1:9/mcp"),
            &issuer,
        ))
        .build()
        .unwrap();
    let result = cache
        .token_for(&Url::parse("http://127.0.0.1:9/mcp").unwrap())
        .await;
    assert!(
        evil.requests().is_empty(),
        "the token request body (with client_secret) was re-posted to {}; result: {result:?}",
        evil.token_endpoint()
    );
}

/// F4: `Error::Request` promises a URL "without its query", but its detail is reqwest's
/// message, which ends in "for url (<full URL with query>)".
#[tokio::test]
async fn f4_request_errors_do_not_show_the_query() {
    let auth = auth_server().await;
    let cache = cache_builder(&auth)
        // Nothing listens on port 9.
        .resource(ResourceConfig::new(
            loopback("http://127.0.0.1:9/mcp"),
            auth.issuer(),
        ))
        .build()
        .unwrap();
    let client = AuthorizedClient::new(cache).unwrap();
    let error = get(&client, "http://127.0.0.1:9/mcp?api_key=SECRET-IN-QUERY")
        .await
        .unwrap_err();
    let shown = error.to_string();
    assert!(!shown.contains("SECRET-IN-QUERY"), "{shown}");
}

/// F5: a token refused by the aud check is evicted and the next call fetches again, with no
/// backoff: every request costs a token request while the server keeps issuing such tokens.
#[tokio::test]
async fn f5_refused_tokens_are_not_refetched_at_every_call() {
    let auth = auth_server().await;
    auth.script(|s| s.audience = AudienceStyle::Fixed(vec!["https://other.example/".into()]));
    let cache = cache_builder(&auth)
        .resource(ResourceConfig::new(
            loopback("http://127.0.0.1:9/mcp"),
            auth.issuer(),
        ))
        .build()
        .unwrap();
    let url = Url::parse("http://127.0.0.1:9/mcp").unwrap();
    for _ in 0..5 {
        let error = cache.token_for(&url).await.unwrap_err();
        assert!(error.refusal().is_some(), "{error:?}");
    }
    assert!(
        auth.token_requests() <= 2,
        "{} token requests for 5 refused hand-outs",
        auth.token_requests()
    );
}

/// F9: with discovery on, a URL that the audience decision refuses (an ambiguous path under a
/// configured resource) is treated as "no resource" and sent once without a token (the
/// discovery probe), where without discovery it is refused before anything is sent.
#[tokio::test]
async fn f9_a_refused_url_is_not_probed_when_discovery_is_on() {
    let auth = auth_server().await;
    let mcp = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    let cache = cache_builder(&auth)
        .resource(ResourceConfig::new(loopback(mcp.resource()), auth.issuer()))
        .build()
        .unwrap();
    let client = discovering(
        &cache,
        PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(auth.issuer()),
    );
    let result = get(&client, &format!("{}/x/..;/admin", mcp.url())).await;
    assert!(
        mcp.requests().is_empty(),
        "a refused URL was sent: {:?}; result {result:?}",
        mcp.requests()
    );
}

/// F10: discovery reuses a statically configured client registration for any resource whose
/// metadata names that issuer. If the authorization server ignores `resource` (many do; RFC
/// 8707 has no metadata flag) and issues opaque tokens, a token for the real resource is
/// fetched for, and sent to, the attacker's server (RFC 9728 §7.4). Only the deny-only aud
/// check stands in the way, and it cannot read opaque tokens.
#[tokio::test]
async fn f10_discovery_does_not_reuse_a_configured_client_for_a_foreign_resource() {
    use audience_cache::testing::TokenFormat;
    let good = auth_server().await;
    let good_mcp = ResourceServer::builder(&good)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    // The AS ignores `resource`: every token is for the real MCP server, and opaque.
    let audience = good_mcp.resource().to_owned();
    good.script(|s| {
        s.audience = AudienceStyle::Fixed(vec![audience]);
        s.token_format = TokenFormat::Opaque;
    });
    // The attacker's server names the real AS in its metadata.
    let evil_mcp = ResourceServer::builder(&good)
        .path("/evil")
        .start()
        .await
        .unwrap();
    let cache = cache_builder(&good)
        .resource(ResourceConfig::new(
            loopback(good_mcp.resource()),
            good.issuer(),
        ))
        .build()
        .unwrap();
    let client = discovering(
        &cache,
        PreRegistered::client_secret_basic("other", "other-secret".into()),
    );
    let _ = get(&client, &evil_mcp.url()).await;
    let replayable: Vec<_> = evil_mcp
        .requests()
        .into_iter()
        .filter(|r| r.token_audiences.iter().any(|a| *a == good_mcp.resource()))
        .collect();
    assert!(
        replayable.is_empty(),
        "the attacker's server received a token valid at {}: {replayable:?}",
        good_mcp.resource()
    );
}

/// F11: a 403 insufficient_scope records the challenged scopes for the resource *before* the
/// retry, and keeps them even when the authorization server refuses them. From then on every
/// request to the resource asks for those scopes and fails, although the cached token without
/// them is valid and the server no longer asks for them.
#[tokio::test]
async fn f11_refused_step_up_scopes_do_not_poison_the_resource() {
    use audience_cache::testing::Failure;
    let auth = auth_server().await;
    let mcp = ResourceServer::builder(&auth)
        .path("/mcp")
        .scopes_required(["mcp:admin"])
        .start()
        .await
        .unwrap();
    let cache = cache_builder(&auth)
        .resource(ResourceConfig::new(loopback(mcp.resource()), auth.issuer()))
        .build()
        .unwrap();
    let client = AuthorizedClient::new(cache.clone()).unwrap();
    // The first token is granted; the step-up request is refused (invalid_scope).
    cache
        .token_for(&Url::parse(&mcp.url()).unwrap())
        .await
        .unwrap();
    auth.script(|s| {
        s.fail_next(
            1,
            Failure::OAuth {
                status: 400,
                error: "invalid_scope".into(),
            },
        )
    });
    let first = get(&client, &mcp.url()).await;
    assert!(first.is_err(), "{first:?}");
    // The server stops asking for the scope; the first token is still cached and valid.
    mcp.script(|s| s.scopes_required.clear());
    let second = get(&client, &mcp.url()).await;
    assert!(
        second.as_ref().is_ok_and(|r| r.status() == 200),
        "the resource stays broken: {second:?}"
    );
}

/// F13: in the default Prefix mode, a document served for one path (here the path-inserted
/// well-known URL of `/tenant-b`, reached from tenant B's challenge) may claim the whole origin
/// as its resource. The cache registers it, and from then on requests to other tenants on that
/// host are "covered" by it: they get tenant B's authorization server's tokens and are never
/// discovered themselves.
#[tokio::test]
async fn f13_a_tenant_document_cannot_claim_the_whole_origin() {
    let evil = AuthorizationServer::builder()
        .client(Client::public("app"))
        .start()
        .await
        .unwrap();
    let tenant_b = ResourceServer::builder(&evil)
        .path("/tenant-b/mcp")
        .start()
        .await
        .unwrap();
    let origin = tenant_b.origin().to_owned();
    tenant_b.script(|s| s.metadata_resource = Some(origin.clone()));
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap();
    let client = discovering(
        &cache,
        PreRegistered::public("app", Url::parse("http://127.0.0.1:53682/cb").unwrap())
            .at_issuer(evil.issuer()),
    );
    let _ = get(&client, &tenant_b.url()).await;
    let sibling = Url::parse(&format!("{origin}/tenant-a/mcp")).unwrap();
    assert_eq!(
        cache.resource_for(&sibling),
        None,
        "tenant B's metadata now owns {sibling}"
    );
}

/// A resource whose metadata lists `[hostile, trusted]` authorization servers: discovery used
/// to take the first whose metadata validates and fail with `UntrustedIssuer`; it takes the
/// first one the client may be used at, and the hostile one hears nothing.
#[tokio::test]
async fn discovery_uses_the_first_listed_authorization_server_the_client_may_use() {
    let trusted = auth_server().await;
    let hostile = auth_server().await;
    let mcp = ResourceServer::builder(&trusted)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    let (first, second) = (hostile.issuer().to_owned(), trusted.issuer().to_owned());
    mcp.script(|s| s.authorization_servers = vec![first, second]);
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap();
    let client = discovering(
        &cache,
        PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(trusted.issuer()),
    );
    let response = get(&client, &mcp.url()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(trusted.requests().len(), 1);
    assert!(hostile.requests().is_empty());

    // With no client that may be used at either, the refusal names the first that validates.
    let alone = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap();
    let stranger = discovering(
        &alone,
        PreRegistered::client_secret_basic("svc", "s3cret".into())
            .at_issuer("https://elsewhere.example"),
    );
    let error = get(&stranger, &mcp.url()).await.unwrap_err();
    assert!(
        matches!(&error, Error::UntrustedIssuer { issuer, .. } if issuer == hostile.issuer()),
        "{error:?}"
    );
}
