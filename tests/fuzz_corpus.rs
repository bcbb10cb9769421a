//! Replays every file of `fuzz/corpus/<target>/` (and `fuzz/regressions/<target>/`, where
//! fuzzing found something) through the same invariants the fuzz targets assert, so the stable
//! `cargo test` checks them too.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Replays every file and then fails naming each file that broke the invariant and how, so
/// one run shows every broken input, not only the first.
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    let mut broken = Vec::new();
    for folder in ["corpus", "regressions"] {
        let dir = root.join(folder).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert_ne!(folder, "corpus", "{} is missing", dir.display());
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|entry| entry.expect("readable corpus folder").path())
            .collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).expect("readable corpus file");
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                broken.push(format!("{folder}/{target}/{}: {message}", file_name(&path)));
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no corpus files for {target}");
    assert!(
        broken.is_empty(),
        "{} of {replayed} inputs break the {target} invariants:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn resource_corpus() {
    replay("resource", audience_cache::fuzzing::resource);
}

#[test]
fn scope_corpus() {
    replay("scope", audience_cache::fuzzing::scope);
}

#[test]
fn coverage_corpus() {
    replay("coverage", audience_cache::fuzzing::coverage);
}

#[test]
fn jwt_aud_corpus() {
    replay("jwt_aud", audience_cache::fuzzing::jwt_aud);
}

#[test]
fn challenge_corpus() {
    replay("challenge", audience_cache::fuzzing::challenge);
}

#[test]
fn loopback_redirect_corpus() {
    replay(
        "loopback_redirect",
        audience_cache::fuzzing::loopback_redirect,
    );
}
