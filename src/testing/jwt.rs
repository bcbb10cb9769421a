//! HS256 JWT access tokens (RFC 9068 `at+jwt`), opaque tokens and token fingerprints.
//!
//! The authorization server signs with a random per-server key, so a token minted by one server
//! never validates at another, and a resource server holding the key (see
//! [`AuthorizationServer::hs256_key`](super::AuthorizationServer::hs256_key)) can verify it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Access tokens larger than this are not even split: nothing this server mints comes close.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The protected header of every token this server signs.
const HEADER: &str = r#"{"alg":"HS256","typ":"at+jwt"}"#;

/// `n` random bytes, base64url without padding.
pub(crate) fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 key: one SHA-256 block (64 bytes), at least the 256 bits RFC 7518 §3.2 asks for.
pub(crate) type Key = [u8; 64];

/// A fresh random HS256 key.
pub(crate) fn new_key() -> Key {
    let mut key = [0u8; 64];
    rand::thread_rng().fill_bytes(&mut key);
    key
}

/// Signs `claims` as a compact JWS with the fixed `{"alg":"HS256","typ":"at+jwt"}` header.
pub(crate) fn sign(key: &Key, claims: &Map<String, Value>) -> String {
    let payload = Value::Object(claims.clone()).to_string();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature =
        URL_SAFE_NO_PAD.encode(mac(key, signing_input.as_bytes()).finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Verifies a token signed by [`sign`] with `key` and returns its claims.
///
/// `None` for anything else: wrong shape, bad base64, a header other than HS256, a bad
/// signature, or a payload that is not a JSON object. Expiry is the caller's business.
pub(crate) fn verify(key: &Key, token: &str) -> Option<Map<String, Value>> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let mut parts = token.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let signing_input = &token[..header.len() + 1 + payload.len()];
    // Constant-time comparison through the MAC's own verifier.
    mac(key, signing_input.as_bytes())
        .verify_slice(&signature)
        .ok()?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return None;
    }
    match serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

fn mac(key: &Key, data: &[u8]) -> HmacSha256 {
    // A key of exactly one SHA-256 block is used as is (RFC 2104 §2); the lengths match by type.
    let mut mac = <HmacSha256 as KeyInit>::new(GenericArray::from_slice(key));
    mac.update(data);
    mac
}

/// The first 8 hex digits of the SHA-256 of `token`: enough to tell tokens apart in a test,
/// useless for replaying one. Used in request records instead of the token itself.
///
/// ```
/// use audience_cache::testing::fingerprint;
///
/// let fp = fingerprint("some-access-token");
/// assert_eq!(fp.len(), 8);
/// assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
/// assert_eq!(fp, fingerprint("some-access-token"));
/// assert_ne!(fp, fingerprint("another-access-token"));
/// ```
pub fn fingerprint(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(ASCII(code_verifier)))`.
pub(crate) fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 §4.1: 43 to 128 characters from the unreserved set.
pub(crate) fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        match json!({"iss": "https://as.test", "aud": "https://rs.test/mcp", "exp": 10}) {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn signed_token_verifies_with_its_key_only() {
        let key = new_key();
        let token = sign(&key, &claims());
        assert_eq!(verify(&key, &token), Some(claims()));
        assert_eq!(verify(&new_key(), &token), None);
    }

    #[test]
    fn header_is_the_rfc_9068_one() {
        let token = sign(&new_key(), &claims());
        let header = token.split('.').next().unwrap_or_default();
        let header = URL_SAFE_NO_PAD.decode(header).unwrap_or_default();
        assert_eq!(header, HEADER.as_bytes());
    }

    #[test]
    fn tampering_and_garbage_are_rejected() {
        let key = new_key();
        let token = sign(&key, &claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(r#"{"aud":"https://evil.test"}"#);
        parts[1] = &other;
        assert_eq!(verify(&key, &parts.join(".")), None);
        for garbage in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "\u{0}..",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(verify(&key, garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            pkce_s256(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(is_valid_verifier(verifier));
        assert!(!is_valid_verifier("short"));
        assert!(!is_valid_verifier(&"a".repeat(129)));
        assert!(!is_valid_verifier(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn fingerprint_is_eight_hex_digits_of_sha256() {
        // SHA-256("abc") = ba7816bf...
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }
}
