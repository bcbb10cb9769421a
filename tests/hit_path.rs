//! The hit path: a warm hit allocates nothing (`token_for` and the header for the same URL, for
//! the default scopes of a configured resource, on a cache that already holds the token; counted
//! by a global allocator that counts the allocations this thread makes while counting is on, not
//! the runtime's other threads nor the set-up); a hit never serves a token the store let go of,
//! nor one for a URL a resource registered later owns; and an allowed decision is taken again
//! only for the same URL's text and token under the same resources (a refreshed token is
//! decided anew).

use std::hint::black_box;
use std::sync::atomic::Ordering;

use audience_cache::testing::{AudienceStyle, AuthorizationServer, Client};
use audience_cache::{ClientRegistration, Error, ResourceConfig, ResourceUri, TokenCache};
use url::Url;

/// The counting global allocator the hit path benchmark uses, the same file.
#[path = "../benches/support/counting.rs"]
mod counting;
use counting::{ALLOCATIONS, COUNTING};

/// The allocations `f` makes on this thread.
async fn allocations_of<F: Future<Output = ()>>(f: F) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f.await;
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

const HITS: usize = 1_000;

fn cache(server: &AuthorizationServer, resources: &[&str]) -> TokenCache {
    let mut builder = TokenCache::builder().in_process(server).client(
        ClientRegistration::new(
            server.issuer(),
            Url::parse(&server.token_endpoint()).unwrap(),
            "svc",
        )
        .client_secret_basic("s3cret".into()),
    );
    for resource in resources {
        builder = builder.resource(ResourceConfig::new(
            ResourceUri::parse(resource).unwrap(),
            server.issuer(),
        ));
    }
    builder.build().unwrap()
}

async fn warm_hits_allocate_nothing(resources: &[&str], request: &str) {
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process();
    let cache = cache(&server, resources);
    let url = Url::parse(request).unwrap();
    // The first call fetches; the next ones are hits.
    for _ in 0..3 {
        let token = cache.token_for(&url).await.unwrap();
        token.header_for(&url).unwrap();
    }
    let allocations = allocations_of(async {
        for _ in 0..HITS {
            let token = cache.token_for(black_box(&url)).await.unwrap();
            black_box(token.header_for(black_box(&url)).unwrap());
        }
    })
    .await;
    assert_eq!(server.token_requests(), 1, "every counted call was a hit");
    assert_eq!(
        allocations, 0,
        "{HITS} warm hits (token_for and header_for) made {allocations} allocations"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_warm_hit_and_its_header_allocate_nothing() {
    warm_hits_allocate_nothing(
        &["https://mcp.example.com/mcp"],
        "https://mcp.example.com/mcp/tools/call",
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_warm_hit_among_nested_resources_allocates_nothing() {
    warm_hits_allocate_nothing(
        &[
            "https://mcp.example.com/",
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/mcp/tools",
            "https://api.example.com/mcp",
        ],
        "https://mcp.example.com/mcp/tools/call",
    )
    .await;
}

/// Handles of several accounts used in turn on one URL decide without allocating: their
/// allowed decisions do not take turns in the remembered decisions (only a resource's current
/// token displaces one).
#[tokio::test(flavor = "current_thread")]
async fn headers_for_accounts_in_turn_allocate_nothing() {
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process();
    let cache = cache(&server, &["https://mcp.example.com/mcp"]);
    let resource = ResourceUri::parse("https://mcp.example.com/mcp").unwrap();
    let url = Url::parse("https://mcp.example.com/mcp/tools/call").unwrap();
    let none = audience_cache::ScopeSet::empty();
    let current = cache.token_for(&url).await.unwrap();
    let alice = cache
        .token_for_account(&resource, &none, "alice")
        .await
        .unwrap();
    let bob = cache
        .token_for_account(&resource, &none, "bob")
        .await
        .unwrap();
    assert_eq!(server.token_requests(), 3);
    for token in [&alice, &bob, &current] {
        token.header_for(&url).unwrap();
    }
    let allocations = allocations_of(async {
        for _ in 0..HITS {
            for token in [&alice, &bob, &current] {
                black_box(token.header_for(black_box(&url)).unwrap());
            }
        }
    })
    .await;
    assert_eq!(
        allocations, 0,
        "{HITS} rounds of three accounts' headers made {allocations} allocations"
    );
    assert!(cache.token_for(&url).await.unwrap().same_token_as(&current));
    assert_eq!(server.token_requests(), 3);
}

/// The hit path reads a resource's current token without the store; a token the store let go
/// of is not served from it.
#[tokio::test(flavor = "current_thread")]
async fn an_invalidated_token_is_not_served_by_the_next_hit() {
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process();
    let cache = cache(&server, &["https://mcp.example.com/mcp"]);
    let url = Url::parse("https://mcp.example.com/mcp/tools/call").unwrap();
    let first = cache.token_for(&url).await.unwrap();
    assert!(cache.token_for(&url).await.unwrap().same_token_as(&first));
    assert!(cache.invalidate(&first).await);
    let second = cache.token_for(&url).await.unwrap();
    assert!(!second.same_token_as(&first));
    assert_eq!(server.token_requests(), 2);
    assert!(cache.token_for(&url).await.unwrap().same_token_as(&second));
    assert_eq!(server.token_requests(), 2);
}

/// A resource registered later that owns the URL takes its hits: the broader resource's
/// current token is not handed out there.
#[tokio::test(flavor = "current_thread")]
async fn a_nested_resource_registered_later_takes_its_urls_hits() {
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process();
    let cache = cache(&server, &["https://mcp.example.com/"]);
    let url = Url::parse("https://mcp.example.com/mcp/tools/call").unwrap();
    let broad = cache.token_for(&url).await.unwrap();
    assert_eq!(broad.resource().key(), "https://mcp.example.com/");
    cache
        .register_resource(ResourceConfig::new(
            ResourceUri::parse("https://mcp.example.com/mcp").unwrap(),
            server.issuer(),
        ))
        .unwrap();
    let nested = cache.token_for(&url).await.unwrap();
    assert_eq!(nested.resource().key(), "https://mcp.example.com/mcp");
    assert_eq!(server.token_requests(), 2);
    assert!(broad.header_for(&url).is_err());
    assert!(nested.header_for(&url).is_ok());
}

/// The decision `token_for` made is taken again by `header_for` only for the same URL's text
/// under the same resources; any other URL is decided again.
#[tokio::test(flavor = "current_thread")]
async fn the_header_for_another_url_is_decided_again() {
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process();
    let cache = cache(
        &server,
        &[
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/mcp/admin",
        ],
    );
    let url = Url::parse("https://mcp.example.com/mcp/tools").unwrap();
    let token = cache.token_for(&url).await.unwrap();
    assert!(token.header_for(&url).is_ok());
    for other in [
        "https://mcp.example.com/mcp/admin",
        "https://mcp.example.com/mcp/admin/tools",
        "https://user@mcp.example.com/mcp/tools",
        "https://mcp.example.com/mcp/tools%2F..%2Fadmin",
        "https://api.example.com/mcp/tools",
        "http://mcp.example.com/mcp/tools",
    ] {
        let other = Url::parse(other).unwrap();
        assert!(token.header_for(&other).is_err(), "{other}");
    }
    // A long URL is remembered as a short one.
    let long = Url::parse(&format!("https://mcp.example.com/mcp/{}", "x".repeat(200))).unwrap();
    let token = cache.token_for(&long).await.unwrap();
    assert!(token.header_for(&long).is_ok());
}

/// A decision remembered for one token is not taken for the token that replaces it: a refresh
/// that brings a token whose `aud` names another resource makes it the resource's current
/// token, and the next hit on the same URL decides it (and refuses it) instead of serving it
/// under its predecessor's decision.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refreshed_token_is_decided_again_not_served_under_its_predecessors_decision() {
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process();
    server.script(|s| s.expires_in = Some(std::time::Duration::from_secs(600)));
    let cache = cache(&server, &["https://mcp.example.com/mcp"]);
    let url = Url::parse("https://mcp.example.com/mcp/tools/call").unwrap();
    let first = cache.token_for(&url).await.unwrap();
    assert!(first.header_for(&url).is_ok());
    assert!(cache.token_for(&url).await.unwrap().same_token_as(&first));

    // The next token the server issues is for another audience.
    server.script(|s| {
        s.audience = AudienceStyle::Fixed(vec!["https://other.example.com/".into()]);
    });
    // Inside the refresh-ahead window: this hit is served the first token and starts the
    // refresh in the background, which stores the new token as the current one.
    tokio::time::advance(std::time::Duration::from_secs(560)).await;
    assert!(cache.token_for(&url).await.unwrap().same_token_as(&first));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(server.token_requests(), 2, "the refresh ran");

    let refusal = cache.token_for(&url).await.unwrap_err();
    assert!(
        matches!(refusal, Error::Refused(_)),
        "the refreshed token is decided, and refused: {refusal:?}"
    );
    // The first token keeps its own decision for its own URL.
    assert!(first.header_for(&url).is_ok());
}
