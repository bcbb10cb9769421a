//! An MCP client that knows only a server URL and its client credentials: discovery finds the
//! protected resource metadata and the authorization server from the server's 401, the cache
//! fetches a token for exactly that resource, and the client initializes a streamable-HTTP
//! session and lists the server's tools.
//!
//! ```sh
//! CLIENT_ID=my-client CLIENT_SECRET=… cargo run --example mcp_client -- https://mcp.example.com/mcp
//! ```
//!
//! Environment: `CLIENT_ID`, `CLIENT_SECRET` (client credentials, `client_secret_basic`;
//! `AUTH_METHOD=post` for `client_secret_post`); `ISSUER`, the authorization server the client
//! is registered at (its secret is never sent to another one, whatever the MCP server's
//! metadata says); `ALLOW_HTTP_LOOPBACK=1` for servers on plain http on loopback (development
//! only).
//!
//! It speaks JSON-RPC over streamable HTTP directly (replies may be JSON or server-sent
//! events), through the crate's `AuthorizedClient`, so every request to the server goes through
//! the audience decision.

use std::process::ExitCode;

use audience_cache::{AuthorizedClient, Discovery, DiscoveryOptions, PreRegistered, TokenCache};
use serde_json::{Value, json};

const PROTOCOL_VERSION: &str = "2025-11-25";
const USAGE: &str = "usage: mcp_client <server-url>   (environment: CLIENT_ID, CLIENT_SECRET, ISSUER; AUTH_METHOD=basic|post; ALLOW_HTTP_LOOPBACK=1)";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> Result<(), String> {
    let server = std::env::args()
        .skip(1)
        .last()
        .ok_or_else(|| USAGE.to_owned())?;
    let server = url::Url::parse(&server).map_err(|e| format!("{server:?} is not a URL: {e}"))?;
    let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set\n{USAGE}"));
    let (client_id, secret) = (env("CLIENT_ID")?, env("CLIENT_SECRET")?.into());
    let client = match std::env::var("AUTH_METHOD").as_deref() {
        Ok("post") => PreRegistered::client_secret_post(client_id, secret),
        _ => PreRegistered::client_secret_basic(client_id, secret),
    }
    .at_issuer(env("ISSUER")?);
    let loopback = std::env::var("ALLOW_HTTP_LOOPBACK").is_ok_and(|v| v == "1");
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(loopback)
        .build()
        .map_err(|e| e.to_string())?;
    let discovery =
        Discovery::new(DiscoveryOptions::strict().allow_loopback_for_development(loopback))
            .map_err(|e| e.to_string())?;
    let http = AuthorizedClient::new(cache.clone())
        .map_err(|e| e.to_string())?
        .with_discovery(discovery, client);
    let mut session = Session {
        http,
        server,
        id: None,
        next_id: 1,
    };

    let init = session
        .request(
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "audience-cache mcp_client example", "version": env!("CARGO_PKG_VERSION") }
            }),
        )
        .await?;
    let name = init["serverInfo"]["name"].as_str().unwrap_or("(unnamed)");
    println!(
        "connected to {name} (protocol {})",
        init["protocolVersion"].as_str().unwrap_or("?")
    );
    if let Some(resource) = cache.resource_for(&session.server) {
        println!("resource {} (sent as {})", resource.key(), resource.wire());
    }
    session.notify("notifications/initialized").await?;
    let tools = session.request("tools/list", json!({})).await?;
    let tools = tools["tools"].as_array().cloned().unwrap_or_default();
    println!("{} tool(s):", tools.len());
    for tool in tools {
        println!(
            "  {:<24} {}",
            tool["name"].as_str().unwrap_or("?"),
            tool["description"].as_str().unwrap_or("")
        );
    }
    let stats = cache.stats();
    println!("token requests: {}", stats.fetches);
    Ok(())
}

/// A streamable-HTTP MCP session: JSON-RPC requests by POST, the session id carried along.
struct Session {
    http: AuthorizedClient,
    server: url::Url,
    id: Option<String>,
    next_id: u64,
}

impl Session {
    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(self.server.as_str())
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .json(body);
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        request
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let request = self.post(&body).build().map_err(|e| e.to_string())?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(session) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.id = Some(session.to_owned());
        }
        let status = response.status();
        let is_sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method}: HTTP {}", status.as_u16()));
        }
        let reply = if is_sse {
            sse_reply(&text, id)?
        } else {
            parse(&text)?
        };
        if let Some(error) = reply.get("error") {
            return Err(format!("{method}: {error}"));
        }
        reply
            .get("result")
            .cloned()
            .ok_or_else(|| format!("{method}: the reply has no result"))
    }

    async fn notify(&mut self, method: &str) -> Result<(), String> {
        let body = json!({ "jsonrpc": "2.0", "method": method });
        let request = self.post(&body).build().map_err(|e| e.to_string())?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{method}: HTTP {}", response.status().as_u16()));
        }
        Ok(())
    }
}

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("the reply is not JSON: {e}"))
}

/// The JSON-RPC response with `id` among the server-sent events (`data:` lines).
fn sse_reply(text: &str, id: u64) -> Result<Value, String> {
    let mut data = String::new();
    for line in text.lines().chain(std::iter::once("")) {
        if let Some(rest) = line.strip_prefix("data:") {
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            data.push('\n');
        } else if line.is_empty() && !data.is_empty() {
            if let Ok(message) = serde_json::from_str::<Value>(&data)
                && message.get("id").and_then(Value::as_u64) == Some(id)
            {
                return Ok(message);
            }
            data.clear();
        }
    }
    Err(format!("no reply with id {id} in the event stream"))
}
