//! The shared level on a real Redis (feature `redis`; `redis-server` must be installed):
//! one token request for a fleet of processes, a warm start, degradation to memory while Redis
//! is down and recovery when it is back, sealed values that do not open when changed, moved or
//! sealed under a key no longer listed, the audience decision on tokens read from Redis, and
//! refresh tokens kept out of Redis unless shared on purpose.
//!
//! The fleet tests run worker processes: this test binary again, running only the test
//! `worker`, which does nothing unless `SHARED_LEVEL_WORKER` is set.

mod redis_support;
mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use audience_cache::testing::{AudienceStyle, AuthorizationServer, Client};
use audience_cache::{
    ClientRegistration, Error, ResourceConfig, ScopeSet, SealingKey, SharedLevel, Stats, TokenCache,
};
use redis::AsyncCommands as _;
use redis_support::RedisServer;
use support::{MCP, approve, builder, config, new_server, public_app, resource, scopes, url};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::watch;

const NS: &str = "test-fleet";
const KEY_A: [u8; 32] = [0xA1; 32];
const KEY_B: [u8; 32] = [0xB2; 32];

fn level(redis: &RedisServer, keys: &[(u8, [u8; 32])]) -> SharedLevel {
    SharedLevel::new(
        redis.url().as_str(),
        keys.iter().map(|&(id, key)| SealingKey::new(id, key)),
    )
    .unwrap()
    .namespace(NS)
}

/// A cache with the in-process server's confidential client, the resource `MCP`, and a shared
/// level on `redis` with `keys`.
fn cache(server: &AuthorizationServer, redis: &RedisServer, keys: &[(u8, [u8; 32])]) -> TokenCache {
    builder(server, support::confidential())
        .resource(config(MCP))
        .shared_level(level(redis, keys))
        .build()
        .unwrap()
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys_like(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = raw(redis).await.keys(pattern).await.unwrap();
    keys.sort();
    keys
}

// ---------------------------------------------------------------------------------------------
// The fleet: worker processes.

/// The worker's side of the fleet tests; a no-op in a normal run.
///
/// Environment: `SHARED_LEVEL_WORKER` (set), `AS_ISSUER`, `REDIS_URL`, `CALLERS`. The worker
/// builds a cache, spawns the callers, prints `WORKER-READY`, waits for a line on stdin, releases
/// the callers, and prints `WORKER-STATS {json}` once every caller holds its token.
#[test]
fn worker() {
    if std::env::var_os("SHARED_LEVEL_WORKER").is_none() {
        return;
    }
    let env = |name: &str| std::env::var(name).unwrap();
    let issuer = env("AS_ISSUER");
    let redis_url = env("REDIS_URL");
    let callers: usize = env("CALLERS").parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let cache = TokenCache::builder()
            .allow_insecure_http_on_loopback(true)
            .client(
                ClientRegistration::new(&issuer, url(&format!("{issuer}/token")), "svc")
                    .client_secret_basic("s3cret".into()),
            )
            .resource(ResourceConfig::new(resource(MCP), &issuer))
            .shared_level(
                SharedLevel::new(redis_url.as_str(), [SealingKey::new(1, KEY_A)])
                    .unwrap()
                    .namespace(NS),
            )
            .build()
            .unwrap();
        let target = Arc::new(url(&format!("{MCP}/tools/call")));
        let (go, start) = watch::channel(false);
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (cache, target, mut start) = (cache.clone(), target.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait_for(|&go| go).await.unwrap();
                    cache.token_for(&target).await
                })
            })
            .collect();
        println!("\nWORKER-READY");
        let mut line = String::new();
        BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await
            .unwrap();
        go.send_replace(true);
        let mut ok = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        let s = cache.stats();
        println!(
            "\nWORKER-STATS {{\"ok\":{ok},\"fetches\":{},\"hits\":{},\"misses\":{},\"l2_hits\":{},\"l2_misses\":{},\"l2_lock_waits\":{},\"l2_decrypt_failures\":{},\"l2_errors\":{},\"l2_writes\":{}}}",
            s.fetches,
            s.hits,
            s.misses,
            s.l2_hits,
            s.l2_misses,
            s.l2_lock_waits,
            s.l2_decrypt_failures,
            s.l2_errors,
            s.l2_writes
        );
    });
}

/// The longest a worker may take to get ready, or to finish.
const WORKER_LIMIT: Duration = Duration::from_secs(60);

/// A worker process, started and waiting for its go line.
struct Worker {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Worker {
    async fn start(server: &AuthorizationServer, redis: &RedisServer, callers: usize) -> Self {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "worker", "--nocapture", "--test-threads", "1"])
            .env("SHARED_LEVEL_WORKER", "1")
            .env("AS_ISSUER", server.issuer())
            .env("REDIS_URL", redis.url())
            .env("CALLERS", callers.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = async {
            loop {
                let line = stdout.next_line().await.unwrap();
                let line = line.expect("the worker said WORKER-READY");
                // libtest may have printed `test worker ... ` on the same line.
                if line.ends_with("WORKER-READY") {
                    break;
                }
            }
        };
        tokio::time::timeout(WORKER_LIMIT, ready)
            .await
            .expect("the worker was ready within 60 s");
        Self { child, stdout }
    }

    async fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// The worker's counters, once it is done.
    async fn stats(mut self) -> BTreeMap<String, u64> {
        let mut stats = None;
        let done = async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                if let Some((_, json)) = line.split_once("WORKER-STATS ") {
                    stats = Some(serde_json::from_str(json).unwrap());
                }
            }
            self.child.wait().await.unwrap()
        };
        let status = tokio::time::timeout(WORKER_LIMIT, done)
            .await
            .expect("the worker finished within 60 s");
        assert!(status.success());
        stats.expect("the worker printed its WORKER-STATS")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_of_250_callers_make_one_token_request_and_a_fifth_starts_warm() {
    let redis = RedisServer::start();
    let server = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        // Long enough that all four processes miss while the first request is in flight.
        .script(|s| s.latency = Duration::from_millis(300))
        .start()
        .await
        .unwrap();

    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(Worker::start(&server, &redis, 250).await);
    }
    // All four have their callers waiting; release them together.
    for worker in &mut workers {
        worker.go().await;
    }
    let mut all = Vec::new();
    for worker in workers {
        all.push(worker.stats().await);
    }
    assert_eq!(server.token_requests(), 1, "{all:?}");
    assert!(all.iter().all(|s| s["ok"] == 250), "{all:?}");
    assert_eq!(all.iter().map(|s| s["fetches"]).sum::<u64>(), 1, "{all:?}");
    // One process fetched; the three others took its token from Redis.
    assert_eq!(all.iter().map(|s| s["l2_hits"]).sum::<u64>(), 3, "{all:?}");
    assert_eq!(
        all.iter().map(|s| s["l2_misses"]).sum::<u64>(),
        1,
        "{all:?}"
    );
    assert_eq!(
        all.iter().map(|s| s["l2_writes"]).sum::<u64>(),
        1,
        "{all:?}"
    );
    // One Redis round of reads per process: the in-process single-flight merged the callers.
    assert!(
        all.iter().all(|s| s["l2_hits"] + s["l2_misses"] == 1),
        "{all:?}"
    );
    assert!(
        all.iter().map(|s| s["l2_lock_waits"]).sum::<u64>() <= 3,
        "{all:?}"
    );
    assert!(all.iter().all(|s| s["l2_errors"] == 0), "{all:?}");

    // A fifth process, started afterwards, starts warm.
    let mut fifth = Worker::start(&server, &redis, 1).await;
    fifth.go().await;
    let fifth = fifth.stats().await;
    assert_eq!(server.token_requests(), 1, "{fifth:?}");
    assert_eq!(fifth["ok"], 1);
    assert_eq!(fifth["fetches"], 0, "{fifth:?}");
    assert_eq!(fifth["l2_hits"], 1, "{fifth:?}");
}

// ---------------------------------------------------------------------------------------------
// Failure: Redis down, Redis back.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_every_request_succeeds_and_the_level_is_used_again_after() {
    let mut redis = RedisServer::start();
    let server = new_server();
    let cache = cache(&server, &redis, &[(1, KEY_A)]);
    let mcp = resource(MCP);
    cache.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_eq!(cache.stats().l2_writes, 1);

    // Callers keep asking (cached keys and new ones) while Redis is killed and restarted.
    let stop = Arc::new(AtomicBool::new(false));
    let (asked, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let (cache, mcp, stop, asked, failed) = (
                cache.clone(),
                mcp.clone(),
                stop.clone(),
                asked.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Every other call a new account: a miss that goes to the shared level.
                    let account = format!("caller-{caller}-{}", i / 2);
                    let result = cache
                        .token_for_account(&mcp, &ScopeSet::empty(), &account)
                        .await;
                    asked.fetch_add(1, Ordering::Relaxed);
                    if let Err(error) = result {
                        eprintln!("{error}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(200)).await;
    let port = redis.port();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = cache.stats();
    assert!(during.l2_errors > 0, "{during:?}");

    // A cache that starts while Redis is down works in memory.
    let cold = self::cache(&server, &redis, &[(1, KEY_A)]);
    cold.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_eq!(cold.stats().fetches, 1);
    assert!(cold.stats().l2_errors > 0);

    let redis = RedisServer::start_on(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(asked.load(Ordering::Relaxed) > 50, "{asked:?}");

    // The cache that lived through the outage writes to Redis again by itself: a new key is
    // written there and another cache reads it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    let account = loop {
        attempt += 1;
        let account = format!("after-{attempt}");
        let writes = cache.stats().l2_writes;
        cache
            .token_for_account(&mcp, &ScopeSet::empty(), &account)
            .await
            .unwrap();
        if cache.stats().l2_writes > writes {
            break account;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shared level was not used again within 10 s of Redis coming back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reader = self::cache(&server, &redis, &[(1, KEY_A)]);
    reader
        .token_for_account(&mcp, &ScopeSet::empty(), &account)
        .await
        .unwrap();
    let stats = reader.stats();
    assert_eq!(
        (stats.l2_hits, stats.fetches, stats.l2_errors),
        (1, 0, 0),
        "{stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Sealing.

/// The one access-token entry in Redis.
async fn the_entry(redis: &RedisServer) -> (String, Vec<u8>) {
    let keys = keys_like(redis, &format!("{NS}:tok:*")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let value: Vec<u8> = raw(redis).await.get(&keys[0]).await.unwrap();
    (keys[0].clone(), value)
}

/// Asks a fresh cache (configured with `keys`) for the default key and returns its counters.
async fn fresh_reader(
    server: &AuthorizationServer,
    redis: &RedisServer,
    keys: &[(u8, [u8; 32])],
) -> Stats {
    let reader = cache(server, redis, keys);
    reader
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    reader.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_value_is_a_counted_miss_and_the_caller_still_gets_a_token() {
    let redis = RedisServer::start();
    let server = new_server();
    let writer = cache(&server, &redis, &[(1, KEY_A)]);
    writer
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    let (name, mut value) = the_entry(&redis).await;
    // Nothing readable is stored: no JSON, no JWT, no resource.
    assert!(!String::from_utf8_lossy(&value).contains("mcp.example.com"));
    assert!(!String::from_utf8_lossy(&value).contains("eyJ"));
    let last = value.len() - 1;
    value[last] ^= 0x01;
    let _: () = raw(&redis).await.set(&name, &value).await.unwrap();

    let stats = fresh_reader(&server, &redis, &[(1, KEY_A)]).await;
    assert_eq!(stats.l2_decrypt_failures, 1, "{stats:?}");
    assert_eq!((stats.l2_hits, stats.fetches), (0, 1), "{stats:?}");
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_moved_to_another_key_does_not_open() {
    let redis = RedisServer::start();
    let server = new_server();
    let writer = cache(&server, &redis, &[(1, KEY_A)]);
    let mcp = resource(MCP);
    // Alice's token, copied to Bob's entry.
    writer
        .token_for_account(&mcp, &ScopeSet::empty(), "alice")
        .await
        .unwrap();
    let (alice, value) = the_entry(&redis).await;
    writer
        .token_for_account(&mcp, &ScopeSet::empty(), "bob")
        .await
        .unwrap();
    let entries = keys_like(&redis, &format!("{NS}:tok:*")).await;
    let bob = entries.iter().find(|k| **k != alice).unwrap();
    let _: () = raw(&redis).await.set(bob, &value).await.unwrap();

    let reader = cache(&server, &redis, &[(1, KEY_A)]);
    let token = reader
        .token_for_account(&mcp, &ScopeSet::empty(), "bob")
        .await
        .unwrap();
    let stats = reader.stats();
    assert_eq!(stats.l2_decrypt_failures, 1, "{stats:?}");
    assert_eq!((stats.l2_hits, stats.fetches), (0, 1), "{stats:?}");
    assert_eq!(token.key().account(), Some("bob"));
    // Alice's own entry still opens for Alice.
    reader
        .token_for_account(&mcp, &ScopeSet::empty(), "alice")
        .await
        .unwrap();
    assert_eq!(reader.stats().l2_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_sealed_with_a_retired_key_opens_while_that_key_is_listed() {
    let redis = RedisServer::start();
    let server = new_server();
    let writer = cache(&server, &redis, &[(1, KEY_A)]);
    writer
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();

    // B is the newest, A retired but listed: opens.
    let rotated = fresh_reader(&server, &redis, &[(2, KEY_B), (1, KEY_A)]).await;
    assert_eq!((rotated.l2_hits, rotated.fetches), (1, 0), "{rotated:?}");
    assert_eq!(rotated.l2_decrypt_failures, 0);

    // Only B: entries are named with a secret derived from the key, so A's entry is not even
    // found (a plain miss, nothing to open); the token is fetched and written under B's name.
    let only_new = fresh_reader(&server, &redis, &[(2, KEY_B)]).await;
    assert_eq!(only_new.l2_decrypt_failures, 0, "{only_new:?}");
    assert_eq!(
        (only_new.l2_hits, only_new.l2_misses, only_new.fetches),
        (0, 1, 1),
        "{only_new:?}"
    );
    let names = keys_like(&redis, &format!("{NS}:tok:*")).await;
    assert_eq!(names.len(), 2, "one entry per key's name: {names:?}");
    let mut ids = Vec::new();
    for name in &names {
        let value: Vec<u8> = raw(&redis).await.get(name).await.unwrap();
        // After the 8-byte generation: the version, then the key id.
        ids.push(value[9]);
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 2], "the key ids in the envelopes");
    // The rotated cache reads B's entry first, in the same round trip as A's.
    let again = fresh_reader(&server, &redis, &[(2, KEY_B), (1, KEY_A)]).await;
    assert_eq!((again.l2_hits, again.fetches), (1, 0), "{again:?}");
    assert_eq!(server.token_requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// The audience decision runs on tokens from Redis.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_read_from_redis_whose_aud_does_not_cover_the_url_is_refused_and_removed() {
    let redis = RedisServer::start();
    let server = new_server();
    server.script(|s| s.audience = AudienceStyle::Fixed(vec!["https://other.example.com".into()]));
    // `token` hands out without a URL (the decision runs at `header_for`): the token is
    // cached and written to Redis.
    let writer = cache(&server, &redis, &[(1, KEY_A)]);
    writer
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    assert_eq!(keys_like(&redis, &format!("{NS}:tok:*")).await.len(), 1);

    let reader = cache(&server, &redis, &[(1, KEY_A)]);
    let refused = reader.token_for(&url(&format!("{MCP}/tools"))).await;
    assert!(matches!(refused, Err(Error::Refused(_))), "{refused:?}");
    let stats = reader.stats();
    assert_eq!(
        (stats.l2_hits, stats.fetches, stats.refusals),
        (1, 0, 1),
        "{stats:?}"
    );
    assert_eq!(server.token_requests(), 1);
    // The refused token is gone from Redis too, so no other process is handed it.
    assert!(keys_like(&redis, &format!("{NS}:tok:*")).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens.

/// A cache for the public client `app` (authorization code grant) with a shared level, and a
/// completed authorization for `MCP` with scopes `read write admin`.
async fn authorized(
    server: &AuthorizationServer,
    redis: &RedisServer,
    share_refresh_tokens: bool,
) -> TokenCache {
    let cache = builder(server, public_app())
        .resource(config(MCP))
        .shared_level(level(redis, &[(1, KEY_A)]).share_refresh_tokens(share_refresh_tokens))
        .build()
        .unwrap();
    let pending = cache
        .begin_authorization(&resource(MCP), &scopes("read write admin"))
        .unwrap();
    let redirect = approve(server, &pending).await;
    cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    cache
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_stay_out_of_redis_by_default() {
    let redis = RedisServer::start();
    let server = new_server();
    let cache = authorized(&server, &redis, false).await;
    // The access token is shared, the refresh token is not.
    assert_eq!(keys_like(&redis, &format!("{NS}:tok:*")).await.len(), 1);
    // A refresh (for a narrower scope set) writes its access token and still no refresh token.
    cache.token(&resource(MCP), &scopes("read")).await.unwrap();
    assert_eq!(
        server.requests().last().unwrap().grant_type.as_deref(),
        Some("refresh_token")
    );
    assert_eq!(keys_like(&redis, &format!("{NS}:tok:*")).await.len(), 2);
    assert!(keys_like(&redis, &format!("{NS}:rt:*")).await.is_empty());
    // Access tokens and their generation records only.
    let all = keys_like(&redis, &format!("{NS}:*")).await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(
        all.iter().all(|k| k.contains(":tok:")
            || (k.starts_with(&format!("{NS}:gen:")) && !k.contains(":rt:"))),
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_refresh_tokens_are_sealed_and_each_refresh_uses_the_newest() {
    let redis = RedisServer::start();
    let server = new_server();
    let first = authorized(&server, &redis, true).await;
    // The refresh token is written in the background after the code exchange.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let rt = loop {
        let keys = keys_like(&redis, &format!("{NS}:rt:*")).await;
        if let [key] = keys.as_slice() {
            break key.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh token in Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let sealed: Vec<u8> = raw(&redis).await.get(&rt).await.unwrap();
    assert_eq!(
        sealed[8], 1,
        "envelope version, after the 8-byte generation"
    );
    assert!(serde_json::from_slice::<serde_json::Value>(&sealed).is_err());

    // A second process that never saw the authorization refreshes with the shared refresh
    // token (a scope set whose access token is not in Redis), which rotates it.
    let second = builder(&server, public_app())
        .resource(config(MCP))
        .shared_level(level(&redis, &[(1, KEY_A)]).share_refresh_tokens(true))
        .build()
        .unwrap();
    second.token(&resource(MCP), &scopes("read")).await.unwrap();
    assert_eq!(second.stats().fetches, 1);
    let refreshes = |server: &AuthorizationServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.grant_type.as_deref() == Some("refresh_token"))
            .map(|r| r.error.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(refreshes(&server), [None]);

    // The first process refreshes next: it must use the rotated token from Redis, not the one
    // it holds (presenting that again would revoke the whole family).
    first.token(&resource(MCP), &scopes("write")).await.unwrap();
    assert_eq!(refreshes(&server), [None, None]);
    // And the second again, whose own refresh token was rotated by the first since.
    second
        .token(&resource(MCP), &scopes("admin"))
        .await
        .unwrap();
    assert_eq!(refreshes(&server), [None, None, None]);
    assert_eq!(keys_like(&redis, &format!("{NS}:rt:*")).await, [rt]);
    assert_eq!(first.stats().errors + second.stats().errors, 0);
}

// ---------------------------------------------------------------------------------------------
// Refresh ahead, fleet-wide.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_ahead_in_two_processes_makes_one_token_request() {
    let redis = RedisServer::start();
    let server = new_server();
    // A 4 s lifetime: 2 s usable after the (halved) skew, refresh ahead from 1 s.
    server.script(|s| s.expires_in = Some(Duration::from_secs(4)));
    let mcp = resource(MCP);
    let (a, b) = (
        cache(&server, &redis, &[(1, KEY_A)]),
        cache(&server, &redis, &[(1, KEY_A)]),
    );
    let first = a.token(&mcp, &ScopeSet::empty()).await.unwrap();
    let same = b.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_eq!(same.expose_secret(), first.expose_secret());
    assert_eq!(server.token_requests(), 1);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Both are inside the refresh window: each hit is served at once and marks its token
    // used, so each process refreshes it in the background; the fleet lock lets one of them
    // ask the server.
    let none = ScopeSet::empty();
    let (x, y) = tokio::join!(a.token(&mcp, &none), b.token(&mcp, &none));
    assert_eq!(x.unwrap().expose_secret(), first.expose_secret());
    assert_eq!(y.unwrap().expose_secret(), first.expose_secret());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (x, y) = (
            a.token(&mcp, &ScopeSet::empty()).await.unwrap(),
            b.token(&mcp, &ScopeSet::empty()).await.unwrap(),
        );
        if x.expose_secret() != first.expose_secret() && y.expose_secret() != first.expose_secret()
        {
            // Both moved to the one new token.
            assert_eq!(x.expose_secret(), y.expose_secret());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refresh ahead did not reach both caches"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.token_requests(), 2);
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.fetches + sb.fetches, 2, "{sa:?} {sb:?}");
    assert_eq!(sa.refreshes + sb.refreshes, 1, "{sa:?} {sb:?}");
}

// ---------------------------------------------------------------------------------------------
// Logs.

/// Everything the crate logged in this test binary (a TRACE subscriber, set once).
fn captured() -> &'static Arc<std::sync::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
}

struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_of_failures_holds_no_token_key_or_value() {
    let log = captured();
    let mut redis = RedisServer::start();
    let server = new_server();
    let mcp = resource(MCP);
    let writer = cache(&server, &redis, &[(1, KEY_A)]);
    let written = writer.token(&mcp, &ScopeSet::empty()).await.unwrap();
    let (name, mut value) = the_entry(&redis).await;
    value[40] ^= 0x80;
    let _: () = raw(&redis).await.set(&name, &value).await.unwrap();
    let reader = cache(&server, &redis, &[(1, KEY_A)]);
    let fetched = reader.token(&mcp, &ScopeSet::empty()).await.unwrap();
    redis.kill();
    let outage = cache(&server, &redis, &[(1, KEY_A)]);
    let in_memory = outage.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert!(reader.stats().l2_decrypt_failures == 1 && outage.stats().l2_errors > 0);

    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(text.contains("did not open"), "the events were captured");
    assert!(
        text.contains("shared level: Redis"),
        "the events were captured"
    );
    for token in [&written, &fetched, &in_memory] {
        assert!(!text.contains(token.expose_secret()));
        // Not even the JWT's signature alone.
        let signature = token.expose_secret().rsplit('.').next().unwrap();
        assert!(!text.contains(signature));
    }
    for key in [KEY_A, KEY_B] {
        let hex: String = key[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.to_lowercase().contains(&hex));
    }
    let digest = name.rsplit(':').next().unwrap();
    assert!(!text.contains(digest), "Redis names are not logged either");
}
