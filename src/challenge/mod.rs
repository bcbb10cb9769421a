//! `WWW-Authenticate` challenges (RFC 9110 §11.2, §11.6.1; RFC 6750 §3; RFC 9728 §5.1; rules §14).
//!
//! [`Challenges::parse`] reads every challenge of every header field; [`Challenges::select`]
//! picks the one a client acts on and returns its `resource_metadata` (resolved against the
//! request URL) and `scope`. Parsing is strict where the grammar is and bounded everywhere:
//!
//! - size limits ([`Challenges::MAX_BYTES`], [`MAX_FIELDS`](Challenges::MAX_FIELDS),
//!   [`MAX_CHALLENGES`](Challenges::MAX_CHALLENGES), [`MAX_PARAMS`](Challenges::MAX_PARAMS),
//!   [`MAX_VALUE_BYTES`](Challenges::MAX_VALUE_BYTES)) refuse the whole header;
//! - a field that does not follow the grammar refuses the whole header, with the reason;
//! - a challenge that repeats a parameter is dropped and reported (RFC 9110 §11.2 allows each
//!   name once), never read as "the last one wins";
//! - unknown parameters are kept and ignored; `token68` challenges are kept as opaque values.

mod error;
mod split;

use std::fmt;

use http::HeaderValue;
use url::Url;

pub use error::ChallengeError;

use crate::resource::shorten;
use crate::scope::ScopeSet;

/// All challenges of a response's `WWW-Authenticate` header fields, in order.
///
/// ```
/// use audience_cache::challenge::{Challenges, TokenType};
/// use http::{HeaderValue, header::WWW_AUTHENTICATE};
/// use url::Url;
///
/// let mut headers = http::HeaderMap::new();
/// headers.append(WWW_AUTHENTICATE, HeaderValue::from_static(r#"DPoP algs="ES256""#));
/// headers.append(
///     WWW_AUTHENTICATE,
///     HeaderValue::from_static(
///         r#"Bearer resource_metadata="/.well-known/oauth-protected-resource/mcp", scope="files:read""#,
///     ),
/// );
/// let challenges = Challenges::parse(headers.get_all(WWW_AUTHENTICATE))?;
/// assert_eq!(challenges.len(), 2);
///
/// let request = Url::parse("https://mcp.example.com/mcp")?;
/// let chosen = challenges.select(&request, TokenType::Bearer)?;
/// assert_eq!(
///     chosen.resource_metadata().map(Url::as_str),
///     Some("https://mcp.example.com/.well-known/oauth-protected-resource/mcp"),
/// );
/// assert_eq!(chosen.scope().map(|s| s.as_str()), Some("files:read"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenges {
    challenges: Vec<Challenge>,
    rejected: Vec<ChallengeError>,
}

impl Challenges {
    /// The most bytes read across all fields: 16 KiB. Servers send a few hundred; the limit only
    /// bounds the work a hostile server can ask for.
    pub const MAX_BYTES: usize = 16 * 1024;
    /// The most `WWW-Authenticate` header fields read: 64.
    pub const MAX_FIELDS: usize = 64;
    /// The most challenges across all fields: 32.
    pub const MAX_CHALLENGES: usize = 32;
    /// The most parameters in one challenge: 64.
    pub const MAX_PARAMS: usize = 64;
    /// The longest parameter value or token68, as written: 4 KiB.
    pub const MAX_VALUE_BYTES: usize = 4 * 1024;

    /// Parses the `WWW-Authenticate` field values of one response (RFC 9110 §11.6.1: several
    /// challenges may share a field, and a response may carry several fields).
    ///
    /// Returns an error when a limit is exceeded or a field does not parse; the error names the
    /// field and what was wrong. Challenges that repeat a parameter are dropped and listed by
    /// [`rejected`](Self::rejected). No fields, or only empty ones, give an empty list.
    pub fn parse<'a>(
        values: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Result<Self, ChallengeError> {
        let mut entries = Vec::new();
        let mut len = 0usize;
        for (i, value) in values.into_iter().enumerate() {
            let field = i + 1;
            if field > Self::MAX_FIELDS {
                return Err(ChallengeError::TooManyFields {
                    max: Self::MAX_FIELDS,
                });
            }
            len = len.saturating_add(value.len());
            if len > Self::MAX_BYTES {
                return Err(ChallengeError::TooLarge {
                    len,
                    max: Self::MAX_BYTES,
                });
            }
            let text = value
                .to_str()
                .map_err(|_| ChallengeError::NotVisibleAscii { field })?;
            split::parse_field(text, field, &mut entries)?;
        }
        let mut parsed = Self::default();
        for entry in entries {
            match entry {
                Ok(challenge) => parsed.challenges.push(challenge),
                Err(rejected) => parsed.rejected.push(rejected),
            }
        }
        Ok(parsed)
    }

    /// The valid challenges, in header order.
    pub fn iter(&self) -> impl Iterator<Item = &Challenge> {
        self.challenges.iter()
    }

    /// The number of valid challenges.
    pub fn len(&self) -> usize {
        self.challenges.len()
    }

    /// Whether there is no valid challenge.
    pub fn is_empty(&self) -> bool {
        self.challenges.is_empty()
    }

    /// The challenges that were dropped, with the reason (a repeated parameter).
    pub fn rejected(&self) -> &[ChallengeError] {
        &self.rejected
    }

    /// Whether the resource server accepts DPoP-bound tokens only: it offers the `DPoP`
    /// scheme and not `Bearer` (RFC 9449 §7.1). A client then has to ask for bound tokens; a
    /// server offering both leaves the choice to the client.
    pub fn requires_dpop(&self) -> bool {
        self.iter().any(|c| c.is_scheme("DPoP")) && !self.iter().any(|c| c.is_scheme("Bearer"))
    }

    /// The challenge a client using `token_type` should act on, with its `resource_metadata`
    /// resolved against `request` (the URL that was answered with this header) and its `scope`.
    ///
    /// - [`TokenType::Bearer`]: the first valid `Bearer` challenge.
    /// - [`TokenType::DPoP`]: the first valid `DPoP` challenge, or else the first valid `Bearer`
    ///   one (RFC 9449 §7.1: a server that accepts both sends both; the resource and its
    ///   authorization servers are the same whichever scheme names them).
    ///
    /// Fails when there is no such challenge, or when the chosen one has an invalid `scope` or a
    /// `resource_metadata` that is not an http(s) URL after resolution. The returned URL is not
    /// yet safe to fetch: pass it to [`check_resource_metadata_url`](crate::discovery::check_resource_metadata_url).
    pub fn select(
        &self,
        request: &Url,
        token_type: TokenType,
    ) -> Result<SelectedChallenge<'_>, ChallengeError> {
        let schemes: &[&str] = match token_type {
            TokenType::Bearer => &["Bearer"],
            TokenType::DPoP => &["DPoP", "Bearer"],
        };
        let challenge = schemes
            .iter()
            .find_map(|scheme| self.iter().find(|c| c.is_scheme(scheme)))
            .ok_or_else(|| ChallengeError::NoUsableChallenge {
                wanted: token_type,
                offered: self.offered(),
            })?;
        Ok(SelectedChallenge {
            challenge,
            resource_metadata: challenge.resource_metadata_url(request)?,
            scope: challenge.scope()?,
        })
    }

    fn offered(&self) -> String {
        if self.challenges.is_empty() {
            return "none".to_owned();
        }
        let schemes: Vec<&str> = self.iter().map(Challenge::scheme).collect();
        shorten(&schemes.join(", "))
    }
}

impl<'a> IntoIterator for &'a Challenges {
    type Item = &'a Challenge;
    type IntoIter = std::slice::Iter<'a, Challenge>;

    fn into_iter(self) -> Self::IntoIter {
        self.challenges.iter()
    }
}

/// The kind of access token a client presents, which decides the challenge it acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenType {
    /// RFC 6750 bearer tokens (`Authorization: Bearer`).
    #[default]
    Bearer,
    /// RFC 9449 DPoP-bound tokens (`Authorization: DPoP`).
    DPoP,
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bearer => "Bearer",
            Self::DPoP => "DPoP",
        })
    }
}

/// The challenge chosen by [`Challenges::select`], with its parameters already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedChallenge<'a> {
    challenge: &'a Challenge,
    resource_metadata: Option<Url>,
    scope: Option<ScopeSet>,
}

impl<'a> SelectedChallenge<'a> {
    /// The challenge itself.
    pub fn challenge(&self) -> &'a Challenge {
        self.challenge
    }

    /// The protected resource metadata URL (RFC 9728 §5.1), absolute, http(s), with a host.
    /// Check it with [`check_resource_metadata_url`](crate::discovery::check_resource_metadata_url) before
    /// fetching it. `None`: use the well-known URLs
    /// ([`protected_resource_metadata_urls`](crate::discovery::protected_resource_metadata_urls)).
    pub fn resource_metadata(&self) -> Option<&Url> {
        self.resource_metadata.as_ref()
    }

    /// The scopes the server asks for. MCP 2025-11-25 §4.2: authoritative for the challenged
    /// request; `None` means fall back to the scope selection strategy.
    pub fn scope(&self) -> Option<&ScopeSet> {
        self.scope.as_ref()
    }

    /// The `error` code, if any (RFC 6750 §3.1).
    pub fn error(&self) -> Option<ChallengeErrorCode> {
        self.challenge.error()
    }
}

/// One challenge: an auth-scheme and either parameters or an opaque token68.
///
/// Guarantees: no two parameters share a name (compared case-insensitively); parameter values
/// are unescaped (`\"` read as `"`) and hold only visible ASCII, space and tab.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    scheme: Box<str>,
    body: Body,
}

#[derive(Clone, PartialEq, Eq)]
enum Body {
    /// Names as written, values unescaped.
    Params(Vec<(Box<str>, Box<str>)>),
    Token68(Box<str>),
}

impl Challenge {
    /// The auth-scheme as written. Compare it with [`is_scheme`](Self::is_scheme): schemes are
    /// case-insensitive (RFC 9110 §11.1).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Whether the auth-scheme is `scheme`, ignoring ASCII case (`bearer` is `Bearer`).
    pub fn is_scheme(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The value of a parameter, unescaped; names compare case-insensitively (RFC 9110 §11.2).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The parameters in header order: names as written, values unescaped. Empty for a token68
    /// challenge.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        let params: &[(Box<str>, Box<str>)] = match &self.body {
            Body::Params(params) => params,
            Body::Token68(_) => &[],
        };
        params.iter().map(|(n, v)| (&**n, &**v))
    }

    /// The token68 of a challenge written as `scheme token68` (RFC 9110 §11.2), which the crate
    /// does not interpret.
    pub fn token68(&self) -> Option<&str> {
        match &self.body {
            Body::Token68(token) => Some(token),
            Body::Params(_) => None,
        }
    }

    /// The `realm` parameter (RFC 9110 §11.5), untrusted text.
    pub fn realm(&self) -> Option<UntrustedText<'_>> {
        self.param("realm").map(UntrustedText)
    }

    /// The `resource_metadata` parameter as sent (RFC 9728 §5.1): possibly relative, not yet
    /// checked. Prefer [`resource_metadata_url`](Self::resource_metadata_url).
    pub fn resource_metadata(&self) -> Option<&str> {
        self.param("resource_metadata")
    }

    /// The `resource_metadata` parameter resolved against `request`, the URL that was answered
    /// with this challenge (rules §14: a relative value is resolved, never guessed at).
    ///
    /// Refused: an empty value, one with characters a URL cannot hold (whitespace, tabs,
    /// backslashes, quotes, angle brackets; `url` would silently drop or rewrite them), one that
    /// does not resolve, and one that is not http(s) with a host (`javascript:`, `data:`).
    /// Origin and address checks are [`check_resource_metadata_url`](crate::discovery::check_resource_metadata_url)'s.
    pub fn resource_metadata_url(&self, request: &Url) -> Result<Option<Url>, ChallengeError> {
        let Some(value) = self.resource_metadata() else {
            return Ok(None);
        };
        let refuse = |reason| ChallengeError::InvalidResourceMetadata {
            scheme: shorten(&self.scheme),
            value: shorten(value),
            reason,
        };
        crate::resource::screen_url_text(value).map_err(refuse)?;
        let url = request
            .join(value)
            .map_err(|_| refuse("it is not a valid URL reference"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(refuse("it is not an http(s) URL"));
        }
        if url.host().is_none() {
            return Err(refuse("it has no host"));
        }
        Ok(Some(url))
    }

    /// The `scope` parameter as a scope set (RFC 6750 §3). A scope string outside the RFC 6749
    /// §3.3 grammar (a tab, a line break, `"`, `\`) is an error for this challenge. An empty
    /// `scope=""` is the empty set.
    pub fn scope(&self) -> Result<Option<ScopeSet>, ChallengeError> {
        self.param("scope")
            .map(|scope| {
                ScopeSet::parse(scope).map_err(|source| ChallengeError::InvalidScope {
                    scheme: shorten(&self.scheme),
                    source,
                })
            })
            .transpose()
    }

    /// The `error` code (RFC 6750 §3.1; RFC 9449 §7.1 for DPoP).
    pub fn error(&self) -> Option<ChallengeErrorCode> {
        self.param("error").map(|code| match code {
            "invalid_request" => ChallengeErrorCode::InvalidRequest,
            "invalid_token" => ChallengeErrorCode::InvalidToken,
            "insufficient_scope" => ChallengeErrorCode::InsufficientScope,
            other => ChallengeErrorCode::Other(other.into()),
        })
    }

    /// The `error_description` parameter: text from the server, for developers, never for
    /// decisions. Its `Display` escapes control characters.
    pub fn error_description(&self) -> Option<UntrustedText<'_>> {
        self.param("error_description").map(UntrustedText)
    }

    /// The `error_uri` parameter as sent, untrusted (never fetched by the crate).
    pub fn error_uri(&self) -> Option<UntrustedText<'_>> {
        self.param("error_uri").map(UntrustedText)
    }
}

/// Shows the scheme and parameters; a token68 is shown by length only, because it can be a
/// server's handshake material.
impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Challenge");
        s.field("scheme", &self.scheme);
        match &self.body {
            Body::Params(params) => s.field("params", params),
            Body::Token68(token) => s.field("token68_len", &token.len()),
        };
        s.finish()
    }
}

/// An RFC 6750 §3.1 error code from a challenge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChallengeErrorCode {
    /// `invalid_request`: the request is malformed (HTTP 400). Retrying it unchanged will not help.
    InvalidRequest,
    /// `invalid_token`: the token is expired, revoked or not for this resource (HTTP 401). The
    /// client may get a new token and retry once.
    InvalidToken,
    /// `insufficient_scope`: the token lacks scopes (HTTP 403); the challenge's `scope` says which.
    InsufficientScope,
    /// Any other code, as sent (`invalid_dpop_proof`, `use_dpop_nonce`, ...). Untrusted text:
    /// its `Display` escapes control characters.
    Other(Box<str>),
}

impl fmt::Display for ChallengeErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRequest => f.write_str("invalid_request"),
            Self::InvalidToken => f.write_str("invalid_token"),
            Self::InsufficientScope => f.write_str("insufficient_scope"),
            Self::Other(code) => UntrustedText(code).fmt(f),
        }
    }
}

/// Text a server sent (`error_description`, `realm`, `error_uri`), safe to show.
///
/// `Display` writes it with control characters escaped (a tab shows as `\t`, anything else as
/// `\u{..}`) and at most 256 characters, so it cannot forge log lines or move a terminal's cursor.
/// [`as_str`](Self::as_str) gives the raw text for code that escapes on its own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UntrustedText<'a>(&'a str);

impl<'a> UntrustedText<'a> {
    const MAX_SHOWN: usize = 256;

    /// The text exactly as sent (after quoted-string unescaping).
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Display for UntrustedText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == Self::MAX_SHOWN {
                return f.write_str("…");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for UntrustedText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", shorten(self.0))
    }
}
