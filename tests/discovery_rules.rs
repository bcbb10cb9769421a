//! Discovery: the section E vectors (`tests/vectors/discovery.json`, every row must pass with its
//! exact outcome) and hostile documents, issuers and URLs.

use audience_cache::challenge::{ChallengeError, Challenges, TokenType};
use audience_cache::discovery::{
    AddressClass, AuthorizationServerMetadata, Issuer, ProtectedResourceMetadata, ResourceMatch,
    authorization_server_metadata_urls, check_fetch_url, check_resource_metadata_url,
    protected_resource_metadata_urls,
};
use audience_cache::{DiscoveryError, DiscoveryOptions};
use http::HeaderValue;
use serde::Deserialize;
use url::Url;

/// The reason class of a discovery error, as the vector file names it.
fn class(error: &DiscoveryError) -> String {
    match error {
        DiscoveryError::InsecureUrl { .. } => "insecure_url".into(),
        DiscoveryError::UnsupportedScheme { .. } => "unsupported_scheme".into(),
        DiscoveryError::Userinfo { .. } => "userinfo".into(),
        DiscoveryError::Fragment { .. } => "fragment".into(),
        DiscoveryError::NoHost { .. } => "no_host".into(),
        DiscoveryError::PrivateAddress { .. } => "private_address".into(),
        DiscoveryError::CrossOriginMetadata { .. } => "cross_origin_metadata".into(),
        DiscoveryError::InvalidUrl { .. } => "invalid_url".into(),
        DiscoveryError::InvalidServerUrl { .. } => "invalid_server_url".into(),
        DiscoveryError::InvalidResource { .. } => "invalid_resource".into(),
        DiscoveryError::ResourceMismatch { .. } => "resource_mismatch".into(),
        DiscoveryError::ServerUrlRefused { .. } => "server_url_refused".into(),
        DiscoveryError::NoAuthorizationServer { .. } => "no_authorization_server".into(),
        DiscoveryError::InvalidIssuer { .. } => "invalid_issuer".into(),
        DiscoveryError::IssuerHasQuery { .. } => "issuer_has_query".into(),
        DiscoveryError::UnusableAuthorizationServer { .. } => {
            "unusable_authorization_server".into()
        }
        DiscoveryError::IssuerMismatch { .. } => "issuer_mismatch".into(),
        DiscoveryError::MissingEndpoint { .. } => "missing_endpoint".into(),
        DiscoveryError::InvalidEndpoint { .. } => "invalid_endpoint".into(),
        DiscoveryError::PkceUnsupported { .. } => "pkce_unsupported".into(),
        DiscoveryError::InvalidScopesSupported { .. } => "invalid_scopes_supported".into(),
        DiscoveryError::InvalidDocument { .. } => "invalid_document".into(),
        DiscoveryError::DocumentTooLarge { .. } => "document_too_large".into(),
        other => panic!("unclassified discovery error {other:?}"),
    }
}

fn challenge_class(error: &ChallengeError) -> String {
    match error {
        ChallengeError::Syntax { .. } => "syntax".into(),
        ChallengeError::InvalidScope { .. } => "invalid_scope".into(),
        ChallengeError::InvalidResourceMetadata { .. } => "invalid_resource_metadata".into(),
        ChallengeError::NoUsableChallenge { .. } => "no_usable_challenge".into(),
        ChallengeError::DuplicateParameter { .. } => "duplicate_parameter".into(),
        other => format!("other:{other:?}"),
    }
}

#[derive(Deserialize)]
struct Vector {
    id: String,
    kind: String,
    server: Option<String>,
    issuer: Option<String>,
    document: Option<serde_json::Value>,
    headers: Option<Vec<String>>,
    expected: Option<Vec<String>>,
    error: Option<String>,
    wire: Option<String>,
    challenges: Option<Vec<String>>,
    rejected: Option<usize>,
    selected: Option<String>,
    resource_metadata: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    loopback: bool,
    #[serde(default)]
    cross_origin: bool,
    #[serde(default)]
    exact: bool,
    #[serde(default)]
    dpop: bool,
}

fn outcome<T>(
    got: Result<T, String>,
    expected_error: &Option<String>,
) -> Result<Option<T>, String> {
    match (got, expected_error) {
        (Err(class), Some(expected)) if class == *expected => Ok(None),
        (Err(class), _) => Err(format!("got error {class}")),
        (Ok(_), Some(expected)) => Err(format!("expected {expected}, got success")),
        (Ok(value), None) => Ok(Some(value)),
    }
}

fn run(v: &Vector) -> Result<(), String> {
    let options = DiscoveryOptions::strict()
        .allow_insecure_http_on_loopback(v.loopback)
        .allow_cross_origin_resource_metadata(v.cross_origin)
        .with_resource_match(if v.exact {
            ResourceMatch::Exact
        } else {
            ResourceMatch::Prefix
        });
    let server = || Url::parse(v.server.as_deref().expect("server")).expect("server URL");
    let strings = |urls: Vec<Url>| urls.into_iter().map(String::from).collect::<Vec<_>>();
    match v.kind.as_str() {
        "prm_urls" => {
            let got = protected_resource_metadata_urls(&server()).map_err(|e| class(&e));
            if let Some(urls) = outcome(got, &v.error)? {
                let urls = strings(urls);
                if Some(&urls) != v.expected.as_ref() {
                    return Err(format!("got {urls:?}"));
                }
            }
        }
        "as_urls" => {
            let issuer = Issuer::parse(v.issuer.as_deref().expect("issuer"), &options)
                .map_err(|e| format!("issuer: {e}"))?;
            let urls = strings(authorization_server_metadata_urls(&issuer));
            if Some(&urls) != v.expected.as_ref() {
                return Err(format!("got {urls:?}"));
            }
        }
        "prm_validate" => {
            let body = serde_json::to_vec(v.document.as_ref().expect("document")).unwrap();
            let document =
                ProtectedResourceMetadata::from_json(&body).map_err(|e| e.to_string())?;
            let got = document
                .validate(&server(), &options)
                .map_err(|e| class(&e));
            if let Some(valid) = outcome(got, &v.error)? {
                let wire = valid.resource().wire();
                if v.wire.as_deref().is_some_and(|w| w != wire) {
                    return Err(format!("got wire {wire}"));
                }
            }
        }
        "as_validate" => {
            let issuer = Issuer::parse(v.issuer.as_deref().expect("issuer"), &options)
                .map_err(|e| format!("issuer: {e}"))?;
            let body = serde_json::to_vec(v.document.as_ref().expect("document")).unwrap();
            let document =
                AuthorizationServerMetadata::from_json(&body).map_err(|e| e.to_string())?;
            let got = document.validate(&issuer, &options).map_err(|e| class(&e));
            if let Some(valid) = outcome(got, &v.error)?
                && valid.issuer().as_str() != v.issuer.as_deref().unwrap()
            {
                return Err(format!("got issuer {}", valid.issuer()));
            }
        }
        "challenge" => {
            let headers: Vec<HeaderValue> = v
                .headers
                .as_ref()
                .expect("headers")
                .iter()
                .map(|h| HeaderValue::from_str(h).expect("header value"))
                .collect();
            let server = server();
            let token_type = if v.dpop {
                TokenType::DPoP
            } else {
                TokenType::Bearer
            };
            let expect_error = |got: String| match &v.error {
                Some(expected) if *expected == got => Ok(()),
                _ => Err(format!("got error {got}")),
            };
            let challenges = match Challenges::parse(&headers) {
                Ok(challenges) => challenges,
                Err(e) => return expect_error(challenge_class(&e)),
            };
            if let Some(schemes) = &v.challenges {
                let got: Vec<&str> = challenges.iter().map(|c| c.scheme()).collect();
                if got != *schemes {
                    return Err(format!("got challenges {got:?}"));
                }
            }
            if v.rejected.is_some_and(|n| n != challenges.rejected().len()) {
                return Err(format!("got rejected {:?}", challenges.rejected()));
            }
            let selected = match challenges.select(&server, token_type) {
                Ok(selected) => selected,
                Err(e) => return expect_error(challenge_class(&e)),
            };
            if let Some(url) = selected.resource_metadata()
                && let Err(e) = check_resource_metadata_url(url, &server, &options)
            {
                return expect_error(class(&e));
            }
            if let Some(expected) = &v.error {
                return Err(format!("expected {expected}, got success"));
            }
            if v.selected
                .as_deref()
                .is_some_and(|s| s != selected.challenge().scheme())
            {
                return Err(format!("selected {}", selected.challenge().scheme()));
            }
            let metadata = selected.resource_metadata().map(Url::as_str);
            if metadata != v.resource_metadata.as_deref() {
                return Err(format!("got resource_metadata {metadata:?}"));
            }
            let scope = selected.scope().map(|s| s.as_str());
            if scope != v.scope.as_deref() {
                return Err(format!("got scope {scope:?}"));
            }
        }
        other => return Err(format!("unknown kind {other}")),
    }
    Ok(())
}

#[test]
fn section_e_discovery_vectors() {
    let path = format!(
        "{}/tests/vectors/discovery.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let vectors: Vec<Vector> = serde_json::from_str(&text).unwrap();
    for id in [
        "E01", "E03", "E05", "E07", "E09", "E11", "E13", "E15", "E17", "E19", "E21", "E23", "E25",
    ] {
        assert!(vectors.iter().any(|v| v.id == id), "{id} is missing");
    }
    let failures: Vec<String> = vectors
        .iter()
        .filter_map(|v| run(v).err().map(|why| format!("{}: {why}", v.id)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

#[test]
fn the_fetch_guard() {
    let strict = DiscoveryOptions::strict();
    let dev = strict.allow_insecure_http_on_loopback(true);
    let check = |u: &str, o: &DiscoveryOptions| check_fetch_url(&url(u), o).map_err(|e| class(&e));
    assert_eq!(
        check("https://mcp.example.com/.well-known/x", &strict),
        Ok(())
    );
    for (u, expected) in [
        ("http://mcp.example.com/", "insecure_url"),
        ("javascript:alert(1)", "unsupported_scheme"),
        ("data:text/plain,x", "unsupported_scheme"),
        ("file:///etc/passwd", "unsupported_scheme"),
        ("ftp://mcp.example.com/", "unsupported_scheme"),
        ("https://user:secret@mcp.example.com/", "userinfo"),
        ("https://mcp.example.com/#frag", "fragment"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "private_address",
        ),
        ("https://10.0.0.1/", "private_address"),
        ("https://[fd12::1]/", "private_address"),
        ("https://[::ffff:10.0.0.1]/", "private_address"),
        ("https://0.0.0.0/", "private_address"),
        ("https://127.0.0.1/", "private_address"),
        ("https://0x7f.1/", "private_address"),
        ("https://localhost/", "private_address"),
        ("https://[::1]/", "private_address"),
    ] {
        assert_eq!(check(u, &strict), Err(expected.to_owned()), "{u}");
    }
    // The development option lets loopback through, over http too, and nothing else.
    for u in [
        "http://127.0.0.1:3000/x",
        "https://localhost/x",
        "http://[::1]:8080/",
    ] {
        assert_eq!(check(u, &dev), Ok(()), "{u}");
    }
    for u in [
        "http://169.254.169.254/",
        "http://10.0.0.1/",
        "http://mcp.example.com/",
    ] {
        assert!(check(u, &dev).is_err(), "{u}");
    }
    // The password never shows.
    let err = check_fetch_url(&url("https://user:hunter2@mcp.example.com/"), &strict).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"));
    match check_fetch_url(&url("http://169.254.169.254/"), &dev) {
        Err(DiscoveryError::PrivateAddress { class, .. }) => {
            assert_eq!(class, AddressClass::LinkLocal)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn resource_metadata_from_a_challenge_stays_on_the_server_origin() {
    let strict = DiscoveryOptions::strict();
    let server = url("https://mcp.example.com/mcp");
    let check =
        |u: &str| check_resource_metadata_url(&url(u), &server, &strict).map_err(|e| class(&e));
    assert_eq!(
        check("https://mcp.example.com/.well-known/oauth-protected-resource/mcp"),
        Ok(())
    );
    assert_eq!(check("https://MCP.example.com:443/prm"), Ok(()));
    for (u, expected) in [
        ("https://meta.other.example/prm", "cross_origin_metadata"),
        ("https://mcp.example.com:8443/prm", "cross_origin_metadata"),
        ("http://mcp.example.com/prm", "insecure_url"),
        ("https://api.mcp.example.com/prm", "cross_origin_metadata"),
        // `evil.example\@mcp...` unescaped by the quoted string, then read by `url` as userinfo.
        ("https://evil.example@mcp.example.com/prm", "userinfo"),
    ] {
        assert_eq!(check(u), Err(expected.to_owned()), "{u}");
    }
}

#[test]
fn issuers_are_kept_verbatim_and_validated() {
    let strict = DiscoveryOptions::strict();
    let a = Issuer::parse("https://auth.example.com/tenant1/", &strict).unwrap();
    let b = Issuer::parse("https://auth.example.com/tenant1", &strict).unwrap();
    assert_ne!(a, b, "a trailing slash is another issuer");
    assert_eq!(a.to_string(), "https://auth.example.com/tenant1/");
    for bad in [
        "https://auth.example.com/?x=1",
        "https://auth.example.com/#f",
        "http://auth.example.com",
        "https://user@auth.example.com",
        " https://auth.example.com",
        "https://auth.example.com/a/../b",
        "auth.example.com",
        "",
    ] {
        assert!(Issuer::parse(bad, &strict).is_err(), "{bad:?}");
    }
    let dev = strict.allow_insecure_http_on_loopback(true);
    assert!(Issuer::parse("http://localhost:4000", &dev).is_ok());
}

#[test]
fn metadata_documents_are_read_strictly() {
    // Unknown members are ignored; a repeated member, a wrong type or a missing `resource` is not.
    let ok = br#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://a.example"],"x-vendor":{"nested":[1,2]}}"#;
    assert!(ProtectedResourceMetadata::from_json(ok).is_ok());
    for bad in [
        &br#"{"resource":"https://mcp.example.com/mcp","resource":"https://evil.example/"}"#[..],
        br#"{"resource":"https://mcp.example.com/mcp","authorization_servers":"https://a.example"}"#,
        br#"{"authorization_servers":["https://a.example"]}"#,
        br#"[]"#,
        b"",
        b"\xff\xfe",
    ] {
        assert!(
            matches!(
                ProtectedResourceMetadata::from_json(bad),
                Err(DiscoveryError::InvalidDocument { .. })
            ),
            "{bad:?}"
        );
    }
    let huge = format!(r#"{{"resource":"{}"}}"#, "a".repeat(70_000));
    assert!(matches!(
        ProtectedResourceMetadata::from_json(huge.as_bytes()),
        Err(DiscoveryError::DocumentTooLarge { .. })
    ));
    let bad_scope = br#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://a.example"],"scopes_supported":["files:read","bad scope"]}"#;
    let document = ProtectedResourceMetadata::from_json(bad_scope).unwrap();
    assert!(matches!(
        document.validate(
            &url("https://mcp.example.com/mcp"),
            &DiscoveryOptions::strict()
        ),
        Err(DiscoveryError::InvalidScopesSupported { .. })
    ));
}

#[test]
fn validated_protected_resource() {
    let document = ProtectedResourceMetadata::from_json(
        br#"{"resource":"https://mcp.example.com","authorization_servers":["https://a.example","https://b.example","https://a.example"],"scopes_supported":["b","a"],"bearer_methods_supported":["body"]}"#,
    )
    .unwrap();
    let valid = document
        .validate(
            &url("https://mcp.example.com/mcp/tools"),
            &DiscoveryOptions::strict(),
        )
        .unwrap();
    assert_eq!(valid.resource().wire(), "https://mcp.example.com");
    assert_eq!(valid.resource().key(), "https://mcp.example.com/");
    let issuers: Vec<&str> = valid
        .authorization_servers()
        .iter()
        .map(|i| i.as_str())
        .collect();
    assert_eq!(issuers, ["https://a.example", "https://b.example"]);
    assert_eq!(valid.scopes_supported().unwrap().as_str(), "a b");
    assert!(!valid.accepts_header_tokens());
    // A request URL the crate never sends tokens to is refused outright.
    assert!(matches!(
        document.validate(
            &url("https://mcp.example.com/mcp;x=1"),
            &DiscoveryOptions::strict()
        ),
        Err(DiscoveryError::ServerUrlRefused { .. })
    ));
}

#[test]
fn pkce_s256_is_required_and_absence_means_no() {
    let options = DiscoveryOptions::strict();
    let issuer = Issuer::parse("https://auth.example.com", &options).unwrap();
    let server = |methods: &str| {
        let body = format!(
            r#"{{"issuer":"https://auth.example.com","token_endpoint":"https://auth.example.com/token"{methods}}}"#
        );
        AuthorizationServerMetadata::from_json(body.as_bytes())
            .unwrap()
            .validate(&issuer, &options)
            .unwrap()
    };
    assert!(
        server(r#","code_challenge_methods_supported":["plain","S256"]"#)
            .require_pkce_s256()
            .is_ok()
    );
    for methods in [
        "",
        r#","code_challenge_methods_supported":["plain"]"#,
        r#","code_challenge_methods_supported":["s256"]"#,
        r#","code_challenge_methods_supported":[]"#,
    ] {
        let err = server(methods).require_pkce_s256().unwrap_err();
        assert_eq!(class(&err), "pkce_unsupported", "{methods}");
    }
    let absent = server("").require_pkce_s256().unwrap_err();
    assert!(absent.to_string().contains("absent"), "{absent}");
}

#[test]
fn authorization_server_metadata_members() {
    let options = DiscoveryOptions::strict();
    let issuer = Issuer::parse("https://auth.example.com", &options).unwrap();
    let document = AuthorizationServerMetadata::from_json(
        br#"{
            "issuer": "https://auth.example.com",
            "authorization_endpoint": "https://auth.example.com/authorize?prompt=consent",
            "token_endpoint": "https://tokens.example.net/token",
            "registration_endpoint": "https://auth.example.com/register",
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": true,
            "unknown_member": 1
        }"#,
    )
    .unwrap();
    assert!(document.authorization_response_iss_parameter_supported);
    assert!(document.client_id_metadata_document_supported);
    assert!(document.supports_grant_type("authorization_code"));
    assert!(!document.supports_grant_type("client_credentials"));
    let valid = document.validate(&issuer, &options).unwrap();
    assert_eq!(
        valid.token_endpoint().host_str(),
        Some("tokens.example.net")
    );
    assert_eq!(
        valid.authorization_endpoint().unwrap().query(),
        Some("prompt=consent")
    );
    assert!(valid.registration_endpoint().is_some());
    for (member, value) in [
        ("registration_endpoint", "https://10.0.0.5/register"),
        (
            "authorization_endpoint",
            "https://auth.example.com/authorize#x",
        ),
        ("token_endpoint", "https://auth.example.com/to\tken"),
        ("token_endpoint", "not a url"),
    ] {
        let mut body = serde_json::json!({
            "issuer": "https://auth.example.com",
            "token_endpoint": "https://auth.example.com/token",
        });
        body[member] = value.into();
        let err = AuthorizationServerMetadata::from_json(&serde_json::to_vec(&body).unwrap())
            .unwrap()
            .validate(&issuer, &options)
            .unwrap_err();
        assert_eq!(class(&err), "invalid_endpoint", "{member}: {value}");
    }
}
