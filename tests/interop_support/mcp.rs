//! The MCP TypeScript SDK's streamable-HTTP server (tests/interop/mcp-server), one process per
//! server, and a small JSON-RPC session over the crate's `AuthorizedClient`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use audience_cache::AuthorizedClient;
use serde::Deserialize;
use serde_json::{Value, json};

use super::server::prepare_node_project;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running MCP server (one path), killed when dropped; it also exits when the test process
/// ends (`EXIT_ON_STDIN_CLOSE=1`).
pub struct McpServer {
    child: Child,
    port: u16,
    resource: String,
    http: reqwest::Client,
}

/// One request as the MCP server recorded it (never the token itself).
#[derive(Debug, Clone, Deserialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub bearer: bool,
    pub aud: Option<Value>,
    pub status: Option<u16>,
    /// The `Last-Event-ID` of a resumed stream.
    #[serde(default)]
    pub last_event_id: Option<String>,
}

#[derive(Deserialize)]
struct Records {
    requests: Vec<Recorded>,
}

impl McpServer {
    /// Starts an MCP server at `path` whose tokens must come from `issuer`, with the
    /// `REQUIRED_SCOPES` rules given. One that has not printed its address within 30 s is
    /// killed and started once more (see `AuthServer::start_with`).
    pub fn start(issuer: &str, path: &str, required_scopes: &str) -> Self {
        Self::start_with(issuer, path, required_scopes, &[])
    }

    /// Like [`start`](Self::start), with more of the server's environment (`MCP_RESUMABLE`,
    /// `MCP_JSON_RESPONSE`, …; see its README).
    pub fn start_with(
        issuer: &str,
        path: &str,
        required_scopes: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/mcp-server");
        prepare_node_project(&dir, "@modelcontextprotocol/sdk");
        Self::spawn(&dir, issuer, path, required_scopes, env).unwrap_or_else(|stalled| {
            eprintln!("{stalled}; starting another");
            Self::spawn(&dir, issuer, path, required_scopes, env)
                .unwrap_or_else(|stalled| panic!("{stalled}, twice"))
        })
    }

    fn spawn(
        dir: &Path,
        issuer: &str,
        path: &str,
        required_scopes: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(dir)
            .env("AS_ISSUER", issuer)
            .env("PORT", "0")
            .env("MCP_PATHS", path)
            .env("REQUIRED_SCOPES", required_scopes)
            .env("EXIT_ON_STDIN_CLOSE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start the MCP server in {}: {e}", dir.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = sender.send(lines.next());
            for _ in lines {}
        });
        let line = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the MCP server printed no `LISTENING <port> <url>` within {} s",
                    START_TIMEOUT.as_secs()
                ));
            }
            other => {
                let _ = child.kill();
                panic!("the MCP server did not print `LISTENING <port> <url>`: {other:?}")
            }
        };
        let mut words = line.split_whitespace();
        let (Some("LISTENING"), Some(port), Some(resource)) =
            (words.next(), words.next(), words.next())
        else {
            let _ = child.kill();
            panic!("unexpected first line from the MCP server: {line:?}");
        };
        Ok(Self {
            port: port.parse().expect("a port"),
            resource: resource.to_owned(),
            child,
            http: reqwest::Client::new(),
        })
    }

    /// The server's resource identifier (and MCP endpoint), `http://127.0.0.1:<port><path>`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Every request the server received.
    pub async fn requests(&self) -> Vec<Recorded> {
        let url = format!("http://127.0.0.1:{}/_test/requests", self.port);
        let records: Records = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        records.requests
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A streamable-HTTP MCP session: JSON-RPC by POST, JSON or server-sent-event replies.
pub struct Session<'a> {
    http: &'a AuthorizedClient,
    url: String,
    id: Option<String>,
    next: u64,
}

/// A JSON-RPC reply, or the HTTP status when there was none.
#[derive(Debug)]
pub enum Reply {
    Result(Value),
    Error(Value),
    Status(u16),
}

impl<'a> Session<'a> {
    pub fn new(http: &'a AuthorizedClient, url: &str) -> Self {
        Self {
            http,
            url: url.to_owned(),
            id: None,
            next: 1,
        }
    }

    pub async fn initialize(&mut self) -> Result<Value, String> {
        let params = json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "audience-cache interop", "version": "0" }
        });
        let result = match self.call("initialize", params).await? {
            Reply::Result(result) => result,
            other => return Err(format!("initialize: {other:?}")),
        };
        self.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        Ok(result)
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Result<Reply, String> {
        let id = self.next;
        self.next += 1;
        let response = self
            .send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        let (status, sse, text) = response;
        if !(200..300).contains(&status) {
            return Ok(Reply::Status(status));
        }
        let message = if sse {
            text.split("\n\n")
                .filter_map(|event| {
                    let data: String = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    serde_json::from_str::<Value>(&data).ok()
                })
                .find(|m| m["id"] == json!(id))
                .ok_or_else(|| format!("{method}: no reply in the event stream"))?
        } else {
            serde_json::from_str(&text).map_err(|e| format!("{method}: {e}"))?
        };
        Ok(match message.get("error") {
            Some(error) => Reply::Error(error.clone()),
            None => Reply::Result(message["result"].clone()),
        })
    }

    async fn send(&mut self, body: Value) -> Result<(u16, bool, String), String> {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body);
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        let request = request.build().map_err(|e| e.to_string())?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(id) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.id = Some(id.to_owned());
        }
        let status = response.status().as_u16();
        let sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = response.text().await.map_err(|e| e.to_string())?;
        Ok((status, sse, text))
    }
}
