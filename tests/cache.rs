//! TokenCache scenarios on paused tokio time, against the embedded authorization server in
//! process: exact token-request counts for single-flight, refresh ahead, backoff, eviction and
//! cancellation.

use std::sync::Arc;
use std::time::Duration;

use audience_cache::testing::{AudienceStyle, AuthorizationServer, Client, Failure};
use audience_cache::{
    ClientRegistration, Error, ResourceConfig, ResourceUri, ScopeSet, TokenCache, TokenCacheBuilder,
};
use tokio::time::{Instant, advance};
use url::Url;

const MCP: &str = "https://mcp.example.com/mcp";
const API: &str = "https://api.example.com/v1";

fn server() -> AuthorizationServer {
    AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process()
}

fn builder(server: &AuthorizationServer, resources: &[&str]) -> TokenCacheBuilder {
    let mut builder = TokenCache::builder().in_process(server).client(
        ClientRegistration::new(
            server.issuer(),
            Url::parse(&server.token_endpoint()).unwrap(),
            "svc",
        )
        .client_secret_basic("s3cret".into()),
    );
    for resource in resources {
        builder = builder.resource(ResourceConfig::new(
            ResourceUri::parse(resource).unwrap(),
            server.issuer(),
        ));
    }
    builder
}

fn cache(server: &AuthorizationServer, resources: &[&str]) -> TokenCache {
    builder(server, resources).build().unwrap()
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

/// Lets spawned tasks (background refreshes) run to completion on the paused clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    advance(Duration::from_millis(100)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_callers_make_one_token_request() {
    let server = server();
    server.script(|s| s.latency = Duration::from_millis(50));
    let cache = cache(&server, &[MCP]);
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .token_for(&url("https://mcp.example.com/mcp/tools"))
                    .await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for caller in callers {
        tokens.push(caller.await.unwrap().unwrap());
    }
    assert_eq!(server.token_requests(), 1);
    assert!(tokens.iter().all(|t| t.same_token_as(&tokens[0])));
    let stats = cache.stats();
    assert_eq!((stats.fetches, stats.misses + stats.hits), (1, 1000));
}

#[tokio::test(start_paused = true)]
async fn keys_that_differ_only_in_resource_never_share_a_fetch() {
    let server = server();
    server.script(|s| s.latency = Duration::from_millis(50));
    let cache = cache(&server, &[MCP, API]);
    let mut callers = Vec::new();
    for i in 0..200 {
        let cache = cache.clone();
        let target = if i % 2 == 0 {
            "https://mcp.example.com/mcp/x"
        } else {
            "https://api.example.com/v1/x"
        };
        callers.push(tokio::spawn(async move {
            (target, cache.token_for(&url(target)).await)
        }));
    }
    for caller in callers {
        let (target, token) = caller.await.unwrap();
        let token = token.unwrap();
        let expected = if target.starts_with("https://mcp") {
            MCP
        } else {
            API
        };
        assert_eq!(token.audiences().unwrap(), [expected], "{target}");
        assert_eq!(token.resource().key(), expected);
    }
    assert_eq!(server.token_requests(), 2);
    let mut resources: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.resources.clone())
        .collect();
    resources.sort();
    assert_eq!(resources, [vec![API.to_owned()], vec![MCP.to_owned()]]);
}

#[tokio::test(start_paused = true)]
async fn scopes_and_accounts_are_part_of_the_key() {
    let server = server();
    let cache = cache(&server, &[MCP]);
    let resource = ResourceUri::parse(MCP).unwrap();
    let read = ScopeSet::parse("mcp:read").unwrap();
    let write = ScopeSet::parse("mcp:write mcp:read").unwrap();
    cache.token(&resource, &read).await.unwrap();
    cache
        .token(&resource, &ScopeSet::parse("mcp:read mcp:read").unwrap())
        .await
        .unwrap();
    cache.token(&resource, &write).await.unwrap();
    cache
        .token_for_account(&resource, &read, "alice")
        .await
        .unwrap();
    cache
        .token_for_account(&resource, &read, "bob")
        .await
        .unwrap();
    cache
        .token_for_account(&resource, &read, "alice")
        .await
        .unwrap();
    assert_eq!(server.token_requests(), 4);
    let scopes: Vec<_> = server.requests().iter().map(|r| r.scope.clone()).collect();
    assert_eq!(scopes[0].as_deref(), Some("mcp:read"));
    assert_eq!(scopes[1].as_deref(), Some("mcp:read mcp:write"));
}

#[tokio::test(start_paused = true)]
async fn a_hit_in_the_refresh_window_is_served_at_once_and_refreshes_once_in_the_background() {
    let server = server();
    // expires_in 300 s: served until 270 s (skew 30 s), refreshed from 243 s on (10 % of the
    // usable 270 s).
    server.script(|s| {
        s.expires_in = Some(Duration::from_secs(300));
        s.latency = Duration::from_millis(50);
    });
    let cache = cache(&server, &[MCP]);
    let target = url("https://mcp.example.com/mcp");
    let first = cache.token_for(&target).await.unwrap();
    assert_eq!(server.token_requests(), 1);

    advance(Duration::from_secs(240)).await;
    let hit = cache.token_for(&target).await.unwrap();
    assert!(hit.same_token_as(&first));
    assert_eq!(server.token_requests(), 1, "outside the window: no refresh");

    advance(Duration::from_secs(5)).await;
    let mut served = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        served.push(cache.token_for(&target).await.unwrap());
        // On the paused clock, waiting for the 50 ms server would move time.
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a caller waited for the server"
        );
    }
    assert!(served.iter().all(|t| t.same_token_as(&first)));
    settle().await;
    assert_eq!(server.token_requests(), 2, "exactly one background refresh");
    let refreshed = cache.token_for(&target).await.unwrap();
    assert!(!refreshed.same_token_as(&first));
    assert_eq!(cache.stats().refreshes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_refresh_keeps_the_valid_token_serving_until_it_expires() {
    let server = server();
    server.script(|s| s.expires_in = Some(Duration::from_secs(300)));
    // A long window (the former timing: served until 240 s, refreshed from 120 s), so that
    // the refresh fails many times before the token expires.
    let cache = builder(&server, &[MCP])
        .skew(Duration::from_secs(60))
        .refresh_ahead_share(50)
        .backoff(Duration::from_secs(1), Duration::from_secs(10))
        .build()
        .unwrap();
    let target = url("https://mcp.example.com/mcp");
    let first = cache.token_for(&target).await.unwrap();
    server.script(|s| s.fail_always = Some(Failure::ServiceUnavailable));

    advance(Duration::from_secs(130)).await;
    for _ in 0..100 {
        assert!(
            cache
                .token_for(&target)
                .await
                .unwrap()
                .same_token_as(&first)
        );
        advance(Duration::from_secs(1)).await;
        settle().await;
    }
    // ~100 s in the window with a 10 s maximum backoff: about 10 attempts, never one per call.
    let attempts = server.token_requests() - 1;
    assert!((5..=20).contains(&attempts), "{attempts} refresh attempts");

    advance(Duration::from_secs(20)).await; // past 240 s: expired
    let error = cache.token_for(&target).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        matches!(error, Error::Unavailable { .. } | Error::BackingOff { .. }),
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_backs_off_and_says_when_the_next_attempt_is() {
    let server = server();
    server.script(|s| s.fail_next(2, Failure::ServiceUnavailable));
    let cache = builder(&server, &[MCP])
        .backoff(Duration::from_secs(2), Duration::from_secs(30))
        .build()
        .unwrap();
    let target = url("https://mcp.example.com/mcp");

    let first = cache.token_for(&target).await.unwrap_err();
    assert!(matches!(first, Error::Unavailable { .. }), "{first:?}");
    assert!(first.is_transient());
    assert_eq!(server.token_requests(), 1);

    // Immediately again: refused without a request, with the time of the next attempt.
    let backing_off = cache.token_for(&target).await.unwrap_err();
    let Error::BackingOff {
        failures, retry_in, ..
    } = &backing_off
    else {
        panic!("{backing_off:?}");
    };
    assert_eq!(*failures, 1);
    assert!(
        *retry_in >= Duration::from_secs(1) && *retry_in <= Duration::from_secs(2),
        "{retry_in:?}"
    );
    assert!(
        backing_off.to_string().contains("next attempt in"),
        "{backing_off}"
    );
    assert_eq!(server.token_requests(), 1);

    advance(Duration::from_secs(2)).await;
    assert!(cache.token_for(&target).await.is_err());
    assert_eq!(server.token_requests(), 2);
    // The second failure doubles the wait (2..4 s with jitter).
    advance(Duration::from_millis(1900)).await;
    assert!(matches!(
        cache.token_for(&target).await,
        Err(Error::BackingOff { failures: 2, .. })
    ));
    advance(Duration::from_secs(3)).await;
    cache.token_for(&target).await.unwrap();
    assert_eq!(server.token_requests(), 3);
    // Success clears the backoff.
    assert_eq!(cache.stats().errors, 4);
}

#[tokio::test(start_paused = true)]
async fn invalid_target_is_terminal_for_the_key_and_not_transient() {
    let server = server();
    server.script(|s| s.fail_always = Some(Failure::InvalidTarget));
    let cache = cache(&server, &[MCP]);
    let target = url("https://mcp.example.com/mcp");
    let error = cache.token_for(&target).await.unwrap_err();
    assert!(
        matches!(&error, Error::InvalidTarget { resource, .. } if resource == MCP),
        "{error:?}"
    );
    assert!(!error.is_transient());
    assert_eq!(error.oauth_error().unwrap().code, "invalid_target");
    // Not retried in a loop: the key waits the maximum backoff.
    for _ in 0..10 {
        assert!(matches!(
            cache.token_for(&target).await,
            Err(Error::BackingOff { .. })
        ));
    }
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_does_not_cancel_the_fetch_for_the_others() {
    let server = server();
    server.script(|s| s.latency = Duration::from_secs(1));
    let cache = cache(&server, &[MCP]);
    let target = url("https://mcp.example.com/mcp");
    for _ in 0..5 {
        let leader = {
            let (cache, target) = (cache.clone(), target.clone());
            tokio::spawn(async move { cache.token_for(&target).await })
        };
        tokio::task::yield_now().await;
        advance(Duration::from_millis(100)).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
    }
    let token = cache.token_for(&target).await.unwrap();
    assert_eq!(
        server.token_requests(),
        1,
        "the aborted leaders' fetch was shared"
    );
    assert_eq!(token.resource().key(), MCP);
}

#[tokio::test(start_paused = true)]
async fn a_token_whose_aud_names_another_resource_is_refused_and_evicted() {
    let server = server();
    server.script(|s| s.audience = AudienceStyle::Fixed(vec!["https://other.example.com/".into()]));
    let cache = cache(&server, &[MCP]);
    let target = url("https://mcp.example.com/mcp/tools?session=s3cret-session");
    let error = cache.token_for(&target).await.unwrap_err();
    let refusal = error.refusal().expect("a refusal");
    assert_eq!(refusal.audiences(), ["https://other.example.com/"]);
    assert_eq!(
        error.to_string(),
        "token for https://mcp.example.com/mcp is only valid for \"https://other.example.com/\"; \
         refusing to send it to https://mcp.example.com/mcp/tools?…"
    );
    assert_eq!(cache.stats().refusals, 1);
    // Evicted, and the key backs off: the server is not asked again at every call.
    server.script(|s| s.audience = AudienceStyle::Resource);
    let backing_off = cache.token_for(&target).await.unwrap_err();
    assert!(backing_off.refusal().is_some(), "{backing_off:?}");
    assert_eq!(server.token_requests(), 1);
    // After the wait, a good token.
    advance(Duration::from_secs(61)).await;
    cache.token_for(&target).await.unwrap();
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_longest_covering_resource_is_chosen_and_unconfigured_urls_get_no_token() {
    let server = server();
    let cache = cache(
        &server,
        &[
            "https://api.example.com/",
            "https://api.example.com/v1/admin",
        ],
    );
    let admin = cache
        .token_for(&url("https://api.example.com/v1/admin/users"))
        .await
        .unwrap();
    assert_eq!(admin.resource().key(), "https://api.example.com/v1/admin");
    let root = cache
        .token_for(&url("https://api.example.com/v1/administrator"))
        .await
        .unwrap();
    assert_eq!(root.resource().key(), "https://api.example.com/");
    // The wire form of a configured root resource has no trailing slash (rules §1).
    assert_eq!(server.requests()[1].resources, ["https://api.example.com"]);

    let none = cache
        .token_for(&url("https://evil.example.com/v1/admin"))
        .await
        .unwrap_err();
    assert!(matches!(none, Error::NoResource { .. }), "{none:?}");
    let userinfo = cache
        .token_for(&url("https://user@api.example.com/v1"))
        .await
        .unwrap_err();
    assert!(userinfo.refusal().is_some(), "{userinfo:?}");
    let ambiguous = cache
        .token_for(&url("https://api.example.com/v1/admin/..;/x"))
        .await
        .unwrap_err();
    assert!(ambiguous.refusal().is_some(), "{ambiguous:?}");
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_from_token_is_checked_again_for_each_url() {
    let server = server();
    let cache = cache(&server, &[MCP, API]);
    let token = cache
        .token(&ResourceUri::parse(MCP).unwrap(), &ScopeSet::empty())
        .await
        .unwrap();
    let header = token
        .header_for(&url("https://mcp.example.com/mcp/x"))
        .unwrap();
    assert!(header.is_sensitive());
    assert!(header.to_str().unwrap().starts_with("Bearer "));
    let refusal = token
        .header_for(&url("https://api.example.com/v1/x"))
        .unwrap_err();
    assert_eq!(refusal.resource(), MCP);
    assert!(
        token
            .header_for(&url("https://mcp.example.com/mcpx"))
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn invalidate_evicts_only_the_current_token() {
    let server = server();
    let cache = cache(&server, &[MCP]);
    let target = url("https://mcp.example.com/mcp");
    let first = cache.token_for(&target).await.unwrap();
    assert!(cache.invalidate(&first).await);
    let second = cache.token_for(&target).await.unwrap();
    assert!(!second.same_token_as(&first));
    // A stale handle does not evict its replacement.
    assert!(!cache.invalidate(&first).await);
    assert!(
        cache
            .token_for(&target)
            .await
            .unwrap()
            .same_token_as(&second)
    );
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_never_served() {
    let server = server();
    server.script(|s| s.expires_in = Some(Duration::from_secs(120)));
    let cache = cache(&server, &[MCP]);
    let target = url("https://mcp.example.com/mcp");
    let first = cache.token_for(&target).await.unwrap();
    // 120 s lifetime less 30 s skew: served until 90 s.
    assert_eq!(first.expires_in(), Duration::from_secs(90));
    server.script(|s| s.latency = Duration::from_secs(5));
    advance(Duration::from_secs(91)).await;
    let second = cache.token_for(&target).await.unwrap();
    assert!(!second.same_token_as(&first));
    assert_eq!(server.token_requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_capacity_bound_evicts_entries() {
    let server = server();
    let cache = builder(&server, &["https://api.example.com/"])
        .max_capacity(64 * 1024)
        .build()
        .unwrap();
    let resource = ResourceUri::parse("https://api.example.com/").unwrap();
    for i in 0..500 {
        let scopes = ScopeSet::parse(&format!("s{i}")).unwrap();
        cache.token(&resource, &scopes).await.unwrap();
    }
    // Each entry weighs its token plus 256 bytes; 500 of them cannot all fit in 64 KiB.
    let kept = Arc::new(cache.clone());
    let mut hits = 0;
    for i in 0..500 {
        let before = server.token_requests();
        kept.token(&resource, &ScopeSet::parse(&format!("s{i}")).unwrap())
            .await
            .unwrap();
        if server.token_requests() == before {
            hits += 1;
        }
    }
    assert!(hits < 500, "nothing was evicted");
    assert!(hits > 0, "everything was evicted");
}

/// The audience decision on hand-out, for every token shape the server can send.
#[tokio::test(start_paused = true)]
async fn token_shapes_and_audience_modes() {
    use audience_cache::testing::TokenFormat;
    use audience_cache::{AudienceMode, AudiencePolicy};
    let other = "https://other.example.com/".to_owned();
    let cases: Vec<(TokenFormat, AudienceStyle, AudienceMode, bool)> = vec![
        (
            TokenFormat::Jwt,
            AudienceStyle::Resource,
            AudienceMode::DenyOnMismatch,
            true,
        ),
        (
            TokenFormat::Jwt,
            AudienceStyle::Resource,
            AudienceMode::RequireAud,
            true,
        ),
        (
            TokenFormat::Jwt,
            AudienceStyle::Array(vec![other.clone()]),
            AudienceMode::DenyOnMismatch,
            true,
        ),
        (
            TokenFormat::Jwt,
            AudienceStyle::Fixed(vec![other.clone()]),
            AudienceMode::DenyOnMismatch,
            false,
        ),
        (
            TokenFormat::Jwt,
            AudienceStyle::Fixed(vec![other.clone()]),
            AudienceMode::ProvenanceOnly,
            true,
        ),
        (
            TokenFormat::Jwt,
            AudienceStyle::Missing,
            AudienceMode::DenyOnMismatch,
            true,
        ),
        (
            TokenFormat::Jwt,
            AudienceStyle::Missing,
            AudienceMode::RequireAud,
            false,
        ),
        (
            TokenFormat::Jwt,
            AudienceStyle::Raw(serde_json::json!(42)),
            AudienceMode::DenyOnMismatch,
            false,
        ),
        (
            TokenFormat::Jwt,
            AudienceStyle::Raw(serde_json::json!([])),
            AudienceMode::DenyOnMismatch,
            false,
        ),
        (
            TokenFormat::Opaque,
            AudienceStyle::Resource,
            AudienceMode::DenyOnMismatch,
            true,
        ),
        (
            TokenFormat::Opaque,
            AudienceStyle::Resource,
            AudienceMode::RequireAud,
            false,
        ),
    ];
    for (format, audience, mode, allowed) in cases {
        let server = server();
        let case = format!("{format:?} {audience:?} {mode:?}");
        server.script(|s| {
            s.token_format = format;
            s.audience = audience;
        });
        let cache = TokenCache::builder()
            .in_process(&server)
            .client(
                ClientRegistration::new(
                    server.issuer(),
                    Url::parse(&server.token_endpoint()).unwrap(),
                    "svc",
                )
                .client_secret_basic("s3cret".into()),
            )
            .resource(
                ResourceConfig::new(ResourceUri::parse(MCP).unwrap(), server.issuer())
                    .audience(AudiencePolicy::new(mode)),
            )
            .build()
            .unwrap();
        let result = cache
            .token_for(&url("https://mcp.example.com/mcp/tools"))
            .await;
        assert_eq!(result.is_ok(), allowed, "{case}: {result:?}");
        if !allowed {
            assert!(result.unwrap_err().refusal().is_some(), "{case}");
            assert_eq!(cache.stats().refusals, 1, "{case}");
        }
    }
}
