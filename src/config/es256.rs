//! ES256 (P-256) keys and compact JWS, shared by the two kinds of JWT the crate signs: client
//! assertions (`private_key_jwt`, RFC 7523) and DPoP proofs (RFC 9449). One reading of a key,
//! one JWK, one signature, one `jti`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::Value;

use crate::error::BuildError;

/// Reads a P-256 private key in PKCS #8 PEM; the error names `setting` and says what the key
/// is `for_what`, never any of the PEM.
pub(crate) fn key_from_pem(
    pem: &str,
    setting: &'static str,
    for_what: &str,
) -> Result<SigningKey, BuildError> {
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| BuildError::Setting {
        setting,
        reason: format!("not a P-256 private key in PKCS #8 PEM ({e}); {for_what} with ES256"),
    })
}

/// The public key's coordinates, base64url (RFC 7518 §6.2.1.2, §6.2.1.3).
pub(crate) fn coordinates(key: &SigningKey) -> (String, String) {
    let point = key.verifying_key().to_encoded_point(false);
    let coordinate =
        |c: Option<&p256::FieldBytes>| c.map(|c| URL_SAFE_NO_PAD.encode(c)).unwrap_or_default();
    (coordinate(point.x()), coordinate(point.y()))
}

/// A compact JWS (RFC 7515 §7.1) of `claims` under `header`, signed with `key` (ES256,
/// RFC 7518 §3.4: the fixed-size `r || s` form).
pub(crate) fn sign(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature: Signature = key.sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

/// 128 random bits, base64url: a JWT's unique identifier, so that a server can refuse a replay
/// (RFC 7523 §3, RFC 9449 §4.2).
pub(crate) fn jti() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}
