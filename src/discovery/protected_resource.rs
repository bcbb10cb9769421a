//! RFC 9728 protected resource metadata and its validation against the requested URL.

use serde::{Deserialize, Serialize};
use url::Url;

use super::guard::{check_fetch_url, shown};
use super::{DiscoveryError, DiscoveryOptions, Issuer, ResourceMatch, from_json};
use crate::resource::{Coverage, ResourceUri};
use crate::scope::ScopeSet;

/// An RFC 9728 §2 protected resource metadata document, as sent. Unknown members are ignored
/// (RFC 9728 §3.2); a repeated member or a member of the wrong JSON type makes the document
/// invalid. Nothing here is checked until [`validate`](Self::validate).
///
/// `signed_metadata` (RFC 9728 §2.2) is not supported and is ignored, so signed values never
/// override plain ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProtectedResourceMetadata {
    /// The protected resource's resource identifier (REQUIRED).
    pub resource: String,
    /// Issuer identifiers of the authorization servers that issue tokens for this resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    /// Scopes the resource is willing to disclose (not an invitation to request them all,
    /// RFC 9728 §7.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// How bearer tokens may be presented: `header`, `body`, `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_methods_supported: Option<Vec<String>>,
    /// The resource's JWK set URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// A human-readable name (untrusted text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// A page with developer documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_documentation: Option<String>,
    /// A page with the data-use policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_policy_uri: Option<String>,
    /// A page with the terms of service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_tos_uri: Option<String>,
    /// JWS algorithms the resource accepts for signed requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_signing_alg_values_supported: Option<Vec<String>>,
    /// Whether tokens must be mutual-TLS bound (RFC 8705).
    #[serde(default)]
    pub tls_client_certificate_bound_access_tokens: bool,
    /// RFC 9396 authorization details types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details_types_supported: Option<Vec<String>>,
    /// JWS algorithms accepted for DPoP proofs (RFC 9449).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// Whether tokens must be DPoP-bound (RFC 9449).
    #[serde(default)]
    pub dpop_bound_access_tokens_required: bool,
}

impl ProtectedResourceMetadata {
    /// Reads a metadata document (at most 64 KiB).
    pub fn from_json(body: &[u8]) -> Result<Self, DiscoveryError> {
        from_json(body, "protected resource metadata")
    }

    /// Validates the document against `server_url`, the URL the client requested (whether the
    /// document came from the well-known URL or from a challenge's `resource_metadata`), and
    /// returns the values a client may use.
    ///
    /// - `resource` must be an acceptable resource identifier
    ///   ([`ResourceUri::from_metadata`], with the options' [`ParseOptions`](crate::resource::ParseOptions)):
    ///   its wire form stays the document's string verbatim (rules §1).
    /// - [`ResourceMatch::Prefix`] (the default, rules §3): `resource` must cover `server_url` (same
    ///   scheme, host and port; path prefix on a segment boundary). [`ResourceMatch::Exact`]:
    ///   the same match key (RFC 9728 §3.3 read strictly).
    /// - At least one authorization server (MCP 2025-11-25 §4.1), each a valid [`Issuer`] that
    ///   passes [`check_fetch_url`]. Exact duplicates are dropped; order is kept.
    /// - `scopes_supported`, when present, must be scope tokens.
    ///
    /// Any failure means nothing in the document may be used (RFC 9728 §3.3).
    ///
    /// ```
    /// use audience_cache::DiscoveryOptions;
    /// use audience_cache::discovery::ProtectedResourceMetadata;
    /// use url::Url;
    ///
    /// let document = ProtectedResourceMetadata::from_json(br#"{
    ///     "resource": "https://mcp.example.com/",
    ///     "authorization_servers": ["https://auth.example.com"]
    /// }"#)?;
    /// let server = Url::parse("https://mcp.example.com/mcp")?;
    /// let valid = document.validate(&server, &DiscoveryOptions::strict())?;
    /// assert_eq!(valid.resource().wire(), "https://mcp.example.com/");
    /// assert_eq!(valid.authorization_servers()[0].as_str(), "https://auth.example.com");
    ///
    /// let other = Url::parse("https://api.example.com/mcp")?;
    /// assert!(document.validate(&other, &DiscoveryOptions::strict()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate(
        &self,
        server_url: &Url,
        options: &DiscoveryOptions,
    ) -> Result<ValidatedProtectedResource, DiscoveryError> {
        let parse_options = options.parse_options();
        let resource =
            ResourceUri::from_metadata(&self.resource, &parse_options).map_err(|source| {
                DiscoveryError::InvalidResource {
                    found: crate::resource::shorten(&self.resource),
                    source,
                }
            })?;
        let mismatch = || DiscoveryError::ResourceMismatch {
            expected: shown(server_url),
            found: crate::resource::shorten(&self.resource),
        };
        match options.resource_match {
            ResourceMatch::Prefix => match resource.covers(server_url) {
                Coverage::Covered => {}
                Coverage::Refused(source) => {
                    return Err(DiscoveryError::ServerUrlRefused {
                        url: shown(server_url),
                        source,
                    });
                }
                _ => return Err(mismatch()),
            },
            ResourceMatch::Exact => {
                let requested = ResourceUri::parse_with(server_url.as_str(), &parse_options)
                    .map_err(|_| mismatch())?;
                if requested != resource {
                    return Err(mismatch());
                }
            }
        }
        let mut authorization_servers: Vec<Issuer> = Vec::new();
        for listed in &self.authorization_servers {
            let unusable = |source| DiscoveryError::UnusableAuthorizationServer {
                issuer: crate::resource::shorten(listed),
                source: Box::new(source),
            };
            let issuer = Issuer::parse(listed, options).map_err(unusable)?;
            check_fetch_url(issuer.as_url(), options).map_err(unusable)?;
            if !authorization_servers.contains(&issuer) {
                authorization_servers.push(issuer);
            }
        }
        if authorization_servers.is_empty() {
            return Err(DiscoveryError::NoAuthorizationServer {
                resource: resource.wire().to_owned(),
            });
        }
        let scopes_supported = self
            .scopes_supported
            .as_ref()
            .map(ScopeSet::from_items)
            .transpose()
            .map_err(|source| DiscoveryError::InvalidScopesSupported { source })?;
        Ok(ValidatedProtectedResource {
            resource,
            authorization_servers,
            scopes_supported,
            metadata: self.clone(),
        })
    }
}

/// Protected resource metadata that passed [`ProtectedResourceMetadata::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedProtectedResource {
    resource: ResourceUri,
    authorization_servers: Vec<Issuer>,
    scopes_supported: Option<ScopeSet>,
    metadata: ProtectedResourceMetadata,
}

impl ValidatedProtectedResource {
    /// The resource: the RFC 8707 `resource` to request tokens for (its wire form is the
    /// document's string verbatim) and the audience they are bound to.
    pub fn resource(&self) -> &ResourceUri {
        &self.resource
    }

    /// The authorization servers, in the document's order, never empty. Which one to use is the
    /// client's choice (RFC 9728 §7.6); tokens from one are never used for another.
    pub fn authorization_servers(&self) -> &[Issuer] {
        &self.authorization_servers
    }

    /// `scopes_supported` as a scope set, when the document has it (MCP 2025-11-25 §6: what to
    /// request when no challenge names scopes).
    pub fn scopes_supported(&self) -> Option<&ScopeSet> {
        self.scopes_supported.as_ref()
    }

    /// Whether the resource may accept tokens in the `Authorization` header: false only when
    /// `bearer_methods_supported` is present and does not list `header`. An absent member implies
    /// nothing (RFC 9728 §2), and the header is the one method MCP uses (MCP 2025-11-25 §9.1).
    pub fn accepts_header_tokens(&self) -> bool {
        self.metadata
            .bearer_methods_supported
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m == "header"))
    }

    /// The whole document as sent. Members other than those exposed above are unchecked.
    pub fn metadata(&self) -> &ProtectedResourceMetadata {
        &self.metadata
    }
}
