//! `LoopbackListener` over real sockets on 127.0.0.1: against a scripted browser (stray
//! requests answered, the redirect returned, one authorization at a time), and against hostile
//! local clients: idle or slow connections cannot starve the redirect, a silent connection is
//! closed after a short first-byte deadline, and only requests addressed to the listener itself
//! (`Host` `127.0.0.1:PORT` or `localhost:PORT`) can end the wait, so a DNS-rebound page cannot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use audience_cache::{AuthorizationHandler, Error, HeadlessAuthorization, LoopbackListener};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

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

/// Far longer than any test here runs: a redirect that is late fails on its own deadline.
const WAIT: Duration = Duration::from_secs(60);

fn port(handler: &LoopbackListener) -> u16 {
    handler.redirect_uri().port().unwrap()
}

/// A listener waiting for the redirect of an authorization with `state=xyz`.
async fn waiting_listener() -> (u16, JoinHandle<Result<Url, Error>>) {
    let handler = Arc::new(
        LoopbackListener::bind(0)
            .await
            .unwrap()
            .timeout(WAIT)
            .on_authorization_url(|_| {}),
    );
    let port = port(&handler);
    let waiting = tokio::spawn(async move {
        let url = Url::parse("https://as.example/authorize?state=xyz").unwrap();
        handler.authorize(&url).await
    });
    (port, waiting)
}

/// The redirect's request, with `host` as its `Host` header (none when `None`).
fn redirect_request(host: Option<&str>) -> Vec<u8> {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    format!("GET /callback?code=abc&state=xyz HTTP/1.1\r\n{host}Connection: close\r\n\r\n")
        .into_bytes()
}

/// Sends a raw request on a new connection and returns the whole answer.
async fn raw_request(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}

/// Sends the redirect and checks that it is answered, and returned, within 3 s.
async fn redirect_gets_through(port: u16, waiting: JoinHandle<Result<Url, Error>>) {
    let started = Instant::now();
    let host = format!("127.0.0.1:{port}");
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        raw_request(port, &redirect_request(Some(&host))),
    )
    .await
    .expect("the redirect was not answered within 3 s");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let redirect = waiting.await.unwrap().unwrap();
    assert_eq!(
        redirect.as_str(),
        format!("http://127.0.0.1:{port}/callback?code=abc&state=xyz")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ----------------------------------------------------------------------------------------------
// A scripted browser
// ----------------------------------------------------------------------------------------------

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
            let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
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

// ----------------------------------------------------------------------------------------------
// Hostile local clients
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn idle_local_connections_do_not_delay_the_redirect() {
    for idle in [64, 300] {
        let (port, waiting) = waiting_listener().await;
        let mut held = Vec::new();
        for _ in 0..idle {
            held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        redirect_gets_through(port, waiting).await;
        drop(held);
    }
}

#[tokio::test]
async fn slow_request_heads_do_not_delay_the_redirect() {
    let (port, waiting) = waiting_listener().await;
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // A request head begun and never finished.
        slow.write_all(b"GET /callback?code=evil&state=")
            .await
            .unwrap();
        held.push(slow);
    }
    redirect_gets_through(port, waiting).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_a_short_first_byte_deadline() {
    let (port, waiting) = waiting_listener().await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut answer = Vec::new();
    silent.read_to_end(&mut answer).await.unwrap();
    let closed_after = started.elapsed();
    // Closed, with nothing to answer, after about a second (not the 5 s a request head has).
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(3),
        "{closed_after:?}"
    );

    // A connection that has begun its request has the rest of the 5 s to finish it.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /favicon.ico HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let host = format!("Host: 127.0.0.1:{port}\r\n\r\n");
    slow.write_all(host.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");

    redirect_gets_through(port, waiting).await;
}

#[tokio::test]
async fn only_requests_addressed_to_the_listener_end_the_wait() {
    let (port, waiting) = waiting_listener().await;
    let misdirected = "HTTP/1.1 421 Misdirected Request\r\n";
    let bad = "HTTP/1.1 400 Bad Request\r\n";
    let other_port = format!("127.0.0.1:{}", port.wrapping_add(1));
    let rebound = format!("evil.example:{port}");
    let twice = format!("127.0.0.1:{port}\r\nHost: evil.example:{port}");
    for (host, expected) in [
        // A page on another name, rebound to 127.0.0.1 (DNS rebinding).
        (Some(rebound.as_str()), misdirected),
        (Some("evil.example"), misdirected),
        (Some("127.0.0.1"), misdirected),
        (Some(other_port.as_str()), misdirected),
        (Some("[::1]"), misdirected),
        // RFC 9112 §3.2: exactly one Host.
        (None, bad),
        (Some(twice.as_str()), bad),
    ] {
        let answer = raw_request(port, &redirect_request(host)).await;
        assert!(answer.starts_with(expected), "{host:?}: {answer}");
        // The answer echoes nothing of the request.
        assert!(
            !answer.contains("xyz") && !answer.contains("evil"),
            "{answer}"
        );
    }
    assert!(!waiting.is_finished());

    // Names are compared without regard to case (RFC 3986 §3.2.2).
    let host = format!("LocalHost:{port}");
    let answer = raw_request(port, &redirect_request(Some(&host))).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let redirect = waiting.await.unwrap().unwrap();
    assert_eq!(
        redirect.as_str(),
        format!("http://127.0.0.1:{port}/callback?code=abc&state=xyz")
    );
}
