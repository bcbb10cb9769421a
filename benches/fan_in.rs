//! Benchmark 3: fan-in. 1, 100 and 10,000 concurrent callers of `token_for` on a cold key,
//! against the in-process authorization server answering after a fixed 50 ms, in real time on
//! a 2-worker multi-thread runtime.
//!
//! Each round builds a new cache (a cold key), spawns the callers, waits until every one of them
//! is parked on a start signal, then releases them all at once; the wall time runs from the
//! release to the last caller holding its token. The figure for N callers is the median round,
//! as a ratio to the single caller's median round in the same run (the rounds of the three sizes
//! are interleaved, so load changes hit all three alike). Token requests are counted per round
//! and must be exactly 1. Beside it, the floor of the harness itself: the same callers released
//! the same way, all waiting for one shared 50 ms timer and doing nothing else (what perfect
//! single-flight with zero cost would take), so the overhead of the cache shows apart from the
//! cost of waking 10,000 tasks (twice: at the release and when the token is there).
//!
//! Run: `cargo bench --all-features --bench fan_in` (`FAN_IN_ROUNDS=N` to change the 15 rounds).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Barrier, watch};

use support::{MCP, MCP_REQUEST};

const LATENCY: Duration = Duration::from_millis(50);
const SIZES: [usize; 3] = [1, 100, 10_000];

struct Round {
    wall: Duration,
    token_requests: usize,
    slowest_caller: Duration,
}

/// What the callers do once released.
#[derive(Clone, Copy)]
enum Callers {
    /// `token_for` on a new cache (a cold key).
    Cache,
    /// The floor of this harness: wait for one shared 50 ms "fetch" (a watch channel set by a
    /// task that sleeps 50 ms) and nothing else, i.e. perfect single-flight with no cache.
    Floor,
}

async fn round(callers: usize, kind: Callers) -> Round {
    let server = support::server(LATENCY);
    let cache = support::builder(&server, &[MCP])
        .build()
        .expect("a valid cache");
    let url = Arc::new(support::url(MCP_REQUEST));
    let ready = Arc::new(Barrier::new(callers + 1));
    let (go, start) = watch::channel(false);
    let (fetched, done) = watch::channel(false);
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, url, ready, mut start, mut done) = (
                cache.clone(),
                url.clone(),
                ready.clone(),
                start.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                ready.wait().await;
                let _ = start.wait_for(|&go| go).await;
                let called = Instant::now();
                let token = match kind {
                    Callers::Cache => Some(cache.token_for(&url).await.expect("a token")),
                    Callers::Floor => {
                        let _ = done.wait_for(|&done| done).await;
                        None
                    }
                };
                let held = Instant::now();
                (token, held - called, held)
            })
        })
        .collect();
    ready.wait().await;
    let released = Instant::now();
    go.send_replace(true);
    if let Callers::Floor = kind {
        tokio::spawn(async move {
            tokio::time::sleep(LATENCY).await;
            fetched.send_replace(true);
        });
    }
    let mut first = None;
    let mut slowest_caller = Duration::ZERO;
    let mut last_held = released;
    for task in tasks {
        let (token, took, held) = task.await.expect("the caller ran");
        slowest_caller = slowest_caller.max(took);
        last_held = last_held.max(held);
        if let Some(token) = token {
            let first = first.get_or_insert_with(|| token.clone());
            assert!(token.same_token_as(first), "every caller got the one token");
        }
    }
    // Collecting the join handles afterwards is not part of the fan-in.
    let wall = last_held - released;
    Round {
        wall,
        token_requests: server.token_requests(),
        slowest_caller,
    }
}

fn main() {
    println!("{}", support::machine());
    let rounds = support::env_or("FAN_IN_ROUNDS", 15) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // One unmeasured round of each kind first, so allocator and runtime warm-up is not in the
    // first measured round.
    for &n in &SIZES {
        rt.block_on(round(n, Callers::Cache));
        rt.block_on(round(n, Callers::Floor));
    }
    let mut cache: Vec<Vec<Round>> = SIZES.iter().map(|_| Vec::new()).collect();
    let mut floor: Vec<Vec<Round>> = SIZES.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, &n) in SIZES.iter().enumerate() {
            cache[i].push(rt.block_on(round(n, Callers::Cache)));
            floor[i].push(rt.block_on(round(n, Callers::Floor)));
        }
    }
    let walls = |rounds: &[Round]| rounds.iter().map(|r| r.wall).collect::<Vec<_>>();
    let baseline = support::median(&walls(&cache[0]));
    println!(
        "\nfan-in, cold key, server latency {}, {rounds} rounds per size, real time, 2 workers",
        support::show(LATENCY)
    );
    println!(
        "{:>8}  {:>10} {:>10} {:>10}  {:>9}  {:>14}  {:>14}  {:>12}  {:>9}",
        "callers",
        "median",
        "min",
        "max",
        "÷ 1 call",
        "token requests",
        "slowest caller",
        "floor median",
        "÷ floor"
    );
    let mut all_one = true;
    for (i, &n) in SIZES.iter().enumerate() {
        let walls_n = walls(&cache[i]);
        let median = support::median(&walls_n);
        let min = walls_n.iter().min().copied().unwrap_or_default();
        let max = walls_n.iter().max().copied().unwrap_or_default();
        let mut counts: Vec<usize> = cache[i].iter().map(|r| r.token_requests).collect();
        all_one &= counts.iter().all(|&c| c == 1);
        counts.dedup();
        let slowest = cache[i]
            .iter()
            .map(|r| r.slowest_caller)
            .max()
            .unwrap_or_default();
        let floor_median = support::median(&walls(&floor[i]));
        println!(
            "{n:>8}  {:>10} {:>10} {:>10}  {:>8.3}×  {:>14}  {:>14}  {:>12}  {:>8.3}×",
            support::show(median),
            support::show(min),
            support::show(max),
            support::ratio(median, baseline),
            format!("{counts:?}"),
            support::show(slowest),
            support::show(floor_median),
            support::ratio(median, floor_median),
        );
    }
    println!(
        "token requests per round: {}",
        if all_one {
            "exactly 1 in every round"
        } else {
            "NOT always 1"
        }
    );
    println!("{}", support::load());
}
