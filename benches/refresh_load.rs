//! Benchmark 11: token requests per token lifetime under steady use, with the default timing
//! and with the former one, in one run on paused tokio time (so the count is exact and the
//! machine's load does not enter it).
//!
//! The embedded authorization server, in process, grants tokens of a fixed lifetime (300 s and
//! 3,600 s); one caller asks for a token every second of virtual time for 200 lifetimes; the
//! server's own records give the number of token requests. The figure is the refreshes per
//! lifetime (the requests less the first, cold one), the steady state a long-running client
//! sees. Under steady use a token is
//! replaced when its refresh-ahead window opens, so the figure is about
//! lifetime ÷ (lifetime − skew − window). The former timing (60 s skew, a 120 s window bounded
//! to half the usable lifetime) is the same builder with `skew(60 s)` and
//! `refresh_ahead_share(50)`.
//!
//! Run: `cargo bench --all-features --bench refresh_load`.

use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, Client};
use audience_cache::{
    ClientRegistration, ResourceConfig, ResourceUri, TokenCache, TokenCacheBuilder,
};
use url::Url;

const MCP: &str = "https://mcp.example.com/mcp";
const LIFETIMES: u32 = 200;

/// Refreshes per lifetime (token requests less the first) for tokens of `lifetime`, with the
/// timing `configure` sets, and the token requests in all.
async fn requests_per_lifetime(
    lifetime: Duration,
    configure: impl FnOnce(TokenCacheBuilder) -> TokenCacheBuilder,
) -> (f64, usize) {
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process();
    server.script(|s| s.expires_in = Some(lifetime));
    let builder = TokenCache::builder().in_process(&server).client(
        ClientRegistration::new(
            server.issuer(),
            Url::parse(&server.token_endpoint()).expect("a URL"),
            "svc",
        )
        .client_secret_basic("s3cret".into()),
    );
    let cache = configure(builder)
        .resource(ResourceConfig::new(
            ResourceUri::parse(MCP).expect("a resource"),
            server.issuer(),
        ))
        .build()
        .expect("a cache");
    let url = Url::parse(MCP).expect("a URL");
    let seconds = lifetime.as_secs() * u64::from(LIFETIMES);
    for _ in 0..seconds {
        cache.token_for(&url).await.expect("a token");
        // Lets a background refresh started by this call finish before time moves on.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let requests = server.requests().len();
    let refreshes = requests.saturating_sub(1) as f64 / f64::from(LIFETIMES);
    (refreshes, requests)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    println!(
        "token requests per lifetime under steady use (refreshes ÷ lifetimes; one call a second for {LIFETIMES} lifetimes, paused time)"
    );
    println!(
        "| lifetime | default (30 s skew, 10 %, 120 s at most) | former (60 s skew, half, 120 s at most) | target |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for (lifetime, target) in [(300, 1.25), (3600, 1.05)] {
        let lifetime = Duration::from_secs(lifetime);
        let (default, default_requests) = runtime.block_on(requests_per_lifetime(lifetime, |b| b));
        let (former, former_requests) = runtime.block_on(requests_per_lifetime(lifetime, |b| {
            b.skew(Duration::from_secs(60)).refresh_ahead_share(50)
        }));
        println!(
            "| {} s | {default:.3} ({default_requests} requests) | {former:.3} ({former_requests} requests) | at most {target} |",
            lifetime.as_secs()
        );
    }
}
