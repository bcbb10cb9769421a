//! Benchmark 7: the shared level's hit path. Reading a token from Redis (feature `redis`) —
//! the entry's names (HMAC-SHA-256 of the cache key), one `MGET` of the entry and its
//! generation record on loopback through the crate's `ConnectionManager`, opening the record
//! and the XChaCha20-Poly1305 envelope, parsing and checking the payload, the schedule and
//! reading `aud` — against its floor, a bare `redis` `GET` of a value of the entry's size
//! through a `ConnectionManager` of its own, on the same server.
//!
//! The read is `TokenCache::read_shared_level` (doc-hidden, for this benchmark): the work a
//! flight does when the in-memory level missed and the shared level has the token, less
//! storing it in memory and the flight's task. Both candidates run on a current-thread runtime,
//! one call at a time, a whole batch inside one `block_on`. After criterion the two run again
//! interleaved (every round one batch each, the ratio taken within the round).
//!
//! Run: `cargo bench --all-features --bench shared_level` (needs `redis-server`; it starts its
//! own on a free loopback port). `L2_ROUNDS`, `L2_BATCH` change the 30 rounds of 2,000 calls.

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;
mod support;

use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use audience_cache::{ResourceUri, ScopeSet, SealingKey, SharedLevel, TokenCache};
use criterion::Criterion;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use tokio::runtime::Runtime;

use support::MCP;

const GROUP: &str = "shared_level";

struct Setup {
    _redis: redis_support::RedisServer,
    cache: TokenCache,
    resource: ResourceUri,
    raw: ConnectionManager,
    size: usize,
}

fn setup(runtime: &Runtime) -> Setup {
    let redis = redis_support::RedisServer::start();
    runtime.block_on(async {
        let server = support::server(Duration::ZERO);
        let level = SharedLevel::new(redis.url().as_str(), [SealingKey::new(1, [0x5A; 32])])
            .expect("a Redis URL")
            .namespace("bench");
        let cache = support::builder(&server, &[MCP])
            .shared_level(level)
            .build()
            .expect("a cache");
        let resource = support::resource_uri(MCP);
        cache
            .token(&resource, &ScopeSet::empty())
            .await
            .expect("a token, written to Redis");
        let client = redis::Client::open(redis.url().as_str()).expect("a Redis URL");
        let mut raw = ConnectionManager::new(client).await.expect("a connection");
        let names: Vec<String> = raw.keys("bench:tok:*").await.expect("KEYS");
        let entry: Vec<u8> = raw.get(&names[0]).await.expect("the entry");
        let size = entry.len();
        // The floor reads a value of the same size (not an envelope: nothing to open).
        let _: () = raw
            .set("bench:plain", vec![0x42u8; size])
            .await
            .expect("SET");
        Setup {
            _redis: redis,
            cache,
            resource,
            raw,
            size,
        }
    })
}

fn batch<F: Future<Output = ()>>(runtime: &Runtime, iters: u64, op: impl Fn() -> F) -> Duration {
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            op().await;
        }
        start.elapsed()
    })
}

fn redis_get(s: &Setup) -> impl Future<Output = ()> + '_ {
    let mut raw = s.raw.clone();
    async move {
        let value: Vec<u8> = raw.get(black_box("bench:plain")).await.expect("GET");
        black_box(value);
    }
}

async fn l2_read(s: &Setup) {
    let token = s.cache.read_shared_level(black_box(&s.resource)).await;
    black_box(token.expect("a token from the shared level"));
}

fn main() {
    let started = SystemTime::now();
    println!("{}", support::machine());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let s = setup(&runtime);
    println!("value size: {} bytes (the sealed entry)", s.size);
    let mut c = Criterion::default()
        .output_directory(&support::criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30)
        .configure_from_args();
    {
        let mut group = c.benchmark_group(GROUP);
        group.bench_function("redis_get", |b| {
            b.iter_custom(|iters| batch(&runtime, iters, || redis_get(&s)))
        });
        group.bench_function("l2_read", |b| {
            b.iter_custom(|iters| batch(&runtime, iters, || l2_read(&s)))
        });
        group.finish();
    }
    c.final_summary();
    support::print_ratios(
        GROUP,
        &["redis_get", "l2_read"],
        (GROUP, "redis_get"),
        started,
    );
    println!("{}", support::load());
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rounds = support::env_or("L2_ROUNDS", 30) as usize;
    let size = support::env_or("L2_BATCH", 2_000);
    if rounds == 0 {
        return;
    }
    let mut floor = Vec::new();
    let mut read = Vec::new();
    for _ in 0..rounds {
        floor.push(batch(&runtime, size, || redis_get(&s)) / size as u32);
        read.push(batch(&runtime, size, || l2_read(&s)) / size as u32);
    }
    let mut ratios: Vec<f64> = read
        .iter()
        .zip(&floor)
        .map(|(r, f)| support::ratio(*r, *f))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((q * (ratios.len() - 1) as f64).round()) as usize];
    println!(
        "\nshared level, interleaved: {rounds} rounds of {size} calls each; ratio to redis_get in the same round"
    );
    println!(
        "  redis_get  {:>10}  1.00×\n  l2_read    {:>10}  {:.2}× (IQR {:.2}–{:.2})",
        support::show_precise(support::median(&floor)),
        support::show_precise(support::median(&read)),
        at(0.5),
        at(0.25),
        at(0.75)
    );
    println!("{}", support::load());
}
