//! How both servers run: an axum router served on 127.0.0.1:0 in a spawned task, or called in
//! process with `tower::ServiceExt::oneshot`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

/// Binds an ephemeral port on the IPv4 loopback address.
pub(crate) async fn bind() -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// `http://127.0.0.1:PORT`.
pub(crate) fn origin_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// A router being served over a socket. Dropping it asks the server to stop.
#[derive(Debug)]
pub(crate) struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// Serves `router` on `listener` in a spawned task until [`Running::stop`] or drop.
    pub(crate) fn spawn(listener: TcpListener, router: Router) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                // Either a stop signal or the handle was dropped: stop in both cases.
                let _ = rx.await;
            });
            // An accept error ends the server; there is no one to report it to but the test,
            // which sees its requests fail.
            let _ = serve.await;
        });
        Self {
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops accepting connections, closes idle ones, and waits for requests in flight.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The graceful shutdown carries on in the background; the listener closes at once.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs one request through `router` without a socket and collects the response body.
///
/// A request whose URI names a scheme and authority other than `origin` gets
/// `421 Misdirected Request`, so a test harness that routes a request to the wrong in-process
/// server finds out at once. Path-only URIs are accepted.
pub(crate) async fn oneshot(
    router: &Router,
    origin: &str,
    request: Request<Vec<u8>>,
) -> Response<Vec<u8>> {
    if let (Some(scheme), Some(authority)) = (request.uri().scheme_str(), request.uri().authority())
    {
        let target = format!("{scheme}://{authority}");
        if !target.eq_ignore_ascii_case(origin) {
            return plain(
                StatusCode::MISDIRECTED_REQUEST,
                format!("this server is {origin}"),
            );
        }
    }
    let response = match router.clone().oneshot(request.map(Body::from)).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Response::from_parts(parts, bytes.to_vec()),
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "response body failed".to_owned(),
        ),
    }
}

fn plain(status: StatusCode, text: String) -> Response<Vec<u8>> {
    let mut response = Response::new(text.into_bytes());
    *response.status_mut() = status;
    response
}
