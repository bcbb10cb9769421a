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
//! for 1 s and its background refresh starts 0.5 s after it was requested: about one
//! boundary every 0.52 s, `BOUNDARY_REFRESHES` (default 20) of them per place.
//!
//! For each place: the warm hits' p50 and p99; across the boundaries, the calls made while a
//! refresh was due or running (from the first call to find its token inside the window to the
//! first call served the new token: before the cache's own task started refreshes on the
//! runtime's timer, the first of those calls started it), their slowest as a multiple of the
//! warm p99, and the slowest of the other calls. A control runs the same number of calls in the
//! same place with a token that lives an hour (no refresh at all): what the machine does to a
//! call that sleeps a millisecond between calls, with no refresh in it.
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

/// One call: how long it took, and whether a refresh was due or running (from the first call
/// to find its token inside the refresh-ahead window to the first call served the new token).
type Call = (Duration, bool);

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
    let mut refreshing = false;
    loop {
        let at = Instant::now();
        let token = cache
            .token_for(url)
            .await
            .expect("a token is always served");
        let header = token.header_for(url).expect("allowed");
        let took = at.elapsed();
        std::hint::black_box(header);
        let new = previous.as_ref().is_some_and(|p| !p.same_token_as(&token));
        let due = token.expires_in() <= WINDOW;
        out.push((took, refreshing || due || new));
        // Due from the first call inside the window until the new token is served.
        refreshing = due;
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
    /// The calls made while a refresh was due or running: how many, their p99, the slowest,
    /// and how many took more than 10× the warm p99.
    refreshing: usize,
    refreshing_p99: Duration,
    worst_refreshing: Duration,
    refreshing_over_10x: usize,
    /// The slowest of the other calls across the boundaries.
    worst_other: Duration,
    over_10x: usize,
    /// The same number of calls with no refresh: their p99, the slowest, and how many took
    /// more than 10× the warm p99.
    control_p99: Duration,
    worst_control: Duration,
    control_over_10x: usize,
}

fn measure(
    place: &'static str,
    rt: &Runtime,
    spawned: bool,
    loopback: bool,
    refreshes: usize,
) -> Outcome {
    let (warm, boundary, requests) = run(rt, spawned, loopback, Duration::from_secs(2), refreshes);
    // The control: a token that lives an hour, called as often as the boundaries were.
    let (_, control, _) = run(
        rt,
        spawned,
        loopback,
        Duration::from_secs(3600),
        boundary.len(),
    );
    let place = if loopback {
        format!("{place}, loopback")
    } else {
        format!("{place}, in process")
    };
    let mut warm: Vec<Duration> = warm.iter().map(|c| c.0).collect();
    warm.sort_unstable();
    let warm_p99 = support::quantile(&warm, 0.99);
    let worst =
        |calls: &mut dyn Iterator<Item = &Call>| calls.map(|c| c.0).max().unwrap_or_default();
    let p99 = |calls: &mut dyn Iterator<Item = &Call>| {
        let mut took: Vec<Duration> = calls.map(|c| c.0).collect();
        took.sort_unstable();
        support::quantile(&took, 0.99)
    };
    Outcome {
        place,
        warm_p50: support::quantile(&warm, 0.5),
        warm_p99,
        calls: boundary.len(),
        refreshes: requests,
        refreshing: boundary.iter().filter(|c| c.1).count(),
        refreshing_p99: p99(&mut boundary.iter().filter(|c| c.1)),
        worst_refreshing: worst(&mut boundary.iter().filter(|c| c.1)),
        refreshing_over_10x: boundary
            .iter()
            .filter(|c| c.1 && c.0 > warm_p99 * 10)
            .count(),
        worst_other: worst(&mut boundary.iter().filter(|c| !c.1)),
        over_10x: boundary.iter().filter(|c| c.0 > warm_p99 * 10).count(),
        control_p99: p99(&mut control.iter()),
        worst_control: worst(&mut control.iter()),
        control_over_10x: control.iter().filter(|c| c.0 > warm_p99 * 10).count(),
    }
}

/// One caller in one place, with tokens of `lifetime`: its warm calls, its calls across
/// `refreshes` refreshes (or that many calls when the token outlives them), and the token
/// requests those made.
fn run(
    rt: &Runtime,
    spawned: bool,
    loopback: bool,
    lifetime: Duration,
    refreshes: usize,
) -> (Vec<Call>, Vec<Call>, usize) {
    let script = move |s: &mut audience_cache::testing::Script| {
        s.latency = LATENCY;
        s.expires_in = Some(lifetime);
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
    let control = lifetime > Duration::from_secs(60);
    let run = {
        let (cache, server, url) = (cache.clone(), server.clone(), url.clone());
        async move {
            // The first token, then warm hits inside its first 0.4 s (before its window).
            let _ = cache.token_for(&url).await.expect("a token");
            let warm = calls(&cache, &server, &url, None, 300).await;
            let before = server.token_requests();
            let boundary = if control {
                calls(&cache, &server, &url, None, refreshes).await
            } else {
                calls(&cache, &server, &url, Some(refreshes), 0).await
            };
            (warm, boundary, server.token_requests() - before)
        }
    };
    if spawned {
        rt.block_on(async { tokio::spawn(run).await.expect("the caller ran") })
    } else {
        rt.block_on(run)
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
        "  {:<38} {:>8} {:>8} {:>6} {:>5} | {:>5} {:>8} {:>8} {:>9} {:>5} | {:>8} {:>5} | {:>8} {:>8} {:>9} {:>5}",
        "place",
        "warm p50",
        "warm p99",
        "calls",
        "fetch",
        "refreshing: calls",
        "p99",
        "worst",
        "worst/p99",
        ">10×",
        "others",
        ">10×",
        "control: p99",
        "worst",
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
            println!(
                "  {:<38} {:>8} {:>8} {:>6} {:>5} | {:>5} {:>8} {:>8} {:>8.1}× {:>5} | {:>8} {:>5} | {:>8} {:>8} {:>8.1}× {:>5}",
                outcome.place,
                support::show(outcome.warm_p50),
                support::show(outcome.warm_p99),
                outcome.calls,
                outcome.refreshes,
                outcome.refreshing,
                support::show(outcome.refreshing_p99),
                support::show(outcome.worst_refreshing),
                support::ratio(outcome.worst_refreshing, outcome.warm_p99),
                outcome.refreshing_over_10x,
                support::show(outcome.worst_other),
                outcome.over_10x - outcome.refreshing_over_10x,
                support::show(outcome.control_p99),
                support::show(outcome.worst_control),
                support::ratio(outcome.worst_control, outcome.warm_p99),
                outcome.control_over_10x,
            );
        }
    }
    println!("{}", support::load());
}
