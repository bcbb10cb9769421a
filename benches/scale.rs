//! Benchmark 5: scale. One cache grown to 10k, 100k and 1M distinct keys (distinct scope sets
//! on one resource), filled through the in-process authorization server:
//!
//! - resident memory per entry apart from the token bytes: the growth of `VmRSS` (from
//!   /proc/self/status) since a 1,000-key starting point, less the bytes of the tokens added,
//!   divided by the entries added. It includes everything the process keeps per entry (the
//!   cache key, the parsed audience, the store's own bookkeeping, allocator overhead and
//!   fragmentation), so it is an upper bound on what the cache itself holds;
//! - hit latency as the cache grows: `token_for_scopes` for keys drawn at random from all those
//!   stored, single-threaded, as a ratio to the same measurement at the 1,000-key start of the
//!   same run;
//! - the capacity bound: a second cache with `max_capacity(8 MiB)` (each entry weighs its token
//!   plus 256 bytes) filled with 100k keys, showing that its entry count and memory stay bounded
//!   and that a second pass over the keys finds only about as many as fit.
//!
//! - the same growth with tokens of about 800 bytes (part `large`), and the resident memory of
//!   the whole process at 1M entries, from /proc/self/statm.
//!
//! Run: `cargo bench --all-features --bench scale` (`SCALE_MAX=100000` stops the growth early;
//! `SCALE_PARTS=growth,large` runs only those parts).

mod support;

use std::time::{Duration, Instant};

use audience_cache::testing::AuthorizationServer;
use audience_cache::{ResourceUri, ScopeSet, TokenCache};
use rand::Rng as _;
use url::Url;

use support::{API, API_REQUEST};

/// Keys filled at once (each a token request in flight).
const CONCURRENCY: usize = 256;
const SAMPLE_KEYS: usize = 65_536;
const HIT_CALLS: usize = 300_000;

fn scopes(i: usize) -> ScopeSet {
    ScopeSet::parse(&format!("read:{i:07}")).expect("a valid scope")
}

/// Fills keys `from..to`, `CONCURRENCY` at a time; returns the token bytes added.
async fn fill(
    cache: &TokenCache,
    server: &AuthorizationServer,
    resource: &ResourceUri,
    from: usize,
    to: usize,
) -> u64 {
    let mut bytes = 0u64;
    let mut next = from;
    while next < to {
        let end = (next + CONCURRENCY).min(to);
        let tasks: Vec<_> = (next..end)
            .map(|i| {
                let (cache, resource) = (cache.clone(), resource.clone());
                tokio::spawn(async move {
                    let token = cache.token(&resource, &scopes(i)).await.expect("a token");
                    token.expose_secret().len() as u64
                })
            })
            .collect();
        for task in tasks {
            bytes += task.await.expect("the filler ran");
        }
        // The server's request log is not the cache's memory.
        server.reset_counts();
        next = end;
    }
    bytes
}

/// Mean time of one hit for keys drawn at random from `0..stored`. The sample is refilled in
/// place, so that measuring does not change the memory that the next size measures.
async fn hit_latency(cache: &TokenCache, stored: usize, sample: &mut [ScopeSet]) -> Duration {
    let url = Url::parse(API_REQUEST).expect("a URL");
    let mut rng = rand::thread_rng();
    for slot in sample.iter_mut() {
        *slot = scopes(rng.gen_range(0..stored));
    }
    let before = cache.stats();
    let started = Instant::now();
    for i in 0..HIT_CALLS {
        let token = cache
            .token_for_scopes(&url, &sample[i % sample.len()])
            .await
            .expect("a hit");
        std::hint::black_box(token);
    }
    let took = started.elapsed();
    let after = cache.stats();
    assert_eq!(after.fetches, before.fetches, "every call was a hit");
    took / HIT_CALLS as u32
}

fn entries(cache: &TokenCache) -> u64 {
    // The entry count is only public through Debug ("TokenCache { entries: N, .. }").
    let shown = format!("{cache:?}");
    shown
        .split("entries: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// Grows one cache to `max` keys; the server knows the client as `client_id` (a longer one
/// makes longer tokens: a JWT carries it twice, as `sub` and `client_id`, and the cache key
/// holds it once for all keys).
async fn growth(max: usize, client_id: &str) {
    let server = audience_cache::testing::AuthorizationServer::builder()
        .client(audience_cache::testing::Client::confidential(
            client_id, "s3cret",
        ))
        .in_process();
    let resource = support::resource_uri(API);
    let cache = TokenCache::builder()
        .in_process(&server)
        .client(
            audience_cache::ClientRegistration::new(
                server.issuer(),
                support::url(&server.token_endpoint()),
                client_id,
            )
            .client_secret_basic("s3cret".into()),
        )
        .resource(audience_cache::ResourceConfig::new(
            resource.clone(),
            server.issuer(),
        ))
        .max_capacity(4 * 1024 * 1024 * 1024)
        .build()
        .expect("a cache");
    const START: usize = 1_000;
    fill(&cache, &server, &resource, 0, START).await;
    let mut sample = vec![ScopeSet::empty(); SAMPLE_KEYS];
    let base_latency = hit_latency(&cache, START, &mut sample).await;
    let base_rss = support::rss_bytes();
    println!(
        "\nscale: one resource, distinct scope sets, max_capacity 4 GiB (nothing evicted)\nstart: {START} keys, RSS {:.1} MiB, hit {}",
        mib(base_rss),
        support::show(base_latency)
    );
    println!(
        "{:>9}  {:>9}  {:>10}  {:>11}  {:>12}  {:>13}  {:>9}  {:>10}",
        "keys", "fill", "RSS", "token bytes", "RSS growth", "per entry", "hit", "÷ 1k keys"
    );
    let mut stored = START;
    let mut token_bytes = 0u64;
    for size in [10_000, 100_000, 1_000_000] {
        if size > max {
            println!("{size:>9}  not measured (SCALE_MAX={max})");
            continue;
        }
        let started = Instant::now();
        token_bytes += fill(&cache, &server, &resource, stored, size).await;
        let fill_time = started.elapsed();
        stored = size;
        let rss = support::rss_bytes();
        let growth = rss.saturating_sub(base_rss);
        let added = (stored - START) as u64;
        let per_entry = growth.saturating_sub(token_bytes) as f64 / added as f64;
        let latency = hit_latency(&cache, stored, &mut sample).await;
        println!(
            "{size:>9}  {:>7.1} s  {:>6.1} MiB  {:>7.1} MiB  {:>8.1} MiB  {:>7.0} B+tok  {:>9}  {:>9.2}×",
            fill_time.as_secs_f64(),
            mib(rss),
            mib(token_bytes),
            mib(growth),
            per_entry,
            support::show(latency),
            support::ratio(latency, base_latency),
        );
        println!(
            "           (mean token {:.0} bytes; entries stored: {}; resident {:.1} MiB by /proc/self/statm)",
            token_bytes as f64 / added as f64,
            entries(&cache),
            mib(support::statm_resident_bytes())
        );
    }
}

type Floor = moka::future::Cache<audience_cache::CacheKey, std::sync::Arc<String>>;

fn floor_key(resource: &ResourceUri, i: usize) -> audience_cache::CacheKey {
    audience_cache::CacheKey::new(support::ISSUER, resource, &scopes(i), "svc")
}

/// Inserts keys `from..to` with `token_len`-byte values; returns the value bytes added.
async fn floor_fill(
    store: &Floor,
    resource: &ResourceUri,
    from: usize,
    to: usize,
    token_len: usize,
) -> u64 {
    let mut bytes = 0;
    for i in from..to {
        let token = format!("{i:0>token_len$}");
        bytes += token.len() as u64;
        store
            .insert(floor_key(resource, i), std::sync::Arc::new(token))
            .await;
    }
    store.run_pending_tasks().await;
    bytes
}

/// Mean time of one `get` for keys drawn at random from `0..stored` (sample refilled in place).
async fn floor_get(
    store: &Floor,
    resource: &ResourceUri,
    stored: usize,
    sample: &mut [audience_cache::CacheKey],
) -> Duration {
    let mut rng = rand::thread_rng();
    for slot in sample.iter_mut() {
        *slot = floor_key(resource, rng.gen_range(0..stored));
    }
    let started = Instant::now();
    for i in 0..HIT_CALLS {
        std::hint::black_box(store.get(&sample[i % sample.len()]).await.expect("stored"));
    }
    started.elapsed() / HIT_CALLS as u32
}

/// The floor for the same sizes: a bare `moka::future::Cache<CacheKey, Arc<String>>` (the
/// crate's key type, a token-sized string as the value, no weigher or expiry), filled directly.
async fn floor(max: usize, token_len: usize) {
    let resource = support::resource_uri(API);
    let store: Floor = moka::future::Cache::builder()
        .max_capacity(u64::MAX)
        .build();
    const START: usize = 1_000;
    floor_fill(&store, &resource, 0, START, token_len).await;
    let mut sample: Vec<_> = (0..SAMPLE_KEYS)
        .map(|i| floor_key(&resource, i % START))
        .collect();
    let base_latency = floor_get(&store, &resource, START, &mut sample).await;
    let base_rss = support::rss_bytes();
    println!(
        "\nfloor: bare moka::future::Cache<CacheKey, Arc<String>>, {token_len}-byte values\nstart: {START} keys, RSS {:.1} MiB, get {}",
        mib(base_rss),
        support::show(base_latency)
    );
    println!(
        "{:>9}  {:>10}  {:>11}  {:>12}  {:>13}  {:>9}  {:>10}",
        "keys", "RSS", "value bytes", "RSS growth", "per entry", "get", "÷ 1k keys"
    );
    let mut stored = START;
    let mut value_bytes = 0;
    for size in [10_000, 100_000, 1_000_000] {
        if size > max {
            continue;
        }
        value_bytes += floor_fill(&store, &resource, stored, size, token_len).await;
        stored = size;
        let rss = support::rss_bytes();
        let growth = rss.saturating_sub(base_rss);
        let per_entry = growth.saturating_sub(value_bytes) as f64 / (stored - START) as f64;
        let latency = floor_get(&store, &resource, stored, &mut sample).await;
        println!(
            "{size:>9}  {:>6.1} MiB  {:>7.1} MiB  {:>8.1} MiB  {:>7.0} B+val  {:>9}  {:>9.2}×",
            mib(rss),
            mib(value_bytes),
            mib(growth),
            per_entry,
            support::show(latency),
            support::ratio(latency, base_latency),
        );
    }
}

async fn capacity() {
    const CAPACITY: u64 = 8 * 1024 * 1024;
    const KEYS: usize = 100_000;
    let server = support::server(Duration::ZERO);
    let resource = support::resource_uri(API);
    let cache = support::builder(&server, &[API])
        .max_capacity(CAPACITY)
        .build()
        .expect("a cache");
    let rss_start = support::rss_bytes();
    println!(
        "\ncapacity bound: max_capacity {:.0} MiB, {KEYS} distinct keys filled in order",
        mib(CAPACITY)
    );
    println!("{:>9}  {:>14}  {:>12}", "filled", "entries", "RSS growth");
    let mut token_bytes = 0;
    for step in (0..KEYS).step_by(10_000) {
        token_bytes += fill(&cache, &server, &resource, step, step + 10_000).await;
        println!(
            "{:>9}  {:>14}  {:>8.1} MiB",
            step + 10_000,
            entries(&cache),
            mib(support::rss_bytes().saturating_sub(rss_start))
        );
    }
    let weight = token_bytes as f64 / KEYS as f64 + 256.0;
    let fit = CAPACITY as f64 / weight;
    // The server now refuses every token request, so a key that is not stored fails instead of
    // being fetched and stored again: the pass changes nothing and counts what is there.
    server.script(|s| s.fail_always = Some(audience_cache::testing::Failure::InvalidTarget));
    let before = cache.stats();
    let mut stored = 0;
    for i in 0..KEYS {
        if cache.token(&resource, &scopes(i)).await.is_ok() {
            stored += 1;
        }
    }
    let after = cache.stats();
    println!(
        "mean weight per entry {weight:.0} bytes, so about {fit:.0} entries fit; looking up all {KEYS} keys (the server refusing new tokens) found {stored} stored ({} hits, {} misses)",
        after.hits - before.hits,
        after.misses - before.misses
    );
}

/// Each part runs in a process of its own (this binary again, with `SCALE_PART` set), so
/// that memory one part freed cannot hide what the other allocates.
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    match std::env::var("SCALE_PART").as_deref() {
        Ok("growth") => {
            let max = support::env_or("SCALE_MAX", 1_000_000) as usize;
            rt.block_on(growth(max, "svc"));
        }
        // Tokens of about 800 bytes, through a client id of 177 characters.
        Ok("large") => {
            let max = support::env_or("SCALE_MAX", 1_000_000) as usize;
            let len = support::env_or("SCALE_CLIENT_LEN", 177) as usize;
            println!("\nlarge tokens: a client id of {len} characters");
            rt.block_on(growth(max, &"c".repeat(len)));
        }
        Ok("capacity") => rt.block_on(capacity()),
        Ok("floor") => {
            let max = support::env_or("SCALE_MAX", 1_000_000) as usize;
            rt.block_on(floor(max, support::env_or("SCALE_TOKEN_LEN", 337) as usize));
        }
        _ => {
            println!("{}", support::machine());
            let me = std::env::current_exe().expect("this benchmark's path");
            let parts = std::env::var("SCALE_PARTS")
                .unwrap_or_else(|_| "growth,large,floor,capacity".to_owned());
            for part in parts.split(',') {
                let status = std::process::Command::new(&me)
                    .env("SCALE_PART", part)
                    .status()
                    .expect("the part ran");
                assert!(status.success(), "the {part} part failed");
                println!("{}", support::load());
            }
        }
    }
}
