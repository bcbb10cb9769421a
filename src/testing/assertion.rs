//! The embedded server's check of `private_key_jwt` client assertions (RFC 7523 §3): the
//! signature by the client's key, the claims, the time and the audience.

#![cfg(feature = "private-key-jwt")]

use base64::Engine as _;

use super::client::Client;
use super::wire::OAuthError;

/// Verifies a `private_key_jwt` assertion of `client`: ES256 signature by its key, `iss` and
/// `sub` its id, `aud` one of `audiences`, `exp` after `now` and at most five minutes away,
/// and a `jti` (returned, for the caller's replay check).
#[cfg(feature = "private-key-jwt")]
pub(crate) fn verify_assertion(
    client: &Client,
    assertion: &str,
    audiences: &[&str],
    now: u64,
) -> Result<String, OAuthError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::ecdsa::signature::Verifier as _;
    let refuse = |why: &str| OAuthError::invalid_client(format!("client_assertion: {why}"), false);
    let key = client
        .assertion_key
        .as_ref()
        .ok_or_else(|| refuse("the client has no key"))?;
    let mut parts = assertion.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse("not a compact JWS"));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| refuse("bad base64url"))
    };
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| refuse("bad header"))?;
    if header["alg"] != "ES256" {
        return Err(refuse("alg is not ES256"));
    }
    let signature = p256::ecdsa::Signature::from_slice(&decode(signature)?)
        .map_err(|_| refuse("bad signature encoding"))?;
    let input =
        &assertion[..assertion.len() - assertion.rsplit('.').next().map_or(0, str::len) - 1];
    key.verify(input.as_bytes(), &signature)
        .map_err(|_| refuse("the signature does not verify"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&decode(payload)?).map_err(|_| refuse("bad claims"))?;
    if claims["iss"] != client.id.as_str() || claims["sub"] != client.id.as_str() {
        return Err(refuse("iss and sub must be the client id"));
    }
    let aud_ok = match &claims["aud"] {
        serde_json::Value::String(aud) => audiences.contains(&aud.as_str()),
        serde_json::Value::Array(values) => values
            .iter()
            .any(|v| v.as_str().is_some_and(|aud| audiences.contains(&aud))),
        _ => false,
    };
    if !aud_ok {
        return Err(refuse("aud is not this server"));
    }
    let exp = claims["exp"].as_u64().ok_or_else(|| refuse("no exp"))?;
    if exp <= now || exp > now + 300 {
        return Err(refuse("exp is in the past or too far ahead"));
    }
    claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| refuse("no jti"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "private-key-jwt")]
    #[test]
    fn assertions_are_checked_for_signature_claims_time_and_audience() {
        let key = crate::config::assertion::ClientAssertionKey::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgXS5rZe1ng3AOXB+s
6fPj+OiyYW8Mke7ApcJ99ybzrQ6hRANCAARNMoNJhlu7atphNPfiJR2t+FfBNIIv
tj/zL5S3Xt9IvahWoa+z9o5GH7KaI4AnUZEo3VpcYspyulkNgKkbSMjS
-----END PRIVATE KEY-----",
        )
        .unwrap();
        let client = Client::private_key_jwt("svc", &key.public_jwk()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let audiences = ["https://as.example"];
        let good = key.assertion("svc", "https://as.example");
        let jti = verify_assertion(&client, &good, &audiences, now).unwrap();
        assert!(!jti.is_empty());
        let refused = |assertion: &str, now: u64| {
            verify_assertion(&client, assertion, &audiences, now)
                .unwrap_err()
                .description
        };
        assert!(
            refused(&key.assertion("other", "https://as.example"), now).contains("iss and sub")
        );
        assert!(refused(&key.assertion("svc", "https://evil.example"), now).contains("aud"));
        assert!(refused(&good, now + 61).contains("exp"));
        let mut tampered = good.clone();
        tampered.replace_range(tampered.len() - 4.., "AAAA");
        assert!(refused(&tampered, now).contains("signature"));
        let public = Client::confidential("svc", "s");
        assert!(verify_assertion(&public, &good, &audiences, now).is_err());
    }
}
