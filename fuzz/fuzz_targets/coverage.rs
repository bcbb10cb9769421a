//! Fuzz target `coverage`: see fuzz/README.md for the surface and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| audience_cache::fuzzing::coverage(data));
