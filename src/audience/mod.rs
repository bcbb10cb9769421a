//! The audience decision: may this token be sent to this request URL? (rules §10)
//!
//! Two checks, in this order:
//! 1. **Provenance** (always): the resource the token was requested for must cover the request
//!    URL. This is the binding the crate relies on.
//! 2. **`aud`** (deny-only, in the default mode): if the token is a readable JWT with an `aud`
//!    claim, some value must cover the request URL or be a configured alias of the resource.
//!    A token the crate cannot read passes on provenance alone, because RFC 9068 §6 forbids
//!    clients to depend on the token format.

mod jwt;

#[cfg(test)]
pub(crate) use jwt::unsigned as unsigned_jwt;

use std::fmt;

use url::Url;

use crate::resource::{self, Coverage, CoverageRefusal, Parsed, ResourceUri, Rules};

pub use jwt::MalformedAud;

/// How much the `aud` claim of a token is allowed to decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AudienceMode {
    /// The default. Provenance is required; a readable `aud` that does not cover the request
    /// URL (and is not an alias) refuses the token; a token without a readable `aud` is allowed.
    #[default]
    DenyOnMismatch,
    /// Provenance only: `aud` is never read (strict RFC 9068 §6). Pick it for authorization
    /// servers whose JWT `aud` is unrelated to the resource and cannot be listed as aliases.
    ProvenanceOnly,
    /// Provenance, and a readable `aud` that covers the request URL or is an alias. Opaque and
    /// encrypted tokens, and JWTs without `aud`, are refused. Pick it when every token from
    /// this authorization server is a JWT with `aud`, so a missing claim means something is
    /// wrong.
    RequireAud,
}

/// The audience rules for one resource: a mode and the logical audiences (aliases) that stand
/// for it.
///
/// ```
/// use audience_cache::{AudienceMode, AudiencePolicy, ResourceUri};
/// use url::Url;
///
/// let resource = ResourceUri::parse("https://mcp.example.com/mcp")?;
/// let policy = AudiencePolicy::new(AudienceMode::DenyOnMismatch).with_alias("api://mcp");
/// let request = Url::parse("https://mcp.example.com/mcp/tools")?;
///
/// // An opaque token passes on provenance alone.
/// assert!(policy.decide(&resource, &request, "2YotnFZFEjr1zCsicMWpAA").is_ok());
/// // The same token is never sent outside the resource.
/// let elsewhere = Url::parse("https://other.example.com/mcp")?;
/// assert!(policy.decide(&resource, &elsewhere, "2YotnFZFEjr1zCsicMWpAA").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudiencePolicy {
    mode: AudienceMode,
    aliases: Vec<String>,
}

impl AudiencePolicy {
    /// A policy with the given mode and no aliases.
    pub fn new(mode: AudienceMode) -> Self {
        Self {
            mode,
            aliases: Vec::new(),
        }
    }

    /// Adds a logical audience (`urn:…`, `api://…`, a client id) that stands for the resource.
    /// Aliases are compared as exact strings (RFC 7519 §4.1.3). Microsoft Entra and Auth0
    /// issue such audiences; without an alias their tokens are refused as unverifiable.
    pub fn with_alias(mut self, alias: impl Into<String>) -> Self {
        self.aliases.push(alias.into());
        self
    }

    /// The mode.
    pub fn mode(&self) -> AudienceMode {
        self.mode
    }

    /// The aliases.
    pub fn aliases(&self) -> &[String] {
        &self.aliases
    }

    /// Decides whether `token`, requested for `resource`, may be sent to `request`.
    pub fn decide(
        &self,
        resource: &ResourceUri,
        request: &Url,
        token: &str,
    ) -> Result<(), Refusal> {
        let audience = match self.mode {
            AudienceMode::ProvenanceOnly => TokenAudience::unread(),
            _ => TokenAudience::inspect(token),
        };
        self.decide_inspected(resource, request, &audience)
    }

    /// The same decision for a token whose audience was inspected earlier (when it was stored).
    pub fn decide_inspected(
        &self,
        resource: &ResourceUri,
        request: &Url,
        audience: &TokenAudience,
    ) -> Result<(), Refusal> {
        let path = resource::check_request(request)
            .map_err(|reason| Refusal::request_refused(resource, request, reason))?;
        self.decide_checked(resource, request, &path, audience)
    }

    /// The decision for a request URL that [`resource::check_request`] accepted, with the
    /// normalized path it returned: the one check serves the resource and every `aud` value.
    pub(crate) fn decide_checked(
        &self,
        resource: &ResourceUri,
        request: &Url,
        path: &str,
        audience: &TokenAudience,
    ) -> Result<(), Refusal> {
        let refusal = |kind| Refusal::new(resource, request, kind);
        match resource.covers_checked(request, path) {
            Coverage::Covered => {}
            Coverage::NotCovered => return Err(refusal(RefusalKind::NotCovered)),
            Coverage::Refused(reason) => return Err(refusal(RefusalKind::RequestRefused(reason))),
        }
        self.decide_audience(resource, request, path, audience)
    }

    /// The `aud` part of the decision, for a request URL that `resource` covers (checked by
    /// the caller: [`decide_checked`](Self::decide_checked), or the route that found `resource`
    /// as the URL's owner).
    pub(crate) fn decide_audience(
        &self,
        resource: &ResourceUri,
        request: &Url,
        path: &str,
        audience: &TokenAudience,
    ) -> Result<(), Refusal> {
        let refusal = |kind| Refusal::new(resource, request, kind);
        if self.mode == AudienceMode::ProvenanceOnly {
            return Ok(());
        }
        let values = match &audience.claim {
            Claim::Unread | Claim::Unreadable | Claim::Absent => {
                return match self.mode {
                    AudienceMode::RequireAud => Err(refusal(RefusalKind::AudienceMissing)),
                    _ => Ok(()),
                };
            }
            Claim::Malformed(why) => return Err(refusal(RefusalKind::MalformedAudience(*why))),
            Claim::Values(values) => values.as_slice(),
        };
        let allowed = values.iter().any(|value| {
            self.aliases.iter().any(|alias| *alias == *value.raw())
                || value.url().is_some_and(|url| {
                    same_as_resource(url, resource)
                        || resource::covers_parsed_checked(url, request, path).is_covered()
                })
        });
        if allowed {
            return Ok(());
        }
        let audiences = values.iter().map(|v| v.raw().to_owned()).collect();
        if values.iter().any(|v| v.url().is_none()) {
            Err(refusal(RefusalKind::AudienceUnverifiable { audiences }))
        } else {
            Err(refusal(RefusalKind::AudienceMismatch { audiences }))
        }
    }
}

/// A token's `aud` claim, read once (ideally when the token is stored) and compared with
/// request URLs later. It holds the audience values, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAudience {
    claim: Claim,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// Not inspected (provenance-only mode).
    Unread,
    Unreadable,
    Absent,
    Malformed(MalformedAud),
    Values(Values),
}

/// The values of a readable `aud`: one (the usual case, held without a list of its own) or
/// more.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Values {
    One(AudValue),
    Many(Box<[AudValue]>),
}

impl Values {
    fn as_slice(&self) -> &[AudValue] {
        match self {
            Self::One(value) => std::slice::from_ref(value),
            Self::Many(values) => values,
        }
    }
}

/// One `aud` value.
#[derive(Debug, Clone)]
enum AudValue {
    /// The text of the resource the token was requested for (its key or its wire form, what
    /// every RFC 8707 server issues): read as that resource, whose parts are the parse of that
    /// text, so a cached token shares them instead of holding a parse of its own.
    Resource {
        resource: ResourceUri,
        /// Whether the text was the wire form (rather than the key).
        wire: bool,
    },
    /// Any other value (boxed: most tokens' values are their resource, and every value takes
    /// the room of the largest kind).
    Other(Box<OtherAud>),
}

/// An `aud` value that is not the token's resource's own text, as received.
#[derive(Debug, Clone)]
struct OtherAud {
    raw: Box<str>,
    /// The value as a resource, when it is an http(s) URL, with one trailing slash removed
    /// (rules §10); `None` for a logical audience.
    url: Option<Parsed>,
}

impl AudValue {
    /// `raw` read as an `aud` value, for a token requested for `resource` (if known).
    fn read(raw: String, resource: Option<&ResourceUri>) -> Self {
        if let Some(resource) = resource {
            let wire = raw == resource.wire();
            // An `aud` value is read without a trailing slash (rules §10); a resource is not.
            if (wire || raw == resource.key()) && !resource.parsed().has_ignored_slash() {
                return Self::Resource {
                    resource: resource.clone(),
                    wire,
                };
            }
        }
        Self::Other(Box::new(OtherAud {
            url: parse_aud_url(&raw),
            raw: raw.into_boxed_str(),
        }))
    }

    /// The value as received.
    fn raw(&self) -> &str {
        match self {
            Self::Resource { resource, wire } if *wire => resource.wire(),
            Self::Resource { resource, .. } => resource.key(),
            Self::Other(other) => &other.raw,
        }
    }

    /// The value as a resource, when it is an http(s) URL.
    fn url(&self) -> Option<&Parsed> {
        match self {
            Self::Resource { resource, .. } => Some(resource.parsed()),
            Self::Other(other) => other.url.as_ref(),
        }
    }
}

/// Values are equal when they were received alike and read alike (however they are held).
impl PartialEq for AudValue {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw() && self.url().map(Parsed::key) == other.url().map(Parsed::key)
    }
}

impl Eq for AudValue {}

/// Whether a URL audience is the resource itself (what every RFC 8707 server issues), so that
/// it covers whatever the resource covers, which the decision has checked before it looks at
/// `aud`; its own coverage need not be computed.
///
/// Both sides keep the `Url` that `url` read back from their canonical key (parse's
/// cross-check makes its parts equal to the crate's), so equal serializations mean equal
/// scheme, host, port, path and query, and coverage reads nothing else. The one difference:
/// an audience's trailing slash is dropped from its path but not from its `Url`, so an equal
/// serialization can also mean the audience is the resource without its trailing slash, which
/// covers more than the resource (rules §10); the answer is the same.
fn same_as_resource(url: &Parsed, resource: &ResourceUri) -> bool {
    url.url.as_str() == resource.as_url().as_str()
}

impl TokenAudience {
    /// Reads the `aud` claim of `token`, without verifying any signature and without keeping
    /// the token. Never fails: a token that is not a readable JWT is recorded as such.
    pub fn inspect(token: &str) -> Self {
        Self::read(token, None)
    }

    /// [`inspect`](Self::inspect) for a token requested for `resource`: an `aud` value that is
    /// the resource's own text is read as the resource (the same reading, shared with it).
    pub(crate) fn inspect_for(token: &str, resource: &ResourceUri) -> Self {
        Self::read(token, Some(resource))
    }

    fn read(token: &str, resource: Option<&ResourceUri>) -> Self {
        let claim = match jwt::read_aud(token) {
            jwt::AudClaim::Unreadable => Claim::Unreadable,
            jwt::AudClaim::Absent => Claim::Absent,
            jwt::AudClaim::Malformed(why) => Claim::Malformed(why),
            jwt::AudClaim::Values(values) => {
                let values: Vec<AudValue> = values
                    .into_iter()
                    .map(|raw| AudValue::read(raw, resource))
                    .collect();
                Claim::Values(match <[AudValue; 1]>::try_from(values) {
                    Ok([one]) => Values::One(one),
                    Err(values) => Values::Many(values.into_boxed_slice()),
                })
            }
        };
        Self { claim }
    }

    /// A token whose `aud` is deliberately not read (provenance-only mode).
    pub(crate) fn unread() -> Self {
        Self {
            claim: Claim::Unread,
        }
    }

    /// The audience values, when the token is a readable JWT with a well-formed `aud`.
    pub fn values(&self) -> Option<Vec<&str>> {
        match &self.claim {
            Claim::Values(values) => Some(values.as_slice().iter().map(AudValue::raw).collect()),
            _ => None,
        }
    }

    /// Whether the token was a readable JWT (with or without `aud`).
    pub fn is_readable_jwt(&self) -> bool {
        matches!(
            self.claim,
            Claim::Absent | Claim::Malformed(_) | Claim::Values(_)
        )
    }
}

/// An http(s) `aud` value canonicalized like a resource, with one trailing slash ignored.
fn parse_aud_url(raw: &str) -> Option<Parsed> {
    let rules = Rules {
        http_on_loopback: true,
        http_anywhere: true,
    };
    let mut parsed = resource::parse_raw(raw, rules).ok()?;
    parsed.trim_trailing_slash();
    Some(parsed)
}

/// Why a token was not handed out for a request. It names the resource, the request URL
/// (without its query, which may carry other secrets) and the audiences found, and never the
/// token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    resource: String,
    request: String,
    kind: RefusalKind,
}

/// The reason inside a [`Refusal`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalKind {
    /// The resource the token was requested for does not cover the request URL.
    NotCovered,
    /// The request URL is refused whatever the resource (userinfo, an ambiguous path).
    RequestRefused(CoverageRefusal),
    /// The token's `aud` names only URLs, and none covers the request URL.
    AudienceMismatch {
        /// The audience values found in the token.
        audiences: Vec<String>,
    },
    /// The token's `aud` holds logical values (`urn:…`, `api://…`) that are not configured as
    /// aliases of the resource, so the crate cannot tell whether they mean it.
    AudienceUnverifiable {
        /// The audience values found in the token.
        audiences: Vec<String>,
    },
    /// The token's `aud` claim is malformed.
    MalformedAudience(MalformedAud),
    /// [`AudienceMode::RequireAud`] is set and the token has no readable `aud`.
    AudienceMissing,
    /// The token cannot be written as an HTTP header value (it contains control characters).
    UnusableToken,
    /// The token's resource covers the request URL, but a longer configured resource covers
    /// it too and so owns it (perhaps at another authorization server): only a token for that
    /// resource may go there.
    OwnedByAnotherResource {
        /// The resource (match key) that owns the request URL.
        owner: String,
    },
    /// The token is for the resource that owns the request URL, but it was issued by an
    /// authorization server the resource no longer uses (its metadata moved it to another,
    /// RFC 9728 §5.2): only tokens of the resource's current server go there.
    IssuedByAnotherServer {
        /// The issuer of the token.
        issuer: String,
        /// The issuer the resource uses now.
        current: String,
    },
}

impl Refusal {
    pub(crate) fn for_kind(resource: &ResourceUri, request: &Url, kind: RefusalKind) -> Self {
        Self::new(resource, request, kind)
    }

    fn new(resource: &ResourceUri, request: &Url, kind: RefusalKind) -> Self {
        Self {
            resource: resource.key().to_owned(),
            request: redacted_url(request),
            kind,
        }
    }

    /// A refusal of the request URL itself (userinfo, an ambiguous path), whatever the token.
    pub(crate) fn request_refused(
        resource: &ResourceUri,
        request: &Url,
        reason: CoverageRefusal,
    ) -> Self {
        Self::new(resource, request, RefusalKind::RequestRefused(reason))
    }

    /// A refusal of the request URL before any resource was chosen for it: no token is
    /// concerned, and [`resource`](Self::resource) is empty.
    pub(crate) fn request_refused_before_routing(request: &Url, reason: CoverageRefusal) -> Self {
        Self {
            resource: String::new(),
            request: redacted_url(request),
            kind: RefusalKind::RequestRefused(reason),
        }
    }

    pub(crate) fn unusable_token(resource: &ResourceUri, request: &Url) -> Self {
        Self::new(resource, request, RefusalKind::UnusableToken)
    }

    /// The resource (match key) the token was requested for; empty when the request URL was
    /// refused before a resource was chosen for it (userinfo, an ambiguous path).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The request URL without userinfo or fragment; a query, which may carry other secrets, is
    /// shown only as `?…`.
    pub fn request(&self) -> &str {
        &self.request
    }

    /// Why the token was refused.
    pub fn kind(&self) -> &RefusalKind {
        &self.kind
    }

    /// The audiences found in the token, if any were read.
    pub fn audiences(&self) -> &[String] {
        match &self.kind {
            RefusalKind::AudienceMismatch { audiences }
            | RefusalKind::AudienceUnverifiable { audiences } => audiences,
            _ => &[],
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (resource, request) = (&self.resource, &self.request);
        match &self.kind {
            RefusalKind::NotCovered => write!(
                f,
                "token for {resource} is refused for {request}, which that resource does not cover; use a token for the resource that covers it"
            ),
            RefusalKind::RequestRefused(reason) if resource.is_empty() => {
                write!(f, "refusing to send a token to {request}: {reason}")
            }
            RefusalKind::RequestRefused(reason) => write!(
                f,
                "refusing to send the token for {resource} to {request}: {reason}"
            ),
            RefusalKind::AudienceMismatch { audiences } => write!(
                f,
                "token for {resource} is only valid for {}; refusing to send it to {request}",
                AudienceList(audiences)
            ),
            RefusalKind::AudienceUnverifiable { audiences } => write!(
                f,
                "token for {resource} has the audience {}, which cannot be checked against {request}; refusing to send it (if that audience stands for {resource}, add it as an alias)",
                AudienceList(audiences)
            ),
            RefusalKind::MalformedAudience(why) => {
                write!(f, "token for {resource} is refused for {request}: {why}")
            }
            RefusalKind::UnusableToken => write!(
                f,
                "token for {resource} cannot be sent to {request}: it is not a valid header value (the authorization server sent a malformed token)"
            ),
            RefusalKind::OwnedByAnotherResource { owner } => write!(
                f,
                "token for {resource} is refused for {request}, which belongs to {owner}, the longest configured resource that covers it; use a token for {owner}"
            ),
            RefusalKind::AudienceMissing => write!(
                f,
                "token for {resource} has no readable aud claim and the audience mode requires one; refusing to send it to {request}"
            ),
            RefusalKind::IssuedByAnotherServer { issuer, current } => write!(
                f,
                "token for {resource} was issued by {issuer:?}, and the resource now uses the authorization server {current:?}; refusing to send it to {request} (get a new token)"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// `"a" or "b"`, escaped and bounded: audiences come from the token, so they are untrusted.
struct AudienceList<'a>(&'a [String]);

impl fmt::Display for AudienceList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 5;
        for (i, audience) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == self.0.len().min(SHOWN) {
                    " or "
                } else {
                    ", "
                })?;
            }
            write!(f, "{:?}", resource::shorten(audience))?;
        }
        if self.0.len() > SHOWN {
            write!(f, " (and {} more)", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// A request URL for messages: scheme, host, port and path; `?…` stands for a query.
pub(crate) fn redacted_url(url: &Url) -> String {
    let mut shown = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        shown.push_str(host);
    }
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(&resource::shorten(url.path()));
    if url.query().is_some() {
        shown.push_str("?…");
    }
    shown
}

#[cfg(test)]
mod tests;
