//! Reading `aud` from a JWT access token without checking its signature.
//!
//! RFC 9068 §6 tells clients not to inspect access tokens, so nothing here may *allow* a token:
//! what is read can only make the crate refuse one (rules §10). Anything that is not a readable
//! three-part JWS with a JSON object payload is "unreadable", and the caller decides what that
//! means. Input is bounded and nothing here panics.

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserializer as _;
use serde::de::{IgnoredAny, MapAccess, Visitor};

/// Tokens longer than this are not inspected (they are treated as unreadable).
pub(crate) const MAX_INSPECTED_LEN: usize = 64 * 1024;

/// base64url, padding optional, trailing bits tolerated: the reading is deny-only, so reading
/// more tokens is the safe direction.
const LENIENT_BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// What the `aud` claim of a token says, before it is compared with anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AudClaim {
    /// Not a three-part JWS with a base64url JSON-object payload (opaque, JWE, garbage), or
    /// too long to inspect.
    Unreadable,
    /// A readable payload without `aud`.
    Absent,
    /// `aud` is present but not a string or a non-empty array of strings, or appears twice.
    Malformed(MalformedAud),
    /// The audience values.
    Values(Vec<String>),
}

/// How an `aud` claim is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedAud {
    /// `aud` is neither a string nor an array of strings (RFC 7519 §4.1.3).
    NotStringOrArray,
    /// `aud` is an empty array.
    EmptyArray,
    /// `aud` appears more than once in the payload; parsers disagree on which one counts.
    Duplicated,
}

impl fmt::Display for MalformedAud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotStringOrArray => "its aud claim is not a string or an array of strings",
            Self::EmptyArray => "its aud claim is an empty array",
            Self::Duplicated => "its aud claim appears more than once",
        })
    }
}

/// Reads the `aud` claim of `token`.
pub(crate) fn read_aud(token: &str) -> AudClaim {
    if token.len() > MAX_INSPECTED_LEN {
        return AudClaim::Unreadable;
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return AudClaim::Unreadable;
    };
    if header.is_empty() || payload.is_empty() {
        return AudClaim::Unreadable;
    }
    let Ok(json) = LENIENT_BASE64URL.decode(payload) else {
        return AudClaim::Unreadable;
    };
    let mut deserializer = serde_json::Deserializer::from_slice(&json);
    match deserializer.deserialize_map(PayloadVisitor) {
        Ok(claim) if deserializer.end().is_ok() => claim,
        _ => AudClaim::Unreadable,
    }
}

/// Visits the payload's top-level object, keeping only `aud` and noticing a second one.
struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = AudClaim;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AudClaim, A::Error> {
        let mut aud: Option<serde_json::Value> = None;
        let mut duplicated = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "aud" {
                let value = map.next_value::<serde_json::Value>()?;
                duplicated |= aud.is_some();
                aud = Some(value);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(match aud {
            _ if duplicated => AudClaim::Malformed(MalformedAud::Duplicated),
            None => AudClaim::Absent,
            Some(serde_json::Value::String(one)) => AudClaim::Values(vec![one]),
            Some(serde_json::Value::Array(items)) if items.is_empty() => {
                AudClaim::Malformed(MalformedAud::EmptyArray)
            }
            Some(serde_json::Value::Array(items)) => {
                let strings: Option<Vec<String>> = items
                    .into_iter()
                    .map(|item| match item {
                        serde_json::Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                match strings {
                    Some(values) => AudClaim::Values(values),
                    None => AudClaim::Malformed(MalformedAud::NotStringOrArray),
                }
            }
            Some(_) => AudClaim::Malformed(MalformedAud::NotStringOrArray),
        })
    }
}

/// An unsigned JWT with `payload` as its claims (the crate's tests read `aud` from it).
#[cfg(test)]
pub(crate) fn unsigned(payload: &str) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.sig",
        engine.encode(r#"{"alg":"RS256","typ":"at+jwt"}"#),
        engine.encode(payload)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        unsigned(payload)
    }

    #[test]
    fn reads_string_and_array_audiences() {
        assert_eq!(
            read_aud(&jwt(r#"{"aud":"https://a.example"}"#)),
            AudClaim::Values(vec!["https://a.example".into()])
        );
        assert_eq!(
            read_aud(&jwt(r#"{"sub":"x","aud":["a","b"],"n":{"aud":1}}"#)),
            AudClaim::Values(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn malformed_audiences_are_told_apart() {
        let cases = [
            (r#"{"aud":42}"#, MalformedAud::NotStringOrArray),
            (r#"{"aud":{"x":1}}"#, MalformedAud::NotStringOrArray),
            (r#"{"aud":["ok",7]}"#, MalformedAud::NotStringOrArray),
            (r#"{"aud":null}"#, MalformedAud::NotStringOrArray),
            (r#"{"aud":[]}"#, MalformedAud::EmptyArray),
            (r#"{"aud":"a","aud":"b"}"#, MalformedAud::Duplicated),
        ];
        for (payload, expected) in cases {
            assert_eq!(
                read_aud(&jwt(payload)),
                AudClaim::Malformed(expected),
                "{payload}"
            );
        }
    }

    #[test]
    fn anything_else_is_unreadable_or_absent() {
        assert_eq!(read_aud("2YotnFZFEjr1zCsicMWpAA"), AudClaim::Unreadable);
        assert_eq!(read_aud("a.b.c.d.e"), AudClaim::Unreadable);
        assert_eq!(read_aud("e30.!!!.sig"), AudClaim::Unreadable);
        assert_eq!(read_aud(&jwt("[1,2]")), AudClaim::Unreadable);
        assert_eq!(
            read_aud(&jwt(r#"{"aud":"a"} trailing"#)),
            AudClaim::Unreadable
        );
        assert_eq!(read_aud(&jwt(r#"{"sub":"x"}"#)), AudClaim::Absent);
        let huge = jwt(&format!(r#"{{"aud":"{}"}}"#, "a".repeat(MAX_INSPECTED_LEN)));
        assert_eq!(read_aud(&huge), AudClaim::Unreadable);
    }

    #[test]
    fn padded_payloads_are_read() {
        let engine = base64::engine::general_purpose::URL_SAFE;
        let token = format!("e30.{}.sig", engine.encode(r#"{"aud":"x"}"#));
        assert_eq!(read_aud(&token), AudClaim::Values(vec!["x".into()]));
    }
}
