//! The authorization code grant with PKCE, its redirect checks, and the refresh tokens it
//! leaves behind: in process against the embedded authorization server, on paused time.

mod support;

use audience_cache::testing::{
    AuthorizationServer, AuthorizeOutcome, Failure, IssParameter, TokenRequestRecord,
};
use audience_cache::{Error, PendingAuthorization, ScopeSet, TokenCache};
use support::*;
use url::Url;

fn empty() -> ScopeSet {
    ScopeSet::empty()
}

/// A cache for the public client `app` with MCP (default scope `mcp:read`) and API.
fn app_cache(server: &AuthorizationServer) -> TokenCache {
    new_cache(
        server,
        public_app(),
        [config(MCP).scopes(scopes("mcp:read")), config(API)],
    )
}

/// Runs the whole flow for MCP with `extra` scopes: begin, approve, complete.
async fn authorize(
    server: &AuthorizationServer,
    cache: &TokenCache,
    extra: &str,
    account: Option<&str>,
) -> audience_cache::BearerToken {
    let pending = match account {
        Some(account) => {
            cache.begin_authorization_for_account(&resource(MCP), &scopes(extra), account)
        }
        None => cache.begin_authorization(&resource(MCP), &scopes(extra)),
    }
    .unwrap();
    let redirect = approve(server, &pending).await;
    cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap()
}

fn grant_types(records: &[TokenRequestRecord]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r.grant_type.as_deref().unwrap_or_default())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_authorization_url_carries_every_parameter() {
    let server = new_server();
    let cache = app_cache(&server);
    let pending = cache
        .begin_authorization(&resource(MCP), &scopes("b  a"))
        .unwrap();
    let url = pending.url();
    assert_eq!(
        format!("{}{}", url.origin().ascii_serialization(), url.path()),
        authorization_endpoint().as_str()
    );
    assert_eq!(pending.redirect_uri().as_str(), REDIRECT);
    assert_eq!(param(url, "response_type").as_deref(), Some("code"));
    assert_eq!(param(url, "client_id").as_deref(), Some(APP));
    assert_eq!(param(url, "redirect_uri").as_deref(), Some(REDIRECT));
    // The resource's default scope and the extra ones, canonical.
    assert_eq!(param(url, "scope").as_deref(), Some("a b mcp:read"));
    assert!(param(url, "state").is_some_and(|s| s.len() >= 16));
    // RFC 7636 §4.2: BASE64URL(SHA256(verifier)) is 43 characters.
    assert!(param(url, "code_challenge").is_some_and(|c| c.len() == 43));
    assert_eq!(param(url, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(param(url, "resource").as_deref(), Some(MCP));
    assert_eq!(param(url, "code_verifier"), None);

    // Two authorizations have different state and challenge. With no scope at all (API has
    // no default scopes), no `scope` parameter is sent.
    let other = cache.begin_authorization(&resource(API), &empty()).unwrap();
    assert_eq!(param(other.url(), "scope"), None);
    assert_eq!(param(other.url(), "resource").as_deref(), Some(API));
    assert_ne!(param(url, "state"), param(other.url(), "state"));
    assert_ne!(
        param(url, "code_challenge"),
        param(other.url(), "code_challenge")
    );

    // The server accepts it as it is.
    let redirect = approve(&server, &pending).await;
    assert!(param(&redirect, "code").is_some());
    let record = &server.authorization_requests()[0];
    assert_eq!(record.error, None);
    assert_eq!(record.resources, [MCP]);
    assert_eq!(record.scope.as_deref(), Some("a b mcp:read"));
}

#[tokio::test(start_paused = true)]
async fn completing_from_the_redirect_yields_a_cached_token() {
    let server = new_server();
    let cache = app_cache(&server);
    let token = authorize(&server, &cache, "files:read", None).await;

    assert_eq!(token.resource().key(), "https://mcp.example.com/");
    assert_eq!(token.scopes(), &scopes("files:read mcp:read"));
    assert_eq!(token.expires_in(), USABLE);
    let info = server.validate(token.expose_secret()).unwrap();
    assert_eq!(info.audiences, [MCP]);
    assert_eq!(info.scope.as_deref(), Some("files:read mcp:read"));
    assert!(
        token
            .header_for(&url("https://mcp.example.com/tools"))
            .is_ok()
    );

    let records = server.requests();
    assert_eq!(grant_types(&records), ["authorization_code"]);
    let record = &records[0];
    assert!(record.code_presented && record.code_verifier_presented);
    assert_eq!(record.resources, [MCP]);
    assert_eq!(record.status, Some(http::StatusCode::OK));

    // Cached under the scopes that were authorized.
    let again = cache
        .token(&resource(MCP), &scopes("files:read"))
        .await
        .unwrap();
    assert!(again.same_token_as(&token));
    assert_eq!(server.token_requests(), 1);
}

/// Rebuilds `url` with its query pairs changed by `change`.
fn with_query(url: &Url, change: impl FnOnce(&mut Vec<(String, String)>)) -> Url {
    let mut pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    change(&mut pairs);
    let mut changed = url.clone();
    changed.set_query(None);
    if !pairs.is_empty() {
        changed.query_pairs_mut().extend_pairs(pairs);
    }
    changed
}

fn with_base(url: &Url, base: &str) -> Url {
    let mut changed = Url::parse(base).unwrap();
    changed.set_query(url.query());
    changed
}

/// Changes the server's script before the user is sent to it.
type Setup = fn(&AuthorizationServer);
/// Changes the redirect before it is handed to the cache.
type Tamper = fn(&Url) -> Url;

#[tokio::test(start_paused = true)]
async fn a_bad_redirect_is_refused_without_a_token_request() {
    let unchanged: Tamper = |url| url.clone();
    let cases: Vec<(&str, Setup, Tamper, &str)> = vec![
        (
            "wrong state",
            |_| {},
            |url| {
                with_query(url, |pairs| {
                    for (k, v) in pairs.iter_mut() {
                        if k == "state" {
                            *v = "forged".into();
                        }
                    }
                })
            },
            "state does not match",
        ),
        (
            "no state",
            |_| {},
            |url| with_query(url, |pairs| pairs.retain(|(k, _)| k != "state")),
            "state does not match",
        ),
        (
            "wrong iss",
            |server| {
                server.script(|s| {
                    s.iss_parameter = IssParameter::Wrong("https://attacker.example".into())
                })
            },
            unchanged,
            "mix-up",
        ),
        (
            "access denied",
            |server| server.script(|s| s.authorize = AuthorizeOutcome::Deny),
            unchanged,
            "access_denied",
        ),
        (
            "another path",
            |_| {},
            |url| with_base(url, "http://127.0.0.1:53682/other"),
            "not the redirect URI",
        ),
        (
            "another port",
            |_| {},
            |url| with_base(url, "http://127.0.0.1:53683/callback"),
            "not the redirect URI",
        ),
        (
            "another origin",
            |_| {},
            |url| with_base(url, "https://evil.example/callback"),
            "not the redirect URI",
        ),
        (
            "two codes",
            |_| {},
            |url| with_query(url, |pairs| pairs.push(("code".into(), "other".into()))),
            "more than one \"code\"",
        ),
        (
            "two states",
            |_| {},
            |url| {
                with_query(url, |pairs| {
                    let state = pairs.iter().find(|(k, _)| k == "state").cloned().unwrap();
                    pairs.push(state);
                })
            },
            "more than one \"state\"",
        ),
        (
            "no code",
            |_| {},
            |url| with_query(url, |pairs| pairs.retain(|(k, _)| k != "code")),
            "no code",
        ),
    ];
    for (name, script, tamper, expected) in cases {
        let server = new_server();
        script(&server);
        let cache = app_cache(&server);
        let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
        let redirect = approve(&server, &pending).await;
        let code = param(&redirect, "code");
        let tampered = tamper(&redirect);
        let error = cache
            .complete_authorization(pending, &tampered)
            .await
            .unwrap_err();
        let Error::AuthorizationResponse { detail } = &error else {
            panic!("{name}: {error:?}");
        };
        assert!(detail.contains(expected), "{name}: {detail}");
        assert!(!error.is_transient(), "{name}");
        assert_eq!(server.token_requests(), 0, "{name}");
        // The code, when there was one, is not in the message.
        if let Some(code) = code {
            assert!(!format!("{error} {error:?}").contains(&code), "{name}");
        }
        // Nothing was cached.
        let after = cache.token(&resource(MCP), &empty()).await.unwrap_err();
        assert!(
            matches!(after, Error::AuthorizationRequired { .. }),
            "{name}: {after:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_redirect_without_iss_is_accepted() {
    // RFC 9207 `iss` is checked when present; servers that do not send it still work.
    let server = new_server();
    server.script(|s| s.iss_parameter = IssParameter::Omit);
    let cache = app_cache(&server);
    authorize(&server, &cache, "", None).await;
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_redirect_without_iss_is_refused_when_the_server_announces_iss() {
    // RFC 9207 §2.4: a server that says it sends `iss` must send it.
    let server = new_server();
    server.script(|s| s.iss_parameter = IssParameter::Omit);
    let cache = new_cache(
        &server,
        public_app().require_authorization_response_iss(true),
        [config(MCP)],
    );
    let pending = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    let redirect = approve(&server, &pending).await;
    let error = cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::AuthorizationResponse { detail } if detail.contains("no iss")),
        "{error:?}"
    );
    assert_eq!(server.token_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_code_the_server_no_longer_honours_is_invalid_grant_with_a_next_step() {
    // A code is exchanged once (RFC 6749 §4.1.2). (One that outlived its ten minutes cannot
    // reach the server: the pending authorization expires first.)
    let server = new_server();
    let cache = app_cache(&server);
    let first = cache.begin_authorization(&resource(MCP), &empty()).unwrap();
    let used = approve(&server, &first).await;
    cache.complete_authorization(first, &used).await.unwrap();
    let pending = cache
        .begin_authorization_for_account(&resource(MCP), &empty(), "bob")
        .unwrap();
    let state = param(pending.url(), "state").unwrap();
    let replayed = with_query(&used, |pairs| {
        for (k, v) in pairs.iter_mut() {
            if k == "state" {
                *v = state.clone();
            }
        }
    });
    let error = cache
        .complete_authorization(pending, &replayed)
        .await
        .unwrap_err();
    assert_eq!(error.oauth_error().unwrap().code, "invalid_grant");
    assert!(error.to_string().contains("authorize again"), "{error}");
    assert!(!error.is_transient());
    let records = server.requests();
    assert_eq!(
        grant_types(&records),
        ["authorization_code", "authorization_code"]
    );
    // Nothing was cached for bob.
    let after = cache
        .token_for_account(&resource(MCP), &empty(), "bob")
        .await
        .unwrap_err();
    assert!(
        matches!(after, Error::AuthorizationRequired { .. }),
        "{after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn expired_tokens_are_refreshed_with_the_rotated_refresh_token() {
    let server = new_server();
    let cache = app_cache(&server);
    let first = authorize(&server, &cache, "", None).await;
    let mcp = resource(MCP);

    tokio::time::advance(USABLE).await;
    let second = cache.token(&mcp, &empty()).await.unwrap();
    assert!(!second.same_token_as(&first));
    assert_eq!(second.expires_in(), USABLE);

    // With rotation, reusing the first refresh token would be invalid_grant and revoke the
    // family: the second refresh succeeds only with the token the first one returned.
    tokio::time::advance(USABLE).await;
    let third = cache.token(&mcp, &empty()).await.unwrap();
    assert!(!third.same_token_as(&second));

    let records = server.requests();
    assert_eq!(
        grant_types(&records),
        ["authorization_code", "refresh_token", "refresh_token"]
    );
    for record in &records[1..] {
        assert!(record.refresh_token_presented);
        assert_eq!(record.resources, [MCP]);
        assert_eq!(record.scope.as_deref(), Some("mcp:read"));
        assert_eq!(record.client_id.as_deref(), Some(APP));
        assert_eq!(record.status, Some(http::StatusCode::OK));
    }
    assert_eq!(cache.stats().refreshes, 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_refreshes_of_one_grant_never_present_a_refresh_token_twice() {
    let server = new_server();
    // Latency makes the requests overlap if they are not serialized.
    server.script(|s| s.latency = std::time::Duration::from_secs(1));
    let cache = app_cache(&server);
    authorize(&server, &cache, "read write", None).await;
    let mcp = resource(MCP);
    let (read, write) = (scopes("read"), scopes("write"));

    // Two scope subsets of the grant: two keys, two fetches, one refresh token.
    let (a, b) = tokio::join!(cache.token(&mcp, &read), cache.token(&mcp, &write));
    assert_eq!(a.unwrap().scopes(), &scopes("mcp:read read"));
    assert_eq!(b.unwrap().scopes(), &scopes("mcp:read write"));

    // And again after they expire, with the whole grant as a third key.
    tokio::time::advance(USABLE).await;
    let all = scopes("read write");
    let (a, b, c) = tokio::join!(
        cache.token(&mcp, &read),
        cache.token(&mcp, &write),
        cache.token(&mcp, &all)
    );
    for result in [a, b, c] {
        result.unwrap();
    }

    let records = server.requests();
    assert_eq!(records.len(), 6);
    assert_eq!(grant_types(&records[..1]), ["authorization_code"]);
    assert!(
        grant_types(&records[1..])
            .iter()
            .all(|g| *g == "refresh_token")
    );
    // A reused refresh token would have been invalid_grant (and revoked the family).
    for record in &records {
        assert_eq!(record.status, Some(http::StatusCode::OK), "{record:?}");
    }
    let mut refreshed: Vec<_> = records[1..]
        .iter()
        .map(|r| r.scope.clone().unwrap_or_default())
        .collect();
    refreshed.sort();
    assert_eq!(
        refreshed,
        [
            "mcp:read read",
            "mcp:read read",
            "mcp:read read write",
            "mcp:read write",
            "mcp:read write"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_scope_outside_the_grant_needs_a_new_authorization() {
    let server = new_server();
    let cache = app_cache(&server);
    authorize(&server, &cache, "read", None).await;
    let error = cache
        .token(&resource(MCP), &scopes("read admin"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::AuthorizationRequired { resource, beyond_grant: Some(asked) }
            if resource == "https://mcp.example.com/" && asked.contains("admin")),
        "{error:?}"
    );
    assert!(!error.is_transient());
    let shown = error.to_string();
    assert!(
        shown.contains("begin_authorization") && shown.contains("not all in the cached grant"),
        "{shown}"
    );
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_on_refresh_drops_the_refresh_token() {
    let server = new_server();
    let cache = app_cache(&server);
    authorize(&server, &cache, "read write", None).await;
    let mcp = resource(MCP);
    let all = scopes("read write");

    tokio::time::advance(USABLE).await;
    server.script(|s| s.fail_next(1, Failure::InvalidGrant));
    let error = cache.token(&mcp, &all).await.unwrap_err();
    assert_eq!(error.oauth_error().unwrap().code, "invalid_grant");
    assert!(error.to_string().contains("authorize again"), "{error}");
    assert!(!error.is_transient());
    assert_eq!(server.token_requests(), 2);

    // The refresh token is gone: another subset of the grant needs authorization, and no
    // request is sent with the dead token.
    let error = cache.token(&mcp, &scopes("read")).await.unwrap_err();
    assert!(
        matches!(error, Error::AuthorizationRequired { .. }),
        "{error:?}"
    );
    // So does the failed key, at once: no backoff hides that a new authorization is needed.
    let error = cache.token(&mcp, &all).await.unwrap_err();
    assert!(
        matches!(error, Error::AuthorizationRequired { .. }),
        "{error:?}"
    );
    assert_eq!(server.token_requests(), 2);

    // A new authorization brings tokens back.
    authorize(&server, &cache, "read write", None).await;
    cache.token(&mcp, &all).await.unwrap();
    assert_eq!(server.token_requests(), 3);
}

#[tokio::test(start_paused = true)]
async fn accounts_keep_tokens_and_refresh_tokens_apart() {
    let server = new_server();
    let cache = app_cache(&server);
    let mcp = resource(MCP);
    let alice = authorize(&server, &cache, "", Some("alice")).await;
    let bob = authorize(&server, &cache, "", Some("bob")).await;
    assert!(!alice.same_token_as(&bob));
    assert_eq!(alice.key().account(), Some("alice"));
    assert_eq!(bob.key().account(), Some("bob"));

    let again = cache
        .token_for_account(&mcp, &empty(), "alice")
        .await
        .unwrap();
    assert!(again.same_token_as(&alice));
    let again = cache
        .token_for_account(&mcp, &empty(), "bob")
        .await
        .unwrap();
    assert!(again.same_token_as(&bob));
    // Neither user's token serves a call with no account, or a third user.
    for error in [
        cache.token(&mcp, &empty()).await.unwrap_err(),
        cache
            .token_for_account(&mcp, &empty(), "carol")
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(error, Error::AuthorizationRequired { .. }),
            "{error:?}"
        );
    }
    assert_eq!(server.token_requests(), 2);

    // Each refreshes with its own refresh token (a shared one would be reused and revoked).
    tokio::time::advance(USABLE).await;
    for account in ["alice", "bob", "alice", "bob"] {
        let token = cache
            .token_for_account(&mcp, &empty(), account)
            .await
            .unwrap();
        assert_eq!(token.key().account(), Some(account));
    }
    let records = server.requests();
    assert_eq!(
        grant_types(&records),
        [
            "authorization_code",
            "authorization_code",
            "refresh_token",
            "refresh_token"
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.status == Some(http::StatusCode::OK))
    );
}

#[tokio::test(start_paused = true)]
async fn begin_authorization_needs_the_code_grant() {
    let server = new_server();
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let error = cache
        .begin_authorization(&resource(MCP), &empty())
        .unwrap_err();
    assert!(
        matches!(&error, Error::AuthorizationResponse { detail }
            if detail.contains("does not use the authorization code grant")),
        "{error:?}"
    );
    let error = cache
        .begin_authorization(&resource("https://unknown.example.com"), &empty())
        .unwrap_err();
    assert!(matches!(error, Error::UnknownResource { .. }), "{error:?}");
}

#[test]
fn a_pending_authorization_can_wait_in_another_task() {
    // It is held while the user is away, often across tasks of a multi-threaded runtime.
    fn send_and_sync<T: Send + Sync + 'static>() {}
    send_and_sync::<PendingAuthorization>();
}
