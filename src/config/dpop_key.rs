//! The DPoP key (RFC 9449, feature `dpop`): an ES256 (P-256) key that signs one proof per
//! request, and its RFC 7638 thumbprint, which names it in cache keys and logs.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::SigningKey;
use secrecy::SecretString;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::config::es256;
use crate::error::BuildError;

/// An ES256 (P-256) key that proves possession of DPoP-bound tokens (RFC 9449).
///
/// Every token request and every request that carries a bound token gets a fresh proof
/// signed with it: `typ: dpop+jwt`, the public key as `jwk`, a random `jti`, the request's
/// method and URL (without query and fragment) as `htm` and `htu`, `iat`, and on a resource
/// request `ath`, the token's SHA-256. The key is named by its RFC 7638 JWK thumbprint, which
/// is also part of every [`CacheKey`](crate::CacheKey) of a cache that holds it: a token bound
/// to one key is never served to a process that holds another. `Debug` shows the thumbprint
/// only; the private key is never shown.
///
/// ```
/// use audience_cache::DpopKey;
///
/// let key = DpopKey::generate();
/// assert_eq!(key.thumbprint().len(), 43);
/// assert!(format!("{key:?}").contains(key.thumbprint()));
/// ```
#[derive(Clone)]
pub struct DpopKey {
    inner: Arc<Inner>,
}

struct Inner {
    key: SigningKey,
    /// The public JWK with its required members only (RFC 7638 §3.2), in the order of the
    /// thumbprint's input: what every proof's header carries.
    jwk: serde_json::Value,
    thumbprint: String,
    /// `iat` follows tokio's clock from this wall-clock anchor, so that a paused runtime in
    /// tests moves proofs' times with everything else the crate times.
    wall: SystemTime,
    start: tokio::time::Instant,
}

impl DpopKey {
    /// A new key from the operating system's random generator (through `rand`'s thread
    /// generator). Each process that generates its own key gets tokens of its own: to share
    /// tokens across a fleet (the shared level), load one key with
    /// [`from_pkcs8_pem`](Self::from_pkcs8_pem).
    pub fn generate() -> Self {
        loop {
            // `rand::random` reads the thread generator the same way in rand 0.8 and 0.9.
            let bytes = secrecy::zeroize::Zeroizing::new(rand::random::<[u8; 32]>());
            // Zero or a scalar at or above the group order is refused (one chance in 2^32).
            if let Ok(key) = SigningKey::from_slice(&bytes[..]) {
                return Self::from_key(key);
            }
        }
    }

    /// Reads a P-256 private key in PKCS #8 PEM (`-----BEGIN PRIVATE KEY-----`), as
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes it.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, BuildError> {
        let key = es256::key_from_pem(pem, "dpop_key", "DPoP proofs here are signed")?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: SigningKey) -> Self {
        let (x, y) = es256::coordinates(&key);
        // RFC 7638 §3.2, §3.3: the required members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        Self {
            inner: Arc::new(Inner {
                key,
                jwk: json!({ "crv": "P-256", "kty": "EC", "x": x, "y": y }),
                thumbprint,
                wall: SystemTime::now(),
                start: tokio::time::Instant::now(),
            }),
        }
    }

    /// The RFC 7638 JWK SHA-256 thumbprint, base64url: what an authorization server puts in a
    /// bound token's `cnf.jkt` (RFC 9449 §6.1) and what the crate's cache keys hold.
    pub fn thumbprint(&self) -> &str {
        &self.inner.thumbprint
    }

    /// The private key in PKCS #8 PEM, to keep it where [`from_pkcs8_pem`](Self::from_pkcs8_pem)
    /// reads it back (a file of mode 0600, a secret manager): tokens, and a public client's
    /// refresh tokens, stay usable across restarts only with the key they are bound to.
    pub fn to_pkcs8_pem(&self) -> Result<SecretString, BuildError> {
        use p256::pkcs8::EncodePrivateKey as _;
        self.inner
            .key
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map(|pem| SecretString::from(pem.as_str()))
            .map_err(|_| BuildError::Setting {
                setting: "dpop_key",
                reason: "the DPoP key could not be written as PKCS #8 PEM".to_owned(),
            })
    }

    /// The public key as a JWK (RFC 7517; `kty`, `crv`, `x`, `y`).
    pub fn public_jwk(&self) -> serde_json::Value {
        self.inner.jwk.clone()
    }

    /// The algorithm proofs are signed with (`dpop_signing_alg_values_supported` must list
    /// it).
    pub fn algorithm(&self) -> &'static str {
        "ES256"
    }

    /// A fresh proof (RFC 9449 §4.2) for a request with `method` to `htu` (a URL already
    /// without query and fragment), carrying `ath` when `access_token` is given and `nonce`
    /// when the server asked for one.
    pub(crate) fn proof(
        &self,
        method: &str,
        htu: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        self.proof_at(method, htu, access_token, nonce, self.now())
    }

    /// The wall clock as tokio's clock moves it.
    fn now(&self) -> SystemTime {
        self.inner.wall + self.inner.start.elapsed()
    }

    fn proof_at(
        &self,
        method: &str,
        htu: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        now: SystemTime,
    ) -> String {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.inner.jwk });
        let mut claims = json!({ "jti": es256::jti(), "htm": method, "htu": htu, "iat": iat });
        if let Some(map) = claims.as_object_mut() {
            if let Some(token) = access_token {
                // RFC 9449 §4.2: ath = base64url(SHA-256(ASCII(access token))).
                let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
                map.insert("ath".to_owned(), json!(ath));
            }
            if let Some(nonce) = nonce {
                map.insert("nonce".to_owned(), json!(nonce));
            }
        }
        es256::sign(&self.inner.key, &header, &claims)
    }
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &"ES256")
            .field("thumbprint", &self.inner.thumbprint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::Signature;
    use p256::ecdsa::VerifyingKey;
    use p256::ecdsa::signature::Verifier as _;
    use std::time::Duration;

    const PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXS5rZe1ng3AOXB+s
6fPj+OiyYW8Mke7ApcJ99ybzrQ6hRANCAARNMoNJhlu7atphNPfiJR2t+FfBNIIv
tj/zL5S3Xt9IvahWoa+z9o5GH7KaI4AnUZEo3VpcYspyulkNgKkbSMjS
-----END PRIVATE KEY-----";

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_is_a_verifiable_dpop_jwt_for_the_request() {
        let key = DpopKey::from_pkcs8_pem(PEM).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let proof = key.proof_at(
            "POST",
            "https://rs.example/mcp",
            Some("token-1"),
            Some("n-1"),
            now,
        );
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode(parts[0]);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"], key.public_jwk());
        assert_eq!(header["jwk"].get("d"), None);
        let claims = decode(parts[1]);
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://rs.example/mcp");
        assert_eq!(claims["iat"], 1_800_000_000u64);
        assert_eq!(claims["nonce"], "n-1");
        // base64url(SHA-256("token-1")).
        assert_eq!(
            claims["ath"],
            URL_SAFE_NO_PAD.encode(Sha256::digest(b"token-1"))
        );
        assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let verifying: &VerifyingKey = key.inner.key.verifying_key();
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(verifying.verify(input.as_bytes(), &signature).is_ok());
        // A proof without a token has no ath, without a nonce no nonce; jti is never reused.
        let bare = key.proof_at("GET", "https://as.example/token", None, None, now);
        let bare_claims = decode(bare.split('.').nth(1).unwrap());
        assert_eq!(bare_claims.get("ath"), None);
        assert_eq!(bare_claims.get("nonce"), None);
        assert_ne!(bare_claims["jti"], claims["jti"]);
    }

    #[test]
    fn a_key_written_as_pkcs8_reads_back_as_the_same_key() {
        use secrecy::ExposeSecret as _;
        let key = DpopKey::generate();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(
            pem.expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let back = DpopKey::from_pkcs8_pem(pem.expose_secret()).unwrap();
        assert_eq!(back.thumbprint(), key.thumbprint());
        assert!(!format!("{pem:?}").contains("PRIVATE"));
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 7638 §3.1's input form, computed independently from the JWK's members.
        let key = DpopKey::from_pkcs8_pem(PEM).unwrap();
        let jwk = key.public_jwk();
        let input = format!(
            r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["kty"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(
            key.thumbprint(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(input.as_bytes()))
        );
        assert_eq!(jwk["x"].as_str().unwrap().len(), 43);
        assert_ne!(DpopKey::generate().thumbprint(), key.thumbprint());
    }

    #[test]
    fn debug_shows_the_thumbprint_and_never_the_private_key() {
        let key = DpopKey::from_pkcs8_pem(PEM).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(
            shown,
            format!(
                r#"DpopKey {{ alg: "ES256", thumbprint: "{}", .. }}"#,
                key.thumbprint()
            )
        );
        let scalar = URL_SAFE_NO_PAD.encode(key.inner.key.to_bytes());
        assert!(!shown.contains(&scalar[..8]));
        let error =
            DpopKey::from_pkcs8_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("dpop_key") && error.contains("P-256"),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn iat_follows_tokios_clock() {
        let key = DpopKey::generate();
        let iat = |proof: &str| {
            decode(proof.split('.').nth(1).unwrap())["iat"]
                .as_u64()
                .unwrap()
        };
        let before = iat(&key.proof("GET", "https://rs.example/", None, None));
        tokio::time::advance(Duration::from_secs(3600)).await;
        let after = iat(&key.proof("GET", "https://rs.example/", None, None));
        assert!(
            (3599..=3601).contains(&(after - before)),
            "{before} {after}"
        );
    }
}
