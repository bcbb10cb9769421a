//! Invariants over generated inputs (proptest).

use audience_cache::{CacheKey, ParseOptions, ResourceUri, ScopeSet};
use proptest::prelude::*;
use url::Url;

/// A DNS-style host: 1–3 labels of lowercase letters and digits, then a letter-only TLD.
fn host() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            "[a-z][a-z0-9-]{0,10}[a-z0-9]"
                .prop_filter("no A-label prefix", |l: &String| !l.starts_with("xn--")),
            1..3,
        ),
        "[a-z]{2,6}",
    )
        .prop_map(|(labels, tld)| format!("{}.{tld}", labels.join(".")))
}

/// Path segments made of unreserved characters and a few sub-delims that stay unambiguous.
fn segments() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[A-Za-z0-9._~!$&'()*+,=:@-]{1,8}", 0..4)
        .prop_filter("no dot segments", |segs| {
            segs.iter().all(|s| s != "." && s != "..")
        })
}

fn resource_string() -> impl Strategy<Value = String> {
    (
        host(),
        prop::option::of(1u16..=65535),
        segments(),
        any::<bool>(),
    )
        .prop_map(|(host, port, segs, trailing)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let mut path: String = segs.iter().map(|s| format!("/{s}")).collect();
            if trailing && !path.is_empty() {
                path.push('/');
            }
            format!("https://{host}{port}{path}")
        })
}

/// Spells the same resource differently: case of scheme and host, explicit default or
/// zero-padded port, escaped unreserved characters (path segments only).
fn respell(resource: &str, upper: bool, pad_port: bool, escape: bool) -> String {
    let url = Url::parse(resource).unwrap();
    let scheme = if upper { "HTTPS" } else { "https" };
    let host = url.host_str().unwrap();
    let host = if upper {
        host.to_uppercase()
    } else {
        host.to_owned()
    };
    let port = match (url.port(), pad_port) {
        (Some(p), true) => format!(":0{p}"),
        (Some(p), false) => format!(":{p}"),
        (None, true) => ":443".to_owned(),
        (None, false) => String::new(),
    };
    let path: String = if escape {
        url.path()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    format!("%{:02x}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        url.path().to_owned()
    };
    format!("{scheme}://{host}{port}{path}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn key_is_a_fixed_point(input in resource_string()) {
        let r = ResourceUri::parse(&input).unwrap();
        let again = ResourceUri::parse(r.key()).unwrap();
        prop_assert_eq!(again.key(), r.key());
        prop_assert_eq!(ResourceUri::parse(r.wire()).unwrap(), r);
    }

    #[test]
    fn equivalent_spellings_give_one_key(
        input in resource_string(), upper in any::<bool>(), pad in any::<bool>(), escape in any::<bool>()
    ) {
        let canonical = ResourceUri::parse(&input).unwrap();
        let respelled = respell(&input, upper, pad, escape);
        let other = ResourceUri::parse(&respelled).unwrap();
        prop_assert_eq!(other.key(), canonical.key(), "{}", respelled);
    }

    #[test]
    fn no_other_origin_is_covered(
        input in resource_string(), other_host in host(), other_port in 1u16..=65535, path in segments()
    ) {
        let r = ResourceUri::parse(&input).unwrap();
        let own = r.as_url();
        let path: String = path.iter().map(|s| format!("/{s}")).collect();
        for (scheme, host, port) in [
            ("https", other_host.as_str(), own.port_or_known_default().unwrap()),
            ("https", own.host_str().unwrap(), other_port),
            ("http", own.host_str().unwrap(), own.port_or_known_default().unwrap()),
        ] {
            let request = Url::parse(&format!("{scheme}://{host}:{port}{}{path}", own.path())).unwrap();
            let same_origin = request.scheme() == own.scheme()
                && request.host_str() == own.host_str()
                && request.port_or_known_default() == own.port_or_known_default();
            if !same_origin {
                prop_assert!(!r.covers(&request).is_covered(), "{} covers {}", r, request);
            }
        }
    }

    #[test]
    fn extending_the_last_segment_is_never_covered(input in resource_string(), tail in "[A-Za-z0-9._~-]{1,6}") {
        let r = ResourceUri::parse(&input).unwrap();
        let path = r.as_url().path();
        prop_assume!(path != "/" && !path.ends_with('/'));
        let mut request = r.as_url().clone();
        request.set_path(&format!("{path}{tail}"));
        prop_assert!(!r.covers(&request).is_covered(), "{} covers {}", r, request);
        // While a child segment is covered.
        request.set_path(&format!("{path}/{tail}x"));
        prop_assert!(r.covers(&request).is_covered(), "{} misses {}", r, request);
    }

    #[test]
    fn order_and_duplicates_never_change_a_scope_key(
        scopes in prop::collection::vec("[!#-\\[\\]-~]{1,8}", 0..8), seed in any::<u64>()
    ) {
        let canonical = ScopeSet::from_items(&scopes).unwrap();
        let mut shuffled = scopes.clone();
        shuffled.extend(scopes.iter().take(seed as usize % (scopes.len() + 1)).cloned());
        let n = shuffled.len();
        if n > 1 {
            shuffled.rotate_left(seed as usize % n);
            shuffled.swap(0, (seed as usize / 7) % n);
        }
        let spaced = shuffled.join("   ");
        prop_assert_eq!(&ScopeSet::parse(&format!(" {spaced} ")).unwrap(), &canonical);
        prop_assert_eq!(&ScopeSet::from_items(&shuffled).unwrap(), &canonical);
    }

    /// Injective: different tuples never encode alike, including parts that contain length
    /// bytes, separators or each other's text.
    #[test]
    fn cache_key_encoding_is_injective(
        a in key_parts(), b in key_parts()
    ) {
        let ka = make_key(&a);
        let kb = make_key(&b);
        let same_tuple = a.0 == b.0 && ka.resource() == kb.resource() && ka.scopes() == kb.scopes() && a.3 == b.3 && a.4 == b.4;
        prop_assert_eq!(ka.encoded() == kb.encoded(), same_tuple);
        prop_assert_eq!(ka == kb, same_tuple);
    }
}

type Parts = (String, String, String, String, Option<String>);

fn key_parts() -> impl Strategy<Value = Parts> {
    // Small alphabets with separator-like characters make collisions likely if the encoding
    // were ambiguous.
    let text = "[ab|:\u{0}\u{1} ]{0,4}";
    (
        text,
        prop::sample::select(vec![
            "https://a.example/".to_owned(),
            "https://a.example/x".to_owned(),
            "https://A.example:443/x".to_owned(),
        ]),
        prop::sample::select(vec![
            "".to_owned(),
            "a".to_owned(),
            "a b".to_owned(),
            "b a".to_owned(),
        ]),
        text,
        prop::option::of(text),
    )
}

fn make_key((issuer, resource, scopes, client, account): &Parts) -> CacheKey {
    let key = CacheKey::new(
        issuer,
        &ResourceUri::parse_with(resource, &ParseOptions::strict()).unwrap(),
        &ScopeSet::parse(scopes).unwrap(),
        client,
    );
    match account {
        Some(account) => key.with_account(account),
        None => key,
    }
}
