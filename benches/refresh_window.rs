//! Benchmark 4: the refresh window. Callers spread across the refresh-ahead boundaries of a
//! short-lived token, against the in-process authorization server answering after 50 ms, in
//! real time: the latency of every `token_for` call (p50, p99, max), compared with the warm
//! hit path measured the same way in the same run. The claim under test: no caller waits for
//! the server.
//!
//! The server grants `expires_in` = 6 s; with a 60 s skew (bounded to half the lifetime) the
//! cache serves each token for 3 s, and with the refresh-ahead window at half the usable
//! lifetime (`refresh_ahead_share(50)`) one background refresh starts 1.5 s after the
//! token was requested (`Timing::schedule` in src/token.rs). The defaults replace tokens later
//! (benchmark 11, `refresh_load`); these settings put three refreshes into 5 s. Over 5 s that is three
//! refreshes. A monitor polls the server's request log every millisecond to learn when each
//! refresh was in flight, so the calls made while the server was working on a refresh can be
//! shown apart.
//!
//! Both phases run 64 caller tasks on a 2-worker runtime; each makes a call, records its
//! duration, and sleeps about 1 ms, with start times spread over the first millisecond.
//!
//! Run: `cargo bench --all-features --bench refresh_window`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use audience_cache::TokenCache;
use audience_cache::testing::AuthorizationServer;
use url::Url;

use support::{MCP, MCP_REQUEST};

const LATENCY: Duration = Duration::from_millis(50);
const CALLERS: usize = 64;

/// (when the call started, relative to the phase's origin; how long it took)
type Sample = (Duration, Duration);

async fn run_callers(cache: &TokenCache, origin: Instant, length: Duration) -> Vec<Sample> {
    let url = Arc::new(Url::parse(MCP_REQUEST).expect("a URL"));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (cache, url, stop) = (cache.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(i as u64 * 1000 / CALLERS as u64)).await;
                let mut samples = Vec::with_capacity(8192);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let token = cache.token_for(&url).await;
                    let took = started.elapsed();
                    token.expect("a token is always served");
                    samples.push((started - origin, took));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                samples
            })
        })
        .collect();
    tokio::time::sleep(length.saturating_sub(origin.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("the caller ran"));
    }
    all
}

/// When each token request was in flight (arrival to answer), by polling the server's log.
async fn monitor(
    server: Arc<AuthorizationServer>,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<(Duration, Option<Duration>)> {
    let mut windows: Vec<(Duration, Option<Duration>)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = origin.elapsed();
        for (i, record) in server.requests().iter().enumerate() {
            if i >= windows.len() {
                windows.push((now, None));
            }
            if record.status.is_some() && windows[i].1.is_none() {
                windows[i].1 = Some(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    windows
}

struct Summary {
    count: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn summarize(samples: impl Iterator<Item = Duration>) -> Summary {
    let mut sorted: Vec<Duration> = samples.collect();
    sorted.sort_unstable();
    Summary {
        count: sorted.len(),
        p50: support::quantile(&sorted, 0.5),
        p99: support::quantile(&sorted, 0.99),
        max: sorted.last().copied().unwrap_or_default(),
    }
}

fn print(label: &str, s: &Summary, base: &Summary) {
    println!(
        "{label:<44} {:>8}  {:>9} ({:>5.2}×)  {:>9} ({:>5.2}×)  {:>9} ({:>6.1}×)",
        s.count,
        support::show(s.p50),
        support::ratio(s.p50, base.p50),
        support::show(s.p99),
        support::ratio(s.p99, base.p99),
        support::show(s.max),
        support::ratio(s.max, base.max),
    );
}

fn main() {
    println!("{}", support::machine());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        // Phase A: the warm hit path (a one-hour token), measured the same way.
        let server = support::server(LATENCY);
        let cache = support::builder(&server, &[MCP]).build().expect("a cache");
        cache.token_for(&support::url(MCP_REQUEST)).await.expect("a token");
        let origin = Instant::now();
        let warm = run_callers(&cache, origin, Duration::from_secs(2)).await;
        let warm = summarize(warm.iter().map(|s| s.1));

        // Phase B: a 6 s token, refreshed ahead from 1.5 s, served until 3 s (a skew of half
        // the lifetime and a window of half the usable lifetime: three refreshes in 5 s).
        let server = Arc::new(support::server(LATENCY));
        server.script(|s| s.expires_in = Some(Duration::from_secs(6)));
        let cache = support::builder(&server, &[MCP])
            .skew(Duration::from_secs(60))
            .refresh_ahead_share(50)
            .build()
            .expect("a cache");
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn(monitor(server.clone(), origin, stop.clone()));
        cache.token_for(&support::url(MCP_REQUEST)).await.expect("the first token");
        let first_fetch = origin.elapsed();
        let after_first = cache.stats();
        let samples = run_callers(&cache, origin, Duration::from_secs(5)).await;
        stop.store(true, Ordering::Relaxed);
        let windows = watcher.await.expect("the monitor ran");
        let stats = cache.stats();

        println!(
            "\nrefresh window: server latency {}, expires_in 6 s (served 3 s, refreshed from 1.5 s), {CALLERS} callers, real time, 2 workers",
            support::show(LATENCY)
        );
        println!("first fetch (cold, the only call that may wait): {}", support::show(first_fetch));
        for (i, (arrived, answered)) in windows.iter().enumerate() {
            println!(
                "token request {i}: in flight from {} to {}",
                support::show(*arrived),
                answered.map_or("(unfinished)".to_owned(), support::show)
            );
        }
        let refreshes: Vec<(Duration, Duration)> = windows
            .iter()
            .skip(1)
            .map(|&(from, to)| (from, to.unwrap_or(Duration::MAX)))
            .collect();
        let in_flight = |at: Duration| refreshes.iter().any(|&(from, to)| at >= from && at <= to);
        let all = summarize(samples.iter().map(|s| s.1));
        let during = summarize(samples.iter().filter(|s| in_flight(s.0)).map(|s| s.1));
        let outside = summarize(samples.iter().filter(|s| !in_flight(s.0)).map(|s| s.1));
        println!(
            "\n{:<44} {:>8}  {:>18}  {:>18}  {:>19}",
            "calls (ratios to the warm hit path)", "count", "p50", "p99", "max"
        );
        print("warm hit path (1 h token, phase A)", &warm, &warm);
        print("across refresh boundaries (all calls)", &all, &warm);
        print("  while a refresh was in flight", &during, &warm);
        print("  at other times", &outside, &warm);
        let waited = samples.iter().filter(|s| s.1 >= LATENCY).count();
        println!(
            "calls that took ≥ the server latency ({}): {waited}",
            support::show(LATENCY)
        );
        println!(
            "misses after the first fetch: {}; refreshes: {}; token requests: {}",
            stats.misses - after_first.misses,
            stats.refreshes,
            server.token_requests()
        );
    });
    println!("{}", support::load());
}
