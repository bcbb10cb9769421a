//! Which resource a request URL belongs to, and whether a token may go there: the same answer
//! from every entry point (`AuthorizedClient`, `TokenCache::token_for`, `TokenCache::token` with
//! `BearerToken::header_for`), for paths a server could route twice, for URLs that a more
//! specific resource owns, and for URLs the crate refuses before anything is sent.

mod support;

use audience_cache::testing::{AuthorizationServer, Redirect, ResourceServer};
use audience_cache::{
    AuthorizedClient, Coverage, CoverageRefusal, Discovery, DiscoveryOptions, Error, PreRegistered,
    RefusalKind, ResourceConfig, ResourceError, ResourceUri, ScopeSet, TokenCache,
};
use support::on_loopback::{
    authorization_server as auth_server, registration, resource as loopback,
};
use url::Url;

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

async fn get(client: &AuthorizedClient, url: &str) -> Result<reqwest::Response, Error> {
    client.execute(client.get(url).build().unwrap()).await
}

/// Paths that a server (or a proxy chain) decoding twice routes outside `/mcp`: an escaped `%`
/// followed by two hex digits becomes an escape again after the first decoding.
const DOUBLE_ENCODED: &[&str] = &[
    "/mcp/%252e%252e/admin",
    "/mcp/x%252f..%252fadmin",
    "/mcp/%255c..",
    "/mcp/%25%32%65%25%32%65/admin",
    "/mcp/%252E%252E/admin",
    "/mcp/%25252e%25252e/admin",
];

#[test]
fn double_encoded_paths_are_refused_whatever_resource_is_asked() {
    let resource = ResourceUri::parse("https://h.example/mcp").unwrap();
    for path in DOUBLE_ENCODED {
        let request = url(&format!("https://h.example{path}"));
        assert!(
            matches!(
                resource.covers(&request),
                Coverage::Refused(CoverageRefusal::AmbiguousPath { .. })
            ),
            "{path}: {:?}",
            resource.covers(&request)
        );
    }
    // An escaped `%` that does not make another escape is read the same by every server.
    for path in [
        "/mcp/100%25",
        "/mcp/100%25off",
        "/mcp/%25zz",
        "/mcp/%74ools",
    ] {
        let request = url(&format!("https://h.example{path}"));
        assert_eq!(resource.covers(&request), Coverage::Covered, "{path}");
    }
}

#[test]
fn resources_follow_the_same_rule_when_they_are_parsed() {
    for path in DOUBLE_ENCODED {
        let error = ResourceUri::parse(&format!("https://h.example{path}")).unwrap_err();
        assert!(
            matches!(error, ResourceError::AmbiguousPath { .. }),
            "{path}: {error:?}"
        );
    }
    // A resource with a literal `%` still parses, and covers its own URL.
    let resource = ResourceUri::parse("https://h.example/mcp/100%25").unwrap();
    assert_eq!(
        resource.covers(&url("https://h.example/mcp/100%25/x")),
        Coverage::Covered
    );
}

/// Through `AuthorizedClient`, a redirect inside the resource to a double-encoded path does
/// not carry the token (it is refused before anything is sent there).
#[tokio::test]
async fn a_redirect_to_a_double_encoded_path_gets_no_token() {
    let auth = auth_server().await;
    let rs = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    let origin = rs.origin().to_owned();
    rs.script(|s| s.redirects = vec![Redirect::temporary("/mcp/a", "/mcp/%252e%252e/admin")]);
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration(&auth))
        .resource(ResourceConfig::new(
            loopback(&format!("{origin}/mcp")),
            auth.issuer(),
        ))
        .build()
        .unwrap();
    let client = AuthorizedClient::new(cache).unwrap();
    let result = get(&client, &format!("{origin}/mcp/a")).await;
    let error = result.unwrap_err();
    assert!(
        matches!(&error, Error::Refused(refusal) if matches!(refusal.kind(), RefusalKind::RequestRefused(CoverageRefusal::AmbiguousPath { .. }))),
        "{error:?}"
    );
    let records = rs.requests();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].path, "/mcp/a");
}

/// Two resources on one origin at two issuers: `http://h/` at A and `http://h/b` at B.
struct Nested {
    a: AuthorizationServer,
    b: AuthorizationServer,
    origin: String,
    cache: TokenCache,
    rs: ResourceServer,
}

async fn nested() -> Nested {
    let a = auth_server().await;
    let b = auth_server().await;
    let rs = ResourceServer::builder(&a).path("/").start().await.unwrap();
    let origin = rs.origin().to_owned();
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration(&a))
        .client(registration(&b))
        .resource(ResourceConfig::new(loopback(&origin), a.issuer()))
        .resource(ResourceConfig::new(
            loopback(&format!("{origin}/b")),
            b.issuer(),
        ))
        .build()
        .unwrap();
    Nested {
        a,
        b,
        origin,
        cache,
        rs,
    }
}

/// `TokenCache::token` + `header_for` is the path for transports that build their own requests:
/// it makes the same decision as the HTTP loop. A token for `http://h/` is refused for
/// `http://h/b/x`, which `http://h/b` (issuer B) owns.
#[tokio::test]
async fn header_for_refuses_a_url_that_a_more_specific_resource_owns() {
    let n = nested().await;
    let root = loopback(&n.origin);
    let token = n.cache.token(&root, &ScopeSet::empty()).await.unwrap();
    assert_eq!(n.a.requests().len(), 1);

    let owned_by_b = url(&format!("{}/b/x", n.origin));
    let refusal = token.header_for(&owned_by_b).unwrap_err();
    assert!(
        matches!(refusal.kind(), RefusalKind::OwnedByAnotherResource { owner } if *owner == format!("{}/b", n.origin)),
        "{refusal:?}"
    );
    assert!(
        refusal.to_string().contains(&format!("{}/b", n.origin)),
        "{refusal}"
    );
    // The same URL through token_for: B's token.
    let for_b = n.cache.token_for(&owned_by_b).await.unwrap();
    assert_eq!(for_b.resource().key(), format!("{}/b", n.origin));
    assert!(for_b.header_for(&owned_by_b).is_ok());
    assert_eq!(n.b.requests().len(), 1);
    // And the root's token still goes where the root owns the URL.
    assert!(token.header_for(&url(&format!("{}/c", n.origin))).is_ok());
    // Segment boundaries: `/bx` is not inside `/b`.
    assert!(token.header_for(&url(&format!("{}/bx", n.origin))).is_ok());
    // B's token is not for the root.
    assert!(for_b.header_for(&url(&format!("{}/c", n.origin))).is_err());
}

/// A resource registered after the token was handed out takes the URLs it owns from then on.
#[tokio::test]
async fn header_for_follows_resources_registered_later() {
    let a = auth_server().await;
    let b = auth_server().await;
    let origin = "http://127.0.0.1:9";
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .client(registration(&a))
        .client(registration(&b))
        .resource(ResourceConfig::new(loopback(origin), a.issuer()))
        .build()
        .unwrap();
    let token = cache
        .token(&loopback(origin), &ScopeSet::empty())
        .await
        .unwrap();
    let later = url(&format!("{origin}/b/x"));
    assert!(token.header_for(&later).is_ok());
    cache
        .register_resource(ResourceConfig::new(
            loopback(&format!("{origin}/b")),
            b.issuer(),
        ))
        .unwrap();
    assert!(token.header_for(&later).is_err());
}

/// The request loop and `header_for` agree on every URL: a hop inside the root that lands in
/// B's resource goes there with B's resource's token or none, never A's.
#[tokio::test]
async fn the_client_never_sends_the_roots_token_into_a_nested_resource() {
    let n = nested().await;
    let client = AuthorizedClient::new(n.cache.clone()).unwrap();
    let response = get(&client, &format!("{}/b/x", n.origin)).await.unwrap();
    // The resource server validates with A, so it rejects B's token, and the client retries
    // once with a new one: two requests, each with a token of B's, none of A's.
    assert_eq!(response.status(), 401);
    let records = n.rs.requests();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().all(|r| r.bearer_presented));
    assert_eq!(n.b.requests().len(), 2);
    assert!(n.a.requests().is_empty());
}

/// A URL the crate would refuse is refused before any request, whatever resources are
/// configured: no probe, no metadata fetch.
#[tokio::test]
async fn refused_urls_are_never_probed_by_discovery() {
    let auth = auth_server().await;
    let rs = ResourceServer::builder(&auth)
        .path("/mcp")
        .start()
        .await
        .unwrap();
    let origin = rs.origin().to_owned();
    // No resource configured on this origin at all.
    let cache = TokenCache::builder()
        .allow_insecure_http_on_loopback(true)
        .build()
        .unwrap();
    let client = AuthorizedClient::new(cache).unwrap().with_discovery(
        Discovery::new(DiscoveryOptions::strict().allow_insecure_http_on_loopback(true)).unwrap(),
        PreRegistered::confidential("svc", "s3cret".into()),
    );
    for path in [
        "/mcp/x/..;/admin",
        "/mcp/x%2F..%2Fadmin",
        "/mcp/%252e%252e/admin",
        "/mcp/x%5C..%5Cadmin",
        "/mcp/a%zz",
    ] {
        let error = get(&client, &format!("{origin}{path}")).await.unwrap_err();
        assert!(
            matches!(&error, Error::Refused(refusal) if matches!(refusal.kind(), RefusalKind::RequestRefused(_))),
            "{path}: {error:?}"
        );
    }
    // reqwest's builder turns userinfo into a Basic header; a request made by hand keeps it.
    let with_userinfo = url(&origin.replacen("http://", "http://user:pw@", 1)).join("/mcp");
    let request = reqwest::Request::new(reqwest::Method::GET, with_userinfo.unwrap());
    let error = client.execute(request).await.unwrap_err();
    assert!(
        matches!(&error, Error::Refused(refusal) if matches!(refusal.kind(), RefusalKind::RequestRefused(CoverageRefusal::Userinfo))),
        "{error:?}"
    );
    assert!(
        !error.to_string().contains("pw"),
        "the password is shown: {error}"
    );
    assert!(rs.requests().is_empty(), "{:?}", rs.requests());
    assert!(auth.requests().is_empty());
}

/// `token_for` refuses the same URLs, also when no resource is on that origin.
#[tokio::test]
async fn token_for_refuses_a_refused_url_before_looking_for_a_resource() {
    let cache = TokenCache::builder().build().unwrap();
    let error = cache
        .token_for(&url("https://elsewhere.example/a/..;/b"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Refused(_)), "{error:?}");
    let error = cache
        .token_for(&url("https://elsewhere.example/a"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NoResource { .. }), "{error:?}");
}
