//! Resource identifiers (RFC 8707 `resource`, RFC 9728 `resource`): parsing, canonical keys,
//! wire forms and coverage of request URLs.

mod coverage;
mod error;
mod host;
mod parse;
mod percent;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use url::Url;

pub use coverage::{Coverage, CoverageRefusal};
pub use error::{HostProblem, PortProblem, ResourceError};
pub(crate) use parse::{Parsed, Rules};

pub(crate) use coverage::check_request;
pub(crate) use coverage::covers_checked as covers_parsed_checked;
pub(crate) use parse::parse as parse_raw;
pub(crate) use parse::shorten;

/// How strictly [`ResourceUri::parse_with`] reads its input.
///
/// The default is strict: https only. The one relaxation is named for what it gives up, so it
/// shows wherever it is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    http_on_loopback: bool,
}

impl ParseOptions {
    /// Strict options: only `https` resource identifiers are accepted. The same as `default()`.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Also accept `http` when the host is loopback: `localhost`, `127.0.0.0/8` written as four
    /// decimal numbers, or `[::1]` (rules §9). For development and tests against local servers; a
    /// token sent over plain http can be read by anything on the path, so never enable this for
    /// anything but a loopback server you run yourself.
    pub fn allow_insecure_http_on_loopback(mut self, allow: bool) -> Self {
        self.http_on_loopback = allow;
        self
    }

    /// Whether `http` on a loopback host is accepted.
    pub fn allows_insecure_http_on_loopback(&self) -> bool {
        self.http_on_loopback
    }

    pub(crate) fn rules(&self) -> Rules {
        Rules {
            http_on_loopback: self.http_on_loopback,
            http_anywhere: false,
        }
    }
}

/// A validated resource identifier: the audience a token is requested for and bound to.
///
/// A `ResourceUri` can only be made by parsing, so holding one means the identifier passed every
/// check: https (or, by explicit opt-in, http on loopback), no fragment, no userinfo, a host in
/// canonical form, a usable port, no dot segments, no malformed escapes, no whitespace or
/// control characters, at most 2048 bytes.
///
/// It carries two strings (rules §1):
/// - [`key`](Self::key), the RFC 3986 §6-normalized *match key*, used for cache keys, equality,
///   hashing and coverage;
/// - [`wire`](Self::wire), the exact string sent as RFC 8707 `resource`.
///
/// Cloning is cheap (one reference count).
///
/// ```
/// use audience_cache::ResourceUri;
///
/// let resource = ResourceUri::parse("HTTPS://MCP.Example.com:443/mcp")?;
/// assert_eq!(resource.key(), "https://mcp.example.com/mcp");
///
/// let root = ResourceUri::parse("https://mcp.example.com")?;
/// assert_eq!(root.key(), "https://mcp.example.com/");
/// assert_eq!(root.wire(), "https://mcp.example.com");
///
/// assert!(ResourceUri::parse("https://mcp.example.com/mcp#frag").is_err());
/// # Ok::<(), audience_cache::ResourceError>(())
/// ```
#[derive(Clone)]
pub struct ResourceUri {
    inner: Arc<Inner>,
}

struct Inner {
    /// The parts; the key is its `url`'s serialization.
    parsed: Parsed,
    wire: Wire,
}

/// The wire form, kept as the key itself where it is one (no second copy of the string).
enum Wire {
    /// The key.
    Key,
    /// The key without its root `/` (a configured origin: rules §1).
    KeyWithoutRootSlash,
    /// A protected resource metadata document's `resource`, verbatim (rules §1).
    Verbatim(Box<str>),
}

impl ResourceUri {
    /// Parses a configured resource identifier with strict options (https only).
    ///
    /// The wire form is the key without a lone root `/` (MCP 2025-11-25 §8.1 prefers
    /// `https://mcp.example.com` to `https://mcp.example.com/`).
    pub fn parse(input: &str) -> Result<Self, ResourceError> {
        Self::parse_with(input, &ParseOptions::strict())
    }

    /// Parses a configured resource identifier with the given options.
    pub fn parse_with(input: &str, options: &ParseOptions) -> Result<Self, ResourceError> {
        let parsed = parse::parse(input, options.rules())?;
        let wire = if parsed.path() == "/" && parsed.query().is_none() {
            Wire::KeyWithoutRootSlash
        } else {
            Wire::Key
        };
        Ok(Self::from_parts(parsed, wire))
    }

    /// Takes the `resource` value of an RFC 9728 protected resource metadata document.
    ///
    /// It is validated exactly as [`parse_with`](Self::parse_with) validates, and its wire form
    /// is the document's string **verbatim**: authorization servers compare `resource` as a
    /// string, and adding or removing a trailing slash has broken real deployments (rules §1).
    pub fn from_metadata(input: &str, options: &ParseOptions) -> Result<Self, ResourceError> {
        let parsed = parse::parse(input, options.rules())?;
        Ok(Self::from_parts(parsed, Wire::Verbatim(input.into())))
    }

    fn from_parts(parsed: Parsed, wire: Wire) -> Self {
        Self {
            inner: Arc::new(Inner { parsed, wire }),
        }
    }

    /// The match key: lowercase scheme and host, internationalized names as A-labels, no
    /// default or empty port, leading zeros of the port dropped, path `/` when empty, escapes
    /// of unreserved characters decoded and every other escape in uppercase hex, the query in
    /// its original order, no fragment. Parsing a key gives the same key.
    pub fn key(&self) -> &str {
        self.inner.parsed.url.as_str()
    }

    /// The string to send as RFC 8707 `resource`.
    pub fn wire(&self) -> &str {
        let key = self.key();
        match &self.inner.wire {
            Wire::Key => key,
            Wire::KeyWithoutRootSlash => key.strip_suffix('/').unwrap_or(key),
            Wire::Verbatim(wire) => wire,
        }
    }

    /// Whether a token for this resource may be sent to `request` (the definition
    /// "covers(R, U)" of the crate's rules).
    ///
    /// Covered means: the same scheme, host and effective port; the resource's path is a prefix
    /// of the request's normalized path ending on a segment boundary (`/mcp` covers `/mcp/x`,
    /// never `/mcpx`; `/mcp/` does not cover `/mcp`); and, when the resource has a query, the
    /// request has the same path and the same query, byte for byte after normalization. A
    /// request with userinfo, or whose path reads differently when decoded until nothing
    /// changes (`%2F`, `%5C`, `;params`, dot segments, `%252e`), is refused whatever its origin.
    ///
    /// ```
    /// use audience_cache::ResourceUri;
    /// use url::Url;
    ///
    /// let resource = ResourceUri::parse("https://mcp.example.com/mcp")?;
    /// let covered = |u: &str| resource.covers(&Url::parse(u).unwrap()).is_covered();
    /// assert!(covered("https://mcp.example.com/mcp/tools/call"));
    /// assert!(!covered("https://mcp.example.com/mcp-admin"));
    /// assert!(!covered("https://mcp.example.com/mcp;jsessionid=1"));
    /// # Ok::<(), audience_cache::ResourceError>(())
    /// ```
    pub fn covers(&self, request: &Url) -> Coverage {
        coverage::covers(&self.inner.parsed, request)
    }

    /// [`covers`](Self::covers) for a request that [`check_request`] accepted, with the path it
    /// returned (so that one check serves every resource and audience compared with a URL).
    pub(crate) fn covers_checked(&self, request: &Url, path: &str) -> Coverage {
        coverage::covers_checked(&self.inner.parsed, request, path)
    }

    /// Whether this resource's host is loopback (`localhost`, `127.0.0.0/8`, `[::1]`).
    pub fn is_loopback(&self) -> bool {
        self.inner
            .parsed
            .host()
            .is_some_and(|host| host::is_loopback(&host))
    }

    /// Whether the resource uses plain http (only possible on loopback, by opt-in).
    pub fn is_insecure_http(&self) -> bool {
        self.inner.parsed.scheme == parse::Scheme::Http
    }

    /// The resource as a [`Url`], in key form (`url` reads the key back identically; that is
    /// checked when the resource is parsed).
    pub fn as_url(&self) -> &Url {
        &self.inner.parsed.url
    }
}

impl ResourceUri {
    /// Equality, answered without comparing keys when both are handles on one parsed value
    /// (a token's resource and its configured entry's are).
    /// The canonical parts (what an `aud` value with this resource's text reads as).
    pub(crate) fn parsed(&self) -> &Parsed {
        &self.inner.parsed
    }

    pub(crate) fn is_same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self == other
    }
}

impl PartialEq for ResourceUri {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ResourceUri {}

impl Hash for ResourceUri {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for ResourceUri {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ResourceUri {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl fmt::Debug for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wire() == self.key() {
            write!(f, "ResourceUri({:?})", self.key())
        } else {
            write!(f, "ResourceUri({:?}, wire: {:?})", self.key(), self.wire())
        }
    }
}

/// Shows the match key.
impl fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for ResourceUri {
    type Err = ResourceError;

    /// The same as [`ResourceUri::parse`] (strict).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for ResourceUri {
    type Error = ResourceError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

/// The characters a URL sent by a server may contain: visible ASCII except `\ " < > { } ` `.
pub(crate) fn screen_url_text(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("it is empty");
    }
    let allowed = |b: u8| {
        b.is_ascii_graphic() && !matches!(b, b'\\' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}')
    };
    if value.bytes().all(allowed) {
        Ok(())
    } else {
        Err("it contains whitespace, a backslash or another character a URL cannot hold")
    }
}
