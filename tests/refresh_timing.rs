//! When tokens are replaced under steady use: the refresh-ahead window is a share of a token's
//! usable lifetime, so short tokens are not fetched twice as often as they need to be. Paused
//! tokio time and the embedded authorization server in process: the counts are the server's.

use std::time::Duration;

use audience_cache::testing::AuthorizationServer;
use audience_cache::{BuildError, TokenCache, TokenCacheBuilder};
use tokio::time::advance;
use url::Url;

mod support;
use support::{new_server, one_resource};

const MCP: &str = "https://mcp.example.com/mcp";

fn server(lifetime: Duration) -> AuthorizationServer {
    let server = new_server();
    server.script(|s| s.expires_in = Some(lifetime));
    server
}

fn builder(server: &AuthorizationServer) -> TokenCacheBuilder {
    one_resource(server, MCP)
}

/// One call a second for `seconds`, letting each background refresh finish; the number of
/// token requests the server saw.
async fn steady_use(cache: &TokenCache, server: &AuthorizationServer, seconds: u64) -> usize {
    let url = Url::parse(MCP).unwrap();
    for _ in 0..seconds {
        cache.token_for(&url).await.unwrap();
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        advance(Duration::from_secs(1)).await;
    }
    server.requests().len()
}

#[tokio::test(start_paused = true)]
async fn a_300_s_token_is_replaced_after_243_s_with_the_defaults() {
    let server = server(Duration::from_secs(300));
    let cache = builder(&server).build().unwrap();
    // Fetched at 0 s; its window opens at 243 s (30 s skew, 10 % of the usable 270 s).
    assert_eq!(steady_use(&cache, &server, 243).await, 1);
    // The call at 243 s starts the refresh; the next one opens at 486 s.
    assert_eq!(steady_use(&cache, &server, 243).await, 2);
    assert_eq!(steady_use(&cache, &server, 1).await, 3);
}

#[tokio::test(start_paused = true)]
async fn the_former_timing_replaced_a_300_s_token_after_120_s() {
    let server = server(Duration::from_secs(300));
    let cache = builder(&server)
        .skew(Duration::from_secs(60))
        .refresh_ahead_share(50)
        .build()
        .unwrap();
    assert_eq!(steady_use(&cache, &server, 120).await, 1);
    assert_eq!(steady_use(&cache, &server, 1).await, 2);
}

#[test]
fn a_share_outside_1_to_50_percent_is_refused_naming_the_setting() {
    let server = server(Duration::from_secs(300));
    for share in [0, 51, 100] {
        let error = builder(&server)
            .refresh_ahead_share(share)
            .build()
            .unwrap_err();
        assert!(
            matches!(
                &error,
                BuildError::Setting { setting: "refresh_ahead_share", reason }
                    if reason.contains(&format!("{share}%")) && reason.contains("default is 10%")
            ),
            "{error}"
        );
    }
    for share in [1, 10, 50] {
        assert!(builder(&server).refresh_ahead_share(share).build().is_ok());
    }
}
