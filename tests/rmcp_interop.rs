//! rmcp's client through `McpHttpClient` against real components: the MCP TypeScript SDK's
//! streamable-HTTP server (tests/interop/mcp-server: `requireBearerAuth`, JWTs verified with
//! `aud` = its own resource) and oidc-provider as the one authorization server. Counts and
//! audiences come from the servers' own records.

mod interop_support;

use std::sync::Arc;

use audience_cache::{
    AuthorizedClient, Discovery, DiscoveryOptions, McpHttpClient, PreRegistered, TokenCache,
};
use interop_support::mcp::McpServer;
use interop_support::server::AuthServer;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

fn client(cache: &TokenCache, issuer: &str) -> McpHttpClient {
    McpHttpClient::new(
        AuthorizedClient::new(cache.clone())
            .unwrap()
            .with_discovery(
                Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true))
                    .unwrap(),
                PreRegistered::client_secret_basic("cc-client", "cc-secret".into())
                    .at_issuer(issuer),
            ),
    )
    .unwrap()
}

fn cache() -> TokenCache {
    TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap()
}

/// The `aud` the server's `whoami` (or `reconnect`) saw on the token of this call.
fn audience_of(result: &rmcp::model::CallToolResult) -> Value {
    result
        .structured_content
        .as_ref()
        .map(|content| content["aud"].clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn concurrent_tool_calls_through_rmcp_make_one_token_request_per_resource() {
    let auth = AuthServer::start().await;
    let a = McpServer::start(auth.issuer(), "/mcp", "");
    let b = McpServer::start(auth.issuer(), "/mcp", "");
    let cache = cache();
    let http = client(&cache, auth.issuer());
    let (session_a, session_b) = tokio::join!(
        ().serve(http.clone().transport(a.resource())),
        ().serve(http.clone().transport(b.resource())),
    );
    let sessions = [Arc::new(session_a.unwrap()), Arc::new(session_b.unwrap())];
    const CALLS: usize = 16;
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let session = sessions[i % 2].clone();
        calls.push(tokio::spawn(async move {
            session
                .call_tool(CallToolRequestParams::new("whoami"))
                .await
                .map(|result| (i % 2, audience_of(&result)))
        }));
    }
    let resources = [a.resource(), b.resource()];
    for call in calls {
        let (server, aud) = call.await.unwrap().unwrap();
        assert_eq!(aud, json!(resources[server]));
    }

    // One token request per resource, each for exactly that resource.
    let stats = auth.stats().await;
    assert_eq!(stats.token_requests, 2);
    let mut asked = stats.resources.clone();
    asked.sort();
    let mut expected = resources.map(str::to_owned).to_vec();
    expected.sort();
    assert_eq!(asked, expected);
    // Every token each server received was for that server (the servers' own records).
    for (server, other) in [(&a, &b), (&b, &a)] {
        let requests = server.requests().await;
        let with_token: Vec<_> = requests.iter().filter(|r| r.bearer).collect();
        assert!(with_token.len() > CALLS / 2, "{requests:#?}");
        for request in with_token {
            assert_eq!(request.aud, Some(json!(server.resource())), "{request:?}");
            assert_ne!(request.aud, Some(json!(other.resource())));
        }
    }
}

#[tokio::test]
async fn a_stream_the_sdk_server_closes_is_resumed_with_a_token_for_that_server() {
    let auth = AuthServer::start().await;
    let server = McpServer::start_with(auth.issuer(), "/mcp", "", &[("MCP_RESUMABLE", "1")]);
    let cache = cache();
    let mcp = ().serve(client(&cache, auth.issuer()).transport(server.resource())).await.unwrap();
    // The tool closes its response stream and answers on the one the client resumes.
    let result = mcp
        .call_tool(CallToolRequestParams::new("reconnect"))
        .await
        .unwrap();
    assert_eq!(audience_of(&result), json!(server.resource()));
    let requests = server.requests().await;
    let resumed: Vec<_> = requests
        .iter()
        .filter(|r| r.last_event_id.is_some())
        .collect();
    assert!(!resumed.is_empty(), "no resumed stream: {requests:#?}");
    for request in resumed {
        assert_eq!(
            (request.method.as_str(), request.bearer, request.status),
            ("GET", true, Some(200)),
            "{request:?}"
        );
        assert_eq!(request.aud, Some(json!(server.resource())));
    }
    assert_eq!(auth.stats().await.token_requests, 1);
    mcp.cancel().await.unwrap();
}
