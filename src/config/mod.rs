//! Configuration: the client registrations (one per authorization server) and the resources,
//! checked when the cache is built.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

#[cfg(feature = "private-key-jwt")]
pub(crate) mod assertion;
#[cfg(feature = "dpop")]
mod dpop_key;
#[cfg(any(feature = "private-key-jwt", feature = "dpop"))]
pub(crate) mod es256;
pub(crate) mod federation;

pub use federation::{AssertionSource, IdentityProvider};

#[cfg(feature = "dpop")]
pub use dpop_key::DpopKey;

/// Without the `dpop` feature there is no key: the type has no values, so every path that
/// would use one is dead code the compiler knows about.
#[cfg(not(feature = "dpop"))]
#[derive(Clone, Debug)]
pub(crate) enum DpopKey {}

#[cfg(not(feature = "dpop"))]
impl DpopKey {
    pub(crate) fn thumbprint(&self) -> &str {
        match *self {}
    }

    pub(crate) fn algorithm(&self) -> &'static str {
        match *self {}
    }

    pub(crate) fn proof(&self, _: &str, _: &str, _: Option<&str>, _: Option<&str>) -> String {
        match *self {}
    }
}

use crate::audience::AudiencePolicy;
use crate::error::BuildError;
use crate::resource::{ParseOptions, ResourceUri};
use crate::scope::ScopeSet;

/// How the client authenticates at the token endpoint (RFC 6749 §2.3).
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret, each form-urlencoded first
    /// (`client_secret_basic`, RFC 6749 §2.3.1).
    Basic(SecretString),
    /// The client id and secret in the request body (`client_secret_post`).
    Post(SecretString),
    /// A public client: the client id in the body, no secret (`none`).
    None,
    /// `private_key_jwt` (RFC 7523 §2.2): a JWT signed with the client's ES256 key in every
    /// token request (feature `private-key-jwt`).
    #[cfg(feature = "private-key-jwt")]
    PrivateKeyJwt(assertion::ClientAssertionKey),
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Basic(_) => "client_secret_basic([redacted])",
            Self::Post(_) => "client_secret_post([redacted])",
            Self::None => "none",
            #[cfg(feature = "private-key-jwt")]
            Self::PrivateKeyJwt(_) => "private_key_jwt([redacted])",
        })
    }
}

/// What the cache does on a miss for a resource of this authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grant {
    /// Fetch a token with the client credentials grant (RFC 6749 §4.4). The default for a
    /// client with a secret.
    ClientCredentials,
    /// Tokens come from a user's authorization (authorization code with PKCE, RFC 6749 §4.1,
    /// RFC 7636): a miss uses a cached refresh token, or fails with
    /// [`Error::AuthorizationRequired`](crate::error::Error::AuthorizationRequired). The default for
    /// a public client.
    AuthorizationCode {
        /// The redirect URI registered for the client.
        redirect_uri: Url,
    },
    /// The JWT bearer grant (RFC 7523 §2.1) with a workload's platform token as `assertion`
    /// (MCP workload identity federation): a CI job's or a pod's JWT, read from `assertion`
    /// for every token request (platform tokens rotate). The client authenticates as its
    /// registration says, `none` for a public client (the client id in the body only).
    ///
    /// An `invalid_grant`, `invalid_scope` or `unauthorized_client` answer is reported as
    /// [`Error::OAuth`](crate::error::Error::OAuth); the assertion it refused is not sent
    /// again (the source must give a new one), and no other grant is tried. A refresh token in
    /// an answer is not kept: the next token comes from the current assertion. The tokens act
    /// for this process's assertion and never go to a shared level.
    ///
    /// ```
    /// use audience_cache::{AssertionSource, Grant, PreRegistered};
    ///
    /// let workload = PreRegistered::jwt_bearer(
    ///     "my-workload",
    ///     AssertionSource::file("/var/run/secrets/tokens/mcp-token"),
    /// )
    /// .at_issuer("https://auth.example.com");
    /// # let _ = workload;
    /// ```
    JwtBearer {
        /// Where the workload's JWT is read from.
        assertion: AssertionSource,
    },
    /// Enterprise-managed authorization (MCP SEP-990, the Identity Assertion JWT Authorization
    /// Grant): the user's `id_token` is exchanged at the enterprise `idp` (RFC 8693, for an
    /// ID-JAG naming this authorization server and the resource), then the ID-JAG is presented
    /// to this authorization server with the JWT bearer grant (RFC 7523 §2.1).
    ///
    /// The ID-JAG is decoded before it is sent: its `typ` must be `oauth-id-jag+jwt`, its `iss`
    /// the IdP, its `aud` this authorization server's issuer and its `resource` the resource
    /// asked for; anything else is refused ([`Error::Protocol`](crate::error::Error::Protocol))
    /// and goes nowhere. ID-JAGs are kept for their short lifetime, per IdP, authorization
    /// server, resource, scopes and ID token, so concurrent misses make one exchange; the
    /// access tokens obtained this way are keyed apart from every other grant's
    /// ([`CacheKey`](crate::CacheKey)) and, acting for the user of this process's ID token,
    /// never go to a shared level.
    ///
    /// A cache with this grant acts for one user at a time: its access tokens are keyed by the
    /// IdP, not by whose ID token was exchanged (the source is read on a miss, not on every
    /// hit). When the source starts giving another user's ID token, build a new cache (or
    /// [`invalidate`](crate::TokenCache::invalidate) the tokens handed out), or the first
    /// user's cached tokens are served until they expire. For many users in one process, use
    /// [`TokenCache::exchange_token`](crate::TokenCache::exchange_token) with each user's token.
    ///
    /// ```
    /// use audience_cache::{AssertionSource, Grant, IdentityProvider, PreRegistered};
    /// use url::Url;
    ///
    /// let idp = IdentityProvider::new(
    ///     "https://idp.example.com",
    ///     Url::parse("https://idp.example.com/oauth2/token")?,
    ///     "mcp-client-at-idp",
    /// );
    /// let client = PreRegistered::confidential("mcp-client", "s3cret".into())
    ///     .at_issuer("https://auth.example.com")
    ///     .grant(Grant::IdJag { idp, id_token: AssertionSource::env("ID_TOKEN") });
    /// # let _ = client;
    /// # Ok::<(), url::ParseError>(())
    /// ```
    IdJag {
        /// The enterprise identity provider and the client there.
        idp: IdentityProvider,
        /// The user's ID token, read for every exchange at the IdP.
        id_token: AssertionSource,
    },
}

/// A client registered in advance at one or more authorization servers (MCP 2025-11-25
/// "pre-registration"): its id, how it authenticates, and the issuers it is registered at.
/// Discovery turns it into a [`ClientRegistration`] at the issuer it finds, and only at one of
/// those: a resource server names its authorization server, and a client secret must never go
/// to one that the resource server chose ([`Error::UntrustedIssuer`](crate::error::Error::UntrustedIssuer)).
///
/// ```
/// use audience_cache::PreRegistered;
///
/// let client = PreRegistered::client_secret_basic("my-client", "s3cret".into())
///     .at_issuer("https://auth.example.com");
/// assert!(client.is_registered_at("https://auth.example.com"));
/// assert!(!client.is_registered_at("https://evil.example.com"));
/// ```
#[derive(Debug, Clone)]
pub struct PreRegistered {
    pub(crate) client_id: String,
    pub(crate) auth: ClientAuth,
    pub(crate) redirect_uri: Option<Url>,
    issuers: Vec<String>,
    any_issuer: bool,
    /// `client_secret_basic` unless the server supports only `client_secret_post`.
    pub(crate) method_from_metadata: bool,
    /// The DPoP key of the registrations discovery makes from it, if it has its own.
    pub(crate) dpop_key: Option<DpopKey>,
    /// The grant chosen with [`grant`](Self::grant), if any.
    pub(crate) grant: Option<Grant>,
}

impl PreRegistered {
    /// A confidential client using `client_secret_basic` and the client credentials grant.
    pub fn client_secret_basic(client_id: impl Into<String>, secret: SecretString) -> Self {
        Self::new(client_id.into(), ClientAuth::Basic(secret), None)
    }

    /// A confidential client using `client_secret_post` and the client credentials grant.
    pub fn client_secret_post(client_id: impl Into<String>, secret: SecretString) -> Self {
        Self::new(client_id.into(), ClientAuth::Post(secret), None)
    }

    /// A public client using the authorization code grant with PKCE and this redirect URI.
    pub fn public(client_id: impl Into<String>, redirect_uri: Url) -> Self {
        Self::new(client_id.into(), ClientAuth::None, Some(redirect_uri))
    }

    /// A confidential client authenticating with `private_key_jwt` (an assertion signed with
    /// `key`, no shared secret); it uses the client credentials grant, or the authorization
    /// code grant once given a [`redirect_uri`](Self::redirect_uri).
    #[cfg(feature = "private-key-jwt")]
    pub fn private_key_jwt(
        client_id: impl Into<String>,
        key: assertion::ClientAssertionKey,
    ) -> Self {
        Self::new(client_id.into(), ClientAuth::PrivateKeyJwt(key), None)
    }

    /// A confidential client whose authentication method is chosen from the server's
    /// `token_endpoint_auth_methods_supported`: `client_secret_basic`, or `client_secret_post`
    /// where the server lists only that. It uses the client credentials grant, or the
    /// authorization code grant once given a [`redirect_uri`](Self::redirect_uri).
    pub fn confidential(client_id: impl Into<String>, secret: SecretString) -> Self {
        let mut client = Self::new(client_id.into(), ClientAuth::Basic(secret), None);
        client.method_from_metadata = true;
        client
    }

    /// A public client (no secret: `none` at the token endpoint, its id in the body) using the
    /// JWT bearer grant with a workload's platform token ([`Grant::JwtBearer`]).
    pub fn jwt_bearer(client_id: impl Into<String>, assertion: AssertionSource) -> Self {
        Self::new(client_id.into(), ClientAuth::None, None).grant(Grant::JwtBearer { assertion })
    }

    /// Chooses what a miss does at the issuers this client is registered at (see [`Grant`]),
    /// as [`ClientRegistration::grant`] does.
    pub fn grant(mut self, grant: Grant) -> Self {
        self.grant = Some(grant);
        self
    }

    /// Uses the authorization code grant with PKCE and this redirect URI (also for a client
    /// with a secret, which then authenticates its code and refresh requests).
    pub fn redirect_uri(mut self, redirect_uri: Url) -> Self {
        self.redirect_uri = Some(redirect_uri);
        self
    }

    fn new(client_id: String, auth: ClientAuth, redirect_uri: Option<Url>) -> Self {
        Self {
            client_id,
            auth,
            redirect_uri,
            issuers: Vec::new(),
            any_issuer: false,
            method_from_metadata: false,
            dpop_key: None,
            grant: None,
        }
    }

    /// Proves possession of DPoP-bound tokens (RFC 9449, feature `dpop`) with `key` at every
    /// issuer this client is used at; see [`ClientRegistration::dpop_key`].
    #[cfg(feature = "dpop")]
    pub fn dpop_key(mut self, key: DpopKey) -> Self {
        self.dpop_key = Some(key);
        self
    }

    /// An issuer the client is registered at (compared as an exact string). Call it once per
    /// authorization server; discovery refuses every other one.
    pub fn at_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Lets a *public* client (no secret) be used at whatever authorization server a resource
    /// server names. Without a secret nothing leaks, but the user is sent to log in where the
    /// resource server chose: use it only where the user sees and approves that server. Has no
    /// effect on a confidential client, whose secret only goes to its listed issuers, nor on
    /// a client whose grant sends a JWT ([`Grant::JwtBearer`], [`Grant::IdJag`]): a workload's
    /// token or a user's ID-JAG is a credential too.
    pub fn at_any_issuer_without_a_secret(mut self) -> Self {
        self.any_issuer = true;
        self
    }

    /// Whether `issuer` is one of the issuers listed with [`at_issuer`](Self::at_issuer) (not
    /// merely allowed by [`at_any_issuer_without_a_secret`](Self::at_any_issuer_without_a_secret)).
    pub(crate) fn lists(&self, issuer: &str) -> bool {
        self.issuers.iter().any(|i| i == issuer)
    }

    /// Whether discovery may use this client at `issuer`.
    pub fn is_registered_at(&self, issuer: &str) -> bool {
        self.issuers.iter().any(|i| i == issuer)
            || (self.any_issuer
                && matches!(self.auth, ClientAuth::None)
                && !matches!(
                    self.grant,
                    Some(Grant::JwtBearer { .. } | Grant::IdJag { .. })
                ))
    }
}

/// A client's registration at one authorization server: where its token endpoint is, who the
/// client is and how it authenticates.
///
/// ```
/// use audience_cache::ClientRegistration;
/// use url::Url;
///
/// let registration = ClientRegistration::new(
///     "https://auth.example.com",
///     Url::parse("https://auth.example.com/oauth/token")?,
///     "my-client",
/// )
/// .client_secret_basic("s3cret".into());
/// assert!(format!("{registration:?}").contains("[redacted]"));
/// # Ok::<(), url::ParseError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    pub(crate) issuer: String,
    pub(crate) token_endpoint: Url,
    pub(crate) authorization_endpoint: Option<Url>,
    pub(crate) client_id: String,
    pub(crate) auth: ClientAuth,
    pub(crate) grant: Option<Grant>,
    pub(crate) require_iss: bool,
    pub(crate) offline_access: bool,
    /// Made by a [`ClientRegistrar`](crate::authorization::ClientRegistrar) for a discovered server, not
    /// configured by the user.
    pub(crate) discovered: bool,
    /// The key this client proves possession of DPoP-bound tokens with (RFC 9449): its own,
    /// or, once the cache has it, the one the cache gave it.
    pub(crate) dpop_key: Option<DpopKey>,
}

impl ClientRegistration {
    /// A public client (no secret) of the authorization server `issuer` (its RFC 8414 issuer
    /// identifier, compared as an exact string everywhere), with its token endpoint.
    pub fn new(
        issuer: impl Into<String>,
        token_endpoint: Url,
        client_id: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            token_endpoint,
            authorization_endpoint: None,
            client_id: client_id.into(),
            auth: ClientAuth::None,
            grant: None,
            require_iss: false,
            offline_access: false,
            discovered: false,
            dpop_key: None,
        }
    }

    /// Authenticates with `client_secret_basic`.
    pub fn client_secret_basic(mut self, secret: SecretString) -> Self {
        self.auth = ClientAuth::Basic(secret);
        self
    }

    /// Authenticates with `client_secret_post`.
    pub fn client_secret_post(mut self, secret: SecretString) -> Self {
        self.auth = ClientAuth::Post(secret);
        self
    }

    /// Authenticates with `private_key_jwt`: every token request carries a fresh assertion
    /// signed with `key`, whose `aud` is the issuer.
    #[cfg(feature = "private-key-jwt")]
    pub fn private_key_jwt(mut self, key: assertion::ClientAssertionKey) -> Self {
        self.auth = ClientAuth::PrivateKeyJwt(key);
        self
    }

    /// Proves possession of DPoP-bound tokens (RFC 9449, feature `dpop`) with `key`: this
    /// client's token requests for resources that use DPoP carry proofs signed with it, its
    /// bound tokens are sent with proofs signed with it, and its tokens are cached under the
    /// key's thumbprint (a token bound to one key is never served for another). Give each
    /// registration its own key so that authorization servers cannot link the client by its
    /// key; load one key with [`DpopKey::from_pkcs8_pem`] in every process of a fleet that
    /// shares tokens. Without it the registration gets the cache's key, if the cache gives
    /// one ([`TokenCacheBuilder::dpop_key`](crate::TokenCacheBuilder::dpop_key),
    /// [`TokenCacheBuilder::generate_dpop_keys`](crate::TokenCacheBuilder::generate_dpop_keys)).
    #[cfg(feature = "dpop")]
    pub fn dpop_key(mut self, key: DpopKey) -> Self {
        self.dpop_key = Some(key);
        self
    }

    /// The RFC 7638 thumbprint of the key this client proves possession with, if it has one.
    #[cfg(feature = "dpop")]
    pub fn dpop_thumbprint(&self) -> Option<&str> {
        self.dpop_key.as_ref().map(DpopKey::thumbprint)
    }

    /// Sets the authorization endpoint, needed for the authorization code grant.
    pub fn authorization_endpoint(mut self, endpoint: Url) -> Self {
        self.authorization_endpoint = Some(endpoint);
        self
    }

    /// Chooses what a miss does (see [`Grant`]); without it, a client with a secret uses client
    /// credentials and a public client needs a user's authorization.
    pub fn grant(mut self, grant: Grant) -> Self {
        self.grant = Some(grant);
        self
    }

    /// Requires the RFC 9207 `iss` parameter on authorization responses. Set it when the
    /// server's metadata says `authorization_response_iss_parameter_supported` (discovery does
    /// this): a response without `iss` is then refused, because RFC 9207 §2.4 says a client
    /// must not accept one from such a server (mix-up defence). Without it, `iss` is checked
    /// when present.
    pub fn require_authorization_response_iss(mut self, require: bool) -> Self {
        self.require_iss = require;
        self
    }

    /// Adds `offline_access` to the scopes of every request of this client, to get a refresh
    /// token from servers that issue them only then (OpenID Connect Core §11; MCP SEP-2207).
    /// It is part of the cache keys like any other scope (it changes what the server returns).
    /// Set it only where the server lists `offline_access` in `scopes_supported` (a
    /// [`ClientRegistrar`](crate::authorization::ClientRegistrar) with `offline_access(true)` does that).
    pub fn request_offline_access(mut self, request: bool) -> Self {
        self.offline_access = request;
        self
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub(crate) fn effective_grant(&self) -> Option<&Grant> {
        self.grant.as_ref()
    }
}

/// A resource the cache issues tokens for: its identifier, the authorization server that
/// issues them, the scopes asked for by default and the audience rules.
///
/// ```
/// use audience_cache::{AudienceMode, AudiencePolicy, ResourceConfig, ResourceUri, ScopeSet};
///
/// let resource = ResourceConfig::new(
///     ResourceUri::parse("https://mcp.example.com/mcp")?,
///     "https://auth.example.com",
/// )
/// .scopes(ScopeSet::parse("mcp:read")?)
/// .audience(AudiencePolicy::new(AudienceMode::DenyOnMismatch).with_alias("api://mcp"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResourceConfig {
    pub(crate) resource: ResourceUri,
    pub(crate) issuer: String,
    pub(crate) scopes: ScopeSet,
    pub(crate) audience: AudiencePolicy,
}

impl ResourceConfig {
    /// Tokens for `resource` come from the authorization server `issuer` (which needs a
    /// [`ClientRegistration`]).
    pub fn new(resource: ResourceUri, issuer: impl Into<String>) -> Self {
        Self {
            resource,
            issuer: issuer.into(),
            scopes: ScopeSet::empty(),
            audience: AudiencePolicy::default(),
        }
    }

    /// The scopes requested when the caller names none (empty by default: no `scope` is sent).
    ///
    /// Set the scopes the resource server requires for the calls you make: the `scope` of its
    /// 401 challenge, or what its protected resource metadata lists in `scopes_supported` (an
    /// MCP server built with the TypeScript SDK usually requires `mcp:read`, say). Without them
    /// the authorization server issues a token with its default scopes, the first requests are
    /// answered 403 `insufficient_scope`, and each retries once with the scopes the challenge
    /// names (a second token request). A resource found by discovery gets these scopes from
    /// the challenge or the metadata by itself.
    pub fn scopes(mut self, scopes: ScopeSet) -> Self {
        self.scopes = scopes;
        self
    }

    /// The audience rules (default: [`AudienceMode::DenyOnMismatch`](crate::audience::AudienceMode) and
    /// no aliases).
    pub fn audience(mut self, policy: AudiencePolicy) -> Self {
        self.audience = policy;
        self
    }

    /// The resource.
    pub fn resource(&self) -> &ResourceUri {
        &self.resource
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

/// Checks a URL used as an endpoint with the same rules as a resource identifier (https, or
/// http on loopback by opt-in; no fragment, userinfo or confusable host).
pub(crate) fn check_endpoint(
    issuer: &str,
    endpoint: &'static str,
    url: &Url,
    options: &ParseOptions,
) -> Result<Url, BuildError> {
    ResourceUri::parse_with(url.as_str(), options)
        .map(|checked| checked.as_url().clone())
        .map_err(|e| BuildError::InvalidEndpoint {
            issuer: issuer.to_owned(),
            endpoint,
            reason: url_problem(endpoint, &e),
        })
}

/// Why an issuer or endpoint URL is refused, in words about that URL: plain http names the
/// development switch a user can reach, not the resource parser's options.
fn url_problem(what: &str, error: &crate::resource::ResourceError) -> String {
    match error {
        crate::resource::ResourceError::InsecureScheme { .. } => format!(
            "the {what} uses plain http; it must be https (plain http is allowed only on a loopback host, for development: TokenCacheBuilder::allow_insecure_http_on_loopback(true))"
        ),
        other => other.to_string(),
    }
}

/// RFC 8414 §2: an issuer is an https URL with no query and no fragment.
pub(crate) fn check_issuer(issuer: &str, options: &ParseOptions) -> Result<(), BuildError> {
    let invalid = |reason: String| BuildError::InvalidIssuer {
        issuer: issuer.to_owned(),
        reason,
    };
    let parsed =
        ResourceUri::parse_with(issuer, options).map_err(|e| invalid(url_problem("issuer", &e)))?;
    if parsed.as_url().query().is_some() {
        return Err(invalid(
            "it has a query; remove it (RFC 8414 §2: an issuer has no query or fragment)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Checks that a duration setting is within bounds.
pub(crate) fn check_duration(
    setting: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, BuildError> {
    if value < min || value > max {
        return Err(BuildError::Setting {
            setting,
            reason: format!("{value:?} is outside {min:?}..={max:?}"),
        });
    }
    Ok(value)
}
