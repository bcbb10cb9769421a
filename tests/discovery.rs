//! Discovery end to end against the embedded servers on 127.0.0.1: from a bare server URL to
//! an authorized request, and the hostile documents that must stop it.

use audience_cache::testing::{AuthorizationServer, Client, ResourceServer};
use audience_cache::{
    AuthorizedClient, Discovery, DiscoveryError, DiscoveryOptions, Error, PreRegistered, TokenCache,
};
use url::Url;

fn options() -> DiscoveryOptions {
    DiscoveryOptions::strict().allow_insecure_http_on_loopback(true)
}

async fn servers() -> (AuthorizationServer, ResourceServer) {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .start()
        .await
        .unwrap();
    let mcp = ResourceServer::builder(&auth)
        .path("/mcp")
        .scopes_supported(["mcp:read", "mcp:write"])
        .start()
        .await
        .unwrap();
    (auth, mcp)
}

fn client(cache: &TokenCache, issuer: &str) -> AuthorizedClient {
    AuthorizedClient::new(cache.clone())
        .unwrap()
        .with_discovery(
            Discovery::new(options()).unwrap(),
            PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(issuer),
        )
}

fn empty_cache() -> TokenCache {
    TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_bare_server_url_leads_to_an_authorized_request() {
    let (auth, mcp) = servers().await;
    let cache = empty_cache();
    let client = client(&cache, auth.issuer());
    let url = format!("{}/tools", mcp.url());
    let response = client
        .execute(client.get(&url).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // One token request, for the metadata's resource verbatim, with its scopes_supported.
    let requests = auth.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].resources, [mcp.resource()]);
    assert_eq!(requests[0].scope.as_deref(), Some("mcp:read mcp:write"));
    // The resource server saw the unauthenticated probe, the metadata fetch, then the
    // authorized request.
    let seen = mcp.requests();
    let paths: Vec<_> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/mcp/tools",
            "/.well-known/oauth-protected-resource/mcp",
            "/mcp/tools"
        ]
    );
    assert!(seen.iter().take(2).all(|r| !r.bearer_presented));
    assert_eq!(seen[2].token_audiences, [mcp.resource()]);
    // The next request needs neither discovery nor a token request.
    let again = client
        .execute(client.get(&url).build().unwrap())
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!((auth.token_requests(), mcp.requests().len()), (1, 4));
    assert_eq!(
        cache
            .resource_for(&Url::parse(&url).unwrap())
            .unwrap()
            .wire(),
        mcp.resource()
    );
}

#[tokio::test]
async fn metadata_for_another_resource_is_refused() {
    let (auth, mcp) = servers().await;
    mcp.script(|s| s.metadata_resource = Some("http://127.0.0.1:1/elsewhere".into()));
    let cache = empty_cache();
    let client = client(&cache, auth.issuer());
    let error = client
        .execute(client.get(&mcp.url()).build().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Discovery(DiscoveryError::ResourceMismatch { .. })
        ),
        "{error:?}"
    );
    assert_eq!(auth.token_requests(), 0);
    assert!(mcp.requests().iter().all(|r| !r.bearer_presented));
}

#[tokio::test]
async fn authorization_server_metadata_with_another_issuer_is_refused() {
    let (auth, mcp) = servers().await;
    auth.script(|s| s.metadata_issuer = Some("http://127.0.0.1:1".into()));
    let cache = empty_cache();
    let client = client(&cache, auth.issuer());
    let error = client
        .execute(client.get(&mcp.url()).build().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Discovery(DiscoveryError::IssuerMismatch { .. })
        ),
        "{error:?}"
    );
    assert_eq!(auth.token_requests(), 0);
}

#[tokio::test]
async fn strict_options_refuse_a_loopback_server() {
    let (_auth, mcp) = servers().await;
    let discovery = Discovery::new(DiscoveryOptions::strict()).unwrap();
    let error = discovery
        .discover(&Url::parse(&mcp.url()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Discovery(_)), "{error:?}");
    assert!(
        mcp.requests().is_empty(),
        "a strict client contacted a loopback server"
    );
}

#[tokio::test]
async fn an_unprotected_answer_is_returned_without_discovery() {
    let (auth, mcp) = servers().await;
    let cache = empty_cache();
    let client = client(&cache, auth.issuer());
    // The metadata document itself is public: no 401, so no token and no discovery.
    let response = client
        .execute(client.get(&mcp.metadata_url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(auth.token_requests(), 0);
    assert!(
        cache
            .resource_for(&Url::parse(&mcp.url()).unwrap())
            .is_none()
    );
}

#[tokio::test]
async fn discovery_documents_are_cached() {
    let (auth, mcp) = servers().await;
    let discovery = Discovery::new(options()).unwrap();
    let url = Url::parse(&mcp.url()).unwrap();
    let first = discovery.discover(&url).await.unwrap();
    let metadata_fetches = auth.metadata_requests();
    let second = discovery.discover(&url).await.unwrap();
    assert_eq!(first.resource(), second.resource());
    assert_eq!(
        auth.metadata_requests(),
        metadata_fetches,
        "metadata fetched again"
    );
    assert_eq!(first.resource().wire(), mcp.resource());
    assert_eq!(
        first.authorization_server().issuer().as_str(),
        auth.issuer()
    );
}
