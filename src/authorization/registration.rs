//! Getting a client at an authorization server that discovery found, in the MCP 2025-11-25
//! order: a client registered in advance, a client ID metadata document, or dynamic client
//! registration (RFC 7591), with the token endpoint authentication chosen from what the server
//! supports and what the registration said.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{ClientAuth, ClientRegistration, PreRegistered};
use crate::discovery::{Discovered, Discovery, ValidatedAuthorizationServer};
use crate::resource::shorten;
use crate::{BuildError, Error};

/// The scope that asks for a refresh token (OpenID Connect Core §11; MCP SEP-2207).
pub(crate) const OFFLINE_ACCESS: &str = "offline_access";

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
/// URI: the [`AuthorizationHandler`](crate::AuthorizationHandler)'s, or
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
    /// there is no [`AuthorizationHandler`](crate::AuthorizationHandler) to give one.
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
    /// one if that is the way this server allows.
    pub(crate) async fn registration_for(
        &self,
        discovered: &Discovered,
        discovery: &Discovery,
        handler_redirect: Option<Url>,
    ) -> Result<ClientRegistration, Error> {
        let mut registration = self
            .registration_at(discovered, discovery, handler_redirect)
            .await?;
        registration.discovered = true;
        Ok(registration)
    }

    async fn registration_at(
        &self,
        discovered: &Discovered,
        discovery: &Discovery,
        handler_redirect: Option<Url>,
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
                )
                .await?;
            return Ok(discovered
                .client_registration(&client.client_id, client.auth(), Some(redirect_uri))?
                .request_offline_access(offline));
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
    store: Arc<dyn ClientStore>,
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
            store: Arc::new(MemoryClientStore::default()),
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

    /// Where registered clients are kept.
    pub fn store(mut self, store: Arc<dyn ClientStore>) -> Self {
        self.store = store;
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
    ) -> Result<RegisteredClient, Error> {
        let issuer = server.issuer().as_str();
        let failed = |detail: String| Error::Registration {
            issuer: issuer.to_owned(),
            detail,
        };
        let _one_at_a_time = self.registering.lock().await;
        let stored = self
            .store
            .load(issuer)
            .await
            .map_err(|e| failed(format!("the client store could not be read: {e}")))?;
        if let Some(client) = stored
            && client.usable_for(redirect_uri, now_unix())
        {
            return Ok(client);
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
                    shorten(&e.to_string())
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
        let client = response.into_client(method, redirect_uri).map_err(failed)?;
        tracing::info!(issuer, client_id = %client.client_id, method = %client.token_endpoint_auth_method, "registered a client dynamically");
        if let Err(error) = self.store.save(issuer, &client).await {
            // The client works; only keeping it for next time failed.
            tracing::warn!(issuer, "the registered client could not be stored: {error}");
        }
        Ok(client)
    }
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

#[derive(Deserialize)]
struct RegistrationResponse {
    client_id: String,
    #[serde(default)]
    client_secret: Option<SecretString>,
    #[serde(default)]
    client_secret_expires_at: Option<u64>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

#[derive(Deserialize)]
struct RegistrationError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl RegistrationResponse {
    /// The registered client, with the authentication method the response names (RFC 7591
    /// §3.2.1: the server may change what was asked for), else the one asked for.
    fn into_client(self, requested: &str, redirect_uri: &Url) -> Result<RegisteredClient, String> {
        if self.client_id.is_empty() {
            return Err("the registration response has an empty client_id".to_owned());
        }
        let method = self
            .token_endpoint_auth_method
            .unwrap_or_else(|| requested.to_owned());
        let secret = match method.as_str() {
            "none" => None,
            "client_secret_basic" | "client_secret_post" => match self.client_secret {
                Some(secret) if !secret.expose_secret().is_empty() => Some(secret),
                _ => {
                    return Err(format!(
                        "the server registered the client for {method} but sent no client_secret"
                    ));
                }
            },
            other => {
                return Err(format!(
                    "the server registered the client for {:?}, which this crate does not support (it supports client_secret_basic, client_secret_post and none)",
                    shorten(other)
                ));
            }
        };
        Ok(RegisteredClient {
            client_id: self.client_id,
            client_secret: secret,
            token_endpoint_auth_method: method,
            redirect_uri: redirect_uri.clone(),
            client_secret_expires_at: self.client_secret_expires_at.filter(|&t| t != 0),
        })
    }
}

/// A client obtained by dynamic registration, as a [`ClientStore`] keeps it. `Debug` never
/// shows the secret; `Serialize` writes it (a store must keep it as carefully as any secret).
#[derive(Clone, Serialize, Deserialize)]
pub struct RegisteredClient {
    client_id: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_secret"
    )]
    client_secret: Option<SecretString>,
    token_endpoint_auth_method: String,
    redirect_uri: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret_expires_at: Option<u64>,
}

fn serialize_secret<S: serde::Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => serializer.serialize_some(secret.expose_secret()),
        None => serializer.serialize_none(),
    }
}

impl fmt::Debug for RegisteredClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredClient")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "token_endpoint_auth_method",
                &self.token_endpoint_auth_method,
            )
            .field("redirect_uri", &self.redirect_uri.as_str())
            .field("client_secret_expires_at", &self.client_secret_expires_at)
            .finish()
    }
}

impl RegisteredClient {
    /// The client id the server assigned.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The token endpoint authentication method in use.
    pub fn token_endpoint_auth_method(&self) -> &str {
        &self.token_endpoint_auth_method
    }

    /// The redirect URI registered.
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// When the secret expires (Unix time), if it does.
    pub fn client_secret_expires_at(&self) -> Option<u64> {
        self.client_secret_expires_at
    }

    /// Whether the client has a secret.
    pub fn has_secret(&self) -> bool {
        self.client_secret.is_some()
    }

    fn auth(&self) -> ClientAuth {
        match (
            &self.client_secret,
            self.token_endpoint_auth_method.as_str(),
        ) {
            (Some(secret), "client_secret_post") => ClientAuth::Post(secret.clone()),
            (Some(secret), _) => ClientAuth::Basic(secret.clone()),
            (None, _) => ClientAuth::None,
        }
    }

    /// Usable for `redirect_uri` (loopback redirect URIs may differ in port, RFC 8252 §7.3)
    /// with a secret that has not expired (a minute of margin).
    fn usable_for(&self, redirect_uri: &Url, now: u64) -> bool {
        let expired = self
            .client_secret_expires_at
            .is_some_and(|at| at <= now.saturating_add(60));
        !expired && same_redirect_uri(&self.redirect_uri, redirect_uri)
    }
}

/// Equal, or loopback IP literals that differ only in port (RFC 8252 §7.3: the server allows
/// any port there, so a client registered once serves every run of a command-line app).
fn same_redirect_uri(a: &Url, b: &Url) -> bool {
    if a == b {
        return true;
    }
    let loopback_ip = |u: &Url| matches!(u.host_str(), Some("127.0.0.1" | "[::1]"));
    loopback_ip(a)
        && a.scheme() == "http"
        && b.scheme() == "http"
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
}

fn is_loopback_http(uri: &Url) -> bool {
    uri.scheme() == "http" && matches!(uri.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The error a [`ClientStore`] reports.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`ClientStore`] returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where dynamically registered clients are kept, one per issuer. Implement it to keep them
/// across runs (a file, a database, a keychain); [`MemoryClientStore`] keeps them for the life
/// of the process. A `load` that fails fails the registration (the caller sees
/// [`Error::Registration`]); a `save` that fails is logged, and the client is used anyway.
pub trait ClientStore: Send + Sync + fmt::Debug {
    /// The client stored for `issuer`, if any.
    fn load<'a>(&'a self, issuer: &'a str) -> StoreFuture<'a, Option<RegisteredClient>>;

    /// Stores `client` for `issuer`, replacing any other.
    fn save<'a>(&'a self, issuer: &'a str, client: &'a RegisteredClient) -> StoreFuture<'a, ()>;
}

/// Registered clients in memory, per issuer.
#[derive(Debug, Default)]
pub struct MemoryClientStore {
    clients: Mutex<HashMap<String, RegisteredClient>>,
}

impl MemoryClientStore {
    /// The number of clients stored.
    pub fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no client is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ClientStore for MemoryClientStore {
    fn load<'a>(&'a self, issuer: &'a str) -> StoreFuture<'a, Option<RegisteredClient>> {
        let client = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(issuer)
            .cloned();
        Box::pin(std::future::ready(Ok(client)))
    }

    fn save<'a>(&'a self, issuer: &'a str, client: &'a RegisteredClient) -> StoreFuture<'a, ()> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(issuer.to_owned(), client.clone());
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn loopback_redirect_uris_may_differ_in_port_only() {
        let a = url("http://127.0.0.1:4000/callback");
        assert!(same_redirect_uri(
            &a,
            &url("http://127.0.0.1:5000/callback")
        ));
        assert!(!same_redirect_uri(&a, &url("http://127.0.0.1:5000/other")));
        assert!(!same_redirect_uri(
            &a,
            &url("http://localhost:5000/callback")
        ));
        let https = url("https://app.example.com:4000/callback");
        assert!(!same_redirect_uri(
            &https,
            &url("https://app.example.com:5000/callback")
        ));
    }

    #[test]
    fn the_registered_method_wins_and_needs_its_secret() {
        let response = |method: Option<&str>, secret: Option<&str>| RegistrationResponse {
            client_id: "c".to_owned(),
            client_secret: secret.map(|s| s.into()),
            client_secret_expires_at: Some(0),
            token_endpoint_auth_method: method.map(str::to_owned),
        };
        let redirect = url("http://127.0.0.1/callback");
        let client = response(Some("client_secret_post"), Some("s"))
            .into_client("client_secret_basic", &redirect)
            .unwrap();
        assert!(matches!(client.auth(), ClientAuth::Post(_)));
        assert_eq!(client.client_secret_expires_at(), None);
        // Asked for none, got a secret anyway: stays public, the secret is not kept.
        let client = response(None, Some("s"))
            .into_client("none", &redirect)
            .unwrap();
        assert!(matches!(client.auth(), ClientAuth::None));
        assert!(!client.has_secret());
        let error = response(None, None)
            .into_client("client_secret_basic", &redirect)
            .unwrap_err();
        assert!(error.contains("sent no client_secret"), "{error}");
        let error = response(Some("private_key_jwt"), None)
            .into_client("client_secret_basic", &redirect)
            .unwrap_err();
        assert!(error.contains("private_key_jwt"), "{error}");
    }

    #[test]
    fn expired_secrets_and_other_redirects_are_not_reused() {
        let client = RegisteredClient {
            client_id: "c".to_owned(),
            client_secret: Some("s".into()),
            token_endpoint_auth_method: "client_secret_basic".to_owned(),
            redirect_uri: url("http://127.0.0.1:4000/callback"),
            client_secret_expires_at: Some(1_000),
        };
        let redirect = url("http://127.0.0.1:4001/callback");
        assert!(client.usable_for(&redirect, 900));
        assert!(!client.usable_for(&redirect, 950));
        assert!(!client.usable_for(&url("https://app.example/cb"), 0));
        let debug = format!("{client:?}");
        assert!(
            debug.contains("[redacted]") && !debug.contains("\"s\""),
            "{debug}"
        );
        // A store keeps the secret.
        let json = serde_json::to_string(&client).unwrap();
        assert!(json.contains("\"client_secret\":\"s\""), "{json}");
        let back: RegisteredClient = serde_json::from_str(&json).unwrap();
        assert!(matches!(back.auth(), ClientAuth::Basic(_)));
    }
}
