//! Fuzz target `differential`: the match key and coverage against fluent-uri (RFC 3986); see
//! fuzz/README.md and the oracle in `fuzz/oracles/differential.rs`.
#![no_main]

// `Exception::ALL` serves the stable replay's check against docs/rules.md, not the target.
#[allow(dead_code)]
#[path = "../oracles/differential.rs"]
mod differential;

libfuzzer_sys::fuzz_target!(|data: &[u8]| differential::differential(data));
