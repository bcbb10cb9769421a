#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, one after another, on a copy of the
# committed corpus and regressions, with the target's dictionary, and prints libFuzzer's final
# statistics for each.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
for target in $(cargo fuzz list); do
  work="target/corpus-work/$target"
  mkdir -p "$work"
  cp -n corpus/"$target"/* "$work"/ 2>/dev/null || true
  # Inputs that once broke an invariant or an oracle start every run.
  cp -n regressions/"$target"/* "$work"/ 2>/dev/null || true
  echo "== $target ($seconds s)"
  cargo +nightly fuzz run "$target" "$work" -- -dict="$target.dict" -max_total_time="$seconds" \
    -print_final_stats=1 2>&1 \
    | grep -E '^(stat::|Done|#[0-9]+.*(DONE|pulse))|panicked|ERROR|SUMMARY' | tail -20 || true
done
