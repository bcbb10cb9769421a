//! `GET /authorize` (auto-approving, PKCE S256 required, RFC 9207 `iss`) and the RFC 8414
//! metadata document.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use super::jwt;
use super::records::AuthorizationRequestRecord;
use super::script::{AuthorizeOutcome, IssParameter, Script};
use super::state::{CODE_LIFETIME, CodeGrant, Shared};
use super::token_endpoint::TOKEN_EXCHANGE;
use super::wire::{OAuthError, Params};

pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let mut record = AuthorizationRequestRecord {
        client_id: params.first("client_id").map(str::to_owned),
        redirect_uri: params.first("redirect_uri").map(str::to_owned),
        response_type: params.first("response_type").map(str::to_owned),
        resources: params.all("resource"),
        scope: params.first("scope").map(str::to_owned),
        state_presented: params.first("state").is_some(),
        code_challenge_presented: params.first("code_challenge").is_some(),
        code_challenge_method: params.first("code_challenge_method").map(str::to_owned),
        error: None,
    };
    let script = shared.lock().script.clone();
    let response = match decide(&shared, &script, &params) {
        Decision::Direct(err) => {
            record.error = Some(err.error.to_owned());
            err.into_response()
        }
        Decision::Redirect {
            redirect_uri,
            outcome,
        } => {
            let mut pairs: Vec<(&str, String)> = match outcome {
                Ok(code) => vec![("code", code)],
                Err(err) => {
                    record.error = Some(err.error.to_owned());
                    vec![
                        ("error", err.error.to_owned()),
                        ("error_description", err.description),
                    ]
                }
            };
            if let Some(state) = params.first("state") {
                pairs.push(("state", state.to_owned()));
            }
            match &script.iss_parameter {
                IssParameter::Correct => pairs.push(("iss", shared.issuer.clone())),
                IssParameter::Omit => {}
                IssParameter::Wrong(iss) => pairs.push(("iss", iss.clone())),
            }
            redirect(redirect_uri, &pairs)
        }
    };
    shared.lock().authorization_log.push(record);
    response
}

enum Decision {
    /// RFC 6749 §4.1.2.1: with a bad client or redirect URI, never redirect.
    Direct(OAuthError),
    /// Redirect to the client with a code or an error.
    Redirect {
        redirect_uri: url::Url,
        outcome: Result<String, OAuthError>,
    },
}

fn decide(shared: &Shared, script: &Script, params: &Params) -> Decision {
    let (client_id, redirect_uri) = match (params.one("client_id"), params.one("redirect_uri")) {
        (Ok(Some(id)), Ok(Some(uri))) => (id, uri),
        _ => {
            return Decision::Direct(OAuthError::invalid_request(
                "exactly one client_id and one redirect_uri are required",
            ));
        }
    };
    let Some(client) = shared.client(client_id) else {
        return Decision::Direct(OAuthError::invalid_request("unknown client_id"));
    };
    let parsed = match url::Url::parse(redirect_uri) {
        Ok(parsed) if client.allows_redirect(redirect_uri) => parsed,
        _ => {
            return Decision::Direct(OAuthError::invalid_request(
                "redirect_uri is not registered for this client",
            ));
        }
    };
    let outcome = approve(shared, script, params, client_id, redirect_uri);
    Decision::Redirect {
        redirect_uri: parsed,
        outcome,
    }
}

fn approve(
    shared: &Shared,
    script: &Script,
    params: &Params,
    client_id: &str,
    redirect_uri: &str,
) -> Result<String, OAuthError> {
    for name in [
        "response_type",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    ] {
        params.one(name)?;
    }
    if params.one("response_type")? != Some("code") {
        return Err(OAuthError {
            error: "unsupported_response_type",
            ..OAuthError::invalid_request("only response_type=code is supported")
        });
    }
    let Some(code_challenge) = params.one("code_challenge")? else {
        return Err(OAuthError::invalid_request(
            "PKCE code_challenge is required",
        ));
    };
    // RFC 7636 §4.3: a missing method means "plain", which this server refuses.
    if params.one("code_challenge_method")? != Some("S256") {
        return Err(OAuthError::invalid_request(
            "code_challenge_method must be S256",
        ));
    }
    let resources = params.all("resource");
    script
        .resources
        .check(&resources)
        .map_err(OAuthError::invalid_target)?;
    if script.authorize == AuthorizeOutcome::Deny {
        return Err(OAuthError {
            error: "access_denied",
            ..OAuthError::invalid_request("the resource owner denied the request")
        });
    }
    let code = jwt::random_b64(32);
    let grant = CodeGrant {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        code_challenge: code_challenge.to_owned(),
        resources,
        scope: params.one("scope")?.map(str::to_owned),
        expires_at: shared.clock.now() + CODE_LIFETIME,
    };
    shared.lock().codes.insert(code.clone(), grant);
    Ok(code)
}

/// `302 Found` to `base` with `pairs` appended to its query.
fn redirect(mut base: url::Url, pairs: &[(&str, String)]) -> Response {
    base.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    let mut response = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(base.as_str()) {
        Ok(location) => {
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        // A parsed URL serializes to visible ASCII, so this cannot happen; answer sanely anyway.
        Err(_) => OAuthError::invalid_request("redirect_uri cannot be used").into_response(),
    }
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414 §3).
pub(crate) async fn metadata(State(shared): State<Arc<Shared>>) -> Response {
    let script = {
        let mut state = shared.lock();
        state.metadata_requests += 1;
        state.script.clone()
    };
    let issuer = &shared.issuer;
    let methods: Vec<&str> = shared
        .registration
        .auth_methods
        .iter()
        .map(|m| m.as_str())
        .collect();
    let mut body = json!({
        "issuer": script.metadata_issuer.as_deref().unwrap_or(issuer),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "response_types_supported": ["code"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            TOKEN_EXCHANGE,
        ],
        "token_endpoint_auth_methods_supported": methods,
        "authorization_response_iss_parameter_supported": true,
    });
    if let Value::Object(map) = &mut body {
        if script.advertise_pkce {
            map.insert("code_challenge_methods_supported".into(), json!(["S256"]));
        }
        if shared.registration.dynamic {
            map.insert(
                "registration_endpoint".into(),
                json!(format!("{issuer}/register")),
            );
        }
        if shared.registration.metadata_documents {
            map.insert("client_id_metadata_document_supported".into(), json!(true));
        }
        if !shared.scopes_supported.is_empty() {
            map.insert("scopes_supported".into(), json!(shared.scopes_supported));
        }
    }
    // Metadata is an ordinary cacheable GET (RFC 8414 §3.1); the server adds no cache headers.
    axum::Json(body).into_response()
}
