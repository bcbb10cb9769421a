//! Token requests: client credentials, refresh, authorization code with PKCE, token exchange,
//! and the JWT bearer grant (a workload's assertion, or an ID-JAG from an enterprise IdP).
//! Every request here carries the resource's wire form as RFC 8707 `resource`; this module is
//! the only place that adds it.

mod id_jag;
mod jwt_bearer;
mod response;
mod transport;

use std::cell::Cell;
use std::sync::Arc;

use base64::Engine as _;
use oauth2::TokenResponse as _;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardRevocableToken, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::config::{ClientAuth, ClientRegistration};
use crate::dpop::{Dpop, Use};
use crate::error::Error;
use crate::key::{SubjectFingerprint, SubjectKey};
use crate::resource::{ParseOptions, ResourceUri};
use crate::scope::ScopeSet;

pub(crate) use response::TokenResponse;

pub(crate) use transport::{Exchange, Limits, Transport};

use response::{RawTokenResponse, Requested};

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    RawTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointMaybeSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// RFC 8693 §3: the token type a token exchange asks for and accepts.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A subject token to exchange (RFC 8693 §2.1).
#[derive(Clone)]
pub struct SubjectToken {
    pub(crate) token: SecretString,
    pub(crate) token_type: String,
}

impl SubjectToken {
    /// An access token to exchange (`urn:ietf:params:oauth:token-type:access_token`).
    pub fn access_token(token: SecretString) -> Self {
        Self::new(token, ACCESS_TOKEN_TYPE)
    }

    /// A subject token of any RFC 8693 §3 type (an ID token, a JWT, a SAML assertion).
    pub fn new(token: SecretString, token_type: impl Into<String>) -> Self {
        Self {
            token,
            token_type: token_type.into(),
        }
    }
}

impl std::fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectToken")
            .field("token_type", &self.token_type)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// A token endpoint's answer as read, and how the request used DPoP: `None` when it carried
/// no proof.
struct Sent {
    raw: RawTokenResponse,
    proved: Option<Use>,
}

/// A refresh that failed, with the rotated refresh token if the server sent one.
pub(crate) struct Rejected {
    pub(crate) error: Error,
    pub(crate) refresh_token: Option<SecretString>,
}

/// What an authorization request needs kept until the redirect comes back.
pub(crate) struct AuthorizationStart {
    pub(crate) url: Url,
    pub(crate) state: CsrfToken,
    pub(crate) verifier: PkceCodeVerifier,
}

/// Makes token requests for one client registration.
pub(crate) struct GrantClient {
    registration: ClientRegistration,
    oauth: OAuthClient,
    transport: Transport,
    limits: Limits,
    options: ParseOptions,
    /// What the subject tokens of this client's exchanges are fingerprinted under.
    subjects: SubjectKey,
    /// The cache's DPoP key, nonces and the resources that use DPoP (RFC 9449).
    dpop: Arc<Dpop>,
    /// The JWT bearer grant's state: assertions refused, and for the ID-JAG grant the client
    /// at the IdP and the ID-JAGs it issued.
    bearer: jwt_bearer::BearerState,
}

impl GrantClient {
    pub(crate) fn new(
        registration: ClientRegistration,
        transport: Transport,
        limits: Limits,
        options: ParseOptions,
    ) -> Self {
        let mut oauth = oauth2::Client::new(ClientId::new(registration.client_id.clone()))
            .set_token_uri(TokenUrl::from_url(registration.token_endpoint.clone()))
            .set_auth_uri_option(
                registration
                    .authorization_endpoint
                    .clone()
                    .map(AuthUrl::from_url),
            );
        oauth = match &registration.auth {
            ClientAuth::Basic(secret) => oauth
                .set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
                .set_auth_type(AuthType::BasicAuth),
            ClientAuth::Post(secret) => oauth
                .set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
                .set_auth_type(AuthType::RequestBody),
            ClientAuth::None => oauth.set_auth_type(AuthType::RequestBody),
            // The client id goes in the body with the assertion (`client_assertion`).
            #[cfg(feature = "private-key-jwt")]
            ClientAuth::PrivateKeyJwt(_) => oauth.set_auth_type(AuthType::RequestBody),
        };
        let bearer = jwt_bearer::BearerState::new(&registration, &transport, limits, options);
        Self {
            registration,
            oauth,
            transport,
            limits,
            options,
            subjects: SubjectKey::random(),
            dpop: Arc::default(),
            bearer,
        }
    }

    /// The client with the cache's DPoP state (RFC 9449: nonces, which resources use DPoP),
    /// shared by all its clients; the client's own key is in its registration.
    pub(crate) fn with_dpop(mut self, dpop: Arc<Dpop>) -> Self {
        self.dpop = dpop;
        self
    }

    pub(crate) fn registration(&self) -> &ClientRegistration {
        &self.registration
    }

    /// Which subject a token exchanged for `subject` acts for: the keyed fingerprint of the
    /// subject token and its type, for the cache key (see [`CacheKey`](crate::key::CacheKey)).
    pub(crate) fn subject_fingerprint(&self, subject: &SubjectToken) -> SubjectFingerprint {
        self.subjects.fingerprint(
            &subject.token_type,
            subject.token.expose_secret().as_bytes(),
        )
    }

    fn requested<'a>(&'a self, resource: &'a ResourceUri, scopes: &'a ScopeSet) -> Requested<'a> {
        Requested {
            endpoint: self.registration.token_endpoint.as_str(),
            issuer: &self.registration.issuer,
            resource,
            scopes,
            options: &self.options,
            issued_token_type: None,
        }
    }

    /// The `client_assertion_type` and `client_assertion` parameters of a token request, for
    /// a client authenticating with `private_key_jwt` (a fresh assertion each time); none
    /// otherwise.
    fn assertion(&self) -> Vec<(&'static str, String)> {
        match &self.registration.auth {
            #[cfg(feature = "private-key-jwt")]
            ClientAuth::PrivateKeyJwt(key) => vec![
                (
                    "client_assertion_type",
                    crate::config::assertion::JWT_BEARER.to_owned(),
                ),
                (
                    "client_assertion",
                    key.assertion(&self.registration.client_id, &self.registration.issuer),
                ),
            ],
            _ => Vec::new(),
        }
    }

    /// Sends a token request and reads the answer: the one path of every grant's answer.
    ///
    /// For a resource that uses DPoP the request carries a fresh proof for the token endpoint
    /// (RFC 9449 §5), with the nonce last remembered for its origin. An answer's `DPoP-Nonce`
    /// is remembered; a `use_dpop_nonce` error with a nonce not tried yet is retried once with
    /// it (RFC 9449 §8), the request built again by `build` (a `private_key_jwt` assertion is
    /// single-use). A second `use_dpop_nonce` is the error it is: never a loop.
    async fn send(
        &self,
        build: impl Fn() -> Result<HttpRequest, Error>,
        requested: &Requested<'_>,
    ) -> Result<Sent, Error> {
        let key = self
            .dpop
            .key_for(requested.resource, self.registration.dpop_key.as_ref())
            .map_err(Error::Configuration)?;
        let endpoint = &self.registration.token_endpoint;
        let mut retried = false;
        loop {
            let mut request = build()?;
            if let Some(key) = key {
                let proof = self
                    .dpop
                    .proof(key, "POST", endpoint, None)
                    .ok_or_else(|| {
                        requested_protocol(requested, "the DPoP proof is not a header value")
                    })?;
                request.headers_mut().insert(crate::dpop::DPOP, proof);
            }
            let response = self
                .transport
                .send(request, self.limits)
                .await
                .map_err(|e| response::from_transport(e, requested))?;
            let new_nonce = self.dpop.remember(endpoint, response.headers());
            match response::read(response, requested) {
                Err(Error::OAuth { error, .. })
                    if key.is_some()
                        && !retried
                        && new_nonce
                        && error.code == crate::dpop::USE_DPOP_NONCE =>
                {
                    retried = true;
                }
                Ok(raw) => {
                    return Ok(Sent {
                        raw,
                        proved: key.map(|_| self.dpop.use_for(requested.resource)),
                    });
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// RFC 6749 §4.4 with `resource`.
    pub(crate) async fn client_credentials(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<TokenResponse, Error> {
        let requested = self.requested(resource, scopes);
        let build = || {
            let mut request = self
                .oauth
                .exchange_client_credentials()
                .add_scopes(oauth_scopes(scopes))
                .add_extra_param("resource", resource.wire());
            for (name, value) in self.assertion() {
                request = request.add_extra_param(name, value);
            }
            prepare(|client| request.request(client), &requested)
        };
        let sent = self.send(build, &requested).await?;
        response::accept(sent.raw, sent.proved, &requested)
    }

    /// RFC 6749 §6 with `resource`. `scopes` must be within the original grant (the caller
    /// checks); an empty set sends no `scope`, which means the original grant.
    pub(crate) async fn refresh(
        &self,
        refresh_token: &SecretString,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<TokenResponse, Rejected> {
        let requested = self.requested(resource, scopes);
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let build = || {
            let mut request = self
                .oauth
                .exchange_refresh_token(&token)
                .add_scopes(oauth_scopes(scopes))
                .add_extra_param("resource", resource.wire());
            for (name, value) in self.assertion() {
                request = request.add_extra_param(name, value);
            }
            prepare(|client| request.request(client), &requested)
        };
        let unrotated = |error| Rejected {
            error,
            refresh_token: None,
        };
        // RFC 9449 §5.0: a public client's refresh token is bound to the key it was issued
        // with, and the refresh carries a proof by the same key (the cache has one key).
        let Sent { raw, proved } = self.send(build, &requested).await.map_err(unrotated)?;
        // A rotated refresh token in a response the crate rejects is still the one the server
        // expects next (the presented one is spent): it goes back to the caller.
        let rotated = raw
            .refresh_token()
            .map(|t| SecretString::from(t.secret().as_str()));
        response::accept(raw, proved, &requested).map_err(|error| Rejected {
            error,
            refresh_token: rotated,
        })
    }

    /// The authorization URL for the code flow, with `resource`, `state` and an S256 PKCE
    /// challenge (RFC 6749 §4.1.1, RFC 7636, RFC 8707 §2.1).
    pub(crate) fn authorization_url(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
        redirect_uri: &Url,
    ) -> Result<AuthorizationStart, Error> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .oauth
            .clone()
            .set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()))
            .authorize_url(CsrfToken::new_random)
            .map_err(|_| Error::AuthorizationResponse {
                detail: format!(
                    "the client registration for {} has no authorization endpoint",
                    self.registration.issuer
                ),
            })?
            .add_scopes(oauth_scopes(scopes))
            .set_pkce_challenge(challenge)
            .add_extra_param("resource", resource.wire())
            .url();
        Ok(AuthorizationStart {
            url,
            state,
            verifier,
        })
    }

    /// RFC 6749 §4.1.3 with the PKCE verifier and `resource`.
    pub(crate) async fn exchange_code(
        &self,
        code: &str,
        verifier: PkceCodeVerifier,
        redirect_uri: &Url,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<TokenResponse, Error> {
        let requested = self.requested(resource, scopes);
        let oauth = self
            .oauth
            .clone()
            .set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()));
        let build = || {
            let mut request = oauth
                .exchange_code(AuthorizationCode::new(code.to_owned()))
                .set_pkce_verifier(PkceCodeVerifier::new(verifier.secret().to_owned()))
                .add_extra_param("resource", resource.wire());
            for (name, value) in self.assertion() {
                request = request.add_extra_param(name, value);
            }
            prepare(|client| request.request(client), &requested)
        };
        let sent = self.send(build, &requested).await?;
        response::accept(sent.raw, sent.proved, &requested)
    }

    /// RFC 8693 token exchange with `resource`. The oauth2 crate has no token exchange, so the
    /// request is built here, with the same client authentication rules; the answer is read
    /// and checked like every other grant's, and must name an access token as issued.
    pub(crate) async fn token_exchange(
        &self,
        subject: &SubjectToken,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<TokenResponse, Error> {
        let requested = Requested {
            issued_token_type: Some(ACCESS_TOKEN_TYPE),
            ..self.requested(resource, scopes)
        };
        let build = || self.exchange_request(subject, resource, scopes, &requested);
        let sent = self.send(build, &requested).await?;
        response::accept(sent.raw, sent.proved, &requested)
    }

    /// The RFC 8693 request, with the client authentication of the registration.
    fn exchange_request(
        &self,
        subject: &SubjectToken,
        resource: &ResourceUri,
        scopes: &ScopeSet,
        requested: &Requested<'_>,
    ) -> Result<http::Request<Vec<u8>>, Error> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", TOKEN_EXCHANGE)
            .append_pair("subject_token", subject.token.expose_secret())
            .append_pair("subject_token_type", &subject.token_type)
            .append_pair("requested_token_type", ACCESS_TOKEN_TYPE)
            .append_pair("resource", resource.wire());
        if !scopes.is_empty() {
            form.append_pair("scope", scopes.as_str());
        }
        self.form_request(form, requested)
    }

    /// A token request the crate builds itself (oauth2 knows neither token exchange nor the
    /// JWT bearer grant): `form` with the client authentication of the registration, as oauth2
    /// would add it.
    fn form_request(
        &self,
        mut form: url::form_urlencoded::Serializer<'_, String>,
        requested: &Requested<'_>,
    ) -> Result<http::Request<Vec<u8>>, Error> {
        let mut request = http::Request::post(self.registration.token_endpoint.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        let client_id = &self.registration.client_id;
        match &self.registration.auth {
            ClientAuth::Basic(secret) => {
                // RFC 6749 §2.3.1: form-urlencode the id and the secret, then Basic.
                let encode = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    encode(client_id),
                    encode(secret.expose_secret())
                ));
                let mut value = http::HeaderValue::try_from(format!("Basic {credentials}"))
                    .map_err(|_| {
                        requested_protocol(requested, "the client credentials cannot form a header")
                    })?;
                value.set_sensitive(true);
                request = request.header(http::header::AUTHORIZATION, value);
            }
            ClientAuth::Post(secret) => {
                form.append_pair("client_id", client_id)
                    .append_pair("client_secret", secret.expose_secret());
            }
            ClientAuth::None => {
                form.append_pair("client_id", client_id);
            }
            #[cfg(feature = "private-key-jwt")]
            ClientAuth::PrivateKeyJwt(_) => {
                form.append_pair("client_id", client_id);
                for (name, value) in self.assertion() {
                    form.append_pair(name, &value);
                }
            }
        }
        request
            .body(form.finish().into_bytes())
            .map_err(|_| requested_protocol(requested, "the token request could not be built"))
    }
}

fn requested_protocol(requested: &Requested<'_>, detail: impl Into<String>) -> Error {
    Error::Protocol {
        endpoint: requested.endpoint.to_owned(),
        detail: detail.into(),
    }
}

fn oauth_scopes(scopes: &ScopeSet) -> Vec<Scope> {
    scopes.iter().map(|s| Scope::new(s.to_owned())).collect()
}

/// Builds a grant's request with oauth2, sending nothing.
///
/// oauth2 builds a request (client authentication, scope encoding) only inside its `request`
/// methods, which also read the answer, each in its own way. They are given a client that
/// keeps the request and answers nothing, so that the crate sends every grant's request
/// itself and reads every answer with one function ([`response::read`]), token exchange's
/// (which oauth2 does not know) included.
fn prepare<T>(
    build: impl FnOnce(&Capture) -> Result<T, RequestTokenError<Unsent, BasicErrorResponse>>,
    requested: &Requested<'_>,
) -> Result<HttpRequest, Error> {
    let capture = Capture::default();
    let result = build(&capture);
    match (capture.0.take(), result) {
        (Some(request), _) => Ok(request),
        (None, Err(RequestTokenError::Other(detail))) => Err(requested_protocol(
            requested,
            format!(
                "the token request could not be built: {}",
                crate::resource::shorten(&detail)
            ),
        )),
        (None, _) => Err(requested_protocol(
            requested,
            "the token request could not be built",
        )),
    }
}

/// The client [`prepare`] gives oauth2: it keeps the request and sends nothing.
#[derive(Default)]
struct Capture(Cell<Option<HttpRequest>>);

impl oauth2::SyncHttpClient for Capture {
    type Error = Unsent;

    fn call(&self, request: HttpRequest) -> Result<HttpResponse, Unsent> {
        self.0.set(Some(request));
        Err(Unsent)
    }
}

/// What [`Capture`] answers oauth2 with.
#[derive(Debug)]
struct Unsent;

impl std::fmt::Display for Unsent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("kept to be sent by the crate")
    }
}

impl std::error::Error for Unsent {}
