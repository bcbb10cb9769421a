//! The core rules, through the public API, at the edges where a small change in the code would
//! change the answer: the trailing slash of a URL audience, the bounds of `aud` reading, request
//! paths with legal escapes, and the exact text users read in scopes, cache keys, coverage
//! answers and refusals.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use audience_cache::audience::{MalformedAud, TokenAudience};
use audience_cache::{
    AudienceMode, AudiencePolicy, CacheKey, Coverage, CoverageRefusal, Refusal, RefusalKind,
    ResourceUri, ScopeError, ScopeSet,
};
use base64::Engine as _;
use url::Url;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A JWS-shaped token: the header and signature are never read, only the payload.
fn jwt(payload: &str) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        B64.encode(r#"{"alg":"RS256","typ":"at+jwt"}"#),
        B64.encode(payload)
    )
}

fn resource(s: &str) -> ResourceUri {
    ResourceUri::parse(s).unwrap()
}

/// The key the cache makes for a token obtained by token exchange for `account`, with the
/// issuer, resource, scopes and client of [`base_key`]: an exchanged key can only be made by
/// the cache, from a subject token (its fingerprint is keyed by a secret of the cache's).
fn exchanged_key(account: &str) -> CacheKey {
    use audience_cache::testing::{AuthorizationServer, Client};
    use audience_cache::{ClientRegistration, ResourceConfig, SubjectToken, TokenCache};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let issuer = "https://auth.example.com";
        let server = AuthorizationServer::builder()
            .client(Client::confidential("client-1", "s"))
            .in_process_at(issuer);
        let mcp = resource("https://mcp.example.com/mcp");
        let cache = TokenCache::builder()
            .in_process(&server)
            .client(
                ClientRegistration::new(issuer, url(&server.token_endpoint()), "client-1")
                    .client_secret_basic("s".into()),
            )
            .resource(ResourceConfig::new(mcp.clone(), issuer))
            .build()
            .unwrap();
        let scopes = ScopeSet::parse("b a").unwrap();
        let subject = cache.token(&mcp, &scopes).await.unwrap();
        let subject = SubjectToken::access_token(subject.expose_secret().to_owned().into());
        let token = cache
            .exchange_token(&mcp, &scopes, subject, account)
            .await
            .unwrap();
        token.key().clone()
    })
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn deny_on_mismatch() -> AudiencePolicy {
    AudiencePolicy::new(AudienceMode::DenyOnMismatch)
}

fn require_aud() -> AudiencePolicy {
    AudiencePolicy::new(AudienceMode::RequireAud)
}

/// The decision as a short word, so tables read like the rule.
fn decision(policy: &AudiencePolicy, resource: &ResourceUri, request: &str, token: &str) -> String {
    match policy.decide(resource, &url(request), token) {
        Ok(()) => "allow".into(),
        Err(refusal) => match refusal.kind() {
            RefusalKind::NotCovered => "not-covered".into(),
            RefusalKind::RequestRefused(_) => "request-refused".into(),
            RefusalKind::AudienceMismatch { .. } => "mismatch".into(),
            RefusalKind::AudienceUnverifiable { .. } => "unverifiable".into(),
            RefusalKind::MalformedAudience(_) => "malformed".into(),
            RefusalKind::AudienceMissing => "missing".into(),
            other => format!("{other:?}"),
        },
    }
}

// --- `aud`: one trailing slash of a URL audience is ignored ---------------------------------

/// An `aud` of `https://h/mcp/` stands for the resource `https://h/mcp` (one trailing slash
/// ignored), so it covers a request to exactly `https://h/mcp`, which the resource
/// `https://h/mcp/` itself would not cover.
#[test]
fn an_aud_with_a_trailing_slash_covers_the_path_without_it() {
    let token = jwt(r#"{"aud":"https://mcp.example.com/mcp/"}"#);
    let exact = resource("https://mcp.example.com/mcp");
    for policy in [deny_on_mismatch(), require_aud()] {
        for request in [
            "https://mcp.example.com/mcp",
            "https://mcp.example.com/mcp/",
            "https://mcp.example.com/mcp/tools",
        ] {
            assert_eq!(
                decision(&policy, &exact, request, &token),
                "allow",
                "{request}"
            );
        }
    }
    // The resource with the trailing slash does not cover the bare path: provenance decides
    // before `aud` is read.
    let slashed = resource("https://mcp.example.com/mcp/");
    assert!(
        !slashed
            .covers(&url("https://mcp.example.com/mcp"))
            .is_covered()
    );
    assert_eq!(
        decision(
            &deny_on_mismatch(),
            &slashed,
            "https://mcp.example.com/mcp",
            &token
        ),
        "not-covered"
    );
}

/// Under a resource that covers the whole origin, only the `aud` value decides; each value
/// differs from the resource, so its own coverage is computed.
#[test]
fn url_audiences_cover_by_their_own_path_under_a_root_resource() {
    let root = resource("https://mcp.example.com/");
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "https://mcp.example.com/mcp/",
            &[
                ("/mcp", "allow"),
                ("/mcp/", "allow"),
                ("/mcp/tools", "allow"),
                ("/mcpx", "mismatch"),
                ("/mc", "mismatch"),
                ("/", "mismatch"),
            ],
        ),
        (
            "https://mcp.example.com/mcp",
            &[
                ("/mcp", "allow"),
                ("/mcp/", "allow"),
                ("/mcp/x", "allow"),
                ("/mcpx", "mismatch"),
                ("/mc", "mismatch"),
                ("/mc/x", "mismatch"),
            ],
        ),
        // One slash only: `/mcp//` is the audience `/mcp/`, which covers `/mcp/x` but not `/mcp`.
        (
            "https://mcp.example.com/mcp//",
            &[
                ("/mcp//", "allow"),
                ("/mcp//x", "allow"),
                ("/mcp/x", "allow"),
                ("/mcp", "mismatch"),
            ],
        ),
        // With a query the audience names exactly that path and query; its slash is kept.
        (
            "https://mcp.example.com/mcp/?v=1",
            &[
                ("/mcp/?v=1", "allow"),
                ("/mcp?v=1", "mismatch"),
                ("/mcp/", "mismatch"),
                ("/mcp/x?v=1", "mismatch"),
            ],
        ),
    ];
    for (aud, requests) in cases {
        let token = jwt(&format!(r#"{{"aud":"{aud}"}}"#));
        for (path, expected) in *requests {
            let request = format!("https://mcp.example.com{path}");
            for policy in [deny_on_mismatch(), require_aud()] {
                assert_eq!(
                    decision(&policy, &root, &request, &token),
                    *expected,
                    "aud {aud} for {request} ({:?})",
                    policy.mode()
                );
            }
        }
    }
}

// --- `aud` reading: bounds and shape ---------------------------------------------------------

/// A token of exactly `len` bytes whose payload names `aud`; the signature pads it.
fn jwt_of_len(aud: &str, len: usize) -> String {
    let head = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"RS256"}"#),
        B64.encode(format!(r#"{{"aud":"{aud}"}}"#))
    );
    let token = format!("{head}{}", "A".repeat(len - head.len()));
    assert_eq!(token.len(), len);
    token
}

/// Tokens up to 64 KiB are inspected, longer ones are not (RFC 9068 §6: the client must not
/// depend on the format, so what is not read only passes on provenance).
#[test]
fn aud_is_read_from_tokens_up_to_64_kib_and_no_longer() {
    const LIMIT: usize = 64 * 1024;
    let mcp = resource("https://mcp.example.com/mcp");
    let request = "https://mcp.example.com/mcp/tools";
    let other = "https://other.example.com/mcp";

    for len in [LIMIT - 1, LIMIT] {
        let token = jwt_of_len(other, len);
        let audience = TokenAudience::inspect(&token);
        assert_eq!(audience.values(), Some(vec![other]), "{len}");
        assert!(audience.is_readable_jwt(), "{len}");
        assert_eq!(
            decision(&deny_on_mismatch(), &mcp, request, &token),
            "mismatch"
        );
    }
    let token = jwt_of_len(other, LIMIT + 1);
    let audience = TokenAudience::inspect(&token);
    assert_eq!(audience.values(), None);
    assert!(!audience.is_readable_jwt());
    assert_eq!(
        decision(&deny_on_mismatch(), &mcp, request, &token),
        "allow"
    );
    assert_eq!(decision(&require_aud(), &mcp, request, &token), "missing");
}

/// A JWS needs a header and a payload; with either part empty the token is not a readable
/// JWT, even when the other parts would read.
#[test]
fn a_token_with_an_empty_header_or_payload_is_not_read() {
    let mcp = resource("https://mcp.example.com/mcp");
    let request = "https://mcp.example.com/mcp/tools";
    let payload = B64.encode(r#"{"aud":"https://other.example.com"}"#);
    let header = B64.encode(r#"{"alg":"RS256"}"#);
    for token in [
        format!(".{payload}.c2ln"),
        format!("{header}..c2ln"),
        "..c2ln".to_owned(),
    ] {
        let audience = TokenAudience::inspect(&token);
        assert_eq!(audience.values(), None, "{token}");
        assert!(!audience.is_readable_jwt(), "{token}");
        assert_eq!(
            decision(&deny_on_mismatch(), &mcp, request, &token),
            "allow"
        );
        assert_eq!(decision(&require_aud(), &mcp, request, &token), "missing");
    }
    // The same payload with a header is read and refused.
    let token = format!("{header}.{payload}.c2ln");
    assert!(TokenAudience::inspect(&token).is_readable_jwt());
    assert_eq!(
        decision(&deny_on_mismatch(), &mcp, request, &token),
        "mismatch"
    );
}

/// A readable JWT is one with a JSON-object payload, whether or not `aud` is in it and whether
/// or not it is well formed.
#[test]
fn readable_jwts_are_told_from_other_tokens() {
    let cases = [
        ("2YotnFZFEjr1zCsicMWpAA".to_owned(), false, None),
        ("a.b.c.d".to_owned(), false, None),
        (jwt("[1]"), false, None),
        (jwt(r#"{"sub":"x"}"#), true, None),
        (jwt(r#"{"aud":7}"#), true, None),
        (jwt(r#"{"aud":[]}"#), true, None),
        (jwt(r#"{"aud":["a","b"]}"#), true, Some(vec!["a", "b"])),
    ];
    for (token, readable, values) in cases {
        let audience = TokenAudience::inspect(&token);
        assert_eq!(audience.is_readable_jwt(), readable, "{token}");
        assert_eq!(audience.values(), values, "{token}");
    }
}

/// The three ways an `aud` claim is malformed, as the user reads them in a refusal.
#[test]
fn malformed_audiences_read_as_what_is_wrong() {
    let mcp = resource("https://mcp.example.com/mcp");
    let request = url("https://mcp.example.com/mcp/tools");
    let cases = [
        (
            r#"{"aud":{"x":1}}"#,
            MalformedAud::NotStringOrArray,
            "its aud claim is not a string or an array of strings",
        ),
        (
            r#"{"aud":[]}"#,
            MalformedAud::EmptyArray,
            "its aud claim is an empty array",
        ),
        (
            r#"{"aud":"https://mcp.example.com/mcp","aud":"https://mcp.example.com/mcp"}"#,
            MalformedAud::Duplicated,
            "its aud claim appears more than once",
        ),
    ];
    for (payload, kind, text) in cases {
        assert_eq!(kind.to_string(), text);
        let refusal = deny_on_mismatch()
            .decide(&mcp, &request, &jwt(payload))
            .unwrap_err();
        assert_eq!(refusal.kind(), &RefusalKind::MalformedAudience(kind));
        assert_eq!(
            refusal.to_string(),
            format!(
                "token for https://mcp.example.com/mcp is refused for \
                 https://mcp.example.com/mcp/tools: {text}"
            )
        );
        assert_eq!(refusal.audiences(), [] as [String; 0]);
    }
}

// --- the audience decision ------------------------------------------------------------------

/// Aliases are exact strings; a logical value that is not an alias makes the refusal
/// "unverifiable", URLs alone make it a "mismatch".
#[test]
fn aliases_are_exact_and_unknown_logical_audiences_are_unverifiable() {
    let mcp = resource("https://mcp.example.com/mcp");
    let request = "https://mcp.example.com/mcp/tools";
    let aliased = deny_on_mismatch().with_alias("urn:example:mcp");
    let cases = [
        (r#"{"aud":"urn:example:mcp"}"#, "allow", "unverifiable"),
        (
            r#"{"aud":"URN:example:mcp"}"#,
            "unverifiable",
            "unverifiable",
        ),
        (
            r#"{"aud":"urn:example:mcp2"}"#,
            "unverifiable",
            "unverifiable",
        ),
        (
            r#"{"aud":["https://other.example.com","urn:example:mcp"]}"#,
            "allow",
            "unverifiable",
        ),
        (
            r#"{"aud":["https://other.example.com","urn:x"]}"#,
            "unverifiable",
            "unverifiable",
        ),
        (
            r#"{"aud":["https://other.example.com","https://mcp.example.com/mcp/tools"]}"#,
            "allow",
            "allow",
        ),
        (
            r#"{"aud":["https://other.example.com","https://mcp.example.com/other"]}"#,
            "mismatch",
            "mismatch",
        ),
    ];
    for (payload, with_alias, without) in cases {
        let token = jwt(payload);
        assert_eq!(
            decision(&aliased, &mcp, request, &token),
            with_alias,
            "{payload}"
        );
        assert_eq!(
            decision(&deny_on_mismatch(), &mcp, request, &token),
            without,
            "{payload}"
        );
    }
    assert_eq!(aliased.aliases(), ["urn:example:mcp"]);
    assert_eq!(aliased.mode(), AudienceMode::DenyOnMismatch);
    assert_eq!(require_aud().mode(), AudienceMode::RequireAud);
    assert_eq!(
        AudiencePolicy::new(AudienceMode::ProvenanceOnly)
            .with_alias("a")
            .mode(),
        AudienceMode::ProvenanceOnly
    );
    assert_eq!(
        AudiencePolicy::default().mode(),
        AudienceMode::DenyOnMismatch
    );
}

/// Provenance only: `aud` is never read, so even a malformed or foreign `aud` passes, and
/// provenance still refuses a request outside the resource.
#[test]
fn provenance_only_never_reads_aud() {
    let mcp = resource("https://mcp.example.com/mcp");
    let policy = AudiencePolicy::new(AudienceMode::ProvenanceOnly);
    for payload in [r#"{"aud":"https://other.example.com"}"#, r#"{"aud":[]}"#] {
        let token = jwt(payload);
        assert_eq!(
            decision(&policy, &mcp, "https://mcp.example.com/mcp/x", &token),
            "allow"
        );
        assert_eq!(
            decision(&policy, &mcp, "https://mcp.example.com/other", &token),
            "not-covered"
        );
    }
}

/// The audiences a refusal lists: quoted, joined with "or" before the last, at most five and
/// a count of the rest.
#[test]
fn refusals_list_at_most_five_audiences() {
    let mcp = resource("https://mcp.example.com/mcp");
    let request = url("https://mcp.example.com/mcp");
    let refusal_for = |auds: &[&str]| -> Refusal {
        let payload = serde_json::json!({ "aud": auds }).to_string();
        deny_on_mismatch()
            .decide(&mcp, &request, &jwt(&payload))
            .unwrap_err()
    };
    let prefix = "token for https://mcp.example.com/mcp is only valid for ";
    let suffix = "; refusing to send it to https://mcp.example.com/mcp";
    let cases: &[(&[&str], &str)] = &[
        (&["https://a.example"], r#""https://a.example""#),
        (
            &["https://a.example", "https://b.example"],
            r#""https://a.example" or "https://b.example""#,
        ),
        (
            &[
                "https://a.example",
                "https://b.example",
                "https://c.example",
            ],
            r#""https://a.example", "https://b.example" or "https://c.example""#,
        ),
        (
            &[
                "https://1.example",
                "https://2.example",
                "https://3.example",
                "https://4.example",
                "https://5.example",
            ],
            r#""https://1.example", "https://2.example", "https://3.example", "https://4.example" or "https://5.example""#,
        ),
        (
            &[
                "https://1.example",
                "https://2.example",
                "https://3.example",
                "https://4.example",
                "https://5.example",
                "https://6.example",
                "https://7.example",
            ],
            r#""https://1.example", "https://2.example", "https://3.example", "https://4.example" or "https://5.example" (and 2 more)"#,
        ),
    ];
    for (auds, listed) in cases {
        let refusal = refusal_for(auds);
        assert_eq!(refusal.to_string(), format!("{prefix}{listed}{suffix}"));
        assert_eq!(refusal.audiences(), *auds);
    }
}

/// What a refusal names: the resource's key and the request without userinfo or query text.
#[test]
fn refusals_name_the_resource_and_a_redacted_request() {
    let mcp = resource("https://MCP.example.com:443/mcp");
    let token = jwt(r#"{"aud":"https://mcp.example.com/mcp"}"#);
    let cases = [
        (
            "https://mcp.example.com/other?api_key=s3cret#frag",
            "https://mcp.example.com/other?…",
            "not-covered",
        ),
        (
            "https://mcp.example.com:8443/mcp",
            "https://mcp.example.com:8443/mcp",
            "not-covered",
        ),
        (
            "https://alice:pw@mcp.example.com/mcp/x",
            "https://mcp.example.com/mcp/x",
            "request-refused",
        ),
        (
            "http://mcp.example.com/mcp",
            "http://mcp.example.com/mcp",
            "not-covered",
        ),
    ];
    for (request, shown, kind) in cases {
        assert_eq!(decision(&deny_on_mismatch(), &mcp, request, &token), kind);
        let refusal = deny_on_mismatch()
            .decide(&mcp, &url(request), &token)
            .unwrap_err();
        assert_eq!(refusal.request(), shown, "{request}");
        assert_eq!(refusal.resource(), "https://mcp.example.com/mcp");
        let text = format!("{refusal} {refusal:?}");
        assert!(!text.contains("s3cret") && !text.contains("pw@"), "{text}");
    }
    let refusal = deny_on_mismatch()
        .decide(&mcp, &url("https://mcp.example.com/other"), &token)
        .unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "token for https://mcp.example.com/mcp is refused for https://mcp.example.com/other, \
         which that resource does not cover; use a token for the resource that covers it"
    );
    let refusal = require_aud()
        .decide(&mcp, &url("https://mcp.example.com/mcp/x"), "opaque-token")
        .unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "token for https://mcp.example.com/mcp has no readable aud claim and the audience mode \
         requires one; refusing to send it to https://mcp.example.com/mcp/x"
    );
}

// --- request paths with escapes ---------------------------------------------------------------

/// Legal escapes in a request path are read, not refused: an escaped unreserved character is
/// the character (RFC 3986 §6.2.2.2), and an escape of anything else stays inside its segment.
#[test]
fn request_paths_with_legal_escapes_are_covered() {
    let mcp = resource("https://mcp.example.com/mcp");
    for path in [
        "/mcp/%74ools",
        "/%6Dcp/tools",
        "/mcp/a%20b",
        "/mcp/a%20b/c%21d",
        "/mcp/caf%C3%A9",
        "/mcp/caf%c3%a9/x%3Ay",
        "/mcp/%25",
        "/mcp/100%25/x",
    ] {
        let request = url(&format!("https://mcp.example.com{path}"));
        assert_eq!(mcp.covers(&request), Coverage::Covered, "{path}");
    }
    for path in ["/m%63p%78", "/%6Dcpx/tools", "/other/%74ools"] {
        let request = url(&format!("https://mcp.example.com{path}"));
        assert_eq!(mcp.covers(&request), Coverage::NotCovered, "{path}");
    }
    // An encoded separator or dot segment is refused, whatever it would match.
    for path in ["/mcp/x%2F..%2F..%2Fadmin", "/mcp/..;/admin", "/mcp/a%5Cb"] {
        let request = url(&format!("https://mcp.example.com{path}"));
        assert!(
            matches!(
                mcp.covers(&request),
                Coverage::Refused(CoverageRefusal::AmbiguousPath { .. })
            ),
            "{path}: {:?}",
            mcp.covers(&request)
        );
    }
}

/// A resource with a query covers exactly its path and its query, however the query's
/// escapes are spelled.
#[test]
fn a_resource_with_a_query_covers_that_query_in_any_spelling() {
    let mcp = resource("https://mcp.example.com/mcp?tenant=a%20b");
    let cases = [
        ("/mcp?tenant=a%20b", true),
        ("/mcp?tenant=a%20B", false),
        ("/mcp?tenant=%61%20b", true),
        ("/mcp?tenant=a%20b&x", false),
        ("/mcp", false),
        ("/mcp/?tenant=a%20b", false),
        ("/m%63p?tenant=a%20b", true),
    ];
    for (path, covered) in cases {
        let request = url(&format!("https://mcp.example.com{path}"));
        assert_eq!(mcp.covers(&request).is_covered(), covered, "{path}");
    }
    let plain = resource("https://mcp.example.com/mcp?v=1");
    assert!(
        plain
            .covers(&url("https://mcp.example.com/mcp?v=1"))
            .is_covered()
    );
    assert!(
        !plain
            .covers(&url("https://mcp.example.com/mcp?v=2"))
            .is_covered()
    );
    assert!(
        !plain
            .covers(&url("https://mcp.example.com/mcp?v=1&w"))
            .is_covered()
    );
}

/// What a user reads when printing a coverage answer.
#[test]
fn coverage_answers_read_as_what_they_mean() {
    let mcp = resource("https://mcp.example.com/mcp");
    let cases = [
        ("https://mcp.example.com/mcp/x", "covered"),
        ("https://mcp.example.com/other", "not covered"),
        (
            "https://u@mcp.example.com/mcp",
            "refused: the request URL has userinfo; tokens are never sent to such URLs",
        ),
        (
            "https://mcp.example.com/mcp/a%2Fb",
            "refused: the request path \"/mcp/a%2Fb\" can be routed differently by servers that \
             decode it (encoded '/', '\\', ';' parameters, dot segments, or an escaped '%' that \
             decodes into another escape)",
        ),
        (
            "https://mcp.example.com/mcp/%zz",
            "refused: the request path \"/mcp/%zz\" has a malformed percent-escape",
        ),
    ];
    for (request, text) in cases {
        assert_eq!(mcp.covers(&url(request)).to_string(), text, "{request}");
    }
}

// --- scopes -----------------------------------------------------------------------------------

#[test]
fn scope_sets_contain_whole_scopes_exactly() {
    let set = ScopeSet::parse("files:read  files:write").unwrap();
    assert!(set.contains("files:read"));
    assert!(set.contains("files:write"));
    for absent in [
        "files",
        "read",
        "FILES:READ",
        "files:read files:write",
        "",
        " ",
    ] {
        assert!(!set.contains(absent), "{absent:?}");
    }
    assert!(!ScopeSet::empty().contains(""));
}

#[test]
fn only_a_set_without_scopes_is_empty() {
    for empty in [
        ScopeSet::empty(),
        ScopeSet::parse("").unwrap(),
        ScopeSet::parse("   ").unwrap(),
    ] {
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.as_str(), "");
    }
    for one in [
        ScopeSet::parse("a").unwrap(),
        ScopeSet::parse(" a ").unwrap(),
    ] {
        assert!(!one.is_empty());
        assert_eq!(one.len(), 1);
    }
}

#[test]
fn scope_sets_parse_from_str_like_parse() {
    let parsed: ScopeSet = " b a b ".parse().unwrap();
    assert_eq!(parsed, ScopeSet::parse("a b").unwrap());
    assert_eq!(parsed.as_str(), "a b");
    assert_eq!(
        "a\tb".parse::<ScopeSet>(),
        Err(ScopeError::InvalidCharacter {
            position: 1,
            character: '\t'
        })
    );
    assert_eq!(
        "x \"y\"".parse::<ScopeSet>(),
        Err(ScopeError::InvalidCharacter {
            position: 2,
            character: '"'
        })
    );
}

#[test]
fn scope_sets_print_canonically() {
    let set = ScopeSet::parse("write read  read").unwrap();
    assert_eq!(set.to_string(), "read write");
    assert_eq!(format!("{set:?}"), r#"ScopeSet("read write")"#);
    assert_eq!(format!("{:?}", ScopeSet::empty()), r#"ScopeSet("")"#);
    assert_eq!(ScopeSet::empty().to_string(), "");
}

// --- cache keys -------------------------------------------------------------------------------

fn hash_of(key: &CacheKey) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

fn base_key() -> CacheKey {
    CacheKey::new(
        "https://auth.example.com",
        &resource("https://mcp.example.com/mcp"),
        &ScopeSet::parse("b a").unwrap(),
        "client-1",
    )
}

#[test]
fn cache_key_parts_read_back_as_given() {
    let key = base_key();
    assert_eq!(key.issuer(), "https://auth.example.com");
    assert_eq!(key.resource().key(), "https://mcp.example.com/mcp");
    assert_eq!(key.scopes().as_str(), "a b");
    assert_eq!(key.client_id(), "client-1");
    assert_eq!(key.account(), None);
    assert!(!key.is_exchanged());

    // The issuer is kept exactly (RFC 8414 §3.3: compared as a string).
    let slashed = CacheKey::new(
        "https://auth.example.com/",
        key.resource(),
        key.scopes(),
        "client-1",
    );
    assert_eq!(slashed.issuer(), "https://auth.example.com/");
    assert_ne!(slashed, key);

    let alice = key.clone().with_account("alice");
    assert_eq!(alice.account(), Some("alice"));
    assert!(!alice.is_exchanged());
    let exchanged = exchanged_key("alice");
    assert_eq!(exchanged.account(), Some("alice"));
    assert_ne!(exchanged, alice, "the exchange is part of the identity");
    assert!(exchanged.is_exchanged());
    // Every derivation keeps the other parts.
    let rescoped = exchanged.with_scopes(&ScopeSet::parse("c").unwrap());
    assert_eq!(
        (
            rescoped.issuer(),
            rescoped.resource().key(),
            rescoped.scopes().as_str(),
            rescoped.client_id(),
            rescoped.account(),
            rescoped.is_exchanged()
        ),
        (
            "https://auth.example.com",
            "https://mcp.example.com/mcp",
            "c",
            "client-1",
            Some("alice"),
            true
        )
    );
    assert!(exchanged_key("alice").with_account("bob").is_exchanged());
}

#[test]
fn cache_keys_hash_by_their_identity() {
    let key = base_key();
    let same = CacheKey::new(
        "https://auth.example.com",
        &resource("https://MCP.example.com:443/mcp"),
        &ScopeSet::parse("a b a").unwrap(),
        "client-1",
    );
    assert_eq!(key, same);
    assert_eq!(hash_of(&key), hash_of(&same));

    let others = [
        CacheKey::new(
            "https://auth.example.com/",
            key.resource(),
            key.scopes(),
            "client-1",
        ),
        CacheKey::new(
            key.issuer(),
            &resource("https://mcp.example.com/mcp/"),
            key.scopes(),
            "client-1",
        ),
        key.with_scopes(&ScopeSet::parse("a").unwrap()),
        CacheKey::new(key.issuer(), key.resource(), key.scopes(), "client-2"),
        key.clone().with_account("alice"),
        exchanged_key("alice"),
    ];
    let mut hashes = vec![hash_of(&key)];
    for other in &others {
        assert_ne!(*other, key, "{other}");
        hashes.push(hash_of(other));
    }
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), 1 + others.len());

    let stored: std::collections::HashSet<CacheKey> =
        others.iter().cloned().chain([key.clone(), same]).collect();
    assert_eq!(stored.len(), 1 + others.len());
}

#[test]
fn cache_key_encoding_is_length_prefixed() {
    let key = CacheKey::new(
        "i",
        &resource("https://h.example/p"),
        &ScopeSet::parse("s").unwrap(),
        "c",
    );
    let mut expected = vec![4u8];
    for part in ["i", "https://h.example/p", "s", "c"] {
        expected.extend_from_slice(&(part.len() as u64).to_be_bytes());
        expected.extend_from_slice(part.as_bytes());
    }
    let mut plain = expected.clone();
    // No account, the client's own grant, no subject, no DPoP key.
    plain.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(key.encoded(), plain);

    let account = "an-account-name-longer-than-eight-bytes";
    let mut with_account = expected;
    with_account.push(1);
    with_account.extend_from_slice(&(account.len() as u64).to_be_bytes());
    with_account.extend_from_slice(account.as_bytes());
    with_account.extend_from_slice(&[0, 0, 0]);
    assert_eq!(key.clone().with_account(account).encoded(), with_account);

    // An exchanged key: the same parts, then the token exchange grant's tag (1), then 1 and
    // the 32-byte fingerprint of its subject.
    let exchanged = exchanged_key(account);
    let plain_twin = base_key().with_account(account);
    let encoded = exchanged.encoded();
    let prefix = &plain_twin.encoded()[..plain_twin.encoded().len() - 3];
    assert_eq!(&encoded[..prefix.len()], prefix);
    assert_eq!(encoded.len(), prefix.len() + 1 + 1 + 32 + 1);
    assert_eq!(encoded[prefix.len()], 1);
    assert_eq!(encoded[prefix.len() + 1], 1);
    assert_eq!(encoded[encoded.len() - 1], 0);

    // An account longer than all the other parts together is encoded like any other.
    let long = "a".repeat(1000);
    let encoded = key.with_account(&long).encoded().to_vec();
    assert_eq!(
        encoded.len(),
        1 + 4 * 8 + 1 + 19 + 1 + 1 + 1 + 8 + 1000 + 1 + 1 + 1
    );
    assert_eq!(
        &encoded[encoded.len() - 1011..encoded.len() - 1003],
        1000u64.to_be_bytes()
    );
}

#[test]
fn cache_keys_print_every_part() {
    let key = base_key();
    assert_eq!(
        key.to_string(),
        r#"issuer "https://auth.example.com", resource https://mcp.example.com/mcp, scopes "a b", client "client-1""#
    );
    assert_eq!(
        format!("{key:?}"),
        r#"CacheKey { issuer: "https://auth.example.com", resource: "https://mcp.example.com/mcp", scopes: "a b", client_id: "client-1", account: None, grant: Client, exchanged: None, dpop: None }"#
    );
    let account = key.with_account("alice\n");
    assert_eq!(
        account.to_string(),
        r#"issuer "https://auth.example.com", resource https://mcp.example.com/mcp, scopes "a b", client "client-1", account "alice\n""#
    );
    // An exchanged key names the exchange and four bytes of its subject's fingerprint, never
    // the subject token.
    let exchanged = exchanged_key("alice\n");
    let shown = exchanged.to_string();
    let prefix = r#"issuer "https://auth.example.com", resource https://mcp.example.com/mcp, scopes "a b", client "client-1", account "alice\n", by token exchange for subject "#;
    assert!(shown.starts_with(prefix), "{shown}");
    let fingerprint = &shown[prefix.len()..];
    assert!(
        fingerprint.len() <= 16 && !fingerprint.is_empty(),
        "{fingerprint}"
    );
    let debug = format!("{exchanged:?}");
    assert!(
        debug.starts_with(r#"CacheKey { issuer: "https://auth.example.com", resource: "https://mcp.example.com/mcp", scopes: "a b", client_id: "client-1", account: Some("alice\n"), "#),
        "{debug}"
    );
}
