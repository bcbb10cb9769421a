#!/bin/bash -eu
# The build script OSS-Fuzz (and ClusterFuzzLite, which reads the same layout) runs inside its
# base-builder-rust image: $SRC holds the checkout, $OUT receives, per target, the binary, its
# dictionary as <target>.dict and its seeds as <target>_seed_corpus.zip. The image has nightly
# Rust and cargo-fuzz, and sets RUSTFLAGS for the sanitizer; cargo fuzz links its libFuzzer.
#
# Outside that image it runs too, for a dry run: `SRC=$(pwd)/.. OUT=/tmp/out fuzz/oss-fuzz/build.sh`
# from the repository root (with a nightly toolchain as the default, or RUSTUP_TOOLCHAIN=nightly).

# The repository's root: $SRC/audience-cache in OSS-Fuzz's layout, or this file's grandparent.
PROJECT_DIR="${PROJECT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
FUZZ_DIR="$PROJECT_DIR/fuzz"
OUT="${OUT:?set OUT to the folder that receives the fuzzers}"
mkdir -p "$OUT"

# Where cargo builds: CARGO_TARGET_DIR when the environment sets one, else fuzz/target.
TARGET_DIR="${CARGO_TARGET_DIR:-$FUZZ_DIR/target}"

cd "$FUZZ_DIR"
# -O: optimized, as OSS-Fuzz runs them; debug assertions on (as `cargo fuzz run` builds by
# default), so that the crate's own checks (the cache key's encoded length, for one) fire
# under fuzzing as they do in tests.
cargo fuzz build -O --debug-assertions --target-dir "$TARGET_DIR"

# Every [[bin]] of fuzz/Cargo.toml is a target.
targets=$(cargo fuzz list)
release="$TARGET_DIR/x86_64-unknown-linux-gnu/release"

for target in $targets; do
  cp "$release/$target" "$OUT/$target"
  if [ -f "$FUZZ_DIR/$target.dict" ]; then
    cp "$FUZZ_DIR/$target.dict" "$OUT/$target.dict"
  fi
  # Seeds: the committed corpus (made from tests/vectors) and the inputs that once broke an
  # invariant or an oracle, flat in one zip as OSS-Fuzz expects.
  seeds="$(mktemp -d)"
  for folder in "$FUZZ_DIR/corpus/$target" "$FUZZ_DIR/regressions/$target"; do
    if [ -d "$folder" ]; then
      cp "$folder"/* "$seeds"/ 2>/dev/null || true
    fi
  done
  rm -f "$OUT/${target}_seed_corpus.zip"
  if [ -n "$(ls -A "$seeds")" ]; then
    (cd "$seeds" && zip -q -j "$OUT/${target}_seed_corpus.zip" ./*)
  fi
  rm -rf "$seeds"
done
