//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9): each
//! token request carries a short-lived JWT that the client signs with its ES256 key, instead of
//! a shared secret (feature `private-key-jwt`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p256::ecdsa::SigningKey;
use serde_json::json;

use super::es256;
use crate::error::BuildError;

/// `client_assertion_type` for a JWT (RFC 7523 §2.2).
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long an assertion is valid: long enough for one request, short enough that a copy is
/// soon worthless.
const LIFETIME: Duration = Duration::from_secs(60);

/// An ES256 (P-256) private key that authenticates a client at the token endpoint with
/// `private_key_jwt`: every token request carries a fresh assertion (`iss` and `sub` the
/// client id, `aud` the authorization server's issuer identifier, a 60 s lifetime and a random
/// `jti`), so no shared secret is stored or sent. `Debug` shows the algorithm and key id only.
///
/// ```
/// # #[cfg(feature = "private-key-jwt")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use audience_cache::{ClientAssertionKey, PreRegistered};
///
/// // A test key: generate your own with openssl genpkey (see from_pkcs8_pem).
/// let pem = "-----BEGIN PRIVATE KEY-----
/// MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXS5rZe1ng3AOXB+s
/// 6fPj+OiyYW8Mke7ApcJ99ybzrQ6hRANCAARNMoNJhlu7atphNPfiJR2t+FfBNIIv
/// tj/zL5S3Xt9IvahWoa+z9o5GH7KaI4AnUZEo3VpcYspyulkNgKkbSMjS
/// -----END PRIVATE KEY-----";
/// let key = ClientAssertionKey::from_pkcs8_pem(pem)?.with_key_id("2026-11");
/// // The public half, to register with the authorization server.
/// assert_eq!(key.public_jwk()["crv"], "P-256");
/// let client = PreRegistered::private_key_jwt("my-service", key).at_issuer("https://auth.example.com");
/// # let _ = client;
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "private-key-jwt"))]
/// # fn main() {}
/// ```
#[derive(Clone)]
pub struct ClientAssertionKey {
    key: Arc<SigningKey>,
    key_id: Option<String>,
}

impl ClientAssertionKey {
    /// Reads a P-256 private key in PKCS #8 PEM (`-----BEGIN PRIVATE KEY-----`), as
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes it.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, BuildError> {
        let key = es256::key_from_pem(pem, "client assertion key", "private_key_jwt here signs")?;
        Ok(Self {
            key: Arc::new(key),
            key_id: None,
        })
    }

    /// Sends `kid` in each assertion's header, for servers that hold several keys of the client.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// The public key as a JWK (RFC 7517, RFC 7518 §6.2), to register with the authorization
    /// server (`jwks` in the client metadata).
    pub fn public_jwk(&self) -> serde_json::Value {
        let (x, y) = es256::coordinates(&self.key);
        let mut jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "use": "sig",
            "alg": "ES256",
        });
        if let (Some(kid), Some(map)) = (&self.key_id, jwk.as_object_mut()) {
            map.insert("kid".to_owned(), json!(kid));
        }
        jwk
    }

    /// A fresh assertion for `client_id` at the authorization server `audience` (its issuer
    /// identifier, RFC 7523 §3 and draft-ietf-oauth-rfc7523bis).
    pub(crate) fn assertion(&self, client_id: &str, audience: &str) -> String {
        self.assertion_at(client_id, audience, SystemTime::now())
    }

    fn assertion_at(&self, client_id: &str, audience: &str, now: SystemTime) -> String {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut header = json!({ "alg": "ES256", "typ": "JWT" });
        if let (Some(kid), Some(map)) = (&self.key_id, header.as_object_mut()) {
            map.insert("kid".to_owned(), json!(kid));
        }
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": now,
            "exp": now + LIFETIME.as_secs(),
            "jti": es256::jti(),
        });
        es256::sign(&self.key, &header, &claims)
    }
}

impl fmt::Debug for ClientAssertionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAssertionKey")
            .field("alg", &"ES256")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::ecdsa::Signature;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier as _;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXS5rZe1ng3AOXB+s
6fPj+OiyYW8Mke7ApcJ99ybzrQ6hRANCAARNMoNJhlu7atphNPfiJR2t+FfBNIIv
tj/zL5S3Xt9IvahWoa+z9o5GH7KaI4AnUZEo3VpcYspyulkNgKkbSMjS
-----END PRIVATE KEY-----";

    #[test]
    fn an_assertion_is_a_verifiable_es256_jwt_for_the_client_and_the_issuer() {
        let key = ClientAssertionKey::from_pkcs8_pem(PEM)
            .unwrap()
            .with_key_id("k1");
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let jwt = key.assertion_at("svc", "https://as.example", now);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |part: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
        };
        assert_eq!(
            decode(parts[0]),
            json!({ "alg": "ES256", "typ": "JWT", "kid": "k1" })
        );
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], "svc");
        assert_eq!(claims["sub"], "svc");
        assert_eq!(claims["aud"], "https://as.example");
        assert_eq!(claims["iat"], 1_800_000_000u64);
        assert_eq!(claims["exp"], 1_800_000_060u64);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let verifying: &VerifyingKey = key.key.verifying_key();
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(verifying.verify(input.as_bytes(), &signature).is_ok());
        assert!(verifying.verify(b"something else", &signature).is_err());
        // Every assertion is new.
        let again = key.assertion_at("svc", "https://as.example", now);
        assert_ne!(
            decode(again.split('.').nth(1).unwrap())["jti"],
            claims["jti"]
        );
    }

    #[test]
    fn the_public_jwk_is_the_key_and_debug_is_not() {
        let key = ClientAssertionKey::from_pkcs8_pem(PEM).unwrap();
        let jwk = key.public_jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["x"].as_str().unwrap().len(), 43);
        assert_eq!(jwk.get("kid"), None);
        assert_eq!(
            format!("{key:?}"),
            r#"ClientAssertionKey { alg: "ES256", key_id: None, .. }"#
        );
    }

    #[test]
    fn other_keys_are_refused_with_a_reason() {
        let error = ClientAssertionKey::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("P-256") && error.contains("ES256"),
            "{error}"
        );
    }
}
