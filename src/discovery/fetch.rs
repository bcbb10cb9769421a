//! MCP discovery over the network: from a server URL (and, when there is one, its 401) to a
//! validated resource identifier and authorization server, with every URL checked before it is
//! fetched, bodies bounded, no redirects followed, and documents cached as `Cache-Control`
//! allows (bounded).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use url::Url;

use super::discovered::Discovered;
use super::{
    AuthorizationServerMetadata, DiscoveryError, DiscoveryOptions, Issuer,
    ProtectedResourceMetadata, ValidatedAuthorizationServer, ValidatedProtectedResource,
    authorization_server_metadata_urls, check_fetch_url, check_resource_metadata_url,
    protected_resource_metadata_urls,
};
use crate::challenge::{Challenges, TokenType};
use crate::error::Error;
use crate::resource::ResourceUri;
use crate::scope::ScopeSet;

/// The largest metadata body read.
const MAX_BODY: usize = 64 * 1024;
/// How long a document is kept when the server says nothing (and the most it may ask for).
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
const MAX_MAX_AGE: Duration = Duration::from_secs(3600);

/// Fetches and validates discovery documents.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use audience_cache::{Discovery, DiscoveryOptions};
/// use url::Url;
///
/// let discovery = Discovery::new(DiscoveryOptions::strict())?;
/// let found = discovery.discover(&Url::parse("https://mcp.example.com/mcp")?).await?;
/// println!("{} is protected by {}", found.resource().wire(), found.authorization_server().issuer().as_str());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Discovery {
    http: reqwest::Client,
    options: DiscoveryOptions,
    documents: moka::future::Cache<Url, Arc<Document>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("options", &self.options)
            .field("cached_documents", &self.documents.entry_count())
            .finish()
    }
}

/// A fetched body and how long it may be reused.
struct Document {
    body: Vec<u8>,
    max_age: Duration,
}

/// The outcome of fetching one candidate URL.
enum Fetched {
    Found(Arc<Document>),
    /// Not there (404, another status, a redirect): try the next candidate.
    Missing(String),
}

impl Discovery {
    /// A discovery client with its own HTTP client (no redirects, 10 s timeout).
    pub fn new(options: DiscoveryOptions) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| {
                Error::Configuration(crate::error::BuildError::HttpClient {
                    reason: e.to_string(),
                })
            })?;
        let documents = moka::future::Cache::builder()
            .max_capacity(256)
            .expire_after(DocumentExpiry)
            .build();
        Ok(Self {
            http,
            options,
            documents,
        })
    }

    /// The options.
    pub fn options(&self) -> &DiscoveryOptions {
        &self.options
    }

    /// This discovery with the development switch set to `allow` (sharing its HTTP client
    /// and documents).
    pub(crate) fn with_insecure_http_on_loopback(&self, allow: bool) -> Self {
        let mut discovery = self.clone();
        discovery.options = discovery.options.allow_insecure_http_on_loopback(allow);
        discovery
    }

    /// Discovers from nothing but the server URL: an unauthenticated GET, and its 401's
    /// challenge (or the well-known URLs when it has none).
    pub async fn discover(&self, server_url: &Url) -> Result<Discovered, Error> {
        check_fetch_url(server_url, &self.options).map_err(Error::Discovery)?;
        let response = self
            .http
            .get(server_url.clone())
            .send()
            .await
            .map_err(|e| crate::error::request_error(&e))?;
        self.discover_from(server_url, response.headers()).await
    }

    /// Discovers from a response the caller already has (usually a 401): its
    /// `WWW-Authenticate` `resource_metadata` is used when present (same origin as the server
    /// unless the options allow otherwise), else the well-known URLs in the MCP order.
    pub async fn discover_from(
        &self,
        server_url: &Url,
        headers: &HeaderMap,
    ) -> Result<Discovered, Error> {
        self.discover_preferring(server_url, headers, &|_| true)
            .await
    }

    /// [`discover_from`](Self::discover_from), taking from the metadata's
    /// `authorization_servers` the first issuer for which `usable` is true and whose metadata
    /// validates, and only when there is none the first whose metadata validates (which the
    /// caller will then refuse with the reason). A server listing `[hostile, trusted]` is
    /// served by `trusted`.
    pub(crate) async fn discover_preferring(
        &self,
        server_url: &Url,
        headers: &HeaderMap,
        usable: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Discovered, Error> {
        let (candidates, named, challenge_scope) = self.metadata_candidates(server_url, headers)?;
        let found = match self
            .protected_resource(server_url, &candidates, named)
            .await
        {
            Ok(found) => found,
            // Only for a server that names no metadata: one that names a document that is not
            // there is broken, not old.
            Err(Error::Discovery(DiscoveryError::NotFound { .. }))
                if !named && self.options.allows_2025_03_26_fallback() =>
            {
                return self.discover_2025_03_26(server_url, challenge_scope).await;
            }
            Err(error) => return Err(error),
        };
        let authorization_server = self.authorization_server(&found, usable).await?;
        let scopes = challenge_scope
            .or_else(|| found.scopes_supported().cloned())
            .unwrap_or_default();
        Ok(Discovered {
            protected_resource: found,
            authorization_server,
            scopes,
            fallback: false,
        })
    }

    /// Where to look for the protected resource metadata of `server_url`, given its 401's
    /// headers: the challenge's `resource_metadata` (checked) when it names one, else the
    /// well-known URLs in the MCP order; whether the challenge named it; the challenge's
    /// `scope`.
    pub(super) fn metadata_candidates(
        &self,
        server_url: &Url,
        headers: &HeaderMap,
    ) -> Result<(Vec<Url>, bool, Option<ScopeSet>), Error> {
        let challenges = Challenges::parse(headers.get_all(WWW_AUTHENTICATE)).ok();
        let selected = challenges
            .as_ref()
            .and_then(|c| c.select(server_url, TokenType::Bearer).ok());
        let challenge_scope = selected.as_ref().and_then(|s| s.scope().cloned());
        let named = selected.as_ref().and_then(|s| s.resource_metadata());
        let candidates = match named {
            Some(url) => {
                check_resource_metadata_url(url, server_url, &self.options)
                    .map_err(Error::Discovery)?;
                vec![url.clone()]
            }
            None => protected_resource_metadata_urls(server_url).map_err(Error::Discovery)?,
        };
        Ok((candidates, named.is_some(), challenge_scope))
    }

    /// Drops the cached copies of `urls`: the next fetch asks the server.
    pub(super) async fn forget_documents(&self, urls: &[Url]) {
        for url in urls {
            self.documents.invalidate(url).await;
        }
    }

    /// MCP 2025-03-26 (for servers that publish no protected resource metadata): the
    /// authorization server is the server's own origin (its "authorization base URL"), found
    /// through its RFC 8414 metadata there, or at the default `/authorize`, `/token` and
    /// `/register` endpoints when there is none. The resource is the server URL itself. The
    /// origin can only name itself here, so a client registered elsewhere is never sent to it;
    /// a metadata document that is there still has to name the origin as its `issuer`.
    async fn discover_2025_03_26(
        &self,
        server_url: &Url,
        challenge_scope: Option<ScopeSet>,
    ) -> Result<Discovered, Error> {
        let origin = server_url.origin().ascii_serialization();
        let mut resource = server_url.clone();
        resource.set_query(None);
        resource.set_fragment(None);
        let document = ProtectedResourceMetadata {
            resource: resource.to_string(),
            authorization_servers: vec![origin.clone()],
            ..ProtectedResourceMetadata::default()
        };
        let protected_resource = document
            .validate(server_url, &self.options)
            .map_err(Error::Discovery)?;
        let issuer = Issuer::parse(&origin, &self.options).map_err(Error::Discovery)?;
        let authorization_server = match self.authorization_server_of(&issuer).await {
            Ok(server) => server,
            Err(Error::Discovery(DiscoveryError::NotFound { .. })) => {
                let endpoint = |path: &str| Some(format!("{origin}{path}"));
                AuthorizationServerMetadata {
                    issuer: origin.clone(),
                    authorization_endpoint: endpoint("/authorize"),
                    token_endpoint: endpoint("/token"),
                    registration_endpoint: endpoint("/register"),
                    response_types_supported: Some(vec!["code".to_owned()]),
                    // 2025-03-26 made PKCE mandatory for every client and server.
                    code_challenge_methods_supported: Some(vec!["S256".to_owned()]),
                    ..AuthorizationServerMetadata::default()
                }
                .validate(&issuer, &self.options)
                .map_err(Error::Discovery)?
            }
            Err(error) => return Err(error),
        };
        tracing::info!(
            server = %crate::audience::redacted_url(server_url),
            issuer = %origin,
            "no protected resource metadata: using the server's origin as its authorization server (MCP 2025-03-26)"
        );
        Ok(Discovered {
            protected_resource,
            authorization_server,
            scopes: challenge_scope.unwrap_or_default(),
            fallback: true,
        })
    }

    pub(super) async fn protected_resource(
        &self,
        server_url: &Url,
        candidates: &[Url],
        named_by_challenge: bool,
    ) -> Result<ValidatedProtectedResource, Error> {
        let mut misses = Vec::new();
        for candidate in candidates {
            match self.fetch(candidate).await? {
                Fetched::Found(document) => {
                    // A document that is there but wrong is an error, not a reason to look on.
                    let metadata = ProtectedResourceMetadata::from_json(&document.body)
                        .map_err(Error::Discovery)?;
                    let validated = metadata
                        .validate(server_url, &self.options)
                        .map_err(Error::Discovery)?;
                    let requested = named_by_challenge.then(|| {
                        ResourceUri::parse_with(server_url.as_str(), &self.options.parse_options())
                    });
                    check_location(candidate, &validated, requested.and_then(Result::ok))?;
                    return Ok(validated);
                }
                Fetched::Missing(why) => misses.push(format!("{candidate}: {why}")),
            }
        }
        Err(Error::Discovery(DiscoveryError::NotFound {
            document: "protected resource metadata",
            tried: misses.join("; "),
        }))
    }

    pub(super) async fn authorization_server(
        &self,
        protected_resource: &ValidatedProtectedResource,
        usable: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<ValidatedAuthorizationServer, Error> {
        let mut last = None;
        let issuers = protected_resource.authorization_servers();
        let (preferred, others): (Vec<_>, Vec<_>) =
            issuers.iter().partition(|issuer| usable(issuer.as_str()));
        for issuer in preferred.into_iter().chain(others) {
            match self.authorization_server_of(issuer).await {
                Ok(server) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(
            last.unwrap_or(Error::Discovery(DiscoveryError::NoAuthorizationServer {
                resource: protected_resource.resource().wire().to_owned(),
            })),
        )
    }

    /// RFC 8414 / OpenID Connect discovery in the MCP 2025-11-25 §4.3 order; the document's
    /// `issuer` must be the issuer the URL was built from.
    pub async fn authorization_server_of(
        &self,
        issuer: &Issuer,
    ) -> Result<ValidatedAuthorizationServer, Error> {
        let mut misses = Vec::new();
        for candidate in authorization_server_metadata_urls(issuer) {
            match self.fetch(&candidate).await? {
                Fetched::Found(document) => {
                    let metadata = AuthorizationServerMetadata::from_json(&document.body)
                        .map_err(Error::Discovery)?;
                    return metadata
                        .validate(issuer, &self.options)
                        .map_err(Error::Discovery);
                }
                Fetched::Missing(why) => misses.push(format!("{candidate}: {why}")),
            }
        }
        Err(Error::Discovery(DiscoveryError::NotFound {
            document: "authorization server metadata",
            tried: misses.join("; "),
        }))
    }

    async fn fetch(&self, url: &Url) -> Result<Fetched, Error> {
        check_fetch_url(url, &self.options).map_err(Error::Discovery)?;
        if let Some(document) = self.documents.get(url).await {
            return Ok(Fetched::Found(document));
        }
        let mut response = self
            .http
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| crate::error::request_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Ok(Fetched::Missing(format!("HTTP {}", status.as_u16())));
        }
        let max_age = max_age(response.headers());
        let body = read_bounded(&mut response).await?;
        let document = Arc::new(Document {
            body,
            max_age: max_age.unwrap_or(DEFAULT_MAX_AGE),
        });
        if max_age != Some(Duration::ZERO) {
            self.documents.insert(url.clone(), document.clone()).await;
        }
        Ok(Fetched::Found(document))
    }
}

impl Discovery {
    /// POSTs a JSON body (a dynamic client registration, RFC 7591 §3.1) to a URL that passes
    /// the same checks as metadata URLs, without following redirects; the status and the body
    /// (at most 64 KiB).
    pub(crate) async fn post_json(
        &self,
        url: &Url,
        body: &serde_json::Value,
    ) -> Result<(http::StatusCode, Vec<u8>), Error> {
        check_fetch_url(url, &self.options).map_err(Error::Discovery)?;
        let mut response = self
            .http
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .json(body)
            .send()
            .await
            .map_err(|e| crate::error::request_error(&e))?;
        let status = response.status();
        Ok((status, read_bounded(&mut response).await?))
    }
}

/// A response body of at most 64 KiB.
async fn read_bounded(response: &mut reqwest::Response) -> Result<Vec<u8>, Error> {
    if let Some(len) = response.content_length().filter(|&n| n > MAX_BODY as u64) {
        return Err(too_large(usize::try_from(len).unwrap_or(usize::MAX)));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| crate::error::request_error(&e))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large(body.len() + chunk.len()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// RFC 9728 §3.3: a document fetched from a well-known URL must describe the resource whose
/// own well-known URL that is. One that a challenge named (`resource_metadata`: any location
/// on the server's origin) must be served there too, or describe exactly the URL requested
/// (`requested`, the requested URL as a resource when a challenge named the document).
/// Otherwise a document served for `/tenant-b/mcp` could claim the whole origin and take over
/// `/tenant-a` (prefix matching alone would accept it).
fn check_location(
    served_at: &Url,
    validated: &ValidatedProtectedResource,
    requested: Option<ResourceUri>,
) -> Result<(), Error> {
    let own = protected_resource_metadata_urls(validated.resource().as_url())
        .map_err(Error::Discovery)?;
    if own.first() == Some(served_at) || requested.as_ref() == Some(validated.resource()) {
        return Ok(());
    }
    Err(Error::Discovery(DiscoveryError::MetadataLocation {
        metadata_url: crate::audience::redacted_url(served_at),
        resource: validated.resource().wire().to_owned(),
    }))
}

fn too_large(len: usize) -> Error {
    Error::Discovery(DiscoveryError::DocumentTooLarge {
        document: "metadata document",
        len,
        max: MAX_BODY,
    })
}

/// `Cache-Control`: `no-store` or `no-cache` mean zero; `max-age=N` is bounded to an hour.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(seconds) = lower.strip_prefix("max-age=")
                && let Ok(seconds) = seconds.trim_matches('"').parse::<u64>()
            {
                found = Some(Duration::from_secs(seconds).min(MAX_MAX_AGE));
            }
        }
    }
    found
}

struct DocumentExpiry;

impl moka::Expiry<Url, Arc<Document>> for DocumentExpiry {
    fn expire_after_create(
        &self,
        _key: &Url,
        document: &Arc<Document>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(document.max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(CACHE_CONTROL, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn cache_control_is_honoured_and_bounded() {
        assert_eq!(max_age(&headers(&[])), None);
        assert_eq!(
            max_age(&headers(&["public, max-age=60"])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age(&headers(&["max-age=999999"])), Some(MAX_MAX_AGE));
        assert_eq!(
            max_age(&headers(&["max-age=60", "no-store"])),
            Some(Duration::ZERO)
        );
        assert_eq!(max_age(&headers(&["max-age=abc"])), None);
    }
}
