//! Getting a client at an authorization server that discovery found, in the MCP 2025-11-25
//! order: a client registered in advance, a client ID metadata document, or dynamic client
//! registration (RFC 7591), with the token endpoint authentication chosen from what the server
//! supports and what the registration said.

use std::sync::Arc;

use url::Url;

use super::client_store::{ClientStore, MemoryClientStore, RegisteredClient, now_unix};
use super::registration_response::{Registered, RegistrationError, RegistrationResponse};

use crate::config::{ClientAuth, ClientRegistration, PreRegistered};
use crate::discovery::{Discovered, Discovery, ValidatedAuthorizationServer};
use crate::error::{BuildError, Error};
use crate::resource::shorten;

use crate::scope::OFFLINE_ACCESS;

/// How the crate gets a client at an authorization server that discovery finds, tried in the
/// MCP 2025-11-25 order (§10):
///
/// 1. a [`PreRegistered`] client registered at that issuer;
/// 2. a client ID metadata document: the https URL of the client's metadata is its
///    `client_id`, where the server's metadata says `client_id_metadata_document_supported`;
/// 3. dynamic client registration (RFC 7591) where the server has a `registration_endpoint`;
///    clients registered this way are kept per issuer in a [`ClientStore`].
///
/// A server that allows none of these is an [`Error::Registration`] naming what it lacks (or
/// [`Error::UntrustedIssuer`] when only pre-registered clients were configured). Clients from
/// the second and third ways use the authorization code grant with PKCE and need a redirect
/// URI: the [`AuthorizationHandler`](crate::authorization::AuthorizationHandler)'s, or
/// [`redirect_uri`](Self::redirect_uri).
///
/// ```
/// use audience_cache::{ClientRegistrar, DynamicRegistration};
/// use url::Url;
///
/// let clients = ClientRegistrar::new()
///     .client_metadata_document(Url::parse("https://app.example.com/oauth/client.json")?)?
///     .dynamic_registration(DynamicRegistration::new("Example MCP client"))
///     .offline_access(true);
/// # let _ = clients;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientRegistrar {
    pre_registered: Vec<PreRegistered>,
    metadata_document: Option<Url>,
    dynamic: Option<DynamicRegistration>,
    redirect_uri: Option<Url>,
    offline_access: bool,
}

impl From<PreRegistered> for ClientRegistrar {
    fn from(client: PreRegistered) -> Self {
        Self::new().pre_registered(client)
    }
}

impl ClientRegistrar {
    /// No way to get a client yet: add at least one.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client registered in advance (used at the issuers it lists, and only there). Several
    /// can be added; the first registered at the discovered issuer is used.
    pub fn pre_registered(mut self, client: PreRegistered) -> Self {
        self.pre_registered.push(client);
        self
    }

    /// The URL of this client's metadata document (draft-ietf-oauth-client-id-metadata-document),
    /// used as `client_id` at servers that support it. It must be https with a path, no
    /// fragment, no userinfo, no dot segments; the document it serves must list the redirect
    /// URI used.
    pub fn client_metadata_document(mut self, url: Url) -> Result<Self, BuildError> {
        let refuse = |reason: &str| BuildError::ClientMetadataDocument {
            url: crate::audience::redacted_url(&url),
            reason: reason.to_owned(),
        };
        if url.scheme() != "https" {
            return Err(refuse("it must be an https URL"));
        }
        if url.path() == "/" || url.path().is_empty() {
            return Err(refuse("it must have a path (the document's own location)"));
        }
        if url.fragment().is_some() {
            return Err(refuse("it must not have a fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("it must not have userinfo"));
        }
        if url.path().split('/').any(|s| s == "." || s == "..") {
            return Err(refuse("it must not have dot segments"));
        }
        self.metadata_document = Some(url);
        Ok(self)
    }

    /// Registers clients dynamically (RFC 7591) where the server allows it.
    pub fn dynamic_registration(mut self, registration: DynamicRegistration) -> Self {
        self.dynamic = Some(registration);
        self
    }

    /// The redirect URI for clients from a metadata document or dynamic registration, when
    /// there is no [`AuthorizationHandler`](crate::authorization::AuthorizationHandler) to give one.
    pub fn redirect_uri(mut self, uri: Url) -> Self {
        self.redirect_uri = Some(uri);
        self
    }

    /// Asks for refresh tokens: `offline_access` is added to authorization requests where the
    /// server lists it in `scopes_supported`, and dynamically registered clients ask for the
    /// `refresh_token` grant (MCP SEP-2207). Off by default.
    pub fn offline_access(mut self, want: bool) -> Self {
        self.offline_access = want;
        self
    }

    /// Whether a pre-registered client lists `issuer` by name: the user trusts that issuer
    /// for discovered resources (a public client allowed at any issuer does not count).
    pub(crate) fn lists_issuer(&self, issuer: &str) -> bool {
        self.pre_registered.iter().any(|c| c.lists(issuer))
    }

    /// Whether this registrar can give the client a registration at `issuer` at all: a
    /// pre-registered client for it, or a way to register (a client ID metadata document or
    /// dynamic registration, which the server's metadata may still not support).
    pub(crate) fn may_obtain_at(&self, issuer: &str) -> bool {
        self.pre_registered
            .iter()
            .any(|c| c.is_registered_at(issuer))
            || self.metadata_document.is_some()
            || self.dynamic.is_some()
    }

    /// The client registration to use at the discovered authorization server, registering
    /// one if that is the way this server allows. With `dpop_keys` (the cache generates a DPoP
    /// key per client), a dynamically registered client keeps its key in the client store.
    pub(crate) async fn registration_for(
        &self,
        discovered: &Discovered,
        discovery: &Discovery,
        handler_redirect: Option<Url>,
        (cache_store, dpop_keys): (Option<Arc<dyn ClientStore>>, bool),
    ) -> Result<ClientRegistration, Error> {
        let mut registration = self
            .registration_at(
                discovered,
                discovery,
                handler_redirect,
                (cache_store, dpop_keys),
            )
            .await?;
        registration.discovered = true;
        Ok(registration)
    }

    async fn registration_at(
        &self,
        discovered: &Discovered,
        discovery: &Discovery,
        handler_redirect: Option<Url>,
        (cache_store, dpop_keys): (Option<Arc<dyn ClientStore>>, bool),
    ) -> Result<ClientRegistration, Error> {
        let server = discovered.authorization_server();
        let issuer = server.issuer().as_str();
        let offline = self.offline_access
            && server
                .metadata()
                .scopes_supported
                .as_ref()
                .is_some_and(|s| s.iter().any(|s| s == OFFLINE_ACCESS));
        if let Some(client) = self
            .pre_registered
            .iter()
            .find(|c| c.is_registered_at(issuer))
        {
            return Ok(discovered
                .registration_for(client)?
                .request_offline_access(offline));
        }
        let redirect_uri = self.redirect_uri.clone().or(handler_redirect);
        let needs_redirect = |how: &str| Error::Registration {
            issuer: issuer.to_owned(),
            detail: format!(
                "{how} needs a redirect URI: give the client an AuthorizationHandler or set ClientRegistrar::redirect_uri"
            ),
        };
        if let Some(document) = &self.metadata_document
            && server.metadata().client_id_metadata_document_supported
        {
            let redirect_uri =
                redirect_uri.ok_or_else(|| needs_redirect("a client ID metadata document"))?;
            tracing::info!(
                issuer,
                client_id = document.as_str(),
                "using the client ID metadata document as client_id"
            );
            return Ok(discovered
                .client_registration(document.as_str(), ClientAuth::None, Some(redirect_uri))?
                .request_offline_access(offline));
        }
        if let (Some(dynamic), Some(endpoint)) = (&self.dynamic, server.registration_endpoint()) {
            let redirect_uri =
                redirect_uri.ok_or_else(|| needs_redirect("dynamic client registration"))?;
            // No client is registered for a grant the server could not complete safely.
            server.require_pkce_s256().map_err(Error::Discovery)?;
            let client = dynamic
                .obtain(
                    server,
                    endpoint,
                    &redirect_uri,
                    discovery,
                    self.offline_access,
                    (cache_store, dpop_keys),
                )
                .await?;
            let mut registration = discovered
                .client_registration(&client.client_id, client.auth(), Some(redirect_uri))?
                .request_offline_access(offline);
            registration.dpop_key = client.dpop_key();
            return Ok(registration);
        }
        if self.metadata_document.is_none() && self.dynamic.is_none() {
            // Only clients registered in advance, none of them here.
            return Err(Error::UntrustedIssuer {
                resource: discovered.resource().wire().to_owned(),
                issuer: issuer.to_owned(),
            });
        }
        let mut missing = Vec::new();
        if self.metadata_document.is_some() {
            missing.push("does not support client ID metadata documents");
        }
        if self.dynamic.is_some() {
            missing.push("has no registration endpoint");
        }
        let pre = if self.pre_registered.is_empty() {
            "no pre-registered client is configured"
        } else {
            "no pre-registered client lists it"
        };
        Err(Error::Registration {
            issuer: issuer.to_owned(),
            detail: format!(
                "{pre}, and the server {}; register a client there by hand and add it with ClientRegistrar::pre_registered",
                missing.join(" and ")
            ),
        })
    }
}

/// Dynamic client registration (RFC 7591): the client metadata sent, and where registered
/// clients are kept (by default in memory, for the life of the process; give a
/// [`ClientStore`] to keep them across runs, so that the server does not collect one client
/// per start).
#[derive(Debug, Clone)]
pub struct DynamicRegistration {
    client_name: String,
    client_uri: Option<Url>,
    software_id: Option<String>,
    software_version: Option<String>,
    /// Where registered clients are kept, when the user gave a store.
    store: Option<Arc<dyn ClientStore>>,
    /// Where they are kept when neither the user nor the cache gave one.
    memory: Arc<MemoryClientStore>,
    /// One registration per issuer at a time.
    registering: Arc<tokio::sync::Mutex<()>>,
}

impl DynamicRegistration {
    /// Registers clients under this `client_name` (shown to users on consent screens).
    pub fn new(client_name: impl Into<String>) -> Self {
        Self {
            client_name: client_name.into(),
            client_uri: None,
            software_id: None,
            software_version: None,
            store: None,
            memory: Arc::default(),
            registering: Arc::default(),
        }
    }

    /// The client's home page, sent as `client_uri`.
    pub fn client_uri(mut self, uri: Url) -> Self {
        self.client_uri = Some(uri);
        self
    }

    /// `software_id` and `software_version` (RFC 7591 §2): the same for every instance of the
    /// application.
    pub fn software(mut self, id: impl Into<String>, version: impl Into<String>) -> Self {
        self.software_id = Some(id.into());
        self.software_version = Some(version.into());
        self
    }

    /// Where registered clients are kept. By default, the cache's credential store
    /// ([`TokenCacheBuilder::credential_store`](crate::TokenCacheBuilder::credential_store)) if
    /// it has one, so that a client and the refresh tokens bound to it outlive the process
    /// together; otherwise memory.
    pub fn store(mut self, store: Arc<dyn ClientStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// A stored client for this issuer and redirect URI whose secret has not expired, or a
    /// newly registered one (then stored).
    async fn obtain(
        &self,
        server: &ValidatedAuthorizationServer,
        endpoint: &Url,
        redirect_uri: &Url,
        discovery: &Discovery,
        offline_access: bool,
        (cache_store, dpop_keys): (Option<Arc<dyn ClientStore>>, bool),
    ) -> Result<RegisteredClient, Error> {
        let store = match (&self.store, cache_store) {
            (Some(own), _) => own.clone(),
            (None, Some(cache)) => cache,
            (None, None) => self.memory.clone(),
        };
        let issuer = server.issuer().as_str();
        let failed = |detail: String| Error::Registration {
            issuer: issuer.to_owned(),
            detail,
        };
        let _one_at_a_time = self.registering.lock().await;
        let stored = store
            .load(issuer)
            .await
            .map_err(|e| failed(format!("the client store could not be read: {e}")))?;
        if let Some(client) = stored {
            match client.unusable_for(issuer, endpoint, redirect_uri, now_unix()) {
                None => return Ok(with_dpop_key(client, dpop_keys, &*store, issuer).await),
                Some(reason) => tracing::info!(
                    issuer,
                    client_id = ?shorten(client.client_id()),
                    "not using the stored client: {reason}; registering a new one"
                ),
            }
        }
        let method = request_method(server);
        let mut grant_types = vec!["authorization_code"];
        if offline_access {
            grant_types.push("refresh_token");
        }
        let mut body = serde_json::json!({
            "client_name": self.client_name,
            "redirect_uris": [redirect_uri.as_str()],
            "grant_types": grant_types,
            "response_types": ["code"],
            "token_endpoint_auth_method": method,
        });
        if is_loopback_http(redirect_uri) {
            // OpenID Connect Dynamic Client Registration §2: a client that receives its
            // redirect on the loopback interface is a native application; servers that follow
            // it (oidc-provider) refuse loopback redirect URIs for web clients.
            body["application_type"] = "native".into();
        }
        if let Some(uri) = &self.client_uri {
            body["client_uri"] = uri.as_str().into();
        }
        if let (Some(id), Some(version)) = (&self.software_id, &self.software_version) {
            body["software_id"] = id.as_str().into();
            body["software_version"] = version.as_str().into();
        }
        let (status, response) = discovery.post_json(endpoint, &body).await?;
        let response: RegistrationResponse = if status.is_success() {
            serde_json::from_slice(&response).map_err(|e| {
                failed(format!(
                    "the registration response is not a client information response: {}",
                    shorten(&e.to_string()).escape_debug()
                ))
            })?
        } else {
            let error: Option<RegistrationError> = serde_json::from_slice(&response).ok();
            return Err(failed(match error {
                Some(error) => format!(
                    "the registration endpoint answered HTTP {} {}{}",
                    status.as_u16(),
                    shorten(&error.error).escape_debug(),
                    error
                        .error_description
                        .map(|d| format!(" ({})", shorten(&d).escape_debug()))
                        .unwrap_or_default()
                ),
                None => format!(
                    "the registration endpoint answered HTTP {}",
                    status.as_u16()
                ),
            }));
        };
        let registered_at = Registered {
            issuer,
            endpoint,
            redirect_uri,
            now: now_unix(),
        };
        #[allow(unused_mut)] // only the dpop feature adds a key
        let mut client = response
            .into_client(method, &registered_at)
            .map_err(|problem| {
                failed(format!(
                    "{problem}; register a client by hand and add it with ClientRegistrar::pre_registered"
                ))
            })?;
        #[cfg(feature = "dpop")]
        if dpop_keys {
            client.add_dpop_key();
        }
        // Checked text only, and written escaped all the same: a log line is one line.
        tracing::info!(
            issuer,
            client_id = ?client.client_id,
            method = ?client.token_endpoint_auth_method,
            "registered a client dynamically"
        );
        if let Err(error) = store.save(issuer, &client).await {
            // The client works; only keeping it for next time failed.
            tracing::warn!(
                issuer,
                "the registered client could not be stored: {}",
                error.to_string().escape_debug()
            );
        }
        Ok(client)
    }
}

/// `client`, with a DPoP key of its own where the cache generates keys (`dpop_keys`) and the
/// client was stored without one (by a cache without DPoP): the key is stored with it, so
/// that its tokens stay bound to one key across restarts.
async fn with_dpop_key(
    #[allow(unused_mut)] mut client: RegisteredClient,
    dpop_keys: bool,
    store: &dyn ClientStore,
    issuer: &str,
) -> RegisteredClient {
    #[cfg(feature = "dpop")]
    if dpop_keys
        && client.add_dpop_key()
        && let Err(error) = store.save(issuer, &client).await
    {
        tracing::warn!(
            issuer,
            "the client's new DPoP key could not be stored: {}",
            error.to_string().escape_debug()
        );
    }
    #[cfg(not(feature = "dpop"))]
    let _ = (dpop_keys, store, issuer);
    client
}

/// The token endpoint authentication method to register with: the first of
/// `client_secret_basic`, `client_secret_post` and `none` the server supports
/// (`client_secret_basic` when it does not say, RFC 8414 §2).
fn request_method(server: &ValidatedAuthorizationServer) -> &'static str {
    let supported = server
        .metadata()
        .token_endpoint_auth_methods_supported
        .as_deref();
    let Some(supported) = supported else {
        return "client_secret_basic";
    };
    ["client_secret_basic", "client_secret_post", "none"]
        .into_iter()
        .find(|m| supported.iter().any(|s| s == m))
        .unwrap_or("client_secret_basic")
}

fn is_loopback_http(uri: &Url) -> bool {
    uri.scheme() == "http" && matches!(uri.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
}
