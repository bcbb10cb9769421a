//! The refresher's queue and its purge of expired tokens.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::advance;
use url::Url;

use super::{Due, MIN_COMPACT};
use crate::audience::TokenAudience;
use crate::testing::{AuthorizationServer, Client};
use crate::token::CachedToken;
use crate::{ClientRegistration, ResourceConfig, ResourceUri, ScopeSet, TokenCache};

const MCP: &str = "https://mcp.example.com/mcp";

fn setup() -> (AuthorizationServer, TokenCache) {
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process();
    server.script(|s| s.expires_in = Some(Duration::from_secs(300)));
    let cache = TokenCache::builder()
        .in_process(&server)
        .client(
            ClientRegistration::new(
                server.issuer(),
                Url::parse(&server.token_endpoint()).unwrap(),
                "svc",
            )
            .client_secret_basic("s3cret".into()),
        )
        .resource(ResourceConfig::new(
            ResourceUri::parse(MCP).unwrap(),
            server.issuer(),
        ))
        .build()
        .unwrap();
    (server, cache)
}

async fn pass(seconds: u64) {
    advance(Duration::from_secs(seconds)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A token that expires unused leaves the store (and stops being its resource's current
/// token) shortly after it expired (a second), and not while it is served.
#[tokio::test(start_paused = true)]
async fn an_expired_token_leaves_the_store_a_second_after_it_expired() {
    let (_server, cache) = setup();
    let resource = ResourceUri::parse(MCP).unwrap();
    let other = ScopeSet::parse("mcp:write").unwrap();
    let default = cache.token(&resource, &ScopeSet::empty()).await.unwrap();
    let scoped = cache.token(&resource, &other).await.unwrap();
    let shared = &cache.shared;
    let entry = shared.outlet.routes.entry(&resource).unwrap();
    // Served until 270 s.
    pass(269).await;
    for token in [&default, &scoped] {
        let stored = shared.store.get(token.key()).await.unwrap();
        assert!(Arc::ptr_eq(&stored, token.cached()), "gone before its time");
    }
    pass(3).await; // 272 s
    for token in [&default, &scoped] {
        assert!(
            shared.store.get(token.key()).await.is_none(),
            "still stored"
        );
    }
    shared.store.run_pending_tasks().await;
    assert!(entry.current.load().is_none(), "still the current token");
    assert!(shared.ahead.inner.lock().is_empty(), "still armed");
}

/// The look that lets an expired token go leaves the token that replaced it alone.
#[tokio::test(start_paused = true)]
async fn letting_an_expired_token_go_leaves_its_successor_alone() {
    let (server, cache) = setup();
    let url = Url::parse(MCP).unwrap();
    let first = cache.token_for(&url).await.unwrap();
    assert!(cache.invalidate(&first).await);
    pass(100).await;
    let second = cache.token_for(&url).await.unwrap();
    assert_eq!(server.token_requests(), 2);
    // One jump to 280 s: the first token's look (due at 243 s) finds it expired, and its
    // successor (served until 370 s) under its key.
    pass(180).await;
    let stored = cache.shared.store.get(second.key()).await.unwrap();
    assert!(Arc::ptr_eq(&stored, second.cached()));
}

/// Entries of tokens no one holds any more are cleared once the queue doubles, so that a
/// store that churns through keys does not grow the queue without bound.
#[tokio::test]
async fn the_queue_keeps_within_twice_the_tokens_still_held() {
    let (_server, cache) = setup();
    let resource = ResourceUri::parse(MCP).unwrap();
    let held = cache.token(&resource, &ScopeSet::empty()).await.unwrap();
    let inner = &cache.shared.ahead.inner;
    let like = held.cached();
    for i in 0..10 * MIN_COMPACT {
        let token = Arc::new(CachedToken::new(
            "a-token".into(),
            like.key.clone(),
            like.resource.clone(),
            like.scopes.clone(),
            TokenAudience::unread(),
            like.schedule,
            false,
        ));
        inner.push(Due {
            at: u64::MAX - i as u64,
            token: Arc::downgrade(&token),
            subject: None,
        });
        // Dropped at once: its entry is dead.
    }
    let len = inner.lock().len();
    assert!(len <= MIN_COMPACT + 1, "{len} entries for 1 held token");
    assert!(inner.compact_at.load(Ordering::Relaxed) >= MIN_COMPACT);
    let live = inner
        .lock()
        .iter()
        .filter(|due| due.0.token.strong_count() > 0)
        .count();
    assert_eq!(live, 1, "the held token's entry stays");
}
