//! `LoopbackListener` against hostile local clients over real sockets on 127.0.0.1: idle or
//! slow connections cannot starve the redirect, a silent connection is closed after a short
//! first-byte deadline, and only requests addressed to the listener itself (`Host`
//! `127.0.0.1:PORT` or `localhost:PORT`) can end the wait, so a DNS-rebound page cannot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use audience_cache::{AuthorizationHandler, Error, LoopbackListener};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use url::Url;

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
