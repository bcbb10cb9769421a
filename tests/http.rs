//! AuthorizedClient and AudienceMiddleware against embedded servers on 127.0.0.1: the token is
//! attached only after the decision, redirects are followed by the crate with a decision per
//! hop, and 401/403 challenges cause at most one retry.

use audience_cache::testing::{
    AudienceStyle, AuthorizationServer, Client, Redirect, ResourceServer, ScopeField,
};
use audience_cache::{
    AudienceMiddleware, AudienceMode, AudiencePolicy, AuthorizedClient, ClientRegistration, Error,
    ParseOptions, ResourceConfig, ResourceUri, TokenCache,
};
use url::Url;

struct World {
    auth: AuthorizationServer,
    cache: TokenCache,
}

fn resource(uri: &str) -> ResourceUri {
    ResourceUri::parse_with(
        uri,
        &ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .unwrap()
}

async fn world() -> World {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .start()
        .await
        .unwrap();
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(
            ClientRegistration::new(
                auth.issuer(),
                Url::parse(&auth.token_endpoint()).unwrap(),
                "svc",
            )
            .client_secret_basic("s3cret".into()),
        )
        .build()
        .unwrap();
    World { cache, auth }
}

impl World {
    async fn server(&self, path: &str) -> ResourceServer {
        ResourceServer::builder(&self.auth)
            .path(path)
            .start()
            .await
            .unwrap()
    }

    /// Configures `server`'s resource in the cache.
    fn protect(&self, server: &ResourceServer) {
        self.protect_with(server, AudienceMode::DenyOnMismatch);
    }

    fn protect_with(&self, server: &ResourceServer, mode: AudienceMode) {
        self.cache
            .register_resource(
                ResourceConfig::new(resource(server.resource()), self.auth.issuer())
                    .audience(AudiencePolicy::new(mode)),
            )
            .unwrap();
    }
}

async fn get(client: &AuthorizedClient, url: &str) -> Result<reqwest::Response, Error> {
    client.execute(client.get(url).build().unwrap()).await
}

#[tokio::test]
async fn the_token_is_attached_for_the_resource_and_fetched_once() {
    let w = world().await;
    let mcp = w.server("/mcp").await;
    w.protect(&mcp);
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();
    for path in ["/tools", "/tools/call", ""] {
        let response = get(&client, &format!("{}{path}", mcp.url())).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(w.auth.token_requests(), 1);
    let records = mcp.requests();
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| r.token_audiences == [mcp.resource()])
    );
}

#[tokio::test]
async fn a_request_the_crate_cannot_authorize_is_not_sent() {
    let w = world().await;
    let mcp = w.server("/mcp").await;
    w.protect(&mcp);
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();
    let outside = format!("{}-admin", mcp.url());
    let error = get(&client, &outside).await.unwrap_err();
    assert!(matches!(error, Error::NoResource { .. }), "{error:?}");
    let ambiguous = format!("{}/x/..;/admin", mcp.url());
    let error = get(&client, &ambiguous).await.unwrap_err();
    assert!(error.refusal().is_some(), "{error:?}");
    assert!(mcp.requests().is_empty(), "a request went out");
    assert_eq!(w.auth.token_requests(), 0);
}

#[tokio::test]
async fn an_authorization_header_set_by_the_caller_is_left_alone() {
    let w = world().await;
    let mcp = w.server("/mcp").await;
    w.protect(&mcp);
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();
    let request = client
        .get(&mcp.url())
        .bearer_auth("callers-own-token")
        .build()
        .unwrap();
    let response = client.execute(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(w.auth.token_requests(), 0);
    assert_eq!(
        mcp.requests()[0].token_fingerprint,
        Some(audience_cache::testing::fingerprint("callers-own-token"))
    );
}

#[tokio::test]
async fn redirects_carry_the_token_only_where_the_same_resource_covers_the_new_url() {
    let w = world().await;
    let tenant_a = w.server("/tenant-a").await;
    let other = w.server("/other").await;
    w.protect(&tenant_a);
    // The other server is a configured resource too: its own token must not be swapped in.
    w.protect(&other);
    let origin = tenant_a.origin().to_owned();
    tenant_a.script(|s| {
        s.redirects = vec![
            Redirect::temporary("/tenant-a/old", "/tenant-a/new"),
            Redirect::temporary("/tenant-a/leave", "/tenant-b/mcp"),
            Redirect::permanent("/tenant-a/away", format!("{}/x", other.url())),
        ]
    });
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();

    let same = get(&client, &format!("{origin}/tenant-a/old"))
        .await
        .unwrap();
    assert_eq!(same.status(), 200);
    let records = tenant_a.requests();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.bearer_presented), "{records:?}");

    tenant_a.reset_counts();
    let _ = get(&client, &format!("{origin}/tenant-a/leave"))
        .await
        .unwrap();
    let records = tenant_a.requests();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].path, "/tenant-b/mcp");
    assert!(
        !records[1].bearer_presented,
        "the token followed a redirect out of its resource"
    );

    let _ = get(&client, &format!("{origin}/tenant-a/away"))
        .await
        .unwrap();
    let received = other.requests();
    assert_eq!(received.len(), 1);
    assert!(
        !received[0].bearer_presented,
        "a token crossed origins on a redirect"
    );
    assert_eq!(
        w.auth.token_requests(),
        1,
        "no token was fetched for the other resource"
    );
}

#[tokio::test]
async fn redirect_loops_stop_at_the_limit() {
    let w = world().await;
    let mcp = w.server("/mcp").await;
    w.protect(&mcp);
    mcp.script(|s| {
        s.redirects = vec![
            Redirect::temporary("/mcp/a", "/mcp/b"),
            Redirect::temporary("/mcp/b", "/mcp/a"),
        ]
    });
    let client = AuthorizedClient::new(w.cache.clone())
        .unwrap()
        .max_redirects(4);
    let error = get(&client, &format!("{}/a", mcp.url())).await.unwrap_err();
    assert!(
        matches!(error, Error::TooManyRedirects { limit: 4, .. }),
        "{error:?}"
    );
    assert_eq!(mcp.requests().len(), 5);
}

#[tokio::test]
async fn invalid_token_evicts_and_retries_once() {
    let w = world().await;
    let mcp = w.server("/mcp").await;
    // Provenance only, so that a token with a foreign `aud` reaches the server and is rejected
    // there (with the default mode the crate would refuse it before sending).
    w.protect_with(&mcp, AudienceMode::ProvenanceOnly);
    w.auth
        .script(|s| s.audience = AudienceStyle::Fixed(vec!["https://elsewhere.example/".into()]));
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();
    let url = format!("{}/tools", mcp.url());

    // The server keeps issuing bad tokens: one retry, then the 401 is returned. Never a loop.
    let response = get(&client, &url).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!((w.auth.token_requests(), mcp.requests().len()), (2, 2));

    // The retry's bad token is still cached; now the server behaves: the cached token is
    // rejected, evicted, and the retry with a new one succeeds.
    w.auth.script(|s| s.audience = AudienceStyle::Resource);
    w.auth.reset_counts();
    mcp.reset_counts();
    let response = get(&client, &url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!((w.auth.token_requests(), mcp.requests().len()), (1, 2));
    assert_eq!(mcp.requests()[1].token_audiences, [mcp.resource()]);
}

#[tokio::test]
async fn insufficient_scope_steps_up_once_and_is_remembered() {
    let w = world().await;
    let mcp = ResourceServer::builder(&w.auth)
        .path("/mcp")
        .scopes_required(["mcp:write"])
        .start()
        .await
        .unwrap();
    w.protect(&mcp);
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();
    let url = format!("{}/tools", mcp.url());
    let response = get(&client, &url).await.unwrap();
    assert_eq!(response.status(), 200);
    let scopes: Vec<_> = w.auth.requests().iter().map(|r| r.scope.clone()).collect();
    assert_eq!(scopes, [None, Some("mcp:write".to_owned())]);
    // Remembered for the resource: the next request goes out with enough scope at once.
    mcp.reset_counts();
    assert_eq!(get(&client, &url).await.unwrap().status(), 200);
    assert_eq!(mcp.requests().len(), 1);
    assert_eq!(w.auth.token_requests(), 2);
}

#[tokio::test]
async fn a_step_up_that_does_not_help_is_not_repeated() {
    let w = world().await;
    let mcp = ResourceServer::builder(&w.auth)
        .path("/mcp")
        .scopes_required(["mcp:write"])
        .start()
        .await
        .unwrap();
    w.protect(&mcp);
    // The server never grants the scope.
    w.auth
        .script(|s| s.scope_field = ScopeField::Fixed("mcp:read".into()));
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();
    let url = format!("{}/tools", mcp.url());
    let response = get(&client, &url).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(mcp.requests().len(), 2, "one retry, no loop");
    assert_eq!(w.auth.token_requests(), 2);
}

#[tokio::test]
async fn the_middleware_behaves_like_the_wrapper() {
    let w = world().await;
    let mcp = w.server("/mcp").await;
    let other = w.server("/other").await;
    w.protect(&mcp);
    mcp.script(|s| {
        s.redirects = vec![Redirect::temporary(
            "/mcp/away",
            format!("{}/x", other.url()),
        )]
    });
    let inner = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(inner)
        .with(AudienceMiddleware::new(w.cache.clone()))
        .build();
    let ok = client
        .get(format!("{}/tools", mcp.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let _ = client
        .get(format!("{}/away", mcp.url()))
        .send()
        .await
        .unwrap();
    assert!(!other.requests()[0].bearer_presented);
    let refused = client
        .get(format!("{}-admin", mcp.url()))
        .send()
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("no configured resource covers"),
        "{refused}"
    );
    assert_eq!(w.auth.token_requests(), 1);
}

#[tokio::test]
async fn a_url_with_a_fragment_is_sent_without_it_and_is_not_taken_for_a_redirect() {
    let w = world().await;
    let mcp = w.server("/mcp").await;
    w.protect(&mcp);
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();
    // RFC 9110 §4.2.5: the fragment stays with the client; the answer comes from the same URL.
    let response = get(&client, &format!("{}/tools#section", mcp.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let records = mcp.requests();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].path, "/mcp/tools");
    assert!(records[0].bearer_presented);
    assert_eq!(w.auth.token_requests(), 1);
}
