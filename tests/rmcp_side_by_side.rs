//! The same two-resource sequence through rmcp's own authorization (`AuthClient` over an
//! `AuthorizationManager`, client credentials) and through `McpHttpClient`, against two rmcp
//! servers behind a bearer check and one embedded authorization server. It prints, per way,
//! the token requests made, the tokens sent to a server they were not for (from the servers'
//! records) and the time per tool call over loopback; it asserts the counts.
//!
//! `cargo test --all-features --release --test rmcp_side_by_side -- --nocapture` prints the
//! table BENCHMARKS.md quotes.

mod rmcp_support;

use std::time::{Duration, Instant};

use audience_cache::testing::AuthorizationServer;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{
    AuthClient, AuthorizationManager, ClientCredentialsConfig, OAuthState,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ServiceExt, service::ServiceError};
use rmcp_support::{McpServer, authorization_server, cache, client};

/// Tool calls timed per session (after the session's first).
const CALLS: u32 = 50;

struct Outcome {
    way: &'static str,
    token_requests: usize,
    wrong_audience: usize,
    /// Per server: the mean time of a tool call, or why the session failed.
    per_call: Vec<Result<Duration, String>>,
}

/// Calls `whoami` once, then `CALLS` times timed.
async fn time_calls(session: &RunningService<RoleClient, ()>) -> Result<Duration, ServiceError> {
    session
        .call_tool(CallToolRequestParams::new("whoami"))
        .await?;
    let started = Instant::now();
    for _ in 0..CALLS {
        session
            .call_tool(CallToolRequestParams::new("whoami"))
            .await?;
    }
    Ok(started.elapsed() / CALLS)
}

/// Tokens that reached a server they were not for, from the servers' records.
fn wrong_audience(servers: &[&McpServer]) -> usize {
    servers
        .iter()
        .map(|server| {
            server
                .seen()
                .iter()
                .filter(|s| s.authorization && s.audiences != Some(vec![server.resource.clone()]))
                .count()
        })
        .sum()
}

/// rmcp's `AuthorizationManager` after a client credentials grant for `resource`.
async fn rmcp_manager(discover_at: &str, resource: &str) -> AuthorizationManager {
    let mut state = OAuthState::new(discover_at, None).await.unwrap();
    state
        .authenticate_client_credentials(ClientCredentialsConfig::ClientSecret {
            client_id: "svc".to_owned(),
            client_secret: "s3cret".to_owned(),
            scopes: Vec::new(),
            resource: Some(resource.to_owned()),
        })
        .await
        .unwrap();
    state.into_authorization_manager().unwrap()
}

/// A reqwest client as rmcp's own transport builds it (no idle connections, see
/// `McpHttpClient::new`), so that both sides are timed alike.
fn rmcp_http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn rmcp_session(
    manager: &AuthClient<reqwest::Client>,
    server: &McpServer,
) -> Result<Duration, String> {
    let transport = StreamableHttpClientTransport::with_client(
        manager.clone(),
        StreamableHttpClientTransportConfig::with_uri(server.resource.as_str()),
    );
    let session = ().serve(transport).await.map_err(|e| e.to_string())?;
    let time = time_calls(&session).await.map_err(|e| e.to_string());
    let _ = session.cancel().await;
    time
}

/// rmcp's own authorization, one manager for the client (its one token slot): the natural
/// way to write a client of two servers with it.
async fn rmcp_one_manager(auth: &AuthorizationServer, a: &McpServer, b: &McpServer) -> Outcome {
    let before = auth.token_requests();
    let manager = rmcp_manager(&a.resource, &a.resource).await;
    let client = AuthClient::new(rmcp_http(), manager);
    let per_call = vec![
        rmcp_session(&client, a).await,
        rmcp_session(&client, b).await,
    ];
    Outcome {
        way: "rmcp AuthClient, one AuthorizationManager",
        token_requests: auth.token_requests() - before,
        wrong_audience: wrong_audience(&[a, b]),
        per_call,
    }
}

/// rmcp's own authorization, one manager per server, kept apart by the caller.
async fn rmcp_manager_per_server(
    auth: &AuthorizationServer,
    a: &McpServer,
    b: &McpServer,
) -> Outcome {
    let before = auth.token_requests();
    let mut per_call = Vec::new();
    for server in [a, b] {
        let manager = rmcp_manager(&server.resource, &server.resource).await;
        let client = AuthClient::new(rmcp_http(), manager);
        per_call.push(rmcp_session(&client, server).await);
    }
    Outcome {
        way: "rmcp AuthClient, one AuthorizationManager per server",
        token_requests: auth.token_requests() - before,
        wrong_audience: wrong_audience(&[a, b]),
        per_call,
    }
}

/// This crate: one cache, one `McpHttpClient`, servers known by URL only.
async fn this_transport(auth: &AuthorizationServer, a: &McpServer, b: &McpServer) -> Outcome {
    let before = auth.token_requests();
    let http = client(&cache(), auth);
    let mut per_call = Vec::new();
    for server in [a, b] {
        let session = ().serve(http.clone().transport(server.resource.as_str())).await;
        per_call.push(match session {
            Ok(session) => {
                let time = time_calls(&session).await.map_err(|e| e.to_string());
                let _ = session.cancel().await;
                time
            }
            Err(error) => Err(error.to_string()),
        });
    }
    Outcome {
        way: "audience-cache McpHttpClient, one TokenCache",
        token_requests: auth.token_requests() - before,
        wrong_audience: wrong_audience(&[a, b]),
        per_call,
    }
}

fn print(outcome: &Outcome) {
    let cell = |r: &Result<Duration, String>| match r {
        Ok(time) => format!("{:.0} µs", time.as_secs_f64() * 1e6),
        Err(error) => format!("failed ({})", error.chars().take(60).collect::<String>()),
    };
    println!(
        "| {} | {} | {} | {} | {} |",
        outcome.way,
        outcome.token_requests,
        outcome.wrong_audience,
        cell(&outcome.per_call[0]),
        cell(&outcome.per_call[1]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_two_resource_sequence_through_rmcp_auth_and_through_this_transport() {
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the start: {}", load().trim());
    println!(
        "| way | token requests | tokens sent with the wrong aud | per tool call at A | per tool call at B |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let auth = authorization_server().await;

    let (a, b) = (McpServer::rmcp(&auth).await, McpServer::rmcp(&auth).await);
    let shared = rmcp_one_manager(&auth, &a, &b).await;
    print(&shared);
    // rmcp's one slot hands A's token to B: B refuses it, and the session fails.
    assert_eq!(shared.token_requests, 1);
    assert!(shared.wrong_audience >= 1);
    assert!(shared.per_call[0].is_ok() && shared.per_call[1].is_err());

    let (a, b) = (McpServer::rmcp(&auth).await, McpServer::rmcp(&auth).await);
    let apart = rmcp_manager_per_server(&auth, &a, &b).await;
    print(&apart);
    assert_eq!((apart.token_requests, apart.wrong_audience), (2, 0));

    let (a, b) = (McpServer::rmcp(&auth).await, McpServer::rmcp(&auth).await);
    let ours = this_transport(&auth, &a, &b).await;
    print(&ours);
    assert_eq!((ours.token_requests, ours.wrong_audience), (2, 0));
    assert!(ours.per_call.iter().all(Result::is_ok));
    println!("load average at the end: {}", load().trim());
}
