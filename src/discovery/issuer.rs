//! Issuer identifiers (RFC 8414 §2), kept as the exact string they were given as.

use std::fmt;
use std::hash::{Hash, Hasher};

use url::Url;

use super::{DiscoveryError, DiscoveryOptions};
use crate::resource::{parse_raw, shorten};

/// An authorization server's issuer identifier: an https URL with no query and no fragment
/// (RFC 8414 §2), held as the **exact** string it was given as.
///
/// The string is what metadata `issuer` values are compared with, code point for code point
/// (RFC 8414 §3.3, §4): `https://Auth.Example.com` and `https://auth.example.com` are different
/// issuers, and so are `https://auth.example.com/tenant1` and `https://auth.example.com/tenant1/`.
/// Equality and hashing use that exact string, as [`CacheKey`](crate::key::CacheKey) does.
///
/// Parsing applies the resource identifier rules (no userinfo, no whitespace or control
/// characters, a canonical host, no dot segments, at most 2048 bytes; http only on loopback with
/// the development option) and also refuses a query.
///
/// ```
/// use audience_cache::DiscoveryOptions;
/// use audience_cache::discovery::Issuer;
///
/// let options = DiscoveryOptions::strict();
/// let issuer = Issuer::parse("https://auth.example.com/tenant1/", &options)?;
/// assert_eq!(issuer.as_str(), "https://auth.example.com/tenant1/");
/// assert!(Issuer::parse("https://auth.example.com/?tenant=1", &options).is_err());
/// assert!(Issuer::parse("http://auth.example.com", &options).is_err());
/// # Ok::<(), audience_cache::DiscoveryError>(())
/// ```
#[derive(Clone)]
pub struct Issuer {
    text: Box<str>,
    url: Url,
}

impl Issuer {
    /// Validates an issuer identifier and keeps it verbatim.
    pub fn parse(issuer: &str, options: &DiscoveryOptions) -> Result<Self, DiscoveryError> {
        let parsed = parse_raw(issuer, options.parse_options().rules()).map_err(|source| {
            DiscoveryError::InvalidIssuer {
                issuer: shorten(issuer),
                source,
            }
        })?;
        if parsed.query().is_some() {
            return Err(DiscoveryError::IssuerHasQuery {
                issuer: shorten(issuer),
            });
        }
        Ok(Self {
            text: issuer.into(),
            url: parsed.url,
        })
    }

    /// The issuer exactly as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The issuer as a URL in normalized form (lowercase host, no default port), for building
    /// metadata URLs. Never compare this with a metadata `issuer`: compare [`as_str`](Self::as_str).
    pub fn as_url(&self) -> &Url {
        &self.url
    }
}

impl PartialEq for Issuer {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Issuer {}

impl Hash for Issuer {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Issuer({:?})", self.text)
    }
}

/// Shows the issuer exactly as given.
impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
