//! What the JWT bearer grants are configured with: where a JWT comes from ([`AssertionSource`]:
//! a workload's platform token, or a user's ID token) and the enterprise identity provider an
//! ID token is exchanged at ([`IdentityProvider`], MCP enterprise-managed authorization).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

use super::ClientAuth;
use crate::error::{BuildError, Error};

/// The largest JWT a source may give: platform tokens and ID tokens are a few kilobytes.
const MAX_JWT_LEN: usize = 64 * 1024;

type Callback = dyn Fn() -> Result<SecretString, String> + Send + Sync;

/// Where a JWT comes from, read again for every token request: a workload's platform token for
/// [`Grant::JwtBearer`](super::Grant::JwtBearer) (RFC 7523 §2.1, MCP workload identity
/// federation), or a user's ID token for [`Grant::IdJag`](super::Grant::IdJag).
///
/// Platform tokens rotate (a Kubernetes projected service account token is rewritten before it
/// expires), so nothing read is kept beyond the request it is read for. What is read is trimmed
/// of surrounding whitespace and must be a non-empty run of visible ASCII no longer than 64 KiB;
/// anything else is refused before a request is made. The JWT is a secret: `Debug` and every
/// error name the source (a path, a variable name), never what it holds.
///
/// ```
/// use audience_cache::AssertionSource;
///
/// let projected = AssertionSource::file("/var/run/secrets/tokens/mcp-token");
/// let from_ci = AssertionSource::env("MCP_ID_TOKEN");
/// let fixed = AssertionSource::value("eyJ…".into());
/// let computed = AssertionSource::callback(|| Ok("eyJ…".into()));
/// assert_eq!(format!("{fixed:?}"), "AssertionSource(value [redacted])");
/// # let _ = (projected, from_ci, computed);
/// ```
#[derive(Clone)]
pub struct AssertionSource {
    from: From,
}

#[derive(Clone)]
enum From {
    File(PathBuf),
    Env(String),
    Value(SecretString),
    Callback(Arc<Callback>),
}

impl AssertionSource {
    /// A file read for each token request (a projected service account token, a CI job's
    /// OIDC token written to disk).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            from: From::File(path.into()),
        }
    }

    /// An environment variable read for each token request.
    pub fn env(name: impl Into<String>) -> Self {
        Self {
            from: From::Env(name.into()),
        }
    }

    /// A JWT given once (it is sent until it is replaced by a new configuration).
    pub fn value(jwt: SecretString) -> Self {
        Self {
            from: From::Value(jwt),
        }
    }

    /// A function called for each token request (a platform SDK, a metadata server client).
    /// Its error text should say what went wrong without the token: it is shown as is.
    pub fn callback(
        read: impl Fn() -> Result<SecretString, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            from: From::Callback(Arc::new(read)),
        }
    }

    /// Reads the JWT now. `setting` names what the source is configured as, for the error.
    pub(crate) fn read(&self, setting: &'static str) -> Result<SecretString, Error> {
        let refuse = |reason: String| {
            Error::Configuration(BuildError::Setting {
                setting,
                reason: format!("{} {reason}", self.described()),
            })
        };
        let text = match &self.from {
            From::File(path) => std::fs::read_to_string(path)
                .map(SecretString::from)
                .map_err(|e| refuse(format!("cannot be read: {e}")))?,
            From::Env(name) => {
                std::env::var(name)
                    .map(SecretString::from)
                    .map_err(|e| match e {
                        std::env::VarError::NotPresent => refuse("is not set".to_owned()),
                        std::env::VarError::NotUnicode(_) => {
                            refuse("does not hold a JWT (it is not Unicode)".to_owned())
                        }
                    })?
            }
            From::Value(jwt) => jwt.clone(),
            From::Callback(read) => read().map_err(|e| refuse(format!("failed: {e}")))?,
        };
        let jwt = text.expose_secret().trim();
        if jwt.is_empty() {
            return Err(refuse("is empty; it must hold a JWT".to_owned()));
        }
        if jwt.len() > MAX_JWT_LEN || !jwt.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse(format!(
                "does not hold a JWT (visible ASCII, at most {MAX_JWT_LEN} bytes)"
            )));
        }
        Ok(SecretString::from(jwt))
    }

    /// The source in words, for messages: never what it holds.
    pub(crate) fn described(&self) -> String {
        match &self.from {
            From::File(path) => format!("the file {:?}", path.display().to_string()),
            From::Env(name) => format!("the environment variable {name:?}"),
            From::Value(_) => "the JWT given".to_owned(),
            From::Callback(_) => "the callback".to_owned(),
        }
    }
}

impl fmt::Debug for AssertionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            From::File(path) => write!(f, "AssertionSource(file {:?})", path.display().to_string()),
            From::Env(name) => write!(f, "AssertionSource(env {name:?})"),
            From::Value(_) => f.write_str("AssertionSource(value [redacted])"),
            From::Callback(_) => f.write_str("AssertionSource(callback)"),
        }
    }
}

/// Equal when they read from the same place (the same path, variable or callback) or hold the
/// same JWT.
impl PartialEq for AssertionSource {
    fn eq(&self, other: &Self) -> bool {
        match (&self.from, &other.from) {
            (From::File(a), From::File(b)) => a == b,
            (From::Env(a), From::Env(b)) => a == b,
            (From::Value(a), From::Value(b)) => a.expose_secret() == b.expose_secret(),
            (From::Callback(a), From::Callback(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for AssertionSource {}

/// The enterprise identity provider (IdP) of [`Grant::IdJag`](super::Grant::IdJag): where the
/// user's ID token is exchanged for an Identity Assertion JWT Authorization Grant (ID-JAG) by
/// RFC 8693 token exchange, and how the client authenticates there. The client at the IdP is
/// another registration than the one at the MCP authorization server: its own id, its own
/// authentication (by default `none`, a public client).
///
/// ```
/// use audience_cache::IdentityProvider;
/// use url::Url;
///
/// let idp = IdentityProvider::new(
///     "https://idp.example.com",
///     Url::parse("https://idp.example.com/oauth2/token")?,
///     "mcp-client-at-idp",
/// )
/// .client_secret_post("idp-s3cret".into());
/// assert!(format!("{idp:?}").contains("[redacted]"));
/// # Ok::<(), url::ParseError>(())
/// ```
#[derive(Clone)]
pub struct IdentityProvider {
    pub(crate) issuer: String,
    pub(crate) token_endpoint: Url,
    pub(crate) client_id: String,
    pub(crate) auth: ClientAuth,
}

impl IdentityProvider {
    /// The IdP `issuer` (the `iss` of the ID-JAGs it issues, compared as an exact string), its
    /// token endpoint, and the client's id there, as a public client.
    pub fn new(
        issuer: impl Into<String>,
        token_endpoint: Url,
        client_id: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            token_endpoint,
            client_id: client_id.into(),
            auth: ClientAuth::None,
        }
    }

    /// Authenticates at the IdP with `client_secret_basic`.
    pub fn client_secret_basic(mut self, secret: SecretString) -> Self {
        self.auth = ClientAuth::Basic(secret);
        self
    }

    /// Authenticates at the IdP with `client_secret_post`.
    pub fn client_secret_post(mut self, secret: SecretString) -> Self {
        self.auth = ClientAuth::Post(secret);
        self
    }

    /// Authenticates at the IdP with `private_key_jwt` (the assertion's `aud` is the IdP's
    /// issuer).
    #[cfg(feature = "private-key-jwt")]
    pub fn private_key_jwt(mut self, key: super::assertion::ClientAssertionKey) -> Self {
        self.auth = ClientAuth::PrivateKeyJwt(key);
        self
    }

    /// The IdP's issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

impl fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityProvider")
            .field("issuer", &self.issuer)
            .field("token_endpoint", &self.token_endpoint.as_str())
            .field("client_id", &self.client_id)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Equal when issuer, token endpoint, client id and authentication method are (secrets are
/// not compared).
impl PartialEq for IdentityProvider {
    fn eq(&self, other: &Self) -> bool {
        self.issuer == other.issuer
            && self.token_endpoint == other.token_endpoint
            && self.client_id == other.client_id
            && format!("{:?}", self.auth) == format!("{:?}", other.auth)
    }
}

impl Eq for IdentityProvider {}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTING: &str = "Grant::JwtBearer assertion";

    fn reason(error: Error) -> String {
        error.to_string()
    }

    #[test]
    fn a_file_is_read_each_time_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("ac-assertion-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let source = AssertionSource::file(&path);
        let missing = reason(source.read(SETTING).unwrap_err());
        assert!(missing.contains("cannot be read"), "{missing}");
        assert!(missing.contains(SETTING), "{missing}");
        std::fs::write(&path, "  \n").unwrap();
        let empty = reason(source.read(SETTING).unwrap_err());
        assert!(empty.contains("is empty"), "{empty}");
        std::fs::write(&path, "first.jwt.sig\n").unwrap();
        assert_eq!(
            source.read(SETTING).unwrap().expose_secret(),
            "first.jwt.sig"
        );
        std::fs::write(&path, "second.jwt.sig").unwrap();
        assert_eq!(
            source.read(SETTING).unwrap().expose_secret(),
            "second.jwt.sig"
        );
        std::fs::write(&path, "not a jwt").unwrap();
        let spaced = reason(source.read(SETTING).unwrap_err());
        assert!(!spaced.contains("not a jwt"), "{spaced}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_and_debug_never_show_the_jwt() {
        let source = AssertionSource::callback(|| Err("metadata server unreachable".to_owned()));
        let error = reason(source.read(SETTING).unwrap_err());
        assert!(
            error.contains("the callback failed: metadata server unreachable"),
            "{error}"
        );
        let secret = AssertionSource::value("secret\u{7}jwt".into());
        let error = reason(secret.read(SETTING).unwrap_err());
        assert!(!error.contains("secret"), "{error}");
        assert!(!format!("{secret:?}").contains("secret\u{7}"));
        assert_eq!(
            format!("{:?}", AssertionSource::env("TOKEN")),
            r#"AssertionSource(env "TOKEN")"#
        );
        let missing = AssertionSource::env("AUDIENCE_CACHE_SURELY_UNSET_VARIABLE");
        let unset = reason(missing.read(SETTING).unwrap_err());
        assert!(
            unset.contains(
                r#"the environment variable "AUDIENCE_CACHE_SURELY_UNSET_VARIABLE" is not set"#
            ),
            "{unset}"
        );
    }
}
