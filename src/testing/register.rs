//! `POST /register`: RFC 7591 dynamic client registration, for testing clients that register
//! themselves. Every registration succeeds that names at least one acceptable redirect URI and
//! a supported authentication method; confidential clients get a random secret.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::client::{Client, ClientAuthMethod};
use super::records::RegistrationRecord;
use super::state::Shared;

pub(crate) async fn register(
    State(shared): State<Arc<Shared>>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(Json(body)) = body else {
        return error(
            &shared,
            RegistrationRecord::from_body(&Value::Null),
            "invalid_client_metadata",
            "the body must be a JSON object (application/json)",
        );
    };
    let mut record = RegistrationRecord::from_body(&body);
    if !shared.registration.dynamic {
        return error(
            &shared,
            record,
            "access_denied",
            "dynamic registration is off",
        );
    }
    let redirect_uris = record.redirect_uris.clone();
    // RFC 8252 §7.3 and MCP: https, or http on loopback.
    let acceptable = |uri: &String| {
        url::Url::parse(uri).is_ok_and(|u| {
            u.fragment().is_none()
                && (u.scheme() == "https"
                    || (u.scheme() == "http"
                        && matches!(u.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))))
        })
    };
    if redirect_uris.is_empty() || !redirect_uris.iter().all(acceptable) {
        return error(
            &shared,
            record,
            "invalid_redirect_uri",
            "redirect_uris must list https or loopback http URIs",
        );
    }
    let requested = record
        .requested_auth_method
        .clone()
        .unwrap_or_else(|| "client_secret_basic".to_owned());
    let Some(method) = shared
        .registration
        .auth_methods
        .iter()
        .copied()
        .find(|m| m.as_str() == requested)
    else {
        return error(
            &shared,
            record,
            "invalid_client_metadata",
            "token_endpoint_auth_method is not supported",
        );
    };
    if method == ClientAuthMethod::PrivateKeyJwt {
        return error(
            &shared,
            record,
            "invalid_client_metadata",
            "this test server does not register private_key_jwt clients (configure them with Client::private_key_jwt)",
        );
    }
    let client_id = format!("dyn-{}", random_hex(8));
    let secret = (method != ClientAuthMethod::None).then(|| random_hex(16));
    let mut client = match &secret {
        Some(secret) => Client::confidential(&client_id, secret).auth_method(method),
        None => Client::public(&client_id),
    };
    for uri in &redirect_uris {
        client = client.redirect_uri(uri);
    }
    record.client_id = Some(client_id.clone());
    record.auth_method = Some(method);
    {
        let mut state = shared.lock();
        state.registered.insert(client_id.clone(), client);
        state.registration_log.push(record.clone());
    }
    let mut response = json!({
        "client_id": client_id,
        "client_id_issued_at": shared.clock.unix_secs(),
        "redirect_uris": redirect_uris,
        "grant_types": if record.grant_types.is_empty() { vec!["authorization_code".to_owned()] } else { record.grant_types.clone() },
        "response_types": ["code"],
        "token_endpoint_auth_method": method.as_str(),
    });
    if let (Some(secret), Value::Object(map)) = (secret, &mut response) {
        map.insert("client_secret".into(), json!(secret));
        map.insert("client_secret_expires_at".into(), json!(0));
    }
    if let (Some(name), Value::Object(map)) = (&record.client_name, &mut response) {
        map.insert("client_name".into(), json!(name));
    }
    (StatusCode::CREATED, Json(response)).into_response()
}

fn error(
    shared: &Shared,
    mut record: RegistrationRecord,
    code: &str,
    description: &str,
) -> Response {
    record.error = Some(code.to_owned());
    shared.lock().registration_log.push(record);
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": code, "error_description": description })),
    )
        .into_response()
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut buffer = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

impl RegistrationRecord {
    fn from_body(body: &Value) -> Self {
        let strings = |name: &str| -> Vec<String> {
            body[name]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        Self {
            client_id: None,
            client_name: body["client_name"].as_str().map(str::to_owned),
            redirect_uris: strings("redirect_uris"),
            grant_types: strings("grant_types"),
            requested_auth_method: body["token_endpoint_auth_method"]
                .as_str()
                .map(str::to_owned),
            auth_method: None,
            error: None,
        }
    }
}
