//! The authorization server's shared state: clients, grants, the clock, the logs, and the one
//! place tokens are minted and read back.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::client::{Client, ClientAuthMethod};
use super::jwt;
use super::records::{
    AuthorizationRequestRecord, RegistrationRecord, TokenInfo, TokenRequestRecord,
};
use super::script::{AudienceStyle, ResourceField, ScopeField, Script, TokenFormat};

/// How long an authorization code stays redeemable (RFC 6749 §4.1.2 recommends at most ten
/// minutes).
pub(crate) const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// Everything the handlers share. Immutable parts sit outside the mutex.
pub(crate) struct Shared {
    pub(crate) issuer: String,
    pub(crate) key: jwt::Key,
    pub(crate) clock: Clock,
    /// The user the authorization-code grant "logs in".
    pub(crate) subject: String,
    pub(crate) scopes_supported: Vec<String>,
    pub(crate) clients: HashMap<String, Client>,
    pub(crate) registration: RegistrationOptions,
    state: Mutex<State>,
}

/// How clients other than the configured ones come to exist.
#[derive(Debug, Clone)]
pub(crate) struct RegistrationOptions {
    /// `/register` (RFC 7591) is served and advertised.
    pub(crate) dynamic: bool,
    /// An https URL with a path is accepted as the `client_id` of a public client (client ID
    /// metadata documents), without fetching the document.
    pub(crate) metadata_documents: bool,
    /// `token_endpoint_auth_methods_supported`, and what `/register` accepts.
    pub(crate) auth_methods: Vec<ClientAuthMethod>,
}

impl Default for RegistrationOptions {
    fn default() -> Self {
        Self {
            dynamic: false,
            metadata_documents: false,
            auth_methods: vec![
                ClientAuthMethod::ClientSecretBasic,
                ClientAuthMethod::ClientSecretPost,
                ClientAuthMethod::None,
            ],
        }
    }
}

/// The mutable part. The lock is never held across an `.await`.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) script: Script,
    pub(crate) token_log: Log<TokenRequestRecord>,
    pub(crate) authorization_log: Vec<AuthorizationRequestRecord>,
    pub(crate) metadata_requests: usize,
    pub(crate) registration_log: Vec<RegistrationRecord>,
    /// Clients registered through `/register`.
    pub(crate) registered: HashMap<String, Client>,
    /// `jti`s of `private_key_jwt` assertions already accepted (RFC 7523 §3: no replay).
    #[cfg(feature = "private-key-jwt")]
    pub(crate) used_assertions: std::collections::HashSet<String>,
    /// Issuers whose JWT bearer assertions are accepted, with their HS256 keys
    /// ([`AuthorizationServer::trust_assertions_from`](super::AuthorizationServer::trust_assertions_from)).
    pub(crate) trusted_issuers: Vec<(String, jwt::Key)>,
    /// `jti`s of DPoP proofs already accepted at the token endpoint (RFC 9449 §11.1).
    pub(crate) used_dpop_proofs: std::collections::HashSet<String>,
    pub(crate) codes: HashMap<String, CodeGrant>,
    pub(crate) refresh_tokens: HashMap<String, RefreshEntry>,
    /// Refresh-token families, indexed by [`RefreshEntry::grant`].
    pub(crate) grants: Vec<Grant>,
    /// What each opaque access token means.
    opaque: HashMap<String, TokenInfo>,
}

/// An issued authorization code, redeemable once.
pub(crate) struct CodeGrant {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) code_challenge: String,
    pub(crate) resources: Vec<String>,
    pub(crate) scope: Option<String>,
    pub(crate) expires_at: SystemTime,
}

/// What a refresh-token family was granted: RFC 8707 §2.2 binds refresh tokens to the
/// resources of the original grant, RFC 6749 §6 to its scope.
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) subject: String,
    pub(crate) scope: Option<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) revoked: bool,
    /// The DPoP key a public client's refresh tokens are bound to (RFC 9449 §5).
    pub(crate) jkt: Option<String>,
}

/// One refresh token of a family.
pub(crate) struct RefreshEntry {
    pub(crate) grant: usize,
    pub(crate) rotated: bool,
}

/// An append-only log whose entries can be completed later, unless it was cleared meanwhile.
pub(crate) struct Log<T> {
    pub(crate) entries: Vec<T>,
    epoch: u64,
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            epoch: 0,
        }
    }
}

/// Where [`Log::push`] put an entry.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    epoch: u64,
    index: usize,
}

impl<T> Log<T> {
    pub(crate) fn push(&mut self, entry: T) -> Slot {
        self.entries.push(entry);
        Slot {
            epoch: self.epoch,
            index: self.entries.len() - 1,
        }
    }

    /// The entry at `slot`, unless the log was cleared since.
    pub(crate) fn get_mut(&mut self, slot: Slot) -> Option<&mut T> {
        if slot.epoch == self.epoch {
            self.entries.get_mut(slot.index)
        } else {
            None
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.epoch += 1;
    }
}

/// The server's clock: the real time, in whole seconds, when the server was built, plus the
/// tokio time elapsed since, so `tokio::time::advance` on a paused runtime ages tokens.
pub(crate) struct Clock {
    wall: SystemTime,
    start: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            wall: UNIX_EPOCH + Duration::from_secs(secs),
            start: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }

    pub(crate) fn unix_secs(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// What a token is being issued for, after the grant's checks.
pub(crate) struct Issue {
    pub(crate) subject: String,
    pub(crate) client_id: String,
    pub(crate) scope: Option<String>,
    /// The resources the token is for (the request's, or the grant's when it named none).
    pub(crate) resources: Vec<String>,
    /// RFC 8693 `audience` values, added after the resources.
    pub(crate) audiences: Vec<String>,
    /// The DPoP key to bind the token to (RFC 9449 §6), if any.
    pub(crate) jkt: Option<String>,
}

impl Shared {
    pub(crate) fn new(
        issuer: String,
        subject: String,
        scopes_supported: Vec<String>,
        clients: Vec<Client>,
        registration: RegistrationOptions,
        script: Script,
    ) -> Self {
        Self {
            issuer,
            key: jwt::new_key(),
            clock: Clock::new(),
            subject,
            scopes_supported,
            clients: clients
                .into_iter()
                .map(|c| (c.id().to_owned(), c))
                .collect(),
            registration,
            state: Mutex::new(State {
                script,
                ..State::default()
            }),
        }
    }

    /// The client with this id: a configured one, one registered through `/register`, or,
    /// when client ID metadata documents are accepted, a public client whose id is an https
    /// URL with a path.
    pub(crate) fn client(&self, id: &str) -> Option<Client> {
        if let Some(client) = self.clients.get(id) {
            return Some(client.clone());
        }
        if let Some(client) = self.lock().registered.get(id) {
            return Some(client.clone());
        }
        let is_document_url = url::Url::parse(id)
            .is_ok_and(|u| u.scheme() == "https" && u.path() != "/" && u.fragment().is_none());
        (self.registration.metadata_documents && is_document_url).then(|| Client::public(id))
    }

    /// Verifies a `private_key_jwt` assertion of `client` (see
    /// [`Client::private_key_jwt`](super::Client::private_key_jwt)), once.
    pub(crate) fn verify_assertion(
        &self,
        client: &Client,
        assertion: &str,
    ) -> Result<(), super::wire::OAuthError> {
        #[cfg(feature = "private-key-jwt")]
        {
            let token_endpoint = format!("{}/token", self.issuer);
            let with_slash = format!("{}/", self.issuer);
            let audiences = [
                self.issuer.as_str(),
                with_slash.as_str(),
                token_endpoint.as_str(),
            ];
            let jti = super::assertion::verify_assertion(
                client,
                assertion,
                &audiences,
                self.clock.unix_secs(),
            )?;
            if !self.lock().used_assertions.insert(jti) {
                return Err(super::wire::OAuthError::invalid_client(
                    "client_assertion: this jti was used before",
                    false,
                ));
            }
            Ok(())
        }
        #[cfg(not(feature = "private-key-jwt"))]
        {
            let _ = (client, assertion);
            Err(super::wire::OAuthError::invalid_client(
                "private_key_jwt needs the private-key-jwt feature",
                false,
            ))
        }
    }

    /// The state, even if a panicking test thread poisoned the lock: every update leaves it
    /// consistent, so there is nothing to recover.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mints an access token under `script` and builds the RFC 6749 §5.1 response body
    /// (without `refresh_token`, which the grant adds).
    pub(crate) fn issue(
        &self,
        state: &mut State,
        script: &Script,
        issue: Issue,
    ) -> Map<String, Value> {
        let now = self.clock.unix_secs();
        let exp = script.expires_in.map(|d| now.saturating_add(d.as_secs()));
        let granted_scope = match &script.scope_field {
            ScopeField::Fixed(scope) => Some(scope.clone()),
            ScopeField::Echo | ScopeField::Omit => issue.scope.clone(),
        };
        let aud = audience(script, &issue.resources, &issue.audiences);
        let token = match script.token_format {
            TokenFormat::Jwt => {
                let mut claims = Map::new();
                claims.insert("iss".into(), json!(self.issuer));
                claims.insert("sub".into(), json!(issue.subject));
                if let Some(aud) = &aud {
                    claims.insert("aud".into(), aud.clone());
                }
                claims.insert("client_id".into(), json!(issue.client_id));
                if let Some(scope) = &granted_scope {
                    claims.insert("scope".into(), json!(scope));
                }
                claims.insert("iat".into(), json!(now));
                if let Some(exp) = exp {
                    claims.insert("exp".into(), json!(exp));
                }
                claims.insert("jti".into(), json!(jwt::random_b64(16)));
                if let Some(jkt) = &issue.jkt {
                    claims.insert("cnf".into(), json!({ "jkt": jkt }));
                }
                jwt::sign(&self.key, &claims)
            }
            TokenFormat::Opaque => {
                let token = jwt::random_b64(32);
                let info = TokenInfo {
                    audiences: aud.as_ref().map(audience_strings).unwrap_or_default(),
                    scope: granted_scope.clone(),
                    subject: issue.subject.clone(),
                    client_id: issue.client_id.clone(),
                    expires_at: exp.map(|secs| UNIX_EPOCH + Duration::from_secs(secs)),
                    jkt: issue.jkt.clone(),
                };
                state.opaque.insert(token.clone(), info);
                token
            }
        };
        let mut body = Map::new();
        body.insert("access_token".into(), json!(token));
        let token_type = if issue.jkt.is_some() {
            "DPoP"
        } else {
            "Bearer"
        };
        body.insert("token_type".into(), json!(token_type));
        if let Some(expires_in) = script.expires_in {
            body.insert("expires_in".into(), json!(expires_in.as_secs()));
        }
        if script.scope_field != ScopeField::Omit
            && let Some(scope) = granted_scope
        {
            body.insert("scope".into(), json!(scope));
        }
        match &script.resource_field {
            ResourceField::Omit => {}
            ResourceField::Echo => {
                if !issue.resources.is_empty() {
                    body.insert("resource".into(), one_or_many(&issue.resources));
                }
            }
            ResourceField::Value(value) => {
                body.insert("resource".into(), value.clone());
            }
        }
        body
    }

    /// Starts a refresh-token family bound to `grant` and returns its first token.
    pub(crate) fn new_refresh_family(&self, state: &mut State, grant: Grant) -> String {
        state.grants.push(grant);
        let index = state.grants.len() - 1;
        self.new_refresh_token(state, index)
    }

    pub(crate) fn new_refresh_token(&self, state: &mut State, grant: usize) -> String {
        let token = jwt::random_b64(32);
        state.refresh_tokens.insert(
            token.clone(),
            RefreshEntry {
                grant,
                rotated: false,
            },
        );
        token
    }

    /// What `token` means, if this server issued it and it has not expired.
    pub(crate) fn validate(&self, token: &str) -> Option<TokenInfo> {
        let info = match jwt::verify(&self.key, token) {
            Some(claims) => self.info_from_claims(&claims)?,
            None => self.lock().opaque.get(token).cloned()?,
        };
        match info.expires_at {
            Some(expires_at) if self.clock.now() >= expires_at => None,
            _ => Some(info),
        }
    }

    fn info_from_claims(&self, claims: &Map<String, Value>) -> Option<TokenInfo> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return None;
        }
        let string = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let expires_at = match claims.get("exp") {
            None => None,
            Some(exp) => Some(UNIX_EPOCH + Duration::from_secs(exp.as_u64()?)),
        };
        Some(TokenInfo {
            audiences: claims.get("aud").map(audience_strings).unwrap_or_default(),
            scope: string("scope"),
            subject: string("sub")?,
            client_id: string("client_id")?,
            expires_at,
            jkt: claims
                .get("cnf")
                .and_then(|cnf| cnf.get("jkt"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// Completes the token log entry at `slot`.
    pub(crate) fn finish_token_request(
        &self,
        slot: Slot,
        status: StatusCode,
        error: Option<String>,
    ) {
        if let Some(record) = self.lock().token_log.get_mut(slot) {
            record.status = Some(status);
            record.error = error;
        }
    }
}

/// The `aud` claim for a token, per [`AudienceStyle`].
fn audience(script: &Script, resources: &[String], audiences: &[String]) -> Option<Value> {
    let mut requested: Vec<String> = resources.iter().chain(audiences).cloned().collect();
    if requested.is_empty() {
        requested.push(script.default_audience.clone());
    }
    match &script.audience {
        AudienceStyle::Resource => Some(one_or_many(&requested)),
        AudienceStyle::Fixed(values) => Some(one_or_many(values)),
        AudienceStyle::Array(extra) => {
            Some(json!(requested.iter().chain(extra).collect::<Vec<_>>()))
        }
        AudienceStyle::Missing => None,
        AudienceStyle::Raw(value) => Some(value.clone()),
    }
}

/// A string for one value, an array for several (RFC 7519 §4.1.3).
fn one_or_many(values: &[String]) -> Value {
    match values {
        [one] => json!(one),
        many => json!(many),
    }
}

/// The string values of an `aud` claim; nothing for a malformed one.
fn audience_strings(aud: &Value) -> Vec<String> {
    match aud {
        Value::String(one) => vec![one.clone()],
        // An array with a non-string member is malformed as a whole.
        Value::Array(many) => many
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
