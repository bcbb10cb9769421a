//! `private_key_jwt` client authentication (RFC 7523 §2.2) against the in-process
//! authorization server, which verifies each assertion's signature, claims and `jti`.
#![cfg(feature = "private-key-jwt")]

mod support;

use audience_cache::testing::{AuthorizationServer, Client, ClientAuthMethod};
use audience_cache::{ClientAssertionKey, ClientRegistration, Error, ResourceConfig, TokenCache};
use support::{API, ISSUER, MCP, resource, token_endpoint, url};

/// Test keys (P-256, PKCS #8), made with `openssl genpkey -algorithm EC -pkeyopt
/// ec_paramgen_curve:P-256`.
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXS5rZe1ng3AOXB+s
6fPj+OiyYW8Mke7ApcJ99ybzrQ6hRANCAARNMoNJhlu7atphNPfiJR2t+FfBNIIv
tj/zL5S3Xt9IvahWoa+z9o5GH7KaI4AnUZEo3VpcYspyulkNgKkbSMjS
-----END PRIVATE KEY-----";
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgP8DVoyfY0rH54v1F
GZdQwkaDaOJw3wXMg1eCWE5dAkuhRANCAAQK34miSUfe/RD2OLQ64Q4HOZvDJ00c
iBUL8ZaEdrg25Ryqbi7DutbyHSFbc4ZB7SR6HFR1v2ZhEl015eSQS3me
-----END PRIVATE KEY-----";

fn key() -> ClientAssertionKey {
    ClientAssertionKey::from_pkcs8_pem(KEY).unwrap()
}

fn server() -> AuthorizationServer {
    AuthorizationServer::builder()
        .client(Client::private_key_jwt("svc", &key().public_jwk()).unwrap())
        .in_process()
}

fn cache(server: &AuthorizationServer, key: ClientAssertionKey) -> TokenCache {
    TokenCache::builder()
        .client(ClientRegistration::new(ISSUER, token_endpoint(), "svc").private_key_jwt(key))
        .resource(ResourceConfig::new(resource(MCP), ISSUER))
        .resource(ResourceConfig::new(resource(API), ISSUER))
        .in_process(server)
        .build()
        .unwrap()
}

#[tokio::test]
async fn client_credentials_with_a_signed_assertion_and_no_secret() {
    let server = server();
    let cache = cache(&server, key());
    let token = cache
        .token_for(&url(&format!("{MCP}/tools")))
        .await
        .unwrap();
    assert_eq!(token.resource().wire(), MCP);
    // A second token request carries a new assertion (the server refuses a replayed jti).
    cache.token_for(&url(API)).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.client_auth, Some(ClientAuthMethod::PrivateKeyJwt));
        assert_eq!(request.client_id.as_deref(), Some("svc"));
        assert_eq!(request.status.map(|s| s.as_u16()), Some(200));
    }
    assert_eq!(requests[0].resources, [MCP]);
    assert_eq!(requests[1].resources, [API]);
}

#[tokio::test]
async fn an_assertion_signed_with_another_key_is_refused() {
    let server = server();
    let other = ClientAssertionKey::from_pkcs8_pem(OTHER_KEY).unwrap();
    let cache = cache(&server, other);
    let error = cache.token_for(&url(MCP)).await.unwrap_err();
    assert!(
        matches!(&error, Error::OAuth { error, .. } if error.code == "invalid_client"),
        "{error:?}"
    );
    assert_eq!(
        server.requests()[0].error.as_deref(),
        Some("invalid_client")
    );
}

#[test]
fn the_key_never_shows() {
    let registration =
        ClientRegistration::new(ISSUER, token_endpoint(), "svc").private_key_jwt(key());
    let debug = format!("{registration:?}");
    assert!(debug.contains("private_key_jwt([redacted])"), "{debug}");
    assert!(!debug.contains("MIGH"), "{debug}");
}
