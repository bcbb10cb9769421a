//! From a raw string to a canonical resource identifier.
//!
//! The raw string is screened first (rules §16–§19, §7, §8), because `url` repairs many hostile
//! inputs into something else: it trims and deletes whitespace, reads `\` as `/`, drops an empty
//! userinfo, decodes escapes in hosts and renumbers `0x7f.1`. Only input that passes the screen
//! is normalized; then `url` parses the result as a second net, and any disagreement between
//! the two readings is refused.

use std::borrow::Cow;

use super::error::ResourceError;
use super::host::{Authority, Host, is_loopback, parse_authority};
use super::percent;

/// rules §16: the longest resource identifier accepted, in bytes.
pub(crate) const MAX_LEN: usize = 2048;

/// The http(s) scheme of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub(crate) fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// What the parse needs to know beyond the string.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Accept `http` when the host is loopback (rules §9, development only).
    pub(crate) http_on_loopback: bool,
    /// Accept `http` on any host. Never reachable from the public API: only used to read a
    /// token's `aud` values, which are compared and never fetched.
    pub(crate) http_anywhere: bool,
}

/// A resource identifier in canonical parts.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub(crate) scheme: Scheme,
    /// The port when it is not the scheme's default.
    pub(crate) port: Option<u16>,
    /// The match key as `url` parsed it: it reads back as the key, byte for byte, and its
    /// path and query are the normalized ones (see `cross_check`).
    pub(crate) url: url::Url,
    /// Whether the path is read without its trailing `/` (an `aud` value, whose one trailing
    /// slash is ignored).
    trimmed: bool,
}

impl Parsed {
    pub(crate) fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// The host, lowercase, internationalized labels as A-labels (as `url` read it back from
    /// the key, which `cross_check` compared with the crate's own reading).
    pub(crate) fn host(&self) -> Option<url::Host<&str>> {
        self.url.host()
    }

    /// The normalized path, `/` when empty (without its trailing slash if
    /// [`trim_trailing_slash`](Self::trim_trailing_slash) took it).
    pub(crate) fn path(&self) -> &str {
        let path = self.url.path();
        if self.trimmed {
            &path[..path.len() - 1]
        } else {
            path
        }
    }

    /// The normalized query, without the `?`.
    pub(crate) fn query(&self) -> Option<&str> {
        self.url.query()
    }

    /// Whether the path ends with a `/` that an `aud` value is read without: there is no
    /// query and the path is longer than `/` (`https://h/mcp/` names `https://h/mcp`).
    pub(crate) fn has_ignored_slash(&self) -> bool {
        let path = self.path();
        self.query().is_none() && path.len() > 1 && path.ends_with('/')
    }

    /// Reads the path without the slash of [`has_ignored_slash`](Self::has_ignored_slash)
    /// from now on (an `aud` value).
    pub(crate) fn trim_trailing_slash(&mut self) {
        if self.has_ignored_slash() {
            self.trimmed = true;
        }
    }

    /// The match key of the parts as they are now (an `aud` value's path may have lost a
    /// trailing slash since the parse; it has no query then, so the slash ends the key).
    pub(crate) fn key(&self) -> String {
        let key = self.url.as_str();
        let key = if self.trimmed {
            &key[..key.len() - 1]
        } else {
            key
        };
        key.to_owned()
    }
}

/// The match key: the parts joined into one string, written into `key` (emptied first).
fn build_key(
    key: &mut String,
    scheme: Scheme,
    host: &Host,
    port: Option<u16>,
    path: &str,
    query: Option<&str>,
) {
    use std::fmt::Write as _;
    key.clear();
    key.push_str(scheme.as_str());
    key.push_str("://");
    match host {
        Host::Domain(name) => key.push_str(name),
        // Writing to a String cannot fail.
        Host::V4(_) | Host::V6(_) => {
            let _ = write!(key, "{host}");
        }
    }
    if let Some(port) = port {
        let _ = write!(key, ":{port}");
    }
    key.push_str(path);
    if let Some(query) = query {
        key.push('?');
        key.push_str(query);
    }
}

std::thread_local! {
    /// The buffer each parse writes its key into before `url` reads it: the key itself is
    /// kept as `url`'s serialization, so a parse makes no string of its own for it.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Parses and canonicalizes `input`; its match key is the parsed `url`'s serialization.
pub(crate) fn parse(input: &str, rules: Rules) -> Result<Parsed, ResourceError> {
    screen_characters(input)?;
    if let Some(at) = input.bytes().position(|b| b == b'#') {
        return Err(ResourceError::Fragment {
            fragment: shorten(&input[at..]),
        });
    }
    let (scheme, rest) = split_scheme(input)?;
    let Some(rest) = rest.strip_prefix("//") else {
        return Err(ResourceError::NoAuthority {
            scheme: shorten(input.split(':').next().unwrap_or_default()),
        });
    };
    let authority_end = rest
        .bytes()
        .position(|b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if let Some(at) = authority.bytes().rposition(|b| b == b'@') {
        return Err(ResourceError::Userinfo {
            shown: redact_userinfo(&authority[..at]),
        });
    }
    // Non-ASCII is allowed in the host only (IDN); everywhere else it must be percent-encoded.
    let offset = input.len() - path_and_query.len();
    if !path_and_query.is_ascii()
        && let Some((position, character)) =
            path_and_query.char_indices().find(|(_, c)| !c.is_ascii())
    {
        return Err(ResourceError::NonAscii {
            position: offset + position,
            character,
        });
    }
    let Authority { host, port } = parse_authority(authority, scheme.default_port())?;
    if scheme == Scheme::Http
        && !rules.http_anywhere
        && !(rules.http_on_loopback && is_loopback(&host.as_url_host()))
    {
        return Err(ResourceError::InsecureScheme {
            host: shorten(authority),
        });
    }
    let (raw_path, raw_query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let path = normalize_path(raw_path, offset)?;
    let query = match raw_query {
        Some("") => return Err(ResourceError::EmptyQuery),
        Some(query) => Some(normalize_component(
            query,
            offset + raw_path.len() + 1,
            true,
        )?),
        None => None,
    };
    let url = KEY.with_borrow_mut(|key| {
        build_key(key, scheme, &host, port, &path, query.as_deref());
        // Canonicalization can lengthen the input (A-labels, uppercase escapes); the cap
        // holds for the key too, so that a key always parses again.
        if key.len() > MAX_LEN {
            return Err(ResourceError::TooLong {
                len: key.len(),
                max: MAX_LEN,
            });
        }
        cross_check(key, scheme, &host, port, &path, query.as_deref())
    })?;
    Ok(Parsed {
        scheme,
        port,
        url,
        trimmed: false,
    })
}

/// rules §16: length, whitespace, controls, invisible characters and backslashes, anywhere.
fn screen_characters(input: &str) -> Result<(), ResourceError> {
    if input.is_empty() {
        return Err(ResourceError::Empty);
    }
    if input.len() > MAX_LEN {
        return Err(ResourceError::TooLong {
            len: input.len(),
            max: MAX_LEN,
        });
    }
    // ASCII, the usual case, by a table: among ASCII characters only the controls, the space
    // and `\` are refused (the other whitespace is control too; nothing is invisible). The
    // first non-ASCII character, if any comes before a refused one, starts the look at
    // characters.
    let Some(start) = input.bytes().position(|b| SCREENED[usize::from(b)]) else {
        return Ok(());
    };
    let b = input.as_bytes()[start];
    if b.is_ascii() {
        return Err(match b {
            b' ' => ResourceError::Whitespace { position: start },
            b'\\' => ResourceError::Backslash { position: start },
            _ => ResourceError::ControlCharacter {
                position: start,
                character: char::from(b),
            },
        });
    }
    for (offset, character) in input[start..].char_indices() {
        let position = start + offset;
        if character.is_control() {
            return Err(ResourceError::ControlCharacter {
                position,
                character,
            });
        }
        if character.is_whitespace() || character == '\u{a0}' {
            return Err(ResourceError::Whitespace { position });
        }
        if is_invisible(character) {
            return Err(ResourceError::InvisibleCharacter {
                position,
                character,
            });
        }
        if character == '\\' {
            return Err(ResourceError::Backslash { position });
        }
    }
    Ok(())
}

/// The bytes `screen_characters` looks at: ASCII controls, the space, `\`, and every byte of
/// a non-ASCII character.
static SCREENED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b == 0x7f || b == 0x20 || b == 0x5c || b >= 0x80;
        b += 1;
    }
    table
};

/// Zero-width, bidirectional-control, byte-order-mark, soft-hyphen and tag characters.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}'
        | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}'
        | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}'
        | '\u{fff0}'..='\u{fffb}'
        | '\u{e0000}'..='\u{e0fff}')
}

fn split_scheme(input: &str) -> Result<(Scheme, &str), ResourceError> {
    if input.starts_with('/') || input.starts_with('.') || input.starts_with('?') {
        return Err(ResourceError::RelativeReference {
            input: shorten(input),
        });
    }
    let scheme_end = input.bytes().position(|b| b == b':');
    let valid_scheme = |s: &str| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    };
    let Some(end) = scheme_end.filter(|&end| valid_scheme(&input[..end])) else {
        return Err(ResourceError::MissingScheme {
            input: shorten(input),
        });
    };
    let (scheme, rest) = (&input[..end], &input[end + 1..]);
    // `mcp.example.com:443/mcp` and `localhost:8080` are a host and port, not a scheme.
    let looks_like_port = {
        let end = rest
            .bytes()
            .position(|b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let port = &rest[..end];
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    };
    if looks_like_port {
        return Err(ResourceError::MissingScheme {
            input: shorten(input),
        });
    }
    if scheme.eq_ignore_ascii_case("https") {
        Ok((Scheme::Https, rest))
    } else if scheme.eq_ignore_ascii_case("http") {
        Ok((Scheme::Http, rest))
    } else {
        Err(ResourceError::UnsupportedScheme {
            scheme: shorten(scheme),
        })
    }
}

/// Shows userinfo without its password: `user:***`, or a note that it is empty.
fn redact_userinfo(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        _ if userinfo.is_empty() => "an empty userinfo".to_owned(),
        Some((user, _)) => format!("{:?} with a password", shorten(user)),
        None => format!("{:?}", shorten(userinfo)),
    }
}

fn normalize_path(raw: &str, offset: usize) -> Result<Cow<'_, str>, ResourceError> {
    if raw.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    let path = normalize_component(raw, offset, false)?;
    // rules §19: `.` and `..` segments, literal or encoded (normalization decoded `%2E` already;
    // `/` is never produced by it, so the segments line up with the raw ones). A raw path
    // starts with `/`, so a dot segment follows a `/`.
    let bytes = path.as_bytes();
    if bytes.contains(&b'.') && bytes.windows(2).any(|pair| pair == b"/.") {
        for (segment, raw_segment) in path.split('/').zip(raw.split('/')) {
            if segment == "." || segment == ".." {
                return Err(ResourceError::DotSegment {
                    segment: raw_segment.to_owned(),
                });
            }
        }
    }
    // A resource whose own path a server could route elsewhere could never cover its own
    // URL (rules §5), so it is refused here rather than at every request.
    if super::coverage::is_ambiguous(&path) {
        return Err(ResourceError::AmbiguousPath { path: shorten(raw) });
    }
    Ok(path)
}

/// RFC 3986 grammar for a path (`pchar` and `/`) or a query (also `?`), escapes checked and
/// normalized (rules §6).
fn normalize_component(
    raw: &str,
    offset: usize,
    query: bool,
) -> Result<Cow<'_, str>, ResourceError> {
    let bytes = raw.as_bytes();
    let mut escaped = false;
    // From one byte that is not a pchar or `/` to the next: only `%` (an escape, checked for
    // controls here and for its form by the normalization) and, in a query, `?` may be one.
    let mut from = 0;
    while let Some(found) = bytes[from..]
        .iter()
        .position(|&b| !percent::is_pchar(b) && b != b'/')
    {
        let at = from + found;
        match bytes[at] {
            b'%' => {
                escaped = true;
                if let Some(decoded) = percent::escape_at(bytes, at)
                    && (decoded < 0x20 || decoded == 0x7f)
                {
                    return Err(ResourceError::EscapedControl {
                        escape: raw[at..at + 3].to_owned(),
                    });
                }
            }
            b'?' if query => {}
            b => {
                return Err(ResourceError::InvalidCharacter {
                    position: offset + at,
                    character: char::from(b),
                });
            }
        }
        from = at + 1;
    }
    // Without an escape there is nothing to normalize: the component is its own form.
    if !escaped {
        return Ok(Cow::Borrowed(raw));
    }
    percent::normalize(raw)
        .map(Cow::Owned)
        .map_err(|malformed| ResourceError::MalformedEscape {
            escape: malformed.text,
        })
}

/// The second net: `url` must read the canonical form exactly as the crate does.
fn cross_check(
    key: &str,
    scheme: Scheme,
    host: &Host,
    port: Option<u16>,
    path: &str,
    query: Option<&str>,
) -> Result<url::Url, ResourceError> {
    let url = url::Url::parse(key).map_err(|e| ResourceError::Unparseable {
        reason: e.to_string(),
    })?;
    let disagree = |component, ours: &str, theirs: &str| ResourceError::ParserDisagreement {
        component,
        ours: shorten(ours),
        theirs: shorten(theirs),
    };
    if url.scheme() != scheme.as_str() {
        return Err(disagree("scheme", scheme.as_str(), url.scheme()));
    }
    match url.host() {
        Some(theirs) if host.as_url_host() == theirs => {}
        other => {
            let theirs = other.map(|h| h.to_string()).unwrap_or_default();
            return Err(disagree("host", &host.to_string(), &theirs));
        }
    }
    let effective = port.unwrap_or(scheme.default_port());
    if url.port_or_known_default() != Some(effective) {
        let theirs = url
            .port_or_known_default()
            .map(|p| p.to_string())
            .unwrap_or_default();
        return Err(disagree("port", &effective.to_string(), &theirs));
    }
    if url.path() != path {
        return Err(disagree("path", path, url.path()));
    }
    if url.query() != query {
        return Err(disagree(
            "query",
            query.unwrap_or_default(),
            url.query().unwrap_or_default(),
        ));
    }
    // The key is kept as `url`'s serialization: it must be the key, byte for byte.
    if url.as_str() != key {
        return Err(disagree("key", key, url.as_str()));
    }
    Ok(url)
}

/// Keeps error messages bounded: at most 80 characters of input are quoted.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}
