//! A remembered decision is the decision: for random resources, tokens and request URLs, asked
//! in any order and across added resources, [`Routes::decide`] (which takes and makes
//! remembered decisions) answers as the rule itself with nothing remembered.

use std::sync::Arc;

use proptest::prelude::*;
use tokio::time::Instant;
use url::Url;

use super::memo::Memo;
use super::tests::{entry, request_strategy, resource_strategy};
use super::{Routes, decide_on, owner_by_scan};
use crate::audience::TokenAudience;
use crate::resource::{self, ParseOptions, ResourceUri};
use crate::scope::ScopeSet;
use crate::token::{CachedToken, Timing};

/// An unsigned JWT with `aud`, or an opaque token.
fn access_token(aud: Option<&str>) -> String {
    match aud {
        Some(aud) => crate::audience::unsigned_jwt(&format!(r#"{{"aud":"{aud}"}}"#)),
        None => "opaque".to_owned(),
    }
}

fn token(resource: &ResourceUri, aud: Option<&str>) -> Arc<CachedToken> {
    let entry = entry(resource);
    let text = access_token(aud);
    Arc::new(CachedToken::new(
        text.clone().into(),
        entry.default_key.clone(),
        resource.clone(),
        ScopeSet::empty(),
        TokenAudience::inspect(&text),
        Timing::default().schedule(Instant::now(), None),
        false,
    ))
}

/// The rule with nothing remembered, over `configured` in the order configured.
fn oracle(configured: &[Arc<super::ResourceEntry>], url: &Url, token: &CachedToken) -> bool {
    let Ok(path) = resource::check_request(url) else {
        return false;
    };
    owner_by_scan(configured, url, &path)
        .is_some_and(|owner| decide_on(owner, url, &path, token).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_remembered_decision_is_the_rules_decision(
        resources in prop::collection::vec(resource_strategy(), 1..12),
        later in resource_strategy(),
        tokens in prop::collection::vec((0usize..12, prop::option::of(resource_strategy())), 1..6),
        requests in prop::collection::vec((request_strategy(), 0usize..6), 1..32),
    ) {
        let options = ParseOptions::strict().allow_insecure_http_on_loopback(true);
        let parse = |r: &str| ResourceUri::parse_with(r, &options).ok();
        let mut configured: Vec<ResourceUri> = Vec::new();
        for r in resources.iter().filter_map(|r| parse(r)) {
            if !configured.contains(&r) {
                configured.push(r);
            }
        }
        prop_assume!(!configured.is_empty());
        let tokens: Vec<Arc<CachedToken>> = tokens
            .iter()
            .map(|(at, aud)| token(&configured[at % configured.len()], aud.as_deref()))
            .collect();
        let routes = Routes::default();
        routes.add(configured.iter().map(entry)).unwrap();
        let mut in_order: Vec<_> = configured.iter().map(|r| routes.entry(r).unwrap()).collect();
        let later = parse(&later).filter(|r| !configured.contains(r));
        let half = requests.len() / 2;
        // Each request twice (the second may take what the first remembered), and the whole
        // list again after a resource is added halfway through.
        for (i, (request, t)) in requests.iter().chain(&requests).enumerate() {
            if i == half && let Some(later) = &later {
                routes.add([entry(later)]).unwrap();
                in_order.push(routes.entry(later).unwrap());
            }
            let Ok(url) = Url::parse(request) else { continue };
            let token = &tokens[t % tokens.len()];
            let expected = oracle(&in_order, &url, token);
            for _ in 0..2 {
                prop_assert_eq!(routes.decide(&url, token).is_ok(), expected, "{} for {}", url, token.resource);
            }
        }
    }
}

/// A slot is used only for its own URL's text, and names its token by an allocation no other
/// token can take while the slot names it.
#[test]
fn a_slot_answers_only_for_its_url_and_its_token() {
    let resource = ResourceUri::parse("https://h.example/mcp").unwrap();
    let entry = Arc::new(entry(&resource));
    let memo = Memo::for_resources(1);
    let url = Url::parse("https://h.example/mcp/a").unwrap();
    let first = token(&resource, None);
    entry.keep(&first);
    memo.remember(&url, &entry, &first);
    assert_eq!(memo.with(&url, |a| Some(a.is_for(&first))), Some(true));
    // Another URL whose hash picks the same slot finds nothing, and (for the current token)
    // replaces it.
    let other = colliding(&memo, &url);
    assert!(memo.with(&other, |_| Some(())).is_none());
    memo.remember(&other, &entry, &first);
    assert!(memo.with(&url, |_| Some(())).is_none());
    assert_eq!(memo.with(&other, |a| Some(a.is_for(&first))), Some(true));
    // The token dropped (and no longer current), a new one of the same size, as an allocator
    // would reuse its place, is not the one remembered.
    entry.forget(&first);
    drop(first);
    for _ in 0..64 {
        let next = token(&resource, None);
        assert_eq!(memo.with(&other, |a| Some(a.is_for(&next))), Some(false));
    }
}

/// The current token's decision takes its slot; another token's takes only an empty slot or
/// one whose token is gone, so tokens of several accounts on one URL do not take turns.
#[test]
fn only_the_current_token_displaces_a_live_decision() {
    let resource = ResourceUri::parse("https://h.example/mcp").unwrap();
    let entry = Arc::new(entry(&resource));
    let memo = Memo::for_resources(1);
    let url = Url::parse("https://h.example/mcp/a").unwrap();
    let (alice, bob, current) = (
        token(&resource, None),
        token(&resource, None),
        token(&resource, None),
    );
    let holds = |t: &Arc<CachedToken>| memo.with(&url, |a| Some(a.is_for(t))) == Some(true);
    memo.remember(&url, &entry, &alice);
    assert!(holds(&alice));
    memo.remember(&url, &entry, &bob);
    assert!(
        holds(&alice),
        "a live decision stays for another account's token"
    );
    entry.keep(&current);
    memo.remember(&url, &entry, &current);
    assert!(
        holds(&current),
        "the current token's decision takes the slot"
    );
    memo.remember(&url, &entry, &bob);
    assert!(holds(&current));
    // Its token gone, the slot is free for any token.
    entry.forget(&current);
    drop(current);
    memo.remember(&url, &entry, &bob);
    assert!(holds(&bob));
    // On a colliding URL too.
    let other = colliding(&memo, &url);
    memo.remember(&other, &entry, &alice);
    assert!(holds(&bob));
    assert!(memo.with(&other, |_| Some(())).is_none());
}

/// A URL on the same origin whose text takes the same slot as `url`'s.
fn colliding(memo: &Memo, url: &Url) -> Url {
    (0..)
        .map(|i| Url::parse(&format!("https://h.example/mcp/{i}")).unwrap())
        .find(|other| other != url && memo.slot_of(other) == memo.slot_of(url))
        .unwrap()
}

/// An index with no resources remembers nothing.
#[test]
fn an_empty_memo_remembers_nothing() {
    let resource = ResourceUri::parse("https://h.example/mcp").unwrap();
    let memo = Memo::default();
    let url = Url::parse("https://h.example/mcp").unwrap();
    memo.remember(&url, &Arc::new(entry(&resource)), &token(&resource, None));
    assert!(memo.with(&url, |_| Some(())).is_none());
}
