//! Refresh tokens: one slot per grant, at most one refresh in flight per refresh token, and a
//! rotated refresh token replacing the old one before the new access token is handed out
//! (RFC 6749 §6, RFC 9700 §4.14.2).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use secrecy::SecretString;

use super::{ResourceEntry, Shared};
use crate::error::Error;
use crate::grant::TokenResponse;
use crate::key::CacheKey;
use crate::scope::ScopeSet;

/// What a refresh token is bound to (rules §15): the issuer, the client, the account and the
/// resource of the original grant. The requested scopes are not part of it: one refresh token
/// serves every scope subset of its grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RefreshKey {
    issuer: String,
    client_id: String,
    account: Option<String>,
    resource: String,
    /// The same as a cache key without scopes: the name of the grant in the shared level.
    #[cfg(feature = "redis")]
    grant: CacheKey,
}

impl RefreshKey {
    pub(crate) fn for_key(key: &CacheKey) -> Self {
        Self {
            issuer: key.issuer().to_owned(),
            client_id: key.client_id().to_owned(),
            account: key.account().map(str::to_owned),
            resource: key.resource().key().to_owned(),
            #[cfg(feature = "redis")]
            grant: key.with_scopes(&ScopeSet::empty()),
        }
    }
}

struct Slot {
    /// `None` once the server has rejected it. (In an `Arc` so that the shared level's first
    /// write of a new grant can hold it from a task of its own.)
    token: Arc<tokio::sync::Mutex<Option<SecretString>>>,
    /// The scopes of the original grant: a refresh never asks for more, and an answer that
    /// grants more is refused.
    granted: ScopeSet,
}

#[derive(Default)]
pub(crate) struct RefreshTokens {
    slots: Mutex<HashMap<RefreshKey, Arc<Slot>>>,
    /// The shared level, when refresh tokens are shared through it
    /// (`SharedLevel::share_refresh_tokens`).
    #[cfg(feature = "redis")]
    shared: Option<Arc<super::shared_level::Level>>,
}

impl RefreshTokens {
    #[cfg(feature = "redis")]
    pub(crate) fn new(shared: Option<Arc<super::shared_level::Level>>) -> Self {
        Self {
            slots: Mutex::default(),
            shared,
        }
    }

    /// Keeps the refresh token of a new grant (replacing any older grant's); when refresh
    /// tokens are shared, also writes it to the shared level (in the background).
    pub(crate) fn store(&self, key: RefreshKey, token: SecretString, granted: ScopeSet) {
        #[cfg(feature = "redis")]
        let grant = key.grant.clone();
        let _slot = self.insert(key, token, granted);
        #[cfg(feature = "redis")]
        if let Some(level) = &self.shared
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
            // The new slot's lock, taken here (nobody else has the slot yet) and held until the
            // write is done: a refresh of this grant in this process waits for it, so this
            // write never lands after the refresh's newer token.
            && let Ok(held) = _slot.token.clone().try_lock_owned()
        {
            let (level, granted) = (level.clone(), _slot.granted.clone());
            runtime.spawn(async move {
                if let Some(token) = &*held {
                    level.write_refresh_token(&grant, token, &granted).await;
                }
            });
        }
    }

    fn insert(&self, key: RefreshKey, token: SecretString, granted: ScopeSet) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            token: Arc::new(tokio::sync::Mutex::new(Some(token))),
            granted,
        });
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, slot.clone());
        slot
    }

    /// The slot of `key`'s grant: this process's, or one made from the shared level's.
    async fn slot(&self, key: &CacheKey) -> Option<Arc<Slot>> {
        let refresh_key = RefreshKey::for_key(key);
        let local = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&refresh_key)
            .cloned();
        #[cfg(feature = "redis")]
        if local.is_none()
            && let Some(level) = &self.shared
            && let super::shared_level::SharedRefresh::Newest(token, granted) =
                level.read_refresh_token(key).await
        {
            return Some(self.insert(refresh_key, token, granted));
        }
        local
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
        let result = Self::refresh_with(&mut current, &slot.granted, shared, entry, key).await;
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
