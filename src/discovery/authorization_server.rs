//! RFC 8414 authorization server metadata (and the OpenID Connect Discovery document, which
//! shares its members) and its validation against the issuer it was looked up for.

use serde::{Deserialize, Serialize};
use url::Url;

use super::guard::parse_fetch_url;
use super::{DiscoveryError, DiscoveryOptions, Issuer, from_json};
use crate::resource::shorten;

/// An RFC 8414 §2 authorization server metadata document, as sent. Unknown members are ignored;
/// a repeated member or a member of the wrong JSON type makes the document invalid. Nothing here
/// is checked until [`validate`](Self::validate).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuthorizationServerMetadata {
    /// The issuer identifier (REQUIRED); must equal the issuer the document was looked up for.
    pub issuer: String,
    /// The authorization endpoint (for the authorization code flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// The token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// The JWK set URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The dynamic client registration endpoint (RFC 7591).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    /// Scopes the server supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// Response types the server supports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_types_supported: Option<Vec<String>>,
    /// Grant types the server supports; absent means `authorization_code` and `implicit`
    /// (RFC 8414 §2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types_supported: Option<Vec<String>>,
    /// Client authentication methods at the token endpoint; absent means `client_secret_basic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// The token revocation endpoint (RFC 7009). Not validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// The token introspection endpoint (RFC 7662). Not validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
    /// PKCE code challenge methods (RFC 7636); absent means none (MCP 2025-11-25 §11.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// The algorithms the server accepts for DPoP proofs (RFC 9449 §5.1); absent means the
    /// server does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// Whether authorization responses carry `iss` (RFC 9207 mix-up defence).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// Whether a URL can be used as `client_id` (OAuth client ID metadata documents, MCP
    /// 2025-11-25).
    #[serde(default)]
    pub client_id_metadata_document_supported: bool,
}

impl AuthorizationServerMetadata {
    /// Reads a metadata document (at most 64 KiB).
    pub fn from_json(body: &[u8]) -> Result<Self, DiscoveryError> {
        from_json(body, "authorization server metadata")
    }

    /// Validates the document for `expected`, the issuer its URL was built from
    /// ([`authorization_server_metadata_urls`](crate::discovery::authorization_server_metadata_urls)).
    ///
    /// - `issuer` must equal `expected` code point for code point (RFC 8414 §3.3, OIDC Discovery
    ///   §4.3): no case folding, no slash, port or percent-encoding normalization.
    /// - `token_endpoint` is required; it, `authorization_endpoint` and
    ///   `registration_endpoint` when present must pass [`check_fetch_url`](crate::discovery::check_fetch_url):
    ///   https (http only on loopback with the development option), no userinfo, no fragment,
    ///   no internal address. Other URL members are left unchecked and are not exposed typed.
    ///
    /// Any failure means nothing in the document may be used.
    ///
    /// ```
    /// use audience_cache::{DiscoveryError, DiscoveryOptions};
    /// use audience_cache::discovery::{AuthorizationServerMetadata, Issuer};
    ///
    /// let options = DiscoveryOptions::strict();
    /// let document = AuthorizationServerMetadata::from_json(br#"{
    ///     "issuer": "https://auth.example.com",
    ///     "token_endpoint": "https://auth.example.com/token",
    ///     "code_challenge_methods_supported": ["S256"]
    /// }"#)?;
    /// let issuer = Issuer::parse("https://auth.example.com", &options)?;
    /// let server = document.validate(&issuer, &options)?;
    /// assert_eq!(server.token_endpoint().as_str(), "https://auth.example.com/token");
    /// assert!(server.require_pkce_s256().is_ok());
    ///
    /// // E17: no case folding.
    /// let other = Issuer::parse("https://Auth.Example.com", &options)?;
    /// assert!(matches!(
    ///     document.validate(&other, &options),
    ///     Err(DiscoveryError::IssuerMismatch { .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate(
        &self,
        expected: &Issuer,
        options: &DiscoveryOptions,
    ) -> Result<ValidatedAuthorizationServer, DiscoveryError> {
        if self.issuer != expected.as_str() {
            return Err(DiscoveryError::IssuerMismatch {
                expected: shorten(expected.as_str()),
                found: shorten(&self.issuer),
            });
        }
        let endpoint = |field: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .map(|value| {
                    parse_fetch_url(value, options).map_err(|source| {
                        DiscoveryError::InvalidEndpoint {
                            field,
                            source: Box::new(source),
                        }
                    })
                })
                .transpose()
        };
        let token_endpoint = endpoint("token_endpoint", &self.token_endpoint)?.ok_or(
            DiscoveryError::MissingEndpoint {
                field: "token_endpoint",
            },
        )?;
        Ok(ValidatedAuthorizationServer {
            issuer: expected.clone(),
            token_endpoint,
            authorization_endpoint: endpoint(
                "authorization_endpoint",
                &self.authorization_endpoint,
            )?,
            registration_endpoint: endpoint("registration_endpoint", &self.registration_endpoint)?,
            metadata: self.clone(),
        })
    }

    /// Whether `code_challenge_methods_supported` lists `S256` (exact, case-sensitive). Absent
    /// means no (MCP 2025-11-25 §11.4).
    pub fn supports_pkce_s256(&self) -> bool {
        self.code_challenge_methods_supported
            .as_ref()
            .is_some_and(|methods| methods.iter().any(|m| m == "S256"))
    }

    /// Whether the server supports a grant type, with RFC 8414 §2's default
    /// (`authorization_code` and `implicit`) when `grant_types_supported` is absent.
    pub fn supports_grant_type(&self, grant_type: &str) -> bool {
        match &self.grant_types_supported {
            Some(types) => types.iter().any(|t| t == grant_type),
            None => matches!(grant_type, "authorization_code" | "implicit"),
        }
    }
}

/// Authorization server metadata that passed [`AuthorizationServerMetadata::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedAuthorizationServer {
    issuer: Issuer,
    token_endpoint: Url,
    authorization_endpoint: Option<Url>,
    registration_endpoint: Option<Url>,
    metadata: AuthorizationServerMetadata,
}

impl ValidatedAuthorizationServer {
    /// The issuer, exactly as the metadata was looked up for (and as the document names it).
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The token endpoint, checked.
    pub fn token_endpoint(&self) -> &Url {
        &self.token_endpoint
    }

    /// The authorization endpoint, checked, when the document has one.
    pub fn authorization_endpoint(&self) -> Option<&Url> {
        self.authorization_endpoint.as_ref()
    }

    /// The registration endpoint, checked, when the document has one.
    pub fn registration_endpoint(&self) -> Option<&Url> {
        self.registration_endpoint.as_ref()
    }

    /// Fails with [`DiscoveryError::PkceUnsupported`] unless the server advertises `S256`
    /// (MCP 2025-11-25 §11.4: refuse to proceed with the authorization code flow).
    pub fn require_pkce_s256(&self) -> Result<(), DiscoveryError> {
        if self.metadata.supports_pkce_s256() {
            return Ok(());
        }
        Err(DiscoveryError::PkceUnsupported {
            issuer: shorten(self.issuer.as_str()),
            offered: match &self.metadata.code_challenge_methods_supported {
                None => "absent".to_owned(),
                Some(methods) => shorten(&format!("{methods:?}")),
            },
        })
    }

    /// The whole document as sent.
    pub fn metadata(&self) -> &AuthorizationServerMetadata {
        &self.metadata
    }
}
