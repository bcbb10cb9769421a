//! The spec vectors (`tests/vectors/*.json`): every row must pass, and every row is checked
//! for its exact outcome (key, wire form, error class, coverage verdict, audience verdict).

use audience_cache::resource::{HostProblem, PortProblem};
use audience_cache::{
    AudienceMode, AudiencePolicy, CacheKey, Coverage, CoverageRefusal, ParseOptions, RefusalKind,
    ResourceError, ResourceUri, ScopeSet,
};
use base64::Engine as _;
use serde::Deserialize;
use url::Url;

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The reason class of a rejection, as the vector files name it.
fn class(error: &ResourceError) -> String {
    match error {
        ResourceError::Empty => "empty".into(),
        ResourceError::TooLong { .. } => "too_long".into(),
        ResourceError::Whitespace { .. } => "whitespace".into(),
        ResourceError::ControlCharacter { .. } => "control_character".into(),
        ResourceError::InvisibleCharacter { .. } => "invisible_character".into(),
        ResourceError::Backslash { .. } => "backslash".into(),
        ResourceError::NonAscii { .. } => "non_ascii".into(),
        ResourceError::InvalidCharacter { .. } => "invalid_character".into(),
        ResourceError::RelativeReference { .. } => "relative_reference".into(),
        ResourceError::MissingScheme { .. } => "missing_scheme".into(),
        ResourceError::UnsupportedScheme { .. } => "unsupported_scheme".into(),
        ResourceError::InsecureScheme { .. } => "insecure_scheme".into(),
        ResourceError::NoAuthority { .. } => "no_authority".into(),
        ResourceError::Fragment { .. } => "fragment".into(),
        ResourceError::Userinfo { .. } => "userinfo".into(),
        ResourceError::EmptyHost => "empty_host".into(),
        ResourceError::Host { problem, .. } => format!(
            "host:{}",
            match problem {
                HostProblem::TrailingDot => "trailing_dot",
                HostProblem::EmptyLabel => "empty_label",
                HostProblem::PercentEncoded => "percent_encoded",
                HostProblem::InvalidCharacter => "invalid_character",
                HostProblem::NonCanonicalIpv4 => "non_canonical_ipv4",
                HostProblem::InvalidIpv4 => "invalid_ipv4",
                HostProblem::InvalidIpv6 => "invalid_ipv6",
                HostProblem::Ipv6Zone => "ipv6_zone",
                HostProblem::EmbeddedIpv4 => "embedded_ipv4",
                HostProblem::NotRoundTrippable => "not_round_trippable",
                HostProblem::InvalidIdn => "invalid_idn",
                HostProblem::TooLong => "too_long",
                other => panic!("unclassified host problem {other:?}"),
            }
        ),
        ResourceError::Port { problem, .. } => format!(
            "port:{}",
            match problem {
                PortProblem::Zero => "zero",
                PortProblem::NotDigits => "not_digits",
                PortProblem::OutOfRange => "out_of_range",
                other => panic!("unclassified port problem {other:?}"),
            }
        ),
        ResourceError::DotSegment { .. } => "dot_segment".into(),
        ResourceError::AmbiguousPath { .. } => "ambiguous_path".into(),
        ResourceError::MalformedEscape { .. } => "malformed_escape".into(),
        ResourceError::EscapedControl { .. } => "escaped_control".into(),
        ResourceError::EmptyQuery => "empty_query".into(),
        ResourceError::Unparseable { .. } => "unparseable".into(),
        ResourceError::ParserDisagreement { .. } => "parser_disagreement".into(),
        other => panic!("unclassified error {other:?}"),
    }
}

#[derive(Deserialize)]
struct ResourceVector {
    id: String,
    input: String,
    #[serde(default)]
    loopback_http: bool,
    key: Option<String>,
    wire: Option<String>,
    error: Option<String>,
    #[serde(default)]
    ok: bool,
}

#[test]
fn section_a_resource_canonicalization() {
    let vectors: Vec<ResourceVector> = load("resource.json");
    assert!(
        vectors.len() >= 80,
        "vector file truncated: {}",
        vectors.len()
    );
    let mut failures = Vec::new();
    for v in &vectors {
        let options = ParseOptions::strict().allow_insecure_http_on_loopback(v.loopback_http);
        let got = ResourceUri::parse_with(&v.input, &options);
        let verdict = match (&got, &v.error) {
            (Err(e), Some(expected)) if class(e) == *expected => Ok(()),
            (Err(e), _) => Err(format!("got error {} ({e})", class(e))),
            (Ok(r), Some(expected)) => Err(format!("expected {expected}, got key {}", r.key())),
            (Ok(r), None) => {
                let key_ok = v.key.as_deref().is_none_or(|k| r.key() == k);
                // The wire form defaults to the key unless the vector names it.
                let wire = v.wire.as_deref().or(v.key.as_deref());
                let wire_ok = wire.is_none_or(|w| r.wire() == w);
                assert!(v.ok || v.key.is_some(), "{}: vector names no outcome", v.id);
                if key_ok && wire_ok {
                    Ok(())
                } else {
                    Err(format!("got key {} wire {}", r.key(), r.wire()))
                }
            }
        };
        if let Err(why) = verdict {
            failures.push(format!("{}: {:?}: {why}", v.id, v.input));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_error_message_quotes_no_password() {
    let err = ResourceUri::parse("https://user:hunter2@mcp.example.com/").unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("\"user\" with a password"), "{shown}");
}

#[derive(Deserialize)]
struct CoverageVector {
    id: String,
    resource: String,
    request: String,
    expected: String,
}

fn coverage_class(c: &Coverage) -> String {
    match c {
        Coverage::Covered => "covered".into(),
        Coverage::NotCovered => "not_covered".into(),
        Coverage::Refused(CoverageRefusal::Userinfo) => "refused:userinfo".into(),
        Coverage::Refused(CoverageRefusal::AmbiguousPath { .. }) => "refused:ambiguous_path".into(),
        Coverage::Refused(CoverageRefusal::MalformedEscape { .. }) => {
            "refused:malformed_escape".into()
        }
        other => panic!("unclassified coverage {other:?}"),
    }
}

#[test]
fn section_b_request_coverage() {
    let vectors: Vec<CoverageVector> = load("coverage.json");
    let mut failures = Vec::new();
    for v in &vectors {
        let resource = ResourceUri::parse(&v.resource).unwrap_or_else(|e| panic!("{}: {e}", v.id));
        let request = Url::parse(&v.request).unwrap_or_else(|e| panic!("{}: {e}", v.id));
        let got = coverage_class(&resource.covers(&request));
        if got != v.expected {
            failures.push(format!(
                "{}: {} vs {}: expected {}, got {got}",
                v.id, v.resource, v.request, v.expected
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[derive(Deserialize)]
struct AudienceVector {
    id: String,
    payload: Option<serde_json::Value>,
    payload_text: Option<String>,
    token: Option<String>,
    option: Option<String>,
    request: Option<String>,
    expected: String,
}

fn jwt(payload: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64.encode(r#"{"alg":"RS256","typ":"at+jwt"}"#),
        b64.encode(payload)
    )
}

#[test]
fn section_c_audience_decision() {
    let resource = ResourceUri::parse("https://mcp.example.com/mcp").unwrap();
    let vectors: Vec<AudienceVector> = load("audience.json");
    let mut failures = Vec::new();
    for v in &vectors {
        let token = match (&v.payload, &v.payload_text, &v.token) {
            (Some(p), _, _) => jwt(&p.to_string()),
            (_, Some(text), _) => jwt(text),
            (_, _, Some(t)) => t.clone(),
            _ => panic!("{}: no token", v.id),
        };
        let option = v.option.as_deref().unwrap_or("");
        let policy = match option {
            "require" => AudiencePolicy::new(AudienceMode::RequireAud),
            "provenance" => AudiencePolicy::new(AudienceMode::ProvenanceOnly),
            _ => match option.strip_prefix("alias:") {
                Some(alias) => AudiencePolicy::default().with_alias(alias),
                None => AudiencePolicy::default(),
            },
        };
        let request = Url::parse(
            v.request
                .as_deref()
                .unwrap_or("https://mcp.example.com/mcp/tools"),
        )
        .unwrap();
        let got = match policy.decide(&resource, &request, &token) {
            Ok(()) => "allow".to_owned(),
            Err(refusal) => {
                let shown = format!("{refusal} {refusal:?}");
                assert!(
                    !shown.contains(&token),
                    "{}: the refusal shows the token",
                    v.id
                );
                match refusal.kind() {
                    RefusalKind::NotCovered => "deny:not_covered".into(),
                    RefusalKind::AudienceMismatch { .. } => "deny:mismatch".into(),
                    RefusalKind::AudienceUnverifiable { .. } => "deny:unverifiable".into(),
                    RefusalKind::MalformedAudience(_) => "deny:malformed".into(),
                    RefusalKind::AudienceMissing => "deny:missing".into(),
                    other => format!("deny:{other:?}"),
                }
            }
        };
        if got != v.expected {
            failures.push(format!("{}: expected {}, got {got}", v.id, v.expected));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn section_c_refusals_name_resource_audiences_and_request() {
    let resource = ResourceUri::parse("https://mcp.example.com/mcp").unwrap();
    let token = jwt(r#"{"aud":["https://a.example.com","https://b.example.com"]}"#);
    let request = Url::parse("https://mcp.example.com/mcp/tools?api_key=s3cret").unwrap();
    let refusal = AudiencePolicy::default()
        .decide(&resource, &request, &token)
        .unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "token for https://mcp.example.com/mcp is only valid for \"https://a.example.com\" or \
         \"https://b.example.com\"; refusing to send it to https://mcp.example.com/mcp/tools?…"
    );
    assert_eq!(
        refusal.audiences(),
        ["https://a.example.com", "https://b.example.com"]
    );
    assert!(!format!("{refusal:?}").contains("s3cret"));

    let logical = jwt(r#"{"aud":"urn:example:mcp"}"#);
    let refusal = AudiencePolicy::default()
        .decide(&resource, &request, &logical)
        .unwrap_err();
    assert!(
        refusal.to_string().contains("add it as an alias"),
        "{refusal}"
    );
}

/// C21 and C23: a `resource` echoed in a token response is accepted when it is the requested
/// resource after normalization (draft-mcguinness-oauth-resource-token-resp).
#[test]
fn section_c_token_response_resource_matches_after_normalization() {
    let cases = [
        (
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/mcp",
            true,
        ),
        ("https://mcp.example.com/", "https://mcp.example.com", true),
        (
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/mcp/",
            false,
        ),
        (
            "https://mcp.example.com/mcp",
            "https://other.example.com/mcp",
            false,
        ),
    ];
    for (requested, returned, same) in cases {
        let requested = ResourceUri::parse(requested).unwrap();
        let returned = ResourceUri::parse(returned).unwrap();
        assert_eq!(requested == returned, same, "{requested:?} {returned:?}");
    }
}

#[derive(Deserialize)]
struct ScopeVector {
    id: String,
    input: String,
    key: Option<String>,
    #[serde(default)]
    error: bool,
}

#[test]
fn section_d_scope_keys() {
    let vectors: Vec<ScopeVector> = load("scope.json");
    for v in &vectors {
        match (ScopeSet::parse(&v.input), &v.key) {
            (Ok(set), Some(key)) => assert_eq!(set.as_str(), key, "{}", v.id),
            (Err(_), None) if v.error => {}
            (got, _) => panic!("{}: {:?} gave {got:?}", v.id, v.input),
        }
    }
    // D03: the list API gives the same key as a string.
    let listed = ScopeSet::from_items(["files:write", "files:read"]).unwrap();
    assert_eq!(listed, ScopeSet::parse("files:read files:write").unwrap());
    assert!(ScopeSet::from_items(["a b"]).is_err());
    assert!(ScopeSet::from_items([""]).is_err());
    // D21: the challenge's scopes join what was granted.
    let granted = ScopeSet::parse("files:read").unwrap();
    let challenge = ScopeSet::parse("files:read files:write user:profile").unwrap();
    assert_eq!(
        granted.union(&challenge).as_str(),
        "files:read files:write user:profile"
    );
}

#[test]
fn section_f_cache_key_composition() {
    let scopes = |s: &str| ScopeSet::parse(s).unwrap();
    let res = |s: &str| ResourceUri::parse(s).unwrap();
    let key = |iss: &str, r: &str, s: &str| CacheKey::new(iss, &res(r), &scopes(s), "client");
    // F01
    assert_eq!(
        key(
            "https://auth.example.com",
            "https://mcp.example.com/mcp",
            "a b"
        ),
        key(
            "https://auth.example.com",
            "https://MCP.example.com:443/mcp",
            "b a"
        ),
    );
    // F03
    assert_ne!(
        key(
            "https://as1.example.com",
            "https://mcp.example.com/mcp",
            "a"
        ),
        key(
            "https://as2.example.net",
            "https://mcp.example.com/mcp",
            "a"
        ),
    );
    // F05: one key, while each resource keeps its own wire form.
    let configured = res("https://mcp.example.com");
    let discovered =
        ResourceUri::from_metadata("https://mcp.example.com/", &ParseOptions::strict()).unwrap();
    assert_eq!(
        CacheKey::new("https://as", &configured, &scopes("a"), "c"),
        CacheKey::new("https://as", &discovered, &scopes("a"), "c"),
    );
    assert_eq!(
        (configured.wire(), discovered.wire()),
        ("https://mcp.example.com", "https://mcp.example.com/")
    );
    // F07
    let base = key("https://as", "https://mcp.example.com/mcp", "a");
    assert_ne!(
        base.clone().with_account("alice"),
        base.clone().with_account("bob")
    );
    assert_ne!(base.clone().with_account("alice"), base);
    // The issuer is exact: no case folding, no slash normalization (RFC 8414 §3.3).
    assert_ne!(
        key("https://AS.example.com", "https://m.example.com/", "a"),
        key("https://as.example.com", "https://m.example.com/", "a")
    );
    assert_ne!(
        key("https://as.example.com/", "https://m.example.com/", "a"),
        key("https://as.example.com", "https://m.example.com/", "a")
    );
    // Client ids are part of the key.
    let r = res("https://m.example.com/");
    assert_ne!(
        CacheKey::new("https://as", &r, &scopes("a"), "c1"),
        CacheKey::new("https://as", &r, &scopes("a"), "c2")
    );
}
