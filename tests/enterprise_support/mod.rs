//! What the enterprise-managed authorization tests share: the IdP and the authorization
//! server in process, the client registered at both, and hostile IdP answers.

// Each test file uses part of this module.
#![allow(dead_code)]

use audience_cache::testing::{AuthorizationServer, Client, Failure};
use audience_cache::{AssertionSource, ClientRegistration, Grant, IdentityProvider, TokenCache};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::support::*;

pub const IDP: &str = "https://idp.in-process.test";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const ID_JAG_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// The user signed in at the IdP.
pub const USER: &str = "alice@example.com";

/// The IdP (the client `svc` is public there) and the MCP authorization server (`svc` is
/// confidential there), which trusts the IdP's ID-JAGs.
pub fn servers() -> (AuthorizationServer, AuthorizationServer) {
    let idp = AuthorizationServer::builder()
        .client(Client::public(SVC))
        .in_process_at(IDP);
    let auth = AuthorizationServer::builder()
        .client(Client::confidential(SVC, SECRET))
        .in_process();
    auth.trust_assertions_from(&idp);
    (auth, idp)
}

pub fn identity_provider() -> IdentityProvider {
    IdentityProvider::new(IDP, url(&format!("{IDP}/token")), SVC)
}

pub fn registration(id_token: AssertionSource) -> ClientRegistration {
    confidential().grant(Grant::IdJag {
        idp: identity_provider(),
        id_token,
    })
}

pub fn cache(auth: &AuthorizationServer, idp: &AuthorizationServer, id_token: &str) -> TokenCache {
    cache_with(
        auth,
        idp,
        registration(AssertionSource::value(secret(id_token))),
    )
}

pub fn cache_with(
    auth: &AuthorizationServer,
    idp: &AuthorizationServer,
    registration: ClientRegistration,
) -> TokenCache {
    TokenCache::builder()
        .in_process_servers(&[auth, idp])
        .client(registration)
        .resource(config(MCP).scopes(scopes("mcp:read")))
        .build()
        .unwrap()
}

pub fn mcp_url() -> url::Url {
    url(&format!("{MCP}/tools"))
}

/// An IdP answer with `id_jag` as the token (and RFC 8693 members).
pub fn idp_answers(idp: &AuthorizationServer, body: serde_json::Value) {
    idp.script(|s| {
        s.fail_next(
            1,
            Failure::Answer {
                status: 200,
                content_type: Some("application/json".to_owned()),
                body: body.to_string(),
            },
        )
    });
}

pub fn forged(header: serde_json::Value, claims: &str) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

pub fn id_jag_answer(jwt: &str, issued_token_type: &str) -> serde_json::Value {
    json!({
        "access_token": jwt,
        "issued_token_type": issued_token_type,
        "token_type": "N_A",
        "expires_in": 300,
    })
}
