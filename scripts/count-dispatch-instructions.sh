#!/usr/bin/env bash
# Instructions per cached dispatch, Rust API beside C ABI (issue 14: the C ABI's premium), counted by callgrind:
# timings on a shared machine are noise, instruction counts are not. Builds crates/ffi/examples/dispatch_instructions.rs
# (release), runs it under `valgrind --tool=callgrind` and prints each path's inclusive instructions per call.
# Not a test step: a measurement for docs/performance.md and for judging changes to the C dispatch path.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cargo build --quiet --release -p ttdrv-ffi --example dispatch_instructions
out=$(mktemp)
trap 'rm -f "$out"' EXIT
calls=$(valgrind --tool=callgrind --callgrind-out-file="$out" target/release/examples/dispatch_instructions 2>/dev/null |
  sed -n 's/^calls per path: //p')
callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null |
  awk -v n="$calls" '/dispatch_instructions::(rust_calls|c_run_calls|c_launch_calls|c_boundary_calls) \[/ {
    gsub(",", "", $1); split($0, a, "::"); split(a[2], b, " "); printf "%-18s %6.0f instructions per call\n", b[1], $1 / n }'
