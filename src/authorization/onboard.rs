//! Onboarding at a server that discovery found: which client may be used at its authorization
//! server (the one trust rule), getting that client, and adding the resource to the cache.
//! The cache itself knows nothing of discovery: it only stores the client registration and the
//! resource this module gives it.

use std::sync::Arc;

use url::Url;

use super::ClientRegistrar;
use super::client_store::ClientStore;
use crate::cache::TokenCache;
use crate::config::{ClientRegistration, PreRegistered};
use crate::discovery::{Discovered, Discovery};
use crate::error::{BuildError, Error};

impl TokenCache {
    /// Registers what discovery found: the client at the discovered authorization server
    /// (unless one is registered for that issuer already) and the resource (unless it is
    /// configured already, with the same issuer), where the trust rule of
    /// [`register_discovered_with`](Self::register_discovered_with) allows `client` there. A resource configured with another issuer is
    /// an error: the resource server now names a different authorization server (RFC 9728
    /// §5.2), and its old tokens must not be mixed with new ones.
    pub fn register_discovered(
        &self,
        discovered: &Discovered,
        client: &PreRegistered,
    ) -> Result<(), Error> {
        let issuer = discovered.authorization_server().issuer().as_str();
        let clients = ClientRegistrar::from(client.clone());
        if self.trust(issuer, &clients) == Trust::Untrusted {
            return Err(untrusted(discovered));
        }
        self.install_discovered(discovered, || {
            discovered.registration_for(client).map(|mut registration| {
                registration.discovered = true;
                registration
            })
        })
    }

    /// Registers what discovery found, getting the client at the discovered authorization
    /// server the way `clients` allows: a pre-registered client listed for that issuer, the
    /// client ID metadata document, or dynamic registration (see [`ClientRegistrar`](ClientRegistrar)). The
    /// resource rules are those of [`register_discovered`](Self::register_discovered).
    /// `redirect_uri` is used where `clients` has none (an authorization handler's).
    pub async fn register_discovered_with(
        &self,
        discovered: &Discovered,
        discovery: &Discovery,
        clients: &ClientRegistrar,
        redirect_uri: Option<Url>,
    ) -> Result<(), Error> {
        let issuer = discovered.authorization_server().issuer().as_str();
        let registration = self
            .obtain_client(discovered, discovery, clients, redirect_uri)
            .await?;
        self.install_discovered(discovered, || {
            registration.ok_or_else(|| Error::Registration {
                issuer: issuer.to_owned(),
                detail: "a client registration appeared concurrently".to_owned(),
            })
        })
    }

    /// The client registration to add for the issuer `discovered` names, by the trust rule
    /// ([`trust`](Self::trust)): `None` when the cache has a client there already, an error
    /// when no client may be used there. First contact and a resource that moved both get
    /// their client here.
    pub(super) async fn obtain_client(
        &self,
        discovered: &Discovered,
        discovery: &Discovery,
        clients: &ClientRegistrar,
        redirect_uri: Option<Url>,
    ) -> Result<Option<ClientRegistration>, Error> {
        let issuer = discovered.authorization_server().issuer().as_str();
        match self.trust(issuer, clients) {
            Trust::Obtain => Ok(Some(
                clients
                    .registration_for(
                        discovered,
                        discovery,
                        redirect_uri,
                        (
                            self.credential_store()
                                .map(|store| Arc::new(store.clone()) as Arc<dyn ClientStore>),
                            self.dpop().generates_keys(),
                        ),
                    )
                    .await?,
            )),
            Trust::Existing => Ok(None),
            Trust::Untrusted => Err(untrusted(discovered)),
        }
    }

    /// Whether a client may be used at `issuer` for a resource that discovery found there, and
    /// how: the one rule for discovered resources behind an `AuthorizedClient`.
    ///
    /// A client the registrar obtained at that issuer before is used again. A configured client
    /// is used only where a pre-registered client of `clients` lists the issuer by name: a
    /// resource that merely names a configured issuer must not have tokens minted for itself
    /// with that client (and, where the authorization server ignores `resource`, tokens valid
    /// elsewhere). Without a client there, `clients` may obtain one if it has a pre-registered
    /// client for that issuer or a way to register.
    pub(crate) fn trust(&self, issuer: &str, clients: &ClientRegistrar) -> Trust {
        match self.client_was_discovered(issuer) {
            Some(true) => Trust::Existing,
            Some(false) if clients.lists_issuer(issuer) => Trust::Existing,
            Some(false) => Trust::Untrusted,
            None if clients.may_obtain_at(issuer) => Trust::Obtain,
            None => Trust::Untrusted,
        }
    }

    /// Adds the client (unless the issuer has one) and the resource (unless configured with
    /// the same issuer; another issuer is an error).
    fn install_discovered(
        &self,
        discovered: &Discovered,
        registration: impl FnOnce() -> Result<ClientRegistration, Error>,
    ) -> Result<(), Error> {
        let issuer = discovered.authorization_server().issuer().as_str();
        self.install_client(discovered, registration)?;
        match self.issuer_of(discovered.resource()) {
            Some(configured) if configured == issuer => Ok(()),
            Some(configured) => Err(Error::Configuration(BuildError::IssuerChanged {
                resource: discovered.resource().key().to_owned(),
                configured,
                discovered: issuer.to_owned(),
            })),
            None => match self.register_resource(discovered.resource_config()) {
                Ok(()) | Err(BuildError::DuplicateResource { .. }) => Ok(()),
                Err(error) => Err(Error::Configuration(error)),
            },
        }
    }

    /// Adds the client at the discovered issuer (unless it has one), and applies what the
    /// metadata says of DPoP to the resource.
    pub(super) fn install_client(
        &self,
        discovered: &Discovered,
        registration: impl FnOnce() -> Result<ClientRegistration, Error>,
    ) -> Result<(), Error> {
        let issuer = discovered.authorization_server().issuer().as_str();
        if self.client_was_discovered(issuer).is_none() {
            let registration = registration()?;
            match self.register_client(registration) {
                Ok(()) | Err(BuildError::DuplicateClient { .. }) => {}
                Err(error) => return Err(Error::Configuration(error)),
            }
        }
        // RFC 9449 §5.2: a resource whose metadata requires DPoP-bound tokens gets them (or,
        // with no DPoP key, an error naming the setting at its first token request).
        if discovered
            .protected_resource()
            .metadata()
            .dpop_bound_access_tokens_required
        {
            self.dpop()
                .raise(discovered.resource(), crate::dpop::Use::Required);
        }
        let server = discovered.authorization_server();
        self.dpop()
            .check_algorithm(
                discovered.resource(),
                (issuer, self.dpop_key_at(issuer).as_ref()),
                server
                    .metadata()
                    .dpop_signing_alg_values_supported
                    .as_deref(),
                discovered
                    .protected_resource()
                    .metadata()
                    .dpop_signing_alg_values_supported
                    .as_deref(),
            )
            .map_err(Error::Configuration)
    }
}

/// The answer of [`TokenCache::trust`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// The client registered for the issuer may be used.
    Existing,
    /// No client is registered for the issuer; the registrar may obtain one.
    Obtain,
    /// No client may be used there.
    Untrusted,
}

/// Discovery found a resource whose authorization server no client may be used at.
fn untrusted(discovered: &Discovered) -> Error {
    Error::UntrustedIssuer {
        resource: discovered.resource().wire().to_owned(),
        issuer: discovered
            .authorization_server()
            .issuer()
            .as_str()
            .to_owned(),
    }
}
