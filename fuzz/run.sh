#!/usr/bin/env bash
# Builds every fuzz target once and runs each for a while (docs/FUZZING.md).
#
#   fuzz/run.sh              # 20 s per target (what scripts/test runs)
#   fuzz/run.sh 600          # 10 minutes per target
#   fuzz/run.sh 600 redact_stream
#   CI=true fuzz/run.sh      # cargo-fuzz that cannot be installed is a failure
#
# Stable Rust builds the libFuzzer instrumentation with RUSTC_BOOTSTRAP=1.
# No sanitizer: every crate under test forbids unsafe code, and without ASan the
# build is shorter and the runs faster. Runs under 120 s use a debug build
# (quick to build), longer ones an optimized one. Findings go to
# fuzz/artifacts/<target>/, the growing corpus to fuzz/corpus/<target>/ (both
# untracked); fuzz/seeds/<target>/ holds the committed starting inputs.
set -euo pipefail
cd "$(dirname "$0")"

ci="${CI:-false}"
secs="${1:-${HODEI_FUZZ_SECONDS:-20}}"
only="${2:-}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz)"
  cargo install cargo-fuzz --locked --quiet || true
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  if [ "$ci" = "true" ]; then echo "FATAL (CI=true): cargo-fuzz is not installed and could not be" >&2; exit 1; fi
  echo "WARNING: cargo-fuzz is not installed — fuzz targets skipped" >&2
  exit 0
fi

# Short runs (CI) build without optimizations: a cold release build of the
# dependencies takes about twice as long as the whole smoke run saves.
if [ "$secs" -lt 120 ]; then flags=(--dev -s none); else flags=(-O -s none); fi
if [ -n "${HODEI_FUZZ_TARGET_DIR:-}" ]; then flags+=(--target-dir "$HODEI_FUZZ_TARGET_DIR"); fi
cargo fuzz build "${flags[@]}"

targets=$(cargo fuzz list)
failed=0
for t in $targets; do
  if [ -n "$only" ] && [ "$t" != "$only" ]; then continue; fi
  mkdir -p "corpus/$t"
  dirs=("corpus/$t")
  if [ -d "seeds/$t" ]; then dirs+=("seeds/$t"); fi
  log=$(mktemp "/tmp/hodei-fuzz-$t.XXXXXX")
  if cargo fuzz run "${flags[@]}" "$t" "${dirs[@]}" -- \
      -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $t: ${runs:-?} runs in ${secs} s, $cov, no failure"
  else
    tail -60 "$log" >&2
    echo "fuzz $t: FAILED (the input is in fuzz/artifacts/$t/; full log $log)" >&2
    failed=1
  fi
done
exit "$failed"
