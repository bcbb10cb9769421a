//! Discovery at its edges, against small servers on 127.0.0.1 that serve exactly the documents
//! each case needs: MCP 2025-03-26 servers (no protected resource metadata; the origin as the
//! authorization server, with metadata or the default endpoints), and metadata that a challenge
//! names at a location of the server's choosing.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get, post};
use serde_json::json;
use tokio::net::TcpListener;
use url::Url;

use audience_cache::{Discovered, Discovery, DiscoveryError, DiscoveryOptions, Error};

/// Serves `routes(origin)` on 127.0.0.1:0; returns the origin (`http://127.0.0.1:PORT`).
async fn serve(routes: impl FnOnce(String) -> Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = routes(origin.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    origin
}

fn options() -> DiscoveryOptions {
    DiscoveryOptions::strict().allow_insecure_http_on_loopback(true)
}

/// `GET` answered 401 as an MCP server answers a request without a token, with `challenge`
/// as its `WWW-Authenticate`.
fn unauthorized(challenge: impl Into<String>) -> MethodRouter {
    let challenge = challenge.into();
    get(move || {
        let challenge = challenge.clone();
        async move {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
                "{}",
            )
                .into_response()
        }
    })
}

async fn discover(origin: &str) -> Result<Discovered, Error> {
    discover_with(origin, options()).await
}

async fn discover_with(origin: &str, options: DiscoveryOptions) -> Result<Discovered, Error> {
    Discovery::new(options)
        .unwrap()
        .discover(&Url::parse(&format!("{origin}/mcp")).unwrap())
        .await
}

#[tokio::test]
async fn a_2025_03_26_server_without_metadata_gets_the_default_endpoints() {
    let origin =
        serve(|_| Router::new().route("/mcp", unauthorized(r#"Bearer error="invalid_token""#)))
            .await;
    let found = discover(&origin).await.unwrap();
    assert!(found.is_2025_03_26_fallback());
    let server = found.authorization_server();
    assert_eq!(server.issuer().as_str(), origin);
    assert_eq!(server.token_endpoint().as_str(), format!("{origin}/token"));
    assert_eq!(
        server.authorization_endpoint().map(Url::as_str),
        Some(format!("{origin}/authorize").as_str())
    );
    assert_eq!(
        server.registration_endpoint().map(Url::as_str),
        Some(format!("{origin}/register").as_str())
    );
    // 2025-03-26 made PKCE mandatory: the code grant may go ahead.
    assert!(server.require_pkce_s256().is_ok());
    // The resource is the server URL itself.
    assert_eq!(found.resource().wire(), format!("{origin}/mcp"));
    assert!(found.scopes().is_empty());
}

#[tokio::test]
async fn a_2025_03_26_server_with_metadata_at_its_origin_uses_it() {
    let origin = serve(|origin| {
        let metadata = json!({
            "issuer": origin,
            "authorization_endpoint": format!("{origin}/oauth/authorize"),
            "token_endpoint": format!("{origin}/oauth/token"),
            "code_challenge_methods_supported": ["S256"],
        });
        Router::new()
            .route("/mcp", unauthorized(r#"Bearer scope="files:read""#))
            .route(
                "/.well-known/oauth-authorization-server",
                get(move || async move { axum::Json(metadata) }),
            )
    })
    .await;
    let found = discover(&origin).await.unwrap();
    assert!(found.is_2025_03_26_fallback());
    let server = found.authorization_server();
    assert_eq!(
        server.token_endpoint().as_str(),
        format!("{origin}/oauth/token")
    );
    assert_eq!(server.registration_endpoint(), None);
    // The challenge's scope is still the first choice.
    assert_eq!(found.scopes().as_str(), "files:read");
}

/// What @modelcontextprotocol/conformance 0.1.16's `2025-03-26-oauth-metadata-backcompat`
/// serves: metadata at the origin naming another issuer. RFC 8414 §3.3 forbids using it.
#[tokio::test]
async fn origin_metadata_that_names_another_issuer_is_refused() {
    let origin = serve(|origin| {
        let metadata = json!({
            "issuer": format!("{origin}/oauth"),
            "token_endpoint": format!("{origin}/oauth/token"),
        });
        Router::new().route("/mcp", unauthorized("Bearer")).route(
            "/.well-known/oauth-authorization-server",
            get(move || async move { axum::Json(metadata) }),
        )
    })
    .await;
    let error = discover(&origin).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Discovery(DiscoveryError::IssuerMismatch { .. })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_2025_03_26_fallback_can_be_turned_off() {
    let origin = serve(|_| Router::new().route("/mcp", unauthorized("Bearer"))).await;
    let error = discover_with(&origin, options().allow_2025_03_26_fallback(false))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Discovery(DiscoveryError::NotFound {
                document: "protected resource metadata",
                ..
            })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_challenge_naming_a_missing_document_is_broken_not_old() {
    let origin = serve(|origin| {
        let challenge: &'static str = Box::leak(
            format!(r#"Bearer resource_metadata="{origin}/meta/missing.json""#).into_boxed_str(),
        );
        Router::new().route("/mcp", unauthorized(challenge))
    })
    .await;
    let error = discover(&origin).await.unwrap_err();
    assert!(
        matches!(error, Error::Discovery(DiscoveryError::NotFound { .. })),
        "{error:?}"
    );
}

/// Serves `/mcp` answering 401 with a challenge naming `/custom/prm.json`, whose `resource` is
/// `resource(origin)`.
async fn custom_location(resource: fn(&str) -> String) -> String {
    serve(move |origin| {
        let challenge = format!(r#"Bearer resource_metadata="{origin}/custom/prm.json""#);
        let document = json!({
            "resource": resource(&origin),
            "authorization_servers": [format!("{origin}/as")],
        });
        let metadata = json!({
            "issuer": format!("{origin}/as"),
            "token_endpoint": format!("{origin}/as/token"),
        });
        Router::new()
            .route("/mcp", unauthorized(challenge))
            .route(
                "/custom/prm.json",
                get(move || async move { axum::Json(document) }),
            )
            .route(
                "/.well-known/oauth-authorization-server/as",
                get(move || async move { axum::Json(metadata) }),
            )
            .route("/as/token", post(|| async { StatusCode::BAD_REQUEST }))
    })
    .await
}

#[tokio::test]
async fn a_challenge_may_name_metadata_anywhere_on_the_origin_for_exactly_the_url() {
    let origin = custom_location(|origin| format!("{origin}/mcp")).await;
    let found = discover(&origin).await.unwrap();
    assert!(!found.is_2025_03_26_fallback());
    assert_eq!(found.resource().wire(), format!("{origin}/mcp"));
    assert_eq!(
        found.authorization_server().issuer().as_str(),
        format!("{origin}/as")
    );
}

#[tokio::test]
async fn metadata_elsewhere_may_not_claim_more_than_the_url() {
    // The whole origin, from a document that is not the origin's own well-known one.
    let origin = custom_location(|origin| origin.to_owned()).await;
    let error = discover(&origin).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Discovery(DiscoveryError::MetadataLocation { .. })
        ),
        "{error:?}"
    );
}
