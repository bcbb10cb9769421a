//! What discovery found: the resource, its authorization server and the first scopes, and
//! the client registration and resource configuration made from them.

use url::Url;

use super::{ValidatedAuthorizationServer, ValidatedProtectedResource};
use crate::config::{ClientAuth, ClientRegistration, Grant, PreRegistered, ResourceConfig};
use crate::error::Error;
use crate::resource::ResourceUri;
use crate::scope::ScopeSet;

/// What discovery found for a server URL: the resource to request tokens for (its wire form is
/// the metadata's `resource`, verbatim), the authorization server that issues them, and the
/// scopes to ask for first (MCP 2025-11-25 §6: the challenge's `scope`, else the metadata's
/// `scopes_supported`, else none).
#[derive(Debug, Clone)]
pub struct Discovered {
    pub(super) protected_resource: ValidatedProtectedResource,
    pub(super) authorization_server: ValidatedAuthorizationServer,
    pub(super) scopes: ScopeSet,
    pub(super) fallback: bool,
}

impl Discovered {
    /// The resource, from the protected resource metadata.
    pub fn resource(&self) -> &ResourceUri {
        self.protected_resource.resource()
    }

    /// The authorization server chosen (the first one the metadata lists whose own metadata
    /// validates).
    pub fn authorization_server(&self) -> &ValidatedAuthorizationServer {
        &self.authorization_server
    }

    /// The protected resource metadata.
    pub fn protected_resource(&self) -> &ValidatedProtectedResource {
        &self.protected_resource
    }

    /// The scopes to request first.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    /// Whether this came from the MCP 2025-03-26 fallback: the server published no protected
    /// resource metadata, so its origin is taken as its authorization server and the server URL
    /// as the resource ([`protected_resource`](Self::protected_resource) is then built by the
    /// crate, not sent by the server).
    pub fn is_2025_03_26_fallback(&self) -> bool {
        self.fallback
    }

    /// A client registration at the discovered authorization server, with its endpoints, for
    /// a client registered in advance (`client_id` and how it authenticates). A client without
    /// a secret gets the authorization code grant, which needs `redirect_uri` and S256 PKCE
    /// support in the server's metadata.
    pub fn client_registration(
        &self,
        client_id: &str,
        auth: ClientAuth,
        redirect_uri: Option<Url>,
    ) -> Result<ClientRegistration, Error> {
        let server = &self.authorization_server;
        let mut registration = ClientRegistration::new(
            server.issuer().as_str(),
            server.token_endpoint().clone(),
            client_id,
        );
        registration.auth = auth;
        registration = registration.require_authorization_response_iss(
            server
                .metadata()
                .authorization_response_iss_parameter_supported,
        );
        if let Some(endpoint) = server.authorization_endpoint() {
            registration = registration.authorization_endpoint(endpoint.clone());
        }
        if let Some(redirect_uri) = redirect_uri {
            // MCP 2025-11-25 §11.4: no authorization code grant without S256.
            server.require_pkce_s256().map_err(Error::Discovery)?;
            registration = registration.grant(Grant::AuthorizationCode { redirect_uri });
        }
        Ok(registration)
    }

    /// The registration for a client registered in advance, if it is registered at the
    /// discovered issuer; [`Error::UntrustedIssuer`] otherwise.
    pub fn registration_for(&self, client: &PreRegistered) -> Result<ClientRegistration, Error> {
        let issuer = self.authorization_server.issuer().as_str();
        if !client.is_registered_at(issuer) {
            return Err(Error::UntrustedIssuer {
                resource: self.resource().wire().to_owned(),
                issuer: issuer.to_owned(),
            });
        }
        let auth = match &client.auth {
            ClientAuth::Basic(secret)
                if client.method_from_metadata
                    && self
                        .authorization_server
                        .metadata()
                        .token_endpoint_auth_methods_supported
                        .as_ref()
                        .is_some_and(|methods| {
                            !methods.iter().any(|m| m == "client_secret_basic")
                                && methods.iter().any(|m| m == "client_secret_post")
                        }) =>
            {
                ClientAuth::Post(secret.clone())
            }
            auth => auth.clone(),
        };
        let mut registration =
            self.client_registration(&client.client_id, auth, client.redirect_uri.clone())?;
        registration.dpop_key = client.dpop_key.clone();
        // A grant the user chose (`PreRegistered::grant`) wins over the one implied.
        Ok(match &client.grant {
            Some(grant) => registration.grant(grant.clone()),
            None => registration,
        })
    }

    /// The resource's configuration for the cache: this resource, this issuer, the first
    /// scopes.
    pub fn resource_config(&self) -> ResourceConfig {
        ResourceConfig::new(
            self.resource().clone(),
            self.authorization_server.issuer().as_str(),
        )
        .scopes(self.scopes.clone())
    }
}
