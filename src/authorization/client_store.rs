//! Clients obtained by dynamic registration, and where they are kept: a [`ClientStore`] (the
//! app's own, or the [`MemoryClientStore`]) holds one [`RegisteredClient`] per issuer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::ClientAuth;
use crate::store::{ClientRecord, CredentialStore};

/// A client obtained by dynamic registration, as a [`ClientStore`] keeps it. `Debug` never
/// shows the secret; `Serialize` writes it (a store must keep it as carefully as any secret).
///
/// It records the issuer and the registration endpoint it was registered at, and is used
/// there only: a store that answers one issuer with another's client (a shared store keyed
/// wrongly, or a hostile one) would otherwise have this client's `client_id` and secret sent
/// to the other issuer's token endpoint. A stored client for another issuer or endpoint, or
/// one stored without them (by an older version of this crate), is not used: the client
/// registers again.
#[derive(Clone, Serialize, Deserialize)]
pub struct RegisteredClient {
    pub(super) client_id: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_secret"
    )]
    pub(super) client_secret: Option<SecretString>,
    pub(super) token_endpoint_auth_method: String,
    pub(super) redirect_uri: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) client_secret_expires_at: Option<u64>,
    /// The issuer it was registered at; `None` in an entry stored without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) issuer: Option<String>,
    /// The registration endpoint it was registered at; `None` in an entry stored without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) registration_endpoint: Option<Url>,
    /// The DPoP key generated for this client (PKCS #8 PEM), kept with it so that its bound
    /// tokens and refresh tokens stay usable after a restart (RFC 9449 §5: a public client's
    /// refresh token is bound to the key).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_secret"
    )]
    pub(super) dpop_key: Option<SecretString>,
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
            .field("issuer", &self.issuer)
            .field(
                "registration_endpoint",
                &self.registration_endpoint.as_ref().map(Url::as_str),
            )
            .field("dpop_key", &self.dpop_key.as_ref().map(|_| "[redacted]"))
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

    /// The issuer the client was registered at; `None` for an entry a store kept without it,
    /// which is never used.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The registration endpoint the client was registered at; `None` for an entry a store
    /// kept without it, which is never used.
    pub fn registration_endpoint(&self) -> Option<&Url> {
        self.registration_endpoint.as_ref()
    }

    /// Whether a DPoP key is kept with the client (one the cache generated for it, with
    /// [`TokenCacheBuilder::generate_dpop_keys`](crate::TokenCacheBuilder::generate_dpop_keys)).
    pub fn has_dpop_key(&self) -> bool {
        self.dpop_key.is_some()
    }

    /// The DPoP key kept with the client; `None` when there is none, or when the stored one
    /// cannot be read (the cache then gives the client a new key, and says so in its log).
    pub(super) fn dpop_key(&self) -> Option<crate::config::DpopKey> {
        let pem = self.dpop_key.as_ref()?;
        #[cfg(feature = "dpop")]
        match crate::config::DpopKey::from_pkcs8_pem(pem.expose_secret()) {
            Ok(key) => Some(key),
            Err(_) => {
                tracing::warn!(
                    client_id = ?self.client_id,
                    "the DPoP key stored with the client is not a P-256 key in PKCS #8 PEM; \
                     the client gets a new key (tokens bound to the old one are not used)"
                );
                None
            }
        }
        #[cfg(not(feature = "dpop"))]
        {
            let _ = pem;
            None
        }
    }

    /// Keeps a new DPoP key with the client (generated for it by the cache); `false` when the
    /// client has one already, or the key could not be written.
    #[cfg(feature = "dpop")]
    pub(super) fn add_dpop_key(&mut self) -> bool {
        if self.dpop_key.is_some() {
            return false;
        }
        match crate::config::DpopKey::generate().to_pkcs8_pem() {
            Ok(pem) => {
                self.dpop_key = Some(pem);
                true
            }
            // Not kept: the cache gives the client a key of its own for this process.
            Err(error) => {
                tracing::warn!("no DPoP key is kept with the client: {error}");
                false
            }
        }
    }

    pub(super) fn auth(&self) -> ClientAuth {
        match (
            &self.client_secret,
            self.token_endpoint_auth_method.as_str(),
        ) {
            (Some(secret), "client_secret_post") => ClientAuth::Post(secret.clone()),
            (Some(secret), _) => ClientAuth::Basic(secret.clone()),
            (None, _) => ClientAuth::None,
        }
    }

    /// Why the client cannot be used at `issuer` (registered at `endpoint`) for
    /// `redirect_uri` at Unix time `now`, or `None` when it can: it was registered there, for
    /// that redirect URI (loopback redirect URIs may differ in port, RFC 8252 §7.3), and its
    /// secret has not expired.
    pub(super) fn unusable_for(
        &self,
        issuer: &str,
        endpoint: &Url,
        redirect_uri: &Url,
        now: u64,
    ) -> Option<&'static str> {
        if !is_client_id(&self.client_id) {
            Some("its client_id is not RFC 6749 text")
        } else if self.issuer.as_deref() != Some(issuer) {
            Some("it was registered at another issuer, or stored without one")
        } else if self.registration_endpoint.as_ref() != Some(endpoint) {
            Some("it was registered at another registration endpoint, or stored without one")
        } else if !same_redirect_uri(&self.redirect_uri, redirect_uri) {
            Some("it was registered for another redirect URI")
        } else if secret_expired(self.client_secret_expires_at, now) {
            Some("its secret has expired")
        } else {
            None
        }
    }
}

/// The longest `client_id` accepted. RFC 6749 sets no bound; servers issue UUIDs and short
/// random strings, and a client id is written to logs and sent in every request.
pub(super) const MAX_CLIENT_ID: usize = 255;

/// RFC 6749 Appendix A: VSCHAR, `%x20-7E`.
pub(super) fn is_vschar(c: char) -> bool {
    matches!(c, ' '..='~')
}

/// RFC 6749 §A.1: client-id = *VSCHAR, here 1 to [`MAX_CLIENT_ID`] of them (an empty one
/// identifies nothing). Neither a registration response nor a store gets another one used.
pub(super) fn is_client_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_ID && id.chars().all(is_vschar)
}

/// Whether a secret that expires at `at` (Unix time, `None` for never) is expired at `now`, or
/// will be within a minute: too soon to finish an authorization with it.
pub(super) fn secret_expired(at: Option<u64>, now: u64) -> bool {
    at.is_some_and(|at| at <= now.saturating_add(60))
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

pub(super) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// One shape for both stores: a client store's futures and errors are the credential
// store's.
pub use crate::store::{StoreError, StoreFuture};

/// Where dynamically registered clients are kept, one per issuer. Implement it to keep them
/// across runs (a file, a database, a keychain); [`MemoryClientStore`] keeps them for the life
/// of the process. A `load` that fails fails the registration (the caller sees
/// [`Error::Registration`](crate::error::Error::Registration)); a `save` that fails is logged, and
/// the client is used anyway. A client `load` returns is used only if it was registered at
/// that issuer and its current registration endpoint ([`RegisteredClient::issuer`]);
/// otherwise the client registers again and `save` replaces it.
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

/// Every [`CredentialStore`] keeps registered clients too: one store (a `FileStore`, say)
/// serves both [`DynamicRegistration::store`](super::DynamicRegistration::store) and the
/// cache. The client goes in as the JSON it serializes to; a record that is not a client's
/// JSON is reported and treated as none (the client registers again and replaces it).
impl<S: CredentialStore + ?Sized> ClientStore for S {
    fn load<'a>(&'a self, issuer: &'a str) -> StoreFuture<'a, Option<RegisteredClient>> {
        Box::pin(async move {
            let Some(record) = self.load_client(issuer).await? else {
                return Ok(None);
            };
            match serde_json::from_str(record.json().expose_secret()) {
                Ok(client) => Ok(Some(client)),
                Err(e) => {
                    // Where, not what: serde_json's message may quote the text, a secret.
                    tracing::warn!(
                        issuer,
                        line = e.line(),
                        column = e.column(),
                        "the stored client is not a registered client's JSON; not used"
                    );
                    Ok(None)
                }
            }
        })
    }

    fn save<'a>(&'a self, issuer: &'a str, client: &'a RegisteredClient) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let json = serde_json::to_string(client)?;
            self.save_client(issuer, &ClientRecord::new(json.into()))
                .await
        })
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
    fn a_client_is_used_where_it_was_registered_only() {
        let issuer = "https://as.example";
        let endpoint = url("https://as.example/register");
        let client = RegisteredClient {
            client_id: "c".to_owned(),
            client_secret: Some("s".into()),
            token_endpoint_auth_method: "client_secret_basic".to_owned(),
            redirect_uri: url("http://127.0.0.1:4000/callback"),
            client_secret_expires_at: Some(1_000),
            issuer: Some(issuer.to_owned()),
            registration_endpoint: Some(endpoint.clone()),
            dpop_key: None,
        };
        let redirect = url("http://127.0.0.1:4001/callback");
        assert_eq!(client.unusable_for(issuer, &endpoint, &redirect, 900), None);
        assert_eq!(
            client.unusable_for(issuer, &endpoint, &redirect, 950),
            Some("its secret has expired")
        );
        assert_eq!(
            client.unusable_for(issuer, &endpoint, &url("https://app.example/cb"), 0),
            Some("it was registered for another redirect URI")
        );
        assert_eq!(
            client.unusable_for("https://other.example", &endpoint, &redirect, 0),
            Some("it was registered at another issuer, or stored without one")
        );
        // An issuer is compared exactly (RFC 8414 §3.3): no trailing slash, no case folding.
        for other in ["https://as.example/", "https://AS.example"] {
            assert!(
                client
                    .unusable_for(other, &endpoint, &redirect, 0)
                    .is_some()
            );
        }
        assert_eq!(
            client.unusable_for(issuer, &url("https://as.example/register2"), &redirect, 0),
            Some("it was registered at another registration endpoint, or stored without one")
        );
        let debug = format!("{client:?}");
        assert!(
            debug.contains("[redacted]")
                && !debug.contains("\"s\"")
                && debug.contains(r#"issuer: Some("https://as.example")"#),
            "{debug}"
        );
        // A store keeps the secret, the issuer and the endpoint.
        let json = serde_json::to_string(&client).unwrap();
        assert!(json.contains("\"client_secret\":\"s\""), "{json}");
        let back: RegisteredClient = serde_json::from_str(&json).unwrap();
        assert!(matches!(back.auth(), ClientAuth::Basic(_)));
        assert_eq!(back.unusable_for(issuer, &endpoint, &redirect, 900), None);
        // An entry stored without them is usable nowhere.
        let old: RegisteredClient = serde_json::from_str(
            r#"{"client_id":"c","token_endpoint_auth_method":"none","redirect_uri":"http://127.0.0.1:4000/callback"}"#,
        )
        .unwrap();
        assert_eq!((old.issuer(), old.registration_endpoint()), (None, None));
        assert!(old.unusable_for(issuer, &endpoint, &redirect, 0).is_some());
        // A store's entry is text from outside too.
        let forged = RegisteredClient {
            client_id: "c\nforged: line".to_owned(),
            ..client.clone()
        };
        assert_eq!(
            forged.unusable_for(issuer, &endpoint, &redirect, 900),
            Some("its client_id is not RFC 6749 text")
        );
    }
}
