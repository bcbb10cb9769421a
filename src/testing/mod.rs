//! Test servers for code that uses this crate (feature `testing`).
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![allow(dead_code)] // The servers that use these building blocks come next.

mod client;
mod jwt;
mod script;
mod wire;

pub use client::{Client, ClientAuthMethod};
pub use jwt::fingerprint;
pub use script::{
    AudienceStyle, AuthorizeOutcome, Failure, IssParameter, ResourceField, ResourcePolicy,
    ScopeField, Script, TokenFormat,
};
