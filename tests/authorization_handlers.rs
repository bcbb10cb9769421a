//! `HeadlessAuthorization` over real sockets on 127.0.0.1, against a small axum server and the
//! embedded authorization server. (`LoopbackListener` is tested in `loopback_listener.rs`.)

use audience_cache::testing::{AuthorizationServer, Client};
use audience_cache::{
    AuthorizationHandler, BuildError, ClientRegistration, Error, Grant, HeadlessAuthorization,
    ResourceConfig, ResourceUri, ScopeSet, TokenCache,
};
use axum::Router;
use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::{Response, StatusCode, header};
use axum::response::Html;
use axum::routing::get;
use tokio::net::TcpListener;
use url::Url;

const MCP: &str = "https://mcp.example.com";
const LOGIN_PAGE: &str = "<html><head><title>Sign in</title></head></html>";

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

/// The detail of an `Error::Authorization`; any other error fails the test.
fn detail(result: Result<Url, Error>) -> String {
    match result {
        Err(Error::Authorization { detail }) => detail,
        other => panic!("expected Error::Authorization, got {other:?}"),
    }
}

fn redirect(status: u16, locations: &[&str]) -> Response<Body> {
    let mut response = Response::builder().status(status);
    for location in locations {
        response = response.header(header::LOCATION, *location);
    }
    response.body(Body::empty()).unwrap()
}

/// An "authorization endpoint" on 127.0.0.1 with one answer per path; returns its origin.
async fn endpoint_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let absolute = format!("{origin}/callback?code=abc&state=xyz");
    let app = Router::new()
        .route(
            "/relative",
            get(|| async { redirect(302, &["/callback?code=abc&state=xyz"]) }),
        )
        .route(
            "/absolute",
            get(move || async move { redirect(303, &[&absolute]) }),
        )
        .route(
            "/oauth/authorize",
            get(|| async { redirect(307, &["../callback?code=abc&state=xyz"]) }),
        )
        .route("/login", get(|| async { Html(LOGIN_PAGE) }))
        .route(
            "/elsewhere",
            get(|| async {
                redirect(
                    302,
                    &["https://login.example/signin?session=s3cret-session"],
                )
            }),
        )
        .route(
            "/other-path",
            get(|| async { redirect(302, &["/signin?return=s3cret-return"]) }),
        )
        .route("/no-location", get(|| async { redirect(302, &[]) }))
        .route(
            "/two-locations",
            get(|| async { redirect(302, &["/callback?code=a", "/callback?code=b"]) }),
        )
        .route(
            "/bad-location",
            get(|| async { redirect(302, &["http://[::1"]) }),
        )
        .route(
            "/fail",
            get(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "database \u{1b}[31mdown\n<script>",
                )
            }),
        )
        .route(
            "/echo",
            get(|RawQuery(query): RawQuery| async move {
                (
                    StatusCode::BAD_REQUEST,
                    format!("bad request: {}", query.unwrap_or_default()),
                )
            }),
        )
        .route("/callback", get(|| async { "the redirect URI itself" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    origin
}

/// A headless handler whose redirect URI is `{origin}/callback`.
fn headless(origin: &str) -> HeadlessAuthorization {
    HeadlessAuthorization::new(url(&format!("{origin}/callback"))).unwrap()
}

/// The authorization URL for `path`, with a query as the crate sends one.
fn authorization_url(origin: &str, path: &str) -> Url {
    url(&format!(
        "{origin}{path}?response_type=code&client_id=app&state=st4te-value"
    ))
}

#[tokio::test]
async fn headless_returns_the_redirect_resolved_with_its_code_and_state() {
    let origin = endpoint_server().await;
    let handler = headless(&origin);
    for path in ["/relative", "/absolute", "/oauth/authorize"] {
        let redirect = handler
            .authorize(&authorization_url(&origin, path))
            .await
            .unwrap();
        assert_eq!(
            redirect.as_str(),
            format!("{origin}/callback?code=abc&state=xyz"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn headless_refuses_a_login_page_and_names_the_way_on() {
    let origin = endpoint_server().await;
    let error = headless(&origin)
        .authorize(&authorization_url(&origin, "/login"))
        .await;
    assert_eq!(
        detail(error),
        format!(
            "the authorization endpoint {origin}/login?… answered 200 with a page: \"{LOGIN_PAGE}\", not a redirect: the server wants a user to log in or consent, which HeadlessAuthorization cannot do; use LoopbackListener or another AuthorizationHandler that brings a user there"
        )
    );
}

#[tokio::test]
async fn headless_refuses_a_redirect_elsewhere_and_names_it_without_its_query() {
    let origin = endpoint_server().await;
    let handler = headless(&origin);
    for (path, went_to) in [
        ("/elsewhere", "https://login.example/signin?…".to_owned()),
        ("/other-path", format!("{origin}/signin?…")),
    ] {
        let detail = detail(handler.authorize(&authorization_url(&origin, path)).await);
        assert_eq!(
            detail,
            format!(
                "the authorization endpoint {origin}{path}?… redirected to {went_to}, not to the redirect URI {origin}/callback; if that is a login or consent page, the server wants a user: use LoopbackListener or another AuthorizationHandler"
            )
        );
        assert!(!detail.contains("s3cret") && !detail.contains("st4te"));
    }
}

#[tokio::test]
async fn headless_needs_exactly_one_valid_location() {
    let origin = endpoint_server().await;
    let handler = headless(&origin);
    for (path, problem) in [
        ("/no-location", "with 0 Location headers, not exactly one"),
        ("/two-locations", "with 2 Location headers, not exactly one"),
        ("/bad-location", "with a Location that is not a valid URL"),
    ] {
        assert_eq!(
            detail(handler.authorize(&authorization_url(&origin, path)).await),
            format!("the authorization endpoint {origin}{path}?… answered 302 {problem}")
        );
    }
}

#[tokio::test]
async fn headless_reports_other_statuses_with_an_escaped_excerpt_and_no_echoed_values() {
    let origin = endpoint_server().await;
    let handler = headless(&origin);
    assert_eq!(
        detail(
            handler
                .authorize(&authorization_url(&origin, "/fail"))
                .await
        ),
        format!(
            r#"the authorization endpoint {origin}/fail?… answered HTTP 500 Internal Server Error: "database \u{{1b}}[31mdown\n<script>", not a redirect"#
        )
    );
    // The server echoes the query: the values of the authorization URL are cut out.
    assert_eq!(
        detail(
            handler
                .authorize(&authorization_url(&origin, "/echo"))
                .await
        ),
        format!(
            r#"the authorization endpoint {origin}/echo?… answered HTTP 400 Bad Request: "bad request: response_type=code&client_id=app&state=[redacted]", not a redirect"#
        )
    );
}

#[tokio::test]
async fn headless_refuses_a_client_that_follows_redirects() {
    let origin = endpoint_server().await;
    let following = reqwest::Client::builder().no_proxy().build().unwrap();
    let handler =
        HeadlessAuthorization::with_client(url(&format!("{origin}/callback")), following).unwrap();
    assert_eq!(
        detail(
            handler
                .authorize(&authorization_url(&origin, "/relative"))
                .await
        ),
        format!(
            "the HTTP client followed a redirect from {origin}/relative?… to {origin}/callback?…; give HeadlessAuthorization a client built with redirect::Policy::none()"
        )
    );
}

#[tokio::test]
async fn headless_reports_an_unreachable_endpoint_and_refuses_other_schemes() {
    // A port nothing listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let handler = headless(&origin);
    let detail_text = detail(
        handler
            .authorize(&authorization_url(&origin, "/authorize"))
            .await,
    );
    let prefix = format!(
        "the authorization endpoint {origin}/authorize?… could not be reached: could not connect"
    );
    assert!(detail_text.starts_with(&prefix), "{detail_text}");
    assert!(!detail_text.contains("st4te"), "{detail_text}");

    assert_eq!(
        detail(handler.authorize(&url("file:///etc/passwd")).await),
        "the authorization URL has the scheme \"file\", not http or https; it was not opened"
    );
}

#[test]
fn headless_redirect_uris_are_https_or_http_on_loopback() {
    for ok in [
        "https://app.example/callback",
        "http://127.0.0.1:53682/callback",
        "http://[::1]:53682/callback",
        "http://localhost:53682/callback",
    ] {
        let handler = HeadlessAuthorization::new(url(ok)).unwrap();
        assert_eq!(handler.redirect_uri().as_str(), ok);
    }
    for (bad, reason) in [
        (
            "http://app.example/callback?x=1",
            "the redirect URI http://app.example/callback?… is neither https nor http on loopback (127.0.0.1, [::1] or localhost)",
        ),
        (
            "https://app.example/callback#top",
            "the redirect URI https://app.example/callback has a fragment; remove it (RFC 6749 §3.1.2)",
        ),
    ] {
        match HeadlessAuthorization::new(url(bad)) {
            Err(Error::Configuration(BuildError::Setting {
                setting,
                reason: actual,
            })) => {
                assert_eq!(setting, "redirect_uri");
                assert_eq!(actual, reason);
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// The whole authorization code flow over TCP: begin, the headless handler at the embedded
/// server's `/authorize`, complete.
#[tokio::test]
async fn headless_completes_an_authorization_code_flow_with_the_embedded_server() {
    let server = AuthorizationServer::builder()
        .client(Client::public("app"))
        .start()
        .await
        .unwrap();
    let handler = HeadlessAuthorization::new(url("http://127.0.0.1:53682/callback")).unwrap();
    let registration =
        ClientRegistration::new(server.issuer(), url(&server.token_endpoint()), "app")
            .authorization_endpoint(url(&server.authorization_endpoint()))
            .grant(Grant::AuthorizationCode {
                redirect_uri: handler.redirect_uri(),
            });
    let resource = ResourceUri::parse(MCP).unwrap();
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration)
        .resource(ResourceConfig::new(resource.clone(), server.issuer()))
        .build()
        .unwrap();

    let pending = cache
        .begin_authorization(&resource, &ScopeSet::empty())
        .unwrap();
    let redirect = handler.authorize(pending.url()).await.unwrap();
    assert_eq!(
        format!(
            "{}{}",
            redirect.origin().ascii_serialization(),
            redirect.path()
        ),
        "http://127.0.0.1:53682/callback"
    );
    let token = cache
        .complete_authorization(pending, &redirect)
        .await
        .unwrap();

    assert_eq!(token.resource().key(), "https://mcp.example.com/");
    assert_eq!(
        server.validate(token.expose_secret()).unwrap().audiences,
        [MCP]
    );
    let authorizations = server.authorization_requests();
    assert_eq!(authorizations.len(), 1);
    assert_eq!(authorizations[0].resources, [MCP]);
    assert_eq!(authorizations[0].error, None);
    assert_eq!(server.token_requests(), 1);
    let requests = server.requests();
    assert_eq!(
        requests[0].grant_type.as_deref(),
        Some("authorization_code")
    );
    assert_eq!(requests[0].resources, [MCP]);
    assert!(requests[0].code_presented && requests[0].code_verifier_presented);
}
