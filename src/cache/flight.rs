//! Single-flight: one token request per [`CacheKey`] at a time, run as a spawned task that
//! callers join, so a caller that is cancelled does not cancel the fetch for the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Acquire, ResourceEntry, Shared};
use crate::audience::{AudienceMode, TokenAudience};
use crate::config::Grant;
use crate::error::Error;
use crate::grant::TokenResponse;
use crate::key::CacheKey;
use crate::token::CachedToken;

type Outcome = Option<Result<Arc<CachedToken>, Error>>;

/// The fetches in progress, by key. The same key that stores a token merges its fetches.
///
/// A flight leaves the map when it ends. A caller that missed the store just before a flight
/// stored its token, and asks for a flight just after that one ended, starts a flight that
/// finds the token in the store before it asks the server (see [`Shared::fetch`]): no second
/// token request, and no map entry (a channel of a few hundred bytes) kept per cached token.
#[derive(Default, Clone)]
pub(crate) struct Flights {
    running: Arc<Mutex<HashMap<CacheKey, watch::Receiver<Outcome>>>>,
}

impl Flights {
    /// Joins the fetch for `key`, starting it if none is running. `ahead` marks a refresh
    /// ahead of expiry (see `ahead`).
    pub(crate) fn start(
        &self,
        shared: &Arc<Shared>,
        entry: &Arc<ResourceEntry>,
        key: &CacheKey,
        acquire: &Acquire,
        ahead: bool,
    ) -> watch::Receiver<Outcome> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(receiver) = running.get(key) {
            let usable = match &*receiver.borrow() {
                // In progress, unless its task died (its runtime shut down): start anew.
                None => receiver.has_changed().is_ok(),
                // Ended with a token still fresh: the answer a second request would give.
                // A refresh ahead wants a new token, though.
                Some(Ok(token)) => !ahead && token.is_fresh(Instant::now()),
                Some(Err(_)) => false,
            };
            if usable {
                return receiver.clone();
            }
        }
        let (sender, receiver) = watch::channel(None);
        running.insert(key.clone(), receiver.clone());
        drop(running);
        let guard = FlightGuard {
            flights: self.clone(),
            key: key.clone(),
            receiver: receiver.clone(),
        };
        let (shared, entry, key, acquire) =
            (shared.clone(), entry.clone(), key.clone(), acquire.clone());
        tokio::spawn(async move {
            let outcome = shared.fetch(&entry, &key, &acquire, ahead).await;
            let _ = sender.send(Some(outcome));
            drop(guard);
        });
        receiver
    }

    /// Drops the flight that produced `token`, once the token leaves the store.
    pub(crate) fn forget(&self, token: &Arc<CachedToken>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let produced_it = running.get(&token.key).is_some_and(
            |receiver| matches!(&*receiver.borrow(), Some(Ok(done)) if Arc::ptr_eq(done, token)),
        );
        if produced_it {
            running.remove(&token.key);
        }
    }

    /// Waits for the fetch for `key` (joining or starting it).
    pub(crate) async fn join(
        &self,
        shared: &Arc<Shared>,
        entry: &Arc<ResourceEntry>,
        key: &CacheKey,
        acquire: &Acquire,
    ) -> Result<Arc<CachedToken>, Error> {
        let mut receiver = self.start(shared, entry, key, acquire, false);
        let outcome = match receiver.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| {
            Err(Error::Unavailable {
                endpoint: entry.client.registration().token_endpoint.to_string(),
                detail: "the token request was aborted before it finished".to_owned(),
                retry_after: None,
            })
        })
    }
}

/// Removes its flight from the map when the task ends, however it ends (done, failed,
/// panicked, or dropped with its runtime), and only if the entry is still its own.
struct FlightGuard {
    flights: Flights,
    key: CacheKey,
    receiver: watch::Receiver<Outcome>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut running = self
            .flights
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if running
            .get(&self.key)
            .is_some_and(|current| current.same_channel(&self.receiver))
        {
            running.remove(&self.key);
        }
    }
}

impl Shared {
    /// A flight's token: the one a flight that just ended stored, through the shared level if
    /// there is one, else from the server.
    pub(crate) async fn fetch(
        self: &Arc<Self>,
        entry: &ResourceEntry,
        key: &CacheKey,
        acquire: &Acquire,
        ahead: bool,
    ) -> Result<Arc<CachedToken>, Error> {
        // A miss that raced a flight which stored its token and left the map just before this
        // one started: that token is the answer (a refresh ahead wants a new one, though).
        if !ahead
            && let Some(token) = self.store.get(key)
            && token.is_fresh(Instant::now())
        {
            return Ok(token);
        }
        // A token that acts for a credential only this process holds (an exchanged subject
        // token, a user's ID token, a workload's assertion) is not the fleet's: it stays in
        // memory, never written to nor read from the shared level.
        #[cfg(feature = "redis")]
        if let Some(level) = &self.shared_level
            && !key.stays_in_process()
        {
            return level.fetch(self, entry, key, acquire, ahead).await;
        }
        self.fetch_from_server(entry, key, acquire, ahead).await
    }

    /// One token request for `key`, its result stored, its failure recorded for backoff.
    pub(crate) async fn fetch_from_server(
        self: &Arc<Self>,
        entry: &ResourceEntry,
        key: &CacheKey,
        acquire: &Acquire,
        ahead: bool,
    ) -> Result<Arc<CachedToken>, Error> {
        let started = Instant::now();
        let client = &entry.client;
        let resource = &entry.config.resource;
        let grant = Self::grant(entry);
        let result = match (acquire, grant.clone()) {
            (Acquire::Exchange(subject), _) => {
                self.counters.fetch();
                client.token_exchange(subject, resource, key.scopes()).await
            }
            (Acquire::Configured, Grant::ClientCredentials) => {
                self.counters.fetch();
                if ahead {
                    self.counters.refresh();
                }
                client.client_credentials(resource, key.scopes()).await
            }
            // RFC 7523 §2.1; the source is read for this request.
            (Acquire::Configured, Grant::JwtBearer { assertion }) => {
                self.counters.fetch();
                client.jwt_bearer(&assertion, resource, key.scopes()).await
            }
            // MCP enterprise-managed authorization: an ID-JAG, then RFC 7523 §2.1.
            (Acquire::Configured, Grant::IdJag { id_token, .. }) => {
                self.counters.fetch();
                client.id_jag(&id_token, resource, key.scopes()).await
            }
            (Acquire::Configured, Grant::AuthorizationCode { .. }) => {
                // A miss that started while a user's authorization was completing finds its
                // token here (it is stored before the refresh token): no refresh for it.
                if !ahead
                    && let Some(token) = self.store.get(key)
                    && token.is_fresh(Instant::now())
                {
                    return Ok(token);
                }
                self.refresh_tokens.refresh(self, entry, key).await
            }
        };
        match result {
            Ok(response) => {
                self.backoff.succeeded(key);
                Ok(self
                    .store_response(entry, key, acquire, response, started)
                    .await)
            }
            Err(error @ Error::AuthorizationRequired { .. }) => {
                tracing::debug!(key = %key, "no token: {error}");
                Err(error)
            }
            Err(error) => {
                self.counters.error();
                // A refresh that failed for good has dropped its refresh token, so the next
                // call answers AuthorizationRequired without asking the server: backing off
                // would only hide that.
                let refresh_spent = matches!(acquire, Acquire::Configured)
                    && matches!(grant, Grant::AuthorizationCode { .. })
                    && super::refresh::spends_refresh_token(&error);
                // A failure before any request (an assertion file not written yet, a variable
                // not set) cost the server nothing, and its fix should work at once.
                let unsent = matches!(error, Error::Configuration(_));
                if !refresh_spent && !unsent {
                    self.backoff.failed(key, &error, Instant::now());
                }
                tracing::warn!(key = %key, "token request failed: {error}");
                Err(error)
            }
        }
    }

    /// Stores a token under `key`. The expiry counts from when the request was sent, which is
    /// no later than when the server issued the token.
    pub(crate) async fn store_response(
        &self,
        entry: &ResourceEntry,
        key: &CacheKey,
        acquire: &Acquire,
        response: TokenResponse,
        sent_at: Instant,
    ) -> Arc<CachedToken> {
        let audience = audience_of(entry, &response.access_token);
        if response.dpop_declined {
            self.counters.dpop_declined();
        }
        let token = Arc::new(CachedToken::new(
            response.access_token,
            key.clone(),
            entry.config.resource.clone(),
            response.scopes,
            audience,
            self.timing.schedule(sent_at, response.expires_in),
            response.dpop_bound,
        ));
        self.keep(&token, acquire).await;
        tracing::debug!(key = %key, expires_in = ?response.expires_in, "stored a token");
        // Nor is such a token written there (see `fetch`).
        #[cfg(feature = "redis")]
        if let Some(level) = &self.shared_level
            && !key.stays_in_process()
        {
            level.write(&token).await;
        }
        token
    }
}

/// A token's `aud`, read as the resource's audience mode says: the one place it is read,
/// for fetched tokens and for tokens from the shared level alike.
pub(crate) fn audience_of(entry: &ResourceEntry, token: &secrecy::SecretString) -> TokenAudience {
    use secrecy::ExposeSecret as _;
    match entry.policy.mode() {
        AudienceMode::ProvenanceOnly => TokenAudience::unread(),
        _ => TokenAudience::inspect_for(token.expose_secret(), &entry.config.resource),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use url::Url;

    use crate::cache::Acquire;
    use crate::cache::test_support::one_resource;

    /// A miss that raced a flight (it missed the store just before the flight stored its
    /// token, and asks for a flight just after that one left the map) gets the stored token,
    /// without a second token request.
    #[tokio::test]
    async fn a_flight_after_one_that_stored_the_token_asks_nothing() {
        let (server, cache) = one_resource(None);
        let url = Url::parse("https://mcp.example.com/mcp/tools").unwrap();
        let first = cache.token_for(&url).await.unwrap();
        let shared = &cache.shared;
        let entry = shared.outlet.routes.entry(first.resource()).unwrap();
        let again = shared
            .flights
            .join(shared, &entry, first.key(), &Acquire::Configured)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&again, first.cached()));
        assert_eq!(server.token_requests(), 1);
        assert!(shared.flights.running.lock().unwrap().is_empty());
    }
}
