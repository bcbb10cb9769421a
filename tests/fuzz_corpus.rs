//! Replays every file of `fuzz/corpus/<target>/` (and `fuzz/regressions/<target>/`, where
//! fuzzing found something) through the same invariants the fuzz targets assert, so the stable
//! `cargo test` checks them too.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for folder in ["corpus", "regressions"] {
        let dir = root.join(folder).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert_ne!(folder, "corpus", "{} is missing", dir.display());
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable corpus folder").path();
            let data = std::fs::read(&path).expect("readable corpus file");
            check(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no corpus files for {target}");
}

#[test]
fn resource_corpus() {
    replay("resource", audience_cache::invariants::resource);
}

#[test]
fn scope_corpus() {
    replay("scope", audience_cache::invariants::scope);
}

#[test]
fn coverage_corpus() {
    replay("coverage", audience_cache::invariants::coverage);
}

#[test]
fn jwt_aud_corpus() {
    replay("jwt_aud", audience_cache::invariants::jwt_aud);
}

#[test]
fn challenge_corpus() {
    replay("challenge", audience_cache::invariants::challenge);
}

#[test]
fn loopback_redirect_corpus() {
    replay(
        "loopback_redirect",
        audience_cache::invariants::loopback_redirect,
    );
}
