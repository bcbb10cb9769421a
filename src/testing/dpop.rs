//! DPoP (RFC 9449) in the embedded servers: the check of a proof, as an authorization server
//! (§5) and a resource server (§7) make it, and what the servers record of it. Proofs are
//! checked only with the `dpop` feature (ES256 needs p256); without it a request with a proof
//! is answered `invalid_dpop_proof`.

use std::collections::HashSet;

use axum::http::HeaderMap;

/// What a server saw of a request's DPoP proof: its claims and key, never a token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DpopProofRecord {
    /// `htm`: the method the proof was made for.
    pub htm: String,
    /// `htu`: the URL the proof was made for (without query and fragment).
    pub htu: String,
    /// `ath`: the hash of the access token the proof was made for (resource requests).
    pub ath: Option<String>,
    /// The `nonce` claim, if any.
    pub nonce: Option<String>,
    /// The RFC 7638 thumbprint of the proof's `jwk`: the key it was signed with.
    pub jkt: String,
    /// Whether the proof passed every check the server made (signature, `typ`, `htm`, `htu`,
    /// `iat`, unique `jti`, and `ath` where a token came with it).
    pub valid: bool,
    /// Why it did not, if it did not.
    pub problem: Option<String>,
}

/// What a request is checked against.
#[cfg_attr(not(feature = "dpop"), allow(dead_code))]
pub(crate) struct Expected<'a> {
    pub(crate) method: &'a str,
    pub(crate) htu: &'a str,
    pub(crate) access_token: Option<&'a str>,
    pub(crate) now: u64,
}

/// The `DPoP` header of a request: `None` when there is none, an error when there are several
/// (RFC 9449 §4.3: exactly one).
pub(crate) fn header(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let mut values = headers.get_all("dpop").iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value
            .to_str()
            .map(Some)
            .map_err(|_| "the DPoP header is not text"),
        (Some(_), Some(_)) => Err("more than one DPoP header"),
    }
}

/// Checks `proof` (RFC 9449 §4.3) and records what it said. `used` holds the `jti`s seen
/// before (a replayed one is refused).
pub(crate) fn check(
    proof: &str,
    expected: &Expected<'_>,
    used: &mut HashSet<String>,
) -> DpopProofRecord {
    let mut record = DpopProofRecord {
        htm: String::new(),
        htu: String::new(),
        ath: None,
        nonce: None,
        jkt: String::new(),
        valid: false,
        problem: None,
    };
    match verify(proof, expected, used, &mut record) {
        Ok(()) => record.valid = true,
        Err(problem) => record.problem = Some(problem.to_owned()),
    }
    record
}

#[cfg(not(feature = "dpop"))]
fn verify(
    _: &str,
    _: &Expected<'_>,
    _: &mut HashSet<String>,
    _: &mut DpopProofRecord,
) -> Result<(), &'static str> {
    Err("DPoP proofs are checked only with the dpop feature")
}

#[cfg(feature = "dpop")]
fn verify(
    proof: &str,
    expected: &Expected<'_>,
    used: &mut HashSet<String>,
    record: &mut DpopProofRecord,
) -> Result<(), &'static str> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::ecdsa::signature::Verifier as _;
    use serde_json::Value;
    use sha2::{Digest as _, Sha256};

    let mut parts = proof.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS");
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| "bad base64url");
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|_| "bad header")?;
    let claims: Value = serde_json::from_slice(&decode(payload)?).map_err(|_| "bad claims")?;
    let text =
        |value: &Value, name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    record.htm = text(&claims, "htm").unwrap_or_default();
    record.htu = text(&claims, "htu").unwrap_or_default();
    record.ath = text(&claims, "ath");
    record.nonce = text(&claims, "nonce");
    let jwk = header.get("jwk").ok_or("no jwk")?;
    let (Some(x), Some(y)) = (text(jwk, "x"), text(jwk, "y")) else {
        return Err("the jwk is not an EC key");
    };
    if text(jwk, "kty").as_deref() != Some("EC") || text(jwk, "crv").as_deref() != Some("P-256") {
        return Err("the jwk is not a P-256 key");
    }
    // RFC 9449 §4.3: the jwk must not hold a private key.
    if jwk.get("d").is_some() {
        return Err("the jwk holds a private key");
    }
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    record.jkt = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    if header["typ"] != "dpop+jwt" {
        return Err("typ is not dpop+jwt");
    }
    if header["alg"] != "ES256" {
        return Err("alg is not ES256");
    }
    let mut point = vec![4u8];
    point.extend(decode(&x)?);
    point.extend(decode(&y)?);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|_| "bad jwk point")?;
    let signature =
        p256::ecdsa::Signature::from_slice(&decode(signature)?).map_err(|_| "bad signature")?;
    let input = &proof[..proof.len() - proof.rsplit('.').next().map_or(0, str::len) - 1];
    key.verify(input.as_bytes(), &signature)
        .map_err(|_| "the signature does not verify")?;
    if record.htm != expected.method {
        return Err("htm is not the request's method");
    }
    if record.htu != expected.htu {
        return Err("htu is not the request's URL");
    }
    let iat = claims.get("iat").and_then(Value::as_u64).ok_or("no iat")?;
    // RFC 9449 §11.1: a short window around the server's time.
    if iat.abs_diff(expected.now) > 60 {
        return Err("iat is too far from the server's time");
    }
    let jti = text(&claims, "jti").ok_or("no jti")?;
    if jti.is_empty() || !used.insert(jti) {
        return Err("the jti was used before");
    }
    if let Some(token) = expected.access_token {
        let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
        if record.ath.as_deref() != Some(ath.as_str()) {
            return Err("ath is not the hash of the access token");
        }
    }
    Ok(())
}
