//! The one HTTP path for token requests (every grant's, built by oauth2 or by the crate): over
//! reqwest 0.13, or over another [`Exchange`] (the `testing` module's embedded authorization
//! server plugs in here, in process), with a timeout, a body cap, no redirects, and server
//! failures told apart from answers for the OAuth layer (`response::read`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};

use crate::error::describe;

/// One HTTP exchange with a token endpoint, for a [`Transport`] that is not reqwest: the seam
/// the embedded test servers use, so that production code has no branch of theirs.
pub(crate) trait Exchange: Send + Sync + fmt::Debug {
    /// Sends `request` and returns the whole answer.
    fn exchange(
        &self,
        request: Request<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Response<Vec<u8>>> + Send + '_>>;
}

/// Where token requests go.
#[derive(Clone)]
pub(crate) enum Transport {
    /// A reqwest client built with redirects disabled.
    Http(reqwest::Client),
    /// Another exchange (the embedded authorization server, called in process with no socket,
    /// so tests can run on paused time).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Other(Arc<dyn Exchange>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(_) => f.write_str("Transport::Http"),
            Self::Other(_) => f.write_str("Transport::Other"),
        }
    }
}

/// Bounds on one token request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_body: 64 * 1024,
        }
    }
}

/// A failure below the OAuth layer. Never holds a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransportError {
    /// Connecting or sending failed.
    Connect(String),
    /// No complete answer within the timeout.
    Timeout(Duration),
    /// The body is larger than the cap.
    TooLarge(usize),
    /// The endpoint answered with a redirect.
    Redirect(StatusCode),
    /// The endpoint answered 5xx or 429.
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(detail) => write!(f, "request failed: {detail}"),
            Self::Timeout(limit) => write!(f, "no answer within {:.1} s", limit.as_secs_f64()),
            Self::TooLarge(limit) => write!(f, "response body larger than {limit} bytes"),
            Self::Redirect(status) => write!(
                f,
                "answered with a redirect (HTTP {}); token requests never follow redirects",
                status.as_u16()
            ),
            Self::Status { status, .. } => write!(f, "HTTP {}", status.as_u16()),
        }
    }
}

impl std::error::Error for TransportError {}

impl Transport {
    /// Sends one request within `limits` and classifies the answer: 3xx, 5xx and 429 become
    /// errors here; 2xx and 4xx go on to the OAuth layer.
    pub(crate) async fn send(
        &self,
        request: Request<Vec<u8>>,
        limits: Limits,
    ) -> Result<Response<Vec<u8>>, TransportError> {
        let exchange = async {
            match self {
                Self::Http(client) => send_http(client, request, limits.max_body).await,
                Self::Other(exchange) => {
                    let response = exchange.exchange(request).await;
                    if response.body().len() > limits.max_body {
                        return Err(TransportError::TooLarge(limits.max_body));
                    }
                    Ok(response)
                }
            }
        };
        let response = tokio::time::timeout(limits.timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout(limits.timeout))??;
        classify(response)
    }
}

fn classify(response: Response<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
    let status = response.status();
    if status.is_redirection() {
        return Err(TransportError::Redirect(status));
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs.min(3600)));
        return Err(TransportError::Status {
            status,
            retry_after,
        });
    }
    Ok(response)
}

async fn send_http(
    client: &reqwest::Client,
    request: Request<Vec<u8>>,
    max_body: usize,
) -> Result<Response<Vec<u8>>, TransportError> {
    let request = reqwest::Request::try_from(request)
        .map_err(|e| TransportError::Connect(e.without_url().to_string()))?;
    let sent_to = request.url().clone();
    let mut response = client
        .execute(request)
        .await
        .map_err(|e| TransportError::Connect(describe(&e)))?;
    // A client given by the caller may follow redirects itself; its answer then comes from
    // somewhere else and is refused (the request may already have gone there: the builder's
    // documentation says to disable redirects).
    if *response.url() != sent_to {
        return Err(TransportError::Redirect(StatusCode::TEMPORARY_REDIRECT));
    }
    if response
        .content_length()
        .is_some_and(|len| len > max_body as u64)
    {
        return Err(TransportError::TooLarge(max_body));
    }
    let mut builder = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TransportError::Connect(describe(&e)))?
    {
        if body.len() + chunk.len() > max_body {
            return Err(TransportError::TooLarge(max_body));
        }
        body.extend_from_slice(&chunk);
    }
    builder
        .body(body)
        .map_err(|e| TransportError::Connect(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<&str>) -> Response<Vec<u8>> {
        let mut builder = Response::builder().status(status);
        if let Some(value) = retry_after {
            builder = builder.header("retry-after", value);
        }
        builder.body(Vec::new()).unwrap()
    }

    #[test]
    fn statuses_are_classified() {
        assert!(classify(response(200, None)).is_ok());
        assert!(classify(response(400, None)).is_ok());
        assert!(classify(response(401, None)).is_ok());
        assert_eq!(
            classify(response(302, None)).unwrap_err(),
            TransportError::Redirect(StatusCode::FOUND)
        );
        assert_eq!(
            classify(response(503, Some("7"))).unwrap_err(),
            TransportError::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(response(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"))).unwrap_err(),
            TransportError::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: None
            }
        );
    }
}
