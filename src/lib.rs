//! An OAuth 2.0 client-side token cache that keeps tokens apart by audience.
//!
//! A client that talks to many resource servers (MCP servers, APIs) must never send a token
//! meant for one of them to another. This crate keys every token by issuer, canonical resource
//! URI and scope set (plus the client id and an optional account), fetches tokens with the
//! RFC 8707 `resource` parameter, and before it hands a token out for a request it proves that
//! the token belongs to that request's URL.
//!
//! # The pipeline
//!
//! ```text
//! request URL ──▶ resource (which audience?) ──▶ cache key ──▶ cache (hit / single-flight fetch)
//!                                                                 │
//!                       token endpoint (grants, RFC 8707) ◀───────┘
//! token ──▶ audience check against the request URL ──▶ Authorization header (or a refusal)
//! ```
//!
//! The stages, each usable on its own:
//!
//! - [`ResourceUri`]: a resource identifier that can only exist validated, with a match key for
//!   comparisons and a wire form to send as `resource`.
//! - [`ResourceUri::covers`]: whether a request URL is inside a resource (same origin, path
//!   prefix on a segment boundary, exact query when the resource has one; ambiguous paths and
//!   userinfo refused).
//! - [`ScopeSet`]: scopes in canonical form.
//! - [`CacheKey`]: the one identity used for storage and for merging concurrent fetches.
//! - [`AudiencePolicy`]: the decision that runs before a token is attached: provenance always,
//!   a readable JWT `aud` as a deny-only second check.
//! - [`TokenCache`]: the cache. A miss fetches with the client's grant (client credentials,
//!   a refresh token from an authorization code grant with PKCE, or token exchange), always
//!   with `resource`; concurrent misses on one key make one request; a token in use is
//!   refreshed behind the callers when its refresh window opens; failures back off.
//! - (feature `redis`) `SharedLevel`: a second level on Redis behind the in-memory cache, for
//!   a fleet of processes: tokens sealed at rest under `SealingKey`s, one token request per
//!   key for the whole fleet, and a Redis outage that only means misses.
//! - [`CredentialStore`]: what must survive a restart (refresh tokens per grant, registered
//!   clients per issuer), given to [`TokenCacheBuilder::credential_store`]; in memory
//!   ([`MemoryCredentialStore`]) or (feature `file-store`) `FileStore`: sealed records in a
//!   per-user directory, with a lock per grant so that two processes never spend one rotated
//!   refresh token twice.
//! - [`AuthorizedClient`] and (feature `middleware`) `AudienceMiddleware`: reqwest with the
//!   decision before every send, redirects followed by the crate with a decision per hop, and
//!   one retry after `invalid_token` or `insufficient_scope`.
//! - [`Discovery`]: MCP discovery (RFC 9728 protected resource metadata from a 401, RFC 8414 /
//!   OpenID discovery), every URL checked before it is fetched and every document validated
//!   before it is used.
//! - [`ClientRegistrar`] and [`AuthorizationHandler`]: MCP authorization end to end, for a client
//!   with no credentials of its own at the server discovery found (a client ID metadata document
//!   or dynamic registration, in the MCP 2025-11-25 order after pre-registered clients), and a
//!   user's authorization through [`LoopbackListener`] or [`HeadlessAuthorization`].
//!
//! # Getting started
//!
//! Configure the client's registration at its authorization server and the resources, build
//! a [`TokenCache`], and send requests through an [`AuthorizedClient`] (see the README and
//! `examples/quickstart.rs`, which runs against the embedded servers of the `testing`
//! feature). Or, for an MCP server known only by its URL, give the client a [`Discovery`]
//! with [`AuthorizedClient::with_discovery`] and, where users authorize, an
//! [`AuthorizationHandler`] with [`AuthorizedClient::with_authorization`]
//! (`examples/mcp_client/main.rs`).
//!
//! # Errors
//!
//! Three families, by when they happen: [`ResourceError`] and [`ScopeError`] when a value is
//! parsed, [`BuildError`] when the cache is configured, and [`Error`] at run time, which says
//! whether trying again can help ([`Error::is_transient`], [`Error::retry_after`]) and carries
//! the [`Refusal`] when the audience decision said no. Every message names the resource,
//! issuer or endpoint concerned and what to do next; none contains a token or a secret.
//!
//! # Features
//!
//! None is on by default; each adds one capability and the dependencies it needs. On docs.rs
//! every item a feature adds carries its badge.
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `middleware` | `AudienceMiddleware`, a `reqwest_middleware::Middleware` that attaches audience-checked tokens |
//! | `testing` | `audience_cache::testing`: embedded, scriptable authorization and resource servers for testing code that uses the crate |
//! | `private-key-jwt` | `ClientAssertionKey`: `private_key_jwt` client authentication with an ES256 key (RFC 7523) |
//! | `redis` | `SharedLevel`: a fleet-wide second level on Redis, sealed at rest with XChaCha20-Poly1305 |
//! | `dpop` | `DpopKey`: DPoP (RFC 9449) sender-constrained tokens, one key per client registration, a fresh proof for every request that carries one, made by the call that makes the audience decision |
//! | `fuzzing` | `audience_cache::fuzzing`: the oracles the crate's fuzz targets assert, documented and kept stable for a downstream crate's own targets |
//! | `arbitrary` | `arbitrary::Arbitrary` for `ResourceUri`, `ScopeSet` and `CacheKey`, and hostile request URLs relative to a resource (with `fuzzing`) |
//! | `file-store` | `FileStore`: a [`CredentialStore`] in a per-user directory (refresh tokens and registered clients survive a restart), sealed with XChaCha20-Poly1305, locked per grant |
//! | `rmcp` | `McpHttpClient`: rmcp 3.11's streamable HTTP client transport, every request through the crate's request loop |
//!
//! # Versions
//!
//! The crate follows semantic versioning (before 1.0, a breaking change raises the minor
//! version); `CHANGELOG.md` lists every change a user can see. It builds with Rust 1.89 or
//! later (the `rust-version` of its manifest).
//!
//! # What the crate refuses
//!
//! Resource identifiers that are not https (http only on loopback, by an option named for
//! what it gives up), that carry a fragment or userinfo, a host in a non-canonical or
//! confusable form, port 0, dot segments, malformed or control-character escapes, whitespace,
//! control or invisible characters, or more than 2048 bytes. Request URLs with userinfo, or
//! whose path a server could route differently after decoding it. Tokens whose `aud` names
//! other URLs, unverifiable logical audiences (unless configured as aliases) and malformed
//! `aud` claims. Token-bearing requests to URLs no resource covers. No error message, log line
//! or `Debug` output contains a token.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod audience;
mod authorization;
mod cache;
pub mod challenge;
mod config;
pub mod discovery;
mod dpop;
mod error;
mod grant;
mod http;
mod key;
mod redirect_uri;
pub mod resource;
mod scope;
mod store;
mod token;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

/// The rules the crate follows, cited in its documentation and code as "rules §N": what is
/// canonical, what covers what, what is refused and why, with the RFC and MCP sections behind
/// each (the file `docs/rules.md` of the repository).
///
#[doc = include_str!("../docs/rules.md")]
pub mod rules {}

/// The README's examples are compiled as doctests. They show every feature's code as a reader
/// of the crate page sees it (no hidden lines), so they compile only with the features they
/// use: `cargo test --all-features`, the README's test command, runs them.
#[cfg(all(doctest, feature = "redis", feature = "file-store", feature = "rmcp"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Embedded OAuth 2.0 authorization and resource servers on 127.0.0.1 (or in process, with no
/// socket) for testing code that uses this crate; enabled by the `testing` feature.
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "middleware")]
pub use crate::http::AudienceMiddleware;
pub use crate::http::AuthorizedClient;
#[cfg(feature = "rmcp")]
pub use crate::http::McpHttpClient;
pub use audience::{AudienceMode, AudiencePolicy, Refusal, RefusalKind};
pub use authorization::{
    AuthorizationFuture, AuthorizationHandler, ClientRegistrar, ClientStore, DynamicRegistration,
    HeadlessAuthorization, LoopbackListener, MemoryClientStore, RegisteredClient, StoreError,
    StoreFuture,
};
#[cfg(feature = "redis")]
pub use cache::SharedLevel;
pub use cache::{
    AuthorizationHeaders, BearerToken, PendingAuthorization, Stats, TokenCache, TokenCacheBuilder,
};
#[cfg(feature = "dpop")]
pub use config::DpopKey;
#[cfg(feature = "private-key-jwt")]
pub use config::assertion::ClientAssertionKey;
pub use config::{
    AssertionSource, ClientAuth, ClientRegistration, Grant, IdentityProvider, PreRegistered,
    ResourceConfig,
};
pub use discovery::{Discovered, Discovery, DiscoveryError, DiscoveryOptions};
pub use error::{BuildError, Error, OAuthError};
pub use grant::SubjectToken;
pub use key::CacheKey;
pub use resource::{Coverage, CoverageRefusal, ParseOptions, ResourceError, ResourceUri};
pub use scope::{ScopeError, ScopeSet};
#[cfg(any(feature = "redis", feature = "file-store"))]
pub use store::SealingKey;
pub use store::{
    ClientRecord, CredentialStore, GrantId, GrantLock, MemoryCredentialStore, StoredRefreshToken,
};
#[cfg(feature = "file-store")]
pub use store::{FileStore, FileStoreError, FileStoreStats};
