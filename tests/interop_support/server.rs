//! The oidc-provider authorization server, one per test.
//!
//! `node server.mjs` runs with `PORT=0` and a pipe on stdin. It is stopped twice over: the
//! handle kills it when it drops (also while a failing test unwinds), and the server itself
//! exits when its stdin closes (`EXIT_ON_STDIN_CLOSE=1`), which the kernel does when the test
//! process ends in any way, SIGKILL included. So `cargo test` leaves no node process behind.
//!
//! One server per test keeps the token-request counts of `/_test/stats` exact without any
//! filtering, and a test that revokes a grant cannot disturb another.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use audience_cache::ClientRegistration;
use serde::Deserialize;
use url::Url;

/// How long the server may take to print `LISTENING <port>` (it generates an RSA key first;
/// the machine may be busy).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Time limit for one request to the server's test endpoints and metadata.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A running oidc-provider, stopped when dropped.
pub struct AuthServer {
    process: Process,
    issuer: String,
    metadata: Metadata,
    http: reqwest::Client,
}

/// The node process and its stderr; killed when dropped.
struct Process {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    name: String,
}

/// The parts of the RFC 8414 metadata the tests use.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub token_endpoint: Url,
    pub authorization_endpoint: Url,
    pub code_challenge_methods_supported: Vec<String>,
    pub authorization_response_iss_parameter_supported: bool,
}

/// `GET /_test/stats`: every POST to `/token` since the server started, and the number of
/// requests to the authorization endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerStats {
    pub authorization_requests: u64,
    pub token_requests: u64,
    pub by_grant: BTreeMap<String, u64>,
    /// The `resource` of each request that had one. The crate sends exactly one per request,
    /// so a repeated parameter (which the server reports as an array) fails to deserialize.
    pub resources: Vec<String>,
    pub requests: Vec<TokenRequest>,
}

/// One token request as the server saw it (no secrets or tokens).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenRequest {
    pub grant_type: String,
    pub resource: Option<String>,
    pub scope: Option<String>,
    /// `client_secret_basic` (an `Authorization: Basic` header), `client_secret_post` (a
    /// `client_secret` form field) or `none`.
    pub client_auth: String,
    pub status: u16,
}

impl TokenRequest {
    /// A request that succeeded.
    pub fn ok(grant_type: &str, resource: &str, scope: Option<&str>, client_auth: &str) -> Self {
        Self {
            grant_type: grant_type.to_owned(),
            resource: Some(resource.to_owned()),
            scope: scope.map(str::to_owned),
            client_auth: client_auth.to_owned(),
            status: 200,
        }
    }
}

/// Settings passed to `server.mjs` through its environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// `ACCESS_TOKEN_TTL` in seconds; the server's default (300) when `None`.
    pub access_token_ttl: Option<u32>,
}

impl AuthServer {
    /// Starts a server with the default settings.
    pub async fn start() -> Self {
        Self::start_with(Settings::default()).await
    }

    /// Starts a server and waits until it listens and serves its metadata. A server that has
    /// not printed its port within 30 s is killed and started once more (its log is printed):
    /// on these shared 2-core machines a start has been seen to stall that long, once.
    pub async fn start_with(settings: Settings) -> Self {
        let dir = server_dir();
        prepare(&dir);
        let (mut process, port) = match spawn(&dir, settings) {
            Ok(started) => started,
            Err(stalled) => {
                eprintln!(
                    "oidc-provider test server printed no `LISTENING <port>` line within {} s; \
                     starting another. Its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    stalled.join("\n")
                );
                spawn(&dir, settings).unwrap_or_else(|log| {
                    panic!(
                        "oidc-provider test server printed no `LISTENING <port>` line within {} s, twice; its log:\n{}",
                        START_TIMEOUT.as_secs(),
                        log.join("\n")
                    )
                })
            }
        };
        let issuer = format!("http://127.0.0.1:{port}");
        process.name = issuer.clone();

        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client");
        let metadata: Metadata = get_json(
            &http,
            &format!("{issuer}/.well-known/oauth-authorization-server"),
        )
        .await;
        Self {
            process,
            issuer,
            metadata,
            http,
        }
    }

    /// The issuer identifier, `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The RFC 8414 metadata the server published.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// A registration of `client_id` with the endpoints from the server's metadata (public;
    /// add the secret and grant).
    pub fn registration(&self, client_id: &str) -> ClientRegistration {
        ClientRegistration::new(
            self.metadata.issuer.clone(),
            self.metadata.token_endpoint.clone(),
            client_id,
        )
        .authorization_endpoint(self.metadata.authorization_endpoint.clone())
    }

    /// `GET /_test/stats`.
    pub async fn stats(&self) -> ServerStats {
        get_json(&self.http, &format!("{}/_test/stats", self.issuer)).await
    }

    /// The server's stderr so far (oidc-provider notices, one line per token request, error
    /// events with the detail the HTTP answers leave out).
    pub fn log(&self) -> Vec<String> {
        self.process.log()
    }
}

impl Process {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            // The stderr thread may still be copying the last lines.
            thread::sleep(Duration::from_millis(100));
            eprintln!(
                "--- oidc-provider stderr ({}) ---\n{}",
                self.name,
                self.log().join("\n")
            );
        }
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> T {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
    assert!(status.is_success(), "GET {url}: HTTP {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e} in {body}"))
}

/// Starts `node server.mjs` and waits for its `LISTENING <port>` line: the process and the
/// port, or (killed) its log when the line did not come within [`START_TIMEOUT`].
fn spawn(dir: &Path, settings: Settings) -> Result<(Process, u16), Vec<String>> {
    let mut command = Command::new("node");
    command
        .arg("server.mjs")
        .current_dir(dir)
        .env("PORT", "0")
        .env("EXIT_ON_STDIN_CLOSE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match settings.access_token_ttl {
        Some(ttl) => command.env("ACCESS_TOKEN_TTL", ttl.to_string()),
        None => command.env_remove("ACCESS_TOKEN_TTL"),
    };
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "could not start `node server.mjs` in {}: {e}",
            dir.display()
        )
    });

    // stderr is drained for the whole life of the server: node writes to pipes
    // synchronously, so a full pipe would stall it. The lines are shown if a test fails.
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("stderr is piped");
    let sink = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut process = Process {
        child,
        log,
        name: "starting".to_owned(),
    };

    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = sender.send(lines.next());
        // Keep draining: nothing else is expected, but the pipe must not fill.
        for _ in lines {}
    });
    let line = match receiver.recv_timeout(START_TIMEOUT) {
        Ok(Some(Ok(line))) => line,
        Ok(Some(Err(e))) => panic!("oidc-provider test server: reading its stdout failed: {e}"),
        Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("oidc-provider test server exited before printing `LISTENING <port>`")
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = process.child.kill();
            let _ = process.child.wait();
            let log = process
                .log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(log);
        }
    };
    let Some(Ok(port)) = line.strip_prefix("LISTENING ").map(str::parse::<u16>) else {
        panic!(
            "oidc-provider test server: the first stdout line is {line:?}, not `LISTENING <port>`"
        );
    };
    Ok((process, port))
}

/// `tests/interop/oidc-provider`.
fn server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oidc-provider")
}

/// Checks for Node.js and runs `npm ci` if `node_modules` is missing, once per test process.
fn prepare(dir: &Path) {
    prepare_node_project(dir, "oidc-provider");
}

/// Checks for Node.js and runs `npm ci` in `dir` if `node_modules/<marker>` is missing, once
/// per folder and test process.
pub fn prepare_node_project(dir: &Path, marker: &str) {
    static READY: OnceLock<Mutex<BTreeMap<PathBuf, Result<(), String>>>> = OnceLock::new();
    let mut ready = READY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let result = ready.entry(dir.to_owned()).or_insert_with(|| {
        check_node()?;
        if dir
            .join("node_modules")
            .join(marker)
            .join("package.json")
            .is_file()
        {
            return Ok(());
        }
        run(dir, "npm", &["ci", "--no-audit", "--no-fund"]).map_err(|e| {
            format!(
                "node_modules is missing in {} and `npm ci` failed: {e}",
                dir.display()
            )
        })
    });
    if let Err(why) = result {
        panic!("the interop tests need the Node test servers: {why}");
    }
}

const INSTALL_NODE: &str = "install Node.js 20 or later (with npm), e.g. from https://nodejs.org \
     or the distribution's nodejs package; the interop tests run a real OAuth authorization \
     server (tests/interop/oidc-provider) with it";

fn check_node() -> Result<(), String> {
    let output = match Command::new("node").arg("--version").output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("`node` was not found on PATH; {INSTALL_NODE}"));
        }
        Err(e) => {
            return Err(format!(
                "`node --version` could not run ({e}); {INSTALL_NODE}"
            ));
        }
    };
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let major = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(major) if output.status.success() && major >= 20 => Ok(()),
        _ => Err(format!("`node --version` says {version:?}; {INSTALL_NODE}")),
    }
}

/// Runs a command to completion; its output goes into the error if it fails.
fn run(dir: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{program}` could not start ({e}); {INSTALL_NODE}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` exited with {}: {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
