//! The shared level against someone who can write to Redis and writes back what it held before
//! (feature `redis`; `redis-server` must be installed): an access token the cache invalidated
//! (after a 401) and a refresh token that was rotated must not be used again when their old
//! sealed bytes are put back under their names, and deleting the key's generation record does
//! not bring them back either. What such an attacker can still do is in `SharedLevel`'s docs.

#![cfg(feature = "redis")]

mod redis_support;
mod support;

use std::time::Duration;

use audience_cache::testing::AuthorizationServer;
use audience_cache::{Error, ScopeSet, SealingKey, SharedLevel, TokenCache};
use redis::AsyncCommands as _;
use redis_support::RedisServer;
use support::{MCP, approve, builder, config, new_server, public_app, resource, scopes};

const NS: &str = "test-rollback";
const KEY: [u8; 32] = [0xA1; 32];

fn level(redis: &RedisServer) -> SharedLevel {
    SharedLevel::new(redis.url().as_str(), [SealingKey::new(1, KEY)])
        .unwrap()
        .namespace(NS)
}

/// A cache for the confidential client with the resource `MCP` and the shared level.
fn cache(server: &AuthorizationServer, redis: &RedisServer) -> TokenCache {
    builder(server, support::confidential())
        .resource(config(MCP))
        .shared_level(level(redis))
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

/// The one value named like `pattern`, with its name.
async fn the_value(redis: &RedisServer, pattern: &str) -> (String, Vec<u8>) {
    let keys = keys_like(redis, pattern).await;
    assert_eq!(keys.len(), 1, "{pattern}: {keys:?}");
    let value: Vec<u8> = raw(redis).await.get(&keys[0]).await.unwrap();
    (keys[0].clone(), value)
}

async fn put_back(redis: &RedisServer, name: &str, value: &[u8]) {
    let _: () = raw(redis).await.set(name, value).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Access tokens.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_token_written_back_to_redis_is_not_served_by_a_fresh_process() {
    let redis = RedisServer::start();
    let server = new_server();
    let mcp = resource(MCP);
    let writer = cache(&server, &redis);
    let rejected = writer.token(&mcp, &ScopeSet::empty()).await.unwrap();
    // The attacker keeps the sealed entry while it is current.
    let (name, old) = the_value(&redis, &format!("{NS}:tok:*")).await;

    // A resource server answered 401: the cache invalidates the token, here and in Redis.
    assert!(writer.invalidate(&rejected).await);
    assert!(keys_like(&redis, &format!("{NS}:tok:*")).await.is_empty());
    // The attacker writes the old bytes back under the entry's name.
    put_back(&redis, &name, &old).await;

    let fresh = cache(&server, &redis);
    let token = fresh.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_ne!(token.expose_secret(), rejected.expose_secret());
    let stats = fresh.stats();
    assert_eq!(
        (stats.l2_hits, stats.l2_misses, stats.fetches),
        (0, 1, 1),
        "{stats:?}"
    );
    // Refused as a value that must not open now, never an error.
    assert_eq!(
        (stats.l2_decrypt_failures, stats.l2_errors),
        (1, 0),
        "{stats:?}"
    );
    // The authorization server's records: the first token, then the fresh process's own.
    assert_eq!(server.token_requests(), 2);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.grant_type.as_deref() == Some("client_credentials") && r.error.is_none())
    );

    // The process that invalidated does not take it back either; it takes the new one.
    let again = writer.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_eq!(again.expose_secret(), token.expose_secret());
    assert_eq!(writer.stats().l2_hits, 1);
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_generation_record_does_not_bring_an_invalidated_token_back() {
    let redis = RedisServer::start();
    let server = new_server();
    let mcp = resource(MCP);
    let writer = cache(&server, &redis);
    let rejected = writer.token(&mcp, &ScopeSet::empty()).await.unwrap();
    let (name, old) = the_value(&redis, &format!("{NS}:tok:*")).await;
    assert!(writer.invalidate(&rejected).await);

    // The attacker deletes every other name of the namespace (whatever records the
    // invalidation left) and writes the old entry back.
    let others: Vec<String> = keys_like(&redis, &format!("{NS}:*")).await;
    if !others.is_empty() {
        let _: () = raw(&redis).await.del(&others).await.unwrap();
    }
    put_back(&redis, &name, &old).await;

    let fresh = cache(&server, &redis);
    let token = fresh.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_ne!(token.expose_secret(), rejected.expose_secret());
    let stats = fresh.stats();
    assert_eq!((stats.l2_hits, stats.fetches), (0, 1), "{stats:?}");
    assert_eq!(server.token_requests(), 2);
    // The new token is shared as usual: a third process takes it from Redis.
    let third = cache(&server, &redis);
    let shared = third.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_eq!(shared.expose_secret(), token.expose_secret());
    assert_eq!((third.stats().l2_hits, third.stats().fetches), (1, 0));
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_that_invalidated_refuses_the_entry_and_its_record_written_back_together() {
    let redis = RedisServer::start();
    let server = new_server();
    let mcp = resource(MCP);
    let writer = cache(&server, &redis);
    let rejected = writer.token(&mcp, &ScopeSet::empty()).await.unwrap();
    // The attacker keeps the entry and its generation record: a copy of Redis, restored
    // after the invalidation.
    let (name, old) = the_value(&redis, &format!("{NS}:tok:*")).await;
    let (record_name, old_record) = the_value(&redis, &format!("{NS}:gen:*")).await;
    assert!(writer.invalidate(&rejected).await);
    put_back(&redis, &record_name, &old_record).await;
    put_back(&redis, &name, &old).await;

    // Nothing in Redis tells the pair from a current one, but this process saw the newer
    // record: it refuses the older one, fetches, and writes under a generation above both.
    let token = writer.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_ne!(token.expose_secret(), rejected.expose_secret());
    let stats = writer.stats();
    assert_eq!((stats.l2_hits, stats.fetches), (0, 2), "{stats:?}");
    assert_eq!(stats.l2_decrypt_failures, 1, "{stats:?}");
    assert_eq!(stats.l2_writes, 2, "{stats:?}");
    assert_eq!(server.token_requests(), 2);
    // What it wrote is current for everyone again, the restored pair gone.
    let fresh = cache(&server, &redis);
    let shared = fresh.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_eq!(shared.expose_secret(), token.expose_secret());
    assert_eq!((fresh.stats().l2_hits, fresh.stats().fetches), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_does_not_make_a_restored_older_entry_current() {
    let redis = RedisServer::start();
    let server = new_server();
    let mcp = resource(MCP);
    let writer = cache(&server, &redis);
    let rejected = writer.token(&mcp, &ScopeSet::empty()).await.unwrap();
    let (name, old) = the_value(&redis, &format!("{NS}:tok:*")).await;
    let (record_name, old_record) = the_value(&redis, &format!("{NS}:gen:*")).await;
    assert!(writer.invalidate(&rejected).await);
    let second = writer.token(&mcp, &ScopeSet::empty()).await.unwrap();
    // The old pair is restored while this process holds its second token; then that one is
    // rejected too. The invalidation keeps a newer token another process wrote, but not the
    // restored one: its record is older than this process saw.
    put_back(&redis, &record_name, &old_record).await;
    put_back(&redis, &name, &old).await;
    assert!(writer.invalidate(&second).await);
    assert!(keys_like(&redis, &format!("{NS}:tok:*")).await.is_empty());

    let fresh = cache(&server, &redis);
    let token = fresh.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_ne!(token.expose_secret(), rejected.expose_secret());
    assert_eq!((fresh.stats().l2_hits, fresh.stats().fetches), (0, 1));
    assert_eq!(server.token_requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_an_old_token_keeps_the_newer_one_another_process_wrote() {
    let redis = RedisServer::start();
    let server = new_server();
    let mcp = resource(MCP);
    let holder = cache(&server, &redis);
    let old = holder.token(&mcp, &ScopeSet::empty()).await.unwrap();
    let (name, old_bytes) = the_value(&redis, &format!("{NS}:tok:*")).await;
    // The entry expires from Redis (the generation record stays); another process fetches
    // and writes a newer token, while the first still holds the old one in memory.
    let _: () = raw(&redis).await.del(&name).await.unwrap();
    let writer = cache(&server, &redis);
    let newer = writer.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_ne!(newer.expose_secret(), old.expose_secret());
    let (_, newer_bytes) = the_value(&redis, &format!("{NS}:tok:*")).await;

    // The old token is rejected and invalidated: the newer one stays usable.
    assert!(holder.invalidate(&old).await);
    let reader = cache(&server, &redis);
    let read = reader.token(&mcp, &ScopeSet::empty()).await.unwrap();
    assert_eq!(read.expose_secret(), newer.expose_secret());
    assert_eq!((reader.stats().l2_hits, reader.stats().fetches), (1, 0));
    assert_eq!(server.token_requests(), 2);

    // Sealed again under the new generation: neither earlier value opens as current now.
    for bytes in [&old_bytes, &newer_bytes] {
        put_back(&redis, &name, bytes).await;
        let fresh = cache(&server, &redis);
        let token = fresh.token(&mcp, &ScopeSet::empty()).await.unwrap();
        assert_ne!(token.expose_secret(), old.expose_secret());
        let stats = fresh.stats();
        assert_eq!(
            (stats.l2_hits, stats.fetches, stats.l2_decrypt_failures),
            (0, 1, 1),
            "{stats:?}"
        );
    }
    assert_eq!(server.token_requests(), 4);
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens (shared on purpose).

fn refreshing(server: &AuthorizationServer, redis: &RedisServer) -> TokenCache {
    builder(server, public_app())
        .resource(config(MCP))
        .shared_level(level(redis).share_refresh_tokens(true))
        .build()
        .unwrap()
}

/// The refresh requests the server saw, each with the OAuth error it answered (a refresh
/// token presented again after its rotation is `invalid_grant`, and revokes the grant).
fn refreshes(server: &AuthorizationServer) -> Vec<Option<String>> {
    server
        .requests()
        .iter()
        .filter(|r| r.grant_type.as_deref() == Some("refresh_token"))
        .map(|r| r.error.clone())
        .collect()
}

/// The sealed refresh token in Redis, once the background write after the code exchange
/// has landed.
async fn shared_refresh_token(redis: &RedisServer) -> (String, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while keys_like(redis, &format!("{NS}:rt:*")).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh token in Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    the_value(redis, &format!("{NS}:rt:*")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_written_back_to_redis_is_not_spent() {
    let redis = RedisServer::start();
    let server = new_server();
    let first = refreshing(&server, &redis);
    let pending = first
        .begin_authorization(&resource(MCP), &scopes("read write admin"))
        .unwrap();
    let redirect = approve(&server, &pending).await;
    first
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    // The attacker keeps the first refresh token's sealed entry.
    let (name, old) = shared_refresh_token(&redis).await;

    // Another process refreshes with it (a scope set whose access token is not in Redis):
    // the server rotates it, and the new one is written to Redis.
    let second = refreshing(&server, &redis);
    second.token(&resource(MCP), &scopes("read")).await.unwrap();
    assert_eq!(refreshes(&server), [None]);
    let (_, rotated) = the_value(&redis, &format!("{NS}:rt:*")).await;
    assert_ne!(rotated, old);

    // The attacker writes the spent refresh token back.
    put_back(&redis, &name, &old).await;

    // A fresh process does not present it (that would revoke the grant): it has no usable
    // refresh token, so it asks for an authorization, without a request.
    let third = refreshing(&server, &redis);
    let result = third.token(&resource(MCP), &scopes("write")).await;
    assert!(
        matches!(result, Err(Error::AuthorizationRequired { .. })),
        "{result:?}"
    );
    assert_eq!(refreshes(&server), [None]);
    assert_eq!(third.stats().l2_decrypt_failures, 1, "{:?}", third.stats());

    // The process that authorized holds the first refresh token in memory, spent since: it
    // does not present it either.
    let stale = first.token(&resource(MCP), &scopes("write")).await;
    assert!(
        matches!(stale, Err(Error::AuthorizationRequired { .. })),
        "{stale:?}"
    );
    assert_eq!(refreshes(&server), [None]);

    // The process holding the rotated token keeps refreshing with it, not with the one in
    // Redis; the grant is alive, and the next rotation reaches the first process again.
    second
        .token(&resource(MCP), &scopes("write"))
        .await
        .unwrap();
    assert_eq!(refreshes(&server), [None, None]);
    first.token(&resource(MCP), &scopes("admin")).await.unwrap();
    assert_eq!(refreshes(&server), [None, None, None]);
    assert_eq!(first.stats().errors + second.stats().errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_that_rotated_does_not_take_back_a_restored_refresh_token_and_record() {
    let redis = RedisServer::start();
    let server = new_server();
    let first = refreshing(&server, &redis);
    let pending = first
        .begin_authorization(&resource(MCP), &scopes("read write admin"))
        .unwrap();
    let redirect = approve(&server, &pending).await;
    first
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    let (name, old) = shared_refresh_token(&redis).await;
    let (record_name, old_record) = the_value(&redis, &format!("{NS}:gen:rt:*")).await;

    // Another process rotates the refresh token; then a copy of Redis from before is
    // restored: the first refresh token and its record.
    let second = refreshing(&server, &redis);
    second.token(&resource(MCP), &scopes("read")).await.unwrap();
    assert_eq!(refreshes(&server), [None]);
    put_back(&redis, &record_name, &old_record).await;
    put_back(&redis, &name, &old).await;

    // The process that rotated saw the newer record: it refreshes with its own refresh
    // token, not the restored one, and the grant lives on.
    second
        .token(&resource(MCP), &scopes("write"))
        .await
        .unwrap();
    assert_eq!(refreshes(&server), [None, None]);
    // Its write moved the generation above the restored one: the first process takes the
    // newest from Redis.
    first.token(&resource(MCP), &scopes("admin")).await.unwrap();
    assert_eq!(refreshes(&server), [None, None, None]);
    assert_eq!(first.stats().errors + second.stats().errors, 0);
}
