//! Redirects a token-bearing client is answered with: each hop checked before anything is sent
//! there (no downgrade to http, no hop into the client's own network, no body or custom headers
//! to another origin on a server's word), at the level users meet them: `AuthorizedClient`,
//! and `AudienceMiddleware` over a client it built or one it had to probe.

mod support;

use std::sync::{Arc, Mutex};

use audience_cache::testing::{AuthorizationServer, Client, Redirect, ResourceServer};
use audience_cache::{
    AudienceMiddleware, AuthorizedClient, BuildError, Error, ResourceConfig, ResourceUri,
    TokenCache,
};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use reqwest::ResponseBuilderExt;
use support::on_loopback::{registration, resource as loopback};

/// What a recording server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A server on 127.0.0.1 that records every request and answers with `answer(path)`.
struct Recorder {
    origin: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    async fn start(
        answer: impl Fn(&str) -> (StatusCode, Option<String>) + Clone + Send + Sync + 'static,
    ) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                let answer = answer.clone();
                async move {
                    let path = uri.path().to_owned();
                    record.lock().unwrap().push(Seen {
                        method,
                        path: path.clone(),
                        headers,
                        body,
                    });
                    let (status, location) = answer(&path);
                    let mut headers = HeaderMap::new();
                    if let Some(location) = location {
                        headers.insert("location", location.parse().unwrap());
                    }
                    (status, headers).into_response()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder {
            origin: format!("http://{addr}"),
            seen,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An authorization server, a resource `/mcp` on a recording server `a`, and a second
/// recording server `b` (another origin: another port).
struct World {
    auth: AuthorizationServer,
    cache: TokenCache,
    a: Recorder,
    b: Recorder,
}

/// `a` answers `/mcp` with `status` and a `Location` of b's origin followed by `to`, anything
/// else with 200.
async fn world(status: StatusCode, to: &'static str) -> World {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .start()
        .await
        .unwrap();
    let b = Recorder::start(|_| (StatusCode::OK, None)).await;
    let location = format!("{}{to}", b.origin);
    let a = Recorder::start(move |path| match path {
        "/mcp" => (status, Some(location.clone())),
        _ => (StatusCode::OK, None),
    })
    .await;
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration(&auth))
        .resource(ResourceConfig::new(
            loopback(&format!("{}/mcp", a.origin)),
            auth.issuer(),
        ))
        .build()
        .unwrap();
    World { auth, cache, a, b }
}

fn post_with_custom_headers(client: &AuthorizedClient, url: &str) -> reqwest::Request {
    client
        .post(url)
        .header("x-api-key", "k-123")
        .header("mcp-session-id", "s-456")
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .build()
        .unwrap()
}

#[tokio::test]
async fn cross_origin_307_is_refused_by_default_and_nothing_reaches_the_other_origin() {
    let w = world(StatusCode::TEMPORARY_REDIRECT, "/collect").await;
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();
    let url = format!("{}/mcp", w.a.origin);
    let error = client
        .execute(post_with_custom_headers(&client, &url))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Redirect { .. }), "{error:?}");
    assert!(
        message.contains("allow_cross_origin_replay") && message.contains(&w.b.origin),
        "{message}"
    );
    assert_eq!(w.a.seen().len(), 1);
    assert!(w.b.seen().is_empty(), "{:?}", w.b.seen());
    assert_eq!(w.auth.requests().len(), 1);
}

#[tokio::test]
async fn an_allowed_cross_origin_307_carries_the_body_and_only_safe_headers() {
    let w = world(StatusCode::TEMPORARY_REDIRECT, "/collect").await;
    let client = AuthorizedClient::new(w.cache.clone())
        .unwrap()
        .allow_cross_origin_replay(true);
    let url = format!("{}/mcp", w.a.origin);
    let response = client
        .execute(post_with_custom_headers(&client, &url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = w.b.seen();
    assert_eq!(seen.len(), 1);
    let hop = &seen[0];
    assert_eq!(
        (hop.method.clone(), hop.path.as_str()),
        (Method::POST, "/collect")
    );
    assert_eq!(
        &hop.body[..],
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
    );
    for absent in ["authorization", "x-api-key", "mcp-session-id", "cookie"] {
        assert!(
            !hop.headers.contains_key(absent),
            "{absent}: {:?}",
            hop.headers
        );
    }
    assert_eq!(hop.headers["content-type"], "application/json");
    assert_eq!(hop.headers["accept"], "application/json");
    // The first origin got the token and the custom headers.
    let first = &w.a.seen()[0];
    assert!(first.headers.contains_key("authorization"));
    assert_eq!(first.headers["x-api-key"], "k-123");
}

#[tokio::test]
async fn a_cross_origin_303_becomes_a_get_with_only_safe_headers() {
    let w = world(StatusCode::SEE_OTHER, "/done").await;
    let client = AuthorizedClient::new(w.cache.clone()).unwrap();
    let url = format!("{}/mcp", w.a.origin);
    let response = client
        .execute(post_with_custom_headers(&client, &url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = w.b.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::GET);
    assert!(seen[0].body.is_empty());
    let mut names: Vec<&str> = seen[0].headers.keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    // What reqwest adds itself (host) and the caller's safe header; nothing else.
    assert_eq!(names, ["accept", "host"], "{:?}", seen[0].headers);
}

/// A "network" at the bottom of a middleware chain: answers every request from a table, with
/// no socket, so that hops between public-looking https origins can be tested.
#[derive(Clone, Default)]
struct Network {
    seen: Arc<Mutex<Vec<(Method, String, bool)>>>,
    redirects: Arc<Vec<(&'static str, u16, &'static str)>>,
}

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for Network {
    async fn handle(
        &self,
        request: reqwest::Request,
        _extensions: &mut http::Extensions,
        _next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = request.url().clone();
        self.seen.lock().unwrap().push((
            request.method().clone(),
            url.to_string(),
            request.headers().contains_key("authorization"),
        ));
        let mut response = http::Response::builder().url(url.clone());
        let mut status = 200;
        if let Some((_, code, to)) = self
            .redirects
            .iter()
            .find(|(from, ..)| *from == url.as_str())
        {
            status = *code;
            response = response.header("location", *to);
        }
        let response = response
            .status(status)
            .body(b"secret-page".to_vec())
            .unwrap();
        Ok(reqwest::Response::from(response))
    }
}

impl Network {
    /// A network where `https://mcp.example.com/mcp` answers `status` with `Location: to`.
    fn redirecting(status: u16, to: &'static str) -> Self {
        Network {
            redirects: Arc::new(vec![("https://mcp.example.com/mcp", status, to)]),
            ..Network::default()
        }
    }
}

/// A middleware client for `https://mcp.example.com/mcp` (in-process authorization server),
/// over `network`.
fn public_client(network: &Network) -> reqwest_middleware::ClientWithMiddleware {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .in_process();
    let cache = TokenCache::builder()
        .in_process(&auth)
        .client(registration(&auth))
        .resource(ResourceConfig::new(
            ResourceUri::parse("https://mcp.example.com/mcp").unwrap(),
            auth.issuer(),
        ))
        .build()
        .unwrap();
    AudienceMiddleware::new(cache)
        .into_client_builder(reqwest::Client::builder())
        .unwrap()
        .with(network.clone())
        .build()
}

#[tokio::test]
async fn hops_from_a_public_server_into_the_clients_network_are_refused() {
    // Each hop is refused for its own reason: the plain-http one as a downgrade first.
    for (status, to, reason) in [
        (302, "http://127.0.0.2:8080/admin", "downgrades https"),
        (307, "https://127.0.0.2:8080/admin", "a loopback address"),
        (302, "https://localhost/admin", "a loopback address"),
        (
            301,
            "https://10.0.0.1/internal",
            "a private-network address",
        ),
        (
            303,
            "https://169.254.169.254/latest/meta-data/",
            "a link-local address",
        ),
        (308, "https://[::1]/admin", "a loopback address"),
        (
            302,
            "https://100.64.0.1/",
            "a shared (carrier-grade NAT) address",
        ),
        (302, "https://[fd12::1]/", "a unique-local address"),
    ] {
        let network = Network::redirecting(status, to);
        let client = public_client(&network);
        let error = client
            .post("https://mcp.example.com/mcp")
            .body("{}")
            .send()
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains(reason), "{to}: {message}");
        let seen = network.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{to}: {seen:?}");
        assert!(seen[0].2, "the first hop had its token");
    }
}

#[tokio::test]
async fn a_hop_from_https_to_http_is_refused() {
    let network = Network::redirecting(302, "http://mcp.example.com/mcp/next");
    let client = public_client(&network);
    let error = client
        .get("https://mcp.example.com/mcp")
        .send()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("downgrades https"), "{error}");
    assert_eq!(network.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_hop_to_another_public_origin_is_followed_without_the_token() {
    let network = Network::redirecting(302, "https://cdn.example.net/page");
    let client = public_client(&network);
    let response = client
        .get("https://mcp.example.com/mcp")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = network.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (Method::GET, "https://mcp.example.com/mcp".to_owned(), true),
            (
                Method::GET,
                "https://cdn.example.net/page".to_owned(),
                false
            ),
        ]
    );
}

/// A developer's servers on 127.0.0.1 may redirect among themselves.
#[tokio::test]
async fn hops_between_loopback_servers_are_followed_when_the_request_started_on_loopback() {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .start()
        .await
        .unwrap();
    let rs = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    let origin = rs.origin().to_owned();
    let localhost = origin.replace("127.0.0.1", "localhost");
    rs.script(|s| {
        s.redirects = vec![Redirect::with_status(
            "/mcp/a",
            format!("{localhost}/mcp/b"),
            StatusCode::FOUND,
        )]
    });
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration(&auth))
        .resource(ResourceConfig::new(
            loopback(&format!("{origin}/mcp")),
            auth.issuer(),
        ))
        .build()
        .unwrap();
    let client = AuthorizedClient::new(cache).unwrap();
    let response = client
        .execute(client.get(&format!("{origin}/mcp/a")).build().unwrap())
        .await
        .unwrap();
    // `localhost` is another origin than 127.0.0.1: followed, without the token.
    assert_eq!(response.status(), 401);
    let records = rs.requests();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records[0].bearer_presented && !records[1].bearer_presented);
}

/// The middleware over a client that follows redirects itself: the token would reach `/admin`
/// (outside the resource) before the crate could notice. The probe finds the client out
/// before the first token is attached.
#[tokio::test]
async fn the_middleware_refuses_a_client_that_follows_redirects_before_any_token_is_sent() {
    let auth = AuthorizationServer::builder()
        .client(Client::confidential("svc", "s3cret"))
        .start()
        .await
        .unwrap();
    let rs = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    let origin = rs.origin().to_owned();
    rs.script(|s| s.redirects = vec![Redirect::temporary("/mcp/a", "/admin")]);
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration(&auth))
        .resource(ResourceConfig::new(
            loopback(&format!("{origin}/mcp")),
            auth.issuer(),
        ))
        .build()
        .unwrap();

    let following = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AudienceMiddleware::new(cache.clone()))
        .build();
    let error = following
        .get(format!("{origin}/mcp/a"))
        .send()
        .await
        .unwrap_err();
    let cause = match &error {
        reqwest_middleware::Error::Middleware(e) => e.downcast_ref::<Error>().cloned(),
        _ => None,
    };
    assert!(
        matches!(
            cause,
            Some(Error::Configuration(BuildError::RedirectingClient { .. }))
        ),
        "{error:?}"
    );
    assert!(rs.requests().is_empty(), "{:?}", rs.requests());
    assert!(auth.requests().is_empty());

    // Built the documented way, the same request is followed by the crate: the token goes to
    // /mcp/a only.
    let client = AudienceMiddleware::new(cache.clone())
        .into_client_builder(reqwest::Client::builder())
        .unwrap()
        .build();
    let response = client.get(format!("{origin}/mcp/a")).send().await.unwrap();
    assert_eq!(
        response.status(),
        404,
        "/admin is outside the resource server's path"
    );
    let records = rs.requests();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1].path, "/admin");
    assert!(records[0].bearer_presented && !records[1].bearer_presented);

    // By hand over a client without redirects: the probe passes once, and the token flows.
    let by_hand = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    )
    .with(AudienceMiddleware::new(cache))
    .build();
    rs.reset_counts();
    let response = by_hand.get(format!("{origin}/mcp/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(rs.requests()[0].bearer_presented);
}
