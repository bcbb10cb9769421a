//! Replays every file of `fuzz/corpus/<target>/` (and `fuzz/regressions/<target>/`, where
//! fuzzing found something) through the same invariants the fuzz targets assert, so the stable
//! `cargo test` checks them too: the oracles of `audience_cache::fuzzing`, and the
//! `differential` target's oracle, which is compiled here from the fuzz crate's own file
//! (fluent-uri is a dev-dependency for it).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

#[path = "../fuzz/oracles/differential.rs"]
mod differential;

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

#[test]
fn differential_corpus() {
    replay("differential", differential::differential);
}

/// The differential oracle's exceptions are the ones `docs/rules.md` names, each once, in its
/// section of exceptions, and that section names no other: a difference the oracle tolerates is
/// always a documented rule.
#[test]
fn differential_exceptions_are_the_rules_exceptions() {
    let rules =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/rules.md"))
            .expect("readable rules");
    let heading = "## Exceptions to syntax-based normalization";
    let section = rules
        .split_once(heading)
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or_default())
        .expect("the rules have a section of exceptions");
    // Each exception is a list item opening with its name in backticks.
    let named: Vec<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("- `"))
        .filter_map(|line| line.split_once('`').map(|(name, _)| name))
        .collect();
    let applied: Vec<&str> = differential::Exception::ALL
        .iter()
        .map(|exception| exception.name())
        .collect();
    assert_eq!(named, applied);
}

/// Each named exception is needed and enough: the crate's answer on an input of each kind
/// (`empty-path-is-root`, `port-as-number`, `host-as-a-label`, `request-as-parsed` for IPv6,
/// IPv4 shorthand and a query escape) passes the oracle; without the exception it would not.
#[test]
fn the_differential_oracle_passes_each_named_exception() {
    for quiet in [
        "https://mcp.example.com",
        "https://mcp.example.com:0442/mcp",
        "HTTPS://B\u{dc}CHER.example:00443/a%7e?q=%c3%a9",
        "http://[::1]:8080/mcp\nhttp://[0:0::1]:8080/mcp/x",
        "https://127.0.0.1/mcp\nhttps://0x7f.0.0.1/mcp/x",
        "https://mcp.example.com/mcp?a=%27\nhttps://mcp.example.com/mcp?a='",
    ] {
        differential::differential(quiet.as_bytes());
    }
}

/// Hostile requests (feature `arbitrary`) for arbitrary resources, through the differential
/// oracle: the fuzzer's corpus holds few covered requests, and these reach the covered side of
/// the comparison thousands of times.
#[cfg(feature = "arbitrary")]
#[test]
fn hostile_requests_agree_with_fluent_uri() {
    use arbitrary::{Arbitrary as _, Unstructured};
    use audience_cache::fuzzing::HostileRequest;
    use rand::{RngCore as _, SeedableRng as _};

    let mut rng = rand::rngs::StdRng::seed_from_u64(3986);
    let mut covered = 0;
    for i in 0..20_000 {
        let mut bytes = vec![0; 16 + i % 100];
        rng.fill_bytes(&mut bytes);
        let request = HostileRequest::arbitrary(&mut Unstructured::new(&bytes))
            .expect("a hostile request from any bytes");
        let resource = request.resource();
        differential::differential(format!("{}\n{}", resource.wire(), request.url()).as_bytes());
        covered += usize::from(
            url::Url::parse(request.url()).is_ok_and(|url| resource.covers(&url).is_covered()),
        );
    }
    assert!(covered > 1000, "{covered} covered");
}
