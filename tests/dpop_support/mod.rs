//! Proofs made by hand (p256 directly, not the crate's code), for what the crate never sends:
//! a token presented with another key's proof.

// Each DPoP test file uses part of this module.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;
use sha2::{Digest as _, Sha256};

/// A test key (the one of the crate's own doc examples).
pub const PEM_A: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXS5rZe1ng3AOXB+s
6fPj+OiyYW8Mke7ApcJ99ybzrQ6hRANCAARNMoNJhlu7atphNPfiJR2t+FfBNIIv
tj/zL5S3Xt9IvahWoa+z9o5GH7KaI4AnUZEo3VpcYspyulkNgKkbSMjS
-----END PRIVATE KEY-----";

/// A key of its own: the scalar 1..32 (any scalar below the group order is a key).
pub fn other_key() -> SigningKey {
    let bytes: Vec<u8> = (1..=32).collect();
    SigningKey::from_slice(&bytes).unwrap()
}

pub fn key_a() -> SigningKey {
    SigningKey::from_pkcs8_pem(PEM_A).unwrap()
}

/// A DPoP proof by `key` for `method` and `htu`, with `ath` of `token` and `nonce`.
pub fn proof(
    key: &SigningKey,
    method: &str,
    htu: &str,
    token: Option<&str>,
    nonce: Option<&str>,
) -> String {
    let point = key.verifying_key().to_encoded_point(false);
    let jwk = serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    });
    let header = serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk });
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = serde_json::json!({
        "jti": URL_SAFE_NO_PAD.encode(rand_bytes()),
        "htm": method,
        "htu": htu,
        "iat": iat,
    });
    if let Some(token) = token {
        claims["ath"] = URL_SAFE_NO_PAD
            .encode(Sha256::digest(token.as_bytes()))
            .into();
    }
    if let Some(nonce) = nonce {
        claims["nonce"] = nonce.into();
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn rand_bytes() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes[8..].copy_from_slice(&std::process::id().to_be_bytes().repeat(2));
    bytes
}

/// The RFC 7638 thumbprint of `key`'s public half.
pub fn jkt_of(key: &SigningKey) -> String {
    let point = key.verifying_key().to_encoded_point(false);
    let input = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        URL_SAFE_NO_PAD.encode(point.y().unwrap())
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(input.as_bytes()))
}
