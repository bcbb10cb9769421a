//! The authorization server as an enterprise identity provider (it issues ID tokens and, by
//! RFC 8693 token exchange, ID-JAGs for them: MCP enterprise-managed authorization) and as an
//! authorization server that accepts the JWT bearer grant (RFC 7523 §2.1) with ID-JAGs and
//! workload tokens from issuers it trusts (MCP workload identity federation).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac as _};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::authorization_server::{AuthorizationServer, InProcessHandle};
use super::client::Client;
use super::jwt;
use super::script::Script;
use super::state::{Issue, Shared};
use super::wire::{OAuthError, Params};

/// RFC 7523 §2.1.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 8693 §3.
pub(crate) const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const ID_JAG_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// How long an ID-JAG this server issues lasts: short, as ID-JAGs are.
pub(crate) const ID_JAG_LIFETIME: Duration = Duration::from_secs(300);

type Body = Map<String, Value>;

impl AuthorizationServer {
    /// An OpenID Connect ID token for the user `subject`, issued by this server (as an
    /// enterprise IdP) to `client_id`, valid for an hour: what a client exchanges for an ID-JAG
    /// here. HS256 under the server's key, `typ: JWT`.
    pub fn id_token(&self, subject: &str, client_id: &str) -> String {
        let shared = &self.shared;
        let now = shared.clock.unix_secs();
        let claims = json!({
            "iss": shared.issuer, "sub": subject, "aud": client_id,
            "iat": now, "exp": now + 3600, "jti": jwt::random_b64(16),
        });
        sign(&shared.key, "JWT", &claims)
    }

    /// A workload's platform token (a CI job's or a pod's JWT): `sub` the workload, `aud`
    /// `audience` (the authorization server it is for), lasting `lifetime`. HS256 under the
    /// server's key, `typ: JWT`. An authorization server that
    /// [trusts](Self::trust_assertions_from) this one accepts it with the JWT bearer grant.
    pub fn workload_token(&self, subject: &str, audience: &str, lifetime: Duration) -> String {
        let shared = &self.shared;
        let now = shared.clock.unix_secs();
        let claims = json!({
            "iss": shared.issuer, "sub": subject, "aud": audience,
            "iat": now, "exp": now + lifetime.as_secs(), "jti": jwt::random_b64(16),
        });
        sign(&shared.key, "JWT", &claims)
    }

    /// Accepts JWT bearer assertions that `issuer` signed: its ID-JAGs (`typ:
    /// oauth-id-jag+jwt`, whose `resource` must be the request's and `client_id` the
    /// authenticated client's) and its workload tokens. Each must name this server in `aud` and
    /// not have expired; the token issued acts for the assertion's `sub`.
    pub fn trust_assertions_from(&self, issuer: &AuthorizationServer) {
        let trusted = (issuer.shared.issuer.clone(), issuer.shared.key);
        self.shared.lock().trusted_issuers.push(trusted);
    }
}

impl crate::cache::TokenCacheBuilder {
    /// Sends token requests to several embedded servers in process (an MCP authorization
    /// server and an enterprise IdP, say), each to the server whose issuer's origin is the
    /// request's; give them distinct issuers
    /// ([`in_process_at`](super::AuthorizationServerBuilder::in_process_at)).
    pub fn in_process_servers(self, servers: &[&AuthorizationServer]) -> Self {
        let handles = servers
            .iter()
            .map(|s| (s.shared.issuer.clone(), s.in_process_handle()))
            .collect();
        self.exchange(Arc::new(Dispatch(handles)))
    }
}

/// In-process servers by issuer.
#[derive(Debug)]
struct Dispatch(Vec<(String, InProcessHandle)>);

impl crate::grant::Exchange for Dispatch {
    fn exchange(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = http::Response<Vec<u8>>> + Send + '_>> {
        let uri = request.uri().to_string();
        let handle = self.0.iter().find(|(issuer, _)| {
            uri.strip_prefix(issuer.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        match handle {
            Some((_, handle)) => Box::pin(handle.handle(request)),
            None => Box::pin(async {
                let mut response = http::Response::new(Vec::new());
                *response.status_mut() = http::StatusCode::NOT_FOUND;
                response
            }),
        }
    }
}

/// A compact JWS with `{"alg":"HS256","typ":typ}`.
pub(crate) fn sign(key: &jwt::Key, typ: &str, claims: &Value) -> String {
    let header = json!({ "alg": "HS256", "typ": typ });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new(GenericArray::from_slice(key));
    mac.update(input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{signature}")
}

/// The JOSE header of a compact JWS, unverified.
fn header(token: &str) -> Option<Map<String, Value>> {
    let part = token.split('.').next()?;
    match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()? {
        Value::Object(header) => Some(header),
        _ => None,
    }
}

/// The claims of a compact JWS, unverified (to find its issuer's key).
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let part = token.split('.').nth(1)?;
    match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

fn names(claim: Option<&Value>, wanted: &str) -> bool {
    match claim {
        Some(Value::String(value)) => value == wanted,
        Some(Value::Array(values)) => values.iter().any(|v| v.as_str() == Some(wanted)),
        _ => false,
    }
}

/// RFC 8693 token exchange of an ID token for an ID-JAG, this server acting as the
/// enterprise IdP: the ID token must be one it issued to `client`, unexpired; the ID-JAG names
/// the `audience` and `resource` asked for (one each), the same user, and the client id.
pub(crate) fn id_jag_exchange(
    shared: &Shared,
    client: &Client,
    params: &Params,
) -> Result<Body, OAuthError> {
    let subject_token = params.required("subject_token")?;
    if params.one("requested_token_type")? != Some(ID_JAG_TYPE) {
        return Err(OAuthError::invalid_request(format!(
            "an ID token is exchanged only for {ID_JAG_TYPE}"
        )));
    }
    let [audience] = params.all("audience").try_into().map_err(|_| {
        OAuthError::invalid_request("exactly one audience (the authorization server)")
    })?;
    let [resource] = params
        .all("resource")
        .try_into()
        .map_err(|_| OAuthError::invalid_request("exactly one resource"))?;
    let now = shared.clock.unix_secs();
    // RFC 8693 §2.2.2: an invalid subject_token is invalid_request.
    let claims = jwt::verify(&shared.key, subject_token)
        .filter(|c| c.get("iss").and_then(Value::as_str) == Some(shared.issuer.as_str()))
        .filter(|c| names(c.get("aud"), client.id()))
        .filter(|c| {
            c.get("exp")
                .and_then(Value::as_u64)
                .is_some_and(|exp| exp > now)
        })
        .ok_or_else(|| {
            OAuthError::invalid_request(
                "subject_token is not an ID token this IdP issued to the client",
            )
        })?;
    let subject = claims.get("sub").cloned().unwrap_or(Value::Null);
    let scope = params.one("scope")?;
    let mut id_jag = json!({
        "iss": shared.issuer, "sub": subject, "aud": audience, "resource": resource,
        "client_id": client.id(), "iat": now, "exp": now + ID_JAG_LIFETIME.as_secs(),
        "jti": jwt::random_b64(16),
    });
    if let (Some(scope), Some(map)) = (scope, id_jag.as_object_mut()) {
        map.insert("scope".into(), json!(scope));
    }
    let mut body = Body::new();
    body.insert(
        "access_token".into(),
        json!(sign(&shared.key, ID_JAG_TYP, &id_jag)),
    );
    body.insert("issued_token_type".into(), json!(ID_JAG_TYPE));
    // RFC 8693 §2.2.1: the token is not an access token.
    body.insert("token_type".into(), json!("N_A"));
    body.insert("expires_in".into(), json!(ID_JAG_LIFETIME.as_secs()));
    if let Some(scope) = scope {
        body.insert("scope".into(), json!(scope));
    }
    Ok(body)
}

/// RFC 7523 §2.1: the assertion must be signed by a trusted issuer, name this server in `aud`
/// and not have expired (`invalid_grant` otherwise, §3.1); an ID-JAG must also name the
/// request's resource and the authenticated client. The token acts for its `sub`.
pub(crate) fn jwt_bearer(
    shared: &Shared,
    script: &Script,
    client: &Client,
    params: &Params,
    resources: Vec<String>,
    jkt: Option<String>,
) -> Result<Body, OAuthError> {
    let assertion = params.required("assertion")?;
    let issuer = unverified_claims(assertion)
        .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| OAuthError::invalid_grant("the assertion is not a JWT with an iss"))?;
    let key = shared
        .lock()
        .trusted_issuers
        .iter()
        .find(|(trusted, _)| *trusted == issuer)
        .map(|(_, key)| *key)
        .ok_or_else(|| OAuthError::invalid_grant("the assertion's issuer is not trusted"))?;
    let claims = jwt::verify(&key, assertion)
        .ok_or_else(|| OAuthError::invalid_grant("the assertion's signature does not verify"))?;
    let now = shared.clock.unix_secs();
    if claims
        .get("exp")
        .and_then(Value::as_u64)
        .is_none_or(|exp| exp <= now)
    {
        return Err(OAuthError::invalid_grant("the assertion has expired"));
    }
    if !names(claims.get("aud"), &shared.issuer) {
        return Err(OAuthError::invalid_grant(
            "the assertion is not for this server",
        ));
    }
    let is_id_jag = header(assertion)
        .and_then(|h| h.get("typ").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|typ| typ == ID_JAG_TYP);
    if is_id_jag {
        let resource = claims.get("resource").and_then(Value::as_str);
        if resources.iter().any(|r| Some(r.as_str()) != resource) {
            return Err(OAuthError::invalid_grant(
                "the ID-JAG is for another resource",
            ));
        }
        if claims.get("client_id").and_then(Value::as_str) != Some(client.id()) {
            return Err(OAuthError::invalid_grant(
                "the ID-JAG is for another client",
            ));
        }
    }
    script
        .resources
        .check(&resources)
        .map_err(OAuthError::invalid_target)?;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| OAuthError::invalid_grant("the assertion has no sub"))?;
    let issue = Issue {
        subject: subject.to_owned(),
        client_id: client.id().to_owned(),
        scope: params.one("scope")?.map(str::to_owned),
        resources,
        audiences: Vec::new(),
        jkt,
    };
    let mut state = shared.lock();
    Ok(shared.issue(&mut state, script, issue))
}
