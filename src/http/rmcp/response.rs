//! What the answers to rmcp's requests mean, decided as rmcp 3.11's own reqwest client decides
//! them (`transport/common/reqwest/streamable_http_client.rs` of rmcp): a 401/403 challenge
//! becomes rmcp's `AuthRequired`/`InsufficientScope`, 202 is `Accepted`, a 404 in a session
//! is `SessionExpired`, 429 and 5xx keep only their status and `Retry-After`, and bodies are
//! read only up to rmcp's limits, counted before anything is parsed. By the time an answer is
//! here the crate's loop has already retried what it could (a new token, added scopes); a
//! challenge that is left is the server's last word.

use std::borrow::Cow;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, ErrorData, JsonRpcMessage, ServerJsonRpcMessage,
};
use rmcp::transport::common::http_header::{
    EVENT_STREAM_MIME_TYPE, HEADER_SESSION_ID, JSON_MIME_TYPE,
};
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, HttpStatusError, InsufficientScopeError, SseError,
    StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::{Sse, SseStream};
use url::Url;

use super::HttpError;
use crate::challenge::{Challenges, TokenType};
use crate::error::Error;
use rmcp::transport::streamable_http_client::StreamableHttpError;

/// The most bytes of `Retry-After` kept (rmcp's own bound).
const MAX_RETRY_AFTER_BYTES: usize = 128;
/// The most bytes of an unparsable JSON body quoted in an error (rmcp's own bound).
const BODY_PREVIEW: usize = 256;

/// The answer to a POST of `message`.
pub(super) async fn post(
    response: reqwest::Response,
    message: &ClientJsonRpcMessage,
    session_was_attached: bool,
    limits: StreamableHttpResponseLimits,
) -> Result<StreamableHttpPostResponse, HttpError> {
    challenge(&response)?;
    let status = response.status();
    if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
        return Ok(StreamableHttpPostResponse::Accepted);
    }
    if status == StatusCode::NOT_FOUND && session_was_attached {
        return Err(StreamableHttpError::SessionExpired);
    }
    let content_type = response.headers().get(CONTENT_TYPE).cloned();
    let is_json = content_type
        .as_ref()
        .is_some_and(|ct| media_type_is(ct.as_bytes(), JSON_MIME_TYPE));
    // Rate limits and non-JSON failures end here, unread; a JSON 5xx may carry a JSON-RPC
    // error worth keeping.
    let status_error = match (http_status_error(status, response.headers()), is_json) {
        (Some(error), is_json) if !is_json || status == StatusCode::TOO_MANY_REQUESTS => {
            return Err(error.into());
        }
        (error, _) => error,
    };
    let session_id = response
        .headers()
        .get(HEADER_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A POST of a notification or a response leaves nothing to wait for.
    let awaits_no_response = !matches!(message, ClientJsonRpcMessage::Request(_));
    if status.is_success() && response.content_length() == Some(0) && awaits_no_response {
        return Ok(StreamableHttpPostResponse::Accepted);
    }
    if !status.is_success() {
        return failure(
            response,
            message,
            session_was_attached,
            status_error,
            limits,
        )
        .await;
    }
    match content_type {
        Some(ct) if media_type_is(ct.as_bytes(), EVENT_STREAM_MIME_TYPE) => {
            Ok(StreamableHttpPostResponse::Sse(
                events(response, limits.max_sse_event_size),
                session_id,
            ))
        }
        Some(ct) if media_type_is(ct.as_bytes(), JSON_MIME_TYPE) => {
            let body = read_bounded(response, limits.max_json_response_size).await?;
            match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                Ok(parsed) => Ok(StreamableHttpPostResponse::Json(parsed, session_id)),
                Err(_) if awaits_no_response => Ok(StreamableHttpPostResponse::Accepted),
                Err(e) => Err(StreamableHttpError::UnexpectedServerResponse(
                    format!(
                        "could not parse JSON response as ServerJsonRpcMessage: {e}: {}",
                        preview(&body)
                    )
                    .into(),
                )),
            }
        }
        // A 2xx with another type (or none) answers a notification well enough.
        _ if awaits_no_response => Ok(StreamableHttpPostResponse::Accepted),
        other => Err(StreamableHttpError::UnexpectedContentType(
            other.map(|ct| String::from_utf8_lossy(ct.as_bytes()).into_owned()),
        )),
    }
}

/// A POST answered with a failure: a JSON-RPC error in a JSON body is the answer; otherwise
/// the status, with a bounded prefix of the body for the message.
async fn failure(
    response: reqwest::Response,
    message: &ClientJsonRpcMessage,
    session_was_attached: bool,
    status_error: Option<HttpStatusError>,
    limits: StreamableHttpResponseLimits,
) -> Result<StreamableHttpPostResponse, HttpError> {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|ct| media_type_is(ct.as_bytes(), JSON_MIME_TYPE));
    // A 401/403 without a challenge (those with one ended in `challenge`) keeps its status.
    let is_auth_failure = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    let body = if is_json && !is_auth_failure {
        match read_bounded(response, limits.max_json_response_size).await {
            Ok(body) => {
                if let Ok(error @ JsonRpcMessage::Error(_)) =
                    serde_json::from_slice::<ServerJsonRpcMessage>(&body)
                {
                    let text = String::from_utf8_lossy(&body);
                    if let Some(response) =
                        discover_rejected(message, session_was_attached, status, &text)
                    {
                        return Ok(response);
                    }
                    return Ok(StreamableHttpPostResponse::Json(error, None));
                }
                let end = body.len().min(limits.max_error_response_size);
                String::from_utf8_lossy(&body[..end]).into_owned()
            }
            Err(error @ StreamableHttpError::ResponseBodyTooLarge { .. }) => {
                return Err(status_error.map(HttpError::from).unwrap_or(error));
            }
            Err(_) => "<failed to read response body>".to_owned(),
        }
    } else {
        match read_truncated(response, limits.max_error_response_size).await {
            Some(prefix) => String::from_utf8_lossy(&prefix).into_owned(),
            None => "<failed to read response body>".to_owned(),
        }
    };
    if let Some(response) = discover_rejected(message, session_was_attached, status, &body) {
        return Ok(response);
    }
    if let Some(error) = status_error {
        return Err(error.into());
    }
    Err(StreamableHttpError::UnexpectedServerResponse(
        format!("HTTP {status}: {body}").into(),
    ))
}

/// A sessionless `server/discover` refused with a 4xx (other than 401/403) by a server that
/// predates it: a JSON-RPC error for that request, so that rmcp's lifecycle falls back to
/// `initialize` (what rmcp's own client does; the server's error is kept when it sent one).
fn discover_rejected(
    message: &ClientJsonRpcMessage,
    session_was_attached: bool,
    status: StatusCode,
    body: &str,
) -> Option<StreamableHttpPostResponse> {
    if session_was_attached
        || !status.is_client_error()
        || matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
    {
        return None;
    }
    let ClientJsonRpcMessage::Request(request) = message else {
        return None;
    };
    if !matches!(request.request, ClientRequest::DiscoverRequest(_)) {
        return None;
    }
    let error = match serde_json::from_str::<ServerJsonRpcMessage>(body) {
        Ok(JsonRpcMessage::Error(error)) => error.error,
        _ => ErrorData::invalid_request(
            format!("server/discover rejected with HTTP {status}: {body}"),
            None,
        ),
    };
    Some(StreamableHttpPostResponse::Json(
        ServerJsonRpcMessage::error(error, Some(request.id.clone())),
        None,
    ))
}

/// The answer to the GET of an SSE stream.
pub(super) fn stream(
    response: reqwest::Response,
    max_sse_event_size: usize,
) -> Result<BoxStream<'static, Result<Sse, SseError>>, HttpError> {
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return Err(StreamableHttpError::ServerDoesNotSupportSse);
    }
    challenge(&response)?;
    if let Some(error) = http_status_error(status, response.headers()) {
        return Err(error.into());
    }
    if !status.is_success() {
        return Err(StreamableHttpError::UnexpectedServerResponse(
            format!("HTTP {status} to the GET of the event stream").into(),
        ));
    }
    match response.headers().get(CONTENT_TYPE) {
        Some(ct)
            if media_type_is(ct.as_bytes(), EVENT_STREAM_MIME_TYPE)
                || media_type_is(ct.as_bytes(), JSON_MIME_TYPE) => {}
        other => {
            return Err(StreamableHttpError::UnexpectedContentType(
                other.map(|ct| String::from_utf8_lossy(ct.as_bytes()).into_owned()),
            ));
        }
    }
    Ok(events(response, max_sse_event_size))
}

/// The answer to the DELETE of a session: a server that does not allow it (405) is fine.
pub(super) fn delete(response: &reqwest::Response) -> Result<(), HttpError> {
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED || status.is_success() {
        return Ok(());
    }
    challenge(response)?;
    Err(StreamableHttpError::UnexpectedServerResponse(
        format!("HTTP {status} to the DELETE of the session").into(),
    ))
}

/// A 401 or 403 with a challenge, as rmcp's errors (with the scopes a 403 asks for, read by
/// the crate's challenge parser).
fn challenge(response: &reqwest::Response) -> Result<(), HttpError> {
    let status = response.status();
    if !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Ok(());
    }
    let Some(header) = response.headers().get(WWW_AUTHENTICATE) else {
        return Ok(());
    };
    let header = header
        .to_str()
        .map_err(|_| {
            StreamableHttpError::UnexpectedServerResponse(
                "invalid www-authenticate header value".into(),
            )
        })?
        .to_owned();
    if status == StatusCode::UNAUTHORIZED {
        return Err(StreamableHttpError::AuthRequired(AuthRequiredError::new(
            header,
        )));
    }
    let scope = challenged_scope(response.headers(), response.url());
    Err(StreamableHttpError::InsufficientScope(
        InsufficientScopeError::new(header, scope),
    ))
}

/// The `scope` of the Bearer challenge for `url`, if any.
fn challenged_scope(headers: &HeaderMap, url: &Url) -> Option<String> {
    let challenges = Challenges::parse(headers.get_all(WWW_AUTHENTICATE)).ok()?;
    let selected = challenges.select(url, TokenType::Bearer).ok()?;
    selected.scope().map(|scope| scope.as_str().to_owned())
}

/// 429 and 5xx as rmcp's status error: the status and a bounded `Retry-After`, nothing else.
fn http_status_error(status: StatusCode, headers: &HeaderMap) -> Option<HttpStatusError> {
    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
        return None;
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .filter(|value| value.as_bytes().len() <= MAX_RETRY_AFTER_BYTES)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Some(HttpStatusError::new(status.as_u16(), retry_after))
}

/// Whether a `Content-Type` is `expected`, ignoring parameters and case (RFC 9110 §8.3.1).
fn media_type_is(value: &[u8], expected: &str) -> bool {
    value
        .split(|byte| *byte == b';')
        .next()
        .and_then(|essence| std::str::from_utf8(essence).ok())
        .is_some_and(|essence| {
            essence
                .trim_matches([' ', '\t'])
                .eq_ignore_ascii_case(expected)
        })
}

/// The whole body, refused (not truncated) beyond `max` bytes, counted as they arrive.
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, HttpError> {
    if response
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Err(StreamableHttpError::ResponseBodyTooLarge { max_size: max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| StreamableHttpError::Client(crate::error::request_error(&e)))?
    {
        if chunk.len() > max - body.len() {
            return Err(StreamableHttpError::ResponseBodyTooLarge { max_size: max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most `max` bytes of the body, for a message; the rest is not read. `None` when the body
/// could not be read.
async fn read_truncated(mut response: reqwest::Response, max: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while body.len() < max {
        let Some(chunk) = response.chunk().await.ok()? else {
            break;
        };
        let count = chunk.len().min(max - body.len());
        body.extend_from_slice(&chunk[..count]);
    }
    Some(body)
}

/// The start of a body, for an error message.
fn preview(body: &[u8]) -> Cow<'_, str> {
    if body.is_empty() {
        return Cow::Borrowed("<empty>");
    }
    String::from_utf8_lossy(&body[..body.len().min(BODY_PREVIEW)])
}

/// Why an event stream stopped early.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(
        "an event of the server's event stream is larger than {max_size} bytes (StreamableHttpClientTransportConfig::max_sse_event_size)"
    )]
    EventTooLarge { max_size: usize },
    #[error("{0}")]
    Read(Error),
}

/// The body as server-sent events, each at most `max` bytes (the event stream format, HTML
/// Living Standard §9.2.6: fields are joined by a newline; comments and the line ends
/// themselves are not kept). The stream ends after its first error.
fn events(response: reqwest::Response, max: usize) -> BoxStream<'static, Result<Sse, SseError>> {
    let bounded = response.bytes_stream().scan(
        (EventSize::new(max), false),
        move |(size, failed), chunk| {
            let item = if *failed {
                None
            } else {
                Some(match chunk {
                    Ok(chunk) => match size.observe(&chunk) {
                        Ok(()) => Ok(chunk),
                        Err(()) => Err(StreamError::EventTooLarge { max_size: max }),
                    },
                    Err(e) => Err(StreamError::Read(crate::error::request_error(&e))),
                })
            };
            *failed = matches!(item, Some(Err(_)));
            std::future::ready(item)
        },
    );
    SseStream::from_bytes_stream(bounded).boxed()
}

/// The size of the event being received, as the SSE parser will keep it.
#[derive(Debug)]
struct EventSize {
    max: usize,
    /// Bytes of the finished lines of this event.
    retained: usize,
    /// Bytes of the line being received.
    line: usize,
    line_is_comment: bool,
    previous_was_cr: bool,
}

impl EventSize {
    fn new(max: usize) -> Self {
        Self {
            max,
            retained: 0,
            line: 0,
            line_is_comment: false,
            previous_was_cr: false,
        }
    }

    /// Counts `chunk`; `Err` once the event is over the limit.
    fn observe(&mut self, chunk: &[u8]) -> Result<(), ()> {
        for &byte in chunk {
            // CR LF is one line end.
            if std::mem::take(&mut self.previous_was_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' => {
                    self.end_line()?;
                    self.previous_was_cr = true;
                }
                b'\n' => self.end_line()?,
                _ => {
                    if self.line == 0 {
                        self.line_is_comment = byte == b':';
                    }
                    self.line = self.line.saturating_add(1);
                    self.check()?;
                }
            }
        }
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), ()> {
        if self.line == 0 {
            // A blank line ends the event.
            self.retained = 0;
        } else if !self.line_is_comment {
            // The parser joins the lines of an event with a newline.
            self.retained = self.retained.saturating_add(self.line).saturating_add(1);
        }
        self.line = 0;
        self.line_is_comment = false;
        self.check()
    }

    fn check(&self) -> Result<(), ()> {
        if self.retained.saturating_add(self.line) > self.max {
            Err(())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_measured_across_chunks_and_a_blank_line_starts_the_next() {
        let mut size = EventSize::new(16);
        assert!(size.observe(b"data: aaaaa").is_ok());
        assert!(size.observe(b"aaaa\n\n").is_ok());
        // The next event starts from zero.
        assert!(size.observe(b"data: bbbbbbbbb\r\n\r\n").is_ok());
        assert!(size.observe(b"data: aaaaa").is_ok());
        assert!(size.observe(b"aaaaaa").is_err());
    }

    #[test]
    fn finished_comments_do_not_count_and_lines_of_one_event_add_up() {
        let mut size = EventSize::new(16);
        // A comment line is not kept once it ends (a longer one is refused while it arrives).
        assert!(size.observe(b": 12345678901234\n").is_ok());
        assert!(size.observe(b"data: 1234567\n").is_ok());
        assert!(size.observe(b"data: 12345\n").is_err());
    }

    #[test]
    fn media_types_ignore_case_and_parameters() {
        assert!(media_type_is(
            b"Application/JSON; charset=utf-8",
            JSON_MIME_TYPE
        ));
        assert!(media_type_is(b" text/event-stream", EVENT_STREAM_MIME_TYPE));
        assert!(!media_type_is(b"application/json-seq", JSON_MIME_TYPE));
        assert!(!media_type_is(b"text/html", EVENT_STREAM_MIME_TYPE));
    }
}
