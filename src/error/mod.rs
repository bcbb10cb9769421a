//! The crate's errors, below every module that returns them: the runtime [`Error`] (what
//! went wrong getting or handing out a token, and whether trying again can help), the
//! configuration error [`BuildError`] and discovery's [`DiscoveryError`].

mod build;
mod discovery;

use std::fmt;
use std::time::Duration;

use crate::audience::Refusal;

pub use build::BuildError;
pub use discovery::{AddressClass, DiscoveryError};

/// An error from the authorization server's token endpoint (RFC 6749 §5.2), as the server sent
/// it. `description` and `uri` are untrusted text from the server; they are shown escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The `error` code, such as `invalid_client` or `invalid_grant`.
    pub code: String,
    /// The `error_description`, if any.
    pub description: Option<String>,
    /// The `error_uri`, if any.
    pub uri: Option<String>,
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code.escape_debug())?;
        if let Some(description) = &self.description {
            write!(
                f,
                " ({})",
                crate::resource::shorten(description).escape_debug()
            )?;
        }
        Ok(())
    }
}

/// `: description`, escaped and bounded (it is the server's text), or nothing.
struct ServerDescription<'a>(&'a Option<String>);

impl fmt::Display for ServerDescription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(description) => write!(
                f,
                ": {}",
                crate::resource::shorten(description).escape_debug()
            ),
            None => Ok(()),
        }
    }
}

/// Why a user's authorization is needed, and the call that asks for it.
struct AuthorizationNeeded<'a>(&'a Option<crate::scope::ScopeSet>);

impl fmt::Display for AuthorizationNeeded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(scopes) => write!(
                f,
                "the scopes asked for are not all in the cached grant; run TokenCache::begin_authorization with the scopes {:?} and complete it",
                scopes.as_str()
            ),
            None => f.write_str(
                "no token or refresh token is cached; run TokenCache::begin_authorization and complete it",
            ),
        }
    }
}

/// Why a token could not be obtained or handed out.
///
/// Cheap to clone: concurrent callers waiting for one fetch each get the same error. Messages
/// name the resource, issuer or endpoint concerned and say what to do next; none contains a
/// token, a refresh token, a client secret or a raw response body.
///
/// ```no_run
/// # async fn run(cache: audience_cache::TokenCache, url: url::Url) {
/// use audience_cache::Error;
///
/// match cache.token_for(&url).await {
///     Ok(token) => { /* send the request with token.header_for(&url) */ }
///     Err(Error::Refused(refusal)) => eprintln!("not sending a token: {refusal}"),
///     Err(error) if error.is_transient() => {
///         eprintln!("try again in {:?}: {error}", error.retry_after());
///     }
///     Err(error) => eprintln!("{error}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The audience decision refused to hand the token out for this request URL.
    #[error(transparent)]
    Refused(Refusal),

    /// No configured resource covers the request URL, so the crate does not know which token,
    /// if any, belongs to it.
    #[error(
        "no configured resource covers {request}; add a resource that covers it (or send the request without a token)"
    )]
    NoResource {
        /// The request URL, without its query.
        request: String,
    },

    /// The resource is not configured, or names an authorization server that is not.
    #[error(
        "{resource} is not a configured resource; register it with TokenCacheBuilder::resource"
    )]
    UnknownResource {
        /// The resource's match key.
        resource: String,
    },

    /// The authorization server refused the resource (RFC 8707 `invalid_target`). Retrying
    /// will not help: the resource is not one this server issues tokens for, or not with these
    /// scopes.
    #[error(
        "authorization server {issuer} refused the resource {resource} (invalid_target{}); check that the resource is registered there and the scopes are allowed for it",
        ServerDescription(.description)
    )]
    InvalidTarget {
        /// The issuer.
        issuer: String,
        /// The resource's match key.
        resource: String,
        /// The server's `error_description`, if any.
        description: Option<String>,
    },

    /// The token endpoint answered with another OAuth error.
    #[error("authorization server {issuer} refused the token request for {resource}: {error}{}", hint_for(&.error.code))]
    OAuth {
        /// The issuer.
        issuer: String,
        /// The resource's match key.
        resource: String,
        /// The error as the server sent it.
        error: OAuthError,
    },

    /// The token endpoint could not be reached or answered with a server-side failure (a
    /// connection error, a timeout, HTTP 5xx or 429). Trying again later may succeed.
    #[error("token endpoint {endpoint} is unavailable: {detail}; a later attempt may succeed")]
    Unavailable {
        /// The endpoint.
        endpoint: String,
        /// What happened.
        detail: String,
        /// How long the server asked the client to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },

    /// The token endpoint's answer broke the protocol: malformed or oversized JSON, a token type
    /// other than Bearer, a redirect, or a `resource` in the response that is not the one
    /// requested. The token, if any, was discarded.
    #[error("token endpoint {endpoint} sent an unusable response: {detail}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong (never the body itself).
        detail: String,
    },

    /// Recent token requests for this key failed, and the next attempt is held back so that an
    /// authorization server that is down is not hammered.
    #[error("token requests for {key} are backing off after {failures} failure(s); next attempt in {:.1} s (last error: {last})", .retry_in.as_secs_f64())]
    BackingOff {
        /// The cache key, as text.
        key: String,
        /// Consecutive failures so far.
        failures: u32,
        /// How long until the next attempt is allowed (measured when the error was made).
        retry_in: Duration,
        /// The last failure.
        last: Box<Error>,
    },

    /// The resource needs a user's authorization (authorization code grant) and no token or
    /// refresh token is cached for it.
    #[error("{resource} needs a user's authorization: {}", AuthorizationNeeded(.beyond_grant))]
    AuthorizationRequired {
        /// The resource's match key.
        resource: String,
        /// When a refresh token is cached but its grant lacks scopes: the scopes asked for.
        beyond_grant: Option<crate::scope::ScopeSet>,
    },

    /// Discovery found a resource whose metadata names an authorization server the client is
    /// not registered at. The client's credentials are not sent there.
    #[error(
        "{resource} names the authorization server {issuer:?}, where this client is not registered; its credentials are not sent there (add it with PreRegistered::at_issuer if you trust it)"
    )]
    UntrustedIssuer {
        /// The resource (wire form).
        resource: String,
        /// The issuer its metadata names.
        issuer: String,
    },

    /// A registration made at run time (from discovery) was refused.
    #[error(transparent)]
    Configuration(BuildError),

    /// Discovery found no usable metadata, or refused what it found (a URL it must not fetch,
    /// a document for another resource or issuer).
    #[error(transparent)]
    Discovery(DiscoveryError),

    /// Sending a request to a resource server failed (the crate's HTTP client or middleware
    /// chain returned an error).
    #[error("request to {url} failed: {detail}")]
    Request {
        /// The request URL, without its query.
        url: String,
        /// What happened.
        detail: String,
        /// Whether it was a connection error or a timeout.
        transient: bool,
    },

    /// A request had to be sent again (to follow a 307/308 redirect, or to retry after a 401
    /// `invalid_token` or a 403 `insufficient_scope`), but its body is a stream that cannot be
    /// replayed. Use a body that can be cloned (bytes, a string, a form or JSON).
    #[error(
        "the request to {url} cannot be sent again because its body is a stream; use a body that can be cloned (bytes, text, form or JSON) to allow redirects and retries"
    )]
    NotReplayable {
        /// The request URL, without its query.
        url: String,
    },

    /// More redirects than the limit.
    #[error("more than {limit} redirects from {url}; refusing to follow further")]
    TooManyRedirects {
        /// The URL of the last hop, without its query.
        url: String,
        /// The limit.
        limit: usize,
    },

    /// A redirect could not be followed (no usable `Location`, or a scheme other than http(s)).
    #[error("the redirect from {url} cannot be followed: {detail}")]
    Redirect {
        /// The URL that redirected, without its query.
        url: String,
        /// What was wrong.
        detail: String,
    },

    /// The redirect that completes an authorization was not acceptable (a `state` that does not
    /// match, an `iss` from another server, an error from the server, no `code`).
    #[error("the authorization response was refused: {detail}")]
    AuthorizationResponse {
        /// What was wrong.
        detail: String,
    },

    /// No client could be had at an authorization server that discovery found: no
    /// pre-registered client lists it, it supports neither client ID metadata documents nor
    /// dynamic registration (or they were not configured), or the registration failed.
    #[error("no client at the authorization server {issuer}: {detail}")]
    Registration {
        /// The authorization server.
        issuer: String,
        /// What failed, and what to do next.
        detail: String,
    },

    /// The user's authorization did not complete: the [`AuthorizationHandler`](crate::authorization::AuthorizationHandler)
    /// gave up (no redirect, a timeout, the user closed the page), or the authorization was
    /// tried as often as allowed for one request.
    #[error("the authorization did not complete: {detail}")]
    Authorization {
        /// What happened, and what to do next.
        detail: String,
    },
}

/// A next step for the OAuth errors whose fix is on the client's side.
fn hint_for(code: &str) -> &'static str {
    match code {
        "invalid_client" | "unauthorized_client" => {
            "; check the client id, secret and authentication method configured for this issuer"
        }
        "invalid_scope" => "; request scopes the server allows for this client",
        "invalid_grant" => {
            "; the grant (code, refresh token or assertion) is no longer valid: authorize again, or give a new assertion"
        }
        _ => "",
    }
}

impl Error {
    /// Whether trying again later can succeed: the authorization server was unreachable, slow,
    /// overloaded or failing (connection errors, timeouts, 5xx, 429), or the key is backing off
    /// after such failures. Refusals, `invalid_target`, other OAuth errors and configuration
    /// errors are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Request { transient, .. } => *transient,
            Self::BackingOff { last, .. } => last.is_transient(),
            Self::Refused(_)
            | Self::NoResource { .. }
            | Self::UnknownResource { .. }
            | Self::InvalidTarget { .. }
            | Self::OAuth { .. }
            | Self::Protocol { .. }
            | Self::AuthorizationRequired { .. }
            | Self::AuthorizationResponse { .. }
            | Self::Authorization { .. }
            | Self::Registration { .. }
            | Self::Discovery(_)
            | Self::UntrustedIssuer { .. }
            | Self::Configuration(_)
            | Self::NotReplayable { .. }
            | Self::TooManyRedirects { .. }
            | Self::Redirect { .. } => false,
        }
    }

    /// How long to wait before trying again, when the server said (`Retry-After`) or the key is
    /// backing off.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            Self::BackingOff { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }

    /// The audience refusal, when the error is one (or the key is backing off after one).
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(refusal) => Some(refusal),
            Self::BackingOff { last, .. } => last.refusal(),
            _ => None,
        }
    }

    /// The OAuth error the token endpoint sent, if any (`invalid_target` included).
    pub fn oauth_error(&self) -> Option<OAuthError> {
        match self {
            Self::OAuth { error, .. } => Some(error.clone()),
            Self::InvalidTarget { description, .. } => Some(OAuthError {
                code: "invalid_target".to_owned(),
                description: description.clone(),
                uri: None,
            }),
            Self::BackingOff { last, .. } => last.oauth_error(),
            _ => None,
        }
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// A failed reqwest request as the crate's error, naming the URL without its query.
pub(crate) fn request_error(error: &reqwest::Error) -> Error {
    // reqwest's own Display ends with the full URL, query included: only the cause chain is
    // kept, and the URL without its query.
    Error::Request {
        url: error
            .url()
            .map(crate::audience::redacted_url)
            .unwrap_or_else(|| "the server".to_owned()),
        detail: describe(error),
        transient: error.is_connect() || error.is_timeout(),
    }
}

/// A reqwest error in words, with its cause chain (reqwest's own message is often just
/// "error sending request").
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_connect() {
        "could not connect".to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_body() || error.is_decode() {
        "the response body could not be read".to_owned()
    } else {
        "the request could not be sent".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
