//! The crate's layers, checked from its source: every module imports only modules below it,
//! names come from the module that defines them (never through the crate root's re-exports),
//! and no production module leans on `testing`. A reader can see the pipeline in the imports;
//! this test keeps it that way.
//!
//! The order, from the bottom: values (a resource, a scope set, a key, the audience decision, a
//! challenge, a cached token, the errors, the redirect URI rule, the configuration), DPoP's key,
//! nonces and per-resource use, then discovery (fetching and validating documents), the
//! grants, the credential store (what survives a restart, and the sealing of values at rest),
//! the cache (storage,
//! single-flight, refresh), authorization (onboarding at a discovered server, user
//! authorization), and the HTTP layer (client and middleware). `testing` and `fuzzing` stand
//! apart, above everything, and nothing else imports them.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

const LAYERS: &[&str] = &[
    "resource",
    "scope",
    "key",
    "audience",
    "challenge",
    "token",
    "error",
    "redirect_uri",
    "config",
    "dpop",
    "discovery",
    "grant",
    "store",
    "cache",
    "authorization",
    "http",
];

/// Modules above every layer, that the layers never import.
const APART: &[&str] = &["testing", "fuzzing"];

/// The source of a file without comments and without its `#[cfg(test)]` tail (unit tests may
/// import anything).
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line.split("//").next().unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Every `.rs` file below `dir`.
fn files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The identifiers that follow `crate::` in `code`, including those of a grouped
/// `use crate::{a, b::C}`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

#[test]
fn every_module_imports_only_the_layers_below_it_by_their_own_paths() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let rank = |module: &str| LAYERS.iter().position(|m| *m == module);
    let mut problems = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for path in &all {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        seen.insert(module.clone());
        assert!(
            rank(&module).is_some() || APART.contains(&module.as_str()),
            "{module} is in no layer: add it to LAYERS (or APART) in tests/layers.rs"
        );
        for name in crate_paths(&code(path)) {
            if name.starts_with(|c: char| c.is_uppercase()) {
                problems.insert(format!(
                    "{} uses crate::{name}: import it from the module that defines it",
                    relative.display()
                ));
                continue;
            }
            if name == module || name == "self" {
                continue;
            }
            let bad = match (rank(&module), rank(&name)) {
                (Some(from), Some(to)) => to > from,
                // Nothing in a layer imports testing or fuzzing.
                (Some(_), None) => APART.contains(&name.as_str()),
                (None, _) => false,
            };
            if bad {
                problems.insert(format!(
                    "{} ({module}) imports {name}, which is not below it",
                    relative.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering problems:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
    // The check saw the modules it is about.
    for module in LAYERS {
        assert!(seen.contains(*module), "no module {module} under src/");
    }
}
