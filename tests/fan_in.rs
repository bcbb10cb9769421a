//! Fan-in: however many callers ask for a cold key at once, the authorization server sees
//! exactly one token request, and every caller gets that one token. The counts are asserted;
//! times are not (benches/fan_in.rs measures them).

use std::sync::Arc;
use std::time::Duration;

use audience_cache::testing::AuthorizationServer;
use audience_cache::{BearerToken, TokenCache};
use tokio::sync::{Barrier, watch};
use url::Url;

mod support;
use support::{new_server, one_resource};

const MCP: &str = "https://mcp.example.com/mcp";

fn server() -> AuthorizationServer {
    let server = new_server();
    server.script(|s| s.latency = Duration::from_millis(50));
    server
}

fn cache(server: &AuthorizationServer) -> TokenCache {
    one_resource(server, MCP).build().unwrap()
}

/// Spawns `callers` callers, releases them together once all are waiting, and returns their
/// tokens.
async fn fan_in(cache: &TokenCache, callers: usize) -> Vec<BearerToken> {
    let url = Arc::new(Url::parse("https://mcp.example.com/mcp/tools/call").unwrap());
    let ready = Arc::new(Barrier::new(callers + 1));
    let (go, start) = watch::channel(false);
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, url, ready, mut start) =
                (cache.clone(), url.clone(), ready.clone(), start.clone());
            tokio::spawn(async move {
                ready.wait().await;
                start.wait_for(|&go| go).await.unwrap();
                cache.token_for(&url).await
            })
        })
        .collect();
    ready.wait().await;
    go.send_replace(true);
    let mut tokens = Vec::with_capacity(callers);
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap());
    }
    tokens
}

fn assert_one_fetch(server: &AuthorizationServer, cache: &TokenCache, tokens: &[BearerToken]) {
    assert_eq!(server.token_requests(), 1, "{} callers", tokens.len());
    assert!(tokens.iter().all(|t| t.same_token_as(&tokens[0])));
    let stats = cache.stats();
    assert_eq!(stats.fetches, 1);
    assert_eq!(stats.hits + stats.misses, tokens.len() as u64);
    assert_eq!(server.requests()[0].resources, [MCP]);
}

#[tokio::test(start_paused = true)]
async fn one_caller_makes_one_token_request() {
    let server = server();
    let cache = cache(&server);
    let tokens = fan_in(&cache, 1).await;
    assert_one_fetch(&server, &cache, &tokens);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_callers_make_one_token_request() {
    let server = server();
    let cache = cache(&server);
    let tokens = fan_in(&cache, 100).await;
    assert_one_fetch(&server, &cache, &tokens);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_callers_make_one_token_request() {
    let server = server();
    let cache = cache(&server);
    let tokens = fan_in(&cache, 10_000).await;
    assert_one_fetch(&server, &cache, &tokens);
    // All of them were waiting for the fetch: none found a token already stored.
    assert_eq!(cache.stats().misses, 10_000);
}

/// The same on two worker threads in real time, where callers really race each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_on_two_threads_make_one_token_request() {
    for callers in [1, 100, 10_000] {
        let server = server();
        let cache = cache(&server);
        let tokens = fan_in(&cache, callers).await;
        assert_one_fetch(&server, &cache, &tokens);
    }
}
