//! A DPoP key per client registration (RFC 9449): each authorization server's client proves
//! with its own key, its tokens are bound to that key and sent with proofs by that key, and a
//! registration's own key, the cache's shared one and generated ones combine as documented.
//! Against two embedded authorization servers and their resource servers on 127.0.0.1, with
//! counts and thumbprints from the servers' own records.

use std::sync::Arc;

use audience_cache::testing::{AuthorizationServer, Client, ClientAuthMethod, ResourceServer};
use audience_cache::{
    AuthorizedClient, BuildError, ClientRegistrar, ClientRegistration, ClientStore, Discovery,
    DiscoveryOptions, DpopKey, DynamicRegistration, Error, HeadlessAuthorization,
    MemoryCredentialStore, ParseOptions, PreRegistered, ResourceConfig, ResourceUri, TokenCache,
    TokenCacheBuilder,
};
use url::Url;

fn resource(uri: &str) -> ResourceUri {
    ResourceUri::parse_with(
        uri,
        &ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .unwrap()
}

/// One authorization server with the client `svc`, and its resource server at `/mcp`, which
/// requires DPoP-bound tokens.
struct Site {
    auth: AuthorizationServer,
    rs: ResourceServer,
}

async fn site() -> Site {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .start()
        .await
        .unwrap();
    let rs = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    rs.script(|s| s.dpop_required = true);
    Site { auth, rs }
}

impl Site {
    fn registration(&self) -> ClientRegistration {
        ClientRegistration::new(
            self.auth.issuer(),
            Url::parse(&self.auth.token_endpoint()).unwrap(),
            "svc",
        )
        .client_secret_basic("s3cret".into())
    }

    fn resource(&self) -> ResourceUri {
        resource(self.rs.resource())
    }

    fn config(&self) -> ResourceConfig {
        ResourceConfig::new(self.resource(), self.auth.issuer())
    }

    /// The thumbprints of the keys that signed this server's token requests, in order; every
    /// proof valid.
    fn token_request_keys(&self) -> Vec<String> {
        self.auth
            .requests()
            .iter()
            .map(|r| {
                let proof = r.dpop.as_ref().expect("a token request without a proof");
                assert!(proof.valid, "{:?}", proof.problem);
                proof.jkt.clone()
            })
            .collect()
    }

    /// The thumbprints of the keys that signed the proofs of the requests to `/mcp` this
    /// resource server answered 200, in order.
    fn resource_request_keys(&self) -> Vec<String> {
        self.rs
            .requests()
            .iter()
            .filter(|r| r.path == "/mcp" && r.status == 200)
            .map(|r| {
                assert!(
                    r.dpop_presented,
                    "a bound token went without the DPoP scheme"
                );
                let proof = r.dpop.as_ref().expect("a request without a proof");
                assert!(proof.valid, "{:?}", proof.problem);
                proof.jkt.clone()
            })
            .collect()
    }
}

/// Two sites, a cache for both (built by `build` from a builder with both resources, DPoP
/// required for each), one request to each through an `AuthorizedClient`.
async fn two_sites(
    registrations: impl FnOnce(&Site, &Site) -> (ClientRegistration, ClientRegistration),
    build: impl FnOnce(TokenCacheBuilder) -> TokenCacheBuilder,
) -> (Site, Site) {
    let (a, b) = (site().await, site().await);
    let (reg_a, reg_b) = registrations(&a, &b);
    let cache = build(
        TokenCache::builder()
            .allow_insecure_http_on_loopback(true)
            .client(reg_a)
            .client(reg_b)
            .resource(a.config())
            .resource(b.config())
            .require_dpop_for(a.resource())
            .require_dpop_for(b.resource()),
    )
    .build()
    .unwrap();
    let client = AuthorizedClient::new(cache).unwrap();
    for site in [&a, &b] {
        for _ in 0..2 {
            let response = client
                .execute(client.get(&site.rs.url()).build().unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    (a, b)
}

#[tokio::test]
async fn each_client_registration_proves_with_its_own_key() {
    let (key_a, key_b) = (DpopKey::generate(), DpopKey::generate());
    let (a, b) = two_sites(
        |a, b| {
            (
                a.registration().dpop_key(key_a.clone()),
                b.registration().dpop_key(key_b.clone()),
            )
        },
        |builder| builder,
    )
    .await;
    // One token request per key, each signed with its client's key; each resource request's
    // proof by the key its token is bound to (the resource server checks `cnf.jkt`).
    assert_eq!(a.token_request_keys(), [key_a.thumbprint()]);
    assert_eq!(b.token_request_keys(), [key_b.thumbprint()]);
    assert_eq!(
        a.resource_request_keys(),
        [key_a.thumbprint(), key_a.thumbprint()]
    );
    assert_eq!(
        b.resource_request_keys(),
        [key_b.thumbprint(), key_b.thumbprint()]
    );
}

#[tokio::test]
async fn generated_keys_differ_between_authorization_servers() {
    let (a, b) = two_sites(
        |a, b| (a.registration(), b.registration()),
        TokenCacheBuilder::generate_dpop_keys,
    )
    .await;
    let (jkt_a, jkt_b) = (a.token_request_keys(), b.token_request_keys());
    assert_eq!((jkt_a.len(), jkt_b.len()), (1, 1));
    assert_ne!(jkt_a, jkt_b, "two authorization servers saw one key");
    assert_eq!(a.resource_request_keys(), [&*jkt_a[0], &*jkt_a[0]]);
    assert_eq!(b.resource_request_keys(), [&*jkt_b[0], &*jkt_b[0]]);
}

#[tokio::test]
async fn a_registrations_own_key_goes_before_the_caches_shared_one() {
    let (own, shared) = (DpopKey::generate(), DpopKey::generate());
    let (a, b) = two_sites(
        |a, b| (a.registration().dpop_key(own.clone()), b.registration()),
        |builder| builder.dpop_key(shared.clone()),
    )
    .await;
    assert_eq!(a.token_request_keys(), [own.thumbprint()]);
    assert_eq!(b.token_request_keys(), [shared.thumbprint()]);
    assert_eq!(
        b.resource_request_keys(),
        [shared.thumbprint(), shared.thumbprint()]
    );
}

#[tokio::test]
async fn a_shared_key_and_generated_keys_together_are_refused_at_build() {
    let key = DpopKey::generate();
    for builder in [
        TokenCache::builder()
            .dpop_key(key.clone())
            .generate_dpop_keys(),
        TokenCache::builder()
            .generate_dpop_keys()
            .dpop_key(key.clone()),
    ] {
        let error = builder.build().unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(
                error,
                BuildError::Setting {
                    setting: "dpop_key",
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(
            message.contains("TokenCacheBuilder::dpop_key")
                && message.contains("TokenCacheBuilder::generate_dpop_keys"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_resource_named_for_dpop_whose_client_has_no_key_is_refused_at_build() {
    let (a, b) = (site().await, site().await);
    // A's client has a key; B's resource is named for DPoP, and B's client has none.
    let error = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(a.registration().dpop_key(DpopKey::generate()))
        .client(b.registration())
        .resource(a.config())
        .resource(b.config())
        .require_dpop_for(a.resource())
        .require_dpop_for(b.resource())
        .build()
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(b.rs.resource()) && message.contains("ClientRegistration::dpop_key"),
        "{message}"
    );
    assert!(!message.contains(a.rs.resource()), "{message}");
}

fn discovering(cache: TokenCache, client: PreRegistered) -> AuthorizedClient {
    AuthorizedClient::new(cache).unwrap().with_discovery(
        Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true)).unwrap(),
        client,
    )
}

#[tokio::test]
async fn a_pre_registered_clients_key_is_used_at_the_issuer_discovery_finds() {
    let site = site().await;
    let own = DpopKey::generate();
    // The cache would generate a key; the pre-registered client's own goes first.
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .generate_dpop_keys()
        .build()
        .unwrap();
    let client = discovering(
        cache,
        PreRegistered::client_secret_basic("svc", "s3cret".into())
            .at_issuer(site.auth.issuer())
            .dpop_key(own.clone()),
    );
    let response = client
        .execute(client.get(&site.rs.url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(site.token_request_keys(), [own.thumbprint()]);
    assert_eq!(site.resource_request_keys(), [own.thumbprint()]);
}

#[tokio::test]
async fn a_dpop_only_challenge_at_first_contact_gets_a_bound_token_at_once() {
    let site = site().await;
    // The metadata says nothing of DPoP: only the 401 offers the DPoP scheme alone.
    site.rs.script(|s| s.dpop_required_in_metadata = false);
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .generate_dpop_keys()
        .build()
        .unwrap();
    let client = discovering(
        cache,
        PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(site.auth.issuer()),
    );
    let response = client
        .execute(client.get(&site.rs.url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // One token request, with a proof; no bearer token was fetched or presented.
    let keys = site.token_request_keys();
    assert_eq!(keys.len(), 1);
    let requests = site.rs.requests();
    assert!(requests.iter().all(|r| !r.bearer_presented));
    // The probe (401), the metadata, the request with its proof.
    assert_eq!(requests.len(), 3);
    assert_eq!(site.resource_request_keys(), [&*keys[0]]);
}

#[tokio::test]
async fn a_dpop_only_challenge_at_first_contact_without_a_key_names_the_settings() {
    let site = site().await;
    site.rs.script(|s| s.dpop_required_in_metadata = false);
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap();
    let client = discovering(
        cache,
        PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(site.auth.issuer()),
    );
    let error = client
        .execute(client.get(&site.rs.url()).build().unwrap())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, Error::Configuration(BuildError::Setting { .. })),
        "{error:?}"
    );
    assert!(
        message.contains("PreRegistered::dpop_key")
            && message.contains("TokenCacheBuilder::generate_dpop_keys"),
        "{message}"
    );
    // Nothing was asked for without the proof the resource requires.
    assert_eq!(site.auth.token_requests(), 0);
}

/// A cache that generates DPoP keys, on `store`, reaching servers through discovery and
/// dynamic registration, authorizing headlessly (the embedded server approves at once).
fn registering_client(store: Arc<MemoryCredentialStore>) -> AuthorizedClient {
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .generate_dpop_keys()
        .credential_store(store)
        .build()
        .unwrap();
    AuthorizedClient::new(cache)
        .unwrap()
        .with_discovery(
            Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true))
                .unwrap(),
            ClientRegistrar::new().dynamic_registration(DynamicRegistration::new("dpop keys")),
        )
        .with_authorization(Arc::new(
            HeadlessAuthorization::new(Url::parse("http://127.0.0.1:43219/callback").unwrap())
                .unwrap(),
        ))
}

#[tokio::test]
async fn a_registered_clients_generated_key_survives_a_restart_with_its_refresh_token() {
    // A public client (RFC 9449 §5: its refresh token is bound to the key).
    let auth = AuthorizationServer::builder()
        .script(|s| s.advertise_pkce = true)
        .dynamic_registration(true)
        .token_endpoint_auth_methods([ClientAuthMethod::None])
        .start()
        .await
        .unwrap();
    let rs = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    rs.script(|s| s.dpop_required = true);
    let site = Site { auth, rs };
    let store = Arc::new(MemoryCredentialStore::default());

    let first = registering_client(store.clone());
    let response = first
        .execute(first.get(&site.rs.url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let key = site.token_request_keys();
    assert_eq!(key.len(), 1);
    drop(first);

    // The restart: a new cache on the same store, nothing in memory.
    let second = registering_client(store.clone());
    let response = second
        .execute(second.get(&site.rs.url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // No new registration, no new authorization: the refresh token, proved with the key the
    // client was registered with.
    assert_eq!(site.auth.registrations().len(), 1);
    assert_eq!(site.auth.authorization_requests().len(), 1);
    let grants: Vec<String> = site
        .auth
        .requests()
        .into_iter()
        .map(|r| r.grant_type.unwrap_or_default())
        .collect();
    assert_eq!(grants, ["authorization_code", "refresh_token"]);
    assert_eq!(site.token_request_keys(), [&*key[0], &*key[0]]);
    assert_eq!(site.resource_request_keys(), [&*key[0], &*key[0]]);
    // The key is kept with the client, and never shown.
    let stored = ClientStore::load(&*store, site.auth.issuer())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.has_dpop_key());
    assert!(!format!("{stored:?}").contains("PRIVATE KEY"));
}
