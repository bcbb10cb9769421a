//! An rmcp client that knows only an MCP server's URL: rmcp speaks MCP, and every request it
//! makes goes through the crate (feature `rmcp`), which discovers the server's authorization
//! server from its 401, registers a client there, takes the user through the browser once, and
//! attaches a token for exactly this server to each request. It lists the tools and calls the
//! first one.
//!
//! ```sh
//! cargo run --features rmcp --example rmcp_client -- https://mcp.example.com/mcp
//! # a development server on plain http on this machine:
//! ALLOW_HTTP_LOOPBACK=1 cargo run --features rmcp --example rmcp_client -- http://127.0.0.1:8000/mcp
//! ```

use std::sync::Arc;

use audience_cache::{
    AuthorizedClient, ClientRegistrar, Discovery, DiscoveryOptions, DynamicRegistration,
    LoopbackListener, McpHttpClient, TokenCache,
};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: rmcp_client <server-url>")?;
    // Plain http only on loopback, and only when asked for: one switch, on the cache.
    let loopback = std::env::var("ALLOW_HTTP_LOOPBACK").is_ok_and(|v| v == "1");
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(loopback)
        .build()?;
    let clients = ClientRegistrar::new()
        .dynamic_registration(DynamicRegistration::new("rmcp_client example"));
    let browser = LoopbackListener::bind(0).await?.open_browser(true);
    let http = AuthorizedClient::new(cache.clone())?
        .with_discovery(Discovery::new(DiscoveryOptions::strict())?, clients)
        .with_authorization(Arc::new(browser));

    // From here on it is rmcp: the transport is the crate's, the protocol rmcp's.
    let mcp = ().serve(McpHttpClient::new(http)?.transport(url)).await?;
    let tools = mcp.list_tools(Default::default()).await?.tools;
    for tool in &tools {
        println!(
            "{:<24} {}",
            tool.name,
            tool.description.as_deref().unwrap_or("")
        );
    }
    if let Some(tool) = tools.first() {
        let result = mcp
            .call_tool(CallToolRequestParams::new(tool.name.clone()))
            .await?;
        println!("{}: {}", tool.name, serde_json::to_string(&result.content)?);
    }
    mcp.cancel().await?;
    println!("token requests: {}", cache.stats().fetches);
    Ok(())
}
