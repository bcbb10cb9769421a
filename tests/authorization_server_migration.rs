//! A resource whose authorization server changes (RFC 9728 §5.2, MCP SEP-2352), against the
//! embedded servers on 127.0.0.1: the resource server's metadata moves from authorization
//! server A to B at a moment the test chooses. The client re-validates the metadata, gets a
//! client at B (as at first contact, and only where it would have at first contact), and
//! never sends A's tokens or refresh tokens again; a server that keeps moving is an error, not
//! a loop. Every count is taken from the servers' own records.

use std::sync::Arc;

use audience_cache::discovery::DiscoveryError;
use audience_cache::testing::{AuthorizationServer, Client, ResourceServer};
use audience_cache::{
    AuthorizedClient, ClientRegistrar, CredentialStore, Discovery, DiscoveryOptions,
    DynamicRegistration, Error, GrantId, HeadlessAuthorization, MemoryCredentialStore,
    PreRegistered, ResourceUri, TokenCache,
};
use url::Url;

/// Never listened on: the headless handler reads the redirect from `Location`.
fn redirect_uri() -> Url {
    Url::parse("http://127.0.0.1:43221/callback").unwrap()
}

async fn authorization_server() -> AuthorizationServer {
    AuthorizationServer::builder()
        .dynamic_registration(true)
        .client(Client::confidential(
            "pre-registered",
            "pre-registered-secret",
        ))
        .start()
        .await
        .unwrap()
}

async fn mcp_server(auth: &AuthorizationServer) -> ResourceServer {
    ResourceServer::builder(auth)
        .path("/mcp")
        .scopes_required(["mcp:read"])
        .start()
        .await
        .unwrap()
}

fn cache(store: &Arc<MemoryCredentialStore>) -> TokenCache {
    TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .credential_store(store.clone())
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

fn dynamic() -> ClientRegistrar {
    ClientRegistrar::new()
        .dynamic_registration(DynamicRegistration::new("migration tests"))
        .offline_access(true)
}

async fn get(client: &AuthorizedClient, url: &str) -> Result<u16, Error> {
    let response = client.execute(client.get(url).build().unwrap()).await?;
    Ok(response.status().as_u16())
}

/// The fingerprints of the tokens `mcp` received from request `from` on.
fn tokens_seen(mcp: &ResourceServer, from: usize) -> Vec<Option<String>> {
    mcp.requests()[from..]
        .iter()
        .map(|r| r.token_fingerprint.clone())
        .collect()
}

#[tokio::test]
async fn a_resource_that_moves_gets_a_client_at_the_new_server_and_drops_the_old_tokens() {
    let a = authorization_server().await;
    let b = authorization_server().await;
    let mcp = mcp_server(&a).await;
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = cache(&store);
    let http = client(&cache, dynamic());
    let url = format!("{}/tools", mcp.url());

    assert_eq!(get(&http, &url).await.unwrap(), 200);
    assert_eq!(a.registrations().len(), 1);
    assert_eq!(a.authorization_requests().len(), 1);
    assert_eq!(a.requests().len(), 1);
    let a_client = a.registrations()[0].client_id.clone().unwrap();
    let resource = ResourceUri::parse_with(
        mcp.resource(),
        &audience_cache::ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .unwrap();
    let a_grant = GrantId::new(a.issuer(), &a_client, None, &resource);
    assert!(store.load_refresh_token(&a_grant).await.unwrap().is_some());
    let a_token = mcp.requests().last().unwrap().token_fingerprint.clone();
    assert!(a_token.is_some());
    let seen_before = mcp.requests().len();

    mcp.move_to(&b);
    assert_eq!(get(&http, &url).await.unwrap(), 200);

    // Exactly one registration, one authorization and one token request at B, by B's client.
    let registrations = b.registrations();
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    let b_client = registrations[0].client_id.clone().unwrap();
    assert_ne!(b_client, a_client);
    let authorizations = b.authorization_requests();
    assert_eq!(authorizations.len(), 1);
    assert_eq!(
        authorizations[0].client_id.as_deref(),
        Some(b_client.as_str())
    );
    assert_eq!(authorizations[0].resources, [mcp.resource()]);
    let token_requests = b.requests();
    assert_eq!(token_requests.len(), 1, "{token_requests:?}");
    assert_eq!(
        token_requests[0].grant_type.as_deref(),
        Some("authorization_code")
    );
    assert_eq!(
        token_requests[0].client_id.as_deref(),
        Some(b_client.as_str())
    );
    assert!(!token_requests[0].refresh_token_presented);
    // Nothing more at A: no token request, no refresh, no authorization, no registration.
    assert_eq!(a.requests().len(), 1);
    assert_eq!(a.authorization_requests().len(), 1);
    assert_eq!(a.registrations().len(), 1);
    // The resource server saw A's token once more (the request its 401 answered), then B's.
    let seen = tokens_seen(&mcp, seen_before);
    let protected: Vec<_> = mcp.requests()[seen_before..]
        .iter()
        .filter(|r| r.path.ends_with("/tools"))
        .map(|r| (r.token_fingerprint.clone(), r.status.as_u16()))
        .collect();
    assert_eq!(protected.len(), 2, "{protected:?}");
    assert_eq!(protected[0], (a_token.clone(), 401));
    assert_eq!(protected[1].1, 200);
    let b_token = protected[1].0.clone();
    assert_ne!(b_token, a_token);
    assert_eq!(seen.iter().filter(|f| **f == a_token).count(), 1);
    // A's refresh token is gone from the credential store; B's is there.
    assert!(store.load_refresh_token(&a_grant).await.unwrap().is_none());
    let b_grant = GrantId::new(b.issuer(), &b_client, None, &resource);
    assert!(store.load_refresh_token(&b_grant).await.unwrap().is_some());
    assert_eq!(store.refresh_tokens(), 1);
    assert_eq!(cache.stats().authorization_server_moves, 1);

    // Later requests: B's cached token, nobody asked anything.
    let seen_after = mcp.requests().len();
    assert_eq!(get(&http, &url).await.unwrap(), 200);
    assert_eq!(tokens_seen(&mcp, seen_after), [b_token]);
    assert_eq!((a.requests().len(), b.requests().len()), (1, 1));
    assert_eq!(b.registrations().len(), 1);
    // The old token is not in the cache under any scope set: a token for the resource now
    // comes from B.
    let token = cache
        .token(&resource, &audience_cache::ScopeSet::empty())
        .await
        .unwrap();
    assert_eq!(token.key().issuer(), b.issuer());
}

#[tokio::test]
async fn a_server_that_moves_back_within_one_request_is_an_error_not_a_loop() {
    let a = authorization_server().await;
    let b = authorization_server().await;
    // Trusted by the resource server after the first request: neither A nor B, so each
    // token the client brings is answered 401, and the metadata decides where it goes next.
    let elsewhere = authorization_server().await;
    let mcp = mcp_server(&a).await;
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = cache(&store);
    let http = client(&cache, dynamic());
    let url = format!("{}/tools", mcp.url());
    assert_eq!(get(&http, &url).await.unwrap(), 200);
    let a_before = (a.requests().len(), a.authorization_requests().len());

    mcp.move_to(&elsewhere);
    mcp.script(|s| {
        s.next_authorization_servers =
            vec![vec![b.issuer().to_owned()], vec![a.issuer().to_owned()]];
    });
    let error = get(&http, &url).await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Discovery(DiscoveryError::AuthorizationServerMovedAgain { .. })
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(mcp.resource())
            && message.contains(b.issuer())
            && message.contains(a.issuer()),
        "{message}"
    );
    // One move (to B: one registration, one authorization, one token), then the error.
    assert_eq!(b.registrations().len(), 1);
    assert_eq!(b.authorization_requests().len(), 1);
    assert_eq!(b.requests().len(), 1);
    // Nothing more at A: the move back was not followed.
    assert_eq!(
        (a.requests().len(), a.authorization_requests().len()),
        a_before
    );
    assert_eq!(a.registrations().len(), 1);
    assert_eq!(elsewhere.requests().len(), 0);
    assert_eq!(cache.stats().authorization_server_moves, 1);
}

#[tokio::test]
async fn a_pre_registered_client_stays_at_its_issuer_whatever_the_metadata_says() {
    let a = authorization_server().await;
    let b = authorization_server().await;
    let mcp = mcp_server(&a).await;
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = cache(&store);
    // Only a client registered in advance at A, with a secret: no way to register elsewhere.
    let clients = ClientRegistrar::new().pre_registered(
        PreRegistered::confidential("pre-registered", "pre-registered-secret".into())
            .at_issuer(a.issuer()),
    );
    let http = client(&cache, clients);
    let url = format!("{}/tools", mcp.url());
    assert_eq!(get(&http, &url).await.unwrap(), 200);
    assert_eq!(a.requests().len(), 1);

    mcp.move_to(&b);
    let error = get(&http, &url).await.unwrap_err();
    assert!(
        matches!(&error, Error::UntrustedIssuer { issuer, .. } if issuer == b.issuer()),
        "{error:?}"
    );
    // B was asked nothing: no token request (the secret never went there), no registration,
    // no authorization.
    assert_eq!(b.requests().len(), 0);
    assert_eq!(b.registrations().len(), 0);
    assert_eq!(b.authorization_requests().len(), 0);
    assert_eq!(a.requests().len(), 1);
    assert_eq!(cache.stats().authorization_server_moves, 0);
}

#[tokio::test]
async fn metadata_that_describes_another_resource_moves_nothing() {
    let a = authorization_server().await;
    let b = authorization_server().await;
    let mcp = mcp_server(&a).await;
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = cache(&store);
    let http = client(&cache, dynamic());
    let url = format!("{}/tools", mcp.url());
    assert_eq!(get(&http, &url).await.unwrap(), 200);

    mcp.move_to(&b);
    // RFC 9728 §3.3: the document must describe the resource it is fetched for.
    let other = format!("{}/tools", mcp.resource());
    mcp.script(|s| s.metadata_resource = Some(other));
    let error = get(&http, &url).await.unwrap_err();
    assert!(matches!(&error, Error::Discovery(_)), "{error:?}");
    assert_eq!(b.registrations().len(), 0);
    assert_eq!(b.requests().len(), 0);
    assert_eq!(b.authorization_requests().len(), 0);
    assert_eq!(a.requests().len(), 1);
    assert_eq!(cache.stats().authorization_server_moves, 0);
}

#[tokio::test]
async fn a_new_server_whose_metadata_names_another_issuer_is_not_used() {
    let a = authorization_server().await;
    let b = authorization_server().await;
    // RFC 8414 §3.3: B's metadata claims to be someone else's.
    b.script(|s| s.metadata_issuer = Some("https://attacker.example".to_owned()));
    let mcp = mcp_server(&a).await;
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = cache(&store);
    let http = client(&cache, dynamic());
    let url = format!("{}/tools", mcp.url());
    assert_eq!(get(&http, &url).await.unwrap(), 200);

    mcp.move_to(&b);
    let error = get(&http, &url).await.unwrap_err();
    assert!(matches!(&error, Error::Discovery(_)), "{error:?}");
    assert!(error.to_string().contains("attacker.example"), "{error}");
    assert_eq!(b.registrations().len(), 0);
    assert_eq!(b.requests().len(), 0);
    assert_eq!(b.authorization_requests().len(), 0);
    // Nothing moved, nothing dropped: A's grant is still there.
    assert_eq!(store.refresh_tokens(), 1);
    assert_eq!(a.requests().len(), 1);
    assert_eq!(cache.stats().authorization_server_moves, 0);
}

#[tokio::test]
async fn another_resource_of_the_old_server_keeps_its_tokens() {
    let a = authorization_server().await;
    let b = authorization_server().await;
    let moving = mcp_server(&a).await;
    let staying = mcp_server(&a).await;
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = cache(&store);
    let http = client(&cache, dynamic());
    let moving_url = format!("{}/tools", moving.url());
    let staying_url = format!("{}/tools", staying.url());
    assert_eq!(get(&http, &moving_url).await.unwrap(), 200);
    assert_eq!(get(&http, &staying_url).await.unwrap(), 200);
    // One client at A for both; one authorization and one token each.
    assert_eq!(a.registrations().len(), 1);
    assert_eq!(a.requests().len(), 2);
    assert_eq!(store.refresh_tokens(), 2);
    let staying_token = staying.requests().last().unwrap().token_fingerprint.clone();

    moving.move_to(&b);
    assert_eq!(get(&http, &moving_url).await.unwrap(), 200);
    assert_eq!(b.requests().len(), 1);

    // A resource cannot drop another's grant: the one still at A keeps its token and its
    // refresh token, and A is asked nothing.
    let seen = staying.requests().len();
    assert_eq!(get(&http, &staying_url).await.unwrap(), 200);
    assert_eq!(tokens_seen(&staying, seen), [staying_token]);
    assert_eq!(a.requests().len(), 2);
    assert_eq!(a.authorization_requests().len(), 2);
    // A's grant for the resource that stayed, and B's for the one that moved.
    assert_eq!(store.refresh_tokens(), 2);
    assert_eq!(cache.stats().authorization_server_moves, 1);
}

#[tokio::test]
async fn concurrent_requests_after_a_move_make_one_move_between_them() {
    let a = authorization_server().await;
    let b = authorization_server().await;
    let mcp = mcp_server(&a).await;
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = cache(&store);
    let http = client(&cache, dynamic());
    let url = format!("{}/tools", mcp.url());
    assert_eq!(get(&http, &url).await.unwrap(), 200);

    mcp.move_to(&b);
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { get(&http, &url).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 200);
    }
    assert_eq!(b.registrations().len(), 1);
    assert_eq!(b.authorization_requests().len(), 1);
    assert_eq!(b.requests().len(), 1);
    assert_eq!(a.requests().len(), 1);
    assert_eq!(cache.stats().authorization_server_moves, 1);
}

#[tokio::test]
async fn a_resource_whose_client_the_user_configured_is_not_moved() {
    let a = authorization_server().await;
    let b = authorization_server().await;
    let mcp = mcp_server(&a).await;
    let resource = ResourceUri::parse_with(
        mcp.resource(),
        &audience_cache::ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .unwrap();
    // The user named A for the resource: a server cannot move that.
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(
            audience_cache::ClientRegistration::new(
                a.issuer(),
                Url::parse(&a.token_endpoint()).unwrap(),
                "pre-registered",
            )
            .client_secret_basic("pre-registered-secret".into()),
        )
        .resource(
            audience_cache::ResourceConfig::new(resource, a.issuer())
                .scopes(audience_cache::ScopeSet::parse("mcp:read").unwrap()),
        )
        .build()
        .unwrap();
    let http = client(&cache, dynamic());
    let url = format!("{}/tools", mcp.url());
    assert_eq!(get(&http, &url).await.unwrap(), 200);

    mcp.move_to(&b);
    // The 401 is the answer (after the one retry with a new token from A), as before.
    assert_eq!(get(&http, &url).await.unwrap(), 401);
    assert_eq!(b.registrations().len(), 0);
    assert_eq!(b.requests().len(), 0);
    assert_eq!(a.requests().len(), 2);
    assert_eq!(cache.stats().authorization_server_moves, 0);
}

#[cfg(feature = "redis")]
mod redis_support;

/// Another process's cache for the resource at A, with A's dynamically registered client (read
/// from the store the first process shares) and `scopes`, on the shared level alone.
#[cfg(feature = "redis")]
async fn process_at_a(
    a: &AuthorizationServer,
    resource: &ResourceUri,
    store: &MemoryCredentialStore,
    scopes: &str,
    level: audience_cache::SharedLevel,
) -> TokenCache {
    use secrecy::ExposeSecret as _;
    let record = store.load_client(a.issuer()).await.unwrap().unwrap();
    let client: serde_json::Value = serde_json::from_str(record.json().expose_secret()).unwrap();
    let secret = client["client_secret"].as_str().unwrap().to_owned();
    TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(
            audience_cache::ClientRegistration::new(
                a.issuer(),
                Url::parse(&a.token_endpoint()).unwrap(),
                client["client_id"].as_str().unwrap(),
            )
            .client_secret_basic(secret.into())
            .authorization_endpoint(Url::parse(&a.authorization_endpoint()).unwrap())
            .grant(audience_cache::Grant::AuthorizationCode {
                redirect_uri: redirect_uri(),
            }),
        )
        .resource(
            audience_cache::ResourceConfig::new(resource.clone(), a.issuer())
                .scopes(audience_cache::ScopeSet::parse(scopes).unwrap()),
        )
        .shared_level(level)
        .build()
        .unwrap()
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn the_old_servers_tokens_are_gone_from_the_shared_level_too() {
    use audience_cache::{ScopeSet, SealingKey, SharedLevel};
    let redis = redis_support::RedisServer::start();
    let level = || {
        SharedLevel::new(redis.url().as_str(), [SealingKey::new(1, [0x5A; 32])])
            .unwrap()
            .namespace("migration")
            .share_refresh_tokens(true)
    };
    let a = authorization_server().await;
    let b = authorization_server().await;
    let mcp = mcp_server(&a).await;
    // Refresh tokens in Redis alone (a credential store would be a second place for them);
    // the registered client in a store of its own, which the other processes below read.
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .shared_level(level())
        .build()
        .unwrap();
    let clients: Arc<dyn CredentialStore> = store.clone();
    let registrar = ClientRegistrar::new()
        .dynamic_registration(DynamicRegistration::new("migration tests").store(Arc::new(clients)))
        .offline_access(true);
    let http = client(&cache, registrar);
    let url = format!("{}/tools", mcp.url());
    assert_eq!(get(&http, &url).await.unwrap(), 200);
    assert_eq!(a.requests().len(), 1);
    let resource = ResourceUri::parse_with(
        mcp.resource(),
        &audience_cache::ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .unwrap();

    // Before the move, another process with the same client finds A's token in Redis (the
    // same key: the check below is not vacuous).
    let before = process_at_a(&a, &resource, &store, "mcp:read", level()).await;
    before.token(&resource, &ScopeSet::empty()).await.unwrap();
    assert_eq!(before.stats().l2_hits, 1);
    assert_eq!(a.requests().len(), 1);

    mcp.move_to(&b);
    assert_eq!(get(&http, &url).await.unwrap(), 200);
    assert_eq!(cache.stats().authorization_server_moves, 1);

    // After it, a process that still thinks the resource is at A finds neither the access
    // token nor the shared refresh token: it would need a user's authorization, and A is asked
    // nothing (no refresh with the old refresh token).
    let after = process_at_a(&a, &resource, &store, "mcp:read", level()).await;
    let error = after
        .token(&resource, &ScopeSet::empty())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::AuthorizationRequired { .. }),
        "{error:?}"
    );
    assert_eq!(after.stats().l2_hits, 0);
    assert_eq!(a.requests().len(), 1);
    assert_eq!(b.requests().len(), 1);
}

#[tokio::test]
async fn a_token_held_across_a_move_is_refused_by_the_decision() {
    let a = authorization_server().await;
    let b = authorization_server().await;
    let mcp = mcp_server(&a).await;
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = cache(&store);
    let http = client(&cache, dynamic());
    let url = format!("{}/tools", mcp.url());
    assert_eq!(get(&http, &url).await.unwrap(), 200);
    let resource = ResourceUri::parse_with(
        mcp.resource(),
        &audience_cache::ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .unwrap();
    // A caller keeps A's token (an rmcp transport, a long-lived task).
    let held = cache
        .token(&resource, &audience_cache::ScopeSet::empty())
        .await
        .unwrap();
    assert_eq!(held.key().issuer(), a.issuer());
    let url = Url::parse(&url).unwrap();
    assert!(held.header_for(&url).is_ok());
    // And one handed out for this very URL (its allowed decision is remembered for it).
    let decided = cache.token_for(&url).await.unwrap();
    assert!(decided.header_for(&url).is_ok());

    mcp.move_to(&b);
    assert_eq!(get(&http, url.as_str()).await.unwrap(), 200);

    // The resource is B's now: A's token goes nowhere, whoever holds it.
    let refusal = held.header_for(&url).unwrap_err();
    assert!(
        matches!(
            refusal.kind(),
            audience_cache::RefusalKind::IssuedByAnotherServer { .. }
        ),
        "{refusal:?}"
    );
    let message = refusal.to_string();
    assert!(
        message.contains(a.issuer()) && message.contains(b.issuer()),
        "{message}"
    );
    assert!(held.headers_for(&http::Method::GET, &url).is_err());
    assert!(matches!(
        decided.header_for(&url).unwrap_err().kind(),
        audience_cache::RefusalKind::IssuedByAnotherServer { .. }
    ));
    assert_eq!(cache.stats().authorization_server_moves, 1);
}
