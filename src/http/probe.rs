//! Whether the client below the middleware follows redirects itself: one request to a
//! throw-away listener on 127.0.0.1 that answers with a redirect, sent through the rest of the
//! middleware chain before the first token is attached.
//!
//! `AudienceMiddleware` cannot see the `reqwest::Client` it runs above, and reqwest follows
//! redirects below every middleware: with its default policy a token would reach whatever URL
//! a same-origin redirect names, without the crate's decision. The probe asks the client
//! itself. It costs one loopback round trip per middleware, once.

use std::net::Ipv4Addr;
use std::time::Duration;

use http::{Method, StatusCode};
use reqwest::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

use super::SendError;
use crate::error::BuildError;
use crate::error::Error;

/// How long the probe may take in all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of a request head the listener reads.
const MAX_HEAD: usize = 8 * 1024;

/// Sends the probe with `send`; `Ok` when the client answers the redirect with the redirect
/// itself (it does not follow), an error that says what was found otherwise.
pub(crate) async fn check_no_redirects<S, F>(send: S) -> Result<(), Error>
where
    S: FnOnce(Request) -> F,
    F: Future<Output = Result<Response, SendError>>,
{
    let refused = |detail: String| Error::Configuration(BuildError::RedirectingClient { detail });
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| refused(format!("could not be checked (no loopback listener: {e})")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| refused(format!("could not be checked ({e})")))?;
    let url = Url::parse(&format!("http://{addr}/audience-cache-redirect-probe"))
        .map_err(|e| refused(format!("could not be checked ({e})")))?;
    let server = tokio::spawn(serve(listener));
    let answer =
        tokio::time::timeout(PROBE_TIMEOUT, send(Request::new(Method::GET, url.clone()))).await;
    server.abort();
    match answer {
        Ok(Ok(response))
            if response.status() == StatusCode::TEMPORARY_REDIRECT && *response.url() == url =>
        {
            Ok(())
        }
        Ok(Ok(response)) => Err(refused(format!(
            "follows redirects (a probe answered with a redirect came back as {} from {})",
            response.status(),
            crate::audience::redacted_url(response.url())
        ))),
        Ok(Err(_)) => Err(refused(
            "could not be checked (a probe to 127.0.0.1 failed; a proxy may be configured)"
                .to_owned(),
        )),
        Err(_) => Err(refused(format!(
            "could not be checked (a probe to 127.0.0.1 had no answer within {} s)",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

/// Answers the probe with a 307 to another path, and anything else with 200.
async fn serve(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream));
    }
}

async fn answer(mut stream: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let probe = head.starts_with(b"GET /audience-cache-redirect-probe ");
    let response: &[u8] = if probe {
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /audience-cache-redirect-probe-followed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    };
    let _ = stream.write_all(response).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn probe(client: reqwest::Client) -> Result<(), Error> {
        check_no_redirects(|request| async move {
            client.execute(request).await.map_err(SendError::Reqwest)
        })
        .await
    }

    #[tokio::test]
    async fn a_client_that_follows_redirects_is_found() {
        let error = probe(reqwest::Client::new()).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("follows redirects") && message.contains("into_client_builder"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_client_without_redirects_passes() {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        probe(client).await.unwrap();
    }
}
