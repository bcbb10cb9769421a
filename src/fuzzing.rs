//! Fuzzing oracles for the crate's core rules (feature `fuzzing`) and, with feature
//! `arbitrary`, generators of valid values and hostile request URLs: what the crate's own
//! `fuzz/` targets run, what `cargo test` replays from their corpus, and what a downstream
//! crate's `cargo fuzz` targets can call on their own inputs.
//!
//! Each oracle takes arbitrary bytes in the input format its documentation gives, returns
//! quietly for any input on which the crate keeps its invariants, and **panics** with a message
//! naming the broken invariant when the crate breaks one: that is its job, it is how a fuzzer
//! reports a finding. Each function's documentation lists the invariants it checks.
//!
//! ```
//! // A downstream fuzz target: `fuzz_target!(|data: &[u8]| audience_cache::fuzzing::coverage(data));`
//! audience_cache::fuzzing::coverage(b"https://mcp.example.com/mcp\nhttps://mcp.example.com/mcp/x");
//! audience_cache::fuzzing::resource(b"HTTPS://MCP.Example.com:443/mcp");
//! ```
//!
//! # Exact oracles
//!
//! An oracle panics only when the crate is wrong, never because an input is unusual: an input
//! outside its format (not UTF-8, no newline where one is expected, a resource the crate refuses)
//! is skipped, and what it asserts is decided against an independent reading (the reference
//! server reading of [`coverage`], the twin token of [`jwt_aud`]) rather than a search for a
//! symptom that an honest input could show too.
//!
//! # Stability
//!
//! This module is public API and follows semver like the rest of the crate: the functions, their
//! input formats and the invariants they assert stay within a major version. A minor version may
//! make an oracle check more (a stricter oracle finds more bugs in this crate, and stays exact,
//! so it never fires on a downstream input the crate handles correctly), and may add oracles and
//! hostile kinds (`HostileKind`, feature `arbitrary`, is `#[non_exhaustive]`). Removing an invariant, changing an
//! input format or a signature is a breaking change.

#![allow(clippy::panic)]

#[cfg(feature = "arbitrary")]
mod arbitrary;
#[cfg(feature = "arbitrary")]
mod hostile;
mod routing;

#[cfg(feature = "arbitrary")]
pub use hostile::{HostileKind, HostileRequest};

use url::Url;

use crate::audience::{AudiencePolicy, TokenAudience};
use crate::resource::{Coverage, ParseOptions, ResourceUri};
use crate::scope::ScopeSet;

/// Resource parsing. Input: a resource identifier (UTF-8; other bytes are skipped), parsed with
/// strict options and with http allowed on loopback.
///
/// Invariants, for every identifier the crate accepts: parsing does not panic; the key is a
/// fixed point (parsing it gives the same key); the wire form parses to the same resource;
/// [`ResourceUri::from_metadata`] accepts exactly what [`ResourceUri::parse_with`] accepts, with
/// the same key and the input verbatim as its wire form; a resource covers its own URL; it never
/// covers another scheme, another host (one the input does not have) or another port, nor a
/// path that extends its last segment (`/mcp` never covers `/mcpX`).
///
/// # Panics
///
/// When the crate breaks one of these invariants, with a message naming it.
pub fn resource(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    for options in [
        ParseOptions::strict(),
        ParseOptions::strict().allow_insecure_http_on_loopback(true),
    ] {
        let Ok(resource) = ResourceUri::parse_with(input, &options) else {
            continue;
        };
        check_resource(&resource, &options);
        match ResourceUri::from_metadata(input, &options) {
            Ok(from_metadata) if from_metadata == resource && from_metadata.wire() == input => {}
            other => panic!("from_metadata disagrees with parse_with for {input:?}: {other:?}"),
        }
    }
}

fn check_resource(resource: &ResourceUri, options: &ParseOptions) {
    let key = resource.key();
    match ResourceUri::parse_with(key, options) {
        Ok(again) if again.key() == key => {}
        other => panic!("key {key:?} is not a fixed point: {other:?}"),
    }
    match ResourceUri::parse_with(resource.wire(), options) {
        Ok(again) if again == *resource => {}
        other => panic!(
            "wire form {:?} does not parse to {key:?}: {other:?}",
            resource.wire()
        ),
    }
    let own = resource.as_url();
    if resource.covers(own) != Coverage::Covered {
        panic!(
            "{key:?} does not cover its own URL: {:?}",
            resource.covers(own)
        );
    }
    // Another origin: change the host, the port, the scheme. The other host is one the
    // input does not have: a fixed one could be the input's own host.
    let mut others = Vec::new();
    let other_host = ["other-origin.invalid", "another-origin.invalid"]
        .into_iter()
        .find_map(|host| {
            let mut other = own.clone();
            (other.set_host(Some(host)).is_ok() && other.host() != own.host()).then_some(other)
        });
    others.extend(other_host);
    let mut other_port = own.clone();
    let port = own.port_or_known_default().unwrap_or(443);
    if other_port
        .set_port(Some(port.wrapping_add(1).max(1)))
        .is_ok()
    {
        others.push(other_port);
    }
    let swapped = if own.scheme() == "https" {
        "http"
    } else {
        "https"
    };
    if let Ok(other_scheme) =
        Url::parse(&format!("{swapped}{}", &own.as_str()[own.scheme().len()..]))
    {
        others.push(other_scheme);
    }
    for other in others {
        if resource.covers(&other).is_covered() {
            panic!("{key:?} covers another origin: {other}");
        }
    }
    // A path that extends the last segment (`/mcp` -> `/mcpX`) is another resource.
    let path = own.path();
    if path != "/" && !path.ends_with('/') {
        let mut extended = own.clone();
        extended.set_path(&format!("{path}X"));
        extended.set_query(None);
        if resource.covers(&extended).is_covered() {
            panic!("{key:?} covers the extended path {extended}");
        }
    }
}

/// Scope parsing. Input: a scope string (UTF-8).
///
/// Invariants, for every string [`ScopeSet::parse`] accepts: no panic; the canonical string is
/// a fixed point; [`ScopeSet::from_items`] over the items builds the same set; the items are
/// sorted and deduplicated.
///
/// # Panics
///
/// When the crate breaks one of these invariants, with a message naming it.
pub fn scope(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = ScopeSet::parse(input) else {
        return;
    };
    match ScopeSet::parse(set.as_str()) {
        Ok(again) if again == set => {}
        other => panic!(
            "scope key {:?} is not a fixed point: {other:?}",
            set.as_str()
        ),
    }
    match ScopeSet::from_items(set.iter()) {
        Ok(again) if again == set => {}
        other => panic!(
            "scope items of {:?} build another set: {other:?}",
            set.as_str()
        ),
    }
    let mut sorted: Vec<&str> = set.iter().collect();
    sorted.dedup();
    if sorted.len() != set.len() || !sorted.windows(2).all(|w| w[0] < w[1]) {
        panic!(
            "scope set {:?} is not sorted and deduplicated",
            set.as_str()
        );
    }
}

/// Coverage ([`ResourceUri::covers`]). Input: a resource identifier, a newline, and a request
/// URL (UTF-8); the resource is parsed with http allowed on loopback, the request with `url`.
///
/// Invariants: no panic; a covered request has the resource's scheme, host and port, and no
/// userinfo; and a server that reads paths the most aggressive way routes a covered request
/// inside the resource. That server decodes every `%XX` again and again until nothing
/// changes, takes `\` as `/`, drops `;params` and resolves dot segments, with and without
/// merging repeated slashes (a reference reading written apart from the crate's own).
///
/// # Panics
///
/// When the crate covers a request it must not, with a message naming the reason.
pub fn coverage(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Some((resource, request)) = input.split_once('\n') else {
        return;
    };
    let options = ParseOptions::strict().allow_insecure_http_on_loopback(true);
    let (Ok(resource), Ok(request)) = (
        ResourceUri::parse_with(resource, &options),
        Url::parse(request),
    ) else {
        return;
    };
    if !resource.covers(&request).is_covered() {
        return;
    }
    let own = resource.as_url();
    let same_origin = own.scheme() == request.scheme()
        && own.host() == request.host()
        && own.port_or_known_default() == request.port_or_known_default();
    if !same_origin {
        panic!("{} covers {request}, another origin", resource.key());
    }
    if !request.username().is_empty() || request.password().is_some() {
        panic!("{} covers {request}, which has userinfo", resource.key());
    }
    for merge_slashes in [false, true] {
        if !routing::routes_inside(own, &request, merge_slashes) {
            panic!(
                "{} covers {request}, which a server decoding its path repeatedly{} routes \
                 outside the resource",
                resource.key(),
                if merge_slashes {
                    " and merging slashes"
                } else {
                    ""
                }
            );
        }
    }
}

/// `aud` reading and the audience decision ([`AudiencePolicy::decide`]). Input: a token
/// (UTF-8); the resource, the requests and the policies are fixed.
///
/// Invariants: no panic on any token, and no refusal shows the token.
///
/// "Shows the token" is checked exactly: the decision may depend on the token only through what
/// [`TokenAudience::inspect`] reads from it, so a different token with the same inspected
/// audience (a twin, see `twin_token`) must get the same decision, with the same text. A
/// refusal that quoted any part of the token, or its length, reads differently for the twin. (A
/// search for the token in the text is not exact: a token may be the refusal's own words.)
///
/// # Panics
///
/// When the decision or its text depends on more of the token than its audience.
pub fn jwt_aud(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let audience = TokenAudience::inspect(token);
    let _ = audience.values();
    let twin = twin_token(token, &audience);
    let Ok(resource) = ResourceUri::parse("https://mcp.example.com/mcp") else {
        panic!("the fixed resource must parse");
    };
    for request in [
        "https://mcp.example.com/mcp/tools",
        "https://other.example.com/mcp",
    ] {
        let Ok(request) = Url::parse(request) else {
            panic!("the fixed request must parse");
        };
        for policy in [
            AudiencePolicy::default(),
            AudiencePolicy::new(crate::audience::AudienceMode::RequireAud)
                .with_alias("urn:example:mcp"),
            AudiencePolicy::new(crate::audience::AudienceMode::ProvenanceOnly),
        ] {
            let decision = policy.decide(&resource, &request, token);
            let twins = policy.decide(&resource, &request, &twin);
            let shown = |decision: &Result<(), crate::audience::Refusal>| match decision {
                Ok(()) => String::new(),
                Err(refusal) => format!("{refusal}\n{refusal:?}"),
            };
            if decision != twins || shown(&decision) != shown(&twins) {
                panic!(
                    "the decision depends on more of the token than its audience (a refusal \
                     shows the token?): {} / for a twin token: {}",
                    shown(&decision),
                    shown(&twins)
                );
            }
        }
    }
}

/// A token other than `token` whose inspected audience is `audience`: a JWS with a one-byte
/// header, no signature and a minimal JSON payload, or an opaque string. It is never longer
/// than `token` (so it stays within the inspection bound): a readable `token` has a header of
/// at least one byte, and its payload holds at least the same claim in JSON at least as long.
fn twin_token(token: &str, audience: &TokenAudience) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payloads: Vec<String> = match audience.values() {
        Some(values) if values.len() == 1 => {
            vec![serde_json::json!({ "aud": values[0] }).to_string()]
        }
        Some(values) => vec![serde_json::json!({ "aud": values }).to_string()],
        None if audience.is_readable_jwt() => [
            "{}",
            r#"{"aud":0}"#,
            r#"{"aud":[]}"#,
            r#"{"aud":0,"aud":0}"#,
        ]
        .map(String::from)
        .to_vec(),
        None => Vec::new(),
    };
    for header in ["x", "y"] {
        let jws = payloads
            .iter()
            .map(|payload| format!("{header}.{}.", engine.encode(payload)));
        for candidate in jws.chain([format!("opaque-{header}")]) {
            if candidate != token && TokenAudience::inspect(&candidate) == *audience {
                return candidate;
            }
        }
    }
    panic!("no twin token reads as {audience:?}");
}

/// `WWW-Authenticate` parsing and challenge selection. Input: header field values separated
/// by `\n` (values the `http` crate refuses are skipped).
///
/// Invariants: no panic; parsing is deterministic; the limits on challenges and parameters
/// hold; no returned challenge repeats a parameter name; displayed server text has no control
/// characters; `Debug` never shows a token68; a selected `resource_metadata` is an absolute
/// http(s) URL with a host that reads back as itself, and the strict guard accepts it only on
/// the request's https origin.
///
/// # Panics
///
/// When the crate breaks one of these invariants, with a message naming it.
pub fn challenge(data: &[u8]) {
    use crate::challenge::{Challenges, TokenType};
    use crate::discovery::{DiscoveryOptions, check_resource_metadata_url};
    use http::HeaderValue;

    let values: Vec<HeaderValue> = data
        .split(|&b| b == b'\n')
        .filter_map(|value| HeaderValue::from_bytes(value).ok())
        .collect();
    let parsed = Challenges::parse(&values);
    if parsed != Challenges::parse(&values) {
        panic!("parsing the same header twice gave different results");
    }
    let challenges = match parsed {
        Ok(challenges) => challenges,
        Err(error) => {
            let _ = format!("{error} {error:?}");
            return;
        }
    };
    if challenges.len() + challenges.rejected().len() > Challenges::MAX_CHALLENGES {
        panic!("more than MAX_CHALLENGES challenges");
    }
    for challenge in &challenges {
        let names: Vec<String> = challenge
            .params()
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != names.len() {
            panic!("challenge {challenge:?} repeats a parameter name");
        }
        if names.len() > Challenges::MAX_PARAMS {
            panic!("challenge {challenge:?} has more than MAX_PARAMS parameters");
        }
        for text in [
            challenge.error_description(),
            challenge.realm(),
            challenge.error_uri(),
        ]
        .into_iter()
        .flatten()
        {
            if text.to_string().chars().any(char::is_control) {
                panic!("displayed server text keeps a control character: {text:?}");
            }
        }
        if let Some(code) = challenge.error()
            && code.to_string().chars().any(char::is_control)
        {
            panic!("displayed error code keeps a control character: {code:?}");
        }
        let _ = challenge.scope();
        // The scheme is shown, and may happen to contain the token68's text.
        let shown = format!("{challenge:?}").replacen(&format!("{:?}", challenge.scheme()), "", 1);
        if let Some(token68) = challenge.token68()
            && token68.len() >= 16
            && shown.contains(token68)
        {
            panic!("Debug shows a token68");
        }
    }
    let Ok(request) = Url::parse("https://mcp.example.com/mcp/x") else {
        panic!("the fixed request must parse");
    };
    for token_type in [TokenType::Bearer, TokenType::DPoP] {
        let selected = match challenges.select(&request, token_type) {
            Ok(selected) => selected,
            Err(error) => {
                let _ = format!("{error} {error:?}");
                continue;
            }
        };
        let Some(url) = selected.resource_metadata() else {
            continue;
        };
        let absolute = matches!(url.scheme(), "https" | "http")
            && url.host().is_some()
            && Url::parse(url.as_str()).as_ref() == Ok(url);
        if !absolute {
            panic!("selected resource_metadata {url} is not an absolute http(s) URL");
        }
        if check_resource_metadata_url(url, &request, &DiscoveryOptions::strict()).is_ok()
            && (url.origin() != request.origin() || url.scheme() != "https")
        {
            panic!("the strict guard accepted {url} for {request}");
        }
    }
}

/// The loopback listener's reading of a browser's request ([`LoopbackListener`]). Input: the
/// expected `state`, a newline, then the request head as sent (any bytes).
///
/// Invariants: no panic; a request the listener takes as the redirect stands for a URL on
/// 127.0.0.1 at the listener's port and the redirect URI's path, and carries exactly one
/// `state` that, read the way the crate completes an authorization (`url`'s query pairs), is
/// the expected one: the listener's own reading and the completion's never disagree about a
/// redirect it ends the wait with.
///
/// # Panics
///
/// When the crate breaks one of these invariants, with a message naming it.
///
/// [`LoopbackListener`]: crate::LoopbackListener
pub fn loopback_redirect(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(state) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let head = &data[split + 1..];
    let Ok(redirect_uri) = Url::parse("http://127.0.0.1:53682/callback") else {
        panic!("the fixed redirect URI must parse");
    };
    let state = (!state.is_empty()).then_some(state);
    let Some(url) = crate::authorization::redirect_from_head(&redirect_uri, state, head) else {
        return;
    };
    if url.host_str() != Some("127.0.0.1") || url.port() != Some(53682) {
        panic!("the listener returned a redirect to another host or port: {url}");
    }
    if !crate::redirect_uri::same_endpoint(&url, &redirect_uri) {
        panic!("the listener returned a redirect that is not the redirect URI: {url}");
    }
    if let Some(expected) = state {
        let states: Vec<String> = url
            .query_pairs()
            .filter(|(name, _)| name == "state")
            .map(|(_, value)| value.into_owned())
            .collect();
        if states != [expected] {
            panic!(
                "the listener accepted {url} for state {expected:?}; the completion reads {states:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The twin of a token reads the same and differs from it, for every kind of token,
    /// including one at the inspection bound.
    #[test]
    fn twins_read_as_the_token_and_are_no_longer() {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jws = |header: &str, payload: &str, signature: &str| {
            format!("{header}.{}.{signature}", engine.encode(payload))
        };
        let at_bound = {
            let head = jws("h", r#"{"aud":["https://a.example","b"]}"#, "");
            format!("{head}{}", "s".repeat(64 * 1024 - head.len()))
        };
        let tokens = [
            "2YotnFZFEjr1zCsicMWpAA".to_owned(),
            "opaque-x".to_owned(),
            "token for https://mcp.example.com/mcp has no readable aud claim ".to_owned(),
            jws("x", "{}", ""),
            jws(
                "eyJhbGciOiJSUzI1NiJ9",
                r#"{"sub":"x","aud":"https://a.example"}"#,
                "c2ln",
            ),
            jws("x", r#"{"aud":"https://a.example"}"#, ""),
            jws("x", r#"{"aud":["https://a.example"]}"#, ""),
            jws("x", r#"{"aud":0}"#, ""),
            jws("y", r#"{"aud":[]}"#, ""),
            jws("x", r#"{"aud":"a","aud":"b"}"#, ""),
            jws("x", r#"{"aud":"caf\u00e9 \"\\/"}"#, ""),
            at_bound,
        ];
        for token in tokens {
            let audience = TokenAudience::inspect(&token);
            let twin = twin_token(&token, &audience);
            assert_ne!(twin, token);
            assert_eq!(TokenAudience::inspect(&twin), audience, "{token:.80}");
            assert!(twin.len() <= token.len().max(8), "{token:.80}");
        }
    }
}
