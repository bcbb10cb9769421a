//! The scope of a refresh grant (RFC 6749 §6): what the code exchange records as the grant,
//! what a refresh may ask for, and what a refresh answer may grant. Against the embedded
//! server, in process, on paused time.

mod support;

use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, ScopeField};
use audience_cache::{Error, ScopeSet, TokenCache};
use support::*;

/// (grant_type, scope sent, status) of every token request.
fn sent(server: &AuthorizationServer) -> Vec<(String, Option<String>, u16)> {
    server
        .requests()
        .into_iter()
        .map(|r| {
            (
                r.grant_type.unwrap_or_default(),
                r.scope,
                r.status.map_or(0, |s| s.as_u16()),
            )
        })
        .collect()
}

fn row(grant: &str, scope: Option<&str>, status: u16) -> (String, Option<String>, u16) {
    (grant.to_owned(), scope.map(str::to_owned), status)
}

/// `app` authorized for MCP (default scopes `mcp:read`) with `registration`'s settings, the
/// access token then past its lifetime.
async fn authorized(
    server: &AuthorizationServer,
    registration: audience_cache::ClientRegistration,
) -> TokenCache {
    let cache = new_cache(
        server,
        registration,
        [config(MCP).scopes(scopes("mcp:read"))],
    );
    let pending = cache
        .begin_authorization(&resource(MCP), &ScopeSet::empty())
        .unwrap();
    let redirect = approve(server, &pending).await;
    cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    tokio::time::advance(USABLE + Duration::from_secs(1)).await;
    cache
}

#[tokio::test(start_paused = true)]
async fn a_refresh_answer_wider_than_the_grant_is_refused_and_the_rotated_token_kept() {
    let server = new_server();
    let cache = authorized(&server, public_app()).await;
    server.script(|s| s.scope_field = ScopeField::Fixed("mcp:read admin".into()));
    let error = cache
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .expect_err("a token with `admin` is never cached for a grant of `mcp:read`");
    assert!(
        matches!(&error, Error::Protocol { detail, .. } if detail.contains("admin")
            && detail.contains("RFC 6749 §6")),
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains("eyJ"));

    // The server behaves again; after the backoff the next refresh presents the refresh token
    // that refused answer rotated in (the old one would be a reuse: invalid_grant).
    server.script(|s| s.scope_field = ScopeField::Echo);
    tokio::time::advance(Duration::from_secs(61)).await;
    let token = cache
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    assert_eq!(token.scopes(), &scopes("mcp:read"));
    assert_eq!(
        sent(&server),
        [
            row("authorization_code", None, 200),
            row("refresh_token", Some("mcp:read"), 200),
            row("refresh_token", Some("mcp:read"), 200),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_refresh_answer_narrower_than_the_grant_is_taken() {
    let server = new_server();
    let cache = new_cache(
        &server,
        public_app(),
        [config(MCP).scopes(scopes("mcp:read mcp:write"))],
    );
    let pending = cache
        .begin_authorization(&resource(MCP), &ScopeSet::empty())
        .unwrap();
    let redirect = approve(&server, &pending).await;
    cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    tokio::time::advance(USABLE + Duration::from_secs(1)).await;
    server.script(|s| s.scope_field = ScopeField::Fixed("mcp:read".into()));
    let token = cache
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    assert_eq!(token.scopes(), &scopes("mcp:read"));
}

#[tokio::test(start_paused = true)]
async fn scopes_the_code_exchange_adds_are_not_part_of_the_refresh_grant() {
    let server = new_server();
    server.script(|s| s.scope_field = ScopeField::Fixed("mcp:read admin".into()));
    let cache = authorized(&server, public_app()).await;
    server.script(|s| s.scope_field = ScopeField::Echo);
    let before = server.token_requests();

    // `admin` was never asked for: a token with it needs the user, not the refresh token.
    let error = cache
        .token(&resource(MCP), &scopes("admin"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::AuthorizationRequired { beyond_grant: Some(beyond), .. }
            if beyond == &scopes("admin mcp:read")),
        "{error:?}"
    );
    assert_eq!(server.token_requests(), before, "no refresh was sent");
    // What was asked for still refreshes.
    let token = cache
        .token(&resource(MCP), &ScopeSet::empty())
        .await
        .unwrap();
    assert_eq!(token.scopes(), &scopes("mcp:read"));
    assert_eq!(server.token_requests(), before + 1);
}

#[tokio::test(start_paused = true)]
async fn an_offline_access_grant_refreshes_when_the_answer_leaves_offline_access_out() {
    // No `scope` in the answers (RFC 6749 §5.1: the granted scope is the requested one), or a
    // `scope` with only the resource's scopes (as oidc-provider answers).
    for field in [ScopeField::Omit, ScopeField::Fixed("mcp:read".into())] {
        let server = new_server();
        server.script(|s| s.scope_field = field.clone());
        let cache = authorized(&server, public_app().request_offline_access(true)).await;
        let token = cache.token(&resource(MCP), &ScopeSet::empty()).await;
        assert!(token.is_ok(), "{field:?}: {token:?}");
        assert_eq!(
            server.authorization_requests()[0].scope.as_deref(),
            Some("mcp:read offline_access")
        );
        assert_eq!(
            sent(&server),
            [
                row("authorization_code", None, 200),
                row("refresh_token", Some("mcp:read offline_access"), 200),
            ],
            "{field:?}"
        );
        // And again with the rotated refresh token.
        tokio::time::advance(USABLE + Duration::from_secs(1)).await;
        cache
            .token(&resource(MCP), &ScopeSet::empty())
            .await
            .unwrap();
        assert_eq!(server.token_requests(), 3, "{field:?}");
    }
}
