//! The shared level's settings (feature `redis`), as a user meets them: what is refused when
//! the level is made or the cache is built, what the error says, and that neither the error
//! nor `Debug` shows a key or the Redis password. No Redis is needed: nothing connects here.

#![cfg(feature = "redis")]

use std::time::Duration;

use audience_cache::{SealingKey, SharedLevel, TokenCache};

const KEY_A: [u8; 32] = [0xA1; 32];
const KEY_B: [u8; 32] = [0xB2; 32];

fn shared(keys: Vec<SealingKey>) -> SharedLevel {
    SharedLevel::new("redis://:hunter2@127.0.0.1:6379/", keys).unwrap()
}

fn build(level: SharedLevel) -> Result<(), String> {
    TokenCache::builder()
        .shared_level(level)
        .build()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn the_configuration_is_checked_and_debug_shows_no_secret() {
    let level = shared(vec![SealingKey::new(9, [0x77; 32])]).namespace("ns");
    let shown = format!("{level:?}");
    assert!(shown.contains("keys: [9]"), "{shown}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("119"),
        "{shown}"
    );

    assert!(
        build(shared(vec![]))
            .unwrap_err()
            .contains("at least one sealing key")
    );
    let twice = vec![SealingKey::new(1, KEY_A), SealingKey::new(1, KEY_B)];
    assert!(
        build(shared(twice))
            .unwrap_err()
            .contains("two sealing keys")
    );
    let spaced = shared(vec![SealingKey::new(1, KEY_A)]).namespace("a b");
    assert!(build(spaced).unwrap_err().contains("namespace"));
    let slow = shared(vec![SealingKey::new(1, KEY_A)]).op_timeout(Duration::from_secs(3600));
    assert!(build(slow).unwrap_err().contains("op_timeout"));
    assert!(build(shared(vec![SealingKey::new(1, KEY_A)])).is_ok());

    let bad = SharedLevel::new("redis://:hunter2@[not a host/", vec![]).unwrap_err();
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
}

#[test]
fn an_all_zero_sealing_key_is_refused_with_how_to_make_one() {
    // Listed anywhere: a zero key would open values anyone can seal.
    for keys in [
        vec![SealingKey::new(3, [0; 32])],
        vec![SealingKey::new(1, KEY_A), SealingKey::new(3, [0; 32])],
    ] {
        let error = build(shared(keys)).unwrap_err();
        assert!(error.contains("sealing key 3 is all zero bytes"), "{error}");
        assert!(error.contains("32 random bytes"), "{error}");
        assert!(error.contains("openssl rand"), "{error}");
    }
    // One zero byte is not all zeros.
    let mut key = [0u8; 32];
    key[31] = 1;
    assert!(build(shared(vec![SealingKey::new(1, key)])).is_ok());
}

#[test]
fn a_tls_address_says_tls_is_not_supported_yet() {
    for address in [
        "rediss://:hunter2@127.0.0.1:6380/",
        "rediss://127.0.0.1/",
        "valkeys://127.0.0.1/",
    ] {
        let error = SharedLevel::new(address, vec![]).unwrap_err().to_string();
        assert!(
            error.contains("TLS (rediss://) is not supported yet: "),
            "{address}: {error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[test]
fn an_address_without_a_scheme_says_it_needs_redis_scheme() {
    for address in [
        "127.0.0.1:6379",
        ":hunter2@127.0.0.1:6379",
        "localhost",
        "http://127.0.0.1:6379/",
    ] {
        let error = SharedLevel::new(address, vec![]).unwrap_err().to_string();
        assert!(error.contains("redis://"), "{address}: {error}");
        assert!(!error.contains("TLS"), "{address}: {error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
