//! Dynamic client registration (RFC 7591) against servers that answer badly: what a
//! registration returns is checked before it is stored, used or logged, and a stored client is
//! used only at the issuer (and registration endpoint) it was registered at.
//!
//! A small scripted authorization server (axum, on 127.0.0.1) plays the server that answers
//! badly; the embedded servers play the honest ones.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use audience_cache::testing::{AuthorizationServer, ResourceServer};
use audience_cache::{
    AuthorizedClient, ClientRegistrar, ClientStore, Discovery, DiscoveryOptions,
    DynamicRegistration, Error, HeadlessAuthorization, MemoryClientStore, RegisteredClient,
    StoreFuture, TokenCache,
};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

/// Never listened on: the headless handler reads the redirect from `Location`.
const REDIRECT_URI: &str = "http://127.0.0.1:43219/callback";

// ----------------------------------------------------------------------------------------------
// Log capture
// ----------------------------------------------------------------------------------------------

/// Everything every subscriber wrote in this test binary.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ----------------------------------------------------------------------------------------------
// A scripted authorization server and protected resource on one origin
// ----------------------------------------------------------------------------------------------

/// What the scripted server answers to `POST /register`, and what it was asked.
struct Scripted {
    origin: String,
    /// The registration response's body (201), with `{redirect_uri}` replaced by the one asked
    /// for.
    registration: Value,
    registrations: AtomicUsize,
    authorizations: AtomicUsize,
    token_requests: AtomicUsize,
}

async fn scripted_server(registration: Value) -> Arc<Scripted> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let scripted = Arc::new(Scripted {
        origin,
        registration,
        registrations: AtomicUsize::new(0),
        authorizations: AtomicUsize::new(0),
        token_requests: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/mcp", any(challenge))
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            axum::routing::get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            axum::routing::get(server_metadata),
        )
        .route("/register", post(register))
        .route("/authorize", any(authorize))
        .route("/token", any(token))
        .with_state(scripted.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    scripted
}

async fn challenge(State(s): State<Arc<Scripted>>) -> Response {
    let value = format!(
        r#"Bearer resource_metadata="{}/.well-known/oauth-protected-resource/mcp""#,
        s.origin
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
    )
        .into_response()
}

async fn resource_metadata(State(s): State<Arc<Scripted>>) -> Response {
    axum::Json(json!({
        "resource": format!("{}/mcp", s.origin),
        "authorization_servers": [s.origin],
    }))
    .into_response()
}

async fn server_metadata(State(s): State<Arc<Scripted>>) -> Response {
    let origin = &s.origin;
    axum::Json(json!({
        "issuer": origin,
        "authorization_endpoint": format!("{origin}/authorize"),
        "token_endpoint": format!("{origin}/token"),
        "registration_endpoint": format!("{origin}/register"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "none"],
    }))
    .into_response()
}

async fn register(State(s): State<Arc<Scripted>>, body: axum::Json<Value>) -> Response {
    s.registrations.fetch_add(1, Ordering::SeqCst);
    let asked = body["redirect_uris"][0].as_str().unwrap_or_default();
    let answer = s.registration.to_string().replace("{redirect_uri}", asked);
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        answer,
    )
        .into_response()
}

async fn authorize(State(s): State<Arc<Scripted>>) -> StatusCode {
    s.authorizations.fetch_add(1, Ordering::SeqCst);
    StatusCode::BAD_REQUEST
}

async fn token(State(s): State<Arc<Scripted>>) -> StatusCode {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    StatusCode::BAD_REQUEST
}

// ----------------------------------------------------------------------------------------------
// Clients
// ----------------------------------------------------------------------------------------------

fn cache() -> TokenCache {
    TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap()
}

fn client(clients: ClientRegistrar) -> AuthorizedClient {
    let discovery =
        Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true)).unwrap();
    AuthorizedClient::new(cache())
        .unwrap()
        .with_discovery(discovery, clients)
        .with_authorization(Arc::new(
            HeadlessAuthorization::new(Url::parse(REDIRECT_URI).unwrap()).unwrap(),
        ))
}

fn registering(store: Arc<dyn ClientStore>) -> ClientRegistrar {
    ClientRegistrar::new()
        .dynamic_registration(DynamicRegistration::new("registration tests").store(store))
}

async fn get(client: &AuthorizedClient, url: &str) -> Result<u16, Error> {
    let response = client.execute(client.get(url).build().unwrap()).await?;
    Ok(response.status().as_u16())
}

/// The detail of the `Error::Registration` a request to the scripted server ends with.
async fn refused_registration(scripted: &Scripted, store: Arc<dyn ClientStore>) -> String {
    let error = get(
        &client(registering(store)),
        &format!("{}/mcp", scripted.origin),
    )
    .await
    .unwrap_err();
    match error {
        Error::Registration { issuer, detail } => {
            assert_eq!(issuer, scripted.origin);
            detail
        }
        other => panic!("not a refused registration: {other:?}"),
    }
}

/// A registration refused: nothing stored, no authorization, no token request; the next
/// request registers again.
async fn assert_nothing_used(scripted: &Scripted, store: &Arc<MemoryClientStore>) {
    assert_eq!(scripted.registrations.load(Ordering::SeqCst), 1);
    assert_eq!(scripted.authorizations.load(Ordering::SeqCst), 0);
    assert_eq!(scripted.token_requests.load(Ordering::SeqCst), 0);
    assert!(store.is_empty());
    refused_registration(scripted, store.clone()).await;
    assert_eq!(scripted.registrations.load(Ordering::SeqCst), 2);
}

// ----------------------------------------------------------------------------------------------
// What registration returns
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_id_with_a_newline_is_refused_and_forges_no_log_line() {
    captured();
    let scripted = scripted_server(json!({
        "client_id": "dyn-1\nforged: an administrator logged in",
        "redirect_uris": ["{redirect_uri}"],
        "token_endpoint_auth_method": "none",
    }))
    .await;
    let store = Arc::new(MemoryClientStore::default());
    let detail = refused_registration(&scripted, store.clone()).await;
    assert_eq!(
        detail,
        r#"the registration response's client_id "dyn-1\nforged: an administrator logged in" is not a client_id (RFC 6749 §A.1: 1 to 255 visible ASCII characters or spaces); register a client by hand and add it with ClientRegistrar::pre_registered"#
    );
    let log = String::from_utf8(captured().lock().unwrap().clone()).unwrap();
    assert!(!log.lines().any(|line| line.starts_with("forged")), "{log}");
    assert_nothing_used(&scripted, &store).await;
}

#[tokio::test]
async fn a_client_id_or_secret_that_is_not_rfc_6749_text_is_refused() {
    for (response, shown) in [
        (
            json!({ "client_id": "", "redirect_uris": ["{redirect_uri}"] }),
            r#"client_id """#,
        ),
        (
            json!({ "client_id": "x".repeat(256), "redirect_uris": ["{redirect_uri}"] }),
            "client_id \"xxxxxxxx",
        ),
        (
            json!({ "client_id": "caf\u{e9}", "redirect_uris": ["{redirect_uri}"] }),
            r#"client_id "café""#,
        ),
        (
            json!({ "client_id": "a\u{1b}[2Jb", "redirect_uris": ["{redirect_uri}"] }),
            r#"client_id "a\u{1b}[2Jb""#,
        ),
        (
            json!({
                "client_id": "dyn-1",
                "client_secret": "s3cret\r\nX-Injected: 1",
                "token_endpoint_auth_method": "client_secret_basic",
                "redirect_uris": ["{redirect_uri}"],
            }),
            "client_secret is not a client secret (RFC 6749 §A.2",
        ),
    ] {
        let scripted = scripted_server(response).await;
        let store = Arc::new(MemoryClientStore::default());
        let detail = refused_registration(&scripted, store.clone()).await;
        assert!(detail.contains(shown), "{detail}");
        assert!(!detail.contains("s3cret"), "{detail}");
        assert_nothing_used(&scripted, &store).await;
    }
}

#[tokio::test]
async fn a_registration_without_our_redirect_uri_is_refused() {
    let scripted = scripted_server(json!({
        "client_id": "dyn-1",
        "redirect_uris": ["https://elsewhere.example/cb", "http://127.0.0.1:43219/other"],
        "token_endpoint_auth_method": "none",
    }))
    .await;
    let store = Arc::new(MemoryClientStore::default());
    let detail = refused_registration(&scripted, store.clone()).await;
    assert_eq!(
        detail,
        r#"the server registered the client for the redirect URIs ["https://elsewhere.example/cb", "http://127.0.0.1:43219/other"], which do not include http://127.0.0.1:43219/callback, the one asked for; register a client by hand and add it with ClientRegistrar::pre_registered"#
    );
    assert_nothing_used(&scripted, &store).await;
}

#[tokio::test]
async fn a_registration_whose_secret_has_expired_is_refused() {
    let scripted = scripted_server(json!({
        "client_id": "dyn-1",
        "client_secret": "s3cret",
        "client_secret_expires_at": 1_000_000_000u64,
        "redirect_uris": ["{redirect_uri}"],
        "token_endpoint_auth_method": "client_secret_basic",
    }))
    .await;
    let store = Arc::new(MemoryClientStore::default());
    let detail = refused_registration(&scripted, store.clone()).await;
    assert!(
        detail.starts_with(
            "the server registered a client whose secret expires at 1000000000 (Unix time), "
        ) && detail.ends_with(
            "before it could be used; register a client by hand and add it with ClientRegistrar::pre_registered"
        ),
        "{detail}"
    );
    assert!(!detail.contains("s3cret"), "{detail}");
    assert_nothing_used(&scripted, &store).await;
}

// ----------------------------------------------------------------------------------------------
// Stored clients and their issuer
// ----------------------------------------------------------------------------------------------

/// A store that answers every issuer with the one client it was given (a shared store keyed
/// wrongly, or a hostile one), and counts what it was asked.
#[derive(Debug, Default)]
struct OneClientForAll {
    client: Mutex<Option<RegisteredClient>>,
    saves: AtomicUsize,
}

impl ClientStore for OneClientForAll {
    fn load<'a>(&'a self, _issuer: &'a str) -> StoreFuture<'a, Option<RegisteredClient>> {
        let client = self.client.lock().unwrap().clone();
        Box::pin(std::future::ready(Ok(client)))
    }

    fn save<'a>(&'a self, _issuer: &'a str, client: &'a RegisteredClient) -> StoreFuture<'a, ()> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        let mut stored = self.client.lock().unwrap();
        if stored.is_none() {
            *stored = Some(client.clone());
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

async fn registering_server() -> (AuthorizationServer, ResourceServer) {
    let auth = AuthorizationServer::builder()
        .script(|s| s.advertise_pkce = true)
        .dynamic_registration(true)
        .start()
        .await
        .unwrap();
    let mcp = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    (auth, mcp)
}

#[tokio::test]
async fn a_client_stored_for_another_issuer_is_never_presented() {
    let (a, mcp_a) = registering_server().await;
    let (b, mcp_b) = registering_server().await;
    let store = Arc::new(OneClientForAll::default());

    let http = client(registering(store.clone()));
    assert_eq!(
        get(&http, &format!("{}/tools", mcp_a.url())).await.unwrap(),
        200
    );
    let a_client = a.registrations()[0].client_id.clone().unwrap();
    let stored = store.client.lock().unwrap().clone().unwrap();
    assert_eq!(stored.client_id(), a_client);
    assert_eq!(stored.issuer(), Some(a.issuer()));
    assert_eq!(
        stored.registration_endpoint().map(Url::as_str),
        Some(format!("{}/register", a.issuer()).as_str())
    );

    // The store answers B's issuer with A's client: B gets a client of its own.
    assert_eq!(
        get(&http, &format!("{}/tools", mcp_b.url())).await.unwrap(),
        200
    );
    let b_registrations = b.registrations();
    assert_eq!(b_registrations.len(), 1);
    let b_client = b_registrations[0].client_id.clone().unwrap();
    assert_ne!(a_client, b_client);
    let authorizations = b.authorization_requests();
    assert_eq!(authorizations.len(), 1);
    assert_eq!(
        authorizations[0].client_id.as_deref(),
        Some(b_client.as_str())
    );
    let tokens = b.requests();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].client_id.as_deref(), Some(b_client.as_str()));
    assert_eq!(tokens[0].status.map(|s| s.as_u16()), Some(200));
    // A saw one registration, one authorization and one token request: its own.
    assert_eq!(a.registrations().len(), 1);
    assert_eq!(a.requests().len(), 1);
    assert_eq!(store.saves.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_stored_client_without_its_issuer_is_registered_again() {
    let (auth, mcp) = registering_server().await;
    let store = Arc::new(OneClientForAll::default());
    // What a store kept before clients recorded their issuer: the same fields, no issuer.
    let old: RegisteredClient = serde_json::from_value(json!({
        "client_id": "dyn-from-an-older-version",
        "token_endpoint_auth_method": "none",
        "redirect_uri": REDIRECT_URI,
    }))
    .unwrap();
    assert_eq!(old.issuer(), None);
    *store.client.lock().unwrap() = Some(old);

    let http = client(registering(store.clone()));
    assert_eq!(
        get(&http, &format!("{}/tools", mcp.url())).await.unwrap(),
        200
    );
    let registrations = auth.registrations();
    assert_eq!(registrations.len(), 1);
    let fresh = registrations[0].client_id.clone().unwrap();
    let authorizations = auth.authorization_requests();
    assert_eq!(authorizations.len(), 1);
    assert_eq!(authorizations[0].client_id.as_deref(), Some(fresh.as_str()));
    assert_eq!(store.saves.load(Ordering::SeqCst), 1);
}
