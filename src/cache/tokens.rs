//! Where the cache keeps its tokens: by [`CacheKey`], in shards, bounded by weight.
//!
//! Each shard holds its tokens in a vector and finds them through a hash table of positions
//! in it, so an entry costs a position and a pointer (about 20 bytes with the tables' spare
//! room) where a general-purpose cache keeps several allocations of bookkeeping per entry. A
//! token knows its own key, which the table reads; nothing is copied.
//!
//! Over capacity, the inserting shard evicts by CLOCK (then the others, if it has nothing else
//! to give): its hand passes over the tokens, sparing once each one that was handed out since
//! the hand last passed (the token's recent mark), and evicting the first that was not.
//! Expiry is not the store's: the refresh task lets expired tokens go (`ahead`), and freshness
//! is decided on tokio's clock by the cache.
//!
//! Every token that leaves (replaced, evicted or removed) is passed to the listener once, after
//! the shard's lock is released.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;

use crate::key::CacheKey;
use crate::token::CachedToken;

/// Shards: enough that two threads rarely want the same one, few enough that each keeps a
/// fair share of the capacity.
const SHARDS: usize = 32;

type Listener = Box<dyn Fn(Arc<CachedToken>) + Send + Sync>;

pub(crate) struct Tokens {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    /// The most weight held (`TokenCacheBuilder::max_capacity`), and the weight held.
    capacity: u64,
    weight: AtomicU64,
    len: AtomicUsize,
    on_removal: Listener,
}

#[derive(Default)]
struct Shard {
    /// Positions in `tokens`, found by the hash of the token's key.
    table: HashTable<u32>,
    tokens: Vec<Arc<CachedToken>>,
    /// The CLOCK hand: the position it looks at next.
    hand: usize,
}

impl Tokens {
    /// A store holding at most `capacity` weight (see [`CachedToken::weight`]), telling
    /// `on_removal` of every token that leaves it.
    pub(crate) fn new(
        capacity: u64,
        on_removal: impl Fn(Arc<CachedToken>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            capacity,
            weight: AtomicU64::new(0),
            len: AtomicUsize::new(0),
            on_removal: Box::new(on_removal),
        }
    }

    fn hash(&self, key: &CacheKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[Self::shard_index(hash)]
    }

    fn shard_index(hash: u64) -> usize {
        // The table uses the hash's high bits for its control bytes and its low bits for
        // buckets; the shard takes bits of the middle.
        (hash >> 32) as usize % SHARDS
    }

    /// The token stored under `key`, marked as recently handed out.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<CachedToken>> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read().unwrap_or_else(|p| p.into_inner());
        let token = shard.find(hash, key)?.clone();
        token.mark_recent();
        Some(token)
    }

    /// Whether `token` itself is the one stored under its key (no mark).
    pub(crate) fn holds(&self, token: &Arc<CachedToken>) -> bool {
        let hash = self.hash(&token.key);
        let shard = self.shard(hash).read().unwrap_or_else(|p| p.into_inner());
        shard
            .find(hash, &token.key)
            .is_some_and(|stored| Arc::ptr_eq(stored, token))
    }

    /// Stores `token` under its key, replacing the token there; evicts while the store is over
    /// capacity, from the token's own shard first, then from the others. Only a token heavier
    /// than the whole capacity, alone in the store, is kept over it.
    pub(crate) fn insert(&self, token: Arc<CachedToken>) {
        let hash = self.hash(&token.key);
        let weight = u64::from(token.weight());
        let mut removed = Vec::new();
        {
            let mut guard = self.shard(hash).write().unwrap_or_else(|p| p.into_inner());
            let shard = &mut *guard;
            let found = shard.position(hash, &token.key);
            match found {
                Some(at) => {
                    let old = std::mem::replace(&mut shard.tokens[at], token.clone());
                    self.weight.fetch_add(weight, Ordering::Relaxed);
                    self.weight
                        .fetch_sub(u64::from(old.weight()), Ordering::Relaxed);
                    if !Arc::ptr_eq(&old, &token) {
                        removed.push(old);
                    }
                }
                None => {
                    let at = u32::try_from(shard.tokens.len()).unwrap_or(u32::MAX);
                    shard.tokens.push(token.clone());
                    let (tokens, hasher) = (&shard.tokens, &self.hasher);
                    shard
                        .table
                        .insert_unique(hash, at, |&at| hasher.hash_one(&tokens[at as usize].key));
                    self.weight.fetch_add(weight, Ordering::Relaxed);
                    self.len.fetch_add(1, Ordering::Relaxed);
                }
            }
            while self.over_capacity() {
                match self.evict_one(shard, &token) {
                    Some(evicted) => removed.push(evicted),
                    None => break,
                }
            }
        }
        // Its own shard had nothing else to give (a small capacity spread over the shards):
        // the others give, in turn, one lock at a time.
        let own = Self::shard_index(hash);
        let mut empty = 0;
        let mut next = own;
        while self.over_capacity() && empty < SHARDS {
            next = (next + 1) % SHARDS;
            let mut shard = self.shards[next].write().unwrap_or_else(|p| p.into_inner());
            match self.evict_one(&mut shard, &token) {
                Some(evicted) => {
                    removed.push(evicted);
                    empty = 0;
                }
                None => empty += 1,
            }
        }
        for token in removed {
            (self.on_removal)(token);
        }
    }

    /// Removes the token stored under `key` if `which` says so; returns it.
    pub(crate) fn remove_if(
        &self,
        key: &CacheKey,
        which: impl FnOnce(&Arc<CachedToken>) -> bool,
    ) -> Option<Arc<CachedToken>> {
        let hash = self.hash(key);
        let removed = {
            let mut guard = self.shard(hash).write().unwrap_or_else(|p| p.into_inner());
            let shard = &mut *guard;
            let at = shard.position(hash, key)?;
            if !which(&shard.tokens[at]) {
                return None;
            }
            self.remove_at(shard, at)
        };
        (self.on_removal)(removed.clone());
        Some(removed)
    }

    /// The stored tokens whose keys `which` picks.
    pub(crate) fn matching(&self, which: impl Fn(&CacheKey) -> bool) -> Vec<Arc<CachedToken>> {
        let mut found = Vec::new();
        for shard in &*self.shards {
            let shard = shard.read().unwrap_or_else(|p| p.into_inner());
            found.extend(shard.tokens.iter().filter(|t| which(&t.key)).cloned());
        }
        found
    }

    fn over_capacity(&self) -> bool {
        self.weight.load(Ordering::Relaxed) > self.capacity
    }

    /// How many tokens are stored.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The CLOCK hand's next victim in `shard`, never `keep` (the token being inserted).
    fn evict_one(&self, shard: &mut Shard, keep: &Arc<CachedToken>) -> Option<Arc<CachedToken>> {
        // Two passes at most: the first clears every recent mark it spares.
        for _ in 0..2 * shard.tokens.len() {
            if shard.hand >= shard.tokens.len() {
                shard.hand = 0;
            }
            let token = &shard.tokens[shard.hand];
            if Arc::ptr_eq(token, keep) || token.take_recent() {
                shard.hand += 1;
                continue;
            }
            let at = shard.hand;
            return Some(self.remove_at(shard, at));
        }
        None
    }

    /// Removes the token at `at` from `shard`: the last token takes its place.
    fn remove_at(&self, shard: &mut Shard, at: usize) -> Arc<CachedToken> {
        let hash = self.hash(&shard.tokens[at].key);
        if let Ok(entry) = shard.table.find_entry(hash, |&p| p as usize == at) {
            entry.remove();
        }
        let token = shard.tokens.swap_remove(at);
        let moved = shard.tokens.len();
        if at < moved {
            let hash = self.hash(&shard.tokens[at].key);
            if let Some(position) = shard.table.find_mut(hash, |&p| p as usize == moved) {
                *position = u32::try_from(at).unwrap_or(u32::MAX);
            }
        }
        self.weight
            .fetch_sub(u64::from(token.weight()), Ordering::Relaxed);
        self.len.fetch_sub(1, Ordering::Relaxed);
        token
    }
}

impl Shard {
    fn position(&self, hash: u64, key: &CacheKey) -> Option<usize> {
        let tokens = &self.tokens;
        self.table
            .find(hash, |&at| tokens[at as usize].key == *key)
            .map(|&at| at as usize)
    }

    fn find(&self, hash: u64, key: &CacheKey) -> Option<&Arc<CachedToken>> {
        self.position(hash, key).map(|at| &self.tokens[at])
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
