// The intra-doc links below spell out `crate::testing::`: this page also carries the doc
// comment on `pub mod testing` in lib.rs, and rustdoc then resolves every link from there.
//! Test servers: a scriptable OAuth 2.0 authorization server and protected resource servers,
//! for testing code that fetches and uses audience-bound tokens (feature `testing`).
//!
//! - [`AuthorizationServer`](crate::testing::AuthorizationServer) issues tokens through
//!   `client_credentials`, `authorization_code` with PKCE, `refresh_token` (rotated) and
//!   RFC 8693 token exchange. It honours RFC 8707 `resource` (the token's `aud` is the resource
//!   sent, by default), records every request for exact-count assertions, and can be scripted
//!   ([`Script`](crate::testing::Script)) to misbehave: latency, 5xx/429, malformed or oversized
//!   bodies, `invalid_target`, odd audiences, narrowed scopes, a `resource` in the token
//!   response, a wrong RFC 9207 `iss`, a wrong metadata issuer.
//! - [`ResourceServer`](crate::testing::ResourceServer) protects a path, answers RFC 6750 /
//!   RFC 9728 challenges, checks each token's audience and scope with the authorization server,
//!   and records which token (by [`fingerprint`](crate::testing::fingerprint)) reached which
//!   path, so a test can assert that a server never received another server's token. It can be
//!   scripted to redirect.
//!
//! Both run in one of two ways:
//!
//! - **Over a socket**: `builder().start().await` binds `127.0.0.1:0` and serves in a spawned
//!   task until the handle is dropped or
//!   [`shutdown`](crate::testing::AuthorizationServer::shutdown). URLs are
//!   `http://127.0.0.1:PORT/...`.
//! - **In process**: `builder().in_process()` opens no socket; a test (or a transport seam)
//!   passes `http::Request<Vec<u8>>` values to
//!   [`handle`](crate::testing::AuthorizationServer::handle), which runs the same router.
//!   Scripted latency is `tokio::time::sleep`, so on a paused runtime
//!   (`#[tokio::test(start_paused = true)]`) nothing really waits. The in-process names
//!   ([`IN_PROCESS_ISSUER`](crate::testing::IN_PROCESS_ISSUER),
//!   [`IN_PROCESS_ORIGIN`](crate::testing::IN_PROCESS_ORIGIN)) are `https` URLs that nothing
//!   resolves.
//!
//! The servers never log, and their records hold no token, code, verifier or secret. They are
//! for tests: tokens are HS256 JWTs (or opaque strings) with a random per-server key, clients
//! are configured up front, and `/authorize` approves without asking anyone.
//!
//! # In process, on paused time
//!
//! ```
//! use std::time::Duration;
//! use audience_cache::testing::{AuthorizationServer, Client, Failure};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = AuthorizationServer::builder()
//!     .client(Client::confidential("svc", "s3cret"))
//!     .script(|s| {
//!         s.latency = Duration::from_secs(30);
//!         s.fail_next(1, Failure::ServiceUnavailable);
//!     })
//!     .in_process();
//! let request = || {
//!     http::Request::post("/token")
//!         .header("content-type", "application/x-www-form-urlencoded")
//!         .body(
//!             b"grant_type=client_credentials&client_id=svc&client_secret=s3cret\
//!               &resource=https%3A%2F%2Frs.example%2Fmcp&scope=read"
//!                 .to_vec(),
//!         )
//! };
//! let started = tokio::time::Instant::now();
//! assert_eq!(server.handle(request()?).await.status(), 503);
//! let response = server.handle(request()?).await;
//! assert_eq!(response.status(), 200);
//! // Two 30 s latencies passed on the paused clock, in no real time.
//! assert_eq!(started.elapsed(), Duration::from_secs(60));
//!
//! let body: serde_json::Value = serde_json::from_slice(response.body())?;
//! let info = server.validate(body["access_token"].as_str().unwrap_or_default()).ok_or("valid")?;
//! assert_eq!(info.audiences, ["https://rs.example/mcp"]);
//! assert_eq!(info.scope.as_deref(), Some("read"));
//! assert_eq!(server.token_requests(), 2);
//! assert_eq!(server.requests()[1].resources, ["https://rs.example/mcp"]);
//! # Ok(())
//! # }
//! ```
//!
//! # Over a socket, with a resource server
//!
//! ```
//! use audience_cache::testing::{AuthorizationServer, Client, ResourceServer, fingerprint};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = AuthorizationServer::builder()
//!     .client(Client::confidential("svc", "s3cret"))
//!     .start()
//!     .await?;
//! let mcp = ResourceServer::builder(&auth).path("/mcp").start().await?;
//! let other = ResourceServer::builder(&auth).path("/api").start().await?;
//!
//! let http = reqwest::Client::new();
//! let body: serde_json::Value = http
//!     .post(auth.token_endpoint())
//!     .form(&[
//!         ("grant_type", "client_credentials"),
//!         ("client_id", "svc"),
//!         ("client_secret", "s3cret"),
//!         ("resource", mcp.resource()),
//!     ])
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! let token = body["access_token"].as_str().ok_or("a token")?;
//!
//! let ok = http.get(format!("{}/tools", mcp.url())).bearer_auth(token).send().await?;
//! assert_eq!(ok.status(), 200);
//! // The same token at another resource is refused: its aud is the first one.
//! let refused = http.get(other.url()).bearer_auth(token).send().await?;
//! assert_eq!(refused.status(), 401);
//!
//! assert_eq!(mcp.requests()[0].token_fingerprint, Some(fingerprint(token)));
//! assert_eq!(mcp.requests()[0].path, "/mcp/tools");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod assertion;
mod authorization_server;
mod authorize;
mod client;
mod dpop;
mod identity;
mod jwt;
mod records;
mod redirect;
mod register;
mod resource_dpop;
mod resource_server;
mod script;
mod server;
mod state;
mod token_endpoint;
mod wire;

#[cfg(test)]
mod tests;

pub use authorization_server::{
    AuthorizationServer, AuthorizationServerBuilder, IN_PROCESS_ISSUER,
};
pub use client::{Client, ClientAuthMethod};
pub use dpop::DpopProofRecord;
pub use jwt::fingerprint;
pub use records::{
    AuthorizationRequestRecord, RegistrationRecord, ResourceRequestRecord, TokenInfo,
    TokenRequestRecord,
};
pub use redirect::Redirect;
pub use resource_server::{
    IN_PROCESS_ORIGIN, ResourceScript, ResourceServer, ResourceServerBuilder,
};
pub use script::{
    AudienceStyle, AuthorizeOutcome, Failure, IssParameter, ResourceField, ResourcePolicy,
    ScopeField, Script, TokenFormat,
};
