//! [`AuthorizationServer`]: the handle, its builder, and how it starts.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use super::authorize::{authorize, metadata};
use super::client::{Client, ClientAuthMethod};
use super::records::{
    AuthorizationRequestRecord, RegistrationRecord, TokenInfo, TokenRequestRecord,
};
use super::script::Script;
use super::server::{self, Running};
use super::state::{RegistrationOptions, Shared};
use super::token_endpoint::token;

/// The issuer of [`AuthorizationServerBuilder::in_process`] servers.
pub const IN_PROCESS_ISSUER: &str = "https://as.in-process.test";

/// A scriptable OAuth 2.0 authorization server, served on `127.0.0.1` or called in process.
///
/// Endpoints, relative to [`issuer`](Self::issuer):
///
/// - `POST /token`: grants `client_credentials`, `authorization_code` (PKCE S256 verified),
///   `refresh_token` (rotated, bound to the original grant's scope and resources) and RFC 8693
///   token exchange; client authentication `client_secret_basic` (RFC 6749 §2.3.1 encoding),
///   `client_secret_post` and `none`; RFC 8707 `resource` (repeatable) checked against
///   [`Script::resources`]; `aud` shaped by [`Script::audience`].
/// - `GET /authorize`: approves at once (no UI) after checking the client, the redirect URI
///   (any loopback port, or registered), `response_type=code` and an S256 `code_challenge`;
///   redirects with `code`, `state` and the RFC 9207 `iss`.
/// - `GET /.well-known/oauth-authorization-server`: RFC 8414 metadata.
///
/// Everything a request does is recorded ([`requests`](Self::requests),
/// [`authorization_requests`](Self::authorization_requests)) without any token, code, verifier
/// or secret; the server logs nothing. Its clock starts at the real time (whole seconds) when it
/// is built and then follows tokio time, so on a paused runtime `tokio::time::advance` expires
/// tokens and codes. Dropping the handle stops a socket server.
///
/// ```
/// use audience_cache::testing::{AuthorizationServer, Client};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = AuthorizationServer::builder()
///     .client(Client::confidential("svc", "s3cret"))
///     .start()
///     .await?;
/// let response: serde_json::Value = reqwest::Client::new()
///     .post(server.token_endpoint())
///     .form(&[
///         ("grant_type", "client_credentials"),
///         ("client_id", "svc"),
///         ("client_secret", "s3cret"),
///         ("resource", "https://rs.example/mcp"),
///     ])
///     .send()
///     .await?
///     .json()
///     .await?;
/// let token = response["access_token"].as_str().unwrap_or_default();
/// let info = server.validate(token).ok_or("token should be valid")?;
/// assert_eq!(info.audiences, ["https://rs.example/mcp"]);
/// assert_eq!(server.token_requests(), 1);
/// # Ok(())
/// # }
/// ```
pub struct AuthorizationServer {
    pub(crate) shared: Arc<Shared>,
    router: Router,
    addr: Option<SocketAddr>,
    running: Option<Running>,
}

/// A cheap handle that sends requests to an [`AuthorizationServer`] in process.
#[derive(Clone)]
pub(crate) struct InProcessHandle {
    router: Router,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for InProcessHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InProcessHandle({:?})", self.shared.issuer)
    }
}

impl InProcessHandle {
    pub(crate) async fn handle(&self, request: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
        server::oneshot(&self.router, &self.shared.issuer, request).await
    }
}

impl crate::grant::Exchange for InProcessHandle {
    fn exchange(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = http::Response<Vec<u8>>> + Send + '_>> {
        Box::pin(self.handle(request))
    }
}

impl crate::cache::TokenCacheBuilder {
    /// Sends token requests to an embedded [`AuthorizationServer`] in process, with no
    /// socket, so tests can run on paused tokio time.
    pub fn in_process(self, server: &AuthorizationServer) -> Self {
        self.exchange(Arc::new(server.in_process_handle()))
    }
}

impl AuthorizationServer {
    /// A builder with no clients, user subject `"user"`, no `scopes_supported` and the
    /// [`Script::default`] behaviour.
    pub fn builder() -> AuthorizationServerBuilder {
        AuthorizationServerBuilder {
            clients: Vec::new(),
            subject: "user".to_owned(),
            scopes_supported: Vec::new(),
            registration: RegistrationOptions::default(),
            script: Script::default(),
        }
    }

    /// The issuer identifier: `http://127.0.0.1:PORT` for a started server, the configured
    /// one ([`IN_PROCESS_ISSUER`] by default) in process. Never a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// `{issuer}/token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.shared.issuer)
    }

    /// `{issuer}/authorize`.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.shared.issuer)
    }

    /// `{issuer}/.well-known/oauth-authorization-server` (RFC 8414 §3.1; the issuer has no
    /// path, so insertion and appending agree).
    pub fn metadata_url(&self) -> String {
        format!(
            "{}/.well-known/oauth-authorization-server",
            self.shared.issuer
        )
    }

    /// The socket address of a started server; `None` in process.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Changes the server's behaviour; requests that arrive afterwards see the change.
    ///
    /// ```
    /// use audience_cache::testing::{AuthorizationServer, ScopeField};
    ///
    /// let server = AuthorizationServer::builder().in_process();
    /// server.script(|s| s.scope_field = ScopeField::Fixed("read".into()));
    /// ```
    pub fn script(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.shared.lock().script);
    }

    /// Answers one request in process, through the same router a started server uses, with no
    /// socket: scripted latency is a `tokio::time::sleep`, so it obeys paused time.
    ///
    /// The URI may be a path (`/token`) or absolute; an absolute URI whose origin is not the
    /// issuer gets `421 Misdirected Request`. The whole response body is collected. This works
    /// for started servers too. To share the server with a transport that must own what it
    /// calls, put it in an `Arc`.
    ///
    /// ```
    /// use audience_cache::testing::{AuthorizationServer, Client};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = AuthorizationServer::builder().client(Client::public("app")).in_process();
    /// let request = http::Request::post(server.token_endpoint())
    ///     .header("content-type", "application/x-www-form-urlencoded")
    ///     .body(b"grant_type=client_credentials&client_id=app".to_vec())?;
    /// let response = server.handle(request).await;
    /// // Public clients may not use client_credentials (RFC 6749 §4.4).
    /// assert_eq!(response.status(), 400);
    /// let body: serde_json::Value = serde_json::from_slice(response.body())?;
    /// assert_eq!(body["error"], "unauthorized_client");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn handle(&self, request: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
        server::oneshot(&self.router, &self.shared.issuer, request).await
    }

    /// A handle that reaches this server in process, for the cache's transport.
    pub(crate) fn in_process_handle(&self) -> InProcessHandle {
        InProcessHandle {
            router: self.router.clone(),
            shared: self.shared.clone(),
        }
    }

    /// What `token` means if this server issued it (any format it ever used) and it has not
    /// expired on the server's clock; `None` otherwise. Like an RFC 7662 introspection call,
    /// but in memory. A JWT's signature, issuer and `exp` are checked; an opaque token is
    /// looked up.
    pub fn validate(&self, token: &str) -> Option<TokenInfo> {
        self.shared.validate(token)
    }

    /// The random HS256 key this server signs JWT access tokens with, for a resource server of
    /// your own that verifies them.
    pub fn hs256_key(&self) -> &[u8] {
        &self.shared.key
    }

    /// How many token requests arrived since the start or the last
    /// [`reset_counts`](Self::reset_counts), including failed ones and ones still in flight.
    pub fn token_requests(&self) -> usize {
        self.shared.lock().token_log.entries.len()
    }

    /// Every token request since the start or the last [`reset_counts`](Self::reset_counts),
    /// in arrival order.
    pub fn requests(&self) -> Vec<TokenRequestRecord> {
        self.shared.lock().token_log.entries.clone()
    }

    /// Every `/authorize` request since the start or the last
    /// [`reset_counts`](Self::reset_counts), in order.
    pub fn authorization_requests(&self) -> Vec<AuthorizationRequestRecord> {
        self.shared.lock().authorization_log.clone()
    }

    /// Every `/register` request so far, in arrival order.
    pub fn registrations(&self) -> Vec<RegistrationRecord> {
        self.shared.lock().registration_log.clone()
    }

    /// How many times the metadata document was fetched.
    pub fn metadata_requests(&self) -> usize {
        self.shared.lock().metadata_requests
    }

    /// Forgets all records and counts. Grants, codes, tokens and the script are kept. A
    /// request in flight during the reset is not recorded again when it completes.
    pub fn reset_counts(&self) {
        let mut state = self.shared.lock();
        state.registration_log.clear();
        state.token_log.clear();
        state.authorization_log.clear();
        state.metadata_requests = 0;
    }

    /// Stops a started server: no new connections, idle ones closed, and this waits for
    /// requests in flight (including their scripted latency). Does nothing more in process.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

impl fmt::Debug for AuthorizationServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationServer")
            .field("issuer", &self.shared.issuer)
            .field("local_addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Configures an [`AuthorizationServer`]; finish with [`start`](Self::start) (a socket) or
/// [`in_process`](Self::in_process) (no socket).
#[derive(Debug)]
#[must_use = "a builder does nothing until start() or in_process()"]
pub struct AuthorizationServerBuilder {
    clients: Vec<Client>,
    subject: String,
    scopes_supported: Vec<String>,
    registration: RegistrationOptions,
    script: Script,
}

impl AuthorizationServerBuilder {
    /// Registers a client. A later client with the same id replaces the earlier one.
    pub fn client(mut self, client: Client) -> Self {
        self.clients.push(client);
        self
    }

    /// The subject (`sub`) of tokens from the authorization-code grant: the user who
    /// "approved". Default: `"user"`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// The `scopes_supported` of the metadata (omitted when empty, the default). Advertised
    /// only: the server grants whatever scope is asked for.
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Serves `/register` (RFC 7591 dynamic client registration) and advertises it as
    /// `registration_endpoint`. A registration needs https or loopback-http `redirect_uris`
    /// and a supported `token_endpoint_auth_method` (default `client_secret_basic`); a
    /// confidential client gets a random secret and may use only the method it registered.
    /// Registrations are recorded ([`AuthorizationServer::registrations`]).
    pub fn dynamic_registration(mut self, on: bool) -> Self {
        self.registration.dynamic = on;
        self
    }

    /// Accepts client ID metadata documents: any https URL with a path is the `client_id` of
    /// a public client (loopback redirect URIs only), and the metadata says
    /// `client_id_metadata_document_supported`. The document itself is not fetched.
    pub fn client_id_metadata_documents(mut self, on: bool) -> Self {
        self.registration.metadata_documents = on;
        self
    }

    /// The `token_endpoint_auth_methods_supported` of the metadata, and the methods
    /// `/register` accepts (default: all three). Configured clients are not affected.
    pub fn token_endpoint_auth_methods(
        mut self,
        methods: impl IntoIterator<Item = ClientAuthMethod>,
    ) -> Self {
        self.registration.auth_methods = methods.into_iter().collect();
        self
    }

    /// Sets the initial behaviour, as [`AuthorizationServer::script`] changes it later.
    pub fn script(mut self, change: impl FnOnce(&mut Script)) -> Self {
        change(&mut self.script);
        self
    }

    /// Binds `127.0.0.1:0` and serves in a spawned task; the issuer is
    /// `http://127.0.0.1:PORT`. Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// The error from binding the socket.
    pub async fn start(self) -> io::Result<AuthorizationServer> {
        let (listener, addr) = server::bind().await?;
        let mut server = self.build(server::origin_of(addr));
        server.addr = Some(addr);
        server.running = Some(Running::spawn(listener, server.router.clone()));
        Ok(server)
    }

    /// A server with no socket, issuer [`IN_PROCESS_ISSUER`] (`https://as.in-process.test`),
    /// used through [`AuthorizationServer::handle`]. The issuer is only a name: nothing
    /// resolves it, and `https` keeps it acceptable to clients that refuse plain `http` for
    /// anything but loopback. Needs no runtime until `handle` is awaited.
    pub fn in_process(self) -> AuthorizationServer {
        self.in_process_at(IN_PROCESS_ISSUER)
    }

    /// Like [`in_process`](Self::in_process) with another issuer, for tests with several
    /// authorization servers. The issuer is used verbatim (give an origin with no trailing
    /// slash: endpoints are `{issuer}/token` and so on).
    pub fn in_process_at(self, issuer: impl Into<String>) -> AuthorizationServer {
        self.build(issuer.into())
    }

    fn build(self, issuer: String) -> AuthorizationServer {
        let shared = Arc::new(Shared::new(
            issuer,
            self.subject,
            self.scopes_supported,
            self.clients,
            self.registration,
            self.script,
        ));
        let router = Router::new()
            .route("/token", post(token))
            .route("/authorize", get(authorize))
            .route("/register", post(super::register::register))
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .with_state(Arc::clone(&shared));
        AuthorizationServer {
            shared,
            router,
            addr: None,
            running: None,
        }
    }
}
