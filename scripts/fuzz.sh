#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS seconds each (default 60), all at once, and fails if any finds a crash.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# The targets are built with libFuzzer's coverage instrumentation (the flags `cargo fuzz` uses: sanitizer coverage,
# `--cfg fuzzing`, debug assertions and overflow checks, AddressSanitizer unless FUZZ_SANITIZER=none) by plain
# cargo, so nothing needs installing first; `RUSTC_BOOTSTRAP=1` lets the stable toolchain take the sanitizer flag.
# Each target starts from its committed corpus (fuzz/corpus/TARGET, never modified here: new inputs go to a
# temporary directory) and a crash leaves its input in fuzz/artifacts/TARGET/; replay one with
# `fuzz/target/<host>/release/TARGET fuzz/artifacts/TARGET/crash-...`.
#
# Longer runs: `scripts/fuzz.sh 3600`, or with cargo-fuzz installed (`cargo install cargo-fuzz --locked`):
# `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -a TARGET -- -max_total_time=3600`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(awk '/^\[\[bin\]\]/{b = 1} b && /^name *=/{gsub(/[" ]/, "", $0); sub(/^name=/, "", $0); print; b = 0}' fuzz/Cargo.toml)
fi
host=$(rustc -vV | sed -n 's/^host: //p')
flags="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers"
case "${FUZZ_SANITIZER:-address}" in
  address) flags+=" -Zsanitizer=address" ;;
  none) ;;
  *) echo "FUZZ_SANITIZER is address or none" >&2; exit 2 ;;
esac
echo "building ${targets[*]} (instrumented, $host)"
t0=$(date +%s)
# --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags" cargo build --quiet --release --manifest-path fuzz/Cargo.toml \
  --target "$host" $(printf -- '--bin %s ' "${targets[@]}")
echo "built in $(($(date +%s) - t0)) s; running each target for $secs s"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pids=()
for t in "${targets[@]}"; do
  mkdir -p "$tmp/$t" "fuzz/artifacts/$t" "fuzz/corpus/$t"
  # Leak checking is off: the targets keep their emulated devices between inputs on purpose.
  ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}" "fuzz/target/$host/release/$t" -max_total_time="$secs" \
    -timeout=30 -rss_limit_mb=3072 -detect_leaks=0 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" "$tmp/$t" "fuzz/corpus/$t" >"$tmp/$t.log" 2>&1 &
  pids+=($!)
done
failed=()
for i in "${!targets[@]}"; do
  t=${targets[$i]}
  if wait "${pids[$i]}"; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$t.log" | tail -n 1)
    echo "fuzz $t: ok, ${runs:-?} executions in $secs s"
  else
    echo "fuzz $t: FAILED (input in fuzz/artifacts/$t/); its log ends:"
    tail -n 40 "$tmp/$t.log"
    failed+=("$t")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz targets with findings: ${failed[*]}"; exit 1; }
