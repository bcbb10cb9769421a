//! MCP authorization end to end (MCP 2025-11-25 §4–§11): getting a client at an authorization
//! server that discovery found (pre-registered, a client ID metadata document, or dynamic
//! client registration), and having a user authorize through an [`AuthorizationHandler`].
//!
//! - `registration`: the client, in the MCP order, registering one where that is the way;
//! - `registration_response`: what a registration endpoint answers, checked;
//! - `client_store`: registered clients and where they are kept;
//! - `handler`: the [`AuthorizationHandler`] trait;
//! - `loopback` and `headless`: the two handlers the crate ships ([`LoopbackListener`],
//!   [`HeadlessAuthorization`]);
//! - `onboard`: the one trust rule (which client may be used at a discovered authorization
//!   server) and adding what discovery found to the cache;
//! - `migrate`: a discovered resource whose authorization server changed (RFC 9728 §5.2),
//!   moved by the same rules, the old server's tokens dropped.
//!
//! The rule every redirect URI follows lives below the cache, in the crate's `redirect_uri`
//! module, because the cache's builder and its completion of an authorization use it too.

mod client_store;
mod handler;
mod headless;
mod loopback;
mod migrate;
mod onboard;
mod registration;
mod registration_response;

pub use client_store::{ClientStore, MemoryClientStore, RegisteredClient, StoreError, StoreFuture};
pub use handler::{AuthorizationFuture, AuthorizationHandler};
pub use headless::HeadlessAuthorization;
pub use loopback::LoopbackListener;
#[cfg(feature = "fuzzing")]
pub(crate) use loopback::redirect_from_head;
pub(crate) use migrate::Recheck;
pub(crate) use onboard::Trust;
pub use registration::{ClientRegistrar, DynamicRegistration};
