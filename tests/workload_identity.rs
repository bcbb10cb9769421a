//! Workload identity federation: the JWT bearer grant (RFC 7523 §2.1) with a workload's
//! platform token as `assertion`, read from its source for every token request. The embedded
//! authorization server in process trusts a second one playing the workload platform (it signs
//! the tokens); paused time; every count and parameter from the server's records.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use audience_cache::testing::{
    AuthorizationServer, ClientAuthMethod, Failure, TokenRequestRecord, fingerprint,
};
use audience_cache::{
    AssertionSource, ClientRegistration, Error, Grant, PreRegistered, TokenCache,
};
use support::*;

const PLATFORM: &str = "https://platform.in-process.test";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const WORKLOAD: &str = "system:serviceaccount:ci:deployer";
const LIFETIME: Duration = Duration::from_secs(600);

/// The authorization server (the public client `app`) and the platform it trusts.
fn servers() -> (AuthorizationServer, AuthorizationServer) {
    let platform = AuthorizationServer::builder().in_process_at(PLATFORM);
    let auth = new_server();
    auth.trust_assertions_from(&platform);
    (auth, platform)
}

fn registration(assertion: AssertionSource) -> ClientRegistration {
    ClientRegistration::new(ISSUER, token_endpoint(), APP).grant(Grant::JwtBearer { assertion })
}

fn cache(auth: &AuthorizationServer, assertion: AssertionSource) -> TokenCache {
    new_cache(
        auth,
        registration(assertion),
        [config(MCP).scopes(scopes("deploy"))],
    )
}

fn mcp_url() -> url::Url {
    url(&format!("{MCP}/tools"))
}

/// A file for a projected token, removed when dropped.
struct TokenFile(PathBuf);

impl TokenFile {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ac-wif-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir.join("token"))
    }

    fn write(&self, contents: &str) {
        std::fs::write(&self.0, contents).unwrap();
    }

    fn source(&self) -> AssertionSource {
        AssertionSource::file(&self.0)
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A JWT bearer request, every parameter asserted.
fn assert_bearer(record: &TokenRequestRecord, assertion: &str) {
    assert_eq!(record.grant_type.as_deref(), Some(JWT_BEARER));
    // `none`: the client id in the body, no secret, no client assertion.
    assert_eq!(record.client_id.as_deref(), Some(APP));
    assert_eq!(record.client_auth, Some(ClientAuthMethod::None));
    assert_eq!(record.resources, [MCP]);
    assert!(record.audiences.is_empty());
    assert_eq!(record.scope.as_deref(), Some("deploy"));
    assert_eq!(record.assertion_fingerprint, Some(fingerprint(assertion)));
    assert!(!record.subject_token_presented && !record.refresh_token_presented);
    assert!(!record.code_presented && !record.code_verifier_presented);
}

#[tokio::test(start_paused = true)]
async fn the_platform_token_is_the_assertion_with_the_resource_and_no_secret() {
    let (auth, platform) = servers();
    let jwt = platform.workload_token(WORKLOAD, ISSUER, LIFETIME);
    let cache = cache(&auth, AssertionSource::value(secret(&jwt)));

    let token = cache.token_for(&mcp_url()).await.unwrap();
    assert_eq!(auth.token_requests(), 1);
    let record = &auth.requests()[0];
    assert_bearer(record, &jwt);
    assert_eq!(record.status, Some(http::StatusCode::OK));
    let info = auth.validate(token.expose_secret()).unwrap();
    assert_eq!(info.subject, WORKLOAD);
    assert_eq!(info.audiences, [MCP]);
    assert_eq!(token.key().grant(), "jwt-bearer");
    // Cached: no second request.
    cache.token_for(&mcp_url()).await.unwrap();
    assert_eq!(auth.token_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rotating_file_is_read_for_every_token_request() {
    let (auth, platform) = servers();
    let file = TokenFile::new("rotates");
    let first = platform.workload_token(WORKLOAD, ISSUER, LIFETIME);
    file.write(&format!("{first}\n"));
    let cache = cache(&auth, file.source());

    let token = cache.token_for(&mcp_url()).await.unwrap();
    // The platform rotates the projected token; the next request sends the new one.
    tokio::time::advance(Duration::from_secs(1)).await;
    let second = platform.workload_token(WORKLOAD, ISSUER, LIFETIME);
    assert_ne!(first, second);
    file.write(&second);
    assert!(cache.invalidate(&token).await);
    cache.token_for(&mcp_url()).await.unwrap();
    let seen = auth.requests();
    assert_eq!(seen.len(), 2);
    assert_bearer(&seen[0], &first);
    assert_bearer(&seen[1], &second);
}

#[tokio::test(start_paused = true)]
async fn a_missing_or_empty_file_makes_no_request_and_names_the_file() {
    let (auth, _platform) = servers();
    let file = TokenFile::new("missing");
    let cache = cache(&auth, file.source());
    let shown = file.0.display().to_string();

    let missing = cache.token_for(&mcp_url()).await.unwrap_err();
    assert!(matches!(missing, Error::Configuration(_)), "{missing:?}");
    let text = missing.to_string();
    assert!(
        text.contains(&shown) && text.contains("cannot be read"),
        "{text}"
    );
    assert!(text.contains("Grant::JwtBearer assertion"), "{text}");

    file.write("\n");
    // A configuration error is not backed off: the next call reads the file again.
    let empty = cache.token_for(&mcp_url()).await.unwrap_err().to_string();
    assert!(empty.contains("is empty"), "{empty}");
    assert_eq!(auth.token_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_refused_assertion_is_reported_never_sent_again_and_no_other_grant_is_tried() {
    for code in ["invalid_grant", "invalid_scope", "unauthorized_client"] {
        let (auth, platform) = servers();
        let file = TokenFile::new(code);
        let jwt = platform.workload_token(WORKLOAD, ISSUER, LIFETIME);
        file.write(&jwt);
        let cache = cache(&auth, file.source());
        auth.script(|s| {
            s.fail_next(
                1,
                Failure::OAuth {
                    status: 400,
                    error: code.to_owned(),
                },
            )
        });

        let error = cache.token_for(&mcp_url()).await.unwrap_err();
        assert!(
            matches!(&error, Error::OAuth { error, .. } if error.code == code),
            "{code}: {error:?}"
        );
        assert!(!error.to_string().contains(&jwt));
        assert_eq!(auth.token_requests(), 1, "{code}");
        // After the backoff, the source still gives the refused assertion: not sent again.
        tokio::time::advance(Duration::from_secs(61)).await;
        let again = cache.token_for(&mcp_url()).await.unwrap_err().to_string();
        assert!(again.contains("is not sent again"), "{code}: {again}");
        assert!(!again.contains(&jwt));
        assert_eq!(
            auth.token_requests(),
            1,
            "{code}: the refused assertion was sent again"
        );
        // A rotated token is sent, and only ever with the JWT bearer grant.
        tokio::time::advance(Duration::from_secs(61)).await;
        let rotated = platform.workload_token(WORKLOAD, ISSUER, LIFETIME);
        file.write(&rotated);
        cache.token_for(&mcp_url()).await.unwrap();
        let seen = auth.requests();
        assert_eq!(seen.len(), 2, "{code}");
        assert_bearer(&seen[1], &rotated);
        assert!(
            seen.iter()
                .all(|r| r.grant_type.as_deref() == Some(JWT_BEARER)),
            "{code}: {seen:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_hostile_server_refusing_every_assertion_gets_each_one_once() {
    let (auth, platform) = servers();
    auth.script(|s| s.fail_always = Some(Failure::InvalidGrant));
    let file = TokenFile::new("hostile");
    let cache = cache(&auth, file.source());
    for round in 1..=3u64 {
        let jwt = platform.workload_token(&format!("{WORKLOAD}-{round}"), ISSUER, LIFETIME);
        file.write(&jwt);
        for _ in 0..3 {
            let _ = cache.token_for(&mcp_url()).await.unwrap_err();
            tokio::time::advance(Duration::from_secs(61)).await;
        }
        assert_eq!(auth.token_requests() as u64, round);
    }
}

#[tokio::test(start_paused = true)]
async fn an_assertion_for_another_server_or_expired_is_refused_by_the_server() {
    let (auth, platform) = servers();
    let cases = [
        platform.workload_token(WORKLOAD, "https://other-as.example", LIFETIME),
        platform.workload_token(WORKLOAD, ISSUER, Duration::ZERO),
    ];
    for jwt in cases {
        auth.reset_counts();
        let cache = cache(&auth, AssertionSource::value(secret(&jwt)));
        let error = cache.token_for(&mcp_url()).await.unwrap_err();
        assert!(
            matches!(&error, Error::OAuth { error, .. } if error.code == "invalid_grant"),
            "{error:?}"
        );
        assert_eq!(auth.token_requests(), 1);
    }
}

#[test]
fn a_workload_client_is_never_used_at_an_issuer_it_does_not_list() {
    let workload = PreRegistered::jwt_bearer("wl", AssertionSource::env("TOKEN"))
        .at_issuer("https://auth.example.com")
        .at_any_issuer_without_a_secret();
    assert!(workload.is_registered_at("https://auth.example.com"));
    // Without a secret, but with a platform token to send: not at any issuer.
    assert!(!workload.is_registered_at("https://evil.example"));
    let public = PreRegistered::public("app", url(REDIRECT)).at_any_issuer_without_a_secret();
    assert!(public.is_registered_at("https://evil.example"));
}

#[test]
fn a_public_client_with_the_jwt_bearer_grant_needs_no_secret() {
    let cache = TokenCache::builder()
        .client(registration(AssertionSource::env("TOKEN")))
        .resource(config(MCP))
        .build();
    assert!(cache.is_ok(), "{:?}", cache.err());
}

#[cfg(feature = "redis")]
mod redis_support;

/// A workload's token acts for the assertion only this process reads: it never goes to a
/// level shared with other processes, and another process makes its own request.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_workload_token_stays_out_of_the_shared_level() {
    use audience_cache::{SealingKey, SharedLevel};
    use redis::AsyncCommands as _;

    let redis = redis_support::RedisServer::start();
    let (auth, platform) = servers();
    let jwt = platform.workload_token(WORKLOAD, ISSUER, LIFETIME);
    let process = || {
        builder(&auth, registration(AssertionSource::value(secret(&jwt))))
            .resource(config(MCP))
            .shared_level(
                SharedLevel::new(redis.url().as_str(), [SealingKey::new(1, [7; 32])])
                    .unwrap()
                    .namespace("wif"),
            )
            .build()
            .unwrap()
    };
    let (one, two) = (process(), process());
    let a = one.token_for(&mcp_url()).await.unwrap();
    let b = two.token_for(&mcp_url()).await.unwrap();
    assert!(!a.same_token_as(&b));
    assert_eq!(auth.token_requests(), 2);
    let mut connection = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = connection.keys("*").await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}
