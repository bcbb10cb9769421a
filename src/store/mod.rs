//! What must survive a restart: a [`CredentialStore`] keeps each grant's refresh token (by
//! [`GrantId`]: issuer, client, account, resource) and the clients registered at each issuer,
//! so that a command-line tool, or an agent restarted by its supervisor, does not ask its user
//! to authorize again at every start.
//!
//! The cache keeps refresh tokens in memory and, with a store, reads a grant's refresh token
//! from it on a miss, writes a rotated one back before the new access token is handed out, and
//! removes it when the server says it is spent (`invalid_grant`). Around each refresh it holds
//! the store's lock for that grant ([`CredentialStore::lock_grant`]), so two processes sharing
//! a store take turns and each presents the newest refresh token (RFC 9700 §4.14.2: a rotated
//! refresh token presented again revokes the grant).
//!
//! [`MemoryCredentialStore`] keeps everything for the life of the process (the default is no
//! store at all: refresh tokens then live in the cache only). With feature `file-store`,
//! `FileStore` keeps sealed records in a directory, for command-line tools.

#[cfg(feature = "file-store")]
mod file;
#[cfg(any(feature = "redis", feature = "file-store"))]
pub(crate) mod seal;

#[cfg(any(feature = "redis", feature = "file-store"))]
pub use seal::SealingKey;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use secrecy::SecretString;

use crate::key::CacheKey;
use crate::resource::ResourceUri;
use crate::scope::ScopeSet;

#[cfg(feature = "file-store")]
pub use file::{FileStore, FileStoreError, FileStoreStats};

/// The error a [`CredentialStore`] (or a `ClientStore`) reports.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`CredentialStore`] (or a `ClientStore`) returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The grant a refresh token belongs to (rules §15): the issuer, the client, the account and
/// the resource of the original authorization. The scopes are not part of it: one refresh
/// token serves every scope subset of its grant.
///
/// [`encoded`](Self::encoded) is an unambiguous byte encoding (the [`CacheKey`] encoding of
/// the same parts), for a store that names or seals records by it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GrantId {
    /// A cache key with no scopes.
    key: CacheKey,
}

impl GrantId {
    /// The grant of `client_id` at `issuer` for `resource`, for `account` if given.
    pub fn new(
        issuer: &str,
        client_id: &str,
        account: Option<&str>,
        resource: &ResourceUri,
    ) -> Self {
        let key = CacheKey::new(issuer, resource, &ScopeSet::empty(), client_id);
        Self::of(&match account {
            Some(account) => key.with_account(account),
            None => key,
        })
    }

    /// The grant a token under `key` comes from.
    pub(crate) fn of(key: &CacheKey) -> Self {
        Self {
            key: key.with_scopes(&ScopeSet::empty()),
        }
    }

    /// The grant as a cache key with no scopes (the shared level's name for it).
    #[cfg(feature = "redis")]
    pub(crate) fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        self.key.issuer()
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        self.key.client_id()
    }

    /// The account, if the grant is for one.
    pub fn account(&self) -> Option<&str> {
        self.key.account()
    }

    /// The resource.
    pub fn resource(&self) -> &ResourceUri {
        self.key.resource()
    }

    /// An unambiguous encoding of the grant: two grants encode alike only if they are equal.
    pub fn encoded(&self) -> Vec<u8> {
        self.key.encoded()
    }
}

impl fmt::Debug for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GrantId").field(&self.key).finish()
    }
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.key, f)
    }
}

/// A grant's refresh token and the scopes of the original grant (a refresh never asks for
/// more, RFC 6749 §6). `Debug` never shows the token.
#[derive(Clone)]
pub struct StoredRefreshToken {
    token: SecretString,
    granted: ScopeSet,
}

impl StoredRefreshToken {
    /// A refresh token for a grant of `granted`.
    pub fn new(token: SecretString, granted: ScopeSet) -> Self {
        Self { token, granted }
    }

    /// The refresh token.
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// The scopes of the original grant.
    pub fn granted(&self) -> &ScopeSet {
        &self.granted
    }
}

impl fmt::Debug for StoredRefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredRefreshToken")
            .field("token", &"[redacted]")
            .field("granted", &self.granted.as_str())
            .finish()
    }
}

/// A client registered at an issuer, as the JSON its `RegisteredClient` serializes to (client
/// secret included: a store keeps it as carefully as a refresh token). The store keeps it as
/// it is; the authorization layer reads it and uses it only at the issuer and registration
/// endpoint it names. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct ClientRecord {
    json: SecretString,
}

impl ClientRecord {
    /// A record holding `json`.
    pub fn new(json: SecretString) -> Self {
        Self { json }
    }

    /// The JSON text.
    pub fn json(&self) -> &SecretString {
        &self.json
    }
}

impl fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientRecord([redacted])")
    }
}

/// A grant's lock, held by a refresh from before it reads the refresh token until the rotated
/// one is written; released when dropped.
#[must_use = "the lock is released when dropped"]
pub struct GrantLock {
    _held: Option<Box<dyn Send + Sync>>,
}

impl GrantLock {
    /// A lock released when `held` is dropped (a file lock's handle, say).
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Some(Box::new(held)),
        }
    }

    /// No lock: for a store no other process shares (the cache already lets one refresh per
    /// grant run at a time within a process).
    pub fn none() -> Self {
        Self { _held: None }
    }
}

impl fmt::Debug for GrantLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantLock")
            .field("held", &self._held.is_some())
            .finish()
    }
}

/// Where credentials that must survive a restart are kept: refresh tokens per grant, and
/// registered clients per issuer. Implement it to keep them in a keychain or a database;
/// [`MemoryCredentialStore`] keeps them for the life of the process, and (feature
/// `file-store`) `FileStore` in a directory.
///
/// How the cache uses it (give it with `TokenCacheBuilder::credential_store`):
/// - a miss with no refresh token in memory [loads](Self::load_refresh_token) the grant's;
/// - a refresh takes [`lock_grant`](Self::lock_grant), loads the newest refresh token (another
///   process may have rotated it), refreshes, [saves](Self::save_refresh_token) the rotated
///   one before the new access token is handed out, or
///   [removes](Self::remove_refresh_token) the record when the server says the refresh token
///   is spent, and then drops the lock;
/// - a completed authorization saves the new grant's refresh token.
///
/// A `load` that fails is logged and counts as no record (the user may be asked to authorize
/// again); a `save` or `remove` that fails is logged, and the cache goes on with what it holds
/// in memory; a `lock_grant` that fails is logged and the refresh goes on without it. Every
/// value a store returns is text from outside: the cache checks it like any other.
///
/// A `CredentialStore` is also a `ClientStore` (give it to `DynamicRegistration::store`), so
/// one store keeps a command-line tool's clients and its grants.
pub trait CredentialStore: Send + Sync + fmt::Debug {
    /// The refresh token stored for `grant`, if any.
    fn load_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
    ) -> StoreFuture<'a, Option<StoredRefreshToken>>;

    /// Stores `token` for `grant`, replacing any other. Done when the future completes (a
    /// file store has written it durably).
    fn save_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
        token: &'a StoredRefreshToken,
    ) -> StoreFuture<'a, ()>;

    /// Removes `grant`'s refresh token (the server said it is spent).
    fn remove_refresh_token<'a>(&'a self, grant: &'a GrantId) -> StoreFuture<'a, ()>;

    /// Takes `grant`'s lock, waiting for another holder, process or not, to drop it. A store
    /// that no other process shares returns [`GrantLock::none`], as the default does.
    fn lock_grant<'a>(&'a self, grant: &'a GrantId) -> StoreFuture<'a, GrantLock> {
        let _ = grant;
        Box::pin(std::future::ready(Ok(GrantLock::none())))
    }

    /// The client stored for `issuer`, if any.
    fn load_client<'a>(&'a self, issuer: &'a str) -> StoreFuture<'a, Option<ClientRecord>>;

    /// Stores `client` for `issuer`, replacing any other.
    fn save_client<'a>(&'a self, issuer: &'a str, client: &'a ClientRecord) -> StoreFuture<'a, ()>;
}

/// A shared store is a store: one `Arc<dyn CredentialStore>` serves the cache and, as a
/// `ClientStore`, dynamic registration.
impl<S: CredentialStore + ?Sized> CredentialStore for std::sync::Arc<S> {
    fn load_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
    ) -> StoreFuture<'a, Option<StoredRefreshToken>> {
        (**self).load_refresh_token(grant)
    }

    fn save_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
        token: &'a StoredRefreshToken,
    ) -> StoreFuture<'a, ()> {
        (**self).save_refresh_token(grant, token)
    }

    fn remove_refresh_token<'a>(&'a self, grant: &'a GrantId) -> StoreFuture<'a, ()> {
        (**self).remove_refresh_token(grant)
    }

    fn lock_grant<'a>(&'a self, grant: &'a GrantId) -> StoreFuture<'a, GrantLock> {
        (**self).lock_grant(grant)
    }

    fn load_client<'a>(&'a self, issuer: &'a str) -> StoreFuture<'a, Option<ClientRecord>> {
        (**self).load_client(issuer)
    }

    fn save_client<'a>(&'a self, issuer: &'a str, client: &'a ClientRecord) -> StoreFuture<'a, ()> {
        (**self).save_client(issuer, client)
    }
}

/// Refresh tokens and clients in memory, for the life of the process (for caches that share
/// them in one process, and for tests). A grant's lock is the cache's own: none here.
#[derive(Debug, Default)]
pub struct MemoryCredentialStore {
    refresh_tokens: Mutex<HashMap<GrantId, StoredRefreshToken>>,
    clients: Mutex<HashMap<String, ClientRecord>>,
}

impl MemoryCredentialStore {
    /// The number of refresh tokens stored.
    pub fn refresh_tokens(&self) -> usize {
        self.refresh_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The number of clients stored.
    pub fn clients(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl CredentialStore for MemoryCredentialStore {
    fn load_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
    ) -> StoreFuture<'a, Option<StoredRefreshToken>> {
        let tokens = self
            .refresh_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        ready(tokens.get(grant).cloned())
    }

    fn save_refresh_token<'a>(
        &'a self,
        grant: &'a GrantId,
        token: &'a StoredRefreshToken,
    ) -> StoreFuture<'a, ()> {
        self.refresh_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(grant.clone(), token.clone());
        ready(())
    }

    fn remove_refresh_token<'a>(&'a self, grant: &'a GrantId) -> StoreFuture<'a, ()> {
        self.refresh_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(grant);
        ready(())
    }

    fn load_client<'a>(&'a self, issuer: &'a str) -> StoreFuture<'a, Option<ClientRecord>> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        ready(clients.get(issuer).cloned())
    }

    fn save_client<'a>(&'a self, issuer: &'a str, client: &'a ClientRecord) -> StoreFuture<'a, ()> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(issuer.to_owned(), client.clone());
        ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_its_issuer_client_account_and_resource_not_its_scopes() {
        let resource = ResourceUri::parse("https://mcp.example.com/mcp").unwrap();
        let key = CacheKey::new(
            "https://as.example",
            &resource,
            &ScopeSet::parse("a b").unwrap(),
            "c",
        );
        let grant = GrantId::new("https://as.example", "c", None, &resource);
        assert_eq!(GrantId::of(&key), grant);
        assert_eq!(
            GrantId::of(&key.with_scopes(&ScopeSet::parse("z").unwrap())),
            grant
        );
        assert_ne!(
            GrantId::of(&key.clone().with_account("alice")),
            grant,
            "another account"
        );
        assert_ne!(
            GrantId::new("https://as.example", "d", None, &resource),
            grant
        );
        assert_eq!(grant.account(), None);
        assert_eq!(grant.client_id(), "c");
    }

    #[test]
    fn debug_shows_no_secret() {
        let token = StoredRefreshToken::new("rt-secret".into(), ScopeSet::parse("a").unwrap());
        let client = ClientRecord::new(r#"{"client_secret":"cs-secret"}"#.into());
        let shown = format!("{token:?} {client:?}");
        assert!(
            !shown.contains("rt-secret") && !shown.contains("cs-secret"),
            "{shown}"
        );
    }
}
