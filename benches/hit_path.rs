//! Benchmark 1: the hit path. `TokenCache::token_for(&Url)` on a warm cache (a configured
//! resource, a JWT whose `aud` is that resource) against its floor, a bare
//! `moka::future::Cache::get` of an `Arc` under the same key type (`CacheKey`), and against a
//! `std::sync::Mutex<HashMap>` lookup.
//!
//! Each measurement runs a whole batch inside one `block_on` (criterion's `iter_custom`), so
//! entering the runtime is not what is measured. "1 thread" is a current-thread runtime; "2
//! threads" is two tasks on a 2-worker runtime, each making `iters` calls on the same key at the
//! same time, and the figure is the wall time divided by `iters`: what one call costs each of
//! two concurrent callers (perfect scaling would equal the 1-thread figure).
//!
//! After criterion, the same candidates run again interleaved (every candidate one batch per
//! round, each round's ratio to the floor taken within the round), which load drift on a shared
//! machine does not move; both are printed.
//!
//! Beside them: rmcp 3.11's warm hit (`AuthorizationManager::get_access_token` with a token in
//! its in-memory credential store, the slot its transports read before every request), and
//! `token_for` + `header_for` on a cache configured with 10,000 resources (1,000 origins × 10
//! paths), for the same kind of URL.
//!
//! At the end: the heap allocations of `token_for` + `header_for` over 100,000 warm hits,
//! counted by this binary's global allocator (on the calling thread), and each call's own
//! latency (p50, p99, max over 200,000 calls, each timed alone with `Instant::now`).
//!
//! Run: `cargo bench --all-features --bench hit_path` (ratios are printed at the end;
//! `HIT_ROUNDS`, `HIT_BATCH` change the 40 rounds of 20,000 calls). The interleaved rounds,
//! the allocation count and the latencies alone: `… --bench hit_path -- no_such_benchmark`.

mod support;
// Not in `support`: a global allocator there would count in every benchmark.
#[path = "support/counting.rs"]
mod counting;

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use audience_cache::audience::TokenAudience;
use audience_cache::{AudiencePolicy, CacheKey, ScopeSet, TokenCache};
use criterion::Criterion;
use moka::future::Cache;
use tokio::runtime::Runtime;
use url::Url;

use counting::{ALLOCATIONS, COUNTING};
use support::{MCP, MCP_REQUEST};

/// One operation to repeat; implemented per candidate so each loop is monomorphized.
trait Op: Send + Sync + 'static {
    fn run(&self) -> impl Future<Output = ()> + Send + '_;
}

struct MokaGet {
    store: Cache<CacheKey, Arc<String>>,
    key: CacheKey,
}

impl Op for MokaGet {
    async fn run(&self) {
        black_box(self.store.get(black_box(&self.key)).await.expect("stored"));
    }
}

struct MutexGet {
    map: Mutex<HashMap<CacheKey, Arc<String>>>,
    key: CacheKey,
}

impl Op for MutexGet {
    async fn run(&self) {
        let found = self
            .map
            .lock()
            .expect("not poisoned")
            .get(black_box(&self.key))
            .cloned();
        black_box(found.expect("stored"));
    }
}

struct TokenFor {
    cache: TokenCache,
    url: Url,
}

impl Op for TokenFor {
    async fn run(&self) {
        let token = self.cache.token_for(black_box(&self.url)).await;
        black_box(token.expect("a hit"));
    }
}

struct TokenForHeader {
    cache: TokenCache,
    url: Url,
}

impl Op for TokenForHeader {
    async fn run(&self) {
        let token = self
            .cache
            .token_for(black_box(&self.url))
            .await
            .expect("a hit");
        black_box(token.header_for(&self.url).expect("allowed"));
    }
}

/// rmcp 3.11's warm hit: its manager's token, from its in-memory credential store.
struct RmcpGet {
    manager: rmcp::transport::auth::AuthorizationManager,
}

impl Op for RmcpGet {
    async fn run(&self) {
        black_box(self.manager.get_access_token().await.expect("a token"));
    }
}

/// An rmcp manager holding `token` (granted now, for an hour), as it holds one after a grant.
async fn rmcp_manager(token: &str) -> rmcp::transport::auth::AuthorizationManager {
    use rmcp::transport::auth::{
        AuthorizationManager, CredentialStore as _, InMemoryCredentialStore, OAuthTokenResponse,
        StoredCredentials,
    };
    let response: OAuthTokenResponse = serde_json::from_value(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 3600,
    }))
    .expect("a token response");
    let store = InMemoryCredentialStore::new();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    store
        .save(StoredCredentials::new(
            "svc".to_owned(),
            Some(response),
            Vec::new(),
            Some(now),
        ))
        .await
        .expect("saved");
    let mut manager = AuthorizationManager::new("https://mcp.example.com/mcp")
        .await
        .expect("a manager");
    manager.set_credential_store(store);
    manager
}

/// 1,000 origins × 10 paths.
fn many_resources() -> Vec<String> {
    (0..1_000)
        .flat_map(|o| (0..10).map(move |p| format!("https://o{o:04}.example.com/p{p}")))
        .collect()
}

const MANY_REQUEST: &str = "https://o0500.example.com/p5/tools/call";

fn one_thread<O: Op>(rt: &Runtime, op: &O, iters: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            op.run().await;
        }
        start.elapsed()
    })
}

/// Two tasks, released together, each making `iters` calls; the wall time from the first
/// start to the last end.
fn two_threads<O: Op>(rt: &Runtime, op: &Arc<O>, iters: u64) -> Duration {
    rt.block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (op, barrier) = (op.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let start = Instant::now();
                    for _ in 0..iters {
                        op.run().await;
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        let mut spans = Vec::new();
        for task in tasks {
            spans.push(task.await.expect("the task ran"));
        }
        let first = spans.iter().map(|s| s.0).min().expect("two spans");
        let last = spans.iter().map(|s| s.1).max().expect("two spans");
        last - first
    })
}

struct Setup {
    rmcp: Arc<RmcpGet>,
    many: Arc<TokenForHeader>,
    moka: Arc<MokaGet>,
    moka_configured: Arc<MokaGet>,
    mutex: Arc<MutexGet>,
    token_for: Arc<TokenFor>,
    token_for_header: Arc<TokenForHeader>,
    token: String,
    key: CacheKey,
}

/// A warm cache (one token fetched from the in-process server) and the floors under the same
/// key type.
fn setup(rt: &Runtime) -> Setup {
    let server = support::server(Duration::ZERO);
    let cache = support::builder(&server, &[MCP])
        .build()
        .expect("a valid cache");
    let url = support::url(MCP_REQUEST);
    let token = rt.block_on(cache.token_for(&url)).expect("the first token");
    assert_eq!(
        token.audiences().expect("a JWT"),
        [MCP],
        "aud is the resource"
    );
    let key = token.key().clone();
    let value = Arc::new(token.expose_secret().to_owned());

    let bare = Cache::builder().max_capacity(64 * 1024 * 1024).build();
    // The floor configured like the crate's own store: a weigher and per-entry expiry.
    let configured = Cache::builder()
        .max_capacity(64 * 1024 * 1024)
        .weigher(|_k: &CacheKey, v: &Arc<String>| v.len() as u32 + 256)
        .expire_after(OneHour)
        .build();
    rt.block_on(async {
        bare.insert(key.clone(), value.clone()).await;
        configured.insert(key.clone(), value.clone()).await;
    });
    let map = Mutex::new(HashMap::from([(key.clone(), value.clone())]));
    let rmcp = rt.block_on(rmcp_manager(&value));
    let resources = many_resources();
    let names: Vec<&str> = resources.iter().map(String::as_str).collect();
    let many = support::builder(&server, &names)
        .build()
        .expect("a valid cache");
    let many_url = support::url(MANY_REQUEST);
    rt.block_on(many.token_for(&many_url))
        .expect("the first token");
    Setup {
        rmcp: Arc::new(RmcpGet { manager: rmcp }),
        many: Arc::new(TokenForHeader {
            cache: many,
            url: many_url,
        }),
        moka: Arc::new(MokaGet {
            store: bare,
            key: key.clone(),
        }),
        moka_configured: Arc::new(MokaGet {
            store: configured,
            key: key.clone(),
        }),
        mutex: Arc::new(MutexGet {
            map,
            key: key.clone(),
        }),
        token_for: Arc::new(TokenFor {
            cache: cache.clone(),
            url: url.clone(),
        }),
        token_for_header: Arc::new(TokenForHeader { cache, url }),
        token: value.to_string(),
        key,
    }
}

struct OneHour;

impl moka::Expiry<CacheKey, Arc<String>> for OneHour {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        _value: &Arc<String>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(3600))
    }
}

const CANDIDATES: [&str; 5] = [
    "moka_get",
    "moka_get_configured",
    "mutex_hashmap",
    "token_for",
    "token_for_then_header_for",
];

fn hit_path(c: &mut Criterion) {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let s = setup(&current);

    let mut group = c.benchmark_group("hit_1_thread");
    group.bench_function("moka_get", |b| {
        b.iter_custom(|iters| one_thread(&current, &*s.moka, iters))
    });
    group.bench_function("moka_get_configured", |b| {
        b.iter_custom(|iters| one_thread(&current, &*s.moka_configured, iters))
    });
    group.bench_function("mutex_hashmap", |b| {
        b.iter_custom(|iters| one_thread(&current, &*s.mutex, iters))
    });
    group.bench_function("token_for", |b| {
        b.iter_custom(|iters| one_thread(&current, &*s.token_for, iters))
    });
    group.bench_function("token_for_then_header_for", |b| {
        b.iter_custom(|iters| one_thread(&current, &*s.token_for_header, iters))
    });
    group.finish();

    let mut group = c.benchmark_group("hit_2_threads");
    group.bench_function("moka_get", |b| {
        b.iter_custom(|iters| two_threads(&multi, &s.moka, iters))
    });
    group.bench_function("moka_get_configured", |b| {
        b.iter_custom(|iters| two_threads(&multi, &s.moka_configured, iters))
    });
    group.bench_function("mutex_hashmap", |b| {
        b.iter_custom(|iters| two_threads(&multi, &s.mutex, iters))
    });
    group.bench_function("token_for", |b| {
        b.iter_custom(|iters| two_threads(&multi, &s.token_for, iters))
    });
    group.bench_function("token_for_then_header_for", |b| {
        b.iter_custom(|iters| two_threads(&multi, &s.token_for_header, iters))
    });
    group.finish();

    // What the hit path is made of, each part alone (synchronous, no runtime).
    let resource = s.key.resource().clone();
    let url = support::url(MCP_REQUEST);
    let audience = TokenAudience::inspect(&s.token);
    let policy = AudiencePolicy::default();
    let empty = ScopeSet::empty();
    let mut group = c.benchmark_group("hit_parts");
    group.bench_function("resource_covers", |b| {
        b.iter(|| black_box(resource.covers(black_box(&url))))
    });
    group.bench_function("decide_inspected", |b| {
        b.iter(|| black_box(policy.decide_inspected(&resource, black_box(&url), &audience)))
    });
    group.bench_function("scope_union_empty", |b| {
        b.iter(|| black_box(black_box(&empty).union(black_box(&empty))))
    });
    group.bench_function("cache_key_new", |b| {
        b.iter(|| {
            black_box(CacheKey::new(
                black_box(s.key.issuer()),
                &resource,
                &empty,
                "svc",
            ))
        })
    });
    group.bench_function("instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    group.finish();
}

fn interleaved_all() {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let s = setup(&current);
    let rounds = support::env_or("HIT_ROUNDS", 40) as usize;
    let batch = support::env_or("HIT_BATCH", 20_000);
    if rounds == 0 {
        return;
    }
    let one: [(&str, &dyn Fn(u64) -> Duration); 7] = [
        ("moka_get", &|n| one_thread(&current, &*s.moka, n)),
        ("rmcp_get_access_token", &|n| {
            one_thread(&current, &*s.rmcp, n)
        }),
        ("moka_get_configured", &|n| {
            one_thread(&current, &*s.moka_configured, n)
        }),
        ("mutex_hashmap", &|n| one_thread(&current, &*s.mutex, n)),
        ("token_for", &|n| one_thread(&current, &*s.token_for, n)),
        ("token_for_then_header_for", &|n| {
            one_thread(&current, &*s.token_for_header, n)
        }),
        ("…, 10,000 resources", &|n| {
            one_thread(&current, &*s.many, n)
        }),
    ];
    support::interleaved("hit, 1 thread", &one, rounds, batch);
    let two: [(&str, &dyn Fn(u64) -> Duration); 7] = [
        ("moka_get", &|n| two_threads(&multi, &s.moka, n)),
        ("rmcp_get_access_token", &|n| {
            two_threads(&multi, &s.rmcp, n)
        }),
        ("moka_get_configured", &|n| {
            two_threads(&multi, &s.moka_configured, n)
        }),
        ("mutex_hashmap", &|n| two_threads(&multi, &s.mutex, n)),
        ("token_for", &|n| two_threads(&multi, &s.token_for, n)),
        ("token_for_then_header_for", &|n| {
            two_threads(&multi, &s.token_for_header, n)
        }),
        ("…, 10,000 resources", &|n| {
            two_threads(&multi, &s.many, n)
        }),
    ];
    support::interleaved("hit, 2 threads", &two, rounds, batch);
    allocations(&current, &s);
    latencies(&current, &s);
}

/// The allocations of warm hits, on the calling thread.
fn allocations(rt: &Runtime, s: &Setup) {
    const HITS: u64 = 100_000;
    println!("\nheap allocations on the calling thread over {HITS} warm calls:");
    for (name, op) in [
        ("token_for_then_header_for", &s.token_for_header),
        ("…, 10,000 resources", &s.many),
    ] {
        let counted = rt.block_on(async {
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            COUNTING.with(|c| c.set(true));
            for _ in 0..HITS {
                op.run().await;
            }
            COUNTING.with(|c| c.set(false));
            ALLOCATIONS.load(Ordering::Relaxed) - before
        });
        println!(
            "  {name:<28} {counted} ({:.2} per call)",
            counted as f64 / HITS as f64
        );
        assert_eq!(counted, 0, "a warm hit allocates nothing");
    }
    let counted = rt.block_on(async {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        for _ in 0..HITS {
            s.rmcp.run().await;
        }
        COUNTING.with(|c| c.set(false));
        ALLOCATIONS.load(Ordering::Relaxed) - before
    });
    println!(
        "  {:<28} {counted} ({:.2} per call)",
        "rmcp_get_access_token",
        counted as f64 / HITS as f64
    );
}

/// Each call timed alone: p50, p99 and the largest, interleaved in blocks of 1,000 calls per
/// candidate so that load drift touches all alike.
fn latencies(rt: &Runtime, s: &Setup) {
    const BLOCKS: usize = 200;
    const PER_BLOCK: usize = 1_000;
    let candidates: [(&str, &dyn Fn() -> Vec<Duration>); 4] = [
        ("moka_get", &|| timed(rt, &*s.moka, PER_BLOCK)),
        ("rmcp_get_access_token", &|| timed(rt, &*s.rmcp, PER_BLOCK)),
        ("token_for_then_header_for", &|| {
            timed(rt, &*s.token_for_header, PER_BLOCK)
        }),
        ("…, 10,000 resources", &|| timed(rt, &*s.many, PER_BLOCK)),
    ];
    let mut samples: Vec<Vec<Duration>> = candidates.iter().map(|_| Vec::new()).collect();
    for _ in 0..BLOCKS {
        for (i, (_, run)) in candidates.iter().enumerate() {
            samples[i].extend(run());
        }
    }
    println!(
        "\neach call timed alone (Instant::now before and after), 1 thread, {} calls each:",
        BLOCKS * PER_BLOCK
    );
    println!(
        "  {:<28} {:>8} {:>8} {:>10} {:>9}",
        "", "p50", "p99", "max", "p99/p50"
    );
    for (i, (name, _)) in candidates.iter().enumerate() {
        let sorted = &mut samples[i];
        sorted.sort_unstable();
        let (p50, p99) = (
            support::quantile(sorted, 0.5),
            support::quantile(sorted, 0.99),
        );
        println!(
            "  {name:<28} {:>8} {:>8} {:>10} {:>8.2}×",
            support::show(p50),
            support::show(p99),
            support::show(*sorted.last().expect("samples")),
            support::ratio(p99, p50)
        );
    }
}

fn timed<O: Op>(rt: &Runtime, op: &O, n: usize) -> Vec<Duration> {
    rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            op.run().await;
            out.push(start.elapsed());
        }
        out
    })
}

fn main() {
    let started = SystemTime::now();
    println!("{}", support::machine());
    let mut c = Criterion::default()
        .output_directory(&support::criterion_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    hit_path(&mut c);
    c.final_summary();
    for group in ["hit_1_thread", "hit_2_threads"] {
        support::print_ratios(group, &CANDIDATES, (group, "moka_get"), started);
    }
    support::print_ratios(
        "hit_parts",
        &[
            "resource_covers",
            "decide_inspected",
            "scope_union_empty",
            "cache_key_new",
            "instant_now",
        ],
        ("hit_1_thread", "moka_get"),
        started,
    );
    println!("{}", support::load());
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    interleaved_all();
    println!("{}", support::load());
}
