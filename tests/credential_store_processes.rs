//! Credentials that survive a restart, and two processes on one grant, against oidc-provider
//! (tests/interop/oidc-provider; Node.js 20 or later), with a `FileStore` (feature
//! `file-store`). oidc-provider rotates refresh tokens and refuses a spent one with
//! `invalid_grant`.
//!
//! The processes are this test binary again, running only the test `worker`, which does
//! nothing unless `STORE_WORKER` is set. A worker builds a cache on the state directory and an
//! `AuthorizedClient` whose authorization handler follows oidc-provider's login and consent
//! (and counts its calls), then sends requests to a resource server this test runs, one per
//! line it reads on stdin, answering `DONE <status>` (after each, the access token is
//! invalidated, so the next request refreshes). The counts are the server's own records
//! (`/_test/stats`), the resource server's, and the worker's handler calls.

mod interop_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audience_cache::{
    AuthorizationFuture, AuthorizationHandler, AuthorizedClient, ClientRegistrar, CredentialStore,
    Discovery, DiscoveryOptions, DynamicRegistration, FileStore, Grant, GrantId, ResourceConfig,
    TokenCache,
};
use axum::http::{HeaderMap, StatusCode};
use interop_support::mcp::{McpServer, Reply, Session};
use interop_support::server::AuthServer;
use interop_support::{browser, loopback, scopes};
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use url::Url;

const CLIENT: &str = "code-client";

/// The redirect URI (oidc-provider accepts any port for this native client); nothing listens.
fn redirect_uri() -> Url {
    Url::parse("http://127.0.0.1:8976/callback").unwrap()
}

/// The user agent: follows oidc-provider's login and consent, counting its calls.
#[derive(Debug, Default)]
struct Browser {
    calls: AtomicUsize,
}

impl AuthorizationHandler for Browser {
    fn redirect_uri(&self) -> Url {
        redirect_uri()
    }

    fn authorize<'a>(&'a self, url: &'a Url) -> AuthorizationFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // oidc-provider drops `offline_access` from an authorization request without
        // `prompt=consent` (OpenID Connect Core §11); the user agent adds it here.
        let mut url = url.clone();
        url.query_pairs_mut().append_pair("prompt", "consent");
        Box::pin(async move { Ok(browser::authorize(&url, &redirect_uri()).await) })
    }
}

/// The worker's side; a no-op in a normal run. Environment: `STORE_WORKER` (`configured`,
/// or `mcp` for an MCP client that knows only the server's URL), `STATE_DIR`, `AS_ISSUER`,
/// `AS_TOKEN`, `AS_AUTHORIZE`, `RESOURCE`.
#[test]
fn worker() {
    let Some(mode) = std::env::var_os("STORE_WORKER") else {
        return;
    };
    let env = |name: &str| std::env::var(name).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if mode == "mcp" {
        return runtime.block_on(mcp_worker(env("STATE_DIR"), env("RESOURCE")));
    }
    runtime.block_on(async move {
        let issuer = env("AS_ISSUER");
        let resource = env("RESOURCE");
        let store = Arc::new(FileStore::open(env("STATE_DIR")).unwrap());
        let cache = TokenCache::builder()
            .client(
                audience_cache::ClientRegistration::new(
                    &issuer,
                    Url::parse(&env("AS_TOKEN")).unwrap(),
                    CLIENT,
                )
                .authorization_endpoint(Url::parse(&env("AS_AUTHORIZE")).unwrap())
                .grant(Grant::AuthorizationCode {
                    redirect_uri: redirect_uri(),
                })
                .request_offline_access(true),
            )
            .resource(ResourceConfig::new(loopback(&resource), &issuer).scopes(scopes("mcp:read")))
            .allow_insecure_http_on_loopback(true)
            .request_timeout(Duration::from_secs(10))
            .credential_store(store)
            .build()
            .unwrap();
        let handler = Arc::new(Browser::default());
        let client = AuthorizedClient::new(cache.clone())
            .unwrap()
            .with_authorization(handler.clone());
        println!("\nWORKER-READY");
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.trim() != "go" {
                break;
            }
            let request = client.get(&resource).build().unwrap();
            let outcome = match client.execute(request).await {
                Ok(response) => response.status().as_u16().to_string(),
                Err(e) => format!("error {e}"),
            };
            // The next request needs a new access token: a refresh.
            if let Ok(token) = cache.token_for(&Url::parse(&resource).unwrap()).await {
                cache.invalidate(&token).await;
            }
            println!(
                "\nDONE {outcome} handler={} refreshes={}",
                handler.calls.load(Ordering::SeqCst),
                cache.stats().refreshes
            );
        }
    });
}

/// The MCP worker: discovery from the server's 401, a client registered dynamically and kept
/// in the store, a user's authorization if needed; `initialize` and a tool call, then
/// `DONE <outcome> handler=<calls> refreshes=<n>`.
async fn mcp_worker(dir: String, server: String) {
    let store: Arc<dyn CredentialStore> = Arc::new(FileStore::open(dir).unwrap());
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .credential_store(store.clone())
        .build()
        .unwrap();
    let clients = ClientRegistrar::new()
        // No store of its own: registration keeps the client in the cache's credential store.
        .dynamic_registration(DynamicRegistration::new(
            "audience-cache credential store test",
        ))
        .offline_access(true);
    let handler = Arc::new(Browser::default());
    let http = AuthorizedClient::new(cache.clone())
        .unwrap()
        .with_discovery(
            Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true))
                .unwrap(),
            clients,
        )
        .with_authorization(handler.clone());
    let mut session = Session::new(&http, &server);
    let outcome = match session.initialize().await {
        Ok(_) => match session
            .call(
                "tools/call",
                serde_json::json!({ "name": "whoami", "arguments": {} }),
            )
            .await
        {
            Ok(Reply::Result(_)) => "ok".to_owned(),
            Ok(_) => "error whoami failed".to_owned(),
            Err(e) => format!("error {e}"),
        },
        Err(e) => format!("error {e}"),
    };
    println!(
        "\nDONE {outcome} handler={} refreshes={}",
        handler.calls.load(Ordering::SeqCst),
        cache.stats().refreshes
    );
}

/// A running worker process.
struct Worker {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

/// The longest a worker may take to start, or to answer one request.
const WORKER_LIMIT: Duration = Duration::from_secs(60);

impl Worker {
    async fn start(server: &AuthServer, dir: &PathBuf, resource: &str) -> Self {
        Self::start_as("configured", server, dir, resource).await
    }

    async fn start_as(mode: &str, server: &AuthServer, dir: &PathBuf, resource: &str) -> Self {
        let metadata = server.metadata();
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "worker", "--nocapture", "--test-threads", "1"])
            .env("STORE_WORKER", mode)
            .env("STATE_DIR", dir)
            .env("AS_ISSUER", server.issuer())
            .env("AS_TOKEN", metadata.token_endpoint.as_str())
            .env("AS_AUTHORIZE", metadata.authorization_endpoint.as_str())
            .env("RESOURCE", resource)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut worker = Self { child, stdout };
        if mode != "mcp" {
            worker.line_ending_with("WORKER-READY").await;
        }
        worker
    }

    async fn line_ending_with(&mut self, marker: &str) -> String {
        let read = async {
            loop {
                let line = self.stdout.next_line().await.unwrap();
                let line = line.unwrap_or_else(|| panic!("the worker ended before {marker}"));
                if let Some(at) = line.find(marker) {
                    break line[at..].to_owned();
                }
            }
        };
        tokio::time::timeout(WORKER_LIMIT, read)
            .await
            .unwrap_or_else(|_| panic!("no {marker} from the worker within 60 s"))
    }

    async fn send(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    async fn done(&mut self) -> String {
        self.line_ending_with("DONE ").await
    }

    /// One request: `DONE <status> handler=<calls> refreshes=<n>`.
    async fn request(&mut self) -> String {
        self.send().await;
        self.done().await
    }

    /// Closes its stdin and waits for it to exit.
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(WORKER_LIMIT, self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
    }
}

/// A resource server on 127.0.0.1 that answers 200 to a request with a bearer token and
/// records the tokens (to grep the state directory for them), 401 otherwise.
async fn resource_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let record = record.clone();
        async move {
            let bearer = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            match bearer {
                Some(token) => {
                    record.lock().unwrap().push(token);
                    StatusCode::OK
                }
                None => StatusCode::UNAUTHORIZED,
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/mcp"), seen)
}

fn state_dir(name: &str) -> PathBuf {
    use std::hash::{BuildHasher as _, RandomState};
    let nonce = RandomState::new().hash_one(std::time::SystemTime::now());
    std::env::temp_dir().join(format!("audience-cache-{name}-{nonce:016x}"))
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The token requests by grant type, and the statuses of the refreshes.
async fn grants(server: &AuthServer) -> (BTreeMap<String, u64>, Vec<u16>) {
    let stats = server.stats().await;
    let statuses = stats
        .requests
        .iter()
        .filter(|r| r.grant_type == "refresh_token")
        .map(|r| r.status)
        .collect();
    (stats.by_grant, statuses)
}

/// Every file in `dir` that holds `needle`.
fn grep(dir: &PathBuf, needle: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

/// The refresh token stored for the grant, read through the store's own API.
async fn stored_refresh_token(server: &AuthServer, dir: &PathBuf, resource: &str) -> String {
    let grant = GrantId::new(server.issuer(), CLIENT, None, &loopback(resource));
    let store = FileStore::open(dir).unwrap();
    let stored = store.load_refresh_token(&grant).await.unwrap();
    stored
        .expect("the grant is stored")
        .token()
        .expose_secret()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_refreshes_and_never_asks_the_user() {
    let server = AuthServer::start().await;
    let (resource, seen) = resource_server().await;
    let dir = state_dir("restart");
    let _cleanup = Cleanup(dir.clone());

    // The first run: the user authorizes once (the code flow), one request, exit.
    let mut first = Worker::start(&server, &dir, &resource).await;
    assert_eq!(first.request().await, "DONE 200 handler=1 refreshes=0");
    first.stop().await;
    let (by_grant, _) = grants(&server).await;
    assert_eq!(by_grant.get("authorization_code"), Some(&1));
    assert_eq!(by_grant.get("refresh_token"), None);
    assert_eq!(server.stats().await.authorization_requests, 1);

    // The second run: no authorization, one refresh.
    let mut second = Worker::start(&server, &dir, &resource).await;
    assert_eq!(second.request().await, "DONE 200 handler=0 refreshes=1");
    second.stop().await;
    let (by_grant, statuses) = grants(&server).await;
    assert_eq!(
        by_grant.get("authorization_code"),
        Some(&1),
        "no new authorization"
    );
    assert_eq!(by_grant.get("refresh_token"), Some(&1));
    assert_eq!(statuses, [200]);
    assert_eq!(
        server.stats().await.authorization_requests,
        1,
        "the second run sent nobody to the authorization endpoint"
    );

    // Nothing in the directory reads as a token: the access tokens the resource server saw,
    // and the refresh token stored (read back through the store).
    let refresh_token = stored_refresh_token(&server, &dir, &resource).await;
    let access_tokens = seen.lock().unwrap().clone();
    assert_eq!(access_tokens.len(), 2);
    for token in access_tokens.iter().chain([&refresh_token]) {
        assert!(
            grep(&dir, token).is_empty(),
            "a token is readable in the directory"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refreshing_one_rotated_grant_20_times_in_turn_never_see_invalid_grant() {
    let server = AuthServer::start().await;
    let (resource, _seen) = resource_server().await;
    let dir = state_dir("turns");
    let _cleanup = Cleanup(dir.clone());
    let mut first = Worker::start(&server, &dir, &resource).await;
    assert_eq!(first.request().await, "DONE 200 handler=1 refreshes=0");
    let mut second = Worker::start(&server, &dir, &resource).await;
    let mut workers = [first, second];
    // The user authorized once, in the first process; never again in either.
    let handler = ["DONE 200 handler=1 ", "DONE 200 handler=0 "];

    for round in 0..20 {
        let done = workers[round % 2].request().await;
        assert!(
            done.starts_with(handler[round % 2]),
            "round {round}: {done}"
        );
    }
    // Both at once, five times: the grant's lock makes them take turns.
    for round in 0..5 {
        let [a, b] = &mut workers;
        a.send().await;
        b.send().await;
        let (a, b) = tokio::join!(a.done(), b.done());
        for (done, handler) in [a, b].into_iter().zip(handler) {
            assert!(done.starts_with(handler), "together {round}: {done}");
        }
    }
    [first, second] = workers;
    first.stop().await;
    second.stop().await;

    let (by_grant, statuses) = grants(&server).await;
    assert_eq!(by_grant.get("authorization_code"), Some(&1));
    assert_eq!(statuses.len(), 30);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

/// The MCP client of the example (`examples/mcp_client/main.rs --state-dir`): discovery, a
/// client registered dynamically, a user's authorization; the second run finds its client and
/// its grant in the directory, and neither registers nor asks the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_restarted_on_its_state_directory_neither_registers_nor_asks_the_user() {
    let auth = AuthServer::start().await;
    let mcp = McpServer::start(auth.issuer(), "/mcp", "");
    let dir = state_dir("mcp");
    let _cleanup = Cleanup(dir.clone());

    let mut first = Worker::start_as("mcp", &auth, &dir, mcp.resource()).await;
    assert_eq!(first.done().await, "DONE ok handler=1 refreshes=0");
    first.stop().await;
    let mut second = Worker::start_as("mcp", &auth, &dir, mcp.resource()).await;
    assert_eq!(second.done().await, "DONE ok handler=0 refreshes=1");
    second.stop().await;

    // One code exchange, one refresh, both by the one registered client (a refresh token is
    // bound to its client: a client registered anew could not have used it).
    let (by_grant, statuses) = grants(&auth).await;
    assert_eq!(by_grant.get("authorization_code"), Some(&1));
    assert_eq!(by_grant.get("refresh_token"), Some(&1));
    assert_eq!(statuses, [200]);
}
