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
//!     cargo run --features rmcp --example mcp_client -- https://mcp.example.com/mcp
//! # No credentials: a client ID metadata document or dynamic registration, and the browser:
//! CLIENT_METADATA_URL=https://app.example.com/client.json \
//!     cargo run --features rmcp --example mcp_client -- https://mcp.example.com/mcp
//! # Authorize once: the registered client and the refresh token kept for the next run
//! # (feature `file-store`; the directory is made with mode 0700):
//! cargo run --features rmcp,file-store --example mcp_client -- \
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
//!   generated for each authorization server the client registers at, or with the one read
//!   from `DPOP_KEY_PEM` (a P-256 key in PKCS #8 PEM, so that several processes share tokens).
//!   `DPOP=1` uses DPoP for the server even unasked.
//!
//! It doubles as a client for the MCP conformance suite (`tests/conformance`): the suite
//! appends the server URL and sets `MCP_CONFORMANCE_SCENARIO`, `MCP_CONFORMANCE_PROTOCOL_VERSION`
//! (at 2026-07-28 and later the client starts with `server/discover` instead of `initialize`)
//! and, for scenarios with client
//! credentials, `MCP_CONFORMANCE_CONTEXT` (`{"client_id": …, "client_secret": …}`, or
//! `"private_key_pem"` for `private_key_jwt` with feature `private-key-jwt`; with
//! `"idp_id_token"`, `"idp_issuer"`, `"idp_token_endpoint"` and `"idp_client_id"` the client
//! uses enterprise-managed authorization, `Grant::IdJag`; a bare `"client_id"` with
//! `"valid_jwt"` is a workload using the JWT bearer grant, `Grant::JwtBearer`). The suite
//! starts its authorization servers on ports nobody can know in advance, so with that context
//! the issuer is the one discovery finds for the server: a test harness may do that, a real
//! client lists the issuers its credentials belong to (`ISSUER`).
//!
//! The protocol is rmcp's (the official Rust SDK: sessions, SSE streams and their resumption,
//! protocol-version negotiation); every HTTP request rmcp makes goes through the crate's
//! `McpHttpClient`, so each one gets its token after the audience decision (feature `rmcp`:
//! `cargo run --features rmcp --example mcp_client -- URL`). It accepts a form elicitation
//! with the defaults of the requested schema (a client with no user to ask), and waits for the
//! session's standalone stream before it calls a tool, since a server sends its elicitation
//! there (`listening.rs`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use audience_cache::{
    AssertionSource, AuthorizationHandler, AuthorizedClient, ClientRegistrar, CredentialStore,
    Discovery, DiscoveryOptions, DynamicRegistration, Grant, HeadlessAuthorization,
    IdentityProvider, LoopbackListener, McpHttpClient, PreRegistered, TokenCache,
};
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult,
    ElicitationAction, ElicitationCapability, FormElicitationCapability, Implementation,
    ProtocolVersion,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
};
use rmcp::{
    ClientHandler, ClientLifecycleMode, ClientServiceExt, ErrorData, RoleClient, ServiceExt,
};
use serde_json::{Value, json};
use url::Url;

mod listening;

use listening::{Listening, wait_for_standalone_stream};

const USAGE: &str = "usage: mcp_client [--state-dir DIR] <server-url>   (environment: see the top of examples/mcp_client/main.rs)";

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
    let client = Listening::new(McpHttpClient::new(http).map_err(|e| e.to_string())?);
    let standalone = client.standalone();
    let transport = StreamableHttpClientTransport::with_client(
        client,
        StreamableHttpClientTransportConfig::with_uri(server.as_str()),
    );
    let session = match protocol_without_initialize(var("MCP_CONFORMANCE_PROTOCOL_VERSION"))? {
        // MCP 2026-07-28 has no initialize handshake: `server/discover`, and the protocol
        // version in every request's `_meta` and `MCP-Protocol-Version` header (rmcp sets both).
        Some(version) => Client
            .serve_with_lifecycle(
                transport,
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![version],
                },
            )
            .await
            .map_err(|e| format!("server/discover: {e}"))?,
        None => Client
            .serve(transport)
            .await
            .map_err(|e| format!("initialize: {e}"))?,
    };
    if let Some(info) = session.peer_info() {
        let name = info.server_info.as_ref().map(|i| i.name.as_str());
        println!(
            "connected to {} (protocol {})",
            name.unwrap_or("(unnamed)"),
            info.protocol_version
        );
    }
    let tools = session
        .list_tools(Default::default())
        .await
        .map_err(|e| format!("tools/list: {e}"))?
        .tools;
    if let Some(resource) = cache.resource_for(&server) {
        println!("resource {} (sent as {})", resource.key(), resource.wire());
    }
    println!("{} tool(s):", tools.len());
    for tool in &tools {
        println!(
            "  {:<24} {}",
            tool.name,
            tool.description.as_deref().unwrap_or("")
        );
    }
    let wanted = var("TOOL");
    let tool = match &wanted {
        Some(name) => tools.iter().find(|t| t.name == name.as_str()),
        None => tools.first(),
    };
    match tool {
        Some(tool) => {
            // The server may ask for something during the call, on the standalone stream.
            wait_for_standalone_stream(standalone, Duration::from_secs(5)).await;
            let name = tool.name.to_string();
            let arguments = match var("TOOL_ARGUMENTS") {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| format!("TOOL_ARGUMENTS is not JSON: {e}"))?,
                None => placeholder_arguments(&Value::Object((*tool.input_schema).clone())),
            };
            let Value::Object(arguments) = arguments else {
                return Err("TOOL_ARGUMENTS is not a JSON object".to_owned());
            };
            let result = session
                .call_tool(CallToolRequestParams::new(name.clone()).with_arguments(arguments))
                .await
                .map_err(|e| format!("tools/call: {e}"))?;
            let content = serde_json::to_value(&result.content).unwrap_or_default();
            let text: Vec<&str> = content
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["text"].as_str())
                .collect();
            println!("called {name}: {}", text.join(" "));
            if result.is_error == Some(true) {
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
    // Ends the session (DELETE, through the crate like every other request).
    session.cancel().await.map_err(|e| e.to_string())?;
    let stats = cache.stats();
    println!("token requests: {}", stats.fetches);
    Ok(())
}

/// The MCP client's side of the protocol that rmcp leaves to it: who it is, and what it
/// answers to a server's elicitation.
#[derive(Clone)]
struct Client;

impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        let mut elicitation = ElicitationCapability::new();
        elicitation.form = Some(FormElicitationCapability::new());
        ClientConfig::new(
            ClientCapabilities::builder()
                .enable_elicitation_with(elicitation)
                .build(),
            Implementation::new(
                "audience-cache mcp_client example",
                env!("CARGO_PKG_VERSION"),
            ),
        )
        // The newest revision with an initialize handshake, the one the conformance suite and
        // today's servers speak.
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    /// Accepts a form with the defaults its schema gives (MCP 2025-11-25 elicitation, SEP-1034):
    /// there is no user here to ask. A URL elicitation is declined.
    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let ElicitRequestParams::FormElicitationParams {
            requested_schema, ..
        } = request
        else {
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        let schema = serde_json::to_value(&requested_schema).unwrap_or_default();
        let defaults: serde_json::Map<String, Value> = schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, property)| Some((name.clone(), property.get("default")?.clone())))
            .collect();
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(Value::Object(defaults)))
    }
}

/// The protocol version the conformance suite runs a scenario at
/// (`MCP_CONFORMANCE_PROTOCOL_VERSION`), when it is one without the initialize handshake
/// (2026-07-28 and later); `None` for the handshake's versions, which the client negotiates
/// itself.
fn protocol_without_initialize(
    requested: Option<String>,
) -> Result<Option<ProtocolVersion>, String> {
    let Some(requested) = requested else {
        return Ok(None);
    };
    let version = ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .find(|known| known.as_str() == requested)
        .ok_or_else(|| {
            format!("MCP_CONFORMANCE_PROTOCOL_VERSION={requested:?} is not a version rmcp knows")
        })?;
    Ok((!version.has_initialize()).then(|| version.clone()))
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
            if let Some(grant) = enterprise_grant(&context)? {
                client = client.grant(grant);
            } else if issuer.metadata().supports_grant_type("authorization_code") {
                client = client.redirect_uri(handler.redirect_uri());
            }
            clients = clients.pre_registered(client);
        } else if let (Some(id), Some(pem)) = (
            context["client_id"].as_str(),
            context["private_key_pem"].as_str(),
        ) {
            clients = clients.pre_registered(private_key_jwt(server, discovery, id, pem).await?);
        } else if let (Some(id), Some(jwt)) =
            (context["client_id"].as_str(), context["valid_jwt"].as_str())
        {
            // A workload: its platform token is the JWT bearer grant's assertion.
            let found = discovery
                .discover(server)
                .await
                .map_err(|e| e.to_string())?;
            let assertion = AssertionSource::value(jwt.into());
            clients = clients.pre_registered(
                PreRegistered::jwt_bearer(id, assertion)
                    .at_issuer(found.authorization_server().issuer().as_str()),
            );
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

/// Enterprise-managed authorization from the context: the user's ID token and the IdP that
/// exchanges it for an ID-JAG (a public client there), if the context has them.
fn enterprise_grant(context: &Value) -> Result<Option<Grant>, String> {
    let text = |name: &str| context[name].as_str();
    let Some(id_token) = text("idp_id_token") else {
        return Ok(None);
    };
    let (Some(issuer), Some(endpoint), Some(client_id)) = (
        text("idp_issuer"),
        text("idp_token_endpoint"),
        text("idp_client_id"),
    ) else {
        return Err(
            "the context has idp_id_token without idp_issuer, idp_token_endpoint and idp_client_id"
                .to_owned(),
        );
    };
    let endpoint = Url::parse(endpoint).map_err(|e| format!("idp_token_endpoint: {e}"))?;
    Ok(Some(Grant::IdJag {
        idp: IdentityProvider::new(issuer, endpoint, client_id),
        id_token: AssertionSource::value(id_token.into()),
    }))
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
    let cache = match pem {
        Some(pem) => {
            let key = DpopKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string())?;
            eprintln!("DPoP key {} (from DPOP_KEY_PEM)", key.thumbprint());
            cache.dpop_key(key)
        }
        // One key per authorization server, so that servers cannot link the client by it.
        None => cache.generate_dpop_keys(),
    };
    if !always {
        return Ok(cache);
    }
    let options = audience_cache::ParseOptions::strict().allow_insecure_http_on_loopback(loopback);
    let resource = ResourceUri::parse_with(server.as_str(), &options).map_err(|e| e.to_string())?;
    Ok(cache.use_dpop_for(resource))
}
