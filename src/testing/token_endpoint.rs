//! `POST /token`: the grants (client credentials, code, refresh, token exchange, and the JWT
//! bearer grant with the IdP's exchange of ID tokens in `identity`), RFC 8707 `resource`
//! checks, refresh rotation, and scripted failures.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use super::client::{Client, Presented};
use super::dpop::{self, DpopProofRecord};
use super::identity::{self, ID_TOKEN_TYPE, JWT_BEARER};
use super::jwt;
use super::records::TokenRequestRecord;
use super::script::{Failure, Script};
use super::state::{Grant, Issue, Shared};
use super::wire::{OAuthError, Params, json_response, no_store, scope_is_subset};

/// RFC 8693 §2.1.
pub(crate) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Parameters that may appear at most once (RFC 6749 §3.1); `resource` and `audience` repeat.
const SINGLE_VALUED: &[&str] = &[
    "grant_type",
    "scope",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "actor_token",
    "actor_token_type",
    "assertion",
];

pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body);
    let presented = Presented::read(&headers, &params);
    let (proof, bind) = token_dpop(&shared, &headers);
    let record = TokenRequestRecord {
        grant_type: params.first("grant_type").map(str::to_owned),
        client_id: presented.client_id.clone(),
        client_auth: presented.method,
        resources: params.all("resource"),
        audiences: params.all("audience"),
        scope: params.first("scope").map(str::to_owned),
        refresh_token_presented: params.first("refresh_token").is_some(),
        code_presented: params.first("code").is_some(),
        code_verifier_presented: params.first("code_verifier").is_some(),
        subject_token_presented: params.first("subject_token").is_some(),
        subject_token_fingerprint: params.first("subject_token").map(jwt::fingerprint),
        subject_token_type: params.first("subject_token_type").map(str::to_owned),
        requested_token_type: params.first("requested_token_type").map(str::to_owned),
        assertion_fingerprint: params.first("assertion").map(jwt::fingerprint),
        status: None,
        error: None,
        dpop: proof,
    };
    // The request behaves as the script said when it arrived.
    let (slot, script, failure) = {
        let mut state = shared.lock();
        let slot = state.token_log.push(record);
        let failure = state.script.take_failure();
        (slot, state.script.clone(), failure)
    };
    if !script.latency.is_zero() {
        tokio::time::sleep(script.latency).await;
    }
    let (response, error) = match failure {
        Some(failure) => scripted(&failure),
        None => match bind.and_then(|jkt| {
            let jkt = jkt.filter(|_| script.bind_dpop);
            grant(&shared, &script, &headers, &params, &presented, jkt)
        }) {
            Ok(body) => (json_response(StatusCode::OK, &Value::Object(body)), None),
            Err(err) => {
                let code = err.error.to_owned();
                (err.into_response(), Some(code))
            }
        },
    };
    shared.finish_token_request(slot, response.status(), error);
    let mut response = response;
    let nonce = if script.rotate_dpop_nonce {
        let fresh = jwt::random_b64(16);
        shared.lock().script.dpop_nonce = Some(fresh.clone());
        Some(fresh)
    } else {
        script.dpop_nonce
    };
    // RFC 9449 §8.2: the nonce goes with every answer, so that the next proof has it.
    if let Some(nonce) = nonce.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
        response.headers_mut().insert("dpop-nonce", nonce);
    }
    response
}

/// The token request's DPoP proof (RFC 9449 §5), checked for a POST to the token endpoint:
/// what the server saw, and the key to bind to (none without a proof) or the error to answer.
fn token_dpop(
    shared: &Shared,
    headers: &HeaderMap,
) -> (Option<DpopProofRecord>, Result<Option<String>, OAuthError>) {
    let proof = match dpop::header(headers) {
        Ok(None) => return (None, Ok(None)),
        Ok(Some(proof)) => proof,
        Err(why) => return (None, Err(OAuthError::dpop("invalid_dpop_proof", why))),
    };
    let htu = format!("{}/token", shared.issuer);
    let expected = dpop::Expected {
        method: "POST",
        htu: &htu,
        access_token: None,
        now: shared.clock.unix_secs(),
    };
    let mut state = shared.lock();
    let nonce = state.script.dpop_nonce.clone();
    let record = dpop::check(proof, &expected, &mut state.used_dpop_proofs);
    let outcome = match &record.problem {
        Some(problem) => Err(OAuthError::dpop("invalid_dpop_proof", problem.clone())),
        None if nonce.is_some() && record.nonce != nonce => Err(OAuthError::dpop(
            "use_dpop_nonce",
            "the authorization server requires a nonce in DPoP proofs",
        )),
        None => Ok(Some(record.jkt.clone())),
    };
    (Some(record), outcome)
}

type Body = serde_json::Map<String, Value>;

fn grant(
    shared: &Shared,
    script: &Script,
    headers: &HeaderMap,
    params: &Params,
    presented: &Presented,
    jkt: Option<String>,
) -> Result<Body, OAuthError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(OAuthError::invalid_request(
            "the token request must be application/x-www-form-urlencoded",
        ));
    }
    for name in SINGLE_VALUED {
        params.one(name)?;
    }
    let grant_type = params.required("grant_type")?;
    let client = presented.authenticate(
        |id| shared.client(id),
        |client, assertion| shared.verify_assertion(client, assertion),
    )?;
    let client = &client;
    let resources = params.all("resource");
    match grant_type {
        "client_credentials" => client_credentials(shared, script, client, params, resources, jkt),
        "authorization_code" => authorization_code(shared, script, client, params, resources, jkt),
        "refresh_token" => refresh(shared, script, client, params, resources, jkt),
        // The server as an enterprise IdP: an ID token for an ID-JAG.
        TOKEN_EXCHANGE if params.first("subject_token_type") == Some(ID_TOKEN_TYPE) => {
            identity::id_jag_exchange(shared, client, params)
        }
        TOKEN_EXCHANGE => token_exchange(shared, script, client, params, resources, jkt),
        JWT_BEARER => identity::jwt_bearer(shared, script, client, params, resources, jkt),
        other => Err(OAuthError::unsupported_grant_type(format!(
            "grant type {other:?} is not supported"
        ))),
    }
}

fn client_credentials(
    shared: &Shared,
    script: &Script,
    client: &Client,
    params: &Params,
    resources: Vec<String>,
    jkt: Option<String>,
) -> Result<Body, OAuthError> {
    if client.is_public() {
        // RFC 6749 §4.4: only confidential clients may use this grant.
        return Err(OAuthError::unauthorized_client(
            "a public client may not use client_credentials",
        ));
    }
    script
        .resources
        .check(&resources)
        .map_err(OAuthError::invalid_target)?;
    let scope = params.one("scope")?.map(str::to_owned);
    let mut state = shared.lock();
    let issue = Issue {
        subject: client.id().to_owned(),
        client_id: client.id().to_owned(),
        scope: scope.clone(),
        resources: resources.clone(),
        audiences: Vec::new(),
        jkt,
    };
    let mut body = shared.issue(&mut state, script, issue);
    if script.refresh_on_client_credentials {
        let grant = Grant {
            client_id: client.id().to_owned(),
            subject: client.id().to_owned(),
            scope,
            resources,
            revoked: false,
            // A confidential client's refresh tokens are not bound (RFC 9449 §5).
            jkt: None,
        };
        let refresh_token = shared.new_refresh_family(&mut state, grant);
        body.insert("refresh_token".into(), json!(refresh_token));
    }
    Ok(body)
}

fn authorization_code(
    shared: &Shared,
    script: &Script,
    client: &Client,
    params: &Params,
    resources: Vec<String>,
    jkt: Option<String>,
) -> Result<Body, OAuthError> {
    let code = params.required("code")?;
    let verifier = params.one("code_verifier")?;
    let redirect_uri = params.one("redirect_uri")?;
    let mut state = shared.lock();
    // Single use: a code is gone once presented, whatever the outcome (RFC 6749 §4.1.2).
    let Some(grant) = state.codes.remove(code) else {
        return Err(OAuthError::invalid_grant(
            "unknown or already used authorization code",
        ));
    };
    if shared.clock.now() >= grant.expires_at {
        return Err(OAuthError::invalid_grant("authorization code expired"));
    }
    if grant.client_id != client.id() {
        return Err(OAuthError::invalid_grant(
            "authorization code was issued to another client",
        ));
    }
    // RFC 6749 §4.1.3: redirect_uri must be identical to the one in the authorization request.
    if redirect_uri != Some(grant.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    // RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) must equal the S256 code_challenge.
    let verified = verifier
        .is_some_and(|v| jwt::is_valid_verifier(v) && jwt::pkce_s256(v) == grant.code_challenge);
    if !verified {
        return Err(OAuthError::invalid_grant("PKCE verification failed"));
    }
    let resources = within_grant(resources, &grant.resources)?;
    let issue = Issue {
        subject: shared.subject.clone(),
        client_id: client.id().to_owned(),
        scope: grant.scope.clone(),
        resources,
        audiences: Vec::new(),
        jkt: jkt.clone(),
    };
    let mut body = shared.issue(&mut state, script, issue);
    let family = Grant {
        client_id: client.id().to_owned(),
        subject: shared.subject.clone(),
        scope: grant.scope,
        // RFC 8707 §2.2: the refresh token is bound to the whole original grant.
        resources: grant.resources,
        revoked: false,
        // RFC 9449 §5: a public client's refresh tokens are bound to its DPoP key.
        jkt: jkt.filter(|_| client.is_public()),
    };
    let refresh_token = shared.new_refresh_family(&mut state, family);
    body.insert("refresh_token".into(), json!(refresh_token));
    Ok(body)
}

fn refresh(
    shared: &Shared,
    script: &Script,
    client: &Client,
    params: &Params,
    resources: Vec<String>,
    jkt: Option<String>,
) -> Result<Body, OAuthError> {
    let presented = params.required("refresh_token")?;
    let scope = params.one("scope")?;
    let mut state = shared.lock();
    let Some(entry) = state.refresh_tokens.get(presented) else {
        return Err(OAuthError::invalid_grant("unknown refresh token"));
    };
    let (index, rotated) = (entry.grant, entry.rotated);
    let Some(grant) = state.grants.get_mut(index) else {
        return Err(OAuthError::invalid_grant("unknown refresh token"));
    };
    if grant.client_id != client.id() {
        return Err(OAuthError::invalid_grant(
            "refresh token was issued to another client",
        ));
    }
    if grant.revoked {
        return Err(OAuthError::invalid_grant("refresh token revoked"));
    }
    // RFC 9449 §5: a bound refresh token needs a proof by the same key.
    if grant.jkt.is_some() && grant.jkt != jkt {
        return Err(OAuthError::invalid_grant(
            "the refresh token is bound to another DPoP key",
        ));
    }
    if rotated {
        // RFC 9700 §4.14.2: reuse of a rotated refresh token revokes the active one too.
        grant.revoked = true;
        return Err(OAuthError::invalid_grant(
            "refresh token already used; the grant is revoked",
        ));
    }
    // RFC 6749 §6: no scope beyond the original grant; an omitted scope means the original.
    let scope = match scope {
        Some(requested) if !scope_is_subset(requested, grant.scope.as_deref()) => {
            return Err(OAuthError::invalid_scope(
                "scope exceeds the original grant",
            ));
        }
        Some(requested) => Some(requested.to_owned()),
        None => grant.scope.clone(),
    };
    let resources = within_grant(resources, &grant.resources)?;
    let issue = Issue {
        subject: grant.subject.clone(),
        client_id: client.id().to_owned(),
        scope,
        resources,
        audiences: Vec::new(),
        jkt,
    };
    let mut body = shared.issue(&mut state, script, issue);
    if script.rotate_refresh_tokens {
        if let Some(entry) = state.refresh_tokens.get_mut(presented) {
            entry.rotated = true;
        }
        let refresh_token = shared.new_refresh_token(&mut state, index);
        body.insert("refresh_token".into(), json!(refresh_token));
    }
    Ok(body)
}

fn token_exchange(
    shared: &Shared,
    script: &Script,
    client: &Client,
    params: &Params,
    resources: Vec<String>,
    jkt: Option<String>,
) -> Result<Body, OAuthError> {
    let subject_token = params.required("subject_token")?;
    if params.required("subject_token_type")? != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    if params
        .one("requested_token_type")?
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return Err(OAuthError::invalid_request(format!(
            "only {ACCESS_TOKEN_TYPE} can be issued"
        )));
    }
    // RFC 8693 §2.2.2: an invalid subject_token is invalid_request.
    let Some(subject) = shared.validate(subject_token) else {
        return Err(OAuthError::invalid_request(
            "subject_token is not an active token of this server",
        ));
    };
    script
        .resources
        .check(&resources)
        .map_err(OAuthError::invalid_target)?;
    let scope = params.one("scope")?.map(str::to_owned).or(subject.scope);
    let issue = Issue {
        subject: subject.subject,
        client_id: client.id().to_owned(),
        scope,
        resources,
        audiences: params.all("audience"),
        jkt,
    };
    let mut state = shared.lock();
    let mut body = shared.issue(&mut state, script, issue);
    body.insert("issued_token_type".into(), json!(ACCESS_TOKEN_TYPE));
    Ok(body)
}

/// RFC 8707 §2.2: a code or refresh request may name only resources of the original grant;
/// naming none means all of them.
fn within_grant(requested: Vec<String>, granted: &[String]) -> Result<Vec<String>, OAuthError> {
    if let Some(outside) = requested.iter().find(|r| !granted.contains(r)) {
        return Err(OAuthError::invalid_target(format!(
            "resource {outside:?} is not part of the original grant"
        )));
    }
    Ok(if requested.is_empty() {
        granted.to_vec()
    } else {
        requested
    })
}

/// The response to a scripted failure, and its OAuth error code if it has one.
fn scripted(failure: &Failure) -> (Response, Option<String>) {
    let text = |status: StatusCode, body: &'static str| {
        no_store(
            status,
            "text/plain; charset=utf-8",
            body.as_bytes().to_vec(),
        )
    };
    let oauth = |status: StatusCode, error: &str| {
        let body = json!({"error": error, "error_description": "scripted failure"});
        (json_response(status, &body), Some(error.to_owned()))
    };
    match failure {
        Failure::InternalServerError => (
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
            None,
        ),
        Failure::ServiceUnavailable => (
            text(StatusCode::SERVICE_UNAVAILABLE, "service unavailable"),
            None,
        ),
        Failure::TooManyRequests { retry_after } => {
            let mut response = text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs()),
            );
            (response, None)
        }
        Failure::MalformedJson => (
            no_store(
                StatusCode::OK,
                "application/json",
                br#"{"access_token": "abc", "token_"#.to_vec(),
            ),
            None,
        ),
        Failure::OversizedBody => {
            let big = "A".repeat(1024 * 1024);
            let body = json!({"access_token": big, "token_type": "Bearer", "expires_in": 3600});
            (json_response(StatusCode::OK, &body), None)
        }
        Failure::InvalidTarget => oauth(StatusCode::BAD_REQUEST, "invalid_target"),
        Failure::InvalidGrant => oauth(StatusCode::BAD_REQUEST, "invalid_grant"),
        Failure::OAuth { status, error } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
            oauth(status, error)
        }
        Failure::Answer {
            status,
            content_type,
            body,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            let mut response = no_store(status, "application/json", body.clone().into_bytes());
            let headers = response.headers_mut();
            headers.remove(header::CONTENT_TYPE);
            if let Some(value) = content_type
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(header::CONTENT_TYPE, value);
            }
            (response, None)
        }
    }
}
