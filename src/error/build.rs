//! Configurations the cache cannot be built with.

/// A configuration the cache cannot be built with. It names the entry and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A client ID metadata document URL that cannot be a `client_id`.
    #[error("the client metadata document URL {url} cannot be used: {reason}")]
    ClientMetadataDocument {
        /// The URL, without its query.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two client registrations name the same issuer.
    #[error(
        "client registration for {issuer:?}: the issuer is registered twice; keep one registration per authorization server"
    )]
    DuplicateClient {
        /// The issuer.
        issuer: String,
    },
    /// Two resources have the same match key.
    #[error(
        "resource {resource}: configured twice; keep one ResourceConfig per resource (ask for extra scopes per call instead)"
    )]
    DuplicateResource {
        /// The resource's match key.
        resource: String,
    },
    /// A resource names an issuer with no client registration.
    #[error(
        "resource {resource}: its issuer {issuer:?} has no client registration; add one with TokenCacheBuilder::client"
    )]
    UnknownIssuer {
        /// The resource's match key.
        resource: String,
        /// The issuer it names.
        issuer: String,
    },
    /// An issuer identifier is not an https URL without query and fragment (RFC 8414 §2).
    #[error(
        "client registration for {issuer:?}: the issuer is not a valid issuer identifier: {reason}"
    )]
    InvalidIssuer {
        /// The issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
    /// An endpoint is not an acceptable URL (https; http only on loopback with the development
    /// option).
    #[error("client registration for {issuer:?}: the {endpoint} is refused: {reason}")]
    InvalidEndpoint {
        /// The issuer.
        issuer: String,
        /// Which endpoint.
        endpoint: &'static str,
        /// Why.
        reason: String,
    },
    /// The client id is empty.
    #[error(
        "client registration for {issuer:?}: the client id is empty; set the client id the authorization server issued"
    )]
    EmptyClientId {
        /// The issuer.
        issuer: String,
    },
    /// The authorization code grant is chosen but something it needs is missing.
    #[error("client registration for {issuer:?}: {reason}")]
    AuthorizationCode {
        /// The issuer.
        issuer: String,
        /// What is missing.
        reason: String,
    },
    /// The client credentials grant is chosen for a client without a secret.
    #[error(
        "client registration for {issuer:?}: the client credentials grant needs a client secret; add one with client_secret_basic or client_secret_post, or use Grant::AuthorizationCode"
    )]
    MissingSecret {
        /// The issuer.
        issuer: String,
    },
    /// Discovery found a resource already configured with another issuer.
    #[error(
        "resource {resource}: configured with the issuer {configured:?}, but its metadata now names {discovered:?}; rebuild the cache with the new authorization server if the move is expected (tokens of the old one are not reused)"
    )]
    IssuerChanged {
        /// The resource's match key.
        resource: String,
        /// The issuer configured.
        configured: String,
        /// The issuer discovered.
        discovered: String,
    },
    /// A numeric setting is out of range.
    #[error("setting {setting}: {reason}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built: {reason}")]
    HttpClient {
        /// Why.
        reason: String,
    },
    /// The reqwest client below `AudienceMiddleware` follows redirects itself (it would
    /// re-send a token to wherever a server points it, without the crate's decision), or the
    /// middleware could not check that it does not.
    #[error(
        "the reqwest client below AudienceMiddleware {detail}; build the client with AudienceMiddleware::into_client_builder, or give reqwest::Client::builder() redirect(reqwest::redirect::Policy::none())"
    )]
    RedirectingClient {
        /// What the check found.
        detail: String,
    },
}
