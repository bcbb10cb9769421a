//! The session's standalone stream, which a client that answers a server's own requests must
//! have open before it calls a tool.
//!
//! rmcp opens that stream (a GET to the MCP endpoint, MCP 2025-11-25 streamable HTTP,
//! "Listening for Messages from the Server") after `initialize`, without waiting for it. A
//! server sends requests that belong to no request of the client's there, such as the
//! conformance suite's elicitation, and drops what it sends while the stream is not open. So
//! this client waits for the server's answer to that GET before its first tool call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use audience_cache::{Error, McpHttpClient};
use futures_util::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;
use tokio::sync::watch;

type HttpError = StreamableHttpError<Error>;
type Events = BoxStream<'static, Result<Sse, SseError>>;

/// The crate's `McpHttpClient`, which every request goes through, reporting where the
/// session's standalone stream is.
#[derive(Clone)]
pub struct Listening {
    inner: McpHttpClient,
    standalone: Arc<watch::Sender<Standalone>>,
}

/// Where the session's standalone stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standalone {
    /// No request with a session id yet: a stateless server, for which rmcp opens no stream.
    NoSession,
    /// A session, and rmcp's GET not answered yet.
    Opening,
    /// The server answered the GET: with a stream, or with a refusal (405: it sends nothing
    /// that way).
    Answered,
}

impl Listening {
    pub fn new(inner: McpHttpClient) -> Self {
        Self {
            inner,
            standalone: Arc::new(watch::channel(Standalone::NoSession).0),
        }
    }

    /// Follows the standalone stream of the session this client is used for.
    pub fn standalone(&self) -> watch::Receiver<Standalone> {
        self.standalone.subscribe()
    }

    /// A request in a session: rmcp opens the standalone stream for it.
    fn in_session(&self, session_id: &Option<Arc<str>>) {
        if session_id.is_some() {
            self.standalone.send_if_modified(|state| {
                let first = *state == Standalone::NoSession;
                if first {
                    *state = Standalone::Opening;
                }
                first
            });
        }
    }
}

/// Waits until the session's standalone stream is answered (at most `limit`), or returns at
/// once when there is no session.
pub async fn wait_for_standalone_stream(mut state: watch::Receiver<Standalone>, limit: Duration) {
    let answered = state.wait_for(|state| *state != Standalone::Opening);
    if tokio::time::timeout(limit, answered).await.is_err() {
        eprintln!(
            "the server did not answer the session's standalone stream (GET) within {limit:?}; \
             calling the tool anyway: a request the server sends there may be lost"
        );
    }
}

/// rmcp calls the `*_with_response_limits` and `*_with_max_sse_event_size` methods, with its
/// configuration's limits; the two it requires go through them with rmcp's defaults.
impl StreamableHttpClient for Listening {
    type Error = Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let limits = StreamableHttpResponseLimits::default();
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            limits,
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        self.in_session(&session_id);
        let inner = &self.inner;
        inner
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), HttpError> {
        let inner = &self.inner;
        inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<Events, HttpError> {
        let limit = StreamableHttpResponseLimits::default().max_sse_event_size;
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            limit,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<Events, HttpError> {
        let inner = &self.inner;
        let answer = inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.standalone.send_replace(Standalone::Answered);
        answer
    }
}
