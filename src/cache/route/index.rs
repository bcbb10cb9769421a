//! The configured resources, indexed for routing: an immutable snapshot that a request reads
//! without a lock, and that an added resource replaces as a whole.
//!
//! Routing stays [`covers_checked`](crate::resource::ResourceUri) on each candidate, longest
//! key first; the index only leaves out resources that cannot cover the URL, by two facts
//! every covering resource shares with the request:
//!
//! - the host: coverage needs the same host (and scheme and port), and `url` writes one host
//!   one way, so the resource's host as its key's `Url` writes it is the request's;
//! - the first path segment: a resource path that is not `/` is a prefix of the request's
//!   normalized path ending on a segment boundary (or, with a query, the whole path), so both
//!   paths start with the same segment. A resource whose path is `/` may cover any path on
//!   its host: it is a candidate for every segment.
//!
//! So a hit costs two hash lookups and the coverage of the few resources that share its host
//! and first segment, however many resources are configured.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use url::Url;

use super::ResourceEntry;
use super::memo::Memo;
use crate::resource::{Coverage, ResourceUri};

/// The resources by host, then by first path segment.
#[derive(Default)]
pub(super) struct Index {
    /// Each host's resources; an `Arc` so that adding a resource copies only its host's.
    hosts: Map<Arc<HostRoutes>>,
    /// One more than the index it was made from.
    generation: u64,
    /// The decisions allowed under these resources (each index starts with none).
    memo: Memo,
}

#[derive(Default, Clone)]
struct HostRoutes {
    /// Every resource on the host, in the order configured.
    all: Vec<Arc<ResourceEntry>>,
    /// The resources whose path is `/`, longest key first.
    root: Vec<Arc<ResourceEntry>>,
    /// By first path segment: the resources whose path starts with it, and the root ones,
    /// longest key first.
    by_segment: Map<Vec<Arc<ResourceEntry>>>,
}

/// A map by string with a fast hash. Its keys are configured hosts and segments (a request
/// only looks them up, so a request cannot lengthen the probes its lookup makes), and a
/// lookup hashes every request's host and first segment: std's SipHash, built to resist
/// chosen keys, cost as much as the rest of the hit path.
type Map<V> = HashMap<Box<str>, V, BuildHasherDefault<WordHasher>>;

/// A multiply-rotate hash over 8-byte words (the one rustc uses for its own tables).
#[derive(Default)]
struct WordHasher(u64);

/// [`WordHasher`]'s hash of `bytes`.
pub(super) fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = WordHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Index {
    /// The longest configured resource that covers `url`, whose path
    /// [`check_request`](crate::resource::check_request) normalized to `path`. Resources are
    /// ordered by the length of their match key (two resources that both cover a URL are on
    /// its origin, and the longer one is nested in the other); among equal lengths, the one
    /// configured first.
    pub(super) fn owner(&self, url: &Url, path: &str) -> Option<&Arc<ResourceEntry>> {
        let host = self.hosts.get(url.host_str()?)?;
        let candidates = host
            .by_segment
            .get(first_segment(path))
            .unwrap_or(&host.root);
        candidates
            .iter()
            .find(|entry| entry.config.resource.covers_checked(url, path) == Coverage::Covered)
    }

    /// A copy to add resources to, of the next generation, with no remembered decisions:
    /// [`sealed`](Self::sealed) when its resources are in.
    pub(super) fn next(&self) -> Self {
        Self {
            hosts: self.hosts.clone(),
            generation: self.generation + 1,
            memo: Memo::default(),
        }
    }

    /// The index with a memo sized for its resources, ready to be read.
    pub(super) fn sealed(mut self) -> Self {
        let resources = self.hosts.values().map(|host| host.all.len()).sum();
        self.memo = Memo::for_resources(resources);
        self
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The decisions allowed under these resources.
    pub(super) fn memo(&self) -> &Memo {
        &self.memo
    }

    /// The entry configured for exactly `resource`.
    pub(super) fn exact(&self, resource: &ResourceUri) -> Option<&Arc<ResourceEntry>> {
        self.hosts
            .get(host_of(resource))?
            .all
            .iter()
            .find(|entry| entry.config.resource == *resource)
    }

    /// Every configured entry, host by host.
    #[cfg(test)]
    pub(super) fn entries(&self) -> impl Iterator<Item = &Arc<ResourceEntry>> {
        self.hosts.values().flat_map(|host| host.all.iter())
    }

    /// Puts `entry` in place of the entry configured for the same resource, everywhere that
    /// one is listed (the same place: the key, and so the order, is the same), and returns
    /// the one it replaced; `None`, changing nothing, when the resource is not configured.
    pub(super) fn replace(&mut self, entry: Arc<ResourceEntry>) -> Option<Arc<ResourceEntry>> {
        let old = self.exact(&entry.config.resource)?.clone();
        let host = self.hosts.get_mut(host_of(&entry.config.resource))?;
        let host = Arc::make_mut(host);
        let lists = std::iter::once(&mut host.all)
            .chain(std::iter::once(&mut host.root))
            .chain(host.by_segment.values_mut());
        for list in lists {
            for slot in list.iter_mut().filter(|e| Arc::ptr_eq(e, &old)) {
                *slot = entry.clone();
            }
        }
        Some(old)
    }

    /// Adds `entry` (the caller has checked that its resource is not configured yet).
    pub(super) fn insert(&mut self, entry: Arc<ResourceEntry>) {
        let host = self
            .hosts
            .entry(host_of(&entry.config.resource).into())
            .or_default();
        Arc::make_mut(host).insert(entry);
    }
}

impl HostRoutes {
    fn insert(&mut self, entry: Arc<ResourceEntry>) {
        self.all.push(entry.clone());
        let path = entry.config.resource.as_url().path();
        if path == "/" {
            for list in self.by_segment.values_mut() {
                insert_longest_first(list, entry.clone());
            }
            insert_longest_first(&mut self.root, entry);
        } else {
            let list = self
                .by_segment
                .entry(first_segment(path).into())
                .or_insert_with(|| self.root.clone());
            insert_longest_first(list, entry);
        }
    }
}

/// Inserts after every entry whose key is as long or longer: longest first, and among equal
/// lengths in the order configured (as the linear scan this replaces chose).
fn insert_longest_first(list: &mut Vec<Arc<ResourceEntry>>, entry: Arc<ResourceEntry>) {
    let len = entry.config.resource.key().len();
    let at = list.partition_point(|e| e.config.resource.key().len() >= len);
    list.insert(at, entry);
}

/// The host a resource's key names, as `url` writes it (the form a request URL's
/// `host_str` has).
fn host_of(resource: &ResourceUri) -> &str {
    resource.as_url().host_str().unwrap_or_default()
}

/// The first segment of an absolute path: `mcp` for `/mcp/tools` and for `/mcp`, empty for
/// `/` and for `//x`.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split_once('/').map_or(rest, |(first, _)| first)
}

#[cfg(test)]
mod tests {
    use super::first_segment;

    #[test]
    fn first_segments() {
        for (path, segment) in [
            ("/", ""),
            ("/mcp", "mcp"),
            ("/mcp/", "mcp"),
            ("/mcp/tools/call", "mcp"),
            ("//x", ""),
            ("/%2F/x", "%2F"),
        ] {
            assert_eq!(first_segment(path), segment, "{path}");
        }
    }
}
