//! No secret leaves the crate by accident: a scenario with successes, refusals, every error
//! kind the embedded server can provoke, a code flow and a token exchange runs under a TRACE
//! subscriber, and then neither the captured log nor any `Debug` or `Display` output holds an
//! access token, refresh token, client secret, authorization code, PKCE verifier or subject
//! token.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use audience_cache::testing::{
    AudienceStyle, AuthorizationServer, Failure, ResourceField, ResourcePolicy,
};
use audience_cache::{BearerToken, ClientRegistration, Error, ScopeSet, SubjectToken, TokenCache};
use support::*;

/// Everything every subscriber wrote in this test binary.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs of 32 or more base64url characters: what refresh tokens, authorization codes and
/// PKCE verifiers (32 random bytes each, 43 characters) look like, and no part of a URL, key
/// or message the crate writes.
fn secret_shaped(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|run| run.len() >= 32)
        .collect()
}

const DENIED: &str = "https://denied.example.com";
const WRONG_SECRET: &str = "wrong-secret:+/%& y";
const BOGUS_SUBJECT: &str = "bogus-subject-token-that-must-not-show";

/// What the scenario leaves behind to inspect.
#[derive(Default)]
struct Seen {
    /// Values that must appear nowhere.
    secrets: Vec<String>,
    /// `Debug` and `Display` output of errors, refusals and public types.
    shown: Vec<String>,
    errors: Vec<Error>,
}

impl Seen {
    fn token(&mut self, token: &BearerToken) {
        self.secrets.push(token.expose_secret().to_owned());
        self.shown.push(format!("{token:?}"));
    }

    fn error(&mut self, error: Error) {
        self.shown.push(format!("{error}"));
        self.shown.push(format!("{error:?}"));
        self.errors.push(error);
    }

    fn debug(&mut self, value: &dyn std::fmt::Debug) {
        self.shown.push(format!("{value:?}"));
    }
}

async fn scenario(server: &AuthorizationServer, seen: &mut Seen) {
    let empty = ScopeSet::empty();
    let (mcp, api, denied) = (resource(MCP), resource(API), resource(DENIED));
    seen.secrets.push(SECRET.to_owned());
    seen.secrets.push(WRONG_SECRET.to_owned());
    seen.secrets.push(BOGUS_SUBJECT.to_owned());
    server.script(|s| s.resources = ResourcePolicy::deny_if(|r| r.starts_with(DENIED)));

    let registration = confidential();
    seen.debug(&registration);
    let post =
        ClientRegistration::new(ISSUER, token_endpoint(), SVC).client_secret_post(secret(SECRET));
    seen.debug(&post);
    let resources = || [config(MCP), config(API), config(DENIED)];
    let builder = resources()
        .into_iter()
        .fold(builder(server, registration.clone()), |b, r| b.resource(r));
    seen.debug(&builder);
    let svc = builder.build().unwrap();

    // Success, and a refusal of the same token elsewhere.
    let request = url("https://mcp.example.com/tools/call?session=1");
    let token = svc.token_for(&request).await.unwrap();
    seen.token(&token);
    assert!(token.header_for(&request).unwrap().is_sensitive());
    let refusal = token
        .header_for(&url("https://api.example.com/v1"))
        .unwrap_err();
    seen.shown.push(format!("{refusal} {refusal:?}"));

    // A token whose `aud` names another server: refused at hand-out, with a warning logged.
    server.script(|s| s.audience = AudienceStyle::Fixed(vec!["https://elsewhere.example".into()]));
    seen.error(
        svc.token_for(&url("https://api.example.com/v1/x"))
            .await
            .unwrap_err(),
    );
    server.script(|s| s.audience = AudienceStyle::Resource);

    // No resource, an unknown resource, invalid_target.
    seen.error(
        svc.token_for(&url("https://nowhere.example.com/"))
            .await
            .unwrap_err(),
    );
    seen.error(
        svc.token(&resource("https://unknown.example.com"), &empty)
            .await
            .unwrap_err(),
    );
    seen.error(svc.token(&denied, &empty).await.unwrap_err());

    // Unavailable, then backing off; malformed, oversized, another resource; a timeout.
    server.script(|s| s.fail_next(1, Failure::ServiceUnavailable));
    seen.error(svc.token(&mcp, &scopes("s1")).await.unwrap_err());
    seen.error(svc.token(&mcp, &scopes("s1")).await.unwrap_err());
    server.script(|s| {
        s.fail_next(
            1,
            Failure::TooManyRequests {
                retry_after: Duration::from_secs(3),
            },
        )
    });
    seen.error(svc.token(&mcp, &scopes("s2")).await.unwrap_err());
    server.script(|s| s.fail_next(1, Failure::MalformedJson));
    seen.error(svc.token(&mcp, &scopes("s3")).await.unwrap_err());
    server.script(|s| s.fail_next(1, Failure::OversizedBody));
    seen.error(svc.token(&mcp, &scopes("s4")).await.unwrap_err());
    server.script(|s| s.resource_field = ResourceField::Value("https://other.example".into()));
    seen.error(svc.token(&mcp, &scopes("s5")).await.unwrap_err());
    server.script(|s| s.resource_field = ResourceField::Omit);
    server.script(|s| s.latency = Duration::from_secs(31));
    seen.error(svc.token(&mcp, &scopes("s6")).await.unwrap_err());
    server.script(|s| s.latency = Duration::ZERO);

    // invalid_client, with a secret that must not show either.
    let wrong = new_cache(
        server,
        ClientRegistration::new(ISSUER, token_endpoint(), SVC)
            .client_secret_basic(secret(WRONG_SECRET)),
        [config(MCP)],
    );
    seen.error(wrong.token(&mcp, &empty).await.unwrap_err());

    // Token exchange: a good subject token, and one the server refuses.
    let subject = SubjectToken::access_token(secret(token.expose_secret()));
    seen.debug(&subject);
    let exchanged = svc
        .exchange_token(&api, &empty, subject, "alice")
        .await
        .unwrap();
    seen.token(&exchanged);
    let bogus = SubjectToken::access_token(secret(BOGUS_SUBJECT));
    seen.debug(&bogus);
    seen.error(
        svc.exchange_token(&api, &empty, bogus, "mallory")
            .await
            .unwrap_err(),
    );

    // The code flow: authorization required, a forged state, success, refresh, invalid_grant.
    let app = new_cache(server, public_app(), [config(MCP)]);
    seen.error(app.token(&mcp, &empty).await.unwrap_err());
    let pending = app.begin_authorization(&mcp, &scopes("read")).unwrap();
    seen.debug(&pending);
    let redirect = approve(server, &pending).await;
    seen.secrets.extend(param(&redirect, "code"));
    seen.secrets.extend(param(&redirect, "state"));
    let forged = url(&redirect.as_str().replace("state=", "state=x"));
    seen.error(
        app.complete_authorization(pending, &forged)
            .await
            .unwrap_err(),
    );

    let pending = app
        .begin_authorization_for_account(&mcp, &scopes("read"), "bob")
        .unwrap();
    seen.debug(&pending);
    let redirect = approve(server, &pending).await;
    seen.secrets.extend(param(&redirect, "code"));
    seen.secrets.extend(param(&redirect, "state"));
    let user = app
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();
    seen.token(&user);
    tokio::time::advance(USABLE).await;
    let refreshed = app
        .token_for_account(&mcp, &scopes("read"), "bob")
        .await
        .unwrap();
    seen.token(&refreshed);
    tokio::time::advance(USABLE).await;
    server.script(|s| s.fail_next(1, Failure::InvalidGrant));
    seen.error(
        app.token_for_account(&mcp, &scopes("read"), "bob")
            .await
            .unwrap_err(),
    );

    // Configuration errors carry no secret either.
    let bad = TokenCache::builder()
        .client(
            ClientRegistration::new("http://auth.example.com", token_endpoint(), SVC)
                .client_secret_basic(secret(SECRET)),
        )
        .build()
        .unwrap_err();
    seen.shown.push(format!("{bad} {bad:?}"));

    seen.debug(&svc);
    seen.debug(&app);
}

#[tokio::test(start_paused = true)]
async fn no_secret_reaches_logs_errors_or_debug_output() {
    let log = captured();
    let server = new_server();
    let mut seen = Seen::default();
    scenario(&server, &mut seen).await;

    // The scenario reached every error kind it means to.
    let kinds: Vec<&str> = seen
        .errors
        .iter()
        .map(|e| match e {
            Error::Refused(_) => "Refused",
            Error::NoResource { .. } => "NoResource",
            Error::UnknownResource { .. } => "UnknownResource",
            Error::InvalidTarget { .. } => "InvalidTarget",
            Error::OAuth { .. } => "OAuth",
            Error::Unavailable { .. } => "Unavailable",
            Error::Protocol { .. } => "Protocol",
            Error::BackingOff { .. } => "BackingOff",
            Error::AuthorizationRequired { .. } => "AuthorizationRequired",
            Error::AuthorizationResponse { .. } => "AuthorizationResponse",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Refused",
            "NoResource",
            "UnknownResource",
            "InvalidTarget",
            "Unavailable",
            "BackingOff",
            "Unavailable",
            "Protocol",
            "Protocol",
            "Protocol",
            "Unavailable",
            "OAuth",
            "OAuth",
            "AuthorizationRequired",
            "AuthorizationResponse",
            "OAuth",
        ]
    );
    // Four access tokens, a client secret and a wrong one, a subject token, two codes and
    // two states.
    assert_eq!(seen.secrets.len(), 3 + 4 + 4);

    let logs = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    // The subscriber saw the crate's own events.
    assert!(logs.contains("token request failed"), "{logs}");
    assert!(logs.contains("refused to hand out a token"), "{logs}");
    assert!(logs.contains("stored a token"), "{logs}");

    let outputs = std::iter::once(("log", logs.as_str()))
        .chain(seen.shown.iter().map(|s| ("shown", s.as_str())));
    for (place, text) in outputs {
        for secret in &seen.secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{place} holds a secret: {text}"
            );
        }
        // Any JWT (access tokens, including discarded ones), refresh tokens, PKCE verifiers.
        assert!(!text.contains("eyJ"), "{place} holds a JWT: {text}");
        assert_eq!(secret_shaped(text), Vec::<&str>::new(), "{place}: {text}");
    }
}

#[test]
fn the_secret_shape_check_finds_what_it_looks_for() {
    // A 43-character code, verifier or refresh token inside a URL or message is found.
    let code = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    assert_eq!(secret_shaped(&format!("cb?code={code}&state=x")), [code]);
    assert!(
        secret_shaped("issuer \"https://as.in-process.test\", resource https://mcp.example.com/")
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn header_values_are_marked_sensitive() {
    let server = new_server();
    let cache = new_cache(&server, confidential(), [config(MCP)]);
    let request = url("https://mcp.example.com/mcp");
    let token = cache.token_for(&request).await.unwrap();
    let header = token.header_for(&request).unwrap();
    assert!(header.is_sensitive());
    // http keeps a sensitive value out of its own Debug output.
    assert_eq!(format!("{header:?}"), "Sensitive");
    assert_eq!(
        header.to_str().unwrap(),
        format!("Bearer {}", token.expose_secret())
    );
}
