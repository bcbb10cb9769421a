//! The Identity Assertion JWT Authorization Grant (ID-JAG, MCP enterprise-managed
//! authorization): the RFC 8693 exchange of the user's ID token at the enterprise IdP, the
//! checks of the ID-JAG it answers with (decoded, not trusted: it must name the authorization
//! server and the resource asked for before it is sent there), and the ID-JAGs kept for their
//! short lifetime.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use oauth2::TokenResponse as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::de::{MapAccess, Visitor};
use serde_json::Value;
use tokio::time::Instant;

use super::response::{RawTokenResponse, Requested};
use super::{GrantClient, TOKEN_EXCHANGE, requested_protocol};
use crate::error::Error;
use crate::key::SubjectFingerprint;
use crate::resource::{ResourceUri, shorten};
use crate::scope::ScopeSet;

/// RFC 8693 §3: the subject token type of an ID token.
pub(crate) const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The token type of an ID-JAG, asked for and required in the IdP's answer.
const ID_JAG_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// The JOSE `typ` of an ID-JAG (RFC 7515 §4.1.9: compared without case, `application/`
/// optional).
const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// An ID-JAG is not presented in its last seconds: it could expire on the way.
const EARLY: Duration = Duration::from_secs(10);
/// ID-JAGs longer than this are refused unread.
const MAX_LEN: usize = 64 * 1024;

/// base64url without padding, or with it: both are in use; trailing bits are not.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What an ID-JAG is kept under: the IdP, the authorization server it is for, the resource
/// (match key), the scopes and the user (a keyed fingerprint of the ID token).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct IdJagKey {
    pub(crate) idp: String,
    pub(crate) issuer: String,
    pub(crate) resource: String,
    pub(crate) scopes: String,
    pub(crate) subject: SubjectFingerprint,
}

struct Held {
    jwt: SecretString,
    usable_until: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Held>>>;

/// ID-JAGs by key. Each key has a slot whose lock is held during its exchange, so concurrent
/// misses for one key make one exchange and the others take its ID-JAG.
#[derive(Default)]
pub(crate) struct IdJags {
    slots: Mutex<HashMap<IdJagKey, Slot>>,
}

impl fmt::Debug for IdJags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdJags([redacted])")
    }
}

impl IdJags {
    fn slot(&self, key: &IdJagKey) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Slots that nobody else holds and whose ID-JAG has expired (or never came) go: the
        // map holds at most the ID-JAGs in use.
        let now = Instant::now();
        slots.retain(|k, slot| {
            k == key
                || Arc::strong_count(slot) > 1
                || slot.try_lock().map_or(true, |held| {
                    held.as_ref().is_some_and(|h| h.usable_until > now)
                })
        });
        slots.entry(key.clone()).or_default().clone()
    }

    /// The ID-JAG kept for `key` if it is still usable, or the one `exchange` gets (kept for
    /// its lifetime).
    pub(crate) async fn get_or_exchange<F>(
        &self,
        key: &IdJagKey,
        exchange: impl FnOnce() -> F,
    ) -> Result<SecretString, Error>
    where
        F: Future<Output = Result<(SecretString, Duration), Error>>,
    {
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if let Some(current) = held.as_ref()
            && current.usable_until > Instant::now()
        {
            return Ok(current.jwt.clone());
        }
        *held = None;
        let (jwt, lifetime) = exchange().await?;
        if let Some(usable) = lifetime.checked_sub(EARLY) {
            *held = Some(Held {
                jwt: jwt.clone(),
                usable_until: Instant::now() + usable,
            });
        }
        Ok(jwt)
    }

    /// Drops the ID-JAG kept for `key` if it is still `jwt` (the authorization server refused
    /// it).
    pub(crate) async fn drop_if_current(&self, key: &IdJagKey, jwt: &SecretString) {
        let slot = self.slot(key);
        let mut held = slot.lock().await;
        if held
            .as_ref()
            .is_some_and(|h| h.jwt.expose_secret() == jwt.expose_secret())
        {
            *held = None;
        }
    }
}

impl GrantClient {
    /// RFC 8693 token exchange at the IdP (this client is the one registered there): the ID
    /// token for an ID-JAG whose audience is the authorization server `audience` and whose
    /// resource is `resource`, with `scopes`. The answer is checked ([`check`]) before the
    /// ID-JAG goes anywhere. Returns the ID-JAG and how long it lasts.
    pub(crate) async fn exchange_for_id_jag(
        &self,
        id_token: &SecretString,
        audience: &str,
        client_id: &str,
        resource: &ResourceUri,
        scopes: &ScopeSet,
    ) -> Result<(SecretString, Duration), Error> {
        let requested = Requested {
            issued_token_type: Some(ID_JAG_TYPE),
            ..self.requested(resource, scopes)
        };
        let build = || {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", TOKEN_EXCHANGE)
                .append_pair("requested_token_type", ID_JAG_TYPE)
                .append_pair("audience", audience)
                .append_pair("resource", resource.wire());
            if !scopes.is_empty() {
                form.append_pair("scope", scopes.as_str());
            }
            form.append_pair("subject_token", id_token.expose_secret())
                .append_pair("subject_token_type", ID_TOKEN_TYPE);
            self.form_request(form, &requested)
        };
        let sent = self.send(build, &requested).await?;
        let expected = Expected {
            idp: &self.registration.issuer,
            audience,
            client_id,
            resource,
            now: SystemTime::now(),
        };
        check(&sent.raw, &requested, &expected)
    }
}

/// What an ID-JAG must say.
struct Expected<'a> {
    idp: &'a str,
    audience: &'a str,
    client_id: &'a str,
    resource: &'a ResourceUri,
    now: SystemTime,
}

/// Checks the IdP's answer: `issued_token_type` is an ID-JAG (RFC 8693 §2.2.1), and the ID-JAG
/// is a JWT whose `typ` is `oauth-id-jag+jwt`, whose `iss` is the IdP, whose `aud` is the
/// authorization server (and only it), whose `resource` is the one asked for, whose
/// `client_id`, if present, is the client at the authorization server, and which has not
/// expired. Its signature is the authorization server's to check; the client checks what it
/// is about to send where. Returns the ID-JAG and its lifetime (the shorter of `exp` and
/// `expires_in`).
fn check(
    raw: &RawTokenResponse,
    requested: &Requested<'_>,
    expected: &Expected<'_>,
) -> Result<(SecretString, Duration), Error> {
    let refuse = |why: String| {
        requested_protocol(
            requested,
            format!(
                "{why}; the ID-JAG was discarded and nothing was sent to the authorization server"
            ),
        )
    };
    match raw.extra_fields().issued_token_type.as_deref() {
        Some(ID_JAG_TYPE) => {}
        Some(other) => {
            return Err(refuse(format!(
                "the identity provider issued a {:?}, not an ID-JAG ({ID_JAG_TYPE})",
                shorten(other)
            )));
        }
        None => {
            return Err(refuse(
                "the token exchange answer has no issued_token_type (REQUIRED, RFC 8693 §2.2.1)"
                    .to_owned(),
            ));
        }
    }
    let jwt = raw.access_token().secret();
    let (header, claims) = decode(jwt).ok_or_else(|| {
        refuse("the ID-JAG is not a JWT with JSON header and claims (each claim once)".to_owned())
    })?;
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
    let typ_ok = typ.eq_ignore_ascii_case(ID_JAG_TYP)
        || typ
            .get(..12)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/"))
            && typ[12..].eq_ignore_ascii_case(ID_JAG_TYP);
    if !typ_ok {
        return Err(refuse(format!(
            "the ID-JAG's typ is {:?}, not {ID_JAG_TYP:?}",
            shorten(typ)
        )));
    }
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(expected.idp) {
        return Err(refuse(format!(
            "the ID-JAG's iss is {:?}, not the identity provider {:?}",
            shorten(text("iss").unwrap_or("(none)")),
            expected.idp
        )));
    }
    let audience = one_string(claims.get("aud"));
    if audience != Some(expected.audience) {
        return Err(refuse(format!(
            "the ID-JAG's aud is {}, not only the authorization server {:?}",
            shown(claims.get("aud")),
            expected.audience
        )));
    }
    let resource = one_string(claims.get("resource"));
    let same_resource = resource
        .and_then(|r| ResourceUri::parse_with(r, requested.options).ok())
        .is_some_and(|r| r.key() == expected.resource.key());
    if !same_resource {
        return Err(refuse(format!(
            "the ID-JAG's resource is {}, not {:?}",
            shown(claims.get("resource")),
            expected.resource.wire()
        )));
    }
    if let Some(client_id) = claims.get("client_id")
        && client_id.as_str() != Some(expected.client_id)
    {
        return Err(refuse(format!(
            "the ID-JAG's client_id is {}, not the client {:?}",
            shown(Some(client_id)),
            expected.client_id
        )));
    }
    let now = expected
        .now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
        return Err(refuse("the ID-JAG has no exp".to_owned()));
    };
    if exp <= now {
        return Err(refuse("the ID-JAG has expired".to_owned()));
    }
    let mut lifetime = Duration::from_secs(exp - now);
    if let Some(expires_in) = raw.expires_in() {
        lifetime = lifetime.min(expires_in);
    }
    Ok((SecretString::from(jwt.as_str()), lifetime))
}

/// A claim that is one string, or an array of exactly one string.
fn one_string(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(s) => Some(s),
        Value::Array(values) if values.len() == 1 => values[0].as_str(),
        _ => None,
    }
}

/// A claim's value for a message, shortened.
fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "(none)".to_owned(), |v| shorten(&v.to_string()))
}

type Object = serde_json::Map<String, Value>;

/// The header and claims of a compact JWS, each a JSON object in which no member appears
/// twice (parsers disagree on which of two `resource` claims counts; the crate does not
/// guess).
fn decode(jwt: &str) -> Option<(Object, Object)> {
    if jwt.len() > MAX_LEN {
        return None;
    }
    let mut parts = jwt.split('.');
    let (Some(header), Some(claims), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let object = |part: &str| -> Option<Object> {
        let bytes = BASE64URL.decode(part).ok()?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let object = serde::Deserializer::deserialize_map(&mut deserializer, UniqueMembers).ok()?;
        deserializer.end().ok()?;
        Some(object)
    };
    Some((object(header)?, object(claims)?))
}

/// A JSON object whose members are each named once.
struct UniqueMembers;

impl<'de> Visitor<'de> for UniqueMembers {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with each member once")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
        let mut object = Object::new();
        while let Some((name, value)) = map.next_entry::<String, Value>()? {
            if object.insert(name, value).is_some() {
                return Err(serde::de::Error::custom("a member appears twice"));
            }
        }
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    fn jwt(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn decoding_refuses_a_claim_named_twice_and_what_is_not_a_jws() {
        let header = r#"{"typ":"oauth-id-jag+jwt","alg":"ES256"}"#;
        assert!(decode(&jwt(header, r#"{"resource":"a"}"#)).is_some());
        assert!(decode(&jwt(header, r#"{"resource":"a","resource":"b"}"#)).is_none());
        assert!(decode(&jwt(header, r#"["resource"]"#)).is_none());
        assert!(decode(&jwt(header, r#"{"a":1} trailing"#)).is_none());
        assert!(decode("only.two").is_none());
        assert!(decode("a.b.c.d").is_none());
    }

    #[test]
    fn one_string_takes_a_string_or_an_array_of_one() {
        assert_eq!(one_string(Some(&json!("x"))), Some("x"));
        assert_eq!(one_string(Some(&json!(["x"]))), Some("x"));
        assert_eq!(one_string(Some(&json!(["x", "y"]))), None);
        assert_eq!(one_string(Some(&json!(1))), None);
        assert_eq!(one_string(None), None);
    }
}
