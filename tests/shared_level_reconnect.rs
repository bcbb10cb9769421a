//! The shared level after Redis restarts while the processes are idle (feature `redis`;
//! `redis-server` must be installed): nothing was asked during the outage, so no process saw
//! it, and the first call after it meets a connection that is gone. That call must reconnect
//! and be answered, not fail into a token request per process that writes nothing.

#![cfg(feature = "redis")]

mod redis_support;
mod support;

use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, Client};
use audience_cache::{ScopeSet, SealingKey, SharedLevel, TokenCache};
use redis_support::RedisServer;
use support::{MCP, builder, config, resource};

const NS: &str = "test-reconnect";

fn cache(server: &AuthorizationServer, redis: &RedisServer) -> TokenCache {
    builder(server, support::confidential())
        .resource(config(MCP))
        .shared_level(
            SharedLevel::new(redis.url().as_str(), [SealingKey::new(1, [0xA1; 32])])
                .unwrap()
                .namespace(NS),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_while_idle_the_first_call_of_each_process_reconnects_and_is_answered() {
    let mut redis = RedisServer::start();
    let server = AuthorizationServer::builder()
        .client(Client::confidential(support::SVC, support::SECRET))
        // Long enough that the second process misses while the first one's request is out.
        .script(|s| s.latency = Duration::from_millis(300))
        .in_process();
    let mcp = resource(MCP);
    let none = ScopeSet::empty();
    // Two processes, each with its own connection, both used once.
    let (a, b) = (cache(&server, &redis), cache(&server, &redis));
    a.token(&mcp, &none).await.unwrap();
    b.token(&mcp, &none).await.unwrap();
    assert_eq!(server.token_requests(), 1);
    assert_eq!((a.stats().l2_writes, b.stats().l2_hits), (1, 1));

    // Redis restarts (empty) while neither process asks anything, and stays up for longer
    // than the pause after an outage before they do.
    let port = redis.port();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let redis = RedisServer::start_on(port);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A refresh cycle: both need a new key at once. One process asks the server and writes
    // the token; the other waits for it and takes it from Redis.
    let (x, y) = tokio::join!(
        a.token_for_account(&mcp, &none, "after"),
        b.token_for_account(&mcp, &none, "after")
    );
    assert_eq!(x.unwrap().expose_secret(), y.unwrap().expose_secret());
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(server.token_requests(), 2, "{sa:?} {sb:?}");
    assert_eq!(sa.l2_errors + sb.l2_errors, 0, "{sa:?} {sb:?}");
    assert_eq!(sa.l2_writes + sb.l2_writes, 2, "{sa:?} {sb:?}");
    assert_eq!(sa.l2_hits + sb.l2_hits, 2, "{sa:?} {sb:?}");

    // The entry is in the restarted Redis: a third process takes it without a request.
    let c = cache(&server, &redis);
    c.token_for_account(&mcp, &none, "after").await.unwrap();
    assert_eq!((c.stats().l2_hits, c.stats().fetches), (1, 0));
    assert_eq!(server.token_requests(), 2);
}
