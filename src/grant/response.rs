//! Token endpoint responses (RFC 6749 §5.1, §5.2; RFC 8693 §2.2; the resource-in-response
//! draft), turned into a validated [`TokenResponse`] or an [`Error`]. Raw bodies never leave
//! this module.

use std::time::Duration;

use http::{StatusCode, header};
use oauth2::TokenResponse as _;
use oauth2::basic::BasicTokenType;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::transport::TransportError;
use crate::dpop::Use;
use crate::error::{Error, OAuthError};
use crate::resource::{ParseOptions, ResourceUri};
use crate::scope::ScopeSet;

/// Members beyond RFC 6749's that the crate reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct ExtraFields {
    /// draft-mcguinness-oauth-resource-token-resp: the resource(s) the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resource: Option<OneOrMany>,
    /// RFC 8693 §2.2.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) issued_token_type: Option<String>,
}

impl oauth2::ExtraTokenFields for ExtraFields {}

/// A JSON string or array of strings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The token response type the oauth2 client is built with.
pub(crate) type RawTokenResponse = oauth2::StandardTokenResponse<ExtraFields, BasicTokenType>;

/// A token response that passed every check.
pub(crate) struct TokenResponse {
    pub(crate) access_token: SecretString,
    pub(crate) expires_in: Option<Duration>,
    pub(crate) refresh_token: Option<SecretString>,
    /// The granted scopes: the response's `scope`, or the requested set when absent.
    pub(crate) scopes: ScopeSet,
    /// `token_type: DPoP` (RFC 9449 §5): the token is bound to the client's DPoP key and goes
    /// out only as `Authorization: DPoP` with a proof.
    pub(crate) dpop_bound: bool,
    /// DPoP was asked for (not required) and the server answered `Bearer`: kept as a bearer
    /// token, and counted ([`Stats::dpop_declined`](crate::cache::Stats::dpop_declined)).
    pub(crate) dpop_declined: bool,
}

/// What the checks need to know about the request.
pub(crate) struct Requested<'a> {
    pub(crate) endpoint: &'a str,
    pub(crate) issuer: &'a str,
    pub(crate) resource: &'a ResourceUri,
    pub(crate) scopes: &'a ScopeSet,
    pub(crate) options: &'a ParseOptions,
    /// RFC 8693 §2.2.1: the `issued_token_type` a token exchange answer must name; `None` for
    /// the other grants.
    pub(crate) issued_token_type: Option<&'a str>,
}

impl Requested<'_> {
    fn protocol(&self, detail: impl Into<String>) -> Error {
        Error::Protocol {
            endpoint: self.endpoint.to_owned(),
            detail: detail.into(),
        }
    }
}

/// The members of an RFC 6749 §5.2 error response.
#[derive(Deserialize)]
struct ErrorMembers {
    error: Option<Value>,
    error_description: Option<Value>,
    error_uri: Option<Value>,
}

/// Reads a token endpoint's answer (what the transport passed on: a 2xx or a 4xx), the same
/// way for every grant: an `error` member is the OAuth error it names whatever the status
/// (RFC 6749 §5.2; some servers send it with a 200); a token comes only in a `200` answer of
/// type `application/json` (§5.1).
pub(crate) fn read(
    response: http::Response<Vec<u8>>,
    requested: &Requested<'_>,
) -> Result<RawTokenResponse, Error> {
    let status = response.status();
    let body = response.body();
    if let Ok(members) = serde_json::from_slice::<ErrorMembers>(body)
        && let Some(code) = members.error
    {
        let text = |value: Option<Value>| match value {
            Some(Value::String(text)) => Some(text),
            _ => None,
        };
        let Value::String(code) = code else {
            return Err(requested.protocol(format!(
                "HTTP {} with an `error` member that is not a string",
                status.as_u16()
            )));
        };
        return Err(oauth_error(
            requested,
            code,
            text(members.error_description).as_ref(),
            text(members.error_uri).as_ref(),
        ));
    }
    if status != StatusCode::OK {
        let detail = if status.is_success() {
            format!(
                "HTTP {}, where a token comes with 200 (RFC 6749 §5.1); the answer was discarded",
                status.as_u16()
            )
        } else {
            format!("HTTP {} without an OAuth error body", status.as_u16())
        };
        return Err(requested.protocol(detail));
    }
    check_media_type(response.headers(), requested)?;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| parse_error(&e, requested))
}

/// RFC 6749 §5.1: `application/json`, in any case, with or without parameters (RFC 9110
/// §8.3.1). Anything else may be a login page or a proxy's answer that happens to parse.
fn check_media_type(headers: &http::HeaderMap, requested: &Requested<'_>) -> Result<(), Error> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(requested.protocol(
            "the token response has no Content-Type, where RFC 6749 §5.1 sends application/json; \
             the answer was discarded",
        ));
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match essence {
        Some(essence) if essence.eq_ignore_ascii_case("application/json") => Ok(()),
        Some(essence) => Err(requested.protocol(format!(
            "the token response is {:?}, not application/json (RFC 6749 §5.1); the answer was \
             discarded",
            crate::resource::shorten(essence)
        ))),
        None => Err(requested.protocol(
            "the token response's Content-Type is not readable text; the answer was discarded",
        )),
    }
}

/// Checks a parsed success response.
pub(crate) fn accept(
    raw: RawTokenResponse,
    proved: Option<Use>,
    requested: &Requested<'_>,
) -> Result<TokenResponse, Error> {
    let dpop_bound = token_type(raw.token_type(), proved, requested)?;
    // RFC 8693 §2.2.1: `issued_token_type` is REQUIRED, and only an access token can be used.
    if let Some(expected) = requested.issued_token_type {
        match raw.extra_fields().issued_token_type.as_deref() {
            Some(issued) if issued == expected => {}
            Some(issued) => {
                return Err(requested.protocol(format!(
                    "the exchange issued a {:?}, not an access token",
                    crate::resource::shorten(issued)
                )));
            }
            None => {
                return Err(requested.protocol(
                    "the token exchange answer has no issued_token_type (REQUIRED, RFC 8693 \
                     §2.2.1); the token was discarded",
                ));
            }
        }
    }
    // RFC 6749 §5.1: the lifetime in seconds. A token expired on arrival is never fresh, so
    // caching it would mean a token request at every call: refused, and the key backs off.
    if raw.expires_in() == Some(Duration::ZERO) {
        return Err(requested.protocol(
            "the token response's expires_in is 0: the token expired on arrival; the token was \
             discarded",
        ));
    }
    let token = raw.access_token().secret();
    // RFC 6750 §2.1 b68token is stricter; anything that is visible ASCII can go in a header.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(requested
            .protocol("the access token is empty or has characters a bearer token cannot have"));
    }
    let scopes = match raw.scopes() {
        None => requested.scopes.clone(),
        Some(scopes) => ScopeSet::from_items(scopes.iter().map(|s| s.as_str()))
            .map_err(|e| requested.protocol(format!("the granted scope is invalid: {e}")))?,
    };
    check_resource(raw.extra_fields().resource.as_ref(), requested)?;
    Ok(TokenResponse {
        access_token: SecretString::from(token.as_str()),
        expires_in: raw.expires_in(),
        refresh_token: raw
            .refresh_token()
            .map(|t| SecretString::from(t.secret().as_str())),
        scopes,
        dpop_bound,
        dpop_declined: !dpop_bound && proved == Some(Use::Asked),
    })
}

/// Whether the answer's `token_type` (compared without case, RFC 6749 §5.1) is a token the
/// crate can use for this request, and whether it is DPoP-bound. `proved` says how the request
/// used DPoP (`None`: it carried no proof).
fn token_type(
    token_type: &BasicTokenType,
    proved: Option<Use>,
    requested: &Requested<'_>,
) -> Result<bool, Error> {
    match (token_type, proved) {
        (BasicTokenType::Bearer, None | Some(Use::Off)) => Ok(false),
        // RFC 9449 §5: a server that does not bind the token answers Bearer; where the
        // resource requires bound tokens such a token would be refused there.
        (BasicTokenType::Bearer, Some(Use::Required)) => Err(requested.protocol(format!(
            "the authorization server answered a DPoP token request with a Bearer token, and \
             {} requires DPoP-bound tokens (RFC 9449); the token was discarded (check that the \
             authorization server supports DPoP: dpop_signing_alg_values_supported)",
            requested.resource.key()
        ))),
        (BasicTokenType::Bearer, Some(Use::Asked)) => {
            tracing::warn!(
                resource = requested.resource.key(),
                issuer = requested.issuer,
                "the authorization server answered a DPoP token request with a Bearer token: \
                 kept as a bearer token (RFC 9449 §5)"
            );
            Ok(false)
        }
        (BasicTokenType::Extension(dpop), Some(_)) if dpop == "dpop" => Ok(true),
        (BasicTokenType::Extension(dpop), None) if dpop == "dpop" => Err(requested.protocol(
            "the token type is DPoP, but the request carried no DPoP proof (only Bearer tokens \
             come without one, RFC 9449 §5); the token was discarded",
        )),
        (other, _) => {
            let shown = match other {
                BasicTokenType::Extension(other) => crate::resource::shorten(other),
                other => format!("{other:?}"),
            };
            Err(requested.protocol(format!(
                "the token type is {:?}; only Bearer and DPoP tokens are supported",
                shown.escape_debug().to_string()
            )))
        }
    }
}

/// draft-mcguinness-oauth-resource-token-resp: one resource was requested, so a `resource`
/// in the response must be exactly one value equal to it after normalization; otherwise the
/// token is discarded.
fn check_resource(returned: Option<&OneOrMany>, requested: &Requested<'_>) -> Result<(), Error> {
    let values: Vec<&str> = match returned {
        None => return Ok(()),
        Some(OneOrMany::One(one)) => vec![one],
        Some(OneOrMany::Many(many)) => many.iter().map(String::as_str).collect(),
    };
    let [value] = values.as_slice() else {
        return Err(requested.protocol(format!(
            "the token response names {} resources where one was requested; the token was discarded",
            values.len()
        )));
    };
    match ResourceUri::parse_with(value, requested.options) {
        Ok(returned) if returned == *requested.resource => Ok(()),
        _ => Err(requested.protocol(format!(
            "the token response is for the resource {:?}, not the requested {}; the token was discarded",
            crate::resource::shorten(value),
            requested.resource.key()
        ))),
    }
}

/// A JSON body that is not a token response: only the JSON path and the kind of error are
/// kept (the body may hold a token).
fn parse_error(
    error: &serde_path_to_error::Error<serde_json::Error>,
    requested: &Requested<'_>,
) -> Error {
    let what = match error.inner().classify() {
        serde_json::error::Category::Data => "has a member of the wrong type or is missing one",
        serde_json::error::Category::Eof => "ends too early",
        _ => "is malformed",
    };
    let path = error.path().to_string();
    let place = if path.is_empty() || path == "." || path == "?" {
        String::new()
    } else {
        format!(" (at {})", crate::resource::shorten(&path))
    };
    requested.protocol(format!("the token response's JSON {what}{place}"))
}

/// One OAuth error response as the crate's error: `invalid_target` has its own variant.
pub(crate) fn oauth_error(
    requested: &Requested<'_>,
    code: String,
    description: Option<&String>,
    uri: Option<&String>,
) -> Error {
    let description = description.map(|d| crate::resource::shorten(d));
    if code == "invalid_target" {
        return Error::InvalidTarget {
            issuer: requested.issuer.to_owned(),
            resource: requested.resource.key().to_owned(),
            description,
        };
    }
    Error::OAuth {
        issuer: requested.issuer.to_owned(),
        resource: requested.resource.key().to_owned(),
        error: OAuthError {
            code: crate::resource::shorten(&code),
            description,
            uri: uri.map(|u| crate::resource::shorten(u)),
        },
    }
}

pub(crate) fn from_transport(error: TransportError, requested: &Requested<'_>) -> Error {
    let endpoint = requested.endpoint.to_owned();
    match error {
        TransportError::Connect(_) | TransportError::Timeout(_) => Error::Unavailable {
            endpoint,
            detail: error.to_string(),
            retry_after: None,
        },
        TransportError::Status { retry_after, .. } => Error::Unavailable {
            endpoint,
            detail: error.to_string(),
            retry_after,
        },
        TransportError::TooLarge(_) | TransportError::Redirect(_) => Error::Protocol {
            endpoint,
            detail: error.to_string(),
        },
    }
}
