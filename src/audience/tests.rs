//! The audience decision's short cuts against the rule they stand for.

use super::*;

/// The short cut in the decision: an audience found to be the resource covers every
/// request the resource covers.
#[test]
fn an_audience_that_is_the_resource_covers_what_the_resource_covers() {
    let resources = [
        "https://a.example/mcp",
        "https://a.example/mcp/",
        "https://a.example/",
        "https://a.example/mcp?x=1",
        "https://a.example:8443/mcp",
        "https://[2001:db8::1]/mcp",
    ];
    let audiences = [
        "https://a.example/mcp",
        "https://a.example/mcp/",
        "https://A.EXAMPLE:443/mcp",
        "https://a.example",
        "https://a.example/",
        "https://a.example/mcp?x=1",
        "https://a.example:8443/mcp",
        "http://a.example/mcp",
        "https://a.example/mc",
        "https://[2001:DB8:0::1]/mcp",
        "https://[2001:db8::1]/mcp/",
    ];
    let requests = [
        "https://a.example/mcp",
        "https://a.example/mcp/",
        "https://a.example/mcp/x",
        "https://a.example/mcp?x=1",
        "https://a.example/mcpx",
        "https://a.example/",
        "https://a.example:8443/mcp/x",
        "http://a.example/mcp",
        "https://[2001:db8::1]/mcp/x",
    ];
    let mut same = 0;
    for resource in resources {
        let resource = ResourceUri::parse(resource).unwrap();
        for audience in audiences {
            let parsed = parse_aud_url(audience).unwrap();
            if !same_as_resource(&parsed, &resource) {
                continue;
            }
            same += 1;
            for request in requests {
                let request = Url::parse(request).unwrap();
                if resource.covers(&request).is_covered() {
                    assert!(
                        resource::covers_parsed_checked(
                            &parsed,
                            &request,
                            &resource::check_request(&request).unwrap()
                        )
                        .is_covered(),
                        "{audience} for {resource:?} at {request}"
                    );
                }
            }
        }
    }
    // Each resource is matched by some spelling of itself.
    assert!(same >= 8, "{same}");
}

/// A token's `aud` read for the resource it was requested for (its own text read as the
/// resource, sharing its parse) is read as a token read alone: the same values, the same
/// readings, and the same decision for every request, under every mode and with an alias.
#[test]
fn an_audience_read_for_its_resource_is_read_as_alone() {
    let jwt = |aud: &str| unsigned_jwt(&format!(r#"{{"aud":{aud}}}"#));
    let options = crate::resource::ParseOptions::strict();
    let resources = [
        ResourceUri::parse("https://a.example/mcp").unwrap(),
        ResourceUri::parse("https://a.example/mcp/").unwrap(),
        ResourceUri::parse("https://a.example/").unwrap(),
        ResourceUri::parse("https://a.example/mcp?x=1").unwrap(),
        ResourceUri::parse("https://A.example:443/%7Emcp").unwrap(),
        ResourceUri::from_metadata("https://a.example/mcp/", &options).unwrap(),
        ResourceUri::from_metadata("https://a.example", &options).unwrap(),
        ResourceUri::from_metadata("HTTPS://a.example/mcp", &options).unwrap(),
    ];
    let requests = [
        "https://a.example/mcp",
        "https://a.example/mcp/",
        "https://a.example/mcp/x",
        "https://a.example/mcp?x=1",
        "https://a.example/~mcp/x",
        "https://a.example/mcpx",
        "https://a.example/",
        "https://b.example/mcp",
    ];
    let mut shared = 0;
    for resource in &resources {
        let texts = [
            resource.key().to_owned(),
            resource.wire().to_owned(),
            format!("{}/", resource.key()),
            resource.key().trim_end_matches('/').to_owned(),
            "https://a.example/mcp".to_owned(),
            "api://mcp".to_owned(),
        ];
        for aud in texts
            .iter()
            .map(|t| serde_json::to_string(t).unwrap())
            .chain([format!(r#"["{}","api://x"]"#, resource.wire())])
        {
            let token = jwt(&aud);
            let alone = TokenAudience::inspect(&token);
            let read = TokenAudience::inspect_for(&token, resource);
            assert_eq!(read, alone, "{aud} for {resource:?}");
            assert_eq!(read.values(), alone.values());
            if let Claim::Values(values) = &read.claim {
                shared += values
                    .as_slice()
                    .iter()
                    .filter(|v| matches!(v, AudValue::Resource { .. }))
                    .count();
            }
            for mode in [
                AudienceMode::DenyOnMismatch,
                AudienceMode::RequireAud,
                AudienceMode::ProvenanceOnly,
            ] {
                for policy in [
                    AudiencePolicy::new(mode),
                    AudiencePolicy::new(mode).with_alias("api://mcp"),
                ] {
                    for request in requests {
                        let request = Url::parse(request).unwrap();
                        assert_eq!(
                            policy.decide_inspected(resource, &request, &read),
                            policy.decide_inspected(resource, &request, &alone),
                            "{aud} for {resource:?} at {request}"
                        );
                    }
                }
            }
        }
    }
    // The resource's own text (key or wire form) is shared where its reading is the same:
    // 5 + 4 + 4 + 4 + 4 + 5 values for the six resources without a trailing slash an `aud`
    // value is read without, none for the two with one.
    assert_eq!(shared, 26);
}
