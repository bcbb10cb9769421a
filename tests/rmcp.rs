//! rmcp's streamable HTTP client over the crate (feature `rmcp`): every request rmcp makes —
//! the POSTs of messages, the GET of an SSE stream and of a resumed one, the DELETE of the
//! session — goes through the crate's request loop, against rmcp's own server behind a bearer
//! check. Counts come from the servers' records.

mod rmcp_support;

use std::sync::Arc;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::post;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp_support::{McpServer, authorization_server, cache, client, eventually};
use serde_json::json;

fn text_of(result: &rmcp::model::CallToolResult) -> String {
    serde_json::to_value(&result.content).unwrap()[0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_bare_server_url_is_discovered_and_every_request_carries_a_token_for_it() {
    let auth = authorization_server().await;
    let server = McpServer::rmcp(&auth).await;
    let cache = cache();
    let mcp = ().serve(client(&cache, &auth).transport(server.resource.as_str())).await.unwrap();
    let tools = mcp.list_tools(Default::default()).await.unwrap();
    let names: Vec<_> = tools.tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["whoami", "echo"]);
    let arguments = json!({ "text": "hello" }).as_object().cloned().unwrap();
    let result = mcp
        .call_tool(CallToolRequestParams::new("echo").with_arguments(arguments))
        .await
        .unwrap();
    assert_eq!(text_of(&result), "hello");
    mcp.cancel().await.unwrap();

    // One token request, for exactly this server.
    assert_eq!(auth.token_requests(), 1);
    assert_eq!(auth.requests()[0].resources, [server.resource.as_str()]);
    // The first POST was discovery's probe (no token, 401); every other request carried a
    // token whose aud is this server, the session's DELETE included.
    eventually(|| server.seen().iter().any(|s| s.method == "DELETE")).await;
    let seen = server.seen();
    assert_eq!(
        (
            seen[0].method.as_str(),
            seen[0].authorization,
            seen[0].status
        ),
        ("POST", false, 401)
    );
    assert!(seen.len() >= 5, "{seen:#?}");
    for request in &seen[1..] {
        assert_eq!(
            request.audiences,
            Some(vec![server.resource.clone()]),
            "{request:?}"
        );
    }
    let methods: Vec<_> = seen[1..].iter().map(|s| s.method.as_str()).collect();
    assert!(methods.contains(&"GET"), "{methods:?}");
}

#[tokio::test]
async fn concurrent_tool_calls_at_two_servers_make_one_token_request_each() {
    let auth = authorization_server().await;
    let a = McpServer::rmcp(&auth).await;
    let b = McpServer::rmcp(&auth).await;
    let cache = cache();
    let http = client(&cache, &auth);
    // Both sessions start at once, each with its first burst of calls: the token requests are
    // merged per resource, never across them.
    let (session_a, session_b) = tokio::join!(
        ().serve(http.clone().transport(a.resource.as_str())),
        ().serve(http.clone().transport(b.resource.as_str())),
    );
    let sessions = [Arc::new(session_a.unwrap()), Arc::new(session_b.unwrap())];
    let mut calls = Vec::new();
    for i in 0..16 {
        let session = sessions[i % 2].clone();
        calls.push(tokio::spawn(async move {
            session
                .call_tool(CallToolRequestParams::new("whoami"))
                .await
                .map(|r| text_of(&r))
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), "called whoami");
    }
    assert_eq!(auth.token_requests(), 2);
    let mut resources: Vec<_> = auth
        .requests()
        .iter()
        .flat_map(|r| r.resources.clone())
        .collect();
    resources.sort();
    let mut expected = vec![a.resource.clone(), b.resource.clone()];
    expected.sort();
    assert_eq!(resources, expected);
    for server in [&a, &b] {
        let seen = server.seen();
        let with_token: Vec<_> = seen.iter().filter(|s| s.authorization).collect();
        assert!(with_token.len() >= 10, "{seen:#?}");
        for request in with_token {
            assert_eq!(request.audiences, Some(vec![server.resource.clone()]));
            assert!((200..300).contains(&request.status), "{request:?}");
        }
    }
}

#[tokio::test]
async fn a_token_handed_in_by_rmcp_is_refused_before_anything_is_sent() {
    let auth = authorization_server().await;
    let server = McpServer::rmcp(&auth).await;
    let cache = cache();
    let config = StreamableHttpClientTransportConfig::with_uri(server.resource.as_str())
        .auth_header("a-token-from-elsewhere");
    let transport = StreamableHttpClientTransport::with_client(client(&cache, &auth), config);
    let error = ().serve(transport).await.unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(text.contains("auth_header"), "{text}");
    assert!(!text.contains("a-token-from-elsewhere"), "{text}");
    assert_eq!(server.seen(), []);
    assert_eq!(auth.token_requests(), 0);
}

#[tokio::test]
async fn a_resumed_stream_gets_its_token_through_the_same_decision() {
    let auth = authorization_server().await;
    let server = McpServer::resumable(&auth).await;
    // The server revokes the session's token before the stream is resumed.
    server.refuse_resumes(1);
    let cache = cache();
    let mcp = ().serve(client(&cache, &auth).transport(server.resource.as_str())).await.unwrap();
    let result = mcp
        .call_tool(CallToolRequestParams::new("slow"))
        .await
        .unwrap();
    assert_eq!(text_of(&result), "resumed");

    // The resuming GET went out with the token for this server, was refused as invalid, and
    // went out again with a new token from a second token request: the loop's retry, not
    // rmcp's reconnection.
    let resumes: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.last_event_id.is_some())
        .collect();
    let resource = Some(vec![server.resource.clone()]);
    assert_eq!(resumes.len(), 2, "{resumes:#?}");
    for (resume, status) in resumes.iter().zip([401, 200]) {
        assert_eq!(resume.method, "GET");
        assert_eq!(resume.last_event_id.as_deref(), Some("e1"));
        assert_eq!(resume.audiences, resource);
        assert_eq!(resume.status, status);
    }
    assert_eq!(auth.token_requests(), 2);
    assert!(
        auth.requests()
            .iter()
            .all(|r| r.resources == [server.resource.clone()])
    );
    drop(mcp);
}

#[tokio::test]
async fn a_redirect_of_a_message_to_another_server_is_refused_and_nothing_reaches_it() {
    let auth = authorization_server().await;
    let other = McpServer::rmcp(&auth).await;
    let target = other.resource.clone();
    // The server answers every message with a 307 to another origin: following it would
    // replay the message (and its session id) there.
    let server = McpServer::serve(&auth, move |path| {
        Router::new().route(
            path,
            post(move || async move {
                (
                    http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", target.clone())],
                )
            }),
        )
    })
    .await;
    let cache = cache();
    let error =
        ().serve(client(&cache, &auth).transport(server.resource.as_str()))
            .await
            .unwrap_err();
    let text = format!("{error:?}");
    assert!(text.contains("Redirect"), "{text}");
    assert_eq!(other.seen(), []);
    // The message went once, with the token for this server, and was not followed.
    let with_token: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.authorization)
        .collect();
    assert_eq!(with_token.len(), 1, "{with_token:#?}");
    assert_eq!(with_token[0].status, 307);
    assert_eq!(with_token[0].audiences, Some(vec![server.resource.clone()]));
}

#[tokio::test]
async fn the_transports_response_limits_are_enforced_before_parsing() {
    let auth = authorization_server().await;
    // A valid answer to initialize, 4 KiB long.
    let json = json!({ "jsonrpc": "2.0", "id": 0, "result": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "serverInfo": { "name": "large", "version": "1" },
        "instructions": "x".repeat(4096)
    } })
    .to_string();
    let sse = format!("data: {json}\n\n");
    for (content_type, body) in [("application/json", json), ("text/event-stream", sse)] {
        let server = McpServer::serve(&auth, move |path| {
            Router::new().route(
                path,
                post(move |request: axum::body::Bytes| async move {
                    // Only initialize is answered; the notification after it is accepted.
                    if !request.starts_with(b"{\"jsonrpc\":\"2.0\",\"id\"") {
                        return http::StatusCode::ACCEPTED.into_response();
                    }
                    ([("content-type", content_type)], body).into_response()
                }),
            )
        })
        .await;
        let connect = |limit: usize| {
            let config = StreamableHttpClientTransportConfig::with_uri(server.resource.as_str())
                .max_json_response_size(limit)
                .max_sse_event_size(limit);
            let transport =
                StreamableHttpClientTransport::with_client(client(&cache(), &auth), config);
            ().serve(transport)
        };
        // Within the limit the answer is taken; 1 KiB refuses it.
        let session = connect(8192).await.unwrap();
        assert_eq!(
            session
                .peer_info()
                .unwrap()
                .instructions
                .as_deref()
                .map(str::len),
            Some(4096)
        );
        drop(session);
        let error = connect(1024).await.unwrap_err();
        let text = format!("{error:?}");
        if content_type == "application/json" {
            assert!(text.contains("ResponseBodyTooLarge"), "{text}");
        }
    }
}
