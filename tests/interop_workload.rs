//! The JWT bearer grant (RFC 7523 §2.1) with a workload's platform token against oidc-provider
//! 9.13.3 (tests/interop/oidc-provider), where it is a custom grant type that verifies the
//! assertion: ES256 under the platform's key, `iss` the platform, `aud` the provider's issuer,
//! unexpired. The provider mints platform tokens at `/_test/workload-token` for the tests.
//!
//! Each test starts its own server (Node.js 20 or later), so the token requests counted at
//! `/_test/stats` are exactly the test's own. `http://127.0.0.1:8001/mcp` is an audience only.

mod interop_support;

use std::path::PathBuf;
use std::time::Duration;

use audience_cache::{AssertionSource, Error, Grant, ResourceConfig, ScopeSet, TokenCache};
use interop_support::server::{AuthServer, TokenRequest};
use interop_support::{jwt, loopback, scopes};
use serde_json::Value;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const MCP: &str = "http://127.0.0.1:8001/mcp";

/// A platform token for `sub`, for `aud` (the provider's issuer when `None`), expiring in
/// `ttl` seconds (negative: already expired).
async fn platform_token(server: &AuthServer, sub: &str, aud: Option<&str>, ttl: i64) -> String {
    let aud = aud.unwrap_or(server.issuer());
    let url = reqwest::Url::parse_with_params(
        &format!("{}/_test/workload-token", server.issuer()),
        &[("sub", sub), ("aud", aud), ("ttl", &ttl.to_string())],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let body: Value = reqwest::get(url)
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    body["token"].as_str().unwrap_or_default().to_owned()
}

/// What the provider's grant made of each assertion: `(sub, accepted)`.
async fn assertions(server: &AuthServer) -> Vec<(Option<String>, bool)> {
    let stats: Value = reqwest::get(format!("{}/_test/stats", server.issuer()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stats["assertions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["sub"].as_str().map(str::to_owned),
                a["accepted"].as_bool() == Some(true),
            )
        })
        .collect()
}

/// A projected-token file, removed when dropped.
struct TokenFile(PathBuf);

impl TokenFile {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ac-interop-wif-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        Self(dir.join("token"))
    }

    fn write(&self, token: &str) {
        std::fs::write(&self.0, format!("{token}\n")).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The public client `workload` with the JWT bearer grant, reading `file`.
fn cache(server: &AuthServer, file: &TokenFile) -> TokenCache {
    let registration = server.registration("workload").grant(Grant::JwtBearer {
        assertion: AssertionSource::file(&file.0),
    });
    TokenCache::builder()
        .client(registration)
        .resource(ResourceConfig::new(loopback(MCP), server.issuer()).scopes(scopes("mcp:read")))
        .allow_insecure_http_on_loopback(true)
        .request_timeout(Duration::from_secs(10))
        // Real time: the waits after a refusal are kept short.
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_rotating_platform_token_gets_tokens_for_the_resource_from_oidc_provider() {
    let server = AuthServer::start().await;
    let file = TokenFile::new("rotating");
    file.write(&platform_token(&server, "ci-job-1", None, 300).await);
    let cache = cache(&server, &file);
    let resource = loopback(MCP);

    let token = cache
        .token(&resource, &ScopeSet::empty())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, claims) = jwt(token.expose_secret());
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["scope"], "mcp:read");
    assert_eq!(claims["client_id"], "workload");
    assert_eq!(token.key().grant(), "jwt-bearer");
    // Cached: no second request.
    cache
        .token(&resource, &ScopeSet::empty())
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The platform rotates the token: the next request reads the new one.
    file.write(&platform_token(&server, "ci-job-2", None, 300).await);
    assert!(cache.invalidate(&token).await);
    cache
        .token(&resource, &ScopeSet::empty())
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let stats = server.stats().await;
    let expected = TokenRequest::ok(JWT_BEARER, MCP, Some("mcp:read"), "none");
    assert_eq!(stats.requests, [expected.clone(), expected]);
    assert_eq!(
        assertions(&server).await,
        [
            (Some("ci-job-1".to_owned()), true),
            (Some("ci-job-2".to_owned()), true)
        ]
    );
}

#[tokio::test]
async fn an_expired_or_misdirected_platform_token_is_refused_once_and_not_sent_again() {
    let server = AuthServer::start().await;
    let expired = platform_token(&server, "ci-job-1", None, -120).await;
    let misdirected = platform_token(&server, "ci-job-1", Some("https://other.example"), 300).await;
    let file = TokenFile::new("refused");
    let cache = cache(&server, &file);
    let resource = loopback(MCP);

    for (round, jwt) in [expired, misdirected].iter().enumerate() {
        file.write(jwt);
        let error = cache
            .token(&resource, &ScopeSet::empty())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::OAuth { error, .. } if error.code == "invalid_grant"),
            "{error:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The backoff is over; the file still holds the refused token: nothing is sent.
        let again = cache
            .token(&resource, &ScopeSet::empty())
            .await
            .unwrap_err();
        assert!(again.to_string().contains("is not sent again"), "{again}");
        assert_eq!(server.stats().await.token_requests, round as u64 + 1);
    }
    let refused = assertions(&server).await;
    assert_eq!(refused, [(None, false), (None, false)]);
    let stats = server.stats().await;
    assert!(
        stats
            .requests
            .iter()
            .all(|r| r.grant_type == JWT_BEARER && r.status == 400)
    );
}
