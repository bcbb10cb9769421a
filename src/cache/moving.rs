//! A resource that moves to another authorization server (RFC 9728 §5.2): its entry is
//! replaced, and the old server's tokens and refresh tokens for it are dropped everywhere the
//! cache keeps them. What moves a resource, and when, is the authorization layer's.

use std::sync::Arc;

use super::TokenCache;
use crate::config::ResourceConfig;
use crate::error::Error;
use crate::token::CachedToken;

impl TokenCache {
    /// Moves a configured resource to the authorization server of `config` (its issuer needs
    /// a client registration), then drops every token and refresh token of the server it had
    /// for it, everywhere the cache keeps them (RFC 9728 §5.2: that server no longer speaks
    /// for the resource, and its tokens are never sent again): the tokens in memory under any
    /// scope set or account (and the flights that made them), the shared level's copies, and
    /// the refresh tokens in memory, in the credential store and in the shared level. Other
    /// resources of that server keep theirs. Returns the issuer the resource had.
    pub(crate) async fn move_resource(&self, config: ResourceConfig) -> Result<String, Error> {
        let shared = &self.shared;
        let resource = config.resource.clone();
        let entry = shared.entry_for(config).map_err(Error::Configuration)?;
        let old = shared
            .outlet
            .routes
            .replace(entry)
            .ok_or_else(|| Error::UnknownResource {
                resource: resource.key().to_owned(),
            })?;
        // A request routed before the move holds the old entry: its hit finds no token there.
        old.current.store(None);
        let from = old.config.issuer.as_str();
        let stale: Vec<Arc<CachedToken>> = shared
            .store
            .matching(|key| key.issuer() == from && *key.resource() == resource);
        for token in &stale {
            shared.evict_if_current(token).await;
        }
        let grant = crate::store::GrantId::of(&old.default_key);
        shared.refresh_tokens.forget(from, &resource, grant).await;
        shared.counters.authorization_server_move();
        Ok(from.to_owned())
    }
}
