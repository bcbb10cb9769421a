//! Generations: why a value written back to Redis after it was superseded does not open as
//! current.
//!
//! Next to each entry is its generation record (`{ns}:gen:{digest}`, `{ns}:gen:rt:{digest}`
//! for a grant's refresh token): a number, sealed for the key like a value. A value is sealed
//! with the generation of the record it is written under: the number leads the envelope and
//! is part of its associated data, so it cannot be changed. A value is current only while
//! the record holds its number, and a value with no record (deleted, expired, evicted) is not
//! current. Invalidating an access token, and every write or removal of a refresh token,
//! writes a new number, in one script that first checks that nothing changed since it read.
//! The old bytes of a value sealed before then, written back under its name, are refused.
//!
//! A record cannot stop someone who kept both the value and its record from before and
//! writes both back: Redis is the only memory the processes share, and nothing in it tells
//! the old pair from a current one. Each process keeps a [`Memory`] of the newest record it
//! saw of each key and refuses an older one, so only processes that never saw the newer
//! record take such a pair (see `SharedLevel`'s documentation); the value's own expiry,
//! sealed inside it, bounds what that buys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::zeroize::Zeroizing;

use super::entry::Names;
use super::seal::Sealer;

const LEN: usize = 8;

/// A generation number: ordered by time across the fleet (Unix milliseconds with 16 random
/// low bits, so two processes rarely pick the same one in a millisecond), and above the
/// previous one in any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Generation(u64);

impl Generation {
    /// A generation after `previous` (none: the record is new).
    pub(crate) fn after(previous: Option<Generation>) -> Self {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX >> 16)
        });
        let now = millis.saturating_mul(1 << 16) | u64::from(rand::random::<u16>());
        let next = previous.map_or(0, |p| p.0.saturating_add(1));
        Self(now.max(next))
    }

    fn bytes(self) -> [u8; LEN] {
        self.0.to_be_bytes()
    }
}

/// The most names a [`Memory`] keeps (it forgets them all past that: one entry per key or
/// grant this process used, a bound all the same).
const MEMORY_LIMIT: usize = 100_000;

/// What a process remembers of generations, by Redis name: the newest record it saw of each
/// key (a floor: a record older than that was written back), or the generation of the
/// refresh token it holds.
#[derive(Default)]
pub(crate) struct Memory {
    generations: Mutex<HashMap<String, Generation>>,
}

impl Memory {
    pub(crate) fn get(&self, name: &str) -> Option<Generation> {
        self.lock().get(name).copied()
    }

    /// Remembers `generation` for `name` (none: forgets it).
    pub(crate) fn set(&self, name: &str, generation: Option<Generation>) {
        let mut generations = self.lock();
        match generation {
            Some(generation) => {
                if generations.len() >= MEMORY_LIMIT && !generations.contains_key(name) {
                    generations.clear();
                }
                generations.insert(name.to_owned(), generation);
            }
            None => {
                generations.remove(name);
            }
        }
    }

    /// Whether `generation` is not older than the one remembered for `name`; if so, it is
    /// remembered (the floor only rises).
    pub(crate) fn admit(&self, name: &str, generation: Generation) -> bool {
        match self.get(name) {
            Some(floor) if generation < floor => false,
            Some(floor) if generation == floor => true,
            _ => {
                self.set(name, Some(generation));
                true
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Generation>> {
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A generation record: the number, sealed for the entry's generation context. `None` only
/// without a key (never, once built).
pub(crate) fn seal_record(
    sealer: &Sealer,
    names: &Names,
    generation: Generation,
) -> Option<Vec<u8>> {
    sealer.seal(&names.generation_context, &generation.bytes())
}

/// The number a record holds; `None` if it does not open (or is not a record of this key).
pub(crate) fn open_record(sealer: &Sealer, names: &Names, record: &[u8]) -> Option<Generation> {
    let plaintext = sealer.open(&names.generation_context, record)?;
    let bytes: [u8; LEN] = plaintext.as_slice().try_into().ok()?;
    Some(Generation(u64::from_be_bytes(bytes)))
}

/// A value sealed under `generation`: `generation (8) | envelope`, the number also in the
/// associated data. `None` only without a key (never, once built).
pub(crate) fn seal_value(
    sealer: &Sealer,
    names: &Names,
    generation: Generation,
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let envelope = sealer.seal(&value_context(names, generation), plaintext)?;
    let mut value = Vec::with_capacity(LEN + envelope.len());
    value.extend_from_slice(&generation.bytes());
    value.extend_from_slice(&envelope);
    Some(value)
}

/// What a value read from Redis is, against its record's generation.
pub(crate) enum Opened {
    /// Sealed for this key under the record's generation: its plaintext.
    Current(Zeroizing<Vec<u8>>),
    /// Sealed for this key, but under another generation: the bytes of a value superseded
    /// since (an access token invalidated, a refresh token rotated), written back.
    Superseded,
    /// Not a value of this key (tampered with, copied from another key's entry, malformed,
    /// or sealed with a key no longer listed).
    Unopenable,
}

/// Opens `value` and checks it against `current`, the generation its record holds.
pub(crate) fn open_value(
    sealer: &Sealer,
    names: &Names,
    current: Generation,
    value: &[u8],
) -> Opened {
    let Some((claimed, envelope)) = value.split_first_chunk::<LEN>() else {
        return Opened::Unopenable;
    };
    let claimed = Generation(u64::from_be_bytes(*claimed));
    match sealer.open(&value_context(names, claimed), envelope) {
        None => Opened::Unopenable,
        Some(_) if claimed != current => Opened::Superseded,
        Some(plaintext) => Opened::Current(plaintext),
    }
}

/// The associated data of a value: its key's context and the generation (fixed length, last,
/// after the key's self-delimiting encoding: unambiguous).
fn value_context(names: &Names, generation: Generation) -> Vec<u8> {
    let mut context = Vec::with_capacity(names.context.len() + LEN);
    context.extend_from_slice(&names.context);
    context.extend_from_slice(&generation.bytes());
    context
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::shared_level::entry::Kind;
    use crate::key::CacheKey;
    use crate::resource::ResourceUri;
    use crate::scope::ScopeSet;
    use crate::store::SealingKey;

    fn names_for(account: &str, kind: Kind, sealer: &Sealer) -> Names {
        let resource = ResourceUri::parse("https://mcp.example.com/mcp").unwrap();
        let key =
            CacheKey::new("https://as", &resource, &ScopeSet::empty(), "c").with_account(account);
        Names::new("ns", kind, &key, sealer)
    }

    #[test]
    fn a_value_is_current_only_under_the_generation_it_was_sealed_with() {
        let sealer = Sealer::new(&[SealingKey::new(1, [7; 32])]);
        let names = names_for("a", Kind::AccessToken, &sealer);
        let first = Generation::after(None);
        let second = Generation::after(Some(first));
        assert!(second.0 > first.0);
        let value = seal_value(&sealer, &names, first, b"token").unwrap();
        assert!(matches!(
            open_value(&sealer, &names, first, &value),
            Opened::Current(plaintext) if plaintext.as_slice() == b"token"
        ));
        // Invalidated since: the same bytes are no longer current.
        assert!(matches!(
            open_value(&sealer, &names, second, &value),
            Opened::Superseded
        ));
        // Relabelled with the new number: does not open at all.
        let mut relabelled = value.clone();
        relabelled[..LEN].copy_from_slice(&second.bytes());
        assert!(matches!(
            open_value(&sealer, &names, second, &relabelled),
            Opened::Unopenable
        ));
        for i in 0..value.len() {
            let mut changed = value.clone();
            changed[i] ^= 1;
            assert!(
                !matches!(
                    open_value(&sealer, &names, first, &changed),
                    Opened::Current(_)
                ),
                "byte {i}"
            );
        }
        assert!(matches!(
            open_value(&sealer, &names, first, &value[..LEN]),
            Opened::Unopenable
        ));
        // Another key's entry, or the other kind: does not open.
        for other in [
            names_for("b", Kind::AccessToken, &sealer),
            names_for("a", Kind::RefreshToken, &sealer),
        ] {
            assert!(matches!(
                open_value(&sealer, &other, first, &value),
                Opened::Unopenable
            ));
        }
    }

    #[test]
    fn a_record_opens_only_as_the_record_of_its_key_and_kind() {
        let sealer = Sealer::new(&[SealingKey::new(1, [7; 32])]);
        let names = names_for("a", Kind::AccessToken, &sealer);
        let generation = Generation::after(None);
        let record = seal_record(&sealer, &names, generation).unwrap();
        assert_eq!(open_record(&sealer, &names, &record), Some(generation));
        for other in [
            names_for("b", Kind::AccessToken, &sealer),
            names_for("a", Kind::RefreshToken, &sealer),
        ] {
            assert_eq!(open_record(&sealer, &other, &record), None);
        }
        // A value is not a record, nor a record a value.
        let value = seal_value(&sealer, &names, generation, &generation.bytes()).unwrap();
        assert_eq!(open_record(&sealer, &names, &value), None);
        assert_eq!(open_record(&sealer, &names, &value[LEN..]), None);
        assert!(matches!(
            open_value(&sealer, &names, generation, &record),
            Opened::Unopenable
        ));
        let other_key = Sealer::new(&[SealingKey::new(2, [9; 32])]);
        assert_eq!(open_record(&other_key, &names, &record), None);
    }

    #[test]
    fn a_floor_admits_its_generation_and_newer_ones_and_only_rises() {
        let memory = Memory::default();
        let (g1, g2) = (Generation(10), Generation(20));
        assert!(memory.admit("ns:gen:x", g1));
        assert!(memory.admit("ns:gen:x", g2));
        assert!(!memory.admit("ns:gen:x", g1), "written back from before");
        assert!(memory.admit("ns:gen:x", g2));
        assert_eq!(memory.get("ns:gen:x"), Some(g2));
        // Each name its own floor.
        assert!(memory.admit("ns:gen:y", g1));
        memory.set("ns:gen:y", None);
        assert_eq!(memory.get("ns:gen:y"), None);
    }

    #[test]
    fn generations_only_grow() {
        let far = Generation(u64::MAX - 1);
        assert_eq!(Generation::after(Some(far)), Generation(u64::MAX));
        let mut last = Generation::after(None);
        for _ in 0..1000 {
            let next = Generation::after(Some(last));
            assert!(next.0 > last.0);
            last = next;
        }
    }
}
