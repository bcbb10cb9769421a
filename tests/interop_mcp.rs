//! The crate against real components: the MCP TypeScript SDK's streamable-HTTP server
//! (`requireBearerAuth`, `mcpAuthMetadataRouter`, JWTs verified against the authorization
//! server's JWKS with `aud` = its own resource) and oidc-provider as the authorization server.
//! From a bare server URL and client credentials to tool calls, and from a bare server URL
//! and no credentials at all (dynamic registration at oidc-provider, a user's authorization) to
//! tool calls.

mod interop_support;

use std::sync::Arc;

use audience_cache::{
    AuthorizationFuture, AuthorizationHandler, AuthorizedClient, ClientRegistrar, ClientStore,
    Discovery, DiscoveryOptions, DynamicRegistration, MemoryClientStore, PreRegistered, TokenCache,
};
use interop_support::mcp::{McpServer, Reply, Session};
use interop_support::server::AuthServer;
use serde_json::json;
use url::Url;

fn client(cache: &TokenCache, issuer: &str) -> AuthorizedClient {
    AuthorizedClient::new(cache.clone())
        .unwrap()
        .with_discovery(
            Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true))
                .unwrap(),
            PreRegistered::client_secret_basic("cc-client", "cc-secret".into()).at_issuer(issuer),
        )
}

/// Calls the server's `whoami` tool, which answers with the token's audience: it must be
/// `resource`.
async fn whoami_is(session: &mut Session<'_>, resource: &str) {
    let Reply::Result(who) = session
        .call("tools/call", json!({ "name": "whoami", "arguments": {} }))
        .await
        .unwrap()
    else {
        panic!("whoami failed");
    };
    assert!(who.to_string().contains(resource), "{who}");
}

fn cache() -> TokenCache {
    TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn from_a_bare_server_url_to_tools_list() {
    let auth = AuthServer::start().await;
    let mcp = McpServer::start(auth.issuer(), "/mcp", "");
    let cache = cache();
    let http = client(&cache, auth.issuer());
    let mut session = Session::new(&http, mcp.resource());
    let init = session.initialize().await.unwrap();
    assert_eq!(init["protocolVersion"], "2025-11-25");
    let Reply::Result(tools) = session.call("tools/list", json!({})).await.unwrap() else {
        panic!("tools/list failed");
    };
    let names: Vec<_> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert!(names.contains(&json!("whoami")), "{names:?}");
    whoami_is(&mut session, mcp.resource()).await;

    // One token request, for the server's canonical resource, sent verbatim.
    let stats = auth.stats().await;
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.resources, [mcp.resource()]);
    // The server saw one unauthenticated probe; every other MCP request carried the token.
    let requests = mcp.requests().await;
    let to_mcp: Vec<_> = requests.iter().filter(|r| r.path == "/mcp").collect();
    assert!(!to_mcp[0].bearer && to_mcp[0].status == Some(401));
    assert!(
        to_mcp[1..]
            .iter()
            .all(|r| r.bearer && r.aud == Some(json!(mcp.resource())))
    );
}

#[tokio::test]
async fn insufficient_scope_causes_exactly_one_step_up() {
    let auth = AuthServer::start().await;
    // The metadata advertises mcp:read and mcp:write; writing needs files:write too.
    let mcp = McpServer::start(auth.issuer(), "/mcp", "tools/call:write_note=files:write");
    let cache = cache();
    let http = client(&cache, auth.issuer());
    let mut session = Session::new(&http, mcp.resource());
    session.initialize().await.unwrap();
    let reply = session
        .call(
            "tools/call",
            json!({ "name": "write_note", "arguments": { "text": "hi" } }),
        )
        .await
        .unwrap();
    assert!(matches!(reply, Reply::Result(_)), "{reply:?}");
    let stats = auth.stats().await;
    let scopes: Vec<_> = stats.requests.iter().map(|r| r.scope.clone()).collect();
    assert_eq!(
        scopes,
        [
            Some("mcp:read mcp:write".to_owned()),
            Some("files:write mcp:read mcp:write".to_owned())
        ]
    );
    let statuses: Vec<_> = mcp
        .requests()
        .await
        .iter()
        .filter_map(|r| r.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        1,
        "{statuses:?}"
    );
    // Remembered: the next write goes out with enough scope at once.
    let reply = session
        .call(
            "tools/call",
            json!({ "name": "write_note", "arguments": { "text": "again" } }),
        )
        .await
        .unwrap();
    assert!(matches!(reply, Reply::Result(_)), "{reply:?}");
    assert_eq!(auth.stats().await.token_requests, 2);
}

#[tokio::test]
async fn two_servers_never_receive_each_others_tokens() {
    let auth = AuthServer::start().await;
    let a = McpServer::start(auth.issuer(), "/mcp", "");
    let b = McpServer::start(auth.issuer(), "/mcp", "");
    let cache = cache();
    let http = client(&cache, auth.issuer());
    for _ in 0..2 {
        for server in [&a, &b] {
            let mut session = Session::new(&http, server.resource());
            session.initialize().await.unwrap();
            let reply = session.call("tools/list", json!({})).await.unwrap();
            assert!(matches!(reply, Reply::Result(_)), "{reply:?}");
        }
    }
    assert_eq!(auth.stats().await.token_requests, 2);
    for (server, other) in [(&a, &b), (&b, &a)] {
        for request in server.requests().await.iter().filter(|r| r.bearer) {
            assert_eq!(request.aud, Some(json!(server.resource())));
            assert_ne!(request.aud, Some(json!(other.resource())));
        }
    }
    // And a token for A, handed to B's URL, is refused before anything is sent.
    let a_url = url::Url::parse(a.resource()).unwrap();
    let b_url = url::Url::parse(b.resource()).unwrap();
    let resource_a = cache.resource_for(&a_url).unwrap();
    let token_a = cache
        .token(&resource_a, &audience_cache::ScopeSet::empty())
        .await
        .unwrap();
    assert!(token_a.header_for(&b_url).is_err());
}

/// The user, in a browser: logs in and consents at oidc-provider (automatic in `server.mjs`),
/// and comes back to the redirect URI.
#[derive(Debug)]
struct Browser {
    redirect_uri: Url,
}

impl AuthorizationHandler for Browser {
    fn redirect_uri(&self) -> Url {
        self.redirect_uri.clone()
    }

    fn authorize<'a>(&'a self, url: &'a Url) -> AuthorizationFuture<'a> {
        Box::pin(
            async move { Ok(interop_support::browser::authorize(url, &self.redirect_uri).await) },
        )
    }
}

#[tokio::test]
async fn with_no_credentials_the_client_registers_and_a_user_authorizes() {
    let auth = AuthServer::start().await;
    let mcp = McpServer::start(auth.issuer(), "/mcp", "");
    let store = Arc::new(MemoryClientStore::default());
    let clients = ClientRegistrar::new().dynamic_registration(
        DynamicRegistration::new("audience-cache interop").store(store.clone()),
    );
    let http = AuthorizedClient::new(cache())
        .unwrap()
        .with_discovery(
            Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true))
                .unwrap(),
            clients,
        )
        .with_authorization(Arc::new(Browser {
            redirect_uri: Url::parse("http://127.0.0.1:53682/callback").unwrap(),
        }));
    let mut session = Session::new(&http, mcp.resource());
    session.initialize().await.unwrap();
    whoami_is(&mut session, mcp.resource()).await;

    // One client registered at oidc-provider and kept; one code exchanged, for the server's
    // resource, with the registered client's secret.
    let registered = store.load(auth.issuer()).await.unwrap().unwrap();
    assert_eq!(
        registered.token_endpoint_auth_method(),
        "client_secret_basic"
    );
    assert!(registered.has_secret());
    let stats = auth.stats().await;
    assert_eq!(stats.token_requests, 1);
    let request = &stats.requests[0];
    assert_eq!(
        (
            request.grant_type.as_str(),
            request.client_auth.as_str(),
            request.status
        ),
        ("authorization_code", "client_secret_basic", 200)
    );
    assert_eq!(request.resource.as_deref(), Some(mcp.resource()));
    // Every MCP request after the probe carried a token for exactly this server.
    let requests = mcp.requests().await;
    let to_mcp: Vec<_> = requests.iter().filter(|r| r.path == "/mcp").collect();
    assert!(!to_mcp[0].bearer);
    assert!(
        to_mcp[1..]
            .iter()
            .all(|r| r.bearer && r.aud == Some(json!(mcp.resource())))
    );
}
