//! MCP discovery (RFC 9728, RFC 8414, OpenID Connect Discovery, MCP 2025-11-25 §4): which URLs
//! to fetch, whether they may be fetched, fetching them ([`Discovery`]), and whether the
//! documents they return may be used. Discovery knows nothing of the cache or of the HTTP
//! layer: it hands back a [`Discovered`] resource and authorization server, and the layers
//! above decide which client to use there.
//!
//! ```text
//! 401 + WWW-Authenticate ──▶ Challenges::select ──▶ resource_metadata? ──▶ check_resource_metadata_url
//!                                                        │ none
//!                                                        ▼
//!                                  protected_resource_metadata_urls ──▶ check_fetch_url
//! PRM document ──▶ ProtectedResourceMetadata::validate(server URL) ──▶ resource + issuers
//! issuer ──▶ authorization_server_metadata_urls ──▶ check_fetch_url
//! AS document ──▶ AuthorizationServerMetadata::validate(issuer) ──▶ endpoints, PKCE check
//!
//! 401 to a discovered resource's token ──▶ recheck: the PRM fetched again, validated as above,
//!     same resource? ──▶ still lists the issuer in use? ──▶ no: the new issuer, as above
//! ```
//!
//! [`Discovery`] is the only part that opens connections (a reqwest client of its own, with no
//! redirects, a timeout, a size cap and a small cache of documents); the functions and
//! document types are pure. Every URL from a server goes through [`check_fetch_url`] before it
//! is fetched, and every document is validated before any of it is used.

mod authorization_server;
mod discovered;
mod fetch;
mod guard;
mod issuer;
mod protected_resource;
mod recheck;
mod well_known;

use serde::de::DeserializeOwned;

pub use crate::error::{AddressClass, DiscoveryError};
pub use authorization_server::{AuthorizationServerMetadata, ValidatedAuthorizationServer};
pub use discovered::Discovered;
pub use fetch::Discovery;
pub(crate) use guard::address_class;
pub use guard::{check_fetch_url, check_resource_metadata_url};
pub use issuer::Issuer;
pub use protected_resource::{ProtectedResourceMetadata, ValidatedProtectedResource};
pub use well_known::{authorization_server_metadata_urls, protected_resource_metadata_urls};

use crate::resource::ParseOptions;
use crate::resource::shorten;

/// How a protected resource metadata `resource` must relate to the URL the client requested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceMatch {
    /// The default (rules §3): same scheme, host and port, and the `resource` path is a prefix of the
    /// requested path on a segment boundary (draft-mcguinness-oauth-rfc9728bis). This is what
    /// MCP's root well-known fallback needs (`resource: https://h` for `https://h/mcp`).
    #[default]
    Prefix,
    /// The `resource` must have the same match key as the requested URL (RFC 9728 §3.3 read
    /// strictly). Breaks servers that publish one metadata document for a whole origin.
    Exact,
}

/// The rules discovery applies. The default is strict; each relaxation is named for what it
/// gives up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryOptions {
    loopback: bool,
    cross_origin_resource_metadata: bool,
    resource_match: ResourceMatch,
    no_2025_03_26_fallback: bool,
}

impl DiscoveryOptions {
    /// Strict options: https only, no loopback or internal addresses, `resource_metadata` only
    /// on the server's origin, prefix matching of `resource`, the MCP 2025-03-26 fallback for
    /// servers without protected resource metadata. The same as `default()`.
    pub fn strict() -> Self {
        Self::default()
    }

    /// The development switch, named as on
    /// [`TokenCacheBuilder::allow_insecure_http_on_loopback`](crate::cache::TokenCacheBuilder::allow_insecure_http_on_loopback):
    /// also accept loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`) for metadata, issuers,
    /// endpoints and resources, over https or plain http. For development against servers you
    /// run on this machine; anything else on the machine could answer there, and plain http can
    /// be read on the way. Other internal addresses stay refused.
    ///
    /// A `Discovery` given to
    /// [`AuthorizedClient::with_discovery`](crate::http::AuthorizedClient::with_discovery) (or the
    /// middleware's) follows the cache's switch instead, so that it is set once, on the
    /// `TokenCacheBuilder`.
    pub fn allow_insecure_http_on_loopback(mut self, allow: bool) -> Self {
        self.loopback = allow;
        self
    }

    /// Whether loopback hosts (and plain http on them) are accepted.
    pub fn allows_insecure_http_on_loopback(&self) -> bool {
        self.loopback
    }

    /// Accept a challenge's `resource_metadata` on another origin than the server's. RFC 9728
    /// allows it; it is off by default because a server could then point the client at any host
    /// (the document's `resource` is still checked against the server URL either way).
    pub fn allow_cross_origin_resource_metadata(mut self, allow: bool) -> Self {
        self.cross_origin_resource_metadata = allow;
        self
    }

    /// Whether a cross-origin `resource_metadata` is accepted.
    pub fn allows_cross_origin_resource_metadata(&self) -> bool {
        self.cross_origin_resource_metadata
    }

    /// Whether a server without protected resource metadata is treated the MCP 2025-03-26 way
    /// (on by default): its origin is its authorization server (RFC 8414 metadata there, else
    /// the default `/authorize`, `/token` and `/register` endpoints), and the server URL is the
    /// resource. This gives the server no new power: it can only name itself, and a
    /// pre-registered client is still only used at the issuers it lists. Turn it off to require
    /// protected resource metadata (MCP 2025-06-18 and later).
    pub fn allow_2025_03_26_fallback(mut self, allow: bool) -> Self {
        self.no_2025_03_26_fallback = !allow;
        self
    }

    /// Whether the MCP 2025-03-26 fallback is on.
    pub fn allows_2025_03_26_fallback(&self) -> bool {
        !self.no_2025_03_26_fallback
    }

    /// How a metadata `resource` must match the requested URL.
    pub fn with_resource_match(mut self, mode: ResourceMatch) -> Self {
        self.resource_match = mode;
        self
    }

    /// The resource match mode.
    pub fn resource_match(&self) -> ResourceMatch {
        self.resource_match
    }

    /// The options used to parse resources and issuers: strict, or http on loopback when
    /// [`allow_insecure_http_on_loopback`](Self::allow_insecure_http_on_loopback) is on.
    pub fn parse_options(&self) -> ParseOptions {
        ParseOptions::strict().allow_insecure_http_on_loopback(self.loopback)
    }
}

/// The largest metadata document read: 64 KiB (real ones are a few KiB).
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

fn from_json<T: DeserializeOwned>(
    body: &[u8],
    document: &'static str,
) -> Result<T, DiscoveryError> {
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(DiscoveryError::DocumentTooLarge {
            document,
            len: body.len(),
            max: MAX_DOCUMENT_BYTES,
        });
    }
    serde_json::from_slice(body).map_err(|e| DiscoveryError::InvalidDocument {
        document,
        reason: shorten(&escape_controls(&e.to_string())),
    })
}

/// Server text for an error message: control characters escaped, the rest kept.
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
