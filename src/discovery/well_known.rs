//! Well-known metadata URLs, in the order a client tries them.

use url::Url;

use super::guard::shown;
use super::{DiscoveryError, Issuer};

const PROTECTED_RESOURCE: &str = "/.well-known/oauth-protected-resource";
const AUTHORIZATION_SERVER: &str = "/.well-known/oauth-authorization-server";
const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";

/// The protected resource metadata URLs to try for a server URL, in order (MCP 2025-11-25 §4.2;
/// RFC 9728 §3.1): the path-inserted URL, then the root one. One URL when they coincide.
///
/// RFC 9728 §3.1 is followed literally (rules §21): `/.well-known/oauth-protected-resource` goes
/// between the host and the path and query, and only the `/` right after the host is removed.
/// So `https://h/mcp/` gives `https://h/.well-known/oauth-protected-resource/mcp/`, the query is
/// kept after the path, and the fragment and userinfo are never carried over.
///
/// Fails when the URL is not http(s) with a host, or has userinfo. The URLs still have to pass
/// [`check_fetch_url`](crate::discovery::check_fetch_url) before they are fetched.
///
/// ```
/// use audience_cache::discovery::protected_resource_metadata_urls;
/// use url::Url;
///
/// let urls = protected_resource_metadata_urls(&Url::parse("https://mcp.example.com/mcp?tenant=a")?)?;
/// assert_eq!(urls[0].as_str(), "https://mcp.example.com/.well-known/oauth-protected-resource/mcp?tenant=a");
/// assert_eq!(urls[1].as_str(), "https://mcp.example.com/.well-known/oauth-protected-resource");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn protected_resource_metadata_urls(server_url: &Url) -> Result<Vec<Url>, DiscoveryError> {
    let refuse = |reason| DiscoveryError::InvalidServerUrl {
        url: shown(server_url),
        reason,
    };
    if !matches!(server_url.scheme(), "https" | "http") || server_url.host().is_none() {
        return Err(refuse("it is not an http(s) URL with a host"));
    }
    if !server_url.username().is_empty() || server_url.password().is_some() {
        return Err(refuse("it has userinfo"));
    }
    let path = match server_url.path() {
        "/" => "",
        path => path,
    };
    let inserted = at(
        server_url,
        &format!("{PROTECTED_RESOURCE}{path}"),
        server_url.query(),
    );
    let root = at(server_url, PROTECTED_RESOURCE, None);
    Ok(if inserted == root {
        vec![root]
    } else {
        vec![inserted, root]
    })
}

/// The authorization server metadata URLs to try for an issuer, in the MCP 2025-11-25 §4.3
/// order:
///
/// - with a path (`https://auth.example.com/tenant1`): the OAuth URL with the path inserted
///   (RFC 8414 §3.1), the OpenID URL with the path inserted, the OpenID URL appended to the
///   path (OIDC Discovery §4);
/// - without: the OAuth root URL, then the OpenID root URL.
///
/// A terminating `/` of the issuer's path is removed first (RFC 8414 §3.1, OIDC Discovery §4.1).
/// The document's `issuer` must still equal the issuer as given, slash included (see
/// [`AuthorizationServerMetadata::validate`](crate::discovery::AuthorizationServerMetadata::validate)).
///
/// ```
/// use audience_cache::DiscoveryOptions;
/// use audience_cache::discovery::{authorization_server_metadata_urls, Issuer};
///
/// let issuer = Issuer::parse("https://auth.example.com/tenant1/", &DiscoveryOptions::strict())?;
/// let urls: Vec<String> = authorization_server_metadata_urls(&issuer)
///     .iter()
///     .map(|u| u.to_string())
///     .collect();
/// assert_eq!(urls, [
///     "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
///     "https://auth.example.com/.well-known/openid-configuration/tenant1",
///     "https://auth.example.com/tenant1/.well-known/openid-configuration",
/// ]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn authorization_server_metadata_urls(issuer: &Issuer) -> Vec<Url> {
    let url = issuer.as_url();
    let path = url.path();
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return vec![
            at(url, AUTHORIZATION_SERVER, None),
            at(url, OPENID_CONFIGURATION, None),
        ];
    }
    vec![
        at(url, &format!("{AUTHORIZATION_SERVER}{path}"), None),
        at(url, &format!("{OPENID_CONFIGURATION}{path}"), None),
        at(url, &format!("{path}{OPENID_CONFIGURATION}"), None),
    ]
}

/// `base`'s origin with another path and query; no userinfo, no fragment.
fn at(base: &Url, path: &str, query: Option<&str>) -> Url {
    let mut url = base.clone();
    url.set_path(path);
    url.set_query(query);
    url.set_fragment(None);
    // Only fail for URLs without a host, which callers have excluded.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}
