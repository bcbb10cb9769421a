//! DPoP-bound tokens in the shared level on a real Redis (features `dpop` and `redis`): stored
//! under keys that hold the DPoP key's thumbprint, so processes that share the key share the
//! token (still bound when read back), and a process with another key never reads it.

mod dpop_support;
mod redis_support;
mod support;

use audience_cache::testing::AuthorizationServer;
use audience_cache::{DpopKey, ScopeSet, SealingKey, SharedLevel, TokenCache};
use redis_support::RedisServer;
use support::{API, builder, confidential, config, new_server, resource};

fn cache(server: &AuthorizationServer, redis: &RedisServer, key: &DpopKey) -> TokenCache {
    builder(server, confidential())
        .resource(config(API))
        .dpop_key(key.clone())
        .use_dpop_for(resource(API))
        .shared_level(
            SharedLevel::new(redis.url().as_str(), [SealingKey::new(1, [0xA1; 32])])
                .unwrap()
                .namespace("dpop-fleet"),
        )
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_is_shared_by_processes_with_its_key_and_never_read_with_another() {
    let redis = RedisServer::start();
    let server = new_server();
    let shared_key = DpopKey::from_pkcs8_pem(dpop_support::PEM_A).unwrap();
    let (first, second) = (
        cache(&server, &redis, &shared_key),
        cache(&server, &redis, &shared_key),
    );
    let other = cache(&server, &redis, &DpopKey::generate());
    let api = resource(API);

    let token = first.token(&api, &ScopeSet::empty()).await.unwrap();
    assert!(token.is_dpop_bound());
    assert_eq!(server.token_requests(), 1);
    // Another process with the same key: read from Redis, still bound.
    let shared = second.token(&api, &ScopeSet::empty()).await.unwrap();
    assert_eq!(server.token_requests(), 1);
    assert_eq!(second.stats().l2_hits, 1);
    assert!(shared.is_dpop_bound());
    assert_eq!(shared.expose_secret(), token.expose_secret());
    // Another key: another cache key, so a miss there and a token of its own.
    let own = other.token(&api, &ScopeSet::empty()).await.unwrap();
    assert_eq!(server.token_requests(), 2);
    assert_eq!(other.stats().l2_hits, 0);
    assert_ne!(own.expose_secret(), token.expose_secret());
    let jkts: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.dpop.as_ref().unwrap().jkt.clone())
        .collect();
    assert_eq!(jkts[0], shared_key.thumbprint());
    assert_ne!(jkts[1], shared_key.thumbprint());
}
