//! The index picks exactly what the linear scan it replaced picks, for random resource sets
//! and request URLs (hostile paths included): longest match, ties, refusals.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use url::Url;

use super::{ResourceEntry, Routes, Unrouted, owner_by_scan};
use crate::config::{ClientRegistration, ResourceConfig};
use crate::grant::GrantClient;
use crate::key::CacheKey;
use crate::resource::{self, ParseOptions, ResourceUri};
use crate::scope::ScopeSet;

const ISSUER: &str = "https://as.example";

/// A client for the entries (routing never uses it).
fn client() -> Arc<GrantClient> {
    static CLIENT: OnceLock<Arc<GrantClient>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let cache = crate::cache::TokenCache::builder()
                .client(
                    ClientRegistration::new(
                        ISSUER,
                        Url::parse("https://as.example/token").unwrap(),
                        "client",
                    )
                    .client_secret_basic("secret".into()),
                )
                .build()
                .unwrap();
            let clients = cache.shared.clients.read().unwrap();
            clients[ISSUER].clone()
        })
        .clone()
}

pub(super) fn entry(resource: &ResourceUri) -> ResourceEntry {
    let key = CacheKey::new(ISSUER, resource, &ScopeSet::empty(), "client");
    ResourceEntry::new(ResourceConfig::new(resource.clone(), ISSUER), client(), key)
}

const ORIGINS: &[&str] = &[
    "https://a.example",
    "https://a.example:8443",
    "https://b.example",
    "http://127.0.0.1:8080",
    "https://127.0.0.1",
    "https://[::1]",
];

pub(super) fn resource_strategy() -> impl Strategy<Value = String> {
    let segment = prop::sample::select(vec!["a", "b", "mcp", "A", "%7E", "a%20b", "", "m%2Fcp"]);
    (
        prop::sample::select(ORIGINS.to_vec()),
        prop::collection::vec(segment, 0..4),
        any::<bool>(),
        prop::sample::select(vec!["", "?x=1", "?x=%41", "?"]),
    )
        .prop_map(|(origin, segments, slash, query)| {
            let mut s = origin.to_owned();
            for segment in segments {
                s.push('/');
                s.push_str(segment);
            }
            if slash {
                s.push('/');
            }
            s.push_str(query);
            s
        })
}

pub(super) fn request_strategy() -> impl Strategy<Value = String> {
    let origins = [
        ORIGINS,
        &[
            "https://A.EXAMPLE",
            "https://a.example:443",
            "https://u@a.example",
            "https://c.example",
            "http://a.example",
        ],
    ]
    .concat();
    let segment = prop::sample::select(vec![
        "a", "b", "mcp", "A", "%7E", "~", "a%20b", "", "..", ".", "%2F", "%2e", "x;y", "%61",
        "m%2Fcp", "mcpx",
    ]);
    (
        prop::sample::select(origins),
        prop::collection::vec(segment, 0..5),
        any::<bool>(),
        prop::sample::select(vec!["", "?x=1", "?x=%41", "?y", "#f"]),
    )
        .prop_map(|(origin, segments, slash, query)| {
            let mut s = origin.to_owned();
            for segment in segments {
                s.push('/');
                s.push_str(segment);
            }
            if slash {
                s.push('/');
            }
            s.push_str(query);
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_index_routes_as_the_linear_scan(
        resources in prop::collection::vec(resource_strategy(), 0..24),
        requests in prop::collection::vec(request_strategy(), 1..24),
    ) {
        let options = ParseOptions::strict().allow_insecure_http_on_loopback(true);
        let mut configured: Vec<ResourceUri> = Vec::new();
        for r in &resources {
            if let Ok(r) = ResourceUri::parse_with(r, &options)
                && !configured.contains(&r)
            {
                configured.push(r);
            }
        }
        let routes = Routes::default();
        // Some one at a time and the rest at once, as `register_resource` and the builder add
        // them.
        let (first, rest) = configured.split_at(configured.len() / 2);
        for r in first {
            routes.add([entry(r)]).unwrap();
        }
        routes.add(rest.iter().map(entry)).unwrap();
        // A resource configured again is refused, and changes nothing.
        if let Some(r) = configured.first() {
            prop_assert!(routes.add([entry(r)]).is_err());
        }
        // The scan's order is the order configured.
        let in_order: Vec<Arc<ResourceEntry>> =
            configured.iter().map(|r| routes.entry(r).unwrap()).collect();
        prop_assert_eq!(routes.entries().len(), configured.len());
        for request in &requests {
            let Ok(url) = Url::parse(request) else { continue };
            let expected = match resource::check_request(&url) {
                Err(reason) => Err(Unrouted::Refused(reason)),
                Ok(path) => owner_by_scan(&in_order, &url, &path)
                    .map(|e| e.config.resource.key().to_owned())
                    .ok_or(Unrouted::NoResource),
            };
            let routed = routes
                .route(&url)
                .map(|route| route.resource().key().to_owned());
            prop_assert_eq!(routed, expected, "{} with {:?}", url, configured);
        }
    }
}

#[test]
fn nested_resources_route_to_the_longest_and_the_root_to_the_rest() {
    let options = ParseOptions::strict();
    let parse = |s: &str| ResourceUri::parse_with(s, &options).unwrap();
    let routes = Routes::default();
    let configured = [
        "https://h.example/",
        "https://h.example/b",
        "https://h.example/b/c",
        "https://h.example/b/c?q=1",
        "https://other.example/b",
    ];
    routes
        .add(configured.iter().map(|r| entry(&parse(r))))
        .unwrap();
    for (request, owner) in [
        ("https://h.example/", Some("https://h.example/")),
        ("https://h.example/x/y", Some("https://h.example/")),
        ("https://h.example/bx", Some("https://h.example/")),
        ("https://h.example/b", Some("https://h.example/b")),
        ("https://h.example/b/x", Some("https://h.example/b")),
        ("https://h.example/b/c/d", Some("https://h.example/b/c")),
        (
            "https://h.example/b/c?q=1",
            Some("https://h.example/b/c?q=1"),
        ),
        ("https://h.example/b/c?q=2", Some("https://h.example/b/c")),
        ("https://other.example/b/x", Some("https://other.example/b")),
        ("https://other.example/", None),
        ("https://h.example:8443/b", None),
    ] {
        let url = Url::parse(request).unwrap();
        let routed = routes.route(&url).ok();
        assert_eq!(
            routed.as_ref().map(|r| r.resource().key()),
            owner,
            "{request}"
        );
    }
}
