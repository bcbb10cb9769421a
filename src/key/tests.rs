//! The key's unit tests: equality, encoding, display, and the parts derived keys share.

use super::*;

fn key() -> CacheKey {
    CacheKey::new(
        "https://as.example",
        &ResourceUri::parse("https://rs.example/mcp").unwrap(),
        &ScopeSet::parse("a b").unwrap(),
        "client",
    )
}

#[test]
fn the_padded_key_is_hmac_under_the_32_random_bytes() {
    let random = [7u8; 32];
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(&random);
    let padded = SubjectKey {
        mac: <Hmac<Sha256> as KeyInit>::new(&block.into()),
    };
    let mut direct = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&random).unwrap();
    direct.update(&6u64.to_be_bytes());
    direct.update(b"type-1");
    direct.update(&5u64.to_be_bytes());
    direct.update(b"token");
    let expected: [u8; 32] = direct.finalize().into_bytes().into();
    assert_eq!(padded.fingerprint("type-1", b"token").0, expected);
}

#[test]
fn fingerprints_are_keyed_and_tell_type_and_token_apart() {
    let (one, two) = (SubjectKey::random(), SubjectKey::random());
    let fp = one.fingerprint("t", b"token");
    assert_eq!(fp, one.fingerprint("t", b"token"));
    assert_ne!(fp, two.fingerprint("t", b"token"));
    assert_ne!(fp, one.fingerprint("t", b"token2"));
    assert_ne!(fp, one.fingerprint("u", b"token"));
    // No shifting of bytes between the type and the token.
    assert_ne!(one.fingerprint("ab", b"c"), one.fingerprint("a", b"bc"));
    assert_eq!(format!("{one:?}"), "SubjectKey([redacted])");
}

#[test]
fn an_exchanged_key_is_its_subjects_and_shows_four_bytes() {
    let subject = SubjectKey::random();
    let alice = subject.fingerprint("t", b"alice's token");
    let bob = subject.fingerprint("t", b"bob's token");
    let a = key().with_account("tenant").exchanged(alice);
    let b = key().with_account("tenant").exchanged(bob);
    assert_ne!(a, b);
    assert_ne!(a, key().with_account("tenant"));
    assert_eq!(a, key().exchanged(alice).with_account("tenant"));
    assert!(a.with_scopes(&ScopeSet::empty()).is_exchanged());
    assert_eq!(a.encoded()[0], 4);
    assert_eq!(
        a.encoded().len(),
        key().with_account("tenant").encoded().len() + 32
    );
    // The fingerprint, then the DPoP flag (no key).
    let encoded = a.encoded();
    assert!(encoded[..encoded.len() - 1].ends_with(&alice.0));
    let shown = format!("{a} {a:?}");
    let hex: String = alice.0.iter().map(|b| format!("{b:02x}")).collect();
    assert!(shown.contains(&hex[..8]), "{shown}");
    assert!(!shown.contains(&hex[..10]), "{shown}");
    assert!(shown.contains("by token exchange"), "{shown}");
}

/// The bytes, written out by hand: the in-memory form may change, the encoding may not
/// (shared levels and credential stores name entries by it).
#[test]
fn the_encoding_is_pinned_byte_for_byte() {
    fn part(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let fingerprint = SubjectFingerprint([9; 32]);
    let full = key()
        .with_dpop("tp")
        .with_account("alice")
        .exchanged(fingerprint);
    let mut expected = vec![4];
    for p in [
        "https://as.example",
        "https://rs.example/mcp",
        "a b",
        "client",
    ] {
        part(&mut expected, p);
    }
    expected.push(1);
    part(&mut expected, "alice");
    // The grant: token exchange.
    expected.push(1);
    expected.push(1);
    expected.extend_from_slice(&[9; 32]);
    expected.push(1);
    part(&mut expected, "tp");
    assert_eq!(full.encoded(), &expected[..]);
    let mut plain = vec![4];
    for p in [
        "https://as.example",
        "https://rs.example/mcp",
        "a b",
        "client",
    ] {
        part(&mut plain, p);
    }
    // No account, the client's own grant, no subject, no DPoP key.
    plain.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(key().encoded(), &plain[..]);
}

/// Keys derived from one another share their common parts; equality and hashing are those
/// of the encoding, however the keys were made.
#[test]
fn derived_keys_share_their_common_parts_and_compare_as_encoded() {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher as _;
    let base = key().with_dpop("tp");
    let other = base.with_scopes(&ScopeSet::parse("c").unwrap());
    assert!(Arc::ptr_eq(&base.inner.common, &other.inner.common));
    let account = other.clone().with_account("bob");
    assert!(Arc::ptr_eq(&base.inner.common, &account.inner.common));
    // The same key made from scratch: equal, with the same hash, not the same parts.
    let fresh = CacheKey::new(
        "https://as.example",
        &ResourceUri::parse("https://rs.example/mcp").unwrap(),
        &ScopeSet::parse("c").unwrap(),
        "client",
    )
    .with_dpop("tp");
    assert!(!Arc::ptr_eq(&fresh.inner.common, &other.inner.common));
    assert_eq!(fresh, other);
    let state = RandomState::new();
    assert_eq!(state.hash_one(&fresh), state.hash_one(&other));
    assert_eq!(fresh.encoded(), other.encoded());
    // Every part tells keys apart, as the encoding does.
    for different in [
        CacheKey::new(
            "https://as.example/",
            &ResourceUri::parse("https://rs.example/mcp").unwrap(),
            &ScopeSet::parse("c").unwrap(),
            "client",
        )
        .with_dpop("tp"),
        fresh.with_scopes(&ScopeSet::parse("d").unwrap()),
        fresh.clone().with_account(""),
        key().with_scopes(&ScopeSet::parse("c").unwrap()),
        fresh.clone().with_dpop("tq"),
        fresh.clone().exchanged(SubjectFingerprint([0; 32])),
    ] {
        assert_ne!(different, fresh, "{different:?}");
        assert_ne!(different.encoded(), fresh.encoded());
    }
}

#[test]
fn a_dpop_key_is_part_of_the_key_and_its_encoding() {
    let plain = key().with_account("tenant");
    let a = plain.clone().with_dpop("thumbprint-a");
    let b = plain.clone().with_dpop("thumbprint-b");
    assert_ne!(a, plain);
    assert_ne!(a, b);
    assert_eq!(a, key().with_dpop("thumbprint-a").with_account("tenant"));
    // Carried through the other derivations.
    assert_eq!(
        a.with_scopes(&ScopeSet::empty()).dpop_thumbprint(),
        Some("thumbprint-a")
    );
    assert_eq!(plain.dpop_thumbprint(), None);
    assert_eq!(a.encoded()[0], 4);
    assert_eq!(
        a.encoded().len(),
        plain.encoded().len() + 8 + "thumbprint-a".len()
    );
    assert!(a.encoded().ends_with(b"thumbprint-a"));
    assert_eq!(*plain.encoded().last().unwrap(), 0);
    assert!(format!("{a}").contains("DPoP key thumbprint-a"));
}

proptest::proptest! {
    /// Keys compare by their parts and are made without their encoding: equal exactly when
    /// their encodings are, and equal keys hash alike, for keys made from scratch and keys
    /// derived from one another (which share their common parts).
    #[test]
    fn keys_are_equal_exactly_when_their_encodings_are(
        parts in proptest::collection::vec(
            (0usize..2, 0usize..3, 0usize..3, 0usize..2, 0usize..3, 0usize..2, 0usize..5, 0usize..2, proptest::bool::ANY),
            2..8,
        ),
    ) {
        use std::collections::hash_map::RandomState;
        use std::hash::BuildHasher as _;
        let issuers = ["https://as.example", "https://as.example/"];
        let resources = ["https://rs.example/mcp", "https://RS.example/mcp", "https://rs.example/mcp/"];
        let scopes = ["", "a b", "b a c"];
        let clients = ["client", "client2"];
        let accounts = [None, Some(""), Some("bob")];
        let dpop = [None, Some("tp")];
        let grants = [
            GrantPart::Client,
            GrantPart::TokenExchange,
            GrantPart::JwtBearer,
            GrantPart::IdJag("https://idp.example".into()),
            GrantPart::IdJag("https://idp2.example".into()),
        ];
        let base = CacheKey::new(issuers[0], &ResourceUri::parse(resources[0]).unwrap(), &ScopeSet::empty(), clients[0]);
        let keys: Vec<CacheKey> = parts
            .iter()
            .map(|&(i, r, s, c, a, d, g, x, derived)| {
                let scope = ScopeSet::parse(scopes[s]).unwrap();
                let mut key = if derived && i == 0 && r == 0 && c == 0 {
                    base.with_scopes(&scope)
                } else {
                    CacheKey::new(issuers[i], &ResourceUri::parse(resources[r]).unwrap(), &scope, clients[c])
                };
                if let Some(account) = accounts[a] {
                    key = key.with_account(account);
                }
                if let Some(thumbprint) = dpop[d] {
                    key = key.with_dpop(thumbprint);
                }
                key = key.obtained_by(grants[g].clone());
                if x == 1 {
                    key = key.exchanged(SubjectFingerprint([7; 32]));
                }
                key
            })
            .collect();
        let state = RandomState::new();
        for a in &keys {
            for b in &keys {
                proptest::prop_assert_eq!(a == b, a.encoded() == b.encoded(), "{:?} {:?}", a, b);
                if a == b {
                    proptest::prop_assert_eq!(state.hash_one(a), state.hash_one(b));
                }
            }
        }
    }
}
