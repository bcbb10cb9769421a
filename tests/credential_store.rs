//! The credential store in the cache: refresh tokens that outlive a cache (a restart is a new
//! cache on the same store), each refresh presenting the newest one, a rotated one written
//! back before the new access token is handed out, a spent one removed. Counts are the
//! in-process server's own records.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, Failure};
use audience_cache::{
    CredentialStore, Error, GrantId, MemoryCredentialStore, ScopeSet, TokenCache,
};
use support::*;

fn cache_on(server: &AuthorizationServer, store: Arc<dyn CredentialStore>) -> TokenCache {
    builder(server, public_app())
        .resource(config(MCP).scopes(scopes("mcp:read")))
        .credential_store(store)
        .build()
        .unwrap()
}

fn grant() -> GrantId {
    GrantId::new(ISSUER, APP, None, &resource(MCP))
}

/// How many of the server's token requests were refreshes, and how many of those it refused.
fn refreshes(server: &AuthorizationServer) -> (usize, usize) {
    let refreshes: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.grant_type.as_deref() == Some("refresh_token"))
        .collect();
    let refused = refreshes
        .iter()
        .filter(|r| r.status != Some(http::StatusCode::OK))
        .count();
    (refreshes.len(), refused)
}

/// The user authorizes once, in the first cache.
async fn authorize(server: &AuthorizationServer, cache: &TokenCache) {
    let pending = cache
        .begin_authorization(&resource(MCP), &ScopeSet::empty())
        .unwrap();
    let redirect = approve(server, &pending).await;
    cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_new_cache_on_the_same_store_refreshes_without_asking_the_user() {
    let server = new_server();
    let store = Arc::new(MemoryCredentialStore::default());
    let first = cache_on(&server, store.clone());
    authorize(&server, &first).await;
    assert_eq!(store.refresh_tokens(), 1, "the grant is stored");
    drop(first);

    // The restart: a new cache, nothing in memory.
    let second = cache_on(&server, store.clone());
    let token = second
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    assert!(token.scopes().contains("mcp:read"));
    assert_eq!(
        server.authorization_requests().len(),
        1,
        "the first cache's only"
    );
    assert_eq!(refreshes(&server), (1, 0));
    assert_eq!(second.stats().refreshes, 1);

    // Without the store, the new cache has nothing to refresh with.
    let forgetful = builder(&server, public_app())
        .resource(config(MCP).scopes(scopes("mcp:read")))
        .build()
        .unwrap();
    let error = forgetful
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::AuthorizationRequired { .. }),
        "{error:?}"
    );
}

/// Two caches (two processes, in turn) refreshing one grant whose refresh token rotates at
/// every refresh: each presents the newest, so the server never sees a spent one (which would
/// revoke the grant, RFC 9700 §4.14.2).
#[tokio::test(start_paused = true)]
async fn two_caches_refreshing_one_rotated_grant_20_times_in_turn_never_see_invalid_grant() {
    let server = new_server();
    let store = Arc::new(MemoryCredentialStore::default());
    let caches = [
        cache_on(&server, store.clone()),
        cache_on(&server, store.clone()),
    ];
    authorize(&server, &caches[0]).await;
    for round in 0..20 {
        // Past the access token's usable lifetime: the next call refreshes.
        tokio::time::advance(USABLE + Duration::from_secs(1)).await;
        caches[round % 2]
            .token(&resource(MCP), &ScopeSet::empty())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    assert_eq!(refreshes(&server), (20, 0));
    assert_eq!(server.authorization_requests().len(), 1);
}

/// `invalid_grant` is definitive: the grant's record goes, so the next start asks the user
/// instead of presenting a dead refresh token again.
#[tokio::test(start_paused = true)]
async fn invalid_grant_removes_the_grant_from_the_store() {
    let server = new_server();
    let store = Arc::new(MemoryCredentialStore::default());
    let cache = cache_on(&server, store.clone());
    authorize(&server, &cache).await;
    tokio::time::advance(USABLE + Duration::from_secs(1)).await;
    server.script(|s| s.fail_always = Some(Failure::InvalidGrant));
    let error = cache
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap_err();
    assert_eq!(
        error.oauth_error().map(|e| e.code),
        Some("invalid_grant".to_owned())
    );
    assert_eq!(store.refresh_tokens(), 0);
    assert!(store.load_refresh_token(&grant()).await.unwrap().is_none());

    server.script(|s| s.fail_always = None);
    let restarted = cache_on(&server, store.clone());
    let error = restarted
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::AuthorizationRequired { .. }),
        "{error:?}"
    );
    assert_eq!(
        refreshes(&server),
        (1, 1),
        "the dead token is not presented again"
    );
}

/// A store that fails is not a reason to fail a request the cache can serve from memory.
#[tokio::test(start_paused = true)]
async fn a_failing_store_leaves_the_cache_working_from_memory() {
    let server = new_server();
    let cache = cache_on(&server, Arc::new(Broken));
    authorize(&server, &cache).await;
    tokio::time::advance(USABLE + Duration::from_secs(1)).await;
    cache
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    assert_eq!(refreshes(&server), (1, 0));
}

/// A store that missed a write holds an older refresh token than the cache: the cache goes on
/// with its own until a write succeeds, instead of presenting the store's spent one (which,
/// with rotation, revokes the grant).
#[tokio::test(start_paused = true)]
async fn after_a_failed_write_the_cache_does_not_take_the_stores_older_token() {
    let server = new_server();
    let store = Arc::new(Flaky::default());
    let cache = cache_on(&server, store.clone());
    authorize(&server, &cache).await;
    store.fail_saves.store(true, Ordering::SeqCst);
    for round in 0..2 {
        tokio::time::advance(USABLE + Duration::from_secs(1)).await;
        cache
            .token(&resource(MCP), &ScopeSet::empty())
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    // The store works again: the next refresh's rotated token lands there, and a new cache
    // refreshes with it.
    store.fail_saves.store(false, Ordering::SeqCst);
    tokio::time::advance(USABLE + Duration::from_secs(1)).await;
    cache
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    cache_on(&server, store.clone())
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    assert_eq!(refreshes(&server), (4, 0));
}

/// An in-memory store whose writes fail while `fail_saves` is set.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryCredentialStore,
    fail_saves: AtomicBool,
}

impl CredentialStore for Flaky {
    fn load_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
    ) -> audience_cache::StoreFuture<'a, Option<audience_cache::StoredRefreshToken>> {
        self.inner.load_refresh_token(grant)
    }
    fn save_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
        token: &'a audience_cache::StoredRefreshToken,
    ) -> audience_cache::StoreFuture<'a, ()> {
        if self.fail_saves.load(Ordering::SeqCst) {
            return Box::pin(async { Err("disk full".into()) });
        }
        self.inner.save_refresh_token(grant, token)
    }
    fn remove_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
    ) -> audience_cache::StoreFuture<'a, ()> {
        self.inner.remove_refresh_token(grant)
    }
    fn load_client<'a>(
        &'a self,
        issuer: &'a str,
    ) -> audience_cache::StoreFuture<'a, Option<audience_cache::ClientRecord>> {
        self.inner.load_client(issuer)
    }
    fn save_client<'a>(
        &'a self,
        issuer: &'a str,
        client: &'a audience_cache::ClientRecord,
    ) -> audience_cache::StoreFuture<'a, ()> {
        self.inner.save_client(issuer, client)
    }
}

#[derive(Debug)]
struct Broken;

impl CredentialStore for Broken {
    fn load_refresh_token<'a>(
        &'a self,
        _: &'a GrantId,
    ) -> audience_cache::StoreFuture<'a, Option<audience_cache::StoredRefreshToken>> {
        Box::pin(async { Err("disk on fire".into()) })
    }
    fn save_refresh_token<'a>(
        &'a self,
        _: &'a GrantId,
        _: &'a audience_cache::StoredRefreshToken,
    ) -> audience_cache::StoreFuture<'a, ()> {
        Box::pin(async { Err("disk on fire".into()) })
    }
    fn remove_refresh_token<'a>(&'a self, _: &'a GrantId) -> audience_cache::StoreFuture<'a, ()> {
        Box::pin(async { Err("disk on fire".into()) })
    }
    fn lock_grant<'a>(
        &'a self,
        _: &'a GrantId,
    ) -> audience_cache::StoreFuture<'a, audience_cache::GrantLock> {
        Box::pin(async { Err("disk on fire".into()) })
    }
    fn load_client<'a>(
        &'a self,
        _: &'a str,
    ) -> audience_cache::StoreFuture<'a, Option<audience_cache::ClientRecord>> {
        Box::pin(async { Err("disk on fire".into()) })
    }
    fn save_client<'a>(
        &'a self,
        _: &'a str,
        _: &'a audience_cache::ClientRecord,
    ) -> audience_cache::StoreFuture<'a, ()> {
        Box::pin(async { Err("disk on fire".into()) })
    }
}

/// Refresh tokens kept in two places would each claim to be the newest: the cache refuses a
/// credential store together with refresh tokens shared through Redis.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_credential_store_and_shared_refresh_tokens_are_refused_together() {
    use audience_cache::{BuildError, SealingKey, SharedLevel};
    let server = new_server();
    let level =
        || SharedLevel::new("redis://127.0.0.1:1", [SealingKey::new(1, [0x42; 32])]).unwrap();
    let store: Arc<dyn CredentialStore> = Arc::new(MemoryCredentialStore::default());
    let error = builder(&server, public_app())
        .shared_level(level().share_refresh_tokens(true))
        .credential_store(store.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            error,
            BuildError::Setting {
                setting: "credential_store",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("share_refresh_tokens"),
        "{error}"
    );
    // Access tokens in Redis and refresh tokens in the store: fine.
    builder(&server, public_app())
        .shared_level(level())
        .credential_store(store)
        .build()
        .unwrap();
}
