//! The two [`AuthorizationHandler`]s the crate ships: [`LoopbackListener`] (a user in a
//! browser, the redirect received on 127.0.0.1) and [`HeadlessAuthorization`] (the
//! authorization URL fetched without following its redirect, for tests and for servers that
//! approve at once).
//!
//! Neither keeps the authorization URL or the redirect after `authorize` returns; their `Debug`
//! shows the redirect URI and settings, never a `code` or `state`. Error messages show URLs
//! without their query.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use url::Url;

use super::{AuthorizationFuture, AuthorizationHandler};
use crate::audience::redacted_url;
use crate::{BuildError, Error};

/// How long [`HeadlessAuthorization::new`]'s client waits for the authorization endpoint.
const HEADLESS_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this much of an error body is read, to show an excerpt of it.
const BODY_EXCERPT_READ: usize = 4096;
/// How long [`LoopbackListener`] waits for the redirect by default.
const DEFAULT_LOOPBACK_TIMEOUT: Duration = Duration::from_secs(300);
/// A request head longer than this is refused (431): the redirect's is far shorter.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long one local connection may take to send its request head, and to take the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;
/// After a failed `accept` (such as too many open files), a pause before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why a redirect URI cannot be used, or `None` when it can: MCP 2025-11-25 §11.3 (https, or
/// http on a loopback host) and RFC 6749 §3.1.2 (no fragment). The same rule as the client
/// registration check in the cache builder.
pub(crate) fn redirect_uri_problem(uri: &Url) -> Option<String> {
    let shown = redacted_url(uri);
    if uri.fragment().is_some() {
        return Some(format!(
            "the redirect URI {shown} has a fragment; remove it (RFC 6749 §3.1.2)"
        ));
    }
    let loopback = matches!(uri.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if uri.scheme() != "https" && !(uri.scheme() == "http" && loopback) {
        return Some(format!(
            "the redirect URI {shown} is neither https nor http on loopback (127.0.0.1, [::1] or localhost)"
        ));
    }
    None
}

/// Whether `redirect` went to the endpoint `redirect_uri` names: same scheme, host, port and
/// path (the query carries the response; the rest must be the registered URI's).
pub(crate) fn same_endpoint(redirect: &Url, redirect_uri: &Url) -> bool {
    redirect.scheme() == redirect_uri.scheme()
        && redirect.host() == redirect_uri.host()
        && redirect.port_or_known_default() == redirect_uri.port_or_known_default()
        && redirect.path() == redirect_uri.path()
}

/// A handler is only given http(s) authorization URLs: nothing else is fetched, shown as a
/// link or passed to a browser opener.
fn check_authorization_url(url: &Url) -> Result<(), Error> {
    match url.scheme() {
        "https" | "http" => Ok(()),
        other => Err(Error::Authorization {
            detail: format!(
                "the authorization URL has the scheme {:?}, not http or https; it was not opened",
                crate::resource::shorten(other)
            ),
        }),
    }
}

fn gave_up(detail: String) -> Error {
    Error::Authorization { detail }
}

// ----------------------------------------------------------------------------------------------
// HeadlessAuthorization
// ----------------------------------------------------------------------------------------------

/// An [`AuthorizationHandler`] with no user: it requests the authorization URL, does not
/// follow the redirect, and returns the `Location` it points to.
///
/// For tests (the `testing` feature's authorization server approves at once) and for
/// authorization servers that approve this client without asking anyone. A server that
/// answers with a page (a login or consent form) needs a user: that is an
/// [`Error::Authorization`] naming [`LoopbackListener`] as the way on.
///
/// The redirect must come back to the redirect URI (same scheme, host, port and path);
/// anywhere else is an error that says where it went. Nothing is ever sent to the redirect
/// URI itself. `Debug` shows the redirect URI only.
///
/// ```no_run
/// use audience_cache::{AuthorizationHandler, HeadlessAuthorization, ResourceUri, ScopeSet, TokenCache};
/// use url::Url;
///
/// # async fn run(cache: TokenCache) -> Result<(), Box<dyn std::error::Error>> {
/// // The redirect URI the client is registered with (Grant::AuthorizationCode).
/// let handler = HeadlessAuthorization::new(Url::parse("http://127.0.0.1:53682/callback")?)?;
/// let resource = ResourceUri::parse("https://mcp.example.com")?;
/// let pending = cache.begin_authorization(&resource, &ScopeSet::empty())?;
/// let redirect = handler.authorize(pending.url()).await?;
/// let token = cache.complete_authorization(pending, &redirect).await?;
/// # let _ = token;
/// # Ok(())
/// # }
/// ```
pub struct HeadlessAuthorization {
    redirect_uri: Url,
    http: reqwest::Client,
}

impl HeadlessAuthorization {
    /// A handler for `redirect_uri` with its own HTTP client: redirects are not followed and
    /// a request times out after 10 s.
    ///
    /// The redirect URI must be https, or http on a loopback host (`127.0.0.1`, `[::1]`,
    /// `localhost`), without a fragment (MCP 2025-11-25 §11.3, RFC 6749 §3.1.2); otherwise
    /// [`Error::Configuration`] with [`BuildError::Setting`].
    ///
    /// ```
    /// use audience_cache::{AuthorizationHandler, HeadlessAuthorization};
    /// use url::Url;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let handler = HeadlessAuthorization::new(Url::parse("http://127.0.0.1:53682/callback")?)?;
    /// assert_eq!(handler.redirect_uri().as_str(), "http://127.0.0.1:53682/callback");
    /// assert!(HeadlessAuthorization::new(Url::parse("http://app.example/callback")?).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(redirect_uri: Url) -> Result<Self, Error> {
        check_redirect_uri(&redirect_uri)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HEADLESS_TIMEOUT)
            .build()
            .map_err(|e| {
                Error::Configuration(BuildError::HttpClient {
                    reason: e.to_string(),
                })
            })?;
        Ok(Self { redirect_uri, http })
    }

    /// A handler for `redirect_uri` (checked as in [`new`](Self::new)) that sends its request
    /// with `http`, for a proxy, custom roots or another timeout.
    ///
    /// The client must not follow redirects: build it with
    /// `.redirect(reqwest::redirect::Policy::none())`. One that does would send the code to
    /// the redirect URI itself; when the response comes from another URL than the one
    /// requested, [`authorize`](AuthorizationHandler::authorize) refuses it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use audience_cache::HeadlessAuthorization;
    /// use url::Url;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let http = reqwest::Client::builder()
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .timeout(Duration::from_secs(30))
    ///     .build()?;
    /// let handler =
    ///     HeadlessAuthorization::with_client(Url::parse("https://app.example/callback")?, http)?;
    /// # let _ = handler;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_client(redirect_uri: Url, http: reqwest::Client) -> Result<Self, Error> {
        check_redirect_uri(&redirect_uri)?;
        Ok(Self { redirect_uri, http })
    }

    async fn fetch(&self, url: &Url) -> Result<Url, Error> {
        check_authorization_url(url)?;
        let endpoint = redacted_url(url);
        let response = self.http.get(url.clone()).send().await.map_err(|e| {
            gave_up(format!(
                "the authorization endpoint {endpoint} could not be reached: {}",
                crate::error::describe(&e)
            ))
        })?;
        if response.url() != url {
            return Err(gave_up(format!(
                "the HTTP client followed a redirect from {endpoint} to {}; give HeadlessAuthorization a client built with redirect::Policy::none()",
                redacted_url(response.url())
            )));
        }
        let status = response.status();
        match status.as_u16() {
            301 | 302 | 303 | 307 | 308 => self.location(url, &response),
            200 => {
                let excerpt = body_excerpt(response, url).await;
                Err(gave_up(format!(
                    "the authorization endpoint {endpoint} answered 200 with a page{excerpt}, not a redirect: the server wants a user to log in or consent, which HeadlessAuthorization cannot do; use LoopbackListener or another AuthorizationHandler that brings a user there"
                )))
            }
            _ => {
                let excerpt = body_excerpt(response, url).await;
                Err(gave_up(format!(
                    "the authorization endpoint {endpoint} answered HTTP {status}{excerpt}, not a redirect"
                )))
            }
        }
    }

    /// The one `Location` of a redirect, resolved against the request URL, if it comes back to
    /// the redirect URI.
    fn location(&self, url: &Url, response: &reqwest::Response) -> Result<Url, Error> {
        let endpoint = redacted_url(url);
        let status = response.status().as_u16();
        let mut locations = response.headers().get_all(reqwest::header::LOCATION).iter();
        let (Some(location), None) = (locations.next(), locations.next()) else {
            let count = response
                .headers()
                .get_all(reqwest::header::LOCATION)
                .iter()
                .count();
            return Err(gave_up(format!(
                "the authorization endpoint {endpoint} answered {status} with {count} Location headers, not exactly one"
            )));
        };
        let target = location
            .to_str()
            .ok()
            .and_then(|location| url.join(location).ok())
            .ok_or_else(|| {
                gave_up(format!(
                    "the authorization endpoint {endpoint} answered {status} with a Location that is not a valid URL"
                ))
            })?;
        if !same_endpoint(&target, &self.redirect_uri) {
            return Err(gave_up(format!(
                "the authorization endpoint {endpoint} redirected to {}, not to the redirect URI {}; if that is a login or consent page, the server wants a user: use LoopbackListener or another AuthorizationHandler",
                redacted_url(&target),
                redacted_url(&self.redirect_uri)
            )));
        }
        Ok(target)
    }
}

fn check_redirect_uri(uri: &Url) -> Result<(), Error> {
    match redirect_uri_problem(uri) {
        None => Ok(()),
        Some(reason) => Err(Error::Configuration(BuildError::Setting {
            setting: "redirect_uri",
            reason,
        })),
    }
}

/// A short, escaped excerpt of an unexpected answer's body (`": …"`), or nothing. At most
/// [`BODY_EXCERPT_READ`] bytes are read.
async fn body_excerpt(mut response: reqwest::Response, url: &Url) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_EXCERPT_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(BODY_EXCERPT_READ);
    excerpt(&String::from_utf8_lossy(&body), url)
}

/// The authorization URL's parameters whose values are secrets: the `state` (and an OpenID
/// `nonce`). The PKCE challenge is public by design.
const SECRET_PARAMETERS: [&str; 2] = ["state", "nonce"];

/// A server may echo the request in its answer: the secret values of the authorization URL,
/// decoded or as sent, are cut out before the excerpt is made.
fn excerpt(body: &str, url: &Url) -> String {
    let mut text = body.trim().to_owned();
    let decoded = url
        .query_pairs()
        .filter(|(name, _)| SECRET_PARAMETERS.contains(&name.as_ref()))
        .map(|(_, value)| value.into_owned());
    let raw = url
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| SECRET_PARAMETERS.contains(name))
        .map(|(_, value)| value.to_owned());
    for value in decoded.chain(raw).filter(|value| !value.is_empty()) {
        text = text.replace(&value, "[redacted]");
    }
    if text.is_empty() {
        return String::new();
    }
    format!(": \"{}\"", crate::resource::shorten(&text).escape_debug())
}

impl AuthorizationHandler for HeadlessAuthorization {
    fn redirect_uri(&self) -> Url {
        self.redirect_uri.clone()
    }

    fn authorize<'a>(&'a self, url: &'a Url) -> AuthorizationFuture<'a> {
        Box::pin(self.fetch(url))
    }
}

impl fmt::Debug for HeadlessAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadlessAuthorization")
            .field("redirect_uri", &self.redirect_uri.as_str())
            .finish()
    }
}

// ----------------------------------------------------------------------------------------------
// LoopbackListener
// ----------------------------------------------------------------------------------------------

type ShowUrl = Arc<dyn Fn(&Url) + Send + Sync>;

/// An [`AuthorizationHandler`] for command-line apps: it shows the authorization URL (and can
/// open a browser), then waits on `127.0.0.1` for the browser's redirect.
///
/// The redirect URI is `http://127.0.0.1:{port}/callback`: a loopback IP literal, not
/// `localhost`, which might resolve elsewhere (RFC 8252 §7.3, §8.3; MCP 2025-11-25 §11.3).
/// The listener binds 127.0.0.1 only, never all interfaces. While an authorization waits,
/// every other request is answered and the wait goes on: 404 for a favicon, another path or
/// another method; 400 for the redirect path without the authorization URL's `state`, so that
/// a stray local request or a web page probing the port cannot end the authorization. The
/// redirect gets a page saying it reached the app, which echoes nothing of the query. Each local connection has a few seconds and 8 KiB to send its request head, so a
/// slow or hostile local client cannot hold the listener; up to 16 are served at once.
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
            path: self.redirect_uri.path().to_owned(),
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
pub(crate) fn redirect_from_head(
    redirect_uri: &Url,
    state: Option<&str>,
    head: &[u8],
) -> Option<Url> {
    let head = &head[..find_head_end(head)?];
    let (method, target) = parse_request_line(head)?;
    let expected = Expected {
        path: redirect_uri.path().to_owned(),
        state: state.map(str::to_owned),
    };
    if method != "GET" || !expected.is_redirect(target) {
        return None;
    }
    redirect_url(redirect_uri, target)
}

/// What the redirect of the authorization in progress looks like.
struct Expected {
    /// The redirect URI's path.
    path: String,
    /// The authorization URL's `state`, which the redirect carries back (RFC 6749 §4.1.2,
    /// errors included: §4.1.2.1). A request with another `state` (a stray or hostile local
    /// request, a page in the browser probing the port) is refused and the wait goes on,
    /// instead of ending the authorization with a redirect the crate would refuse.
    state: Option<String>,
}

impl Expected {
    fn is_redirect(&self, target: &str) -> bool {
        let (path, query) = target
            .split_once('?')
            .map_or((target, None), |(p, q)| (p, Some(q)));
        if path != self.path {
            return false;
        }
        match &self.state {
            None => true,
            Some(expected) => single_parameter(query, "state")
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

/// Compares without an early exit, so the time taken says nothing about the expected state.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Accepts connections until one carries the redirect; returns its request target. Each
/// connection is served on its own task, so one that stalls delays no other.
async fn accept_redirect(listener: &TcpListener, expected: Arc<Expected>) -> String {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, expected.clone()));
                }
                Err(error) => {
                    tracing::debug!(%error, "loopback listener: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(served) = connections.join_next(), if !connections.is_empty() => {
                if let Ok(Some(target)) = served {
                    return target;
                }
            }
        }
    }
}

/// Serves one connection: the redirect's request target, or `None` after a refusal.
async fn serve(mut stream: TcpStream, expected: Arc<Expected>) -> Option<String> {
    let head = tokio::time::timeout(CONNECTION_TIMEOUT, read_head(&mut stream)).await;
    let (target, answer) = match head {
        Err(_) => (None, Answer::Timeout),
        Ok(Err(HeadError::TooLarge)) => (None, Answer::TooLarge),
        Ok(Err(HeadError::Closed)) => return None,
        Ok(Ok(head)) => match parse_request_line(&head) {
            None => (None, Answer::BadRequest),
            Some(("GET", target)) if expected.is_redirect(target) => {
                (Some(target.to_owned()), Answer::Received)
            }
            Some(("GET", target)) if target_path(target) == expected.path => {
                (None, Answer::OtherAuthorization)
            }
            Some(_) => (None, Answer::NotFound),
        },
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

#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The connection ended before the head did.
    Closed,
    /// More than [`MAX_REQUEST_HEAD`] bytes without the end of the head.
    TooLarge,
}

/// Reads an HTTP/1 request head (up to the empty line), at most [`MAX_REQUEST_HEAD`] bytes.
async fn read_head(reader: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = reader
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if read == 0 {
            return Err(HeadError::Closed);
        }
        let searched = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = find_head_end(&head[searched..]) {
            head.truncate(searched + end);
            return Ok(head);
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Where the head ends: after `\r\n\r\n` (or a bare `\n\n`, which RFC 9112 §2.2 lets a server
/// accept).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The method and request target of an HTTP/1.x request line (RFC 9112 §3): three parts
/// separated by single spaces, the target in origin form (a leading `/`; absolute, authority
/// and asterisk forms are refused) of visible ASCII without a fragment.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_alphabetic())
        || !matches!(version, "HTTP/1.1" | "HTTP/1.0")
        || !target.starts_with('/')
        || target.starts_with("//")
        || !target.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
    {
        return None;
    }
    Some((method, target))
}

/// The path of an origin-form target: everything before the `?`.
fn target_path(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

/// The listener's answers. None of them echoes anything from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Received,
    NotFound,
    /// The redirect path, without the `state` of the authorization in progress.
    OtherAuthorization,
    BadRequest,
    Timeout,
    TooLarge,
}

impl Answer {
    fn status(self) -> u16 {
        match self {
            Self::Received => 200,
            Self::NotFound => 404,
            Self::OtherAuthorization => 400,
            Self::BadRequest => 400,
            Self::Timeout => 408,
            Self::TooLarge => 431,
        }
    }

    fn response(self) -> Vec<u8> {
        let (reason, content_type, body) = match self {
            Self::Received => ("OK", "text/html; charset=utf-8", RECEIVED_PAGE),
            Self::NotFound => ("Not Found", "text/plain; charset=utf-8", "Not found\n"),
            Self::OtherAuthorization => (
                "Bad Request",
                "text/plain; charset=utf-8",
                "This is not the redirect of the authorization in progress.\n",
            ),
            Self::BadRequest => ("Bad Request", "text/plain; charset=utf-8", "Bad request\n"),
            Self::Timeout => (
                "Request Timeout",
                "text/plain; charset=utf-8",
                "Request timeout\n",
            ),
            Self::TooLarge => (
                "Request Header Fields Too Large",
                "text/plain; charset=utf-8",
                "Request header fields too large\n",
            ),
        };
        // no-store and no-referrer: the page's URL carries the code.
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
            self.status(),
            body.len()
        )
        .into_bytes()
    }
}

const RECEIVED_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Authorization received</title></head>\n<body><p>The authorization reached the application. You can close this window.</p></body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn redirect_uris_are_https_or_http_on_loopback_without_fragment() {
        for ok in [
            "https://app.example/callback",
            "http://127.0.0.1:53682/callback",
            "http://[::1]:8080/cb",
            "http://localhost/cb",
            "https://app.example/cb?tenant=a",
        ] {
            assert_eq!(redirect_uri_problem(&url(ok)), None, "{ok}");
        }
        for (bad, reason) in [
            (
                "http://app.example/cb",
                "the redirect URI http://app.example/cb is neither https nor http on loopback (127.0.0.1, [::1] or localhost)",
            ),
            (
                "http://127.0.0.1:1/cb#x",
                "the redirect URI http://127.0.0.1:1/cb has a fragment; remove it (RFC 6749 §3.1.2)",
            ),
            (
                "myapp://cb",
                "the redirect URI myapp://cb is neither https nor http on loopback (127.0.0.1, [::1] or localhost)",
            ),
            (
                "http://127.0.0.1.evil.example/cb?s=1",
                "the redirect URI http://127.0.0.1.evil.example/cb?… is neither https nor http on loopback (127.0.0.1, [::1] or localhost)",
            ),
        ] {
            assert_eq!(
                redirect_uri_problem(&url(bad)).as_deref(),
                Some(reason),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_lines_in_origin_form_only() {
        /// A request head, and the method and target it yields.
        type Case = (&'static [u8], Option<(&'static str, &'static str)>);
        let cases: &[Case] = &[
            (
                b"GET /callback?code=a&state=b HTTP/1.1\r\nHost: x\r\n\r\n",
                Some(("GET", "/callback?code=a&state=b")),
            ),
            (b"GET / HTTP/1.0\n\n", Some(("GET", "/"))),
            (
                b"POST /callback HTTP/1.1\r\n\r\n",
                Some(("POST", "/callback")),
            ),
            // Absolute, authority and asterisk forms.
            (b"GET http://127.0.0.1:1/callback HTTP/1.1\r\n\r\n", None),
            (b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n", None),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", None),
            (b"GET //evil.example/callback HTTP/1.1\r\n\r\n", None),
            // Malformed lines.
            (b"GET  /callback HTTP/1.1\r\n\r\n", None),
            (b"GET /callback HTTP/1.1 extra\r\n\r\n", None),
            (b"GET /callback\r\n\r\n", None),
            (b"GET /callback HTTP/2.0\r\n\r\n", None),
            (b"GET /call\tback HTTP/1.1\r\n\r\n", None),
            (b"GET /callback#frag HTTP/1.1\r\n\r\n", None),
            (b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", None),
            (b"G-T /callback HTTP/1.1\r\n\r\n", None),
            (b"GET /callback HTTP/1.1", None),
        ];
        for (head, expected) in cases {
            assert_eq!(
                parse_request_line(head),
                *expected,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        assert_eq!(target_path("/callback?code=a"), "/callback");
        assert_eq!(target_path("/callback"), "/callback");
    }

    #[test]
    fn the_redirect_is_the_redirect_path_with_the_one_expected_state() {
        let expected = Expected {
            path: "/callback".to_owned(),
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
        ] {
            assert_eq!(expected.is_redirect(target), is_redirect, "{target}");
        }
        let any_state = Expected {
            path: "/cb".to_owned(),
            state: None,
        };
        assert!(any_state.is_redirect("/cb"));
        assert!(any_state.is_redirect("/cb?code=abc"));
        assert!(!any_state.is_redirect("/callback?code=abc"));
    }

    #[tokio::test]
    async fn a_request_head_is_read_to_its_end_and_no_further_than_8_kib() {
        let mut input: &[u8] = b"GET /cb HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(
            read_head(&mut input).await.unwrap(),
            b"GET /cb HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let long = vec![b'a'; 100 * 1024];
        assert_eq!(
            read_head(&mut long.as_slice()).await,
            Err(HeadError::TooLarge)
        );
        // The end of the head split across reads is still found.
        let (mut client, mut server) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move { read_head(&mut server).await });
        client.write_all(b"GET /cb HTTP/1.1\r\n\r").await.unwrap();
        client.flush().await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(b"\n").await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), b"GET /cb HTTP/1.1\r\n\r\n");
        let mut closed: &[u8] = b"GET /cb HTTP/1.1\r\n";
        assert_eq!(read_head(&mut closed).await, Err(HeadError::Closed));
    }

    #[test]
    fn answers_echo_nothing_and_close() {
        let page = String::from_utf8(Answer::Received.response()).unwrap();
        assert!(page.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(page.contains("\r\nConnection: close\r\n"));
        assert!(page.contains("You can close this window."));
        assert!(page.ends_with(&format!(
            "Content-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{RECEIVED_PAGE}",
            RECEIVED_PAGE.len()
        )));
        let not_found = String::from_utf8(Answer::NotFound.response()).unwrap();
        assert!(not_found.starts_with("HTTP/1.1 404 Not Found\r\n"));
    }

    #[test]
    fn excerpts_leave_out_the_state_and_escape_control_characters() {
        let authorization = url(
            "https://as.example/authorize?state=s3cr%2Bstate&code_challenge=ch4llenge&nonce=n0nce&x=1",
        );
        assert_eq!(
            excerpt(
                " bad state s3cr+state (s3cr%2Bstate), nonce n0nce, challenge ch4llenge\n\u{1b}[31m ",
                &authorization
            ),
            r#": "bad state [redacted] ([redacted]), nonce [redacted], challenge ch4llenge\n\u{1b}[31m""#
        );
        assert_eq!(excerpt(" \n", &authorization), "");
        let long = "x".repeat(200);
        assert_eq!(
            excerpt(&long, &authorization),
            format!(": \"{}…\"", "x".repeat(80))
        );
    }
}
