//! rmcp's streamable HTTP client transport over the crate's one request loop (feature `rmcp`).
//!
//! [`McpHttpClient`] implements rmcp's `StreamableHttpClient`: rmcp speaks MCP (sessions,
//! protocol versions, SSE streams and their resumption) and hands each HTTP request to this
//! client, which sends it through [`AuthorizedClient`], the same loop as every other request of
//! the crate. What rmcp's built-in reqwest client does with the answer (statuses, content
//! types, body limits) is done here the same way, in `response`.

mod response;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::BoxStream;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::common::http_header::{
    HEADER_LAST_EVENT_ID, HEADER_MCP_PROTOCOL_VERSION, HEADER_SESSION_ID, JSON_MIME_TYPE,
};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpClientTransport,
    StreamableHttpClientTransportConfig, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;

use super::AuthorizedClient;
use crate::error::{BuildError, Error};

/// The error rmcp's transport gets from this client: its own variants for what the server
/// answered, [`StreamableHttpError::Client`] with the crate's [`Error`] for everything the
/// crate decided (a refused URL, a token that could not be had, a failed send).
type HttpError = StreamableHttpError<Error>;

/// What every MCP request accepts (MCP 2025-11-25, streamable HTTP: both, always).
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// rmcp's streamable HTTP client, with every request sent through the crate's request loop.
///
/// Give it to rmcp's `StreamableHttpClientTransport` (or use [`transport`](Self::transport)) and
/// rmcp does the protocol while the crate does authorization: each POST of a message, each GET
/// of an SSE stream (a resumed one too) and the DELETE of the session goes through
/// [`AuthorizedClient::execute`], so it gets the token for its exact URL after the crate's one
/// decision, redirects are decided again at every hop, a server known only by its URL is
/// discovered from its 401 ([`AuthorizedClient::with_discovery`]), a 401 `invalid_token` or 403
/// `insufficient_scope` is retried once with a new token or the added scopes, and a user
/// authorizes where needed ([`AuthorizedClient::with_authorization`]). The session id, the
/// `Last-Event-ID` of a resumed stream and rmcp's protocol headers are passed through.
///
/// The token never comes from rmcp. rmcp's `auth_header` (its transport setting, or the token
/// its own `AuthClient` wrapper would put there) is refused: a request that carries one fails
/// with [`Error::Configuration`] before anything is sent, because that token was not chosen for
/// the request's URL and sending it would bypass the audience decision; silently dropping it
/// would hide a setting that does nothing. For the same reason an `Authorization` among
/// rmcp's custom headers is refused. Leave both unset: the cache is where the token comes from.
///
/// rmcp's response limits (`max_json_response_size`, `max_error_response_size`,
/// `max_sse_event_size` of its transport configuration) are enforced here as rmcp's own client
/// enforces them, counting bytes before anything is parsed.
///
/// ```no_run
/// # async fn run(cache: audience_cache::TokenCache) -> Result<(), Box<dyn std::error::Error>> {
/// use audience_cache::{AuthorizedClient, McpHttpClient};
///
/// let client = McpHttpClient::new(AuthorizedClient::new(cache)?)?;
/// let transport = client.transport("https://mcp.example.com/mcp");
/// // rmcp::ServiceExt::serve(handler, transport).await? starts the MCP session.
/// # let _ = transport;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct McpHttpClient {
    client: AuthorizedClient,
}

impl McpHttpClient {
    /// rmcp's HTTP client over `client`, with its cache and its discovery, authorization and
    /// redirect settings. Fails only when reqwest cannot build its client (its TLS setup, say).
    ///
    /// Like rmcp's own client, it keeps no idle connections: a connection reused after a
    /// response that was not read to its end (an SSE stream rmcp stopped reading once it had
    /// its answer) stalls the next request by about 40 ms on Linux (delayed ACK), on every
    /// tool call.
    pub fn new(client: AuthorizedClient) -> Result<Self, Error> {
        let inner = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| {
                Error::Configuration(BuildError::HttpClient {
                    reason: crate::error::describe(&e),
                })
            })?;
        Ok(Self {
            client: AuthorizedClient {
                inner,
                policy: client.policy,
            },
        })
    }

    /// rmcp's streamable HTTP transport to the MCP server at `url`, with rmcp's default
    /// configuration (no `auth_header`: see the type).
    pub fn transport(self, url: impl Into<Arc<str>>) -> StreamableHttpClientTransport<Self> {
        StreamableHttpClientTransport::with_client(
            self,
            StreamableHttpClientTransportConfig::with_uri(url),
        )
    }

    /// Sends one request through the crate's loop.
    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, HttpError> {
        let mut builder = self.client.request(method, uri).headers(headers);
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let request = builder
            .build()
            .map_err(|e| StreamableHttpError::Client(crate::error::request_error(&e)))?;
        self.client
            .execute(request)
            .await
            .map_err(StreamableHttpError::Client)
    }
}

/// The error for a token handed in by rmcp (see [`McpHttpClient`]).
fn refused(setting: &'static str) -> HttpError {
    StreamableHttpError::Client(Error::Configuration(BuildError::Setting {
        setting,
        reason: "McpHttpClient attaches the token for each request itself, after the audience decision for the request's URL; a token handed in by rmcp is not sent. Leave it unset (and do not wrap McpHttpClient in rmcp's AuthClient): the TokenCache is where tokens come from".to_owned(),
    }))
}

/// The headers of one request: rmcp's custom headers (refusing the ones the transport sets
/// itself, and any `Authorization`), `Accept`, and the session's id.
fn request_headers(
    auth_header: Option<String>,
    custom_headers: HashMap<HeaderName, HeaderValue>,
    session_id: Option<&str>,
) -> Result<HeaderMap, HttpError> {
    if auth_header.is_some() {
        return Err(refused("StreamableHttpClientTransportConfig::auth_header"));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in custom_headers {
        if name == AUTHORIZATION {
            return Err(refused(
                "an Authorization header in StreamableHttpClientTransportConfig::custom_headers",
            ));
        }
        // rmcp's reserved headers: the transport sets them (MCP-Protocol-Version is put among
        // the custom headers by rmcp itself after initialization).
        if [ACCEPT.as_str(), HEADER_SESSION_ID, HEADER_LAST_EVENT_ID]
            .iter()
            .any(|reserved| name.as_str().eq_ignore_ascii_case(reserved))
            && !name
                .as_str()
                .eq_ignore_ascii_case(HEADER_MCP_PROTOCOL_VERSION)
        {
            return Err(StreamableHttpError::ReservedHeaderConflict(
                name.to_string(),
            ));
        }
        headers.insert(name, value);
    }
    headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_BOTH));
    if let Some(id) = session_id {
        headers.insert(HEADER_SESSION_ID, header_value(id, "session id")?);
    }
    Ok(headers)
}

/// A value the server chose (a session id, an event id) as a header value; one with control
/// characters is the server's error, not sent.
fn header_value(value: &str, what: &str) -> Result<HeaderValue, HttpError> {
    HeaderValue::from_str(value).map_err(|_| {
        StreamableHttpError::UnexpectedServerResponse(
            format!("the server's {what} is not a valid header value").into(),
        )
    })
}

impl StreamableHttpClient for McpHttpClient {
    type Error = Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let mut limits = StreamableHttpResponseLimits::default();
        limits.max_sse_event_size = max_sse_event_size;
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
        let mut headers = request_headers(auth_header, custom_headers, session_id.as_deref())?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_MIME_TYPE));
        let body = serde_json::to_vec(&message)?;
        let response = self.send(Method::POST, &uri, headers, Some(body)).await?;
        response::post(response, &message, session_id.is_some(), limits).await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), HttpError> {
        let headers = request_headers(auth_header, custom_headers, Some(&session_id))?;
        let response = self.send(Method::DELETE, &uri, headers, None).await?;
        response::delete(&response)
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, HttpError> {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            StreamableHttpResponseLimits::default().max_sse_event_size,
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
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, HttpError> {
        let mut headers = request_headers(auth_header, custom_headers, session_id.as_deref())?;
        // A resumed stream: the server replays what followed this event (MCP 2025-11-25,
        // streamable HTTP, resumability). The request is a new one, with its own decision.
        if let Some(id) = &last_event_id {
            headers.insert(HEADER_LAST_EVENT_ID, header_value(id, "event id")?);
        }
        let response = self.send(Method::GET, &uri, headers, None).await?;
        response::stream(response, max_sse_event_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::transport::common::http_header::EVENT_STREAM_MIME_TYPE;

    #[test]
    fn accept_asks_for_both_media_types_rmcp_names() {
        assert_eq!(
            ACCEPT_BOTH,
            [JSON_MIME_TYPE, EVENT_STREAM_MIME_TYPE].join(", ")
        );
    }

    #[test]
    fn a_token_from_rmcp_is_refused_without_being_echoed() {
        let error =
            request_headers(Some("secret-token".to_owned()), HashMap::new(), None).unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(
            matches!(&error, StreamableHttpError::Client(Error::Configuration(BuildError::Setting { setting, .. })) if setting.contains("auth_header")),
            "{error:?}"
        );
        let mut custom = HashMap::new();
        custom.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer secret-token"),
        );
        let error = request_headers(None, custom, None).unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(
            matches!(&error, StreamableHttpError::Client(Error::Configuration(_))),
            "{error:?}"
        );
    }

    #[test]
    fn a_session_id_with_a_line_break_is_not_sent() {
        let error = request_headers(None, HashMap::new(), Some("s\r\nx-injected: 1")).unwrap_err();
        assert!(
            matches!(&error, StreamableHttpError::UnexpectedServerResponse(m) if m.contains("session id")),
            "{error:?}"
        );
    }

    #[test]
    fn reserved_headers_are_refused_and_the_protocol_version_passes() {
        for name in ["accept", "mcp-session-id", "last-event-id"] {
            let mut custom = HashMap::new();
            custom.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            let error = request_headers(None, custom, None).unwrap_err();
            assert!(
                matches!(&error, StreamableHttpError::ReservedHeaderConflict(n) if n == name),
                "{error:?}"
            );
        }
        let mut custom = HashMap::new();
        custom.insert(
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_static("2025-11-25"),
        );
        let headers = request_headers(None, custom, Some("s-1")).unwrap();
        assert_eq!(headers["mcp-protocol-version"], "2025-11-25");
        assert_eq!(headers["mcp-session-id"], "s-1");
        assert_eq!(headers[ACCEPT], ACCEPT_BOTH);
    }
}
