//! The crate's two `AuthorizationHandler`s over real sockets on 127.0.0.1:
//! `HeadlessAuthorization` against a small axum server and the embedded authorization server,
//! `LoopbackListener` against a scripted "browser".

use std::time::{Duration, Instant};

use audience_cache::testing::{AuthorizationServer, Client};
use audience_cache::{
    AuthorizationHandler, BuildError, ClientRegistration, Error, Grant, HeadlessAuthorization,
    LoopbackListener, ResourceConfig, ResourceUri, ScopeSet, TokenCache,
};
use axum::Router;
use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::{Response, StatusCode, header};
use axum::response::Html;
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
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

/// A reqwest client for the tests' own requests: no proxy from the environment.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
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

// ----------------------------------------------------------------------------------------------
// LoopbackListener
// ----------------------------------------------------------------------------------------------

/// The port of a loopback listener's redirect URI.
fn port(handler: &LoopbackListener) -> u16 {
    handler.redirect_uri().port().unwrap()
}

/// Sends a raw request on a new connection and returns the whole answer.
async fn raw_request(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn loopback_redirect_uri_is_the_loopback_ip_literal() {
    let handler = LoopbackListener::bind(0).await.unwrap();
    let port = port(&handler);
    assert_ne!(port, 0);
    assert_eq!(
        handler.redirect_uri().as_str(),
        format!("http://127.0.0.1:{port}/callback")
    );
    let handler = handler.with_path("cb");
    assert_eq!(
        handler.redirect_uri().as_str(),
        format!("http://127.0.0.1:{port}/cb")
    );
    // The port is taken while the listener lives.
    let taken = LoopbackListener::bind(port).await.unwrap_err();
    assert!(
        matches!(&taken, Error::Authorization { detail } if detail.starts_with(&format!("could not listen on 127.0.0.1:{port} for the authorization redirect: "))),
        "{taken:?}"
    );
}

/// What the scripted browser saw.
#[derive(Debug)]
struct BrowserReport {
    shown: Url,
    favicon: u16,
    post: u16,
    other_state: u16,
    no_query: u16,
    absolute_form: String,
    callback: u16,
    content_type: String,
    page: String,
}

#[tokio::test]
async fn loopback_refuses_everything_but_the_redirect_and_returns_it() {
    let (sender, mut reports) = mpsc::unbounded_channel();
    let handler = LoopbackListener::bind(0).await.unwrap();
    let port = port(&handler);
    let callback = format!("http://127.0.0.1:{port}/callback?code=abc&state=xyz");
    let visit = callback.clone();
    let handler = handler.on_authorization_url(move |shown| {
        let (sender, visit, shown) = (sender.clone(), visit.clone(), shown.clone());
        // Like a browser: a favicon first, then stray requests, then the redirect.
        tokio::spawn(async move {
            let browser = browser();
            let favicon = browser
                .get(format!("http://127.0.0.1:{port}/favicon.ico"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            let post = browser
                .post(format!("http://127.0.0.1:{port}/callback?code=evil&state=xyz"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            // The redirect path without this authorization's state.
            let other_state = browser
                .get(format!("http://127.0.0.1:{port}/callback?code=evil&state=other"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            let no_query = browser
                .get(format!("http://127.0.0.1:{port}/callback"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            let absolute_form = raw_request(
                port,
                format!("GET http://127.0.0.1:{port}/callback?code=evil&state=xyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
            )
            .await;
            let response = browser.get(&visit).send().await.unwrap();
            let callback = response.status().as_u16();
            let content_type = response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            let page = response.text().await.unwrap();
            sender
                .send(BrowserReport {
                    shown,
                    favicon,
                    post,
                    other_state,
                    no_query,
                    absolute_form,
                    callback,
                    content_type,
                    page,
                })
                .unwrap();
        });
    });

    let authorization = url("https://as.example/authorize?client_id=app&state=xyz");
    let redirect = handler.authorize(&authorization).await.unwrap();
    assert_eq!(redirect.as_str(), callback);

    let report = reports.recv().await.unwrap();
    assert_eq!(report.shown, authorization);
    assert_eq!(report.favicon, 404);
    assert_eq!(report.post, 404);
    assert_eq!(report.other_state, 400);
    assert_eq!(report.no_query, 400);
    assert!(
        report
            .absolute_form
            .starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{}",
        report.absolute_form
    );
    assert_eq!(report.callback, 200);
    assert_eq!(report.content_type, "text/html; charset=utf-8");
    assert!(report.page.contains("You can close this window."));
    assert!(!report.page.contains("abc") && !report.page.contains("xyz"));
}

#[tokio::test]
async fn loopback_gives_up_after_its_timeout_naming_the_redirect_uri() {
    let handler = LoopbackListener::bind(0)
        .await
        .unwrap()
        .timeout(Duration::from_millis(200))
        .on_authorization_url(|_| {});
    let port = port(&handler);
    let error = handler
        .authorize(&url("https://as.example/authorize?state=xyz"))
        .await;
    assert_eq!(
        detail(error),
        format!(
            "no redirect reached http://127.0.0.1:{port}/callback within 200ms; the authorization was not finished in time, try again"
        )
    );
}

#[tokio::test]
async fn loopback_is_not_held_by_a_hostile_or_silent_local_client() {
    let (sender, mut done) = mpsc::unbounded_channel();
    let handler = LoopbackListener::bind(0).await.unwrap();
    let port = port(&handler);
    let callback = format!("http://127.0.0.1:{port}/callback?code=abc&state=xyz");
    let visit = callback.clone();
    let handler = handler.on_authorization_url(move |_| {
        let (sender, visit) = (sender.clone(), visit.clone());
        tokio::spawn(async move {
            // Connects and sends nothing; kept open until the test ends.
            let silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            // 100 KB without a newline; the listener stops reading after 8 KiB and closes, so
            // the write may fail part way.
            let mut hostile = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let _ = hostile.write_all(&vec![b'a'; 100 * 1024]).await;
            let mut answer = Vec::new();
            let _ = hostile.read_to_end(&mut answer).await;
            let status = browser().get(&visit).send().await.unwrap().status();
            sender.send((status.as_u16(), silent)).unwrap();
        });
    });

    let started = Instant::now();
    let redirect = handler
        .authorize(&url("https://as.example/authorize?state=xyz"))
        .await
        .unwrap();
    assert_eq!(redirect.as_str(), callback);
    let (status, _silent) = done.recv().await.unwrap();
    assert_eq!(status, 200);
    // A request head may take 5 s; the redirect did not wait for the silent client's.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn debug_shows_the_redirect_uri_and_no_code_or_state() {
    let headless = HeadlessAuthorization::new(url("http://127.0.0.1:53682/callback")).unwrap();
    assert_eq!(
        format!("{headless:?}"),
        r#"HeadlessAuthorization { redirect_uri: "http://127.0.0.1:53682/callback" }"#
    );

    let (sender, mut done) = mpsc::unbounded_channel();
    let handler = LoopbackListener::bind(0).await.unwrap();
    let port = port(&handler);
    let visit = format!("http://127.0.0.1:{port}/callback?code=c0de-value&state=st4te-value");
    let handler = handler.on_authorization_url(move |_| {
        let (sender, visit) = (sender.clone(), visit.clone());
        tokio::spawn(async move {
            let status = browser().get(&visit).send().await.unwrap().status();
            sender.send(status.as_u16()).unwrap();
        });
    });
    let expected = format!(
        r#"LoopbackListener {{ redirect_uri: "http://127.0.0.1:{port}/callback", timeout: 300s, open_browser: false, .. }}"#
    );
    assert_eq!(format!("{handler:?}"), expected);
    handler
        .authorize(&url(
            "https://as.example/authorize?state=st4te-value&code_challenge=ch4llenge",
        ))
        .await
        .unwrap();
    assert_eq!(done.recv().await, Some(200));
    // Nothing of the authorization stays behind.
    assert_eq!(format!("{handler:?}"), expected);
}

#[tokio::test]
async fn loopback_serves_one_authorization_at_a_time_each_with_its_own_redirect() {
    let (sender, mut shown) = mpsc::unbounded_channel();
    let handler = LoopbackListener::bind(0)
        .await
        .unwrap()
        .on_authorization_url(move |url| {
            sender.send(url.clone()).unwrap();
        });
    let port = port(&handler);
    let first = url("https://as.example/authorize?state=first-state");
    let second = url("https://as.example/authorize?state=second-state");

    let both = async { tokio::join!(handler.authorize(&first), handler.authorize(&second)) };
    let browser = async {
        let mut visited = Vec::new();
        for round in 0..2 {
            let url = shown.recv().await.unwrap();
            if round == 0 {
                // Both authorizations have been polled by now; the second URL is shown only
                // once the first authorization has its redirect.
                assert!(shown.try_recv().is_err());
            }
            let state = url.query_pairs().find(|(k, _)| k == "state").unwrap().1;
            let status = browser()
                .get(format!(
                    "http://127.0.0.1:{port}/callback?code={state}-code&state={state}"
                ))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200);
            visited.push(state.into_owned());
        }
        visited
    };
    let ((first_redirect, second_redirect), visited) = tokio::join!(both, browser);
    assert_eq!(visited, ["first-state", "second-state"]);
    assert_eq!(
        first_redirect.unwrap().as_str(),
        format!("http://127.0.0.1:{port}/callback?code=first-state-code&state=first-state")
    );
    assert_eq!(
        second_redirect.unwrap().as_str(),
        format!("http://127.0.0.1:{port}/callback?code=second-state-code&state=second-state")
    );
}
