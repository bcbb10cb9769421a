//! MCP servers for the rmcp tests: rmcp's own streamable HTTP server (feature
//! `transport-streamable-http-server`, a dev-dependency) behind a bearer check against the
//! embedded authorization server, and a small hand-written server whose tool call answers on an
//! SSE stream that it closes, so that the client must resume it. Each records every request it
//! received, with the audience of the token it carried.

// Each test binary uses part of these helpers.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audience_cache::testing::AuthorizationServer;
use audience_cache::{
    AuthorizedClient, Discovery, DiscoveryOptions, McpHttpClient, PreRegistered, TokenCache,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

/// One request as a server saw it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The `aud` of the bearer token, if a valid one came.
    pub audiences: Option<Vec<String>>,
    /// Whether an `Authorization` header came at all.
    pub authorization: bool,
    pub last_event_id: Option<String>,
    pub status: u16,
}

/// What the bearer check shares with its server's handle.
#[derive(Clone)]
struct Guard {
    auth: Arc<AuthorizationServer>,
    resource: String,
    metadata: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Resumed streams (a GET with `Last-Event-ID`) to answer with 401 `invalid_token`, as a
    /// server does after revoking the token.
    refuse_resumes: Arc<AtomicUsize>,
}

/// A running MCP server at `{origin}{path}`, stopped when dropped.
pub struct McpServer {
    pub resource: String,
    guard: Guard,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl McpServer {
    /// An rmcp server with the tools `whoami` and `echo`, behind the bearer check.
    pub async fn rmcp(auth: &Arc<AuthorizationServer>) -> Self {
        let service: StreamableHttpService<Tools, LocalSessionManager> = StreamableHttpService::new(
            || Ok(Tools),
            Arc::default(),
            StreamableHttpServerConfig::default(),
        );
        Self::serve(auth, |path| Router::new().nest_service(path, service)).await
    }

    /// A server whose `tools/call` answers on an SSE stream that it closes after a priming
    /// event (id `e1`, `retry: 100`): the result comes only on the GET that resumes it.
    pub async fn resumable(auth: &Arc<AuthorizationServer>) -> Self {
        let pending = Arc::new(Mutex::new(None::<Value>));
        Self::serve(auth, move |path| {
            Router::new().route(
                path,
                get(resume)
                    .post(message)
                    .delete(|| async { "" })
                    .with_state(pending),
            )
        })
        .await
    }

    /// A server with the routes `routes` makes for its MCP path, behind the bearer check.
    pub async fn serve(
        auth: &Arc<AuthorizationServer>,
        routes: impl FnOnce(&str) -> Router,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let path = "/mcp";
        let resource = format!("{origin}{path}");
        let guard = Guard {
            auth: auth.clone(),
            resource: resource.clone(),
            metadata: format!("{origin}/.well-known/oauth-protected-resource{path}"),
            seen: Arc::default(),
            refuse_resumes: Arc::default(),
        };
        let metadata = json!({
            "resource": resource,
            "authorization_servers": [auth.issuer()],
        });
        let app = routes(path)
            .layer(axum::middleware::from_fn_with_state(guard.clone(), check))
            .route(
                &format!("/.well-known/oauth-protected-resource{path}"),
                get(move || async move { axum::Json(metadata) }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            resource,
            guard,
            task,
        }
    }

    /// Every request to the MCP endpoint so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.guard.seen.lock().unwrap().clone()
    }

    /// Answers the next `n` resumed streams with 401 `invalid_token`.
    pub fn refuse_resumes(&self, n: usize) {
        self.guard.refuse_resumes.store(n, Ordering::SeqCst);
    }
}

/// The bearer check (RFC 6750 §3): a valid token whose `aud` is this server, or a 401 with the
/// challenge that leads to the protected resource metadata (RFC 9728 §5.1).
async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let last_event_id = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let info = header
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|token| guard.auth.validate(token));
    let audiences = info.as_ref().map(|i| i.audiences.clone());
    let mut seen = Seen {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        audiences: audiences.clone(),
        authorization: header.is_some(),
        last_event_id: last_event_id.clone(),
        status: 0,
    };
    let refuse_resume = last_event_id.is_some()
        && guard
            .refuse_resumes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let response = match audiences {
        Some(audiences) if audiences == [guard.resource.clone()] && !refuse_resume => {
            next.run(request).await
        }
        _ => {
            let error = if header.is_some() {
                "error=\"invalid_token\", "
            } else {
                ""
            };
            let challenge = format!("Bearer {error}resource_metadata=\"{}\"", guard.metadata);
            (
                http::StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
            )
                .into_response()
        }
    };
    seen.status = response.status().as_u16();
    guard.seen.lock().unwrap().push(seen);
    response
}

/// rmcp tools: `whoami` names the server, `echo` returns its `text`.
#[derive(Clone)]
pub struct Tools;

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let object = |value: Value| match value {
            Value::Object(map) => Arc::new(map),
            _ => unreachable!("an object"),
        };
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "whoami",
                "Names this server",
                object(json!({ "type": "object" })),
            ),
            Tool::new(
                "echo",
                "Returns its text",
                object(json!({
                    "type": "object",
                    "properties": { "text": { "type": "string" } },
                    "required": ["text"]
                })),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = match request.name.as_ref() {
            "echo" => request
                .arguments
                .as_ref()
                .and_then(|a| a.get("text"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            other => format!("called {other}"),
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

const SESSION: &str = "session-1";

/// The resumable server's POST: JSON answers, except `tools/call`, answered on an SSE stream
/// that ends after its priming event.
async fn message(State(pending): State<Arc<Mutex<Option<Value>>>>, body: Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return (http::StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let id = message["id"].clone();
    let result = match message["method"].as_str() {
        Some("initialize") => json!({
            "protocolVersion": "2025-11-25",
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "resumable", "version": "1" }
        }),
        Some("tools/list") => json!({ "tools": [
            { "name": "slow", "inputSchema": { "type": "object" } }
        ] }),
        Some("tools/call") => {
            *pending.lock().unwrap() = Some(id);
            let priming: Result<Bytes, Infallible> =
                Ok(Bytes::from_static(b"id: e1\nretry: 100\ndata: \n\n"));
            return (
                [
                    ("content-type", "text/event-stream"),
                    ("mcp-session-id", SESSION),
                ],
                Body::from_stream(futures_util::stream::iter([priming])),
            )
                .into_response();
        }
        _ if id.is_null() => return http::StatusCode::ACCEPTED.into_response(),
        _ => json!({}),
    };
    (
        [
            ("content-type", "application/json"),
            ("mcp-session-id", SESSION),
        ],
        json!({ "jsonrpc": "2.0", "id": id, "result": result }).to_string(),
    )
        .into_response()
}

/// The resumable server's GET: the standalone stream is not offered (405); a resumed one gets
/// the pending result and then stays open.
async fn resume(State(pending): State<Arc<Mutex<Option<Value>>>>, request: Request) -> Response {
    if !request.headers().contains_key("last-event-id") {
        return http::StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(id) = pending.lock().unwrap().take() else {
        return http::StatusCode::NOT_FOUND.into_response();
    };
    let reply = json!({ "jsonrpc": "2.0", "id": id, "result": {
        "content": [{ "type": "text", "text": "resumed" }]
    } });
    let event: Result<Bytes, Infallible> = Ok(Bytes::from(format!("id: e2\ndata: {reply}\n\n")));
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter([event]),
        futures_util::stream::pending(),
    );
    (
        [
            ("content-type", "text/event-stream"),
            ("mcp-session-id", SESSION),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The embedded authorization server with the client `svc`.
pub async fn authorization_server() -> Arc<AuthorizationServer> {
    Arc::new(
        AuthorizationServer::builder()
            .client(audience_cache::testing::Client::confidential(
                "svc", "s3cret",
            ))
            .start()
            .await
            .unwrap(),
    )
}

pub fn cache() -> TokenCache {
    TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap()
}

/// rmcp's HTTP client over an `AuthorizedClient` that discovers servers and uses the client
/// `svc` at `auth`.
pub fn client(cache: &TokenCache, auth: &AuthorizationServer) -> McpHttpClient {
    McpHttpClient::new(
        AuthorizedClient::new(cache.clone())
            .unwrap()
            .with_discovery(
                Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true))
                    .unwrap(),
                PreRegistered::client_secret_basic("svc", "s3cret".into()).at_issuer(auth.issuer()),
            ),
    )
    .unwrap()
}

/// Waits (up to 10 s) until `done` holds.
pub async fn eventually(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not reached within 10 s");
}
