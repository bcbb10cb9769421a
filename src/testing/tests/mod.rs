//! Scenario tests for the test servers, mostly in process through `handle`.

mod code_flow;
mod failures;
mod resource;
mod token;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Request, Response, StatusCode};
use serde_json::Value;

use super::{AuthorizationServer, Client};

/// RFC 7636 Appendix B.
pub(super) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub(super) const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub(super) const REDIRECT: &str = "http://127.0.0.1:53682/callback";
pub(super) const RS: &str = "https://rs.example/mcp";

/// An in-process server with a confidential client `svc`/`s3cret` and a public client `app`.
pub(super) fn server() -> AuthorizationServer {
    AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .client(Client::public("app"))
        .in_process()
}

/// `application/x-www-form-urlencoded` from pairs.
pub(super) fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A form POST to `/token`.
pub(super) fn token_request(pairs: &[(&str, &str)]) -> Request<Vec<u8>> {
    Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(pairs).into_bytes())
        .unwrap()
}

/// A form POST to `/token` with RFC 6749 §2.3.1 Basic credentials.
pub(super) fn token_request_basic(
    id: &str,
    secret: &str,
    pairs: &[(&str, &str)],
) -> Request<Vec<u8>> {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = STANDARD.encode(format!("{}:{}", enc(id), enc(secret)));
    let mut request = token_request(pairs);
    request.headers_mut().insert(
        "authorization",
        format!("Basic {credentials}").parse().unwrap(),
    );
    request
}

pub(super) fn json(response: &Response<Vec<u8>>) -> Value {
    serde_json::from_slice(response.body()).unwrap_or(Value::Null)
}

/// POSTs `pairs` and returns (status, body).
pub(super) async fn post(
    server: &AuthorizationServer,
    pairs: &[(&str, &str)],
) -> (StatusCode, Value) {
    let response = server.handle(token_request(pairs)).await;
    (response.status(), json(&response))
}

/// A client_credentials token for `svc` with one resource and scope.
pub(super) async fn client_credentials(
    server: &AuthorizationServer,
    resource: &str,
    scope: &str,
) -> Value {
    let (status, body) = post(
        server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "s3cret"),
            ("resource", resource),
            ("scope", scope),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub(super) fn access_token(body: &Value) -> &str {
    body["access_token"].as_str().unwrap_or_default()
}

/// GETs `/authorize?{query}` and returns the status and the Location URL, if any.
pub(super) async fn authorize(
    server: &AuthorizationServer,
    pairs: &[(&str, &str)],
) -> (StatusCode, Option<url::Url>) {
    let request = Request::get(format!("/authorize?{}", encode(pairs)))
        .body(Vec::new())
        .unwrap();
    let response = server.handle(request).await;
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url::Url::parse(v).ok());
    (response.status(), location)
}

/// The parameters of a well-formed authorization request for `app` with PKCE.
pub(super) fn authorization_params<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", "app"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("state", "xyz"),
    ];
    pairs.extend_from_slice(extra);
    pairs
}

pub(super) fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Runs /authorize for `app` with `extra` parameters and returns the code.
pub(super) async fn code(server: &AuthorizationServer, extra: &[(&str, &str)]) -> String {
    let (status, location) = authorize(server, &authorization_params(extra)).await;
    assert_eq!(status, StatusCode::FOUND);
    location.and_then(|l| param(&l, "code")).unwrap()
}

/// Redeems `code` for `app` with the right verifier and any extra parameters.
pub(super) async fn redeem(
    server: &AuthorizationServer,
    code: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut pairs = vec![
        ("grant_type", "authorization_code"),
        ("client_id", "app"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    pairs.extend_from_slice(extra);
    post(server, &pairs).await
}
