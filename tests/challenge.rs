//! `WWW-Authenticate` parsing (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9728 §5.1, rules §14): the grammar,
//! the gaps in `http_auth` the wrapper covers, the limits and hostile headers.

use audience_cache::challenge::{ChallengeError, ChallengeErrorCode, Challenges, TokenType};
use audience_cache::{ScopeError, ScopeSet};
use http::HeaderValue;
use url::Url;

fn parse(fields: &[&str]) -> Result<Challenges, ChallengeError> {
    let values: Vec<HeaderValue> = fields
        .iter()
        .map(|f| HeaderValue::from_str(f).expect("valid header value"))
        .collect();
    Challenges::parse(&values)
}

fn schemes(challenges: &Challenges) -> Vec<&str> {
    challenges.iter().map(|c| c.scheme()).collect()
}

fn request() -> Url {
    Url::parse("https://mcp.example.com/mcp").unwrap()
}

#[test]
fn several_challenges_in_one_field_and_across_fields() {
    let c = parse(&[
        r#"Basic realm="x", DPoP algs="ES256 PS256", Bearer realm="mcp", scope="a b""#,
        "Newauth",
        r#"Bearer error="invalid_token""#,
    ])
    .unwrap();
    assert_eq!(
        schemes(&c),
        ["Basic", "DPoP", "Bearer", "Newauth", "Bearer"]
    );
    let selected = c.select(&request(), TokenType::Bearer).unwrap();
    // The first valid Bearer challenge is the one acted on.
    assert_eq!(selected.challenge().realm().unwrap().as_str(), "mcp");
    assert_eq!(selected.scope().unwrap().as_str(), "a b");
    assert_eq!(selected.error(), None);
}

#[test]
fn schemes_and_parameter_names_are_case_insensitive() {
    let c = parse(&[r#"bEaReR SCOPE="files:read", Resource_Metadata="/prm""#]).unwrap();
    let challenge = c.iter().next().unwrap();
    assert!(challenge.is_scheme("Bearer"));
    assert_eq!(challenge.scheme(), "bEaReR");
    assert_eq!(challenge.param("scope"), Some("files:read"));
    assert_eq!(challenge.resource_metadata(), Some("/prm"));
    let selected = c.select(&request(), TokenType::Bearer).unwrap();
    assert_eq!(
        selected.resource_metadata().unwrap().as_str(),
        "https://mcp.example.com/prm"
    );
}

#[test]
fn a_repeated_parameter_drops_the_challenge_and_is_reported() {
    for field in [
        r#"Bearer scope="a", scope="b""#,
        r#"Bearer scope="a", SCOPE="b""#,
        r#"Bearer resource_metadata="https://mcp.example.com/a", realm=x, resource_metadata="https://evil.example/b""#,
    ] {
        let c = parse(&[field, r#"DPoP algs="ES256""#]).unwrap();
        assert_eq!(schemes(&c), ["DPoP"], "{field}");
        assert!(
            matches!(c.rejected(), [ChallengeError::DuplicateParameter { scheme, .. }] if scheme == "Bearer"),
            "{field}: {:?}",
            c.rejected()
        );
        assert!(matches!(
            c.select(&request(), TokenType::Bearer),
            Err(ChallengeError::NoUsableChallenge { .. })
        ));
    }
    // A valid Bearer challenge later on is still used.
    let c = parse(&[r#"Bearer scope="a", scope="b", Bearer scope="c""#]).unwrap();
    assert_eq!(c.rejected().len(), 1);
    assert_eq!(
        c.select(&request(), TokenType::Bearer)
            .unwrap()
            .scope()
            .unwrap()
            .as_str(),
        "c"
    );
}

#[test]
fn unknown_parameters_are_kept_and_ignored() {
    let c = parse(&[r#"Bearer max_age=300, foo="bar, baz", scope="a""#]).unwrap();
    let challenge = c.iter().next().unwrap();
    assert_eq!(challenge.param("max_age"), Some("300"));
    assert_eq!(challenge.param("foo"), Some("bar, baz"));
    assert_eq!(challenge.params().count(), 3);
}

#[test]
fn quoted_strings_with_escapes() {
    let c = parse(&[r#"Bearer realm="a \"quoted\" \\ value", error_description="x, y""#]).unwrap();
    let challenge = c.iter().next().unwrap();
    assert_eq!(challenge.realm().unwrap().as_str(), r#"a "quoted" \ value"#);
    assert_eq!(challenge.error_description().unwrap().as_str(), "x, y");
}

#[test]
fn token68_challenges_are_opaque_and_do_not_break_the_field() {
    // http_auth alone fails the whole field on these.
    let c = parse(&[
        r#"Negotiate YIIB+g/w==, NTLM, Bearer scope="a""#,
        "Custom abc",
    ])
    .unwrap();
    assert_eq!(schemes(&c), ["Negotiate", "NTLM", "Bearer", "Custom"]);
    let negotiate = c.iter().next().unwrap();
    assert_eq!(negotiate.token68(), Some("YIIB+g/w=="));
    assert_eq!(negotiate.params().count(), 0);
    // Debug never shows a token68.
    assert!(!format!("{negotiate:?}").contains("YIIB"));
    assert_eq!(
        c.select(&request(), TokenType::Bearer)
            .unwrap()
            .scope()
            .unwrap()
            .as_str(),
        "a"
    );
}

#[test]
fn whitespace_the_grammar_allows() {
    // 1*SP after the scheme (http_auth allows exactly one), OWS around commas and `=`, empty
    // list elements, a trailing ", " and empty fields (http_auth refuses these).
    let c = parse(&[
        r#"Bearer   realm = "x" ,  scope="a"  ,"#,
        "",
        " , ,",
        "Basic, ",
        "Digest realm=x,,nonce=y",
    ])
    .unwrap();
    assert_eq!(schemes(&c), ["Bearer", "Basic", "Digest"]);
    assert_eq!(c.iter().next().unwrap().param("realm"), Some("x"));
    assert_eq!(c.iter().nth(2).unwrap().param("nonce"), Some("y"));
    assert!(parse(&[]).unwrap().is_empty());
}

#[test]
fn grammar_errors_refuse_the_header_with_a_reason() {
    for (field, reason) in [
        (r#"Bearer realm="unterminated"#, "quoted"),
        (r#"Bearer realm="x"y"#, ""),
        ("Bearer\trealm=x", "tab"),
        ("realm=x, Bearer", "before any auth-scheme"),
        ("NTLM abc==, realm=x", "token68"),
        ("Bearer, realm=x", "right after the auth-scheme"),
        ("Bearer realm=, scope=x", "token68"),
        ("Bearer a=b c=d", "invalid byte"),
        ("=x", "auth-scheme"),
        ("Bearer realm=x y", ""),
        (r#"Bearer "quoted""#, ""),
    ] {
        match parse(&[field]) {
            Err(ChallengeError::Syntax {
                field: 1,
                reason: got,
                ..
            }) => {
                assert!(got.contains(reason), "{field:?}: {got}")
            }
            other => panic!("{field:?}: {other:?}"),
        }
    }
    // `scheme token68=` is a token68 challenge, not an empty parameter (RFC 9110 §11.2).
    let c = parse(&["Bearer realm="]).unwrap();
    assert_eq!(c.iter().next().unwrap().token68(), Some("realm="));
    // The second field is named.
    assert!(matches!(
        parse(&["Bearer", "Bearer realm=\"x"]),
        Err(ChallengeError::Syntax { field: 2, .. })
    ));
}

#[test]
fn bytes_outside_visible_ascii_refuse_the_header() {
    let value = HeaderValue::from_bytes(b"Bearer realm=\"caf\xc3\xa9\"").unwrap();
    assert_eq!(
        Challenges::parse([&value]),
        Err(ChallengeError::NotVisibleAscii { field: 1 })
    );
}

#[test]
fn limits() {
    let long = format!(
        "Bearer realm=\"{}\"",
        "a".repeat(Challenges::MAX_VALUE_BYTES + 1)
    );
    assert!(matches!(
        parse(&[&long]),
        Err(ChallengeError::ValueTooLong { len: 4097, .. })
    ));
    let at_limit = format!(
        "Bearer realm=\"{}\"",
        "a".repeat(Challenges::MAX_VALUE_BYTES)
    );
    assert!(parse(&[&at_limit]).is_ok());
    let token68 = format!("Negotiate {}", "a".repeat(Challenges::MAX_VALUE_BYTES + 1));
    assert!(matches!(
        parse(&[&token68]),
        Err(ChallengeError::ValueTooLong { .. })
    ));

    let field = format!("Basic realm={}", "a".repeat(4000));
    assert!(parse(&[field.as_str(); 4]).is_ok());
    assert!(matches!(
        parse(&[field.as_str(); 5]),
        Err(ChallengeError::TooLarge {
            len: 20060,
            max: 16384
        })
    ));

    let many: Vec<String> = (0..=Challenges::MAX_CHALLENGES)
        .map(|i| format!("S{i}"))
        .collect();
    assert!(matches!(
        parse(&[&many.join(", ")]),
        Err(ChallengeError::TooManyChallenges { max: 32 })
    ));
    assert!(parse(&[&many[1..].join(", ")]).is_ok());

    let params: Vec<String> = (0..=Challenges::MAX_PARAMS)
        .map(|i| format!("p{i}=v"))
        .collect();
    let field = format!("Bearer {}", params.join(", "));
    assert!(matches!(
        parse(&[&field]),
        Err(ChallengeError::TooManyParameters { max: 64, .. })
    ));
    let field = format!("Bearer {}", params[1..].join(", "));
    assert_eq!(
        parse(&[&field])
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .params()
            .count(),
        64
    );

    let fields = vec![""; Challenges::MAX_FIELDS + 1];
    assert!(matches!(
        parse(&fields),
        Err(ChallengeError::TooManyFields { max: 64 })
    ));
}

#[test]
fn scope_with_a_tab_is_an_error_for_that_challenge() {
    let c = parse(&["Bearer scope=\"files:read\tfiles:write\""]).unwrap();
    assert!(matches!(
        c.iter().next().unwrap().scope(),
        Err(ChallengeError::InvalidScope {
            source: ScopeError::InvalidCharacter {
                character: '\t',
                ..
            },
            ..
        })
    ));
    assert!(matches!(
        c.select(&request(), TokenType::Bearer),
        Err(ChallengeError::InvalidScope { .. })
    ));
    // An empty scope is the empty set; no scope is None.
    let c = parse(&[r#"Bearer scope="""#, "Basic"]).unwrap();
    assert_eq!(
        c.iter().next().unwrap().scope().unwrap(),
        Some(ScopeSet::empty())
    );
    assert_eq!(c.iter().nth(1).unwrap().scope().unwrap(), None);
}

#[test]
fn resource_metadata_is_resolved_or_refused() {
    let resolve = |value: &str| {
        let field = format!("Bearer resource_metadata=\"{value}\"");
        let c = parse(&[&field]).unwrap();
        let request = Url::parse("https://mcp.example.com/mcp/sub?x=1").unwrap();
        c.select(&request, TokenType::Bearer)
            .map(|s| s.resource_metadata().map(|u| u.to_string()))
    };
    let ok = |value: &str| resolve(value).unwrap().unwrap();
    assert_eq!(
        ok("/.well-known/oauth-protected-resource/mcp"),
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(ok("prm"), "https://mcp.example.com/mcp/prm");
    assert_eq!(
        ok("//meta.other.example/prm"),
        "https://meta.other.example/prm"
    );
    assert_eq!(
        ok("https://mcp.example.com/prm"),
        "https://mcp.example.com/prm"
    );
    for refused in [
        "javascript:alert(1)",
        "data:text/plain,x",
        "file:///etc/passwd",
        "",
        "https://mcp.exa\tmple.com/prm",
        " https://mcp.example.com/prm",
        "https://evil.example\\\\@mcp.example.com/prm",
        "https://mcp.example.com/<x>",
    ] {
        assert!(
            matches!(
                resolve(refused),
                Err(ChallengeError::InvalidResourceMetadata { .. })
            ),
            "{refused:?}: {:?}",
            resolve(refused)
        );
    }
}

#[test]
fn dpop_clients_prefer_the_dpop_challenge_then_bearer() {
    let c = parse(&[r#"Bearer scope="b", DPoP algs="ES256", scope="d""#]).unwrap();
    let dpop = c.select(&request(), TokenType::DPoP).unwrap();
    assert_eq!(dpop.challenge().scheme(), "DPoP");
    assert_eq!(dpop.scope().unwrap().as_str(), "d");
    let bearer_only = parse(&[r#"Bearer scope="b""#]).unwrap();
    assert_eq!(
        bearer_only
            .select(&request(), TokenType::DPoP)
            .unwrap()
            .challenge()
            .scheme(),
        "Bearer"
    );
    // A Bearer client never acts on a DPoP challenge.
    let dpop_only = parse(&[r#"DPoP algs="ES256""#]).unwrap();
    let err = dpop_only.select(&request(), TokenType::Bearer).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no usable Bearer challenge in WWW-Authenticate (offered: DPoP); the server does not say how to authorize"
    );
}

#[test]
fn error_codes_and_untrusted_descriptions() {
    let c = parse(&[
        "Bearer error=\"insufficient_scope\", error_description=\"need\tmore\", scope=\"a\"",
        "Bearer error=invalid_token",
        "Bearer error=invalid_request",
        "DPoP error=use_dpop_nonce",
    ])
    .unwrap();
    let codes: Vec<_> = c.iter().map(|c| c.error().unwrap()).collect();
    assert_eq!(
        codes,
        [
            ChallengeErrorCode::InsufficientScope,
            ChallengeErrorCode::InvalidToken,
            ChallengeErrorCode::InvalidRequest,
            ChallengeErrorCode::Other("use_dpop_nonce".into()),
        ]
    );
    let description = c.iter().next().unwrap().error_description().unwrap();
    assert_eq!(description.as_str(), "need\tmore");
    assert_eq!(description.to_string(), "need\\tmore");
    let long = format!("Bearer error_description=\"{}\"", "x".repeat(1000));
    let c = parse(&[&long]).unwrap();
    let shown = c
        .iter()
        .next()
        .unwrap()
        .error_description()
        .unwrap()
        .to_string();
    assert_eq!(shown.chars().count(), 257);
}

#[test]
fn parsing_is_deterministic_and_errors_do_not_echo_token68() {
    let fields = [r#"Negotiate c2VjcmV0LXNlcnZlci1oYW5kc2hha2U=, Bearer scope="a""#];
    assert_eq!(parse(&fields), parse(&fields));
    let err = parse(&["Negotiate c2VjcmV0LXNlcnZlci1oYW5kc2hha2U=, realm=x"]).unwrap_err();
    // The error quotes the parameter where parsing failed, not the token68 before it.
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
}
