//! Sealing values at rest: XChaCha20-Poly1305 under the user's keys, bound to what they are
//! for. The shared level (feature `redis`) seals its entries with it, and the file store
//! (feature `file-store`) its records: one envelope format, written once.
//!
//! An envelope is `version (1) | key id (1) | nonce (24) | ciphertext and tag`. The associated
//! data is the two header bytes followed by the caller's context (for the shared level the
//! namespace, the kind of value and the [`CacheKey`](crate::key::CacheKey)'s encoding; for the
//! file store the kind of record and its identity), so a value opens only under the identity
//! it was sealed for, and a changed header byte fails like a changed ciphertext byte.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret as _, SecretBox};
use sha2::Sha256;

/// The envelope format this version writes and reads.
const VERSION: u8 = 1;
/// XChaCha20-Poly1305's nonce: 192 bits, so random nonces are safe in any number of processes.
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 2 + NONCE_LEN;

/// A 256-bit key that seals and opens the shared level's values (feature `redis`) or the file
/// store's records (feature `file-store`), with a one-byte id stored in each envelope so that
/// opening uses the right key at once.
///
/// The key bytes are held in a [`SecretBox`] (zeroed when dropped) and never shown: `Debug`
/// prints the id only. Give every key of a rotation its own id.
///
/// ```
/// use audience_cache::SealingKey;
///
/// let key = SealingKey::new(7, [0x42; 32]); // in real use: 32 random bytes from a secret store
/// assert_eq!(key.id(), 7);
/// assert_eq!(format!("{key:?}"), "SealingKey { id: 7, key: \"[redacted]\" }");
/// ```
pub struct SealingKey {
    id: u8,
    key: SecretBox<[u8; 32]>,
}

impl SealingKey {
    /// A key with its id. The bytes should be uniformly random (32 bytes from a CSPRNG or a
    /// secret manager, e.g. `openssl rand -hex 32`, hex-decoded), the same in every process of
    /// the fleet. A key of all zero bytes (a buffer never filled) is refused when the cache is
    /// built or the file store opened.
    pub fn new(id: u8, key: [u8; 32]) -> Self {
        Self {
            id,
            key: SecretBox::new(Box::new(key)),
        }
    }

    /// The id stored in the envelopes this key seals.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Whether every byte is zero: a buffer never filled, not a secret (refused when the
    /// cache is built or the file store opened).
    pub(crate) fn is_all_zero(&self) -> bool {
        self.key.expose_secret().iter().all(|&b| b == 0)
    }
}

impl Clone for SealingKey {
    fn clone(&self) -> Self {
        Self::new(self.id, *self.key.expose_secret())
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// The ciphers made from the configured keys (the first one seals), and from each key the
/// secret that names entries (so that entry names say nothing to someone without the key).
pub(crate) struct Sealer {
    keys: Vec<(u8, XChaCha20Poly1305)>,
    namers: Vec<Hmac<Sha256>>,
}

/// What a key's naming secret is derived from: HMAC-SHA-256 under the key, of this label.
/// (The file store names its records with the same secret: its contexts differ from the
/// shared level's, so no name of one is a name of the other.)
const NAMING_LABEL: &[u8] = b"audience-cache shared level entry names v1";

impl Sealer {
    /// `keys` is not empty and its ids are distinct (checked when the cache is built).
    pub(crate) fn new(keys: &[SealingKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|k| {
                    let cipher = XChaCha20Poly1305::new(k.key.expose_secret().into());
                    (k.id, cipher)
                })
                .collect(),
            namers: keys
                .iter()
                .filter_map(|k| namer(k.key.expose_secret()))
                .collect(),
        }
    }

    /// The hex HMAC-SHA-256 of `data` under each key's naming secret, the sealing key's
    /// first: the names an entry may have (written under the first, read under any).
    pub(crate) fn digests(&self, data: &[u8]) -> Vec<String> {
        self.namers
            .iter()
            .map(|namer| {
                let mut mac = namer.clone();
                mac.update(data);
                hex(&mac.finalize().into_bytes())
            })
            .collect()
    }

    /// Seals `plaintext` with the newest key, a fresh random nonce, and `context` as
    /// associated data. `None` only if there is no key (never, once built).
    pub(crate) fn seal(&self, context: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let (id, cipher) = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        // ThreadRng: a CSPRNG seeded from the operating system.
        rand::thread_rng().fill_bytes(&mut nonce);
        let header = [VERSION, *id];
        let aad = associated_data(header, context);
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .ok()?;
        let mut envelope = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        envelope.extend_from_slice(&header);
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&ciphertext);
        Some(envelope)
    }

    /// Opens an envelope sealed for `context` with any listed key; `None` if it does not open
    /// (another context, a changed byte, an unknown key id or version, too short).
    pub(crate) fn open(&self, context: &[u8], envelope: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if envelope.len() < HEADER_LEN || envelope[0] != VERSION {
            return None;
        }
        let header = [envelope[0], envelope[1]];
        let (_, cipher) = self.keys.iter().find(|(id, _)| *id == header[1])?;
        let aad = associated_data(header, context);
        cipher
            .decrypt(
                XNonce::from_slice(&envelope[2..HEADER_LEN]),
                Payload {
                    msg: &envelope[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// The HMAC that names entries for one key: keyed with HMAC(key, [`NAMING_LABEL`]), never the
/// sealing key itself.
fn namer(key: &[u8; 32]) -> Option<Hmac<Sha256>> {
    let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    derive.update(NAMING_LABEL);
    let secret: Zeroizing<[u8; 32]> = Zeroizing::new(derive.finalize().into_bytes().into());
    <Hmac<Sha256> as Mac>::new_from_slice(secret.as_slice()).ok()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn associated_data(header: [u8; 2], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(2 + context.len());
    aad.extend_from_slice(&header);
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(keys: &[(u8, u8)]) -> Sealer {
        let keys: Vec<_> = keys
            .iter()
            .map(|&(id, byte)| SealingKey::new(id, [byte; 32]))
            .collect();
        Sealer::new(&keys)
    }

    #[test]
    fn opens_what_it_sealed_and_nothing_else() {
        let sealer = sealer(&[(1, 0xA1)]);
        let envelope = sealer.seal(b"key one", b"payload").unwrap();
        assert_eq!(&*sealer.open(b"key one", &envelope).unwrap(), b"payload");
        assert!(sealer.open(b"key two", &envelope).is_none());
        for i in 0..envelope.len() {
            let mut changed = envelope.clone();
            changed[i] ^= 1;
            assert!(sealer.open(b"key one", &changed).is_none(), "byte {i}");
        }
        assert!(sealer.open(b"key one", &envelope[..HEADER_LEN]).is_none());
        assert!(sealer.open(b"key one", &[]).is_none());
    }

    #[test]
    fn the_newest_key_seals_and_any_listed_key_opens() {
        let old = sealer(&[(1, 0xA1)]);
        let rotated = sealer(&[(2, 0xB2), (1, 0xA1)]);
        let only_new = sealer(&[(2, 0xB2)]);
        let sealed_old = old.seal(b"k", b"v").unwrap();
        assert!(rotated.open(b"k", &sealed_old).is_some());
        assert!(only_new.open(b"k", &sealed_old).is_none());
        let sealed_new = rotated.seal(b"k", b"v").unwrap();
        assert_eq!(sealed_new[1], 2);
        assert!(only_new.open(b"k", &sealed_new).is_some());
        // Two seals of one value differ (random nonces).
        assert_ne!(rotated.seal(b"k", b"v"), rotated.seal(b"k", b"v"));
    }

    #[test]
    fn only_a_key_of_zeros_is_all_zero() {
        assert!(SealingKey::new(1, [0; 32]).is_all_zero());
        for i in 0..32 {
            let mut key = [0; 32];
            key[i] = 0x80;
            assert!(!SealingKey::new(1, key).is_all_zero(), "byte {i}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", SealingKey::new(3, [0x5A; 32]));
        assert!(!shown.contains("90") && !shown.contains("5a") && !shown.contains("5A"));
    }
}
