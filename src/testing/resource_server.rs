//! [`ResourceServer`]: a protected resource that checks bearer tokens like an RFC 9068 resource
//! server and serves RFC 9728 metadata.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse as _, Response};
use serde_json::json;

use super::authorization_server::AuthorizationServer;
use super::dpop;
use super::jwt::fingerprint;
use super::records::{ResourceRequestRecord, TokenInfo};
use super::redirect::Redirect;
use super::resource_dpop::{Scheme, dpop_refusal, presented_token};
use super::server::{self, Running};
use super::state::Shared;

/// The origin of [`ResourceServerBuilder::in_process`] servers.
pub const IN_PROCESS_ORIGIN: &str = "https://rs.in-process.test";

const PRM_WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// A protected resource on `127.0.0.1` (or in process) that trusts one
/// [`AuthorizationServer`].
///
/// Requests under its [path](ResourceServerBuilder::path) (the path itself, or below it on a
/// segment boundary) need a bearer token in the `Authorization` header:
///
/// - none: `401` with `WWW-Authenticate: Bearer resource_metadata="…"` (and `scope="…"` when
///   scopes are required), no error code (RFC 6750 §3);
/// - one the authorization server does not vouch for (unknown, expired, from another server),
///   or whose `aud` does not contain the [resource identifier](Self::resource) exactly
///   (RFC 9068 §4): `401`, `error="invalid_token"`;
/// - one without every [required scope](ResourceScript::scopes_required): `403`,
///   `error="insufficient_scope", scope="…"` (RFC 6750 §3.1, MCP step-up);
/// - otherwise `200` with `{"path", "resource", "scope", "sub", "client_id"}`.
///
/// Tokens are checked with [`AuthorizationServer::validate`], in memory, as an RFC 7662
/// introspection call would. RFC 9728 metadata is served at the path-inserted well-known URL
/// (and at the root one if asked). Other paths get `404`. Every request, on any path, is
/// recorded with a [`fingerprint`](super::fingerprint) of its token, never the token.
///
/// ```
/// use audience_cache::testing::{AuthorizationServer, Client, ResourceServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let auth = AuthorizationServer::builder().start().await?;
/// let mcp = ResourceServer::builder(&auth).path("/mcp").scopes_required(["read"]).start().await?;
/// assert_eq!(mcp.resource(), format!("http://{}/mcp", mcp.local_addr().ok_or("bound")?));
///
/// let response = reqwest::get(mcp.url()).await?;
/// assert_eq!(response.status(), 401);
/// let challenge = response.headers()["www-authenticate"].to_str()?;
/// assert_eq!(
///     challenge,
///     format!(r#"Bearer resource_metadata="{}", scope="read""#, mcp.metadata_url())
/// );
/// assert_eq!(mcp.requests()[0].bearer_presented, false);
/// # Ok(())
/// # }
/// ```
pub struct ResourceServer {
    shared: Arc<RsShared>,
    router: Router,
    addr: Option<SocketAddr>,
    running: Option<Running>,
}

struct RsShared {
    /// The authorization server whose tokens are accepted (changed by
    /// [`ResourceServer::move_to`]).
    authorization_server: Mutex<Arc<Shared>>,
    origin: String,
    path: String,
    resource: String,
    root_metadata: bool,
    state: Mutex<RsState>,
}

struct RsState {
    script: ResourceScript,
    log: Vec<ResourceRequestRecord>,
    /// `jti`s of the DPoP proofs accepted (RFC 9449 §11.1: a replay is refused).
    used_proofs: std::collections::HashSet<String>,
}

impl RsShared {
    fn lock(&self) -> MutexGuard<'_, RsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn trusted(&self) -> Arc<Shared> {
        let trusted = self
            .authorization_server
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&trusted)
    }

    /// RFC 9728 §3.1: the well-known suffix inserted before the path; `/` alone adds nothing.
    fn metadata_path(&self) -> String {
        match self.path.as_str() {
            "/" => PRM_WELL_KNOWN.to_owned(),
            path => format!("{PRM_WELL_KNOWN}{path}"),
        }
    }

    /// Whether `path` is the protected path or below it on a segment boundary.
    fn protects(&self, path: &str) -> bool {
        let base = self.path.trim_end_matches('/');
        path == self.path
            || path
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The resource server's behaviour, changeable while it runs with
/// [`ResourceServer::script`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceScript {
    /// Scopes every protected request needs; also the `scope` of the 401 challenge.
    /// Default: those given to [`ResourceServerBuilder::scopes_required`], else none.
    pub scopes_required: Vec<String>,
    /// `scopes_supported` in the metadata (omitted when empty). Default: the builder's
    /// [`scopes_supported`](ResourceServerBuilder::scopes_supported), else the required scopes.
    pub scopes_supported: Vec<String>,
    /// `authorization_servers` in the metadata. Default: the trusted server's issuer. Tokens
    /// are still checked with that server whatever this says ([`ResourceServer::move_to`]
    /// changes both).
    pub authorization_servers: Vec<String>,
    /// The `authorization_servers` of the next metadata responses, one list per response, in
    /// order; once they are used up, `authorization_servers` applies again. For a server that
    /// moves, and moves back, between two fetches of one client request. Default: empty.
    pub next_authorization_servers: Vec<Vec<String>>,
    /// A `resource` to serve in the metadata instead of the real identifier, to test the
    /// RFC 9728 §3.3 check. Default: `None`.
    pub metadata_resource: Option<String>,
    /// Redirects answered before any token check, first match wins. Default: none.
    pub redirects: Vec<Redirect>,
    /// Requires DPoP-bound tokens (RFC 9449 §7): a bearer token, or none, is answered `401`
    /// with a `DPoP algs="ES256"` challenge, and the metadata says
    /// `dpop_bound_access_tokens_required`. A DPoP-bound token (`cnf.jkt`) is always checked
    /// as one: presented as `Authorization: DPoP` with a valid proof by its key, for this
    /// request's method and URL and with its `ath`. Default: `false`.
    pub dpop_required: bool,
    /// Whether the metadata says what [`dpop_required`](Self::dpop_required) says; with
    /// `false` only the DPoP-only 401 challenge asks for DPoP. Default: `true`.
    pub dpop_required_in_metadata: bool,
    /// The `dpop_signing_alg_values_supported` the metadata lists when `dpop_required` is
    /// set. Default: `["ES256"]`.
    pub dpop_signing_algs: Vec<String>,
    /// The nonce DPoP proofs must carry (RFC 9449 §9): a proof without it is answered `401`
    /// with `WWW-Authenticate: DPoP error="use_dpop_nonce"` and `DPoP-Nonce: <this>`.
    /// Default: `None`.
    pub dpop_nonce: Option<String>,
    /// A new nonce after every request to the protected path: a `use_dpop_nonce` answer names
    /// the nonce of its request, which no longer holds when the retry comes (a server whose
    /// nonce never holds still). Default: `false`.
    pub rotate_dpop_nonce: bool,
}

impl ResourceServer {
    /// A builder for a resource server that trusts `authorization_server`'s tokens.
    pub fn builder(authorization_server: &AuthorizationServer) -> ResourceServerBuilder {
        ResourceServerBuilder {
            authorization_server: Arc::clone(&authorization_server.shared),
            path: "/mcp".to_owned(),
            resource: None,
            scopes_required: Vec::new(),
            scopes_supported: None,
            root_metadata: false,
        }
    }

    /// The resource identifier: what tokens must carry in `aud` and what the metadata says.
    /// By default the origin plus the path (`http://127.0.0.1:PORT/mcp`); just the origin,
    /// with no trailing slash, for path `/`.
    pub fn resource(&self) -> &str {
        &self.shared.resource
    }

    /// `http://127.0.0.1:PORT`, or the in-process origin.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// The origin plus the protected path: where a client sends its requests.
    pub fn url(&self) -> String {
        format!("{}{}", self.shared.origin, self.shared.path)
    }

    /// The RFC 9728 metadata URL, well-known part inserted before the path
    /// (`http://127.0.0.1:PORT/.well-known/oauth-protected-resource/mcp`): the one the 401
    /// challenge names.
    pub fn metadata_url(&self) -> String {
        format!("{}{}", self.shared.origin, self.shared.metadata_path())
    }

    /// The socket address of a started server; `None` in process.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Changes the server's behaviour for requests that arrive afterwards.
    ///
    /// ```
    /// use audience_cache::testing::{AuthorizationServer, Redirect, ResourceServer};
    ///
    /// let auth = AuthorizationServer::builder().in_process();
    /// let mcp = ResourceServer::builder(&auth).in_process();
    /// mcp.script(|s| {
    ///     s.scopes_required = vec!["read".into(), "write".into()];
    ///     s.redirects.push(Redirect::temporary("/mcp", "/mcp/v2"));
    /// });
    /// ```
    pub fn script(&self, change: impl FnOnce(&mut ResourceScript)) {
        change(&mut self.shared.lock().script);
    }

    /// Moves the resource to another authorization server (RFC 9728 §5.2, an MCP server whose
    /// authorization server changes): from the next request on, its metadata lists only
    /// `authorization_server` and only that server's tokens are accepted; a token of the
    /// previous one is answered `401 invalid_token`.
    pub fn move_to(&self, authorization_server: &AuthorizationServer) {
        let issuer = authorization_server.shared.issuer.clone();
        *self
            .shared
            .authorization_server
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&authorization_server.shared);
        self.shared.lock().script.authorization_servers = vec![issuer];
    }

    /// Answers one request in process, through the same router a started server uses. An
    /// absolute URI whose origin is not [`origin`](Self::origin) gets `421`.
    pub async fn handle(&self, request: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
        server::oneshot(&self.router, &self.shared.origin, request).await
    }

    /// Every request received since the start or the last [`reset_counts`](Self::reset_counts),
    /// in order.
    pub fn requests(&self) -> Vec<ResourceRequestRecord> {
        self.shared.lock().log.clone()
    }

    /// Forgets the recorded requests.
    pub fn reset_counts(&self) {
        self.shared.lock().log.clear();
    }

    /// Stops a started server and waits for requests in flight; nothing more in process.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

impl fmt::Debug for ResourceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceServer")
            .field("resource", &self.shared.resource)
            .field("local_addr", &self.addr)
            .finish_non_exhaustive()
    }
}

type ResourceFn = Box<dyn FnOnce(&str) -> String + Send>;

/// Configures a [`ResourceServer`]; finish with [`start`](Self::start) or
/// [`in_process`](Self::in_process).
#[must_use = "a builder does nothing until start() or in_process()"]
pub struct ResourceServerBuilder {
    authorization_server: Arc<Shared>,
    path: String,
    resource: Option<ResourceFn>,
    scopes_required: Vec<String>,
    scopes_supported: Option<Vec<String>>,
    root_metadata: bool,
}

impl fmt::Debug for ResourceServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceServerBuilder")
            .field("path", &self.path)
            .field("scopes_required", &self.scopes_required)
            .finish_non_exhaustive()
    }
}

impl ResourceServerBuilder {
    /// The protected path. Default: `/mcp`. A missing leading `/` is added.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        self
    }

    /// Derives the resource identifier from the origin (`http://127.0.0.1:PORT`, known only
    /// once bound), e.g. `.resource(|origin| format!("{origin}/mcp/"))` for a trailing-slash
    /// variant. Default: origin plus path.
    pub fn resource(mut self, resource: impl FnOnce(&str) -> String + Send + 'static) -> Self {
        self.resource = Some(Box::new(resource));
        self
    }

    /// Scopes every protected request needs. Default: none.
    pub fn scopes_required<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_required = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// `scopes_supported` for the metadata. Default: the required scopes.
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Also serve the metadata at the root well-known URL
    /// (`/.well-known/oauth-protected-resource`), MCP's fallback. Default: `false`.
    pub fn root_metadata(mut self, serve: bool) -> Self {
        self.root_metadata = serve;
        self
    }

    /// Binds `127.0.0.1:0` and serves in a spawned task. Must be called within a tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// The error from binding the socket.
    pub async fn start(self) -> io::Result<ResourceServer> {
        let (listener, addr) = server::bind().await?;
        let mut server = self.build(server::origin_of(addr));
        server.addr = Some(addr);
        server.running = Some(Running::spawn(listener, server.router.clone()));
        Ok(server)
    }

    /// A server with no socket at origin [`IN_PROCESS_ORIGIN`]
    /// (`https://rs.in-process.test`), used through [`ResourceServer::handle`].
    pub fn in_process(self) -> ResourceServer {
        self.in_process_at(IN_PROCESS_ORIGIN)
    }

    /// Like [`in_process`](Self::in_process) at another origin (no trailing slash).
    pub fn in_process_at(self, origin: impl Into<String>) -> ResourceServer {
        self.build(origin.into())
    }

    fn build(self, origin: String) -> ResourceServer {
        let resource = match self.resource {
            Some(derive) => derive(&origin),
            None if self.path == "/" => origin.clone(),
            None => format!("{origin}{}", self.path),
        };
        let script = ResourceScript {
            scopes_supported: self
                .scopes_supported
                .unwrap_or_else(|| self.scopes_required.clone()),
            scopes_required: self.scopes_required,
            authorization_servers: vec![self.authorization_server.issuer.clone()],
            next_authorization_servers: Vec::new(),
            metadata_resource: None,
            redirects: Vec::new(),
            dpop_required: false,
            dpop_required_in_metadata: true,
            dpop_signing_algs: vec!["ES256".to_owned()],
            dpop_nonce: None,
            rotate_dpop_nonce: false,
        };
        let shared = Arc::new(RsShared {
            authorization_server: Mutex::new(self.authorization_server),
            origin,
            path: self.path,
            resource,
            root_metadata: self.root_metadata,
            state: Mutex::new(RsState {
                script,
                log: Vec::new(),
                used_proofs: std::collections::HashSet::new(),
            }),
        });
        let router = Router::new()
            .fallback(serve)
            .with_state(Arc::clone(&shared));
        ResourceServer {
            shared,
            router,
            addr: None,
            running: None,
        }
    }
}

/// Every request, every path: metadata, redirects, protected paths, 404.
async fn serve(
    State(rs): State<Arc<RsShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    let presented = presented_token(&headers);
    let bearer = presented.map(|(_, token)| token);
    let trusted = rs.trusted();
    let info = bearer.and_then(|token| trusted.validate(token));
    let script = rs.lock().script.clone();
    // RFC 9449 §7: the proof, checked for this request's method and URL and the token's hash.
    let proof = match dpop::header(&headers) {
        Ok(Some(proof)) => {
            let htu = format!("{}{}", rs.origin, path);
            let expected = dpop::Expected {
                method: method.as_str(),
                htu: &htu,
                access_token: bearer,
                now: trusted.clock.unix_secs(),
            };
            Some(dpop::check(proof, &expected, &mut rs.lock().used_proofs))
        }
        Ok(None) | Err(_) => None,
    };
    let scheme = presented.map(|(scheme, _)| scheme);
    let is_metadata = path == rs.metadata_path() || (rs.root_metadata && path == PRM_WELL_KNOWN);
    let response = if is_metadata && method == Method::GET {
        let mut script = script.clone();
        let mut state = rs.lock();
        if !state.script.next_authorization_servers.is_empty() {
            script.authorization_servers = state.script.next_authorization_servers.remove(0);
        }
        drop(state);
        metadata(&rs, &script)
    } else if let Some(redirect) = script.redirects.iter().find(|r| r.from == path) {
        match HeaderValue::from_str(&redirect.to) {
            Ok(location) => (redirect.status(), [(header::LOCATION, location)]).into_response(),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid scripted Location",
            )
                .into_response(),
        }
    } else if rs.protects(path) {
        if script.rotate_dpop_nonce {
            rs.lock().script.dpop_nonce = Some(super::jwt::random_b64(16));
        }
        match dpop_refusal(&script, scheme, info.as_ref(), proof.as_ref()) {
            Some(refusal) => refusal.response(&format!("{}{}", rs.origin, rs.metadata_path())),
            None => protected(&rs, &script, path, bearer.is_some(), info.as_ref()),
        }
    } else {
        StatusCode::NOT_FOUND.into_response()
    };
    let record = ResourceRequestRecord {
        method,
        path: path.to_owned(),
        bearer_presented: scheme == Some(Scheme::Bearer),
        dpop_presented: scheme == Some(Scheme::DPoP),
        dpop: proof,
        token_fingerprint: bearer.map(fingerprint),
        token_audiences: info.map(|i| i.audiences).unwrap_or_default(),
        status: response.status(),
    };
    rs.lock().log.push(record);
    response
}

fn metadata(rs: &RsShared, script: &ResourceScript) -> Response {
    let mut body = json!({
        "resource": script.metadata_resource.as_deref().unwrap_or(&rs.resource),
        "authorization_servers": script.authorization_servers,
        "bearer_methods_supported": ["header"],
    });
    if script.dpop_required
        && script.dpop_required_in_metadata
        && let Some(map) = body.as_object_mut()
    {
        // RFC 9449 §5.2.
        map.insert(
            "dpop_signing_alg_values_supported".into(),
            json!(script.dpop_signing_algs),
        );
        map.insert("dpop_bound_access_tokens_required".into(), json!(true));
    }
    if !script.scopes_supported.is_empty()
        && let Some(map) = body.as_object_mut()
    {
        map.insert("scopes_supported".into(), json!(script.scopes_supported));
    }
    axum::Json(body).into_response()
}

fn protected(
    rs: &RsShared,
    script: &ResourceScript,
    path: &str,
    presented: bool,
    info: Option<&TokenInfo>,
) -> Response {
    let metadata_url = format!("{}{}", rs.origin, rs.metadata_path());
    let required = script.scopes_required.join(" ");
    let challenge = |status: StatusCode, error: Option<(&str, &str)>, scope: bool| {
        let mut params = Vec::new();
        if let Some((code, description)) = error {
            params.push(format!("error=\"{code}\""));
            params.push(format!("error_description=\"{description}\""));
        }
        params.push(format!("resource_metadata=\"{}\"", quote(&metadata_url)));
        if scope && !required.is_empty() {
            params.push(format!("scope=\"{}\"", quote(&required)));
        }
        let value = format!("Bearer {}", params.join(", "));
        let value =
            HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        (status, [(header::WWW_AUTHENTICATE, value)]).into_response()
    };
    // RFC 6750 §3: no error code when the request carried no credentials.
    let Some(info) = info else {
        return if presented {
            challenge(
                StatusCode::UNAUTHORIZED,
                Some(("invalid_token", "unknown or expired token")),
                true,
            )
        } else {
            challenge(StatusCode::UNAUTHORIZED, None, true)
        };
    };
    // RFC 9068 §4: the resource server must find itself in aud.
    if !info.has_audience(&rs.resource) {
        return challenge(
            StatusCode::UNAUTHORIZED,
            Some((
                "invalid_token",
                "the token's audience does not include this resource",
            )),
            true,
        );
    }
    let granted = info.scopes();
    if !script
        .scopes_required
        .iter()
        .all(|s| granted.contains(&s.as_str()))
    {
        return challenge(
            StatusCode::FORBIDDEN,
            Some(("insufficient_scope", "the token lacks a required scope")),
            true,
        );
    }
    axum::Json(json!({
        "path": path,
        "resource": rs.resource,
        "scope": granted,
        "sub": info.subject,
        "client_id": info.client_id,
    }))
    .into_response()
}

/// Escapes a quoted-string (RFC 9110 §5.6.4).
pub(super) fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}
