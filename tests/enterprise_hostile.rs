//! Enterprise-managed authorization against a hostile IdP: an ID-JAG that names another
//! resource, audience, issuer or client, that has expired, is not an ID-JAG or names a claim
//! twice is refused before it goes anywhere; and no ID token or ID-JAG is ever logged or
//! shown. The IdP and the authorization server in process, on paused time.

mod enterprise_support;
mod support;

use std::time::Duration;

use audience_cache::Error;
use audience_cache::testing::Failure;
use enterprise_support::*;
use serde_json::json;
use support::*;

#[tokio::test(start_paused = true)]
async fn an_id_jag_that_names_anything_else_is_refused_and_goes_nowhere() {
    let typ = json!({ "alg": "ES256", "typ": "oauth-id-jag+jwt" });
    let claims = |aud: &str, resource: &str| {
        json!({
            "iss": IDP, "sub": USER, "aud": aud, "resource": resource, "client_id": SVC,
            "exp": 4_000_000_000u64,
        })
        .to_string()
    };
    let good = claims(ISSUER, MCP);
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "another resource",
            id_jag_answer(&forged(typ.clone(), &claims(ISSUER, API)), ID_JAG_TYPE),
            "resource",
        ),
        (
            "another audience",
            id_jag_answer(
                &forged(typ.clone(), &claims("https://evil.example", MCP)),
                ID_JAG_TYPE,
            ),
            "aud",
        ),
        (
            "two audiences",
            id_jag_answer(
                &forged(
                    typ.clone(),
                    &json!({"iss": IDP, "aud": [ISSUER, "https://evil.example"],
                        "resource": MCP, "exp": 4_000_000_000u64})
                    .to_string(),
                ),
                ID_JAG_TYPE,
            ),
            "aud",
        ),
        (
            "the resource twice",
            id_jag_answer(
                &forged(
                    typ.clone(),
                    &format!(
                        r#"{{"iss":"{IDP}","aud":"{ISSUER}","resource":"{MCP}","resource":"{API}","exp":4000000000}}"#
                    ),
                ),
                ID_JAG_TYPE,
            ),
            "each claim once",
        ),
        (
            "another issuer",
            id_jag_answer(
                &forged(
                    typ.clone(),
                    &json!({"iss": "https://evil.example", "aud": ISSUER,
                        "resource": MCP, "exp": 4_000_000_000u64})
                    .to_string(),
                ),
                ID_JAG_TYPE,
            ),
            "iss",
        ),
        (
            "another client",
            id_jag_answer(
                &forged(
                    typ.clone(),
                    &json!({"iss": IDP, "aud": ISSUER, "resource": MCP,
                        "client_id": "someone-else", "exp": 4_000_000_000u64})
                    .to_string(),
                ),
                ID_JAG_TYPE,
            ),
            "client_id",
        ),
        (
            "expired",
            id_jag_answer(
                &forged(
                    typ.clone(),
                    &json!({"iss": IDP, "aud": ISSUER, "resource": MCP, "exp": 1}).to_string(),
                ),
                ID_JAG_TYPE,
            ),
            "expired",
        ),
        (
            "not an ID-JAG typ",
            id_jag_answer(
                &forged(json!({ "alg": "ES256", "typ": "JWT" }), &good),
                ID_JAG_TYPE,
            ),
            "typ",
        ),
        (
            "an access token instead",
            id_jag_answer(
                &forged(typ.clone(), &good),
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            "not an ID-JAG",
        ),
        (
            "no issued_token_type",
            json!({ "access_token": forged(typ.clone(), &good), "token_type": "N_A" }),
            "issued_token_type",
        ),
        (
            "not a JWT",
            id_jag_answer("opaque-grant", ID_JAG_TYPE),
            "not a JWT",
        ),
    ];
    for (case, answer, says) in cases {
        let (auth, idp) = servers();
        let id_token = idp.id_token(USER, SVC);
        let cache = cache(&auth, &idp, &id_token);
        let jwt = answer["access_token"].as_str().unwrap().to_owned();
        idp_answers(&idp, answer);
        let error = cache.token_for(&mcp_url()).await.unwrap_err();
        assert!(
            matches!(&error, Error::Protocol { endpoint, .. } if endpoint == &format!("{IDP}/token")),
            "{case}: {error:?}"
        );
        let text = error.to_string();
        assert!(text.contains(says), "{case}: {text}");
        assert!(
            text.contains("nothing was sent to the authorization server"),
            "{case}: {text}"
        );
        assert!(
            !text.contains(&jwt) && !text.contains(&id_token),
            "{case}: {text}"
        );
        assert_eq!(idp.token_requests(), 1, "{case}");
        assert_eq!(
            auth.token_requests(),
            0,
            "{case}: the ID-JAG went to the server"
        );
    }
}

/// Everything the crate logged in this test binary (a TRACE subscriber, installed once).
fn captured_log() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
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

struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn no_id_token_or_id_jag_is_logged_or_shown() {
    let log = captured_log();
    let (auth, idp) = servers();
    let id_token = idp.id_token(USER, SVC);
    let cache = cache(&auth, &idp, &id_token);
    let mut shown = Vec::new();
    // A success; the kept ID-JAG refused at the server; a hostile IdP answer; an IdP refusal.
    let token = cache.token_for(&mcp_url()).await.unwrap();
    shown.push(format!("{token:?} {:?} {}", token.key(), token.key()));
    assert!(cache.invalidate(&token).await);
    auth.script(|s| s.fail_next(1, Failure::InvalidGrant));
    tokio::time::advance(Duration::from_secs(1)).await;
    let refused = cache.token_for(&mcp_url()).await.unwrap_err();
    shown.push(format!("{refused} {refused:?}"));
    tokio::time::advance(Duration::from_secs(61)).await;
    let claims = json!({"iss": IDP, "aud": ISSUER, "resource": API, "exp": 4_000_000_000u64});
    idp_answers(
        &idp,
        id_jag_answer(
            &forged(
                json!({"alg": "ES256", "typ": "oauth-id-jag+jwt"}),
                &claims.to_string(),
            ),
            ID_JAG_TYPE,
        ),
    );
    let hostile = cache.token_for(&mcp_url()).await.unwrap_err();
    shown.push(format!("{hostile} {hostile:?}"));
    tokio::time::advance(Duration::from_secs(61)).await;
    idp.script(|s| s.fail_next(1, Failure::InvalidGrant));
    let idp_refused = cache.token_for(&mcp_url()).await.unwrap_err();
    shown.push(format!("{idp_refused} {idp_refused:?} {cache:?}"));
    assert_eq!((idp.token_requests(), auth.token_requests()), (3, 2));

    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        logged.contains("token request failed"),
        "the crate logged nothing"
    );
    // Every JWT starts with `eyJ` (base64url of `{"`): the ID token, the ID-JAGs the IdP
    // issued, the forged one and the access tokens alike.
    for text in shown.iter().chain([&logged]) {
        assert!(!text.contains("eyJ"), "{text}");
    }
}
