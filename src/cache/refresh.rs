//! Refresh tokens: one slot per grant, at most one refresh in flight per refresh token, and a
//! rotated refresh token replacing the old one before the new access token is handed out
//! (RFC 6749 §6, RFC 9700 §4.14.2).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use secrecy::SecretString;

use secrecy::ExposeSecret as _;

use super::{ResourceEntry, Shared};
use crate::error::Error;
use crate::grant::TokenResponse;
use crate::key::CacheKey;
use crate::resource::ResourceUri;
use crate::scope::ScopeSet;
use crate::store::{CredentialStore, GrantId, GrantLock, StoredRefreshToken};

/// What a refresh token is bound to (rules §15): the issuer, the client, the account and the
/// resource of the original grant, the same identity a credential store keeps it under. The
/// requested scopes are not part of it: one refresh token serves every scope subset of its
/// grant.
type RefreshKey = GrantId;

struct Slot {
    /// `None` once the server has rejected it. (In an `Arc` so that the shared level's first
    /// write of a new grant can hold it from a task of its own.)
    token: Arc<tokio::sync::Mutex<Option<SecretString>>>,
    /// The scopes of the original grant: a refresh never asks for more, and an answer that
    /// grants more is refused.
    granted: ScopeSet,
    /// Whether the credential store missed a write of this grant, and so holds an older
    /// refresh token than the slot (spent, with rotation): it is not read until a write
    /// succeeds.
    store_behind: AtomicBool,
}

impl Slot {
    fn new(token: SecretString, granted: ScopeSet) -> Arc<Self> {
        Arc::new(Self {
            token: Arc::new(tokio::sync::Mutex::new(Some(token))),
            granted,
            store_behind: AtomicBool::new(false),
        })
    }
}

#[derive(Default)]
pub(crate) struct RefreshTokens {
    slots: Mutex<HashMap<RefreshKey, Arc<Slot>>>,
    /// Where refresh tokens outlive the process, if anywhere
    /// (`TokenCacheBuilder::credential_store`).
    store: Option<Arc<dyn CredentialStore>>,
    /// The shared level, when refresh tokens are shared through it
    /// (`SharedLevel::share_refresh_tokens`).
    #[cfg(feature = "redis")]
    shared: Option<Arc<super::shared_level::Level>>,
}

impl RefreshTokens {
    pub(crate) fn new(store: Option<Arc<dyn CredentialStore>>) -> Self {
        Self {
            store,
            ..Self::default()
        }
    }

    /// The credential store, if there is one.
    pub(crate) fn credential_store(&self) -> Option<&Arc<dyn CredentialStore>> {
        self.store.as_ref()
    }

    /// Shares refresh tokens through the shared level.
    #[cfg(feature = "redis")]
    pub(crate) fn shared(mut self, shared: Option<Arc<super::shared_level::Level>>) -> Self {
        self.shared = shared;
        self
    }

    /// Keeps the refresh token of a new grant for `key` (replacing any older grant's): in the
    /// credential store, if there is one, before this returns; when refresh tokens are shared,
    /// also in the shared level (in the background).
    pub(crate) async fn store(&self, key: &CacheKey, token: SecretString, granted: ScopeSet) {
        let grant = RefreshKey::of(key);
        // The new slot's lock, taken before anyone else can see the slot and held until the
        // writes are done: a refresh of this grant in this process waits for them, so they
        // never land after the refresh's newer token.
        let slot = Slot::new(token, granted);
        let Ok(held) = slot.token.clone().try_lock_owned() else {
            return;
        };
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(grant.clone(), slot.clone());
        if let (Some(store), Some(token)) = (&self.store, &*held) {
            // In the grant's turn: another process's refresh of an older grant does not write
            // its token over this one.
            let _turn = lock_grant(&**store, &grant).await;
            let stored = StoredRefreshToken::new(token.clone(), slot.granted.clone());
            let saved = store.save_refresh_token(&grant, &stored).await;
            slot.store_behind.store(saved.is_err(), Ordering::Relaxed);
            if let Err(e) = saved {
                tracing::warn!(grant = %grant, "the credential store could not save a new refresh token (it is kept in memory): {e}");
            }
        }
        #[cfg(feature = "redis")]
        if let Some(level) = &self.shared
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (level, granted) = (level.clone(), slot.granted.clone());
            runtime.spawn(async move {
                if let Some(token) = &*held {
                    level
                        .write_refresh_token(grant.key(), token, &granted)
                        .await;
                }
            });
        }
    }

    /// Drops the refresh tokens of `issuer`'s grants for `resource` (the resource moved to
    /// another authorization server, RFC 9728 §5.2): this process's slots, and in the
    /// credential store and the shared level each grant held here plus `known` (the grant a
    /// later process would load). A store that fails is logged; the slot is gone either way.
    pub(crate) async fn forget(&self, issuer: &str, resource: &ResourceUri, known: RefreshKey) {
        let mut grants = vec![known];
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|grant, _| {
                let drop = grant.issuer() == issuer && grant.resource() == resource;
                if drop && !grants.contains(grant) {
                    grants.push(grant.clone());
                }
                !drop
            });
        for grant in &grants {
            if let Some(store) = &self.store
                && let Err(e) = store.remove_refresh_token(grant).await
            {
                tracing::warn!(grant = %grant, "the credential store could not remove the refresh token of an authorization server the resource no longer names: {e}");
            }
            #[cfg(feature = "redis")]
            if let Some(level) = &self.shared {
                level.delete_refresh_token(grant.key()).await;
            }
        }
    }

    fn insert(&self, key: RefreshKey, token: SecretString, granted: ScopeSet) -> Arc<Slot> {
        let slot = Slot::new(token, granted);
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            // A slot another task made meanwhile is as good, and may be in use.
            .or_insert(slot)
            .clone()
    }

    /// The slot of `key`'s grant: this process's, or one made from the shared level's or the
    /// credential store's.
    async fn slot(&self, key: &CacheKey) -> Option<Arc<Slot>> {
        let refresh_key = RefreshKey::of(key);
        let local = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&refresh_key)
            .cloned();
        if local.is_some() {
            return local;
        }
        #[cfg(feature = "redis")]
        if let Some(level) = &self.shared
            && let super::shared_level::SharedRefresh::Newest(token, granted) =
                level.read_refresh_token(key).await
        {
            return Some(self.insert(refresh_key, token, granted));
        }
        let stored = self.load(&refresh_key).await?;
        let (token, granted) = (stored.token().clone(), stored.granted().clone());
        Some(self.insert(refresh_key, token, granted))
    }

    /// The credential store's refresh token for `grant`; a store that fails counts as none.
    async fn load(&self, grant: &RefreshKey) -> Option<StoredRefreshToken> {
        let store = self.store.as_ref()?;
        match store.load_refresh_token(grant).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(grant = %grant, "the credential store could not be read: {e}");
                None
            }
        }
    }

    /// Refreshes for `key` with its grant's refresh token.
    pub(crate) async fn refresh(
        &self,
        shared: &Shared,
        entry: &ResourceEntry,
        key: &CacheKey,
    ) -> Result<TokenResponse, Error> {
        let required = || Error::AuthorizationRequired {
            resource: key.resource().key().to_owned(),
            beyond_grant: None,
        };
        let slot = self.slot(key).await.ok_or_else(required)?;
        // RFC 6749 §6: never ask for a scope the original grant did not include.
        if !slot.granted.is_superset_of(key.scopes()) {
            return Err(Error::AuthorizationRequired {
                resource: key.resource().key().to_owned(),
                beyond_grant: Some(key.scopes().clone()),
            });
        }
        // Held across the request: a second refresh with the same token would, with rotation,
        // revoke the whole grant.
        let mut current = slot.token.lock().await;
        // Shared refresh tokens: the fleet's refreshes of this grant take turns, each with the
        // newest refresh token (another process may have rotated it). One this process holds
        // that Redis says is superseded is not presented (RFC 9700 §4.14.2: a rotated token
        // presented again revokes the grant), and nothing is written back for it.
        #[cfg(feature = "redis")]
        let fleet = match &self.shared {
            Some(level) => {
                use super::shared_level::SharedRefresh;
                let lock = level.lock_refresh(key).await;
                let superseded = match level.read_refresh_token(key).await {
                    SharedRefresh::Newest(newest, _) => {
                        *current = Some(newest);
                        false
                    }
                    SharedRefresh::Superseded => {
                        *current = None;
                        true
                    }
                    SharedRefresh::Nothing => false,
                };
                Some((level, lock, superseded))
            }
            None => None,
        };
        // A credential store another process may share: that grant's turn, and the newest
        // refresh token, read after taking it.
        let grant = RefreshKey::of(key);
        let turn = self.take_turn(&grant, &slot, &mut current).await;
        let presented = current.clone();
        let result = Self::refresh_with(&mut current, &slot.granted, shared, entry, key).await;
        // The rotated refresh token is written (or the spent one removed) before the turn
        // ends and before the new access token is handed out.
        if let Some(store) = &self.store
            && changed(presented.as_ref(), current.as_ref())
        {
            let written = match &*current {
                Some(token) => {
                    let stored = StoredRefreshToken::new(token.clone(), slot.granted.clone());
                    store.save_refresh_token(&grant, &stored).await
                }
                None => store.remove_refresh_token(&grant).await,
            };
            slot.store_behind.store(written.is_err(), Ordering::Relaxed);
            if let Err(e) = written {
                tracing::warn!(grant = %grant, "the credential store could not record a refresh (the refresh token is kept in memory, and the store not read for this grant until a write succeeds): {e}");
            }
        }
        drop(turn);
        #[cfg(feature = "redis")]
        if let Some((level, lock, superseded)) = fleet {
            match &*current {
                _ if superseded => {}
                Some(token) => level.write_refresh_token(key, token, &slot.granted).await,
                None => level.delete_refresh_token(key).await,
            }
            if let Some(lock) = lock {
                lock.release().await;
            }
        }
        result
    }

    /// With a credential store: takes `grant`'s lock and puts the store's refresh token, the
    /// newest, in `current`. A store with none keeps `current`: at worst the server answers
    /// `invalid_grant` to it. A store that missed a write of this slot's is not read.
    async fn take_turn(
        &self,
        grant: &RefreshKey,
        slot: &Slot,
        current: &mut Option<SecretString>,
    ) -> Option<GrantLock> {
        let store = self.store.as_ref()?;
        let turn = lock_grant(&**store, grant).await;
        if !slot.store_behind.load(Ordering::Relaxed)
            && let Some(stored) = self.load(grant).await
        {
            *current = Some(stored.token().clone());
        }
        Some(turn)
    }

    /// The refresh request with the slot's token, which it replaces with a rotated one, or
    /// drops when the server says it is spent. An answer granting scopes beyond `granted` is
    /// refused (its rotated refresh token is kept).
    async fn refresh_with(
        current: &mut Option<SecretString>,
        granted: &ScopeSet,
        shared: &Shared,
        entry: &ResourceEntry,
        key: &CacheKey,
    ) -> Result<TokenResponse, Error> {
        let Some(refresh_token) = current.as_ref() else {
            return Err(Error::AuthorizationRequired {
                resource: key.resource().key().to_owned(),
                beyond_grant: None,
            });
        };
        shared.counters.fetch();
        shared.counters.refresh();
        let result = entry
            .client
            .refresh(refresh_token, &entry.config.resource, key.scopes())
            .await;
        match result {
            Ok(mut response) => {
                if let Some(rotated) = response.refresh_token.take() {
                    *current = Some(rotated);
                }
                // RFC 6749 §6: the new token's scope may not go beyond the original grant. A
                // token carrying more (`admin` on a grant of `mcp:read`) is not cached.
                if !granted.is_superset_of(&response.scopes) {
                    return Err(widened(entry, granted, &response.scopes));
                }
                Ok(response)
            }
            Err(rejected) => {
                if let Some(rotated) = rejected.refresh_token {
                    *current = Some(rotated);
                }
                if spends_refresh_token(&rejected.error) {
                    *current = None;
                }
                Err(rejected.error)
            }
        }
    }
}

/// `grant`'s lock in `store`; one that cannot be taken is logged, and the caller goes on
/// without it (as without a store).
async fn lock_grant(store: &dyn CredentialStore, grant: &RefreshKey) -> GrantLock {
    match store.lock_grant(grant).await {
        Ok(turn) => turn,
        Err(e) => {
            tracing::warn!(grant = %grant, "the credential store's lock could not be taken; going on without it: {e}");
            GrantLock::none()
        }
    }
}

/// Whether a refresh changed the grant's refresh token (rotated or dropped it).
fn changed(before: Option<&SecretString>, after: Option<&SecretString>) -> bool {
    match (before, after) {
        (Some(before), Some(after)) => before.expose_secret() != after.expose_secret(),
        (None, None) => false,
        _ => true,
    }
}

/// The refusal of a refresh answer that grants `returned`, beyond the original grant.
fn widened(entry: &ResourceEntry, granted: &ScopeSet, returned: &ScopeSet) -> Error {
    let beyond: Vec<&str> = returned.iter().filter(|s| !granted.contains(s)).collect();
    Error::Protocol {
        endpoint: entry.client.registration().token_endpoint.to_string(),
        detail: format!(
            "the refresh answer grants {:?} beyond the original grant {:?} (RFC 6749 §6); the \
             token was discarded. If these scopes are meant to be granted, add them to the \
             resource's scopes (ResourceConfig::scopes) and authorize again",
            crate::resource::shorten(&beyond.join(" ")),
            granted.as_str()
        ),
    }
}

/// The grant a code exchange records for its refresh token: what was asked for. A server
/// that answers without `scope` granted exactly that (RFC 6749 §5.1), `offline_access`
/// included; one that answers with less may still hold the rest in the grant (a token for
/// one resource carries only its scopes, RFC 8707 §2.2; the server refuses a scope it did not
/// grant at refresh time with `invalid_scope`); scopes it answers beyond the request were not
/// asked of the user and are not recorded.
pub(crate) fn granted_by_code(asked: &ScopeSet) -> ScopeSet {
    asked.clone()
}

/// Whether an error from a refresh means the refresh token is dead: `invalid_grant`
/// (RFC 6749 §5.2), or `invalid_target`, on which some servers (oidc-provider) have already
/// rotated it. The next call then needs a new authorization, without asking the server.
pub(crate) fn spends_refresh_token(error: &Error) -> bool {
    matches!(error, Error::InvalidTarget { .. })
        || error
            .oauth_error()
            .is_some_and(|e| e.code == "invalid_grant")
}
