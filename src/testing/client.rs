//! Registered clients and client authentication at the token endpoint (RFC 6749 §2.3).

use std::fmt;

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use secrecy::{ExposeSecret as _, SecretString};

use super::wire::{OAuthError, Params, form_urldecode};

/// A client registered with an [`AuthorizationServer`](super::AuthorizationServer).
///
/// A confidential client may authenticate with `client_secret_basic` or `client_secret_post`
/// (restrict it with [`Client::auth_method`]); a public client sends only its `client_id`
/// (`none`) and may not use the `client_credentials` grant (RFC 6749 §4.4). Every client may
/// redirect to any loopback `http` URI on any port (RFC 8252 §7.3) and to the URIs added with
/// [`Client::redirect_uri`]. The secret never appears in `Debug` output.
///
/// ```
/// use audience_cache::testing::{Client, ClientAuthMethod};
///
/// let backend = Client::confidential("backend", "s3cret").auth_method(ClientAuthMethod::ClientSecretPost);
/// let app = Client::public("cli-app").redirect_uri("https://app.example/callback");
/// assert_eq!(backend.id(), "backend");
/// assert!(!format!("{backend:?}").contains("s3cret"));
/// assert!(app.is_public());
/// ```
#[derive(Clone)]
pub struct Client {
    pub(super) id: String,
    secret: Option<SecretString>,
    redirect_uris: Vec<String>,
    auth_method: Option<ClientAuthMethod>,
    /// The public key of a `private_key_jwt` client.
    #[cfg(feature = "private-key-jwt")]
    pub(super) assertion_key: Option<p256::ecdsa::VerifyingKey>,
}

impl Client {
    /// A confidential client with a shared secret. The secret may contain any characters;
    /// with `client_secret_basic` the client must form-urlencode it before base64, as
    /// RFC 6749 §2.3.1 requires, and the server decodes it accordingly.
    pub fn confidential(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: Some(SecretString::from(secret.into())),
            redirect_uris: Vec::new(),
            auth_method: None,
            #[cfg(feature = "private-key-jwt")]
            assertion_key: None,
        }
    }

    /// A client that authenticates with `private_key_jwt` (RFC 7523 §2.2): an ES256 assertion
    /// signed by the key whose public half is `jwk` (an EC P-256 JWK, as
    /// [`ClientAssertionKey::public_jwk`](crate::config::assertion::ClientAssertionKey::public_jwk) gives it).
    /// The server checks the signature, `iss` and `sub` (the client id), `aud` (its issuer or
    /// token endpoint), `exp` (in the future, at most five minutes away) and that the `jti`
    /// was not used before. `None` if `jwk` is not a P-256 public key. Feature
    /// `private-key-jwt`.
    #[cfg(feature = "private-key-jwt")]
    pub fn private_key_jwt(id: impl Into<String>, jwk: &serde_json::Value) -> Option<Self> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
            return None;
        }
        let coordinate = |name: &str| -> Option<p256::FieldBytes> {
            let bytes = URL_SAFE_NO_PAD.decode(jwk[name].as_str()?).ok()?;
            (bytes.len() == 32).then(|| *p256::FieldBytes::from_slice(&bytes))
        };
        let point = p256::EncodedPoint::from_affine_coordinates(
            &coordinate("x")?,
            &coordinate("y")?,
            false,
        );
        let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point).ok()?;
        Some(Self {
            id: id.into(),
            secret: None,
            redirect_uris: Vec::new(),
            auth_method: Some(ClientAuthMethod::PrivateKeyJwt),
            assertion_key: Some(key),
        })
    }

    /// A public client (token endpoint authentication method `none`).
    pub fn public(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            redirect_uris: Vec::new(),
            auth_method: None,
            #[cfg(feature = "private-key-jwt")]
            assertion_key: None,
        }
    }

    /// Also accept this exact redirect URI at `/authorize`, besides loopback ones.
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    /// Accept only this authentication method from this client; any other is `invalid_client`.
    /// By default a confidential client may use either secret method.
    pub fn auth_method(mut self, method: ClientAuthMethod) -> Self {
        self.auth_method = Some(method);
        self
    }

    /// The `client_id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this is a public client (no secret, no assertion key).
    pub fn is_public(&self) -> bool {
        self.secret.is_none() && self.auth_method != Some(ClientAuthMethod::PrivateKeyJwt)
    }

    /// Whether `/authorize` may redirect to `uri`: one registered with
    /// [`Client::redirect_uri`] (exact string), or an `http` URI on a loopback host
    /// (`127.0.0.1`, `[::1]`, `localhost`) with any port and no fragment (RFC 8252 §7.3).
    pub(crate) fn allows_redirect(&self, uri: &str) -> bool {
        if self.redirect_uris.iter().any(|r| r == uri) {
            return true;
        }
        match url::Url::parse(uri) {
            Ok(url) => {
                url.scheme() == "http"
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
            }
            Err(_) => false,
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("public", &self.is_public())
            .field("redirect_uris", &self.redirect_uris)
            .field("auth_method", &self.auth_method)
            .finish_non_exhaustive()
    }
}

/// How a client authenticated at the token endpoint (the RFC 8414 / RFC 7591 method names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_secret_post`: `client_id` and `client_secret` in the request body.
    ClientSecretPost,
    /// `none`: a public client sending only `client_id`.
    None,
    /// `private_key_jwt`: a signed JWT in `client_assertion` (RFC 7523 §2.2).
    PrivateKeyJwt,
}

impl ClientAuthMethod {
    /// The registered name, e.g. `"client_secret_basic"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

impl fmt::Display for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a token request presented for client authentication, before it is checked.
pub(crate) struct Presented {
    pub(crate) method: Option<ClientAuthMethod>,
    pub(crate) client_id: Option<String>,
    secret: Option<SecretString>,
    /// A `client_assertion` (never recorded).
    assertion: Option<SecretString>,
    /// A malformed or contradictory presentation, reported after recording the request.
    problem: Option<OAuthError>,
}

/// `client_assertion_type` for a JWT (RFC 7523 §2.2).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

impl Presented {
    /// Reads the `Authorization` header and the `client_id` / `client_secret` parameters.
    pub(crate) fn read(headers: &HeaderMap, params: &Params) -> Self {
        if let Some(kind) = params.first("client_assertion_type") {
            return Self::read_assertion(kind, headers, params);
        }
        let body_id = params.first("client_id").map(str::to_owned);
        let body_secret = params.first("client_secret").map(str::to_owned);
        let Some(authorization) = headers.get(header::AUTHORIZATION) else {
            return match (body_id, body_secret) {
                (id, Some(secret)) => Self {
                    method: Some(ClientAuthMethod::ClientSecretPost),
                    problem: id.is_none().then(|| {
                        OAuthError::invalid_client("client_secret without client_id", false)
                    }),
                    client_id: id,
                    secret: Some(SecretString::from(secret)),
                    assertion: None,
                },
                (Some(id), None) => Self {
                    method: Some(ClientAuthMethod::None),
                    client_id: Some(id),
                    secret: None,
                    assertion: None,
                    problem: None,
                },
                (None, None) => Self {
                    method: None,
                    client_id: None,
                    secret: None,
                    assertion: None,
                    problem: Some(OAuthError::invalid_client(
                        "no client authentication",
                        false,
                    )),
                },
            };
        };
        let mut presented = match decode_basic(authorization.as_bytes()) {
            Some((id, secret)) => Self {
                method: Some(ClientAuthMethod::ClientSecretBasic),
                client_id: Some(id),
                secret: Some(SecretString::from(secret)),
                assertion: None,
                problem: None,
            },
            None => Self {
                method: Some(ClientAuthMethod::ClientSecretBasic),
                client_id: None,
                secret: None,
                assertion: None,
                problem: Some(OAuthError::invalid_client(
                    "malformed Basic credentials (RFC 6749 §2.3.1)",
                    true,
                )),
            },
        };
        if presented.problem.is_none() {
            // RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
            if body_secret.is_some() {
                presented.problem = Some(OAuthError::invalid_request(
                    "client authenticated with both client_secret_basic and client_secret_post",
                ));
            } else if body_id.is_some() && body_id != presented.client_id {
                presented.problem = Some(OAuthError::invalid_request(
                    "client_id in the body differs from the Basic credentials",
                ));
            }
        }
        presented
    }

    /// A `private_key_jwt` presentation: the client id is the body's, else the assertion's
    /// `iss`; a second method alongside is refused.
    fn read_assertion(kind: &str, headers: &HeaderMap, params: &Params) -> Self {
        let assertion = params.first("client_assertion").map(str::to_owned);
        let client_id = params
            .first("client_id")
            .map(str::to_owned)
            .or_else(|| assertion.as_deref().and_then(unverified_issuer));
        let problem = if kind != JWT_BEARER {
            Some(OAuthError::invalid_client(
                "unsupported client_assertion_type",
                false,
            ))
        } else if assertion.is_none() {
            Some(OAuthError::invalid_client(
                "client_assertion is missing",
                false,
            ))
        } else if headers.contains_key(header::AUTHORIZATION)
            || params.first("client_secret").is_some()
        {
            Some(OAuthError::invalid_request(
                "client authenticated with more than one method",
            ))
        } else {
            None
        };
        Self {
            method: Some(ClientAuthMethod::PrivateKeyJwt),
            client_id,
            secret: None,
            assertion: assertion.map(SecretString::from),
            problem,
        }
    }

    /// Checks the presentation against the registered clients; `verify` checks a
    /// `private_key_jwt` assertion against the client found.
    pub(crate) fn authenticate(
        &self,
        lookup: impl FnOnce(&str) -> Option<Client>,
        verify: impl FnOnce(&Client, &str) -> Result<(), OAuthError>,
    ) -> Result<Client, OAuthError> {
        let basic = self.method == Some(ClientAuthMethod::ClientSecretBasic);
        if let Some(problem) = &self.problem {
            return Err(problem.clone());
        }
        let (Some(id), Some(method)) = (&self.client_id, self.method) else {
            return Err(OAuthError::invalid_client(
                "no client authentication",
                basic,
            ));
        };
        let Some(client) = lookup(id) else {
            return Err(OAuthError::invalid_client("unknown client", basic));
        };
        if client.auth_method.is_some_and(|allowed| allowed != method) {
            return Err(OAuthError::invalid_client(
                format!("client may not use {method}"),
                basic,
            ));
        }
        if method == ClientAuthMethod::PrivateKeyJwt {
            let assertion = self
                .assertion
                .as_ref()
                .map(|a| a.expose_secret())
                .unwrap_or_default();
            return verify(&client, assertion).map(|()| client);
        }
        match (&client.secret, &self.secret) {
            (Some(expected), Some(given)) if expected.expose_secret() == given.expose_secret() => {
                Ok(client)
            }
            (Some(_), Some(_)) => Err(OAuthError::invalid_client("bad client secret", basic)),
            (Some(_), None) => Err(OAuthError::invalid_client(
                "confidential client sent no secret",
                basic,
            )),
            (None, None) => Ok(client),
            (None, Some(_)) => Err(OAuthError::invalid_client(
                "public client sent a secret",
                basic,
            )),
        }
    }
}

/// The `iss` of a JWT's payload, unverified (only to find the client whose key verifies it).
fn unverified_issuer(jwt: &str) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1)?).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    claims["iss"].as_str().map(str::to_owned)
}

/// Decodes `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1, RFC 7617).
///
/// The split is at the first `:` of the decoded text: an encoded id cannot contain a raw `:`.
fn decode_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let credentials = credentials.trim();
    let decoded = STANDARD
        .decode(credentials)
        .or_else(|_| STANDARD_NO_PAD.decode(credentials))
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let id = form_urldecode(id)?;
    if id.is_empty() {
        return None;
    }
    Some((id, form_urldecode(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::collections::HashMap;

    /// What a correct client sends: each part form-urlencoded, then base64 (RFC 6749 §2.3.1).
    fn basic(id: &str, secret: &str) -> HeaderValue {
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let value = format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", encode(id), encode(secret)))
        );
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Basic invalid"))
    }

    fn clients() -> HashMap<String, Client> {
        [
            Client::confidential("svc:1", "a:+/%& b"),
            Client::confidential("post-only", "pw").auth_method(ClientAuthMethod::ClientSecretPost),
            Client::public("cli"),
            Client::confidential("plus", "a+b"),
        ]
        .into_iter()
        .map(|c| (c.id().to_owned(), c))
        .collect()
    }

    fn auth(
        headers: &[(header::HeaderName, HeaderValue)],
        body: &str,
    ) -> Result<String, OAuthError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name.clone(), value.clone());
        }
        let clients = clients();
        Presented::read(&map, &Params::parse(body.as_bytes()))
            .authenticate(|id| clients.get(id).cloned(), |_, _| Ok(()))
            .map(|c| c.id().to_owned())
    }

    #[test]
    fn basic_credentials_are_form_urldecoded_after_base64() {
        // The secret holds every character §2.3.1 encoding changes; the id holds a colon.
        let ok = auth(&[(header::AUTHORIZATION, basic("svc:1", "a:+/%& b"))], "");
        assert_eq!(ok.as_deref(), Ok("svc:1"));
    }

    #[test]
    fn basic_without_the_urlencoding_step_fails_for_special_secrets() {
        // A client that skips form-urlencoding sends a raw '+', which decodes as a space.
        let raw = HeaderValue::from_static("Basic cGx1czphK2I="); // base64("plus:a+b")
        let err = auth(&[(header::AUTHORIZATION, raw)], "");
        assert!(matches!(
            err,
            Err(OAuthError {
                error: "invalid_client",
                basic_challenge: true,
                ..
            })
        ));
        let encoded = auth(&[(header::AUTHORIZATION, basic("plus", "a+b"))], "");
        assert_eq!(encoded.as_deref(), Ok("plus"));
    }

    #[test]
    fn client_secret_post_and_public_clients() {
        assert_eq!(
            auth(&[], "client_id=post-only&client_secret=pw").as_deref(),
            Ok("post-only")
        );
        assert_eq!(
            auth(&[], "client_id=svc%3A1&client_secret=a%3A%2B%2F%25%26+b").as_deref(),
            Ok("svc:1")
        );
        assert_eq!(auth(&[], "client_id=cli").as_deref(), Ok("cli"));
    }

    #[test]
    fn failures_name_the_right_error() {
        // (body, error, WWW-Authenticate: Basic expected)
        let cases = [
            ("", "invalid_client", false),
            ("client_id=nobody", "invalid_client", false),
            ("client_id=svc%3A1", "invalid_client", false),
            (
                "client_id=svc%3A1&client_secret=wrong",
                "invalid_client",
                false,
            ),
            ("client_id=cli&client_secret=x", "invalid_client", false),
            ("client_secret=pw", "invalid_client", false),
        ];
        for (body, error, basic_challenge) in cases {
            let err = auth(&[], body).err();
            assert_eq!(err.as_ref().map(|e| e.error), Some(error), "{body}");
            assert_eq!(
                err.map(|e| e.basic_challenge),
                Some(basic_challenge),
                "{body}"
            );
        }
        let wrong = auth(&[(header::AUTHORIZATION, basic("svc:1", "nope"))], "");
        assert!(matches!(
            wrong,
            Err(OAuthError {
                error: "invalid_client",
                basic_challenge: true,
                ..
            })
        ));
        let unknown = auth(&[(header::AUTHORIZATION, basic("ghost", "x"))], "");
        assert!(matches!(
            unknown,
            Err(OAuthError {
                basic_challenge: true,
                ..
            })
        ));
        let restricted = auth(&[(header::AUTHORIZATION, basic("post-only", "pw"))], "");
        assert!(matches!(
            restricted,
            Err(OAuthError {
                error: "invalid_client",
                ..
            })
        ));
        let both = auth(
            &[(header::AUTHORIZATION, basic("svc:1", "a:+/%& b"))],
            "client_secret=a%3A%2B%2F%25%26+b",
        );
        assert!(matches!(
            both,
            Err(OAuthError {
                error: "invalid_request",
                ..
            })
        ));
        for garbage in ["Basic", "Basic !!!", "Bearer abc", "Basic Og=="] {
            let value = HeaderValue::from_static(garbage);
            let err = auth(&[(header::AUTHORIZATION, value)], "");
            assert!(
                matches!(
                    err,
                    Err(OAuthError {
                        error: "invalid_client",
                        ..
                    })
                ),
                "{garbage}"
            );
        }
    }

    #[test]
    fn loopback_redirects_on_any_port_and_registered_ones() {
        let client = Client::public("cli").redirect_uri("https://app.example/cb");
        for ok in [
            "http://127.0.0.1:1234/cb",
            "http://localhost:9/x",
            "http://[::1]:80/",
            "https://app.example/cb",
        ] {
            assert!(client.allows_redirect(ok), "{ok}");
        }
        for bad in [
            "https://127.0.0.1:1/cb",
            "http://evil.test/cb",
            "http://127.0.0.1/cb#f",
            "http://u@127.0.0.1/",
            "cb",
        ] {
            assert!(!client.allows_redirect(bad), "{bad}");
        }
    }
}
