//! Token endpoint responses (RFC 6749 §5.1, §5.2; RFC 8693 §2.2; the resource-in-response
//! draft), turned into a validated [`TokenResponse`] or an [`Error`]. Raw bodies never leave
//! this module.

use std::time::Duration;

use oauth2::basic::{BasicErrorResponse, BasicTokenType};
use oauth2::{RequestTokenError, TokenResponse as _};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::transport::TransportError;
use crate::{Error, OAuthError, ParseOptions, ResourceUri, ScopeSet};

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
}

/// What the checks need to know about the request.
pub(crate) struct Requested<'a> {
    pub(crate) endpoint: &'a str,
    pub(crate) issuer: &'a str,
    pub(crate) resource: &'a ResourceUri,
    pub(crate) scopes: &'a ScopeSet,
    pub(crate) options: &'a ParseOptions,
}

impl Requested<'_> {
    fn protocol(&self, detail: impl Into<String>) -> Error {
        Error::Protocol {
            endpoint: self.endpoint.to_owned(),
            detail: detail.into(),
        }
    }
}

/// Checks a parsed success response.
pub(crate) fn accept(
    raw: RawTokenResponse,
    requested: &Requested<'_>,
) -> Result<TokenResponse, Error> {
    if *raw.token_type() != BasicTokenType::Bearer {
        let shown = match raw.token_type() {
            BasicTokenType::Extension(other) => crate::resource::shorten(other),
            other => format!("{other:?}"),
        };
        return Err(requested.protocol(format!(
            "the token type is {:?}; only Bearer tokens are supported",
            shown.escape_debug().to_string()
        )));
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
    })
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

/// Maps oauth2's error for a token request to the crate's error.
pub(crate) fn reject(
    error: RequestTokenError<TransportError, BasicErrorResponse>,
    requested: &Requested<'_>,
) -> Error {
    match error {
        RequestTokenError::ServerResponse(response) => oauth_error(
            requested,
            oauth_code(&response),
            response.error_description(),
            response.error_uri(),
        ),
        RequestTokenError::Request(transport) => from_transport(transport, requested),
        // The body may hold a token: only the JSON path and the kind of error are kept.
        RequestTokenError::Parse(error, _body) => {
            let what = match error.inner().classify() {
                serde_json::error::Category::Data => {
                    "has a member of the wrong type or is missing one"
                }
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
        RequestTokenError::Other(detail) => requested.protocol(crate::resource::shorten(&detail)),
    }
}

fn oauth_code(response: &BasicErrorResponse) -> String {
    response.error().as_ref().to_owned()
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
