//! The token store: lookups against a model, the weight bound, the CLOCK's second chance, and
//! the listener told of every token that leaves, once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::Tokens;
use crate::audience::TokenAudience;
use crate::key::CacheKey;
use crate::resource::ResourceUri;
use crate::scope::ScopeSet;
use crate::token::{CachedToken, Timing};

fn key(i: usize) -> CacheKey {
    CacheKey::new(
        "https://as.example.com",
        &ResourceUri::parse("https://mcp.example.com/mcp").unwrap(),
        &ScopeSet::parse(&format!("s{i}")).unwrap(),
        "svc",
    )
}

/// A token of `len` bytes (weight `len + 256`) under key `i`.
fn token(i: usize, len: usize) -> Arc<CachedToken> {
    let key = key(i);
    Arc::new(CachedToken::new(
        "t".repeat(len).into(),
        key.clone(),
        key.resource().clone(),
        key.scopes().clone(),
        TokenAudience::unread(),
        Timing::default().schedule(tokio::time::Instant::now(), Some(Duration::from_secs(300))),
        false,
    ))
}

/// A store of `capacity` that records what leaves it.
fn store(capacity: u64) -> (Tokens, Arc<Mutex<Vec<Arc<CachedToken>>>>) {
    let left = Arc::new(Mutex::new(Vec::new()));
    let record = left.clone();
    let tokens = Tokens::new(capacity, move |token| record.lock().unwrap().push(token));
    (tokens, left)
}

fn weight_of(tokens: &Tokens) -> u64 {
    tokens.weight.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, Clone)]
enum Op {
    Insert(usize),
    Get(usize),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..40usize).prop_map(Op::Insert),
        (0..40usize).prop_map(Op::Get),
        (0..40usize).prop_map(Op::Remove),
    ]
}

proptest! {
    /// With room for everything, the store answers as a map does, whatever the order of
    /// inserts and removals (which move tokens inside their shard).
    #[test]
    fn answers_as_a_map_does(ops in proptest::collection::vec(op(), 1..300)) {
        let (tokens, left) = store(u64::MAX);
        let mut model: HashMap<usize, Arc<CachedToken>> = HashMap::new();
        let mut gone = 0;
        for op in ops {
            match op {
                Op::Insert(i) => {
                    let new = token(i, 10);
                    tokens.insert(new.clone());
                    if model.insert(i, new).is_some() {
                        gone += 1;
                    }
                }
                Op::Get(i) => {
                    let found = tokens.get(&key(i));
                    prop_assert_eq!(found.is_some(), model.contains_key(&i));
                    if let (Some(found), Some(expected)) = (found, model.get(&i)) {
                        prop_assert!(Arc::ptr_eq(&found, expected));
                    }
                }
                Op::Remove(i) => {
                    let removed = tokens.remove_if(&key(i), |_| true);
                    prop_assert_eq!(removed.is_some(), model.remove(&i).is_some());
                    if removed.is_some() {
                        gone += 1;
                    }
                }
            }
            prop_assert_eq!(tokens.len(), model.len());
        }
        for (i, expected) in &model {
            prop_assert!(tokens.holds(expected), "token {} lost", i);
        }
        prop_assert_eq!(tokens.matching(|_| true).len(), model.len());
        prop_assert_eq!(weight_of(&tokens), model.len() as u64 * 266);
        prop_assert_eq!(left.lock().unwrap().len(), gone);
    }
}

#[test]
fn a_replaced_token_is_told_once_and_its_weight_leaves() {
    let (tokens, left) = store(u64::MAX);
    let (first, second) = (token(1, 100), token(1, 200));
    tokens.insert(first.clone());
    tokens.insert(first.clone()); // the same token again: nothing leaves
    assert!(left.lock().unwrap().is_empty());
    tokens.insert(second.clone());
    assert_eq!(left.lock().unwrap().len(), 1);
    assert!(Arc::ptr_eq(&left.lock().unwrap()[0], &first));
    assert_eq!(tokens.len(), 1);
    assert_eq!(weight_of(&tokens), 456);
    assert!(tokens.holds(&second) && !tokens.holds(&first));
}

#[test]
fn remove_if_removes_only_what_it_is_told_to() {
    let (tokens, left) = store(u64::MAX);
    let (stored, other) = (token(1, 10), token(1, 10));
    tokens.insert(stored.clone());
    assert!(
        tokens
            .remove_if(&stored.key, |t| Arc::ptr_eq(t, &other))
            .is_none()
    );
    assert!(tokens.holds(&stored));
    let removed = tokens.remove_if(&stored.key, |t| Arc::ptr_eq(t, &stored));
    assert!(removed.is_some_and(|t| Arc::ptr_eq(&t, &stored)));
    assert_eq!((tokens.len(), weight_of(&tokens)), (0, 0));
    assert_eq!(left.lock().unwrap().len(), 1);
    assert!(tokens.remove_if(&stored.key, |_| true).is_none());
}

/// The store never holds more than its capacity once an insert returns, and every evicted
/// token is told.
#[test]
fn the_weight_stays_within_the_capacity() {
    // 4,000 tokens of weight 300 in room for 1,000.
    let capacity = 1_000 * 300;
    let (tokens, left) = store(capacity);
    for i in 0..4_000 {
        tokens.insert(token(i, 44));
        assert!(weight_of(&tokens) <= capacity, "over capacity after {i}");
    }
    let held = tokens.len();
    assert!((900..=1_000).contains(&held), "{held} held");
    assert_eq!(weight_of(&tokens), held as u64 * 300);
    assert_eq!(left.lock().unwrap().len(), 4_000 - held);
    assert_eq!(tokens.matching(|_| true).len(), held);
}

/// Tokens handed out since the hand last passed are spared: with room for 1,000, the 200
/// read again survive 300 newcomers, which evict tokens nobody read.
#[test]
fn tokens_handed_out_again_are_spared_once() {
    let capacity = 1_000 * 300;
    let (tokens, _left) = store(capacity);
    let first: Vec<_> = (0..1_000).map(|i| token(i, 44)).collect();
    for token in &first {
        tokens.insert(token.clone());
    }
    let read: Vec<_> = first.iter().step_by(5).collect();
    for token in &read {
        assert!(tokens.get(&token.key).is_some());
    }
    for i in 0..300 {
        tokens.insert(token(10_000 + i, 44));
    }
    let kept = read.iter().filter(|token| tokens.holds(token)).count();
    assert_eq!(kept, read.len(), "a token read again was evicted first");
}

/// Inserts, lookups and removals from several threads keep the counts and the weight exact.
#[test]
fn threads_keep_the_books_exact() {
    let (tokens, left) = store(u64::MAX);
    let tokens = Arc::new(tokens);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let tokens = tokens.clone();
            std::thread::spawn(move || {
                for round in 0..2_000 {
                    let i = (round * 7 + t) % 500;
                    tokens.insert(token(i, 10));
                    let _ = tokens.get(&key((i + 3) % 500));
                    if round % 3 == 0 {
                        let _ = tokens.remove_if(&key((i + 1) % 500), |_| true);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let held = tokens.matching(|_| true);
    assert_eq!(tokens.len(), held.len());
    assert_eq!(weight_of(&tokens), held.len() as u64 * 266);
    for token in &held {
        assert!(tokens.holds(token));
    }
    assert_eq!(left.lock().unwrap().len() + held.len(), 4 * 2_000);
}

/// A capacity smaller than the shards' share still holds: the other shards give way, and a
/// token heavier than the whole capacity is kept alone.
#[test]
fn a_small_capacity_holds_across_the_shards() {
    // Room for two tokens of weight 300.
    let (tokens, left) = store(600);
    for i in 0..200 {
        tokens.insert(token(i, 44));
        assert!(weight_of(&tokens) <= 600, "over capacity after {i}");
    }
    assert_eq!(tokens.len(), 2);
    assert_eq!(left.lock().unwrap().len(), 198);
    let heavy = token(1_000, 1_000);
    tokens.insert(heavy.clone());
    assert_eq!(tokens.len(), 1, "only the heavy token is left");
    assert!(tokens.holds(&heavy));
    assert_eq!(left.lock().unwrap().len(), 200);
}
