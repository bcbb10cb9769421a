//! Who starts a refresh ahead of expiry: the cache's own task, on the runtime's timer, for a
//! token used since it was stored; never the caller, whose hit spawns no task. Paused tokio
//! time and the embedded authorization server in process: the counts are the server's.

use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, Failure};
use audience_cache::{TokenCache, TokenCacheBuilder};
use tokio::time::advance;
use url::Url;

mod support;
use support::{new_server, one_resource};

const MCP: &str = "https://mcp.example.com/mcp";

/// A cache for one resource whose tokens live 300 s: served until 270 s (30 s skew), refreshed
/// ahead from 243 s (10 % of the usable 270 s).
fn setup() -> (AuthorizationServer, TokenCache) {
    let (server, builder) = builder(Duration::from_secs(300));
    (server, builder.build().unwrap())
}

/// The embedded server granting tokens of `lifetime`, and a builder for a cache of one
/// resource on it.
fn builder(lifetime: Duration) -> (AuthorizationServer, TokenCacheBuilder) {
    let server = new_server();
    server.script(|s| s.expires_in = Some(lifetime));
    let builder = one_resource(&server, MCP);
    (server, builder)
}

fn url() -> Url {
    Url::parse(MCP).unwrap()
}

/// Moves the paused clock by `seconds` and lets every task that is due run to its end.
async fn pass(seconds: u64) {
    advance(Duration::from_secs(seconds)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(start_paused = true)]
async fn a_used_token_is_refreshed_when_its_time_comes_with_no_call_at_that_time() {
    let (server, cache) = setup();
    let first = cache.token_for(&url()).await.unwrap();
    pass(100).await;
    assert!(cache.token_for(&url()).await.unwrap().same_token_as(&first));
    pass(142).await; // 242 s
    assert_eq!(server.token_requests(), 1, "before the window: no refresh");
    pass(2).await; // 244 s: no call since 100 s
    assert_eq!(server.token_requests(), 2, "the cache's task refreshed it");
    assert_eq!(cache.stats().refreshes, 1);
    let refreshed = cache.token_for(&url()).await.unwrap();
    assert!(!refreshed.same_token_as(&first));
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_nobody_used_since_it_was_fetched_is_not_refreshed() {
    let (server, cache) = setup();
    let first = cache.token_for(&url()).await.unwrap();
    pass(269).await;
    assert_eq!(server.token_requests(), 1, "not used: not refreshed");
    drop(first);
    pass(2).await; // 271 s: expired, so a call fetches
    cache.token_for(&url()).await.unwrap();
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hit_in_the_window_spawns_no_task_and_the_token_is_refreshed_before_it_expires() {
    let (server, cache) = setup();
    let first = cache.token_for(&url()).await.unwrap();
    // Unused at 243 s: looked at again halfway to expiry, at 256.5 s.
    pass(243).await;
    pass(7).await; // 250 s
    assert_eq!(server.token_requests(), 1);
    let tasks = alive_tasks();
    for _ in 0..10 {
        let hit = cache.token_for(&url()).await.unwrap();
        assert!(hit.same_token_as(&first));
        let _ = hit.header_for(&url()).unwrap();
    }
    assert_eq!(alive_tasks(), tasks, "a hit in the window started a task");
    pass(1).await;
    assert_eq!(server.token_requests(), 1, "nothing until the next look");
    pass(6).await; // 257 s
    assert_eq!(server.token_requests(), 2, "refreshed at the next look");
    let refreshed = cache.token_for(&url()).await.unwrap();
    assert!(!refreshed.same_token_as(&first));
}

#[tokio::test(start_paused = true)]
async fn steady_use_across_the_boundary_makes_one_token_request_per_lifetime() {
    let (server, cache) = setup();
    let mut served = Vec::new();
    for _ in 0..600 {
        served.push(cache.token_for(&url()).await.unwrap());
        pass(1).await;
    }
    // Fetched at 0 s, refreshed at 243 s and 486 s: never a miss, never a second request.
    assert_eq!(server.token_requests(), 3);
    assert_eq!(cache.stats().refreshes, 2);
    assert_eq!(cache.stats().misses, 1);
    let distinct = served
        .windows(2)
        .filter(|pair| !pair[0].same_token_as(&pair[1]))
        .count();
    assert_eq!(distinct, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_refresh_is_retried_by_the_task_as_the_backoff_allows() {
    let (server, cache) = setup();
    let first = cache.token_for(&url()).await.unwrap();
    server.script(|s| s.fail_next(2, Failure::ServiceUnavailable));
    // Used every second through the window: the first two refreshes fail, the third (after a
    // backoff of at most 1 s, then at most 2 s) succeeds, well before 270 s.
    let mut last = first.clone();
    for _ in 0..255 {
        last = cache.token_for(&url()).await.unwrap();
        pass(1).await;
    }
    assert_eq!(server.token_requests(), 4, "{:?}", server.requests().len());
    assert!(!last.same_token_as(&first), "the refreshed token is served");
    assert_eq!(cache.stats().misses, 1);
}

/// The cache's task runs on the runtime that stored the first token. If that runtime is gone,
/// a hit in the window starts the refresh itself, as it did before the task existed.
#[test]
fn a_hit_refreshes_by_itself_when_the_task_s_runtime_is_gone() {
    // Usable 1 s (half of 2 s is the most skew taken), refreshed from 0.5 s (a 50 % share).
    let (server, builder) = builder(Duration::from_secs(2));
    let cache = builder.refresh_ahead_share(50).build().unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime().block_on(cache.token_for(&url())).unwrap();
    runtime().block_on(async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let hit = cache.token_for(&url()).await.unwrap();
        assert!(hit.same_token_as(&first));
        for _ in 0..50 {
            if server.token_requests() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(server.token_requests(), 2, "the hit started the refresh");
    });
}
