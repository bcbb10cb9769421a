//! The authorization code grant with PKCE: an authorization URL to send the user to, and the
//! completion from the redirect, checking `state` and RFC 9207 `iss`.

use std::fmt;

use oauth2::{CsrfToken, PkceCodeVerifier};
use tokio::time::Instant;
use url::Url;

use super::TokenCache;
use super::refresh::RefreshKey;
use crate::config::Grant;
use crate::{BearerToken, Error, ResourceUri, ScopeSet};

/// An authorization in progress: the URL to send the user to, and what the redirect will be
/// checked against. `Debug` shows neither the state nor the PKCE verifier.
pub struct PendingAuthorization {
    url: Url,
    state: CsrfToken,
    verifier: PkceCodeVerifier,
    resource: ResourceUri,
    scopes: ScopeSet,
    issuer: String,
    redirect_uri: Url,
    account: Option<String>,
    require_iss: bool,
}

impl PendingAuthorization {
    /// The authorization URL, with `resource`, `scope`, `state` and the S256 PKCE challenge.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The redirect URI the authorization server will send the user back to.
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// Caches the resulting tokens for `account` (a user), so that several users of one client
    /// never share tokens.
    pub fn for_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("resource", &self.resource.key())
            .field("scopes", &self.scopes.as_str())
            .field("issuer", &self.issuer)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// Starts an authorization code grant for `resource` (its default scopes plus `scopes`).
    /// Send the user to [`PendingAuthorization::url`], then pass the redirect URL to
    /// [`complete_authorization`](Self::complete_authorization). The issuer's client
    /// registration needs an authorization endpoint and [`Grant::AuthorizationCode`].
    pub fn begin_authorization(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<PendingAuthorization, Error> {
        let entry = self.shared.resource(resource)?;
        let registration = entry.client.registration();
        let Some(Grant::AuthorizationCode { redirect_uri }) = registration.effective_grant() else {
            return Err(Error::AuthorizationResponse {
                detail: format!(
                    "the client registration for {} does not use the authorization code grant",
                    registration.issuer
                ),
            });
        };
        let scopes = entry.config.scopes.union(scopes);
        // The configured resource, not the caller's spelling of it: its wire form is what the
        // token request sends, and the server compares the two as strings (RFC 8707 §2.2).
        // What is asked for is the key's scope set (with `offline_access` when the
        // registration asks for refresh tokens), so the tokens land under that key.
        let key = self.shared.key(&entry, &scopes, None);
        let requested = key.scopes();
        let start =
            entry
                .client
                .authorization_url(&entry.config.resource, requested, redirect_uri)?;
        Ok(PendingAuthorization {
            url: start.url,
            state: start.state,
            verifier: start.verifier,
            resource: entry.config.resource.clone(),
            scopes,
            issuer: registration.issuer.clone(),
            redirect_uri: redirect_uri.clone(),
            account: None,
            require_iss: registration.require_iss,
        })
    }

    /// Completes an authorization from the URL the user was redirected to: the redirect must
    /// come back to the registered redirect URI with the same `state`, an `iss` (when present)
    /// equal to the issuer, and a `code`, which is exchanged with the PKCE verifier and
    /// `resource`. The token (and refresh token) are cached.
    pub async fn complete_authorization(
        &self,
        pending: PendingAuthorization,
        redirect: &Url,
    ) -> Result<BearerToken, Error> {
        let refuse = |detail: String| Error::AuthorizationResponse { detail };
        if !crate::authorization::same_endpoint(redirect, &pending.redirect_uri) {
            return Err(refuse(format!(
                "the redirect went to {}, not the redirect URI {}",
                crate::audience::redacted_url(redirect),
                crate::audience::redacted_url(&pending.redirect_uri)
            )));
        }
        let param = |name: &str| -> Result<Option<String>, Error> {
            let mut values = redirect
                .query_pairs()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v);
            let first = values.next().map(|v| v.into_owned());
            if values.next().is_some() {
                return Err(refuse(format!(
                    "the redirect has more than one {name:?} parameter"
                )));
            }
            Ok(first)
        };
        if let Some(error) = param("error")? {
            let description = param("error_description")?
                .map(|d| format!(" ({})", crate::resource::shorten(&d).escape_debug()))
                .unwrap_or_default();
            return Err(refuse(format!(
                "the authorization server answered {}{description}",
                crate::resource::shorten(&error).escape_debug()
            )));
        }
        let state_matches = param("state")?.is_some_and(|state| {
            crate::authorization::constant_time_eq(
                state.as_bytes(),
                pending.state.secret().as_bytes(),
            )
        });
        if !state_matches {
            return Err(refuse(
                "the state does not match; this redirect does not belong to this authorization request"
                    .to_owned(),
            ));
        }
        // RFC 9207: an `iss` names the server that issued the code; another one is a mix-up.
        match param("iss")? {
            Some(iss) if iss != pending.issuer => {
                return Err(refuse(format!(
                    "the redirect's iss {:?} is not the issuer {:?} (RFC 9207 mix-up defence)",
                    crate::resource::shorten(&iss),
                    pending.issuer
                )));
            }
            None if pending.require_iss => {
                return Err(refuse(format!(
                    "the redirect has no iss, and {:?} announces that it sends one (RFC 9207 §2.4)",
                    pending.issuer
                )));
            }
            _ => {}
        }
        let Some(code) = param("code")? else {
            return Err(refuse("the redirect has no code".to_owned()));
        };

        let entry = self.shared.resource(&pending.resource)?;
        let key = self
            .shared
            .key(&entry, &pending.scopes, pending.account.as_deref());
        let sent_at = Instant::now();
        self.shared.counters.fetch();
        let mut response = entry
            .client
            .exchange_code(
                &code,
                pending.verifier,
                &pending.redirect_uri,
                &pending.resource,
                // What the authorization request asked for (the key's scopes).
                key.scopes(),
            )
            .await
            .inspect_err(|_| self.shared.counters.error())?;
        let refresh_token = response.refresh_token.take();
        // The grant recorded for the refresh token is what was asked for (offline_access
        // included), not what the answer added or left out (RFC 6749 §6).
        let granted = super::refresh::granted_by_code(key.scopes());
        self.shared.backoff.succeeded(&key);
        // The access token first: a concurrent miss on this key that finds the refresh token
        // finds the access token too, and uses it instead of spending the refresh token.
        let token = self
            .shared
            .store_response(&entry, &key, response, sent_at)
            .await;
        if let Some(refresh_token) = refresh_token {
            self.shared
                .refresh_tokens
                .store(RefreshKey::for_key(&key), refresh_token, granted);
        }
        Ok(self.shared.bearer(token))
    }
}
