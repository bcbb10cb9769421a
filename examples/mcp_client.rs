//! An MCP client that knows only a server URL: discovery finds the protected resource metadata
//! and the authorization server from the server's 401 (or, for MCP 2025-03-26 servers, the
//! server's own origin), the client gets a client there (pre-registered, a client ID metadata
//! document, or dynamic registration), a user authorizes if the resource needs it, and the
//! cache fetches tokens for exactly that resource. The client initializes a streamable-HTTP
//! session, lists the server's tools and calls one.
//!
//! ```sh
//! # Client credentials registered in advance at ISSUER:
//! CLIENT_ID=my-client CLIENT_SECRET=… ISSUER=https://auth.example.com \
//!     cargo run --example mcp_client -- https://mcp.example.com/mcp
//! # No credentials: a client ID metadata document or dynamic registration, and the browser:
//! CLIENT_METADATA_URL=https://app.example.com/client.json \
//!     cargo run --example mcp_client -- https://mcp.example.com/mcp
//! # Authorize once: the registered client and the refresh token kept for the next run
//! # (feature `file-store`; the directory is made with mode 0700):
//! cargo run --features file-store --example mcp_client -- \
//!     --state-dir ~/.local/state/audience-cache https://mcp.example.com/mcp
//! ```
//!
//! Options: `--state-dir DIR` keeps dynamically registered clients and refresh tokens in `DIR`
//! (a `FileStore`: sealed records, a key file made there on first use), so that the next run
//! refreshes instead of asking the user again. Without it, nothing outlives the process.
//!
//! Environment:
//! - `CLIENT_ID`, `CLIENT_SECRET`, `ISSUER`: a client registered in advance at `ISSUER` (its
//!   secret is never sent to another authorization server, whatever the MCP server's metadata
//!   says); it uses client credentials, or the authorization code grant with `GRANT=code`.
//! - `CLIENT_METADATA_URL`: the https URL of this client's metadata document, used as
//!   `client_id` where the authorization server supports that. Dynamic registration is always
//!   allowed as the last resort.
//! - `AUTHORIZE=browser` (default; prints the URL and waits for the redirect on 127.0.0.1) or
//!   `headless` (fetches the URL and reads the redirect: for servers that approve at once).
//! - `ALLOW_HTTP_LOOPBACK=1` for servers on plain http on loopback (development only).
//! - `TOOL` (default: the first listed) and `TOOL_ARGUMENTS` (JSON; default: each required
//!   argument filled with a placeholder of its type).
//! - With feature `dpop`: DPoP-bound tokens (RFC 9449) where the server asks for them (its
//!   metadata's `dpop_bound_access_tokens_required`, or a `DPoP` challenge), proved with a key
//!   generated at start-up, or read from `DPOP_KEY_PEM` (a P-256 key in PKCS #8 PEM, so that
//!   several processes share tokens). `DPOP=1` uses DPoP for the server even unasked.
//!
//! It doubles as a client for the MCP conformance suite (`tests/conformance`): the suite
//! appends the server URL and sets `MCP_CONFORMANCE_SCENARIO` and, for scenarios with client
//! credentials, `MCP_CONFORMANCE_CONTEXT` (`{"client_id": …, "client_secret": …}`, or
//! `"private_key_pem"` for `private_key_jwt` with feature `private-key-jwt`). The suite
//! starts its authorization servers on ports nobody can know in advance, so with that context
//! the issuer is the one discovery finds for the server: a test harness may do that, a real
//! client lists the issuers its credentials belong to (`ISSUER`).
//!
//! It speaks JSON-RPC over streamable HTTP directly (replies may be JSON or server-sent
//! events), through the crate's `AuthorizedClient`, so every request to the server goes through
//! the audience decision.

use std::process::ExitCode;
use std::sync::Arc;

use audience_cache::{
    AuthorizationHandler, AuthorizedClient, ClientRegistrar, CredentialStore, Discovery,
    DiscoveryOptions, DynamicRegistration, HeadlessAuthorization, LoopbackListener, PreRegistered,
    TokenCache,
};
use serde_json::{Value, json};
use url::Url;

const PROTOCOL_VERSION: &str = "2025-11-25";
const USAGE: &str = "usage: mcp_client [--state-dir DIR] <server-url>   (environment: see the top of examples/mcp_client.rs)";

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
    let (state_dir, server) = arguments()?;
    let store = state_dir.map(open_store).transpose()?;
    let server = Url::parse(&server).map_err(|e| format!("{server:?} is not a URL: {e}"))?;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let loopback = var("ALLOW_HTTP_LOOPBACK").is_some_and(|v| v == "1");
    let scenario = var("MCP_CONFORMANCE_SCENARIO");
    if let Some(scenario) = &scenario {
        eprintln!("conformance scenario {scenario}");
    }

    let handler: Arc<dyn AuthorizationHandler> = match var("AUTHORIZE").as_deref() {
        Some("headless") => headless()?,
        None if scenario.is_some() => headless()?,
        Some("browser") | None => Arc::new(
            LoopbackListener::bind(0)
                .await
                .map_err(|e| e.to_string())?
                .open_browser(true),
        ),
        Some(other) => return Err(format!("AUTHORIZE={other:?}: use browser or headless")),
    };
    let discovery =
        Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(loopback))
            .map_err(|e| e.to_string())?;
    let clients = registrar(&server, &discovery, &*handler).await?;
    let mut cache = TokenCache::builder().allow_insecure_http_on_loopback(loopback);
    if let Some(store) = store {
        cache = cache.credential_store(store);
    }
    #[cfg(feature = "dpop")]
    let cache = dpop(
        cache,
        &server,
        var("DPOP_KEY_PEM"),
        var("DPOP").is_some_and(|v| v == "1"),
        loopback,
    )?;
    let cache = cache.build().map_err(|e| e.to_string())?;
    let http = AuthorizedClient::new(cache.clone())
        .map_err(|e| e.to_string())?
        .with_discovery(discovery, clients)
        .with_authorization(handler);
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
    session.notify("notifications/initialized").await?;
    let tools = session.request("tools/list", json!({})).await?;
    let tools = tools["tools"].as_array().cloned().unwrap_or_default();
    if let Some(resource) = cache.resource_for(&session.server) {
        println!("resource {} (sent as {})", resource.key(), resource.wire());
    }
    println!("{} tool(s):", tools.len());
    for tool in &tools {
        println!(
            "  {:<24} {}",
            tool["name"].as_str().unwrap_or("?"),
            tool["description"].as_str().unwrap_or("")
        );
    }
    let wanted = var("TOOL");
    let tool = match &wanted {
        Some(name) => tools.iter().find(|t| t["name"] == name.as_str()),
        None => tools.first(),
    };
    match tool {
        Some(tool) => {
            let name = tool["name"].as_str().unwrap_or_default().to_owned();
            let arguments = match var("TOOL_ARGUMENTS") {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| format!("TOOL_ARGUMENTS is not JSON: {e}"))?,
                None => placeholder_arguments(&tool["inputSchema"]),
            };
            let result = session
                .request(
                    "tools/call",
                    json!({ "name": name, "arguments": arguments }),
                )
                .await?;
            let text: Vec<&str> = result["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["text"].as_str())
                .collect();
            println!("called {name}: {}", text.join(" "));
            if result["isError"] == true {
                return Err(format!("the tool {name} reported an error"));
            }
        }
        None if wanted.is_some() => {
            return Err(format!(
                "the server has no tool {:?}",
                wanted.unwrap_or_default()
            ));
        }
        None => println!("no tool to call"),
    }
    let stats = cache.stats();
    println!("token requests: {}", stats.fetches);
    Ok(())
}

/// `--state-dir DIR` (or `--state-dir=DIR`), and the server URL: the last argument (the
/// conformance suite appends it).
fn arguments() -> Result<(Option<String>, String), String> {
    let mut args = std::env::args().skip(1);
    let (mut state_dir, mut server) = (None, None);
    while let Some(arg) = args.next() {
        if arg == "--state-dir" {
            state_dir = Some(args.next().ok_or_else(|| USAGE.to_owned())?);
        } else if let Some(dir) = arg.strip_prefix("--state-dir=") {
            state_dir = Some(dir.to_owned());
        } else {
            server = Some(arg);
        }
    }
    Ok((state_dir, server.ok_or_else(|| USAGE.to_owned())?))
}

/// The file store in `dir` (feature `file-store`).
#[cfg(feature = "file-store")]
fn open_store(dir: String) -> Result<Arc<dyn CredentialStore>, String> {
    let store = audience_cache::FileStore::open(dir).map_err(|e| e.to_string())?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "file-store"))]
fn open_store(_dir: String) -> Result<Arc<dyn CredentialStore>, String> {
    Err("--state-dir needs the feature file-store (cargo run --features file-store ...)".to_owned())
}

/// DPoP (RFC 9449): a key for the cache, so that a server that asks for DPoP-bound tokens gets
/// them; with `always`, the server's resource uses DPoP unasked (the server URL is taken as its
/// resource identifier, which is what most MCP servers' metadata says).
#[cfg(feature = "dpop")]
fn dpop(
    cache: audience_cache::TokenCacheBuilder,
    server: &Url,
    pem: Option<String>,
    always: bool,
    loopback: bool,
) -> Result<audience_cache::TokenCacheBuilder, String> {
    use audience_cache::{DpopKey, ResourceUri};
    let key = match pem {
        Some(pem) => DpopKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string())?,
        None => DpopKey::generate(),
    };
    eprintln!("DPoP key {}", key.thumbprint());
    let cache = cache.dpop_key(key);
    if !always {
        return Ok(cache);
    }
    let options = audience_cache::ParseOptions::strict().allow_insecure_http_on_loopback(loopback);
    let resource = ResourceUri::parse_with(server.as_str(), &options).map_err(|e| e.to_string())?;
    Ok(cache.use_dpop_for(resource))
}

fn headless() -> Result<Arc<dyn AuthorizationHandler>, String> {
    // Never listened on: the headless handler reads the redirect from the `Location` header.
    let redirect = Url::parse("http://127.0.0.1:33418/callback").map_err(|e| e.to_string())?;
    Ok(Arc::new(
        HeadlessAuthorization::new(redirect).map_err(|e| e.to_string())?,
    ))
}

/// How to get a client at the authorization server discovery will find.
async fn registrar(
    server: &Url,
    discovery: &Discovery,
    handler: &dyn AuthorizationHandler,
) -> Result<ClientRegistrar, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // A registered client is kept in the cache's credential store (--state-dir), with the
    // refresh tokens bound to it.
    let mut clients = ClientRegistrar::new()
        .dynamic_registration(DynamicRegistration::new(
            "audience-cache mcp_client example",
        ))
        .offline_access(true);
    if let Some(url) = var("CLIENT_METADATA_URL") {
        let url = Url::parse(&url).map_err(|e| format!("CLIENT_METADATA_URL: {e}"))?;
        clients = clients
            .client_metadata_document(url)
            .map_err(|e| e.to_string())?;
    }
    if let Some(context) = var("MCP_CONFORMANCE_CONTEXT") {
        let context: Value = serde_json::from_str(&context)
            .map_err(|e| format!("MCP_CONFORMANCE_CONTEXT is not JSON: {e}"))?;
        if let (Some(id), Some(secret)) = (
            context["client_id"].as_str(),
            context["client_secret"].as_str(),
        ) {
            // See the top of the file: the harness's issuer is the one its server names.
            let found = discovery
                .discover(server)
                .await
                .map_err(|e| e.to_string())?;
            let issuer = found.authorization_server();
            let mut client =
                PreRegistered::confidential(id, secret.into()).at_issuer(issuer.issuer().as_str());
            if issuer.metadata().supports_grant_type("authorization_code") {
                client = client.redirect_uri(handler.redirect_uri());
            }
            clients = clients.pre_registered(client);
        } else if let (Some(id), Some(pem)) = (
            context["client_id"].as_str(),
            context["private_key_pem"].as_str(),
        ) {
            clients = clients.pre_registered(private_key_jwt(server, discovery, id, pem).await?);
        }
    }
    if let (Some(id), Some(secret), Some(issuer)) =
        (var("CLIENT_ID"), var("CLIENT_SECRET"), var("ISSUER"))
    {
        let mut client = PreRegistered::confidential(id, secret.into()).at_issuer(issuer);
        if var("GRANT").as_deref() == Some("code") {
            client = client.redirect_uri(handler.redirect_uri());
        }
        clients = clients.pre_registered(client);
    }
    Ok(clients)
}

/// A client authenticating with `private_key_jwt` (feature `private-key-jwt`), at the issuer
/// discovery finds for the server (see the top of the file).
#[cfg(feature = "private-key-jwt")]
async fn private_key_jwt(
    server: &Url,
    discovery: &Discovery,
    id: &str,
    pem: &str,
) -> Result<PreRegistered, String> {
    let key = audience_cache::ClientAssertionKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?;
    let found = discovery
        .discover(server)
        .await
        .map_err(|e| e.to_string())?;
    Ok(PreRegistered::private_key_jwt(id, key)
        .at_issuer(found.authorization_server().issuer().as_str()))
}

#[cfg(not(feature = "private-key-jwt"))]
async fn private_key_jwt(
    _server: &Url,
    _discovery: &Discovery,
    _id: &str,
    _pem: &str,
) -> Result<PreRegistered, String> {
    Err("private_key_jwt needs the crate's private-key-jwt feature (cargo run --features private-key-jwt)".to_owned())
}

/// Arguments for a tool from its input schema: each required property gets a placeholder of
/// its type.
fn placeholder_arguments(schema: &Value) -> Value {
    let mut arguments = serde_json::Map::new();
    for name in schema["required"].as_array().into_iter().flatten() {
        let Some(name) = name.as_str() else { continue };
        let value = match schema["properties"][name]["type"].as_str() {
            Some("number" | "integer") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!("example"),
        };
        arguments.insert(name.to_owned(), value);
    }
    Value::Object(arguments)
}

/// A streamable-HTTP MCP session: JSON-RPC requests by POST, the session id carried along.
struct Session {
    http: AuthorizedClient,
    server: Url,
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
            .map_err(|e| format!("{method}: {e}"))?;
        if let Some(session) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.id = Some(session.to_owned());
        }
        let status = response.status();
        let challenge = challenge_of(&response);
        let is_sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method}: HTTP {}{challenge}", status.as_u16()));
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
            .map_err(|e| format!("{method}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{method}: HTTP {}", response.status().as_u16()));
        }
        Ok(())
    }
}

/// The server's `WWW-Authenticate`, for an error message: what it still asks for after the
/// crate's retries (escaped, shortened: it is the server's text).
fn challenge_of(response: &reqwest::Response) -> String {
    let values: Vec<String> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .escape_debug()
                .to_string()
        })
        .collect();
    if values.is_empty() {
        return String::new();
    }
    let mut text = values.join(", ");
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    format!(" (WWW-Authenticate: {text})")
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
