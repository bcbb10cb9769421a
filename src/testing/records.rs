//! What the servers saw and what a token means. Records never hold a token, code, verifier or
//! secret: only whether one was presented, or a [`fingerprint`](super::fingerprint).

use std::time::SystemTime;

use axum::http::{Method, StatusCode};

use super::client::ClientAuthMethod;

/// One request to the token endpoint, recorded when it arrives (so it counts while it is
/// still waiting out its [`latency`](super::Script::latency)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenRequestRecord {
    /// The `grant_type` parameter as sent.
    pub grant_type: Option<String>,
    /// The client id as presented (Basic credentials or `client_id`), whether or not it
    /// authenticated.
    pub client_id: Option<String>,
    /// The client authentication method the request used, if any.
    pub client_auth: Option<ClientAuthMethod>,
    /// Every `resource` parameter (RFC 8707), in order.
    pub resources: Vec<String>,
    /// Every `audience` parameter (RFC 8693 token exchange), in order.
    pub audiences: Vec<String>,
    /// The `scope` parameter as sent.
    pub scope: Option<String>,
    /// Whether a `refresh_token` was presented.
    pub refresh_token_presented: bool,
    /// Whether an authorization `code` was presented.
    pub code_presented: bool,
    /// Whether a PKCE `code_verifier` was presented.
    pub code_verifier_presented: bool,
    /// Whether an RFC 8693 `subject_token` was presented.
    pub subject_token_presented: bool,
    /// The [`fingerprint`](super::fingerprint) of the `subject_token`, if one was presented:
    /// which subject a token exchange was for.
    pub subject_token_fingerprint: Option<String>,
    /// The `subject_token_type` parameter (RFC 8693 §2.1) as sent.
    pub subject_token_type: Option<String>,
    /// The `requested_token_type` parameter (RFC 8693 §2.1) as sent.
    pub requested_token_type: Option<String>,
    /// The [`fingerprint`](super::fingerprint) of the JWT bearer grant's `assertion`
    /// (RFC 7523 §2.1), if one was presented.
    pub assertion_fingerprint: Option<String>,
    /// The status of the response; `None` while the request is still being handled.
    pub status: Option<StatusCode>,
    /// The OAuth `error` code of the response, if it was an error response this server
    /// produced (scripted failures without an OAuth body leave it `None`).
    pub error: Option<String>,
    /// The request's DPoP proof (RFC 9449 §5), if it carried one.
    pub dpop: Option<super::DpopProofRecord>,
}

/// One request to `/authorize`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizationRequestRecord {
    /// The `client_id` parameter.
    pub client_id: Option<String>,
    /// The `redirect_uri` parameter.
    pub redirect_uri: Option<String>,
    /// The `response_type` parameter.
    pub response_type: Option<String>,
    /// Every `resource` parameter (RFC 8707 §2.1), in order.
    pub resources: Vec<String>,
    /// The `scope` parameter.
    pub scope: Option<String>,
    /// Whether a `state` parameter was sent.
    pub state_presented: bool,
    /// Whether a PKCE `code_challenge` was sent.
    pub code_challenge_presented: bool,
    /// The `code_challenge_method` parameter.
    pub code_challenge_method: Option<String>,
    /// The OAuth `error` the request was answered with (by redirect or directly), if any.
    pub error: Option<String>,
}

/// One request to `/register` (RFC 7591 dynamic client registration), recorded whether or not
/// it succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistrationRecord {
    /// The `client_id` assigned, if the registration succeeded.
    pub client_id: Option<String>,
    /// The `client_name` sent.
    pub client_name: Option<String>,
    /// The `redirect_uris` sent.
    pub redirect_uris: Vec<String>,
    /// The `grant_types` sent (empty when absent).
    pub grant_types: Vec<String>,
    /// The `token_endpoint_auth_method` sent.
    pub requested_auth_method: Option<String>,
    /// The method the server registered the client with.
    pub auth_method: Option<ClientAuthMethod>,
    /// The OAuth `error` of the response, if it failed.
    pub error: Option<String>,
}

/// One request a [`ResourceServer`](super::ResourceServer) received, on any path.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceRequestRecord {
    /// The request method.
    pub method: Method,
    /// The request path (no query).
    pub path: String,
    /// Whether an `Authorization: Bearer` token was presented.
    pub bearer_presented: bool,
    /// Whether an `Authorization: DPoP` token was presented (RFC 9449 §7.1).
    pub dpop_presented: bool,
    /// The request's DPoP proof, if it carried one.
    pub dpop: Option<super::DpopProofRecord>,
    /// The [`fingerprint`](super::fingerprint) of the presented token.
    pub token_fingerprint: Option<String>,
    /// The audiences of the presented token if the authorization server vouches for it
    /// (see [`TokenInfo::audiences`]); empty otherwise.
    pub token_audiences: Vec<String>,
    /// The response status.
    pub status: StatusCode,
}

/// What an access token means, as its issuer sees it: the answer of
/// [`AuthorizationServer::validate`](super::AuthorizationServer::validate), like an RFC 7662
/// introspection response for an active token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The string values of `aud`: the value itself if it is a string, the strings of an
    /// array. Empty when `aud` is missing or malformed (a number, say).
    pub audiences: Vec<String>,
    /// The granted scope (space-delimited), if any.
    pub scope: Option<String>,
    /// The subject: the client id for `client_credentials`, the server's user for the code
    /// grant, the subject token's subject for token exchange.
    pub subject: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// When the token expires on the server's clock (which starts at the real time and then
    /// follows tokio time; see [`AuthorizationServer`](super::AuthorizationServer)), or `None`
    /// if it never does. Whole seconds for JWTs, as in their `exp` claim.
    pub expires_at: Option<SystemTime>,
    /// `cnf.jkt` (RFC 9449 §6): the thumbprint of the DPoP key the token is bound to.
    pub jkt: Option<String>,
}

impl TokenInfo {
    /// The granted scope tokens.
    pub fn scopes(&self) -> Vec<&str> {
        self.scope
            .as_deref()
            .map(|s| super::wire::scope_tokens(s).collect())
            .unwrap_or_default()
    }

    /// Whether `aud` names `resource` exactly (RFC 9068 §4: the resource server must find
    /// itself in `aud`; values are compared as strings, RFC 7519 §4.1.3).
    pub fn has_audience(&self, resource: &str) -> bool {
        self.audiences.iter().any(|a| a == resource)
    }
}
