//! DPoP (RFC 9449) against a real authorization server: panva/oidc-provider 9.13.3 with its
//! DPoP feature and nonces required of every proof (`tests/interop/oidc-provider/server.mjs`),
//! and a resource server in the same Node harness (`resource_server.mjs`) that takes only
//! DPoP-bound tokens: it verifies the token, the proof (ES256, typ, htm, htu, iat, unique
//! jti, ath, its own nonce) and that the proof's key is the token's `cnf.jkt`. Counts come
//! from both servers' `/_test/stats`.

mod dpop_support;
mod interop_support;

use std::time::Duration;

use audience_cache::{
    AuthorizedClient, ClientRegistration, DpopKey, Grant, ResourceConfig, ResourceUri, ScopeSet,
    TokenCache, TokenCacheBuilder,
};
use interop_support::browser;
use interop_support::server::{AuthServer, Settings};
use interop_support::{jwt, loopback};
use serde_json::Value;
use url::Url;

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The resource server's origin and resource identifier.
async fn resource_server(server: &AuthServer) -> (String, ResourceUri) {
    let info = get(&format!("{}/_test/resource-server", server.issuer())).await;
    let origin = info["origin"].as_str().unwrap().to_owned();
    (origin, loopback(info["resource"].as_str().unwrap()))
}

/// `requests` of `GET {base}/_test/stats`.
async fn requests(base: &str) -> Vec<Value> {
    get(&format!("{base}/_test/stats")).await["requests"]
        .as_array()
        .unwrap()
        .clone()
}

fn builder(
    registration: ClientRegistration,
    resource: &ResourceUri,
    issuer: &str,
) -> TokenCacheBuilder {
    TokenCache::builder()
        .client(registration)
        .resource(ResourceConfig::new(resource.clone(), issuer))
        .allow_insecure_http_on_loopback(true)
        .request_timeout(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_with_dpop_and_nonces_at_both_servers() {
    let server = AuthServer::start().await;
    let (origin, resource) = resource_server(&server).await;
    let key = DpopKey::generate();
    let cache = builder(
        server
            .registration("cc-client")
            .client_secret_basic("cc-secret".into()),
        &resource,
        server.issuer(),
    )
    .dpop_key(key.clone())
    .use_dpop_for(resource.clone())
    .build()
    .unwrap();
    let client = AuthorizedClient::new(cache.clone()).unwrap();
    let target = format!("{}/tools/list?page=2", resource.wire());
    let response = client
        .execute(client.get(&target).build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", server.log());

    // The token endpoint: the first proof is answered use_dpop_nonce, the retry has the nonce.
    let token_requests = requests(server.issuer()).await;
    assert_eq!(token_requests.len(), 2, "{token_requests:?}");
    assert_eq!(token_requests[0]["status"], 400);
    assert_eq!(token_requests[0]["error"], "use_dpop_nonce");
    assert_eq!(token_requests[0]["dpop_nonce"], false);
    assert_eq!(token_requests[1]["status"], 200);
    assert_eq!(token_requests[1]["dpop_nonce"], true);
    for request in &token_requests {
        assert_eq!(request["dpop_jkt"], key.thumbprint());
    }
    // The token is bound to the key.
    let token = cache.token(&resource, &ScopeSet::empty()).await.unwrap();
    assert!(token.is_dpop_bound());
    assert_eq!(jwt(token.expose_secret()).1["cnf"]["jkt"], key.thumbprint());

    // The resource server: its own nonce, one retry; htm, htu (no query), ath, the key.
    let seen = requests(&origin).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["error"], "use_dpop_nonce");
    assert_eq!(seen[1]["status"], 200);
    for request in &seen {
        assert_eq!(request["scheme"], "DPoP");
        assert_eq!(request["htm"], "GET");
        assert_eq!(request["htu"], format!("{}/tools/list", resource.wire()));
        assert_eq!(request["ath_ok"], true);
        assert_eq!(request["jkt"], key.thumbprint());
        assert_eq!(request["cnf_jkt"], key.thumbprint());
    }

    // Both nonces are remembered: a POST goes through at once, with no token request.
    let response = client
        .execute(client.post(resource.wire()).body("{}").build().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = requests(&origin).await;
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2]["htm"], "POST");
    assert_eq!(seen[2]["htu"], resource.wire());
    assert_eq!(requests(server.issuer()).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_key_a_is_refused_with_key_bs_proof() {
    let server = AuthServer::start().await;
    let (origin, resource) = resource_server(&server).await;
    let key_a = DpopKey::from_pkcs8_pem(dpop_support::PEM_A).unwrap();
    let cache = builder(
        server
            .registration("cc-client")
            .client_secret_basic("cc-secret".into()),
        &resource,
        server.issuer(),
    )
    .dpop_key(key_a.clone())
    .require_dpop_for(resource.clone())
    .build()
    .unwrap();
    let token = cache.token(&resource, &ScopeSet::empty()).await.unwrap();
    let secret = token.expose_secret().to_owned();
    let http = reqwest::Client::new();
    let htu = resource.wire().to_owned();
    let send = |proof: String| {
        http.get(&htu)
            .header("authorization", format!("DPoP {secret}"))
            .header("dpop", proof)
            .send()
    };
    // The resource server's nonce, from its answer to a proof without one.
    let a = dpop_support::key_a();
    let first = send(dpop_support::proof(&a, "GET", &htu, Some(&secret), None))
        .await
        .unwrap();
    assert_eq!(first.status(), 401);
    let nonce = first.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    // Key B's proof, right in every other way: refused for the key.
    let b = dpop_support::other_key();
    let refused = send(dpop_support::proof(
        &b,
        "GET",
        &htu,
        Some(&secret),
        Some(&nonce),
    ))
    .await
    .unwrap();
    assert_eq!(refused.status(), 401);
    // Key A's: accepted.
    let accepted = send(dpop_support::proof(
        &a,
        "GET",
        &htu,
        Some(&secret),
        Some(&nonce),
    ))
    .await
    .unwrap();
    assert_eq!(accepted.status(), 200);
    let seen = requests(&origin).await;
    let outcomes: Vec<(Value, Value)> = seen
        .iter()
        .map(|r| (r["status"].clone(), r["error"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (401.into(), "use_dpop_nonce".into()),
            (401.into(), "invalid_token".into()),
            (200.into(), Value::Null),
        ]
    );
    assert_eq!(seen[1]["jkt"], dpop_support::jkt_of(&b));
    assert_eq!(seen[1]["cnf_jkt"], key_a.thumbprint());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_client_refreshes_its_bound_refresh_token_with_the_same_key() {
    let server = AuthServer::start_with(Settings {
        access_token_ttl: Some(2),
    })
    .await;
    let (_origin, resource) = resource_server(&server).await;
    let key = DpopKey::generate();
    let redirect_uri = Url::parse("http://127.0.0.1:8976/callback").unwrap();
    let cache = builder(
        server
            .registration("code-client")
            .grant(Grant::AuthorizationCode {
                redirect_uri: redirect_uri.clone(),
            }),
        &resource,
        server.issuer(),
    )
    .dpop_key(key.clone())
    .use_dpop_for(resource.clone())
    .skew(Duration::from_secs(1))
    .refresh_ahead(Duration::ZERO)
    .build()
    .unwrap();
    let scopes = ScopeSet::parse("mcp:read").unwrap();
    let pending = cache.begin_authorization(&resource, &scopes).unwrap();
    let redirect = browser::authorize(pending.url(), &redirect_uri).await;
    let first = cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    assert!(first.is_dpop_bound());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refreshed = cache.token(&resource, &scopes).await.unwrap();
    assert!(refreshed.is_dpop_bound());
    assert!(!refreshed.same_token_as(&first));
    assert_eq!(
        jwt(refreshed.expose_secret()).1["cnf"]["jkt"],
        key.thumbprint()
    );
    let token_requests = requests(server.issuer()).await;
    let grants: Vec<(String, u64)> = token_requests
        .iter()
        .map(|r| {
            (
                r["grant_type"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    // Each grant: a nonce challenge, then the request with it (the nonce may be renewed
    // between the two grants, which then costs one more challenge).
    assert_eq!(
        grants.first(),
        Some(&("authorization_code".to_owned(), 400))
    );
    assert_eq!(grants.last(), Some(&("refresh_token".to_owned(), 200)));
    assert!(grants.contains(&("authorization_code".to_owned(), 200)));
    assert!(grants.len() <= 4, "{grants:?}");
    for request in &token_requests {
        assert_eq!(request["dpop_jkt"], key.thumbprint());
    }
}
