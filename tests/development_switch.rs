//! Plain http on loopback, for trying the crate against servers on this machine: one switch,
//! `TokenCacheBuilder::allow_insecure_http_on_loopback`, set once; discovery behind an
//! `AuthorizedClient` follows it; every refusal names it and says what was refused.

use audience_cache::testing::{AuthorizationServer, Client, ResourceServer};
use audience_cache::{
    AuthorizedClient, BuildError, ClientRegistration, Discovery, DiscoveryOptions, PreRegistered,
    TokenCache,
};
use url::Url;

async fn servers() -> (AuthorizationServer, ResourceServer) {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .start()
        .await
        .unwrap();
    let mcp = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    (auth, mcp)
}

fn client(
    cache: TokenCache,
    options: DiscoveryOptions,
    auth: &AuthorizationServer,
) -> AuthorizedClient {
    AuthorizedClient::new(cache).unwrap().with_discovery(
        Discovery::new(options).unwrap(),
        PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(auth.issuer()),
    )
}

#[tokio::test]
async fn the_caches_switch_is_enough_for_discovery_too() {
    let (auth, mcp) = servers().await;
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap();
    let client = client(cache, DiscoveryOptions::strict(), &auth);
    let response = client
        .execute(client.get(&mcp.url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(auth.requests().len(), 1);
}

#[tokio::test]
async fn the_discovery_switch_alone_is_refused_with_the_switch_to_set() {
    let (auth, mcp) = servers().await;
    let cache = TokenCache::builder().build().unwrap();
    let client = client(
        cache,
        DiscoveryOptions::strict().allow_insecure_http_on_loopback(true),
        &auth,
    );
    let error = client
        .execute(client.get(&mcp.url()).build().unwrap())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("TokenCacheBuilder::allow_insecure_http_on_loopback(true)"),
        "{message}"
    );
    // The probe went out (a request without a token, to the URL the caller chose); no metadata
    // was fetched, and nothing reached the authorization server.
    assert_eq!(mcp.requests().len(), 1, "{:?}", mcp.requests());
    assert!(auth.requests().is_empty());
    assert_eq!(auth.metadata_requests(), 0);
}

#[test]
fn an_http_issuer_is_called_an_issuer_and_the_switch_is_named() {
    let error = TokenCache::builder()
        .client(ClientRegistration::new(
            "http://127.0.0.1:8080",
            Url::parse("http://127.0.0.1:8080/token").unwrap(),
            "svc",
        ))
        .build()
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, BuildError::InvalidIssuer { .. }),
        "{error:?}"
    );
    assert!(
        message.contains("the issuer uses plain http")
            && message.contains("TokenCacheBuilder::allow_insecure_http_on_loopback(true)")
            && !message.contains("ParseOptions")
            && !message.contains("resource identifier"),
        "{message}"
    );
}
