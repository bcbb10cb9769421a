//! The authorization code grant with PKCE: an authorization URL to send the user to, and the
//! completion from the redirect, which reads the authorization response (RFC 6749 §4.1.2) in
//! the order that keeps a forged one harmless: the redirect URI, `state`, RFC 9207 `iss`, and
//! only then `code` or `error`.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use oauth2::{CsrfToken, PkceCodeVerifier};
use tokio::time::Instant;
use url::Url;

use super::{Acquire, TokenCache};
use crate::cache::BearerToken;
use crate::config::Grant;
use crate::error::Error;
use crate::key::CacheKey;
use crate::resource::ResourceUri;
use crate::scope::ScopeSet;

/// How long a pending authorization can be completed. RFC 6749 §4.1.2 recommends codes that
/// live at most 10 minutes; an authorization the user has not finished by then is begun
/// again, and a `state` that leaked (a log, a shared screen) is worth nothing after it. The
/// [`LoopbackListener`](crate::authorization::LoopbackListener) waits 5 minutes by default, well inside it.
pub(crate) const PENDING_LIFETIME: Duration = Duration::from_secs(600);

/// An authorization in progress: the URL to send the user to, and what the redirect will be
/// checked against. `Debug` shows neither the state nor the PKCE verifier.
///
/// It can be completed once, within 10 minutes of
/// [`begin_authorization`](TokenCache::begin_authorization). A redirect that does not belong to
/// it (another redirect URI, `state` or issuer) is refused and leaves it usable for the real
/// one; pass it by reference to [`complete_authorization`](TokenCache::complete_authorization)
/// to try again with the next redirect.
pub struct PendingAuthorization {
    url: Url,
    state: CsrfToken,
    /// Taken by the one completion that gets past the checks of `state` and `iss`.
    verifier: Mutex<Option<PkceCodeVerifier>>,
    resource: ResourceUri,
    scopes: ScopeSet,
    /// Where the tokens land: the account is part of it from the start.
    key: CacheKey,
    issuer: String,
    redirect_uri: Url,
    account: Option<String>,
    require_iss: bool,
    expires_at: Instant,
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

    /// The account (a user) the tokens will be cached for, given to
    /// [`begin_authorization_for_account`](TokenCache::begin_authorization_for_account).
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
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
    /// [`complete_authorization`](Self::complete_authorization) within 10 minutes. The
    /// issuer's client registration needs an authorization endpoint and
    /// [`Grant::AuthorizationCode`]. The tokens are cached for no account in particular; see
    /// [`begin_authorization_for_account`](Self::begin_authorization_for_account).
    pub fn begin_authorization(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<PendingAuthorization, Error> {
        self.begin(resource, scopes, None)
    }

    /// Like [`begin_authorization`](Self::begin_authorization), with the tokens cached for
    /// `account` (a user), so that several users of one client never share tokens; read them
    /// with [`token_for_account`](Self::token_for_account). The account is fixed here, with
    /// the authorization URL, and cannot be changed before the redirect comes back.
    pub fn begin_authorization_for_account(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
        account: impl Into<String>,
    ) -> Result<PendingAuthorization, Error> {
        self.begin(resource, scopes, Some(account.into()))
    }

    fn begin(
        &self,
        resource: &ResourceUri,
        scopes: &ScopeSet,
        account: Option<String>,
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
        let key = self.shared.key(&entry, &scopes, account.as_deref());
        let start =
            entry
                .client
                .authorization_url(&entry.config.resource, key.scopes(), redirect_uri)?;
        Ok(PendingAuthorization {
            url: start.url,
            state: start.state,
            verifier: Mutex::new(Some(start.verifier)),
            resource: entry.config.resource.clone(),
            scopes,
            key,
            issuer: registration.issuer.clone(),
            redirect_uri: redirect_uri.clone(),
            account,
            require_iss: registration.require_iss,
            expires_at: Instant::now() + PENDING_LIFETIME,
        })
    }

    /// Completes an authorization from the URL the user was redirected to, read in this order
    /// (each step refuses with [`Error::AuthorizationResponse`]):
    ///
    /// 1. the authorization began less than 10 minutes ago;
    /// 2. the redirect came back to the redirect URI: same scheme, host, port, path, and the
    ///    same query apart from the response's own parameters (RFC 6749 §3.1.2);
    /// 3. it carries the authorization URL's `state`, once (RFC 6749 §4.1.2, §10.12);
    /// 4. its `iss`, when present (and required when the server announces it), is the
    ///    issuer (RFC 9207 §2.4);
    /// 5. only then, once per authorization (a second completion is refused), its `error` is
    ///    reported as the server's answer, or its `code` exchanged with the PKCE verifier and
    ///    `resource`. The token (and refresh token) are cached.
    ///
    /// A redirect refused at steps 2 to 4 is not this authorization's (a stray or forged
    /// request) and leaves `pending` usable: pass it by reference (`&pending`) to complete it
    /// with the real redirect afterwards. From step 5 on, the authorization is used up.
    pub async fn complete_authorization(
        &self,
        pending: impl Borrow<PendingAuthorization>,
        redirect: &Url,
    ) -> Result<BearerToken, Error> {
        let pending = pending.borrow();
        let (code, verifier) = read_response(pending, redirect)?;
        let entry = self.shared.resource(&pending.resource)?;
        let key = &pending.key;
        let sent_at = Instant::now();
        self.shared.counters.fetch();
        let mut response = entry
            .client
            .exchange_code(
                &code,
                verifier,
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
        self.shared.backoff.succeeded(key);
        // The access token first: a concurrent miss on this key that finds the refresh token
        // finds the access token too, and uses it instead of spending the refresh token.
        let token = self
            .shared
            .store_response(&entry, key, &Acquire::Configured, response, sent_at)
            .await;
        if let Some(refresh_token) = refresh_token {
            self.shared
                .refresh_tokens
                .store(key, refresh_token, granted)
                .await;
        }
        Ok(self.shared.bearer(token))
    }
}

fn refuse(detail: String) -> Error {
    Error::AuthorizationResponse { detail }
}

/// The `code` of a redirect that belongs to `pending`, and the PKCE verifier to exchange it
/// with, read in the order [`TokenCache::complete_authorization`] documents. Nothing of the
/// redirect is read, nor shown, before its `state` and `iss` are checked: a forged redirect's
/// `error_description` is the attacker's text, not the server's answer.
fn read_response(
    pending: &PendingAuthorization,
    redirect: &Url,
) -> Result<(String, PkceCodeVerifier), Error> {
    if Instant::now() >= pending.expires_at {
        return Err(refuse(
            "the authorization began 10 minutes ago or more and has expired; call TokenCache::begin_authorization again and send the user to the new URL"
                .to_owned(),
        ));
    }
    if !crate::redirect_uri::same_endpoint(redirect, &pending.redirect_uri) {
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
    let state_matches = param("state")?.is_some_and(|state| {
        crate::redirect_uri::constant_time_eq(state.as_bytes(), pending.state.secret().as_bytes())
    });
    if !state_matches {
        return Err(refuse(
            "the state does not match; this redirect does not belong to this authorization request (the authorization is still pending)"
                .to_owned(),
        ));
    }
    // RFC 9207: an `iss` names the server that sent the response; another one is a mix-up,
    // whether it carries a code or an error.
    match param("iss")? {
        Some(iss) if iss != pending.issuer => {
            return Err(refuse(format!(
                "the redirect's iss {:?} is not the issuer {:?} (RFC 9207 mix-up defence; the authorization is still pending)",
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
    // From here on the response is this server's answer to this request: one answer only.
    let verifier = pending
        .verifier
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| {
            refuse(
                "this authorization was already completed; call TokenCache::begin_authorization for another"
                    .to_owned(),
            )
        })?;
    if let Some(error) = param("error")? {
        let description = param("error_description")?
            .map(|d| format!(" ({})", crate::resource::shorten(&d).escape_debug()))
            .unwrap_or_default();
        return Err(refuse(format!(
            "the authorization server answered {}{description}",
            crate::resource::shorten(&error).escape_debug()
        )));
    }
    let Some(code) = param("code")? else {
        return Err(refuse("the redirect has no code".to_owned()));
    };
    Ok((code, verifier))
}
