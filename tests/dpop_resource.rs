//! DPoP (RFC 9449 §7) at resource servers: a bound token goes as `Authorization: DPoP` with
//! a proof made for that exact hop, after the decision; nonces; a resource that asks for
//! DPoP; a token bound to one key refused with another key's proof. Against the embedded
//! servers on 127.0.0.1, counted from their records.

mod dpop_support;

use audience_cache::testing::{AuthorizationServer, Client, Redirect, ResourceServer};
use audience_cache::{
    AuthorizedClient, BuildError, ClientRegistration, Discovery, DiscoveryOptions, DpopKey, Error,
    ParseOptions, PreRegistered, ResourceConfig, ResourceUri, ScopeSet, TokenCache,
    TokenCacheBuilder,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest as _;
use url::Url;

fn resource(uri: &str) -> ResourceUri {
    ResourceUri::parse_with(
        uri,
        &ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .unwrap()
}

fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))
}

struct World {
    auth: AuthorizationServer,
    rs: ResourceServer,
}

/// An authorization server, and a resource server at `/mcp` that requires DPoP.
async fn world() -> World {
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
    World { auth, rs }
}

impl World {
    /// A cache for `svc` with the resource configured (DPoP not named for it).
    fn builder(&self) -> TokenCacheBuilder {
        TokenCache::builder()
            .allow_insecure_http_on_loopback(true)
            .client(
                ClientRegistration::new(
                    self.auth.issuer(),
                    Url::parse(&self.auth.token_endpoint()).unwrap(),
                    "svc",
                )
                .client_secret_basic("s3cret".into()),
            )
            .resource(ResourceConfig::new(
                resource(self.rs.resource()),
                self.auth.issuer(),
            ))
    }

    fn cache(&self, key: &DpopKey) -> TokenCache {
        self.builder()
            .dpop_key(key.clone())
            .use_dpop_for(resource(self.rs.resource()))
            .build()
            .unwrap()
    }
}

#[tokio::test]
async fn a_bound_token_goes_with_a_proof_for_each_requests_method_and_url() {
    let world = world().await;
    let key = DpopKey::generate();
    let cache = world.cache(&key);
    let client = AuthorizedClient::new(cache.clone()).unwrap();
    let get = format!("{}/tools?cursor=2", world.rs.url());
    let response = client
        .execute(client.get(&get).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .execute(client.post(&world.rs.url()).body("{}").build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let token = cache
        .token(&resource(world.rs.resource()), &ScopeSet::empty())
        .await
        .unwrap();
    assert!(token.is_dpop_bound());
    let requests = world.rs.requests();
    assert_eq!(requests.len(), 2);
    let expected = [
        ("GET", format!("{}/tools", world.rs.url())),
        ("POST", world.rs.url()),
    ];
    for (record, (method, htu)) in requests.iter().zip(expected) {
        assert!(record.dpop_presented && !record.bearer_presented);
        let proof = record.dpop.as_ref().unwrap();
        assert!(proof.valid, "{:?}", proof.problem);
        assert_eq!(proof.htm, method);
        assert_eq!(proof.htu, htu, "no query");
        assert_eq!(
            proof.ath.as_deref(),
            Some(ath(token.expose_secret()).as_str())
        );
        assert_eq!(proof.jkt, key.thumbprint());
        assert_eq!(record.status, 200);
    }
    assert_eq!(world.auth.token_requests(), 1);
}

#[tokio::test]
async fn each_redirect_hop_gets_its_own_proof_for_its_own_url() {
    let world = world().await;
    world
        .rs
        .script(|s| s.redirects.push(Redirect::temporary("/mcp", "/mcp/v2")));
    let key = DpopKey::generate();
    let client = AuthorizedClient::new(world.cache(&key)).unwrap();
    let response = client
        .execute(client.get(&world.rs.url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let requests = world.rs.requests();
    assert_eq!(requests.len(), 2);
    let htus: Vec<String> = requests
        .iter()
        .map(|r| r.dpop.as_ref().unwrap().htu.clone())
        .collect();
    assert_eq!(htus, [world.rs.url(), format!("{}/v2", world.rs.url())]);
    // The second proof passed the server's replay check: a new jti.
    assert!(requests.iter().all(|r| r.dpop.as_ref().unwrap().valid));
}

#[tokio::test]
async fn a_nonce_challenge_is_retried_once_and_the_nonce_kept_for_the_origin() {
    let world = world().await;
    world
        .rs
        .script(|s| s.dpop_nonce = Some("rs-nonce-1".to_owned()));
    let client = AuthorizedClient::new(world.cache(&DpopKey::generate())).unwrap();
    let send = || async {
        client
            .execute(client.get(&world.rs.url()).build().unwrap())
            .await
            .unwrap()
            .status()
    };
    assert_eq!(send().await, 200);
    let requests = world.rs.requests();
    assert_eq!(requests.len(), 2, "one request and one retry");
    assert_eq!(requests[0].status, 401);
    assert_eq!(requests[0].dpop.as_ref().unwrap().nonce, None);
    assert_eq!(
        requests[1].dpop.as_ref().unwrap().nonce.as_deref(),
        Some("rs-nonce-1")
    );
    // Remembered: the next request carries it at once.
    assert_eq!(send().await, 200);
    assert_eq!(world.rs.requests().len(), 3);
    assert_eq!(world.auth.token_requests(), 1, "the token was kept");
}

#[tokio::test]
async fn a_second_nonce_challenge_is_answered_to_the_caller_not_retried() {
    let world = world().await;
    world.rs.script(|s| {
        s.dpop_nonce = Some("first".to_owned());
        s.rotate_dpop_nonce = true;
    });
    let client = AuthorizedClient::new(world.cache(&DpopKey::generate())).unwrap();
    let request = client.get(&world.rs.url()).build().unwrap();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(20), client.execute(request))
            .await
            .expect("no loop")
            .unwrap();
    assert_eq!(response.status(), 401);
    let requests = world.rs.requests();
    assert_eq!(requests.len(), 2, "one request and one retry, no more");
    assert_eq!(
        requests[1].dpop.as_ref().unwrap().nonce.as_deref(),
        Some("first")
    );
    assert_eq!(world.auth.token_requests(), 1);
}

#[tokio::test]
async fn a_hop_to_a_url_the_resource_does_not_cover_carries_no_token_and_no_proof() {
    let world = world().await;
    world
        .rs
        .script(|s| s.redirects.push(Redirect::temporary("/mcp", "/elsewhere")));
    let client = AuthorizedClient::new(world.cache(&DpopKey::generate())).unwrap();
    let response = client
        .execute(client.get(&world.rs.url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let requests = world.rs.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].dpop_presented && requests[0].dpop.is_some());
    assert_eq!(requests[1].path, "/elsewhere");
    assert!(!requests[1].dpop_presented && !requests[1].bearer_presented);
    assert_eq!(
        requests[1].dpop, None,
        "no proof left over from the first hop"
    );
}

#[tokio::test]
async fn a_resource_that_challenges_with_dpop_gets_a_bound_token_on_the_retry() {
    let world = world().await;
    let key = DpopKey::generate();
    // The resource is not named for DPoP: its DPoP-only challenge asks for it.
    let cache = world.builder().dpop_key(key.clone()).build().unwrap();
    let client = AuthorizedClient::new(cache).unwrap();
    let response = client
        .execute(client.get(&world.rs.url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let requests = world.rs.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].bearer_presented && requests[0].dpop.is_none());
    assert_eq!(requests[0].status, 401);
    assert!(requests[1].dpop_presented);
    assert_eq!(requests[1].dpop.as_ref().unwrap().jkt, key.thumbprint());
    let token_requests = world.auth.requests();
    assert_eq!(token_requests.len(), 2);
    assert!(token_requests[0].dpop.is_none());
    assert!(token_requests[1].dpop.as_ref().unwrap().valid);
}

#[tokio::test]
async fn a_resource_that_challenges_with_dpop_without_a_key_is_an_error_naming_the_setting() {
    let world = world().await;
    let client = AuthorizedClient::new(world.builder().build().unwrap()).unwrap();
    let error = client
        .execute(client.get(&world.rs.url()).build().unwrap())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, Error::Configuration(BuildError::Setting { .. })),
        "{error:?}"
    );
    assert!(message.contains("TokenCacheBuilder::dpop_key"), "{message}");
    assert_eq!(world.rs.requests().len(), 1);
    assert_eq!(world.auth.token_requests(), 1);
}

#[tokio::test]
async fn a_discovered_resource_whose_metadata_requires_dpop_gets_a_bound_token_at_once() {
    let world = world().await;
    let key = DpopKey::generate();
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .dpop_key(key.clone())
        .build()
        .unwrap();
    let client = AuthorizedClient::new(cache).unwrap().with_discovery(
        Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true)).unwrap(),
        PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(world.auth.issuer()),
    );
    let response = client
        .execute(client.get(&world.rs.url()).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // One token request, with a proof: the metadata said so before any token was fetched.
    let token_requests = world.auth.requests();
    assert_eq!(token_requests.len(), 1);
    assert_eq!(
        token_requests[0].dpop.as_ref().unwrap().jkt,
        key.thumbprint()
    );
    // The probe, the metadata, the request with its proof.
    let requests = world.rs.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[2].dpop_presented && requests[2].dpop.as_ref().unwrap().valid);
}

#[tokio::test]
async fn headers_for_makes_the_decision_then_the_proof() {
    let world = world().await;
    let key = DpopKey::generate();
    let cache = world.cache(&key);
    let token = cache
        .token(&resource(world.rs.resource()), &ScopeSet::empty())
        .await
        .unwrap();
    let url = Url::parse(&format!("{}/tools?q=1", world.rs.url())).unwrap();
    let headers = token.headers_for(&http::Method::PUT, &url).unwrap();
    let authorization = headers.authorization().to_str().unwrap().to_owned();
    assert!(authorization.starts_with("DPoP "));
    assert!(headers.authorization().is_sensitive());
    let proof = headers.dpop().unwrap().to_str().unwrap().to_owned();
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(proof.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["htm"], "PUT");
    assert_eq!(claims["htu"], format!("{}/tools", world.rs.url()));
    assert_eq!(claims["ath"], ath(token.expose_secret()));
    assert!(!format!("{headers:?}").contains(token.expose_secret()));
    // Another origin: refused, and no proof is made for it.
    let elsewhere = Url::parse("https://elsewhere.example/mcp").unwrap();
    assert!(token.headers_for(&http::Method::GET, &elsewhere).is_err());
    // The headers work at the resource server, through a plain reqwest client.
    let mut request = reqwest::Client::new().put(url.as_str()).build().unwrap();
    headers.apply(request.headers_mut());
    let response = reqwest::Client::new().execute(request).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_token_bound_to_key_a_is_refused_with_key_bs_proof() {
    let world = world().await;
    let key_a = DpopKey::from_pkcs8_pem(dpop_support::PEM_A).unwrap();
    let cache = world.cache(&key_a);
    let token = cache
        .token(&resource(world.rs.resource()), &ScopeSet::empty())
        .await
        .unwrap();
    let secret = token.expose_secret().to_owned();
    let http = reqwest::Client::new();
    let send = |proof: String| {
        http.get(world.rs.url())
            .header("authorization", format!("DPoP {secret}"))
            .header("dpop", proof)
            .send()
    };
    let htu = world.rs.url();
    // Key B's proof, right in every other way (method, URL, ath): refused.
    let b = dpop_support::other_key();
    let refused = send(dpop_support::proof(&b, "GET", &htu, Some(&secret), None))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains("another DPoP key"),
        "{challenge}"
    );
    // The same proof by key A is accepted: the key is what was refused.
    let a = dpop_support::key_a();
    let accepted = send(dpop_support::proof(&a, "GET", &htu, Some(&secret), None))
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    // And as a bearer token, without a proof: refused.
    let bearer = http
        .get(world.rs.url())
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 401);
    let jkts: Vec<Option<String>> = world
        .rs
        .requests()
        .iter()
        .map(|r| r.dpop.as_ref().map(|p| p.jkt.clone()))
        .collect();
    assert_eq!(
        jkts,
        [
            Some(dpop_support::jkt_of(&b)),
            Some(key_a.thumbprint().to_owned()),
            None
        ]
    );
}

#[tokio::test]
async fn a_resource_whose_metadata_lists_no_algorithm_of_the_key_is_refused_before_any_proof() {
    let world = world().await;
    world
        .rs
        .script(|s| s.dpop_signing_algs = vec!["RS256".into(), "PS256".into()]);
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .dpop_key(DpopKey::generate())
        .build()
        .unwrap();
    let client = AuthorizedClient::new(cache).unwrap().with_discovery(
        Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true)).unwrap(),
        PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(world.auth.issuer()),
    );
    let error = client
        .execute(client.get(&world.rs.url()).build().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("the resource {}", world.rs.resource()))
            && error.contains(r#""RS256", "PS256""#)
            && error.contains("dpop_key")
            && error.contains("ES256"),
        "{error}"
    );
    // Nothing was asked for: no token request, no proof.
    assert_eq!(world.auth.requests().len(), 0);
    // The probe and the metadata only.
    assert_eq!(world.rs.requests().len(), 2);
}
