//! MCP authorization end to end against the embedded servers on 127.0.0.1: a client with no
//! credentials of its own gets one (pre-registered, client ID metadata document, dynamic
//! registration, in that order), the token endpoint authentication follows the server, a user
//! authorizes through a handler, scopes are chosen the MCP way, and step-ups are bounded.

use std::sync::Arc;

use audience_cache::testing::{
    AuthorizationServer, AuthorizationServerBuilder, Client, ClientAuthMethod, ResourceServer,
    ScopeField, TokenRequestRecord,
};
use audience_cache::{
    AuthorizedClient, ClientRegistrar, ClientStore, Discovery, DiscoveryOptions,
    DynamicRegistration, Error, HeadlessAuthorization, MemoryClientStore, PreRegistered,
    TokenCache,
};
use url::Url;

const METADATA_DOCUMENT: &str = "https://app.example/oauth/client.json";

/// Never listened on: the headless handler reads the redirect from `Location`.
fn redirect_uri() -> Url {
    Url::parse("http://127.0.0.1:43219/callback").unwrap()
}

async fn authorization_server(
    configure: impl FnOnce(AuthorizationServerBuilder) -> AuthorizationServerBuilder,
) -> AuthorizationServer {
    configure(AuthorizationServer::builder().script(|s| s.advertise_pkce = true))
        .start()
        .await
        .unwrap()
}

async fn mcp_server(auth: &AuthorizationServer) -> ResourceServer {
    ResourceServer::builder(auth)
        .path("/mcp")
        .scopes_required(["mcp:read"])
        .scopes_supported(["mcp:read", "mcp:write"])
        .start()
        .await
        .unwrap()
}

fn cache() -> TokenCache {
    TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap()
}

fn client(cache: &TokenCache, clients: ClientRegistrar) -> AuthorizedClient {
    let discovery =
        Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true)).unwrap();
    AuthorizedClient::new(cache.clone())
        .unwrap()
        .with_discovery(discovery, clients)
        .with_authorization(Arc::new(
            HeadlessAuthorization::new(redirect_uri()).unwrap(),
        ))
}

fn dynamic() -> DynamicRegistration {
    DynamicRegistration::new("mcp authorization tests")
}

/// The one token request the server received, which succeeded.
fn the_token_request(auth: &AuthorizationServer) -> TokenRequestRecord {
    let requests = auth.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].status.map(|s| s.as_u16()), Some(200));
    requests.into_iter().next().unwrap()
}

async fn get(client: &AuthorizedClient, url: &str) -> Result<u16, Error> {
    let response = client.execute(client.get(url).build().unwrap()).await?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn a_client_with_no_credentials_registers_and_a_user_authorizes() {
    let auth = authorization_server(|b| b.dynamic_registration(true)).await;
    let mcp = mcp_server(&auth).await;
    let store = Arc::new(MemoryClientStore::default());
    let clients = ClientRegistrar::new().dynamic_registration(dynamic().store(store.clone()));
    let url = format!("{}/tools", mcp.url());

    let http = client(&cache(), clients.clone());
    assert_eq!(get(&http, &url).await.unwrap(), 200);

    let registrations = auth.registrations();
    assert_eq!(registrations.len(), 1);
    let registered = &registrations[0];
    assert_eq!(
        registered.client_name.as_deref(),
        Some("mcp authorization tests")
    );
    assert_eq!(registered.redirect_uris, [redirect_uri().as_str()]);
    // No refresh_token grant unless offline access is wanted.
    assert_eq!(registered.grant_types, ["authorization_code"]);
    // The first of basic, post, none that the server lists.
    assert_eq!(
        registered.requested_auth_method.as_deref(),
        Some("client_secret_basic")
    );
    let client_id = registered.client_id.clone().unwrap();

    let authorizations = auth.authorization_requests();
    assert_eq!(authorizations.len(), 1);
    assert_eq!(
        authorizations[0].client_id.as_deref(),
        Some(client_id.as_str())
    );
    assert_eq!(authorizations[0].resources, [mcp.resource()]);
    // The challenge's scope comes before the metadata's scopes_supported (MCP 2025-11-25 §10.2).
    assert_eq!(authorizations[0].scope.as_deref(), Some("mcp:read"));
    assert_eq!(
        authorizations[0].code_challenge_method.as_deref(),
        Some("S256")
    );

    let token = the_token_request(&auth);
    assert_eq!(token.grant_type.as_deref(), Some("authorization_code"));
    assert_eq!(token.client_id.as_deref(), Some(client_id.as_str()));
    assert_eq!(token.client_auth, Some(ClientAuthMethod::ClientSecretBasic));
    assert_eq!(token.resources, [mcp.resource()]);
    assert!(token.code_verifier_presented);
    assert_eq!(store.len(), 1);
    let stored = store.load(auth.issuer()).await.unwrap().unwrap();
    assert_eq!(stored.client_id(), client_id);
    assert!(stored.has_secret());

    // Another process with the same store: the stored client is used, not a second one.
    let again = client(&cache(), clients);
    assert_eq!(get(&again, &url).await.unwrap(), 200);
    assert_eq!(auth.registrations().len(), 1);
    let authorizations = auth.authorization_requests();
    assert_eq!(authorizations.len(), 2);
    assert_eq!(
        authorizations[1].client_id.as_deref(),
        Some(client_id.as_str())
    );
}

#[tokio::test]
async fn the_token_endpoint_authentication_follows_the_server() {
    for (method, expected) in [
        (ClientAuthMethod::ClientSecretPost, "client_secret_post"),
        (ClientAuthMethod::None, "none"),
    ] {
        let auth = authorization_server(|b| {
            b.dynamic_registration(true)
                .token_endpoint_auth_methods([method])
        })
        .await;
        let mcp = mcp_server(&auth).await;
        let http = client(
            &cache(),
            ClientRegistrar::new().dynamic_registration(dynamic()),
        );
        assert_eq!(get(&http, &mcp.url()).await.unwrap(), 200, "{expected}");
        let registrations = auth.registrations();
        assert_eq!(registrations.len(), 1);
        assert_eq!(
            registrations[0].requested_auth_method.as_deref(),
            Some(expected)
        );
        assert_eq!(
            the_token_request(&auth).client_auth,
            Some(method),
            "{expected}"
        );
    }
}

#[tokio::test]
async fn a_client_id_metadata_document_comes_before_dynamic_registration() {
    let auth = authorization_server(|b| {
        b.dynamic_registration(true)
            .client_id_metadata_documents(true)
    })
    .await;
    let mcp = mcp_server(&auth).await;
    let clients = ClientRegistrar::new()
        .client_metadata_document(Url::parse(METADATA_DOCUMENT).unwrap())
        .unwrap()
        .dynamic_registration(dynamic());
    let http = client(&cache(), clients);
    assert_eq!(get(&http, &mcp.url()).await.unwrap(), 200);
    assert!(auth.registrations().is_empty());
    let authorizations = auth.authorization_requests();
    assert_eq!(authorizations.len(), 1);
    assert_eq!(
        authorizations[0].client_id.as_deref(),
        Some(METADATA_DOCUMENT)
    );
    let token = the_token_request(&auth);
    assert_eq!(token.client_id.as_deref(), Some(METADATA_DOCUMENT));
    assert_eq!(token.client_auth, Some(ClientAuthMethod::None));
}

#[tokio::test]
async fn a_metadata_document_is_not_used_where_the_server_does_not_support_it() {
    let auth = authorization_server(|b| b.dynamic_registration(true)).await;
    let mcp = mcp_server(&auth).await;
    let clients = ClientRegistrar::new()
        .client_metadata_document(Url::parse(METADATA_DOCUMENT).unwrap())
        .unwrap()
        .dynamic_registration(dynamic());
    let http = client(&cache(), clients);
    assert_eq!(get(&http, &mcp.url()).await.unwrap(), 200);
    assert_eq!(auth.registrations().len(), 1);
    let authorizations = auth.authorization_requests();
    assert_ne!(
        authorizations[0].client_id.as_deref(),
        Some(METADATA_DOCUMENT)
    );
}

#[tokio::test]
async fn a_pre_registered_client_comes_first() {
    let auth = authorization_server(|b| {
        b.client(Client::confidential("svc", "s3cret"))
            .dynamic_registration(true)
            .client_id_metadata_documents(true)
            .token_endpoint_auth_methods([ClientAuthMethod::ClientSecretPost])
    })
    .await;
    let mcp = mcp_server(&auth).await;
    let clients = ClientRegistrar::new()
        .pre_registered(
            PreRegistered::confidential("svc", "s3cret".into())
                .at_issuer(auth.issuer())
                .redirect_uri(redirect_uri()),
        )
        .client_metadata_document(Url::parse(METADATA_DOCUMENT).unwrap())
        .unwrap()
        .dynamic_registration(dynamic());
    let http = client(&cache(), clients);
    assert_eq!(get(&http, &mcp.url()).await.unwrap(), 200);
    assert!(auth.registrations().is_empty());
    assert_eq!(
        auth.authorization_requests()[0].client_id.as_deref(),
        Some("svc")
    );
    // The server lists only client_secret_post: the confidential client follows it.
    let token = the_token_request(&auth);
    assert_eq!(token.grant_type.as_deref(), Some("authorization_code"));
    assert_eq!(token.client_auth, Some(ClientAuthMethod::ClientSecretPost));
}

#[tokio::test]
async fn offline_access_is_asked_for_where_the_server_lists_it() {
    let auth = authorization_server(|b| {
        b.dynamic_registration(true)
            .scopes_supported(["mcp:read", "offline_access"])
    })
    .await;
    let mcp = mcp_server(&auth).await;
    let cache = cache();
    let clients = ClientRegistrar::new()
        .dynamic_registration(dynamic())
        .offline_access(true);
    let http = client(&cache, clients);
    let url = mcp.url();
    assert_eq!(get(&http, &url).await.unwrap(), 200);
    assert_eq!(
        auth.registrations()[0].grant_types,
        ["authorization_code", "refresh_token"]
    );
    let authorizations = auth.authorization_requests();
    assert_eq!(authorizations.len(), 1);
    assert_eq!(
        authorizations[0].scope.as_deref(),
        Some("mcp:read offline_access")
    );
    // Every key of this client has offline_access: the token is found for the resource with
    // no second authorization or token request.
    let token = cache.token_for(&Url::parse(&url).unwrap()).await.unwrap();
    assert_eq!(token.requested_scopes().as_str(), "mcp:read offline_access");
    assert_eq!(token.scopes().as_str(), "mcp:read offline_access");
    assert_eq!(auth.requests().len(), 1);
    assert_eq!(auth.authorization_requests().len(), 1);
    assert_eq!(cache.stats().fetches, 1);
}

#[tokio::test]
async fn offline_access_is_not_asked_for_where_the_server_does_not_list_it() {
    let auth = authorization_server(|b| b.dynamic_registration(true)).await;
    let mcp = mcp_server(&auth).await;
    let clients = ClientRegistrar::new()
        .dynamic_registration(dynamic())
        .offline_access(true);
    let http = client(&cache(), clients);
    assert_eq!(get(&http, &mcp.url()).await.unwrap(), 200);
    assert_eq!(
        auth.authorization_requests()[0].scope.as_deref(),
        Some("mcp:read")
    );
}

#[tokio::test]
async fn a_server_that_allows_no_client_is_a_clear_error() {
    let auth = authorization_server(|b| b).await;
    let mcp = mcp_server(&auth).await;
    let clients = ClientRegistrar::new()
        .client_metadata_document(Url::parse(METADATA_DOCUMENT).unwrap())
        .unwrap()
        .dynamic_registration(dynamic());
    let http = client(&cache(), clients);
    let error = get(&http, &mcp.url()).await.unwrap_err();
    assert!(matches!(error, Error::Registration { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(auth.issuer())
            && message.contains("does not support client ID metadata documents")
            && message.contains("has no registration endpoint")
            && message.contains("ClientRegistrar::pre_registered"),
        "{message}"
    );
    assert!(auth.authorization_requests().is_empty());
    assert!(auth.requests().is_empty());
}

#[tokio::test]
async fn a_step_up_authorizes_again_with_the_union_of_scopes() {
    let auth = authorization_server(|b| b.dynamic_registration(true)).await;
    let mcp = mcp_server(&auth).await;
    let http = client(
        &cache(),
        ClientRegistrar::new().dynamic_registration(dynamic()),
    );
    let url = mcp.url();
    assert_eq!(get(&http, &url).await.unwrap(), 200);
    mcp.script(|s| s.scopes_required = vec!["mcp:read".into(), "mcp:write".into()]);
    assert_eq!(get(&http, &url).await.unwrap(), 200);

    let authorizations = auth.authorization_requests();
    assert_eq!(authorizations.len(), 2);
    assert_eq!(
        authorizations[1].scope.as_deref(),
        Some("mcp:read mcp:write")
    );
    assert_eq!(authorizations[1].resources, [mcp.resource()]);
    let statuses: Vec<u16> = mcp
        .requests()
        .iter()
        .filter(|r| r.bearer_presented)
        .map(|r| r.status.as_u16())
        .collect();
    assert_eq!(statuses, [200, 403, 200]);
}

#[tokio::test]
async fn a_server_that_never_grants_the_scope_gets_one_step_up_not_a_loop() {
    let auth = authorization_server(|b| {
        b.dynamic_registration(true)
            .script(|s| s.scope_field = ScopeField::Fixed("mcp:read".into()))
    })
    .await;
    let mcp = mcp_server(&auth).await;
    mcp.script(|s| s.scopes_required = vec!["mcp:read".into(), "mcp:write".into()]);
    let http = client(
        &cache(),
        ClientRegistrar::new().dynamic_registration(dynamic()),
    );
    // The 403 is the answer: the token was asked for with mcp:write and the server granted
    // only mcp:read; asking again would bring the same token back.
    assert_eq!(get(&http, &mcp.url()).await.unwrap(), 403);
    let authorizations = auth.authorization_requests();
    let scopes: Vec<_> = authorizations.iter().map(|a| a.scope.as_deref()).collect();
    assert_eq!(scopes, [Some("mcp:read mcp:write")]);
    let statuses: Vec<u16> = mcp
        .requests()
        .iter()
        .filter(|r| r.bearer_presented)
        .map(|r| r.status.as_u16())
        .collect();
    assert_eq!(statuses, [403]);
}

#[tokio::test]
async fn a_second_server_at_the_same_authorization_server_reuses_the_registered_client() {
    let auth = authorization_server(|b| b.dynamic_registration(true)).await;
    let first = mcp_server(&auth).await;
    let second = ResourceServer::builder(&auth)
        .path("/other")
        .start()
        .await
        .unwrap();
    let http = client(
        &cache(),
        ClientRegistrar::new().dynamic_registration(dynamic()),
    );
    assert_eq!(get(&http, &first.url()).await.unwrap(), 200);
    assert_eq!(get(&http, &second.url()).await.unwrap(), 200);
    assert_eq!(auth.registrations().len(), 1);
    let resources: Vec<_> = auth
        .authorization_requests()
        .iter()
        .map(|a| a.resources.clone())
        .collect();
    assert_eq!(resources, [[first.resource()], [second.resource()]]);
}

/// A resource server of `auth` at `/stranger` that nothing configures, and a cache with the
/// confidential client `svc` configured at `auth` (and `configured` as its resource, if any).
async fn a_stranger_and_a_configured_client(
    auth: &AuthorizationServer,
    configured: Option<&ResourceServer>,
) -> (ResourceServer, TokenCache) {
    let stranger = ResourceServer::builder(auth)
        .path("/stranger")
        .start()
        .await
        .unwrap();
    let mut cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(
            audience_cache::ClientRegistration::new(
                auth.issuer(),
                Url::parse(&auth.token_endpoint()).unwrap(),
                "svc",
            )
            .client_secret_basic("s3cret".into()),
        );
    if let Some(configured) = configured {
        let loopback = audience_cache::ParseOptions::strict().allow_insecure_http_on_loopback(true);
        let resource =
            audience_cache::ResourceUri::parse_with(configured.resource(), &loopback).unwrap();
        cache = cache.resource(audience_cache::ResourceConfig::new(resource, auth.issuer()));
    }
    (stranger, cache.build().unwrap())
}

/// The F10 rule with registration on: a server that names the issuer of a client the user
/// configured does not get that client, even though a new one could be registered there.
#[tokio::test]
async fn a_configured_client_is_not_lent_to_a_discovered_server() {
    let auth = authorization_server(|b| {
        b.client(Client::confidential("svc", "s3cret"))
            .dynamic_registration(true)
    })
    .await;
    let configured = mcp_server(&auth).await;
    let (stranger, cache) = a_stranger_and_a_configured_client(&auth, Some(&configured)).await;
    let http = client(
        &cache,
        ClientRegistrar::new().dynamic_registration(dynamic()),
    );
    let error = get(&http, &stranger.url()).await.unwrap_err();
    assert!(matches!(error, Error::UntrustedIssuer { .. }), "{error:?}");
    assert!(auth.requests().is_empty());
    assert!(auth.registrations().is_empty());
    assert!(stranger.requests().iter().all(|r| !r.bearer_presented));
}

#[tokio::test]
async fn the_middleware_discovers_registers_and_authorizes_too() {
    let auth = authorization_server(|b| b.dynamic_registration(true)).await;
    let mcp = mcp_server(&auth).await;
    let middleware = audience_cache::AudienceMiddleware::new(cache())
        .with_discovery(
            Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true))
                .unwrap(),
            ClientRegistrar::new().dynamic_registration(dynamic()),
        )
        .with_authorization(Arc::new(
            HeadlessAuthorization::new(redirect_uri()).unwrap(),
        ));
    let inner = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(inner)
        .with(middleware)
        .build();
    let response = client.get(mcp.url()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(auth.registrations().len(), 1);
    assert_eq!(auth.authorization_requests().len(), 1);
    assert_eq!(auth.requests().len(), 1);
}

/// A public client allowed at any issuer must not open the door to a configured client: the
/// issuer has to be listed by name.
#[tokio::test]
async fn a_public_client_for_any_issuer_does_not_lend_out_a_configured_one() {
    let auth = authorization_server(|b| b.client(Client::confidential("svc", "s3cret"))).await;
    let (stranger, cache) = a_stranger_and_a_configured_client(&auth, None).await;
    let anywhere = PreRegistered::public("app", redirect_uri()).at_any_issuer_without_a_secret();
    let http = client(&cache, ClientRegistrar::from(anywhere.clone()));
    let error = get(&http, &stranger.url()).await.unwrap_err();
    assert!(matches!(error, Error::UntrustedIssuer { .. }), "{error:?}");
    // The same through the cache's own registration of a discovery.
    let found = Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true))
        .unwrap()
        .discover(&Url::parse(&stranger.url()).unwrap())
        .await
        .unwrap();
    let error = cache.register_discovered(&found, &anywhere).unwrap_err();
    assert!(matches!(error, Error::UntrustedIssuer { .. }), "{error:?}");
    assert_eq!(
        cache.resource_for(&Url::parse(&stranger.url()).unwrap()),
        None
    );
    assert!(auth.requests().is_empty());
    assert!(auth.authorization_requests().is_empty());
}

/// Requests that need an authorization at the same time take the user through it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_authorization() {
    let auth = authorization_server(|b| b.dynamic_registration(true)).await;
    let mcp = mcp_server(&auth).await;
    let http = client(
        &cache(),
        ClientRegistrar::new().dynamic_registration(dynamic()),
    );
    let url = mcp.url();
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { get(&http, &url).await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    assert_eq!(auth.registrations().len(), 1);
    assert_eq!(auth.authorization_requests().len(), 1);
    assert_eq!(
        the_token_request(&auth).grant_type.as_deref(),
        Some("authorization_code")
    );
}
