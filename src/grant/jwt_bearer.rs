//! The JWT bearer grant (RFC 7523 §2.1) with `resource`: a workload's platform token as the
//! assertion (MCP workload identity federation), or an ID-JAG that an enterprise IdP issued for
//! the user's ID token (MCP enterprise-managed authorization; the exchange at the IdP and the
//! checks of its answer are in [`id_jag`](super::id_jag)).

use std::sync::Mutex;

use secrecy::{ExposeSecret as _, SecretString};

use super::id_jag::{IdJagKey, IdJags};
use super::{GrantClient, Limits, TokenResponse, Transport, response};
use crate::config::{AssertionSource, ClientRegistration, Grant, IdentityProvider};
use crate::error::{BuildError, Error};
use crate::key::SubjectFingerprint;
use crate::resource::{ParseOptions, ResourceUri};
use crate::scope::ScopeSet;

/// RFC 7523 §2.1.
pub(crate) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How many refused assertions are remembered (the newest ones): a source gives one at a time,
/// so a few cover a rotation that has not happened yet.
const REMEMBERED_REFUSALS: usize = 8;

/// The JWT bearer grant's state for one client registration.
pub(crate) struct BearerState {
    /// Fingerprints (under the client's subject key) of assertions the authorization server
    /// refused for good: never sent again.
    refused: Mutex<Vec<SubjectFingerprint>>,
    /// For [`Grant::IdJag`]: the client at the IdP and the ID-JAGs it issued.
    idp: Option<Box<Idp>>,
}

struct Idp {
    client: GrantClient,
    id_jags: IdJags,
}

impl BearerState {
    pub(crate) fn new(
        registration: &ClientRegistration,
        transport: &Transport,
        limits: Limits,
        options: ParseOptions,
    ) -> Self {
        let idp = match &registration.grant {
            Some(Grant::IdJag { idp, .. }) => Some(Box::new(Idp {
                client: GrantClient::new(idp_registration(idp), transport.clone(), limits, options),
                id_jags: IdJags::default(),
            })),
            _ => None,
        };
        Self {
            refused: Mutex::default(),
            idp,
        }
    }
}

/// The client at the IdP as a registration of its own: the IdP's token endpoint, the client's
/// id and authentication there (a `private_key_jwt` assertion's `aud` is the IdP's issuer).
fn idp_registration(idp: &IdentityProvider) -> ClientRegistration {
    let mut registration =
        ClientRegistration::new(&idp.issuer, idp.token_endpoint.clone(), &idp.client_id);
    registration.auth = idp.auth.clone();
    registration
}

/// RFC 6749 §5.2 codes that refuse the grant itself: presenting the same assertion again would
/// be refused again, and MCP's workload identity profile forbids retrying it.
fn refuses_the_assertion(error: &Error) -> bool {
    matches!(error, Error::OAuth { error, .. }
        if matches!(error.code.as_str(), "invalid_grant" | "invalid_scope" | "unauthorized_client"))
}

impl GrantClient {
    /// RFC 7523 §2.1 with a workload's assertion read from `source` now (platform tokens
    /// rotate). An assertion the server refused before is not sent again.
    pub(crate) async fn jwt_bearer(
        &self,
        source: &AssertionSource,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<TokenResponse, Error> {
        const SETTING: &str = "Grant::JwtBearer assertion";
        let assertion = source.read(SETTING)?;
        let fingerprint = self
            .subjects
            .fingerprint(JWT_BEARER_GRANT, assertion.expose_secret().as_bytes());
        if self.was_refused(&fingerprint) {
            return Err(Error::Configuration(BuildError::Setting {
                setting: SETTING,
                reason: format!(
                    "{} still gives the assertion that {} refused; it is not sent again: the \
                     source must give a new one (a rotated platform token)",
                    source.described(),
                    self.registration.issuer
                ),
            }));
        }
        let result = self.present(&assertion, resource, scopes).await;
        if let Err(error) = &result
            && refuses_the_assertion(error)
        {
            self.remember_refused(fingerprint);
        }
        result
    }

    /// MCP enterprise-managed authorization: an ID-JAG for `resource` and `scopes` (kept from
    /// an earlier exchange of the same ID token while it lasts, or exchanged for now at the
    /// IdP), presented with the JWT bearer grant. An ID-JAG the server refuses is dropped, so
    /// the next attempt exchanges the ID token again.
    pub(crate) async fn id_jag(
        &self,
        id_token: &AssertionSource,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<TokenResponse, Error> {
        let Some(idp) = &self.bearer.idp else {
            return Err(Error::Configuration(BuildError::Setting {
                setting: "Grant::IdJag",
                reason: format!(
                    "the client registration for {} has no identity provider",
                    self.registration.issuer
                ),
            }));
        };
        let id_token = id_token.read("Grant::IdJag id_token")?;
        let key = IdJagKey {
            idp: idp.client.registration.issuer.clone(),
            issuer: self.registration.issuer.clone(),
            resource: resource.key().to_owned(),
            scopes: scopes.as_str().to_owned(),
            // Which user: a keyed fingerprint of the ID token, never the token.
            subject: self.subjects.fingerprint(
                super::id_jag::ID_TOKEN_TYPE,
                id_token.expose_secret().as_bytes(),
            ),
        };
        let id_jag = idp
            .id_jags
            .get_or_exchange(&key, || {
                idp.client.exchange_for_id_jag(
                    &id_token,
                    &self.registration.issuer,
                    &self.registration.client_id,
                    resource,
                    scopes,
                )
            })
            .await?;
        let result = self.present(&id_jag, resource, scopes).await;
        if let Err(error) = &result
            && refuses_the_assertion(error)
        {
            idp.id_jags.drop_if_current(&key, &id_jag).await;
        }
        result
    }

    /// The JWT bearer token request: `assertion`, `resource` and `scope`, with the client
    /// authentication of the registration, through the one [`send`](Self::send) (a retry
    /// after a DPoP nonce builds it again, with a fresh client assertion).
    async fn present(
        &self,
        assertion: &SecretString,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<TokenResponse, Error> {
        let requested = self.requested(resource, scopes);
        let build = || {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", JWT_BEARER_GRANT)
                .append_pair("assertion", assertion.expose_secret())
                .append_pair("resource", resource.wire());
            if !scopes.is_empty() {
                form.append_pair("scope", scopes.as_str());
            }
            self.form_request(form, &requested)
        };
        let sent = self.send(build, &requested).await?;
        response::accept(sent.raw, sent.proved, &requested)
    }

    fn was_refused(&self, fingerprint: &SubjectFingerprint) -> bool {
        let refused = self
            .bearer
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        refused.contains(fingerprint)
    }

    fn remember_refused(&self, fingerprint: SubjectFingerprint) {
        let mut refused = self
            .bearer
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if refused.len() == REMEMBERED_REFUSALS {
            refused.remove(0);
        }
        refused.push(fingerprint);
    }
}
