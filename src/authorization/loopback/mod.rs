//! [`LoopbackListener`]: the authorization URL shown to a user (or opened in a browser), the
//! redirect received on 127.0.0.1 (RFC 8252 §7.3, §8.3). The request heads it reads and the
//! answers it sends are in `request`.
//!
//! It keeps neither the authorization URL nor the redirect after `authorize` returns; its
//! `Debug` shows the redirect URI and settings, never a `code` or `state`. Error messages show
//! URLs without their query.

mod request;

use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use url::Url;

use self::request::{
    Answer, HeadError, find_head_end, host_check, parse_request_line, read_head, target_path,
};
use super::handler::{check_authorization_url, gave_up};
use super::{AuthorizationFuture, AuthorizationHandler};
use crate::error::Error;
use crate::redirect_uri::{constant_time_eq, same_endpoint};

/// How long [`LoopbackListener`] waits for the redirect by default.
const DEFAULT_LOOPBACK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a new local connection may stay silent. A browser sends its request as soon as it
/// has connected; one that sends nothing for this long (a port scan, a preconnection the
/// browser may never use, a client holding the listener) is closed without an answer.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one local connection may take to send its request head, and to take the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once. When a new one arrives and all are taken, the oldest one that
/// has not sent a complete request head is closed to make room: a browser's redirect never
/// waits behind idle or slow connections.
const MAX_CONNECTIONS: usize = 16;
/// After a failed `accept` (such as too many open files), a pause before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

type ShowUrl = Arc<dyn Fn(&Url) + Send + Sync>;

/// An [`AuthorizationHandler`] for command-line apps: it shows the authorization URL (and can
/// open a browser), then waits on `127.0.0.1` for the browser's redirect.
///
/// The redirect URI is `http://127.0.0.1:{port}/callback`: a loopback IP literal, not
/// `localhost`, which might resolve elsewhere (RFC 8252 §7.3, §8.3; MCP 2025-11-25 §11.3).
/// The listener binds 127.0.0.1 only, never all interfaces. While an authorization waits,
/// every other request is answered and the wait goes on: 421 for a `Host` other than
/// `127.0.0.1:{port}` or `localhost:{port}` (a page on another name rebound to 127.0.0.1,
/// DNS rebinding); 404 for a favicon, another path or another method; 400 for the redirect
/// path without the authorization URL's `state` or with another query than the redirect
/// URI's, so that a stray local request or a web page probing the port cannot end the
/// authorization. The redirect gets a page saying it reached the app, which echoes nothing of
/// the query.
///
/// A local connection has 1 s to send its first byte and 5 s and 8 KiB for its whole request
/// head. Up to 16 are served at once; when a new one arrives and all 16 are taken, the oldest
/// one without a complete request head is closed to make room, so no number of idle or slow
/// local connections keeps the browser's redirect waiting.
///
/// One authorization at a time: a second `authorize` on the same listener waits for the
/// first to finish. `Debug` shows the redirect URI and settings.
///
/// ```no_run
/// use std::time::Duration;
/// use audience_cache::{AuthorizationHandler, LoopbackListener, ResourceUri, ScopeSet, TokenCache};
///
/// # async fn run(cache: TokenCache) -> Result<(), Box<dyn std::error::Error>> {
/// // Port 0: any free port. The client is registered with handler.redirect_uri().
/// let handler = LoopbackListener::bind(0)
///     .await?
///     .timeout(Duration::from_secs(120))
///     .open_browser(true);
/// let resource = ResourceUri::parse("https://mcp.example.com")?;
/// let pending = cache.begin_authorization(&resource, &ScopeSet::empty())?;
/// let redirect = handler.authorize(pending.url()).await?;
/// let token = cache.complete_authorization(pending, &redirect).await?;
/// # let _ = token;
/// # Ok(())
/// # }
/// ```
pub struct LoopbackListener {
    listener: Mutex<TcpListener>,
    redirect_uri: Url,
    timeout: Duration,
    show: ShowUrl,
    open_browser: bool,
}

impl LoopbackListener {
    /// Listens on `127.0.0.1:port` (0 for any free port), with the redirect URI
    /// `http://127.0.0.1:{port}/callback`, a 300 s timeout, the URL printed on stderr, and no
    /// browser opened. A port already in use is an [`Error::Authorization`].
    ///
    /// ```no_run
    /// use audience_cache::{AuthorizationHandler, LoopbackListener};
    ///
    /// # async fn run() -> Result<(), audience_cache::Error> {
    /// let handler = LoopbackListener::bind(53682).await?;
    /// assert_eq!(handler.redirect_uri().as_str(), "http://127.0.0.1:53682/callback");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bind(port: u16) -> Result<Self, Error> {
        let cannot = |reason: String| {
            gave_up(format!(
                "could not listen on 127.0.0.1:{port} for the authorization redirect: {reason}; choose another port (0 picks a free one)"
            ))
        };
        // RFC 8252 §8.3: the loopback interface only, never 0.0.0.0.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| cannot(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| cannot(e.to_string()))?
            .port();
        let redirect_uri = Url::parse(&format!("http://127.0.0.1:{port}/callback"))
            .map_err(|e| cannot(e.to_string()))?;
        Ok(Self {
            listener: Mutex::new(listener),
            redirect_uri,
            timeout: DEFAULT_LOOPBACK_TIMEOUT,
            show: Arc::new(print_url),
            open_browser: false,
        })
    }

    /// Uses `path` instead of `/callback` as the redirect URI's path. It is set as a URL path:
    /// a missing leading `/` is added, characters a path cannot hold are percent-encoded, and
    /// a query or fragment in it is not one.
    ///
    /// ```no_run
    /// use audience_cache::{AuthorizationHandler, LoopbackListener};
    ///
    /// # async fn run() -> Result<(), audience_cache::Error> {
    /// let handler = LoopbackListener::bind(53682).await?.with_path("/cb");
    /// assert_eq!(handler.redirect_uri().as_str(), "http://127.0.0.1:53682/cb");
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_path(mut self, path: &str) -> Self {
        self.redirect_uri.set_path(path);
        self
    }

    /// How long [`authorize`](AuthorizationHandler::authorize) waits for the redirect before
    /// it gives up (default 300 s: long enough to log in, short enough that a forgotten
    /// terminal does not keep a port open).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), audience_cache::Error> {
    /// use std::time::Duration;
    /// let handler = audience_cache::LoopbackListener::bind(0).await?.timeout(Duration::from_secs(60));
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Shows the authorization URL the app's own way (a dialog, a log line, a QR code) instead
    /// of printing `Open this URL in your browser to authorize:` and the URL on stderr. The URL
    /// carries the `state`: show it only to the user.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), audience_cache::Error> {
    /// let handler = audience_cache::LoopbackListener::bind(0)
    ///     .await?
    ///     .on_authorization_url(|url| println!("Please visit {url}"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_authorization_url(mut self, show: impl Fn(&Url) + Send + Sync + 'static) -> Self {
        self.show = Arc::new(show);
        self
    }

    /// Also tries to open the URL in the default browser (default false): `xdg-open` on Linux
    /// and the BSDs, `open` on macOS, `rundll32 url.dll,FileProtocolHandler` on Windows, each
    /// run directly with the URL as one argument, never through a shell. The URL is shown
    /// either way; a failure to open is logged at debug level.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), audience_cache::Error> {
    /// let handler = audience_cache::LoopbackListener::bind(0).await?.open_browser(true);
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_browser(mut self, open: bool) -> Self {
        self.open_browser = open;
        self
    }

    async fn wait_for_redirect(&self, url: &Url) -> Result<Url, Error> {
        check_authorization_url(url)?;
        let listener = self.listener.lock().await;
        (self.show)(url);
        if self.open_browser {
            open_in_browser(url);
        }
        let expected = Arc::new(Expected {
            redirect_uri: self.redirect_uri.clone(),
            state: single_parameter(url.query(), "state"),
        });
        let target = tokio::time::timeout(self.timeout, accept_redirect(&listener, expected))
            .await
            .map_err(|_| {
                gave_up(format!(
                    "no redirect reached {} within {:?}; the authorization was not finished in time, try again",
                    self.redirect_uri, self.timeout
                ))
            })?;
        redirect_url(&self.redirect_uri, &target).ok_or_else(|| {
            gave_up(format!(
                "the redirect to {} was not a valid URL",
                self.redirect_uri
            ))
        })
    }
}

impl AuthorizationHandler for LoopbackListener {
    fn redirect_uri(&self) -> Url {
        self.redirect_uri.clone()
    }

    fn authorize<'a>(&'a self, url: &'a Url) -> AuthorizationFuture<'a> {
        Box::pin(self.wait_for_redirect(url))
    }
}

impl fmt::Debug for LoopbackListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackListener")
            .field("redirect_uri", &self.redirect_uri.as_str())
            .field("timeout", &self.timeout)
            .field("open_browser", &self.open_browser)
            .finish_non_exhaustive()
    }
}

fn print_url(url: &Url) {
    eprintln!("Open this URL in your browser to authorize:\n  {url}");
}

/// Runs the platform's opener with the URL as its one argument (a `Url` starts with its
/// scheme, so it cannot be read as an option). `cmd /c start` is not used on Windows: cmd
/// would treat the `&` between query parameters as a command separator.
fn open_in_browser(url: &Url) {
    let (program, args): (&str, &[&str]) = if cfg!(target_os = "macos") {
        ("open", &[])
    } else if cfg!(windows) {
        ("rundll32", &["url.dll,FileProtocolHandler"])
    } else {
        ("xdg-open", &[])
    };
    let spawned = std::process::Command::new(program)
        .args(args)
        .arg(url.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // Reaped off the runtime's threads; its exit status says nothing more to the user.
        Ok(mut child) => drop(tokio::task::spawn_blocking(move || child.wait())),
        Err(error) => tracing::debug!(program, %error, "could not open a browser"),
    }
}

/// The URL a redirect's request target stands for on the listener of `redirect_uri`.
fn redirect_url(redirect_uri: &Url, target: &str) -> Option<Url> {
    let port = redirect_uri.port()?;
    Url::parse(&format!("http://127.0.0.1:{port}{target}"))
        .ok()
        .filter(|redirect| redirect.path() == redirect_uri.path())
}

/// The redirect a listener waiting on `redirect_uri` for `state` would return for a request
/// `head`, read exactly as a live listener reads it (the seam the fuzz target
/// `loopback_redirect` checks against what the crate's completion reads from the URL).
/// Only the `fuzzing` oracles call it.
#[cfg_attr(not(feature = "fuzzing"), allow(dead_code))]
pub(crate) fn redirect_from_head(
    redirect_uri: &Url,
    state: Option<&str>,
    head: &[u8],
) -> Option<Url> {
    let head = &head[..find_head_end(head)?];
    let expected = Expected {
        redirect_uri: redirect_uri.clone(),
        state: state.map(str::to_owned),
    };
    let (target, _) = classify(head, &expected);
    redirect_url(redirect_uri, &target?)
}

/// What the listener makes of a complete request head: the redirect's request target with
/// the page that says it arrived, or the answer of a refusal. The `Host` comes first: a
/// request addressed to another name is no business of the listener's, whatever it carries.
fn classify(head: &[u8], expected: &Expected) -> (Option<String>, Answer) {
    let Some((method, target)) = parse_request_line(head) else {
        return (None, Answer::BadRequest);
    };
    if let Err(answer) = host_check(head, expected.port()) {
        return (None, answer);
    }
    match (method, target) {
        ("GET", target) if expected.is_redirect(target) => {
            (Some(target.to_owned()), Answer::Received)
        }
        ("GET", target) if target_path(target) == expected.path() => {
            (None, Answer::OtherAuthorization)
        }
        _ => (None, Answer::NotFound),
    }
}

/// What the redirect of the authorization in progress looks like.
struct Expected {
    /// The redirect URI: its path, and the query it carries (if any), which the redirect keeps.
    redirect_uri: Url,
    /// The authorization URL's `state`, which the redirect carries back (RFC 6749 §4.1.2,
    /// errors included: §4.1.2.1). A request with another `state` (a stray or hostile local
    /// request, a page in the browser probing the port) is refused and the wait goes on,
    /// instead of ending the authorization with a redirect the crate would refuse.
    state: Option<String>,
}

impl Expected {
    /// The redirect URI's path, as the request target spells it.
    fn path(&self) -> &str {
        self.redirect_uri.path()
    }

    /// The listener's port, which a request's `Host` must name.
    fn port(&self) -> u16 {
        self.redirect_uri.port_or_known_default().unwrap_or(80)
    }

    /// Whether `target` is the redirect: the redirect URI's path as sent, the rest of the
    /// redirect URI as the completion compares it, and the one expected `state`.
    fn is_redirect(&self, target: &str) -> bool {
        if target_path(target) != self.path() {
            return false;
        }
        let Some(redirect) = redirect_url(&self.redirect_uri, target) else {
            return false;
        };
        if !same_endpoint(&redirect, &self.redirect_uri) {
            return false;
        }
        match &self.state {
            None => true,
            Some(expected) => single_parameter(redirect.query(), "state")
                .is_some_and(|state| constant_time_eq(state.as_bytes(), expected.as_bytes())),
        }
    }
}

/// The value of `name` when the query has it exactly once.
fn single_parameter(query: Option<&str>, name: &str) -> Option<String> {
    let mut values = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned());
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// A connection being served, as the accept loop sees it.
struct Connection {
    task: AbortHandle,
    /// Set once the connection has sent its complete request head (or failed to): from then
    /// on it is being answered, which takes no time, and is not closed to make room.
    head_read: Arc<AtomicBool>,
}

/// Accepts connections until one carries the redirect; returns its request target. Each
/// connection is served on its own task, so one that stalls delays no other; when
/// [`MAX_CONNECTIONS`] are being served, a new connection closes the oldest one still without
/// a complete request head (they are in accept order), so that no number of idle or slow
/// local connections keeps the redirect waiting.
async fn accept_redirect(listener: &TcpListener, expected: Arc<Expected>) -> String {
    let mut tasks = JoinSet::new();
    let mut connections: VecDeque<Connection> = VecDeque::new();
    loop {
        connections.retain(|c| !c.task.is_finished() && !c.head_read.load(Ordering::Acquire));
        let live = tasks.len();
        let room = live < MAX_CONNECTIONS || !connections.is_empty();
        tokio::select! {
            accepted = listener.accept(), if room => match accepted {
                Ok((stream, _)) => {
                    if live >= MAX_CONNECTIONS
                        && let Some(oldest) = connections.pop_front()
                    {
                        // Closed when the task is dropped; `join_next` reaps it.
                        oldest.task.abort();
                    }
                    let head_read = Arc::new(AtomicBool::new(false));
                    let task = tasks.spawn(serve(stream, expected.clone(), head_read.clone()));
                    connections.push_back(Connection { task, head_read });
                }
                Err(error) => {
                    tracing::debug!(%error, "loopback listener: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(served) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(Some(target)) = served {
                    return target;
                }
            }
        }
    }
}

/// Serves one connection: the redirect's request target, or `None` after a refusal.
async fn serve(
    mut stream: TcpStream,
    expected: Arc<Expected>,
    head_read: Arc<AtomicBool>,
) -> Option<String> {
    let deadline = Instant::now() + CONNECTION_TIMEOUT;
    // Nothing asked, nothing to answer: a silent connection is closed. (`peek` waits for a
    // byte, or the end of the connection, and leaves it for `read_head`.)
    tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut [0u8; 1]))
        .await
        .ok()?
        .ok()?;
    let head = tokio::time::timeout_at(deadline, read_head(&mut stream)).await;
    head_read.store(true, Ordering::Release);
    let (target, answer) = match head {
        Err(_) => (None, Answer::Timeout),
        Ok(Err(HeadError::TooLarge)) => (None, Answer::TooLarge),
        Ok(Err(HeadError::Closed)) => return None,
        Ok(Ok(head)) => classify(&head, &expected),
    };
    if target.is_none() {
        tracing::debug!(
            status = answer.status(),
            "loopback listener: not the redirect"
        );
    }
    // The browser may be gone by now; the redirect counts all the same.
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, async {
        stream.write_all(&answer.response()).await?;
        stream.shutdown().await
    })
    .await;
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_is_the_redirect_path_with_the_one_expected_state() {
        let expected = Expected {
            redirect_uri: Url::parse("http://127.0.0.1:4000/callback").unwrap(),
            state: Some("st+te".to_owned()),
        };
        for (target, is_redirect) in [
            ("/callback?code=abc&state=st%2Bte", true),
            ("/callback?state=st%2Bte&error=access_denied", true),
            ("/callback?code=abc&state=st+te", false),
            ("/callback?code=abc&state=other", false),
            ("/callback?code=abc&state=st%2Bte&state=st%2Bte", false),
            ("/callback?code=abc", false),
            ("/callback", false),
            ("/callback/?code=abc&state=st%2Bte", false),
            ("/other?code=abc&state=st%2Bte", false),
            // A parameter the redirect URI does not have.
            ("/callback?code=abc&state=st%2Bte&tenant=b", false),
        ] {
            assert_eq!(expected.is_redirect(target), is_redirect, "{target}");
        }
        let any_state = Expected {
            redirect_uri: Url::parse("http://127.0.0.1:4000/cb?tenant=a").unwrap(),
            state: None,
        };
        assert!(any_state.is_redirect("/cb?tenant=a"));
        assert!(any_state.is_redirect("/cb?tenant=a&code=abc"));
        assert!(!any_state.is_redirect("/cb?tenant=b&code=abc"));
        assert!(!any_state.is_redirect("/cb?code=abc"));
        assert!(!any_state.is_redirect("/callback?tenant=a&code=abc"));
    }
}
