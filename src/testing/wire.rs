//! The OAuth wire format the servers speak: form parameters in, JSON and error responses out.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Form or query parameters, in order, with repeats kept (RFC 8707 §2.1 repeats `resource`).
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `application/x-www-form-urlencoded` bytes. Never fails: invalid UTF-8 is replaced,
    /// as the form-urlencoded parser does. Parameters without a value are dropped, because
    /// RFC 6749 §3.1 says they "MUST be treated as if they were omitted from the request".
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(bytes)
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// Every value of a parameter that may repeat.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first value, for recording what a (possibly invalid) request said.
    pub(crate) fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a single-valued parameter; a repeat is `invalid_request` (RFC 6749 §3.1).
    pub(crate) fn one(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut values = self.0.iter().filter(|(n, _)| n == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {name} is included more than once"
            )));
        }
        Ok(first)
    }

    /// Like [`Params::one`], but the parameter must be present.
    pub(crate) fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.one(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }
}

/// Decodes one `application/x-www-form-urlencoded` component strictly: `+` is a space, `%XX`
/// an octet, and a malformed escape or invalid UTF-8 gives `None`.
pub(crate) fn form_urldecode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                // from_str_radix alone would also take a sign ("%+1").
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Splits a space-delimited scope string (RFC 6749 §3.3) into its tokens.
pub(crate) fn scope_tokens(scope: &str) -> impl Iterator<Item = &str> {
    scope.split(' ').filter(|s| !s.is_empty())
}

/// Whether every token of `requested` is in `granted`.
pub(crate) fn scope_is_subset(requested: &str, granted: Option<&str>) -> bool {
    let granted: Vec<&str> = granted
        .map(|g| scope_tokens(g).collect())
        .unwrap_or_default();
    scope_tokens(requested).all(|s| granted.contains(&s))
}

/// A JSON response that no cache may store (RFC 6749 §5.1).
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    no_store(status, "application/json", body.to_string().into_bytes())
}

/// A response with `Cache-Control: no-store` and `Pragma: no-cache`.
pub(crate) fn no_store(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// An RFC 6749 §5.2 error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) description: String,
    /// `WWW-Authenticate: Basic` on a 401, because the client authenticated with Basic
    /// (RFC 6749 §5.2, `invalid_client`).
    pub(crate) basic_challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(crate) fn invalid_client(description: impl Into<String>, basic_used: bool) -> Self {
        Self {
            basic_challenge: basic_used,
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
        }
    }

    pub(crate) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub(crate) fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    pub(crate) fn invalid_target(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", description)
    }

    pub(crate) fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", description)
    }

    /// RFC 9449 §5, §8: `invalid_dpop_proof` and `use_dpop_nonce`, with status 400.
    pub(crate) fn dpop(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }

    pub(crate) fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            description,
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut response = json_response(self.status, &body);
        if self.basic_challenge && self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="token""#),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_resource_parameters_are_all_kept() {
        let params =
            Params::parse(b"resource=https%3A%2F%2Fa.test&resource=https%3A%2F%2Fb.test&scope=");
        assert_eq!(params.all("resource"), ["https://a.test", "https://b.test"]);
        // RFC 6749 §3.1: an empty value is an omitted parameter.
        assert_eq!(params.first("scope"), None);
        assert!(params.one("resource").is_err());
    }

    #[test]
    fn form_urldecode_is_strict() {
        assert_eq!(
            form_urldecode("a+b%3A%2B%2F%25%26").as_deref(),
            Some("a b:+/%&")
        );
        assert_eq!(form_urldecode("%C3%A9").as_deref(), Some("é"));
        for bad in ["%", "%2", "%zz", "%+1", "%-1", "%FF"] {
            assert_eq!(form_urldecode(bad), None, "{bad}");
        }
    }

    #[test]
    fn scope_subset() {
        assert!(scope_is_subset("read", Some("read write")));
        assert!(scope_is_subset("", None));
        assert!(!scope_is_subset("admin", Some("read write")));
        assert!(!scope_is_subset("read", None));
    }
}
