//! Why a discovery URL, document or value was refused.

use std::fmt;

use crate::resource::{CoverageRefusal, ResourceError};
use crate::scope::ScopeError;

/// Why discovery refused a URL or a metadata document.
///
/// Every variant names the reason and quotes the offending value (shortened to 80 characters,
/// shown with Rust's string escaping; userinfo is removed from URLs before they are shown).
/// None of these is transient: retrying the same fetch gives the same document, so the fix is on
/// the server or in the client's configuration, as each message says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The URL is plain http. Discovery uses https (RFC 9728 §7.1, RFC 8414 §6.1); http is
    /// accepted only for a loopback host with
    /// the development switch,
    /// [`TokenCacheBuilder::allow_insecure_http_on_loopback`](crate::cache::TokenCacheBuilder::allow_insecure_http_on_loopback)
    /// (or [`DiscoveryOptions::allow_insecure_http_on_loopback`](crate::discovery::DiscoveryOptions::allow_insecure_http_on_loopback)
    /// for a `Discovery` used alone).
    #[error(
        "refusing to use {url:?}: it is plain http; discovery needs https (plain http only on loopback, for development: TokenCacheBuilder::allow_insecure_http_on_loopback(true), or DiscoveryOptions::allow_insecure_http_on_loopback(true) for a Discovery used alone)"
    )]
    InsecureUrl {
        /// The URL.
        url: String,
    },

    /// The URL's scheme is not http(s) (`javascript:`, `data:`, `file:`, ...).
    #[error("refusing to use {url:?}: only https URLs are fetched")]
    UnsupportedScheme {
        /// The URL.
        url: String,
    },

    /// The URL has userinfo, which disguises the real host (RFC 9110 §4.2.4).
    #[error("refusing to use {url:?}: it has userinfo (user@) before the host")]
    Userinfo {
        /// The URL with the userinfo removed.
        url: String,
    },

    /// The URL has a fragment, which no server sees and metadata URLs never need.
    #[error("refusing to use {url:?}: it has a fragment")]
    Fragment {
        /// The URL.
        url: String,
    },

    /// The URL has no host.
    #[error("refusing to use {url:?}: it has no host")]
    NoHost {
        /// The URL.
        url: String,
    },

    /// The URL's host is a literal address in a range that must not be reached from discovery
    /// (RFC 9728 §7.7; MCP security best practices, SSRF): a cloud metadata service, the local
    /// network, or this machine.
    #[error(
        "refusing to fetch {url:?}: its host is a {class} address; discovery never fetches internal addresses (loopback only for development against servers on this machine: TokenCacheBuilder::allow_insecure_http_on_loopback(true))"
    )]
    PrivateAddress {
        /// The URL.
        url: String,
        /// Which range the address is in.
        class: AddressClass,
    },

    /// A challenge's `resource_metadata` points at another origin than the server that sent it.
    /// Not forbidden by RFC 9728, but refused by default because it lets a server aim the client
    /// at any host (SSRF, phishing pivots).
    #[error(
        "refusing the resource_metadata {metadata_url:?}: it is on another origin than the server {server_url:?} (allow it with DiscoveryOptions::allow_cross_origin_resource_metadata if this server really publishes its metadata elsewhere)"
    )]
    CrossOriginMetadata {
        /// The metadata URL.
        metadata_url: String,
        /// The server URL that was requested.
        server_url: String,
    },

    /// A URL string from a document or challenge cannot be read as a URL.
    #[error("{value:?} is not a usable URL: {reason}")]
    InvalidUrl {
        /// The value as sent.
        value: String,
        /// Why.
        reason: String,
    },

    /// A server URL cannot have well-known URLs built from it.
    #[error("cannot build discovery URLs from {url:?}: {reason}")]
    InvalidServerUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: &'static str,
    },

    /// The protected resource metadata's `resource` is not an acceptable resource identifier.
    #[error(
        "the protected resource metadata names the resource {found:?}, which is refused: {source}"
    )]
    InvalidResource {
        /// The `resource` value as sent.
        found: String,
        /// Why it was refused.
        #[source]
        source: ResourceError,
    },

    /// The protected resource metadata's `resource` does not belong to the URL that was requested
    /// (RFC 9728 §3.3, §7.3; rules §3). Nothing in the document may be used.
    #[error(
        "the protected resource metadata is for {found:?}, which does not match the requested {expected:?} (same origin and a path prefix on a segment boundary, or the same resource in exact mode); the document is ignored (the server's metadata is wrong, or someone else's)"
    )]
    ResourceMismatch {
        /// The URL the client requested.
        expected: String,
        /// The `resource` the document names.
        found: String,
    },

    /// The requested server URL itself is one tokens are never sent to.
    #[error("the server URL {url:?} is refused: {source}")]
    ServerUrlRefused {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: CoverageRefusal,
    },

    /// The protected resource metadata lists no authorization server (MCP 2025-11-25 §4.1).
    #[error(
        "the protected resource metadata for {resource:?} lists no authorization server; configure one for this resource"
    )]
    NoAuthorizationServer {
        /// The resource.
        resource: String,
    },

    /// An issuer identifier is not an acceptable https URL (RFC 8414 §2).
    #[error(
        "the issuer {issuer:?} is refused (issuers follow the resource identifier rules): {source}"
    )]
    InvalidIssuer {
        /// The issuer as given.
        issuer: String,
        /// Why.
        #[source]
        source: ResourceError,
    },

    /// An issuer identifier has a query, which RFC 8414 §2 forbids.
    #[error("the issuer {issuer:?} has a query; RFC 8414 issuers have none")]
    IssuerHasQuery {
        /// The issuer as given.
        issuer: String,
    },

    /// An authorization server listed in protected resource metadata cannot be used.
    #[error("the authorization server {issuer:?} listed for this resource is refused: {source}")]
    UnusableAuthorizationServer {
        /// The issuer as listed.
        issuer: String,
        /// Why.
        #[source]
        source: Box<DiscoveryError>,
    },

    /// The authorization server metadata names another issuer than the one its URL was built
    /// from (RFC 8414 §3.3; OIDC Discovery §4.3). Compared code point by code point: no case
    /// folding, no slash or port normalization. Nothing in the document may be used.
    #[error(
        "the authorization server metadata names the issuer {found:?}, not {expected:?}; the document is ignored (issuers must match exactly)"
    )]
    IssuerMismatch {
        /// The issuer the metadata URL was built from.
        expected: String,
        /// The `issuer` in the document.
        found: String,
    },

    /// A required endpoint is missing from authorization server metadata.
    #[error("the authorization server metadata has no {field}")]
    MissingEndpoint {
        /// The metadata member.
        field: &'static str,
    },

    /// An endpoint in authorization server metadata is refused.
    #[error("the authorization server metadata's {field} is refused: {source}")]
    InvalidEndpoint {
        /// The metadata member.
        field: &'static str,
        /// Why.
        #[source]
        source: Box<DiscoveryError>,
    },

    /// The authorization server does not advertise PKCE with S256. MCP 2025-11-25 §11.4: refuse
    /// to run the authorization code flow (an absent `code_challenge_methods_supported` counts as
    /// no support).
    #[error(
        "the authorization server {issuer:?} does not advertise PKCE S256 (code_challenge_methods_supported: {offered}); refusing the authorization code flow"
    )]
    PkceUnsupported {
        /// The issuer.
        issuer: String,
        /// What the server advertised, or `absent`.
        offered: String,
    },

    /// `scopes_supported` holds a value that is not a scope (RFC 6749 §3.3).
    #[error("the metadata's scopes_supported is refused: {source}")]
    InvalidScopesSupported {
        /// Why.
        #[source]
        source: ScopeError,
    },

    /// A metadata document is not the JSON object it should be.
    #[error("the {document} is not valid: {reason}")]
    InvalidDocument {
        /// Which document.
        document: &'static str,
        /// The JSON parser's reason (control characters escaped, shortened).
        reason: String,
    },

    /// A metadata document is larger than the crate reads.
    #[error("the {document} is {len} bytes long; the limit is {max} bytes")]
    DocumentTooLarge {
        /// Which document.
        document: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A protected resource metadata document was served at a URL that is not its resource's
    /// own well-known URL, and (when a challenge named it) is not for exactly the URL requested
    /// (RFC 9728 §3.3), so it could be speaking for a resource it does not belong to (another
    /// tenant's path, or the whole origin).
    #[error(
        "the protected resource metadata served at {metadata_url:?} is for {resource:?}, whose metadata lives elsewhere; the document is ignored (the server should serve each resource's metadata at that resource's well-known URL, or name in its challenge a document for exactly the URL requested)"
    )]
    MetadataLocation {
        /// Where the document was served (without query).
        metadata_url: String,
        /// The resource it names.
        resource: String,
    },

    /// The protected resource metadata moved the resource to another authorization server
    /// again within one request, after a move that request already followed (RFC 9728 §5.2):
    /// a server switching between authorization servers is not followed around in a loop.
    #[error(
        "the protected resource metadata of {resource:?} moved it from the authorization server {from:?} to {to:?} after {limit} move(s) in this request; not followed (a server switching between authorization servers), the request is not sent again. The resource stays at {from:?}; the next request follows one move again. If this repeats, the server's metadata (authorization_servers) is unstable"
    )]
    AuthorizationServerMovedAgain {
        /// The resource (wire form).
        resource: String,
        /// The authorization server the resource was moved to by the first move.
        from: String,
        /// The one the metadata names now.
        to: String,
        /// The most moves followed in one request.
        limit: usize,
    },

    /// Protected resource metadata fetched again for a resource (to see whether its
    /// authorization server changed) describes another resource (RFC 9728 §3.3): nothing in
    /// it is used.
    #[error(
        "the protected resource metadata fetched again for {resource:?} describes {metadata_resource:?}; its authorization_servers are not followed (RFC 9728 §3.3: the metadata must describe the resource it is fetched for)"
    )]
    ResourceChanged {
        /// The resource the client uses (wire form).
        resource: String,
        /// The `resource` the document names.
        metadata_resource: String,
    },

    /// None of the well-known (or challenge) URLs served the document.
    #[error(
        "no {document} was found; tried {tried} (check the server URL, or configure the resource and authorization server by hand)"
    )]
    NotFound {
        /// Which document.
        document: &'static str,
        /// The URLs tried and what each answered.
        tried: String,
    },
}

/// The kind of internal address a URL's host was refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`, `localhost` and `*.localhost` (RFC 6761). Allowed only with the
    /// development option.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918), `fec0::/10` (old site-local).
    Private,
    /// `169.254.0.0/16` (where cloud metadata services live) and `fe80::/10`.
    LinkLocal,
    /// `fc00::/7` (RFC 4193).
    UniqueLocal,
    /// `0.0.0.0/8` and `::`.
    Unspecified,
    /// `100.64.0.0/10` (RFC 6598, carrier-grade NAT).
    SharedAddressSpace,
    /// `224.0.0.0/4` and `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `240.0.0.0/4`.
    Reserved,
    /// An IPv6 address that carries an IPv4 address (IPv4-mapped `::ffff:0:0/96`,
    /// IPv4-compatible `::/96`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`,
    /// Teredo `2001::/32`): the IPv4 address actually reached is hidden.
    EmbeddedIpv4,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::Private => "private-network",
            Self::LinkLocal => "link-local",
            Self::UniqueLocal => "unique-local",
            Self::Unspecified => "unspecified",
            Self::SharedAddressSpace => "shared (carrier-grade NAT)",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::EmbeddedIpv4 => "IPv4-embedding IPv6",
        })
    }
}
