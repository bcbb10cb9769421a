//! Helpers for the interop tests against oidc-provider (tests/interop/oidc-provider) and the
//! MCP SDK server (tests/interop/mcp-server).

// Each test binary uses part of these helpers.
#![allow(dead_code)]

pub mod browser;
pub mod mcp;
pub mod server;

use audience_cache::{ParseOptions, ResourceUri, ScopeSet};
use base64::Engine as _;
use serde_json::Value;

/// A resource identifier on loopback http (the tests never connect to it).
pub fn loopback(resource: &str) -> ResourceUri {
    ResourceUri::parse_with(
        resource,
        &ParseOptions::strict().allow_insecure_http_on_loopback(true),
    )
    .unwrap_or_else(|e| panic!("{resource}: {e}"))
}

pub fn scopes(scopes: &str) -> ScopeSet {
    ScopeSet::parse(scopes).unwrap_or_else(|e| panic!("{scopes:?}: {e}"))
}

/// The header and claims of a JWT, decoded here (not by the crate) and not verified.
pub fn jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "the access token is not a JWS compact JWT");
    let decode = |part: &str| -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("a JSON object")
    };
    (decode(parts[0]), decode(parts[1]))
}
