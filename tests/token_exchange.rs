//! RFC 8693 token exchange: an exchanged token is cached for the subject token it was minted
//! from, never for the `account` label alone. Against the embedded server, in process, on
//! paused time; the server's records name each exchange's subject by a fingerprint.

mod support;

use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, Client, fingerprint};
use audience_cache::{BearerToken, Error, ScopeSet, SubjectToken, TokenCache};
use support::*;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// A second confidential client: its client credentials tokens have another `sub`.
const OTHER: &str = "other";

fn empty() -> ScopeSet {
    ScopeSet::empty()
}

/// The server with `svc`, `app` and `other`.
fn server() -> AuthorizationServer {
    AuthorizationServer::builder()
        .client(Client::confidential(SVC, SECRET))
        .client(Client::confidential(OTHER, SECRET))
        .client(Client::public(APP))
        .in_process()
}

/// An access token of `client` (its `sub` is the client id), as a subject token, and the raw
/// token for fingerprints.
async fn subject_of(server: &AuthorizationServer, client: &str) -> (SubjectToken, String) {
    let registration = audience_cache::ClientRegistration::new(ISSUER, token_endpoint(), client)
        .client_secret_basic(secret(SECRET));
    let cache = new_cache(server, registration, [config(API)]);
    let token = cache.token(&resource(API), &empty()).await.unwrap();
    let raw = token.expose_secret().to_owned();
    (SubjectToken::access_token(secret(&raw)), raw)
}

/// The `sub` the server put in `token`.
fn sub(server: &AuthorizationServer, token: &BearerToken) -> String {
    server.validate(token.expose_secret()).unwrap().subject
}

/// The subject fingerprints of the token exchanges the server saw, in order.
fn exchanged_subjects(server: &AuthorizationServer) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.grant_type.as_deref() == Some(TOKEN_EXCHANGE))
        .map(|r| {
            assert_eq!(r.status, Some(http::StatusCode::OK), "{r:?}");
            r.subject_token_fingerprint.unwrap()
        })
        .collect()
}

fn exchange_cache(server: &AuthorizationServer) -> TokenCache {
    new_cache(server, confidential(), [config(MCP)])
}

#[tokio::test(start_paused = true)]
async fn two_subjects_with_one_account_label_get_their_own_tokens() {
    let server = server();
    let (a, a_raw) = subject_of(&server, SVC).await;
    let (b, b_raw) = subject_of(&server, OTHER).await;
    let cache = exchange_cache(&server);
    let mcp = resource(MCP);

    let for_a = cache
        .exchange_token(&mcp, &empty(), a.clone(), "tenant-1")
        .await
        .unwrap();
    let for_b = cache
        .exchange_token(&mcp, &empty(), b, "tenant-1")
        .await
        .unwrap();
    assert!(!for_b.same_token_as(&for_a));
    assert_eq!(sub(&server, &for_a), SVC);
    assert_eq!(sub(&server, &for_b), OTHER);
    assert_eq!(
        exchanged_subjects(&server),
        [fingerprint(&a_raw), fingerprint(&b_raw)]
    );

    // The same subject token again is a hit: no third exchange.
    let again = cache
        .exchange_token(&mcp, &empty(), a, "tenant-1")
        .await
        .unwrap();
    assert!(again.same_token_as(&for_a));
    assert_eq!(exchanged_subjects(&server).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_forged_subject_token_with_a_known_account_is_a_miss() {
    let server = server();
    let (alice, alice_raw) = subject_of(&server, SVC).await;
    let cache = exchange_cache(&server);
    let mcp = resource(MCP);
    cache
        .exchange_token(&mcp, &empty(), alice, "alice")
        .await
        .unwrap();

    let forged = SubjectToken::access_token(secret("not-a-token-at-all"));
    let error = cache
        .exchange_token(&mcp, &empty(), forged, "alice")
        .await
        .expect_err("the forged subject token is sent to the server, which refuses it");
    assert!(
        matches!(&error, Error::OAuth { error, .. } if error.code == "invalid_request"),
        "{error:?}"
    );
    let records: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.grant_type.as_deref() == Some(TOKEN_EXCHANGE))
        .map(|r| (r.subject_token_fingerprint.unwrap(), r.status))
        .collect();
    assert_eq!(
        records,
        [
            (fingerprint(&alice_raw), Some(http::StatusCode::OK)),
            (
                fingerprint("not-a-token-at-all"),
                Some(http::StatusCode::BAD_REQUEST)
            ),
        ]
    );
    // The refusal is the forged token's: the key it backs off is not Alice's.
    let alice = SubjectToken::access_token(secret(&alice_raw));
    let hit = cache.exchange_token(&mcp, &empty(), alice, "alice").await;
    assert!(hit.is_ok(), "{hit:?}");
    assert_eq!(
        server.token_requests(),
        3,
        "one client credentials, two exchanges"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_exchanges_for_different_subjects_never_join_one_flight() {
    let server = server();
    let (a, a_raw) = subject_of(&server, SVC).await;
    let (b, b_raw) = subject_of(&server, OTHER).await;
    // Both requests are in flight at once.
    server.script(|s| s.latency = Duration::from_secs(1));
    let cache = exchange_cache(&server);
    let mcp = resource(MCP);

    let none = empty();
    let (for_a, for_b) = tokio::join!(
        cache.exchange_token(&mcp, &none, a, "tenant-1"),
        cache.exchange_token(&mcp, &none, b, "tenant-1"),
    );
    let (for_a, for_b) = (for_a.unwrap(), for_b.unwrap());
    assert_eq!(sub(&server, &for_a), SVC);
    assert_eq!(sub(&server, &for_b), OTHER);
    let mut seen = exchanged_subjects(&server);
    seen.sort();
    let mut expected = vec![fingerprint(&a_raw), fingerprint(&b_raw)];
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(cache.stats().fetches, 2);
}

#[tokio::test(start_paused = true)]
async fn the_key_holds_a_keyed_fingerprint_that_is_never_shown() {
    use sha2::Digest as _;
    let server = server();
    let (subject, raw) = subject_of(&server, SVC).await;
    let mcp = resource(MCP);
    let first = exchange_cache(&server)
        .exchange_token(&mcp, &empty(), subject.clone(), "alice")
        .await
        .unwrap();
    let second = exchange_cache(&server)
        .exchange_token(&mcp, &empty(), subject, "alice")
        .await
        .unwrap();
    let (a, b) = (first.key(), second.key());
    assert!(a.is_exchanged() && b.is_exchanged());
    assert_eq!(a.account(), Some("alice"));
    // Keyed per cache: the same subject token gives two caches two keys.
    assert_ne!(a.encoded(), b.encoded());
    // Not the subject token, nor its plain SHA-256, in the key's bytes or anything shown.
    let digest = sha2::Sha256::digest(raw.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    for key in [a, b] {
        let encoded = key.encoded();
        assert!(!encoded.windows(raw.len()).any(|w| w == raw.as_bytes()));
        assert!(!encoded.windows(32).any(|w| w == digest.as_slice()));
        let shown = format!("{key} | {key:?} | {first:?} | {second:?}");
        for hidden in [raw.as_str(), &hex, &hex[..16]] {
            assert!(!shown.contains(hidden), "{hidden:?} in {shown}");
        }
        assert!(shown.contains("token exchange"), "{shown}");
    }
}
