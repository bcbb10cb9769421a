//! Benchmark 13: no caller pays for a refresh. One caller makes `token_for` + `header_for`
//! calls, about one a millisecond, across the refresh-ahead boundaries of short-lived tokens,
//! in the three places a caller runs: on a current-thread runtime, on the main thread of a
//! multi-thread runtime (what `#[tokio::main]` gives: `block_on` on a thread that is not one
//! of the runtime's workers), and in a task spawned on that runtime. Every call is timed
//! alone; the worst call across the boundaries is compared with the p99 of warm hits measured
//! the same way, in the same place, just before.
//!
//! Each place twice: with the authorization server in process, and over a socket on
//! 127.0.0.1 with the crate's own HTTP client (served by the same runtime).
//!
//! The authorization server grants `expires_in` = 2 s and answers after 20 ms; with
//! a 1 s skew and the refresh-ahead window at half the usable lifetime, each token is served
//! for 1 s and a hit starts its background refresh 0.5 s after it was requested: about one
//! boundary every 0.52 s, `BOUNDARY_REFRESHES` (default 20) of them per place.
//!
//! For each place: the warm hits' p50 and p99; across the boundaries, the calls that started
//! a refresh (the first to find their token inside its window: median and slowest), the
//! slowest of the other calls, the slowest of all as a multiple of the warm p99, and how many
//! calls took more than 10× the warm p99.
//!
//! Run: `cargo bench --all-features --bench refresh_boundary` (`BOUNDARY_ROUNDS`,
//! `BOUNDARY_REFRESHES` change the 3 rounds of 20 refreshes).

mod support;

use std::time::{Duration, Instant};

use audience_cache::TokenCache;
use tokio::runtime::Runtime;
use url::Url;

use support::{MCP, MCP_REQUEST};

const LATENCY: Duration = Duration::from_millis(20);

/// One call: how long it took, whether it was the call that started a refresh (the first call
/// to find its token inside the refresh-ahead window), and how long after the last such call
/// it started.
type Call = (Duration, bool, Option<Duration>);

/// The refresh-ahead window of these tokens: half of the 1 s they are served.
const WINDOW: Duration = Duration::from_millis(500);

/// Calls `token_for` + `header_for` until `refreshes` more token requests have reached the
/// server (or `calls` calls, for warm hits), one about every millisecond.
async fn calls(
    cache: &TokenCache,
    server: &audience_cache::testing::AuthorizationServer,
    url: &Url,
    refreshes: Option<usize>,
    calls: usize,
) -> Vec<Call> {
    let first = server.token_requests();
    let mut out = Vec::with_capacity(calls);
    let mut previous: Option<audience_cache::BearerToken> = None;
    let mut started = false;
    let mut last_starter: Option<Instant> = None;
    loop {
        let at = Instant::now();
        let token = cache
            .token_for(url)
            .await
            .expect("a token is always served");
        let header = token.header_for(url).expect("allowed");
        let took = at.elapsed();
        std::hint::black_box(header);
        if !previous.as_ref().is_some_and(|p| p.same_token_as(&token)) {
            started = false;
        }
        // The call that found the token in its window first is the one that started its
        // refresh (the cache starts one on the first hit inside the window).
        let starter = !started && token.expires_in() <= WINDOW;
        started |= starter;
        out.push((took, starter, last_starter.map(|s| at - s)));
        if starter {
            last_starter = Some(at);
        }
        previous = Some(token);
        match refreshes {
            // Until the last refresh's token has been in use for a while.
            Some(n) if server.token_requests() - first > n => break,
            None if out.len() >= calls => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    out
}

struct Outcome {
    place: String,
    warm_p50: Duration,
    warm_p99: Duration,
    calls: usize,
    refreshes: usize,
    /// The slowest call that started a refresh, and the median of those calls.
    worst_starter: Duration,
    median_starter: Duration,
    /// The slowest of all the other calls across the boundaries, and how long after the last
    /// call that started a refresh it started.
    worst_other: Duration,
    worst_other_after: Option<Duration>,
    over_10x: usize,
}

fn measure(
    place: &'static str,
    rt: &Runtime,
    spawned: bool,
    loopback: bool,
    refreshes: usize,
) -> Outcome {
    let script = |s: &mut audience_cache::testing::Script| {
        s.latency = LATENCY;
        s.expires_in = Some(Duration::from_secs(2));
    };
    let (server, builder) = if loopback {
        // Over a socket on 127.0.0.1, with the crate's own HTTP client, served by this runtime.
        let server = rt
            .block_on(support::server_builder().script(script).start())
            .expect("a server on 127.0.0.1");
        let builder = TokenCache::builder()
            .allow_insecure_http_on_loopback(true)
            .client(support::registration(&server))
            .resource(audience_cache::ResourceConfig::new(
                support::resource_uri(MCP),
                server.issuer(),
            ));
        (server, builder)
    } else {
        let server = support::server_builder().script(script).in_process();
        let builder = support::builder(&server, &[MCP]);
        (server, builder)
    };
    let server = std::sync::Arc::new(server);
    let cache = builder
        .skew(Duration::from_secs(1))
        .refresh_ahead_share(50)
        .build()
        .expect("a cache");
    let url = support::url(MCP_REQUEST);
    let place = if loopback {
        format!("{place}, loopback")
    } else {
        format!("{place}, in process")
    };
    let run = {
        let (cache, server, url) = (cache.clone(), server.clone(), url.clone());
        async move {
            // The first token, then warm hits inside its first 0.4 s (before its window).
            let _ = cache.token_for(&url).await.expect("a token");
            let warm = calls(&cache, &server, &url, None, 300).await;
            let before = server.token_requests();
            let boundary = calls(&cache, &server, &url, Some(refreshes), 0).await;
            (warm, boundary, server.token_requests() - before)
        }
    };
    let (warm, boundary, requests) = if spawned {
        rt.block_on(async { tokio::spawn(run).await.expect("the caller ran") })
    } else {
        rt.block_on(run)
    };
    let mut warm: Vec<Duration> = warm.iter().map(|c| c.0).collect();
    warm.sort_unstable();
    let warm_p99 = support::quantile(&warm, 0.99);
    let mut starters: Vec<Duration> = boundary.iter().filter(|c| c.1).map(|c| c.0).collect();
    starters.sort_unstable();
    Outcome {
        place,
        warm_p50: support::quantile(&warm, 0.5),
        warm_p99,
        calls: boundary.len(),
        refreshes: requests,
        worst_starter: starters.last().copied().unwrap_or_default(),
        median_starter: support::quantile(&starters, 0.5),
        worst_other: boundary
            .iter()
            .filter(|c| !c.1)
            .map(|c| c.0)
            .max()
            .unwrap_or_default(),
        worst_other_after: boundary
            .iter()
            .filter(|c| !c.1)
            .max_by_key(|c| c.0)
            .and_then(|c| c.2),
        over_10x: boundary.iter().filter(|c| c.0 > warm_p99 * 10).count(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("{}", support::machine());
    let refreshes = support::env_or("BOUNDARY_REFRESHES", 20) as usize;
    let rounds = support::env_or("BOUNDARY_ROUNDS", 3) as usize;
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "\nrefresh boundary: expires_in 2 s, served 1 s, refreshed from 0.5 s, server latency {}, \
         {refreshes} refreshes per place and round, {rounds} rounds interleaved",
        support::show(LATENCY)
    );
    println!(
        "  {:<38} {:>8} {:>8} {:>6} {:>5} {:>14} {:>9} {:>9} {:>11} {:>7}  others' worst: after the last starter",
        "place",
        "warm p50",
        "warm p99",
        "calls",
        "fetch",
        "starters: p50",
        "worst",
        "others",
        "worst/p99",
        ">10×",
    );
    for _ in 0..rounds {
        for outcome in [false, true].into_iter().flat_map(|loopback| {
            [
                measure("current thread", &current, false, loopback, refreshes),
                measure(
                    "multi-thread, main thread",
                    &multi,
                    false,
                    loopback,
                    refreshes,
                ),
                measure(
                    "multi-thread, spawned task",
                    &multi,
                    true,
                    loopback,
                    refreshes,
                ),
            ]
        }) {
            let worst = outcome.worst_starter.max(outcome.worst_other);
            println!(
                "  {:<38} {:>8} {:>8} {:>6} {:>5} {:>14} {:>9} {:>9} {:>10.1}× {:>7}  {}",
                outcome.place,
                support::show(outcome.warm_p50),
                support::show(outcome.warm_p99),
                outcome.calls,
                outcome.refreshes,
                support::show(outcome.median_starter),
                support::show(outcome.worst_starter),
                support::show(outcome.worst_other),
                support::ratio(worst, outcome.warm_p99),
                outcome.over_10x,
                outcome
                    .worst_other_after
                    .map_or("-".to_owned(), support::show)
            );
        }
    }
    println!("{}", support::load());
}
