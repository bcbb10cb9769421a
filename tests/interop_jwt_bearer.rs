//! The JWT bearer grant (RFC 7523 §2.1) against oidc-provider 9.13.3
//! (tests/interop/oidc-provider), where it is a custom grant type that verifies the assertion:
//! a workload's platform token (ES256 under the platform's key, `iss` the platform, `aud` the
//! provider's issuer, unexpired; the provider mints them at `/_test/workload-token`), or an
//! ID-JAG from an enterprise IdP it was told to trust (here the crate's embedded server on
//! loopback, which exchanges the user's ID token for it: `typ`, `iss`, `aud`, `resource` and
//! `client_id` verified).
//!
//! Each test starts its own server (Node.js 20 or later), so the token requests counted at
//! `/_test/stats` are exactly the test's own. `http://127.0.0.1:8001/mcp` is an audience only.

mod interop_support;

use std::path::PathBuf;
use std::time::Duration;

use audience_cache::testing::{AuthorizationServer, Client};
use audience_cache::{
    AssertionSource, Error, Grant, IdentityProvider, ResourceConfig, ScopeSet, TokenCache,
};
use base64::Engine as _;
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
    assertion_records(server)
        .await
        .into_iter()
        .map(|(_, sub, accepted)| (sub, accepted))
        .collect()
}

/// Each assertion as `(kind, sub, accepted)`, kind `workload` or `id-jag`.
async fn assertion_records(server: &AuthServer) -> Vec<(String, Option<String>, bool)> {
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
                a["kind"].as_str().unwrap_or_default().to_owned(),
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

/// The crate's embedded server on loopback as the enterprise IdP (the client is public there),
/// trusted by oidc-provider for ID-JAGs.
async fn trusted_idp(server: &AuthServer) -> AuthorizationServer {
    let idp = AuthorizationServer::builder()
        .client(Client::public("enterprise-client"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(idp.hs256_key());
    let url = reqwest::Url::parse_with_params(
        &format!("{}/_test/trust-idp", server.issuer()),
        &[("issuer", idp.issuer()), ("key", key.as_str())],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    reqwest::Client::new()
        .post(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{e}"));
    idp
}

#[tokio::test]
async fn an_id_jag_from_the_idp_gets_a_token_from_oidc_provider() {
    let server = AuthServer::start().await;
    let idp = trusted_idp(&server).await;
    let id_token = idp.id_token("alice", "enterprise-client");
    let identity_provider = IdentityProvider::new(
        idp.issuer(),
        url::Url::parse(&idp.token_endpoint()).unwrap_or_else(|e| panic!("{e}")),
        "enterprise-client",
    );
    let registration = server
        .registration("enterprise-client")
        .client_secret_basic("enterprise-secret".into())
        .grant(Grant::IdJag {
            idp: identity_provider,
            id_token: AssertionSource::value(id_token.as_str().into()),
        });
    let resource = loopback(MCP);
    let cache = TokenCache::builder()
        .client(registration)
        .resource(ResourceConfig::new(resource.clone(), server.issuer()).scopes(scopes("mcp:read")))
        .allow_insecure_http_on_loopback(true)
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    let token = cache
        .token(&resource, &ScopeSet::empty())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, claims) = jwt(token.expose_secret());
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["client_id"], "enterprise-client");
    assert_eq!(token.key().grant(), "id-jag");

    // At the IdP: one exchange of the ID token for an ID-JAG naming oidc-provider and MCP.
    let exchanges = idp.requests();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].audiences, [server.issuer()]);
    assert_eq!(exchanges[0].resources, [MCP]);
    assert_eq!(exchanges[0].status, Some(http::StatusCode::OK));
    // At oidc-provider: one JWT bearer request, client_secret_basic, the ID-JAG verified.
    let stats = server.stats().await;
    assert_eq!(
        stats.requests,
        [TokenRequest::ok(
            JWT_BEARER,
            MCP,
            Some("mcp:read"),
            "client_secret_basic"
        )]
    );
    assert_eq!(
        assertion_records(&server).await,
        [("id-jag".to_owned(), Some("alice".to_owned()), true)]
    );
}
