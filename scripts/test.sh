#!/usr/bin/env bash
# Runs every test of the project (the README's second command; .ci/run calls it):
# cargo tests (incl. header freshness and version), clippy, rustfmt, the C examples, the race checks, and the
# steps added by later parts (VFIO in QEMU, packaging, sanitizers) when present.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
failed=()
step() {
  local name=$1
  shift
  echo
  echo "=== $name"
  local t0=$(date +%s)
  if "$@"; then
    echo "=== ok: $name ($(($(date +%s) - t0)) s)"
  else
    echo "=== FAILED: $name ($(($(date +%s) - t0)) s)"
    failed+=("$name")
  fi
}

step "cargo test (unit, integration, header freshness)" cargo test --quiet --all-targets
step "cargo test --doc" cargo test --quiet --doc
step "clippy" cargo clippy --quiet --all-targets -- -D warnings
step "rustfmt" cargo fmt --check
step "C examples (make -C c-examples run)" make --no-print-directory -C c-examples run
step "race checks (examples without their waits must fail)" c-examples/check-races.sh
for extra in scripts/test.d/*.sh; do
  [ -e "$extra" ] || continue
  step "$(sed -n 's/^# step: //p' "$extra" | head -n 1)" "$extra"
done

echo
if [ ${#failed[@]} -eq 0 ]; then
  echo "all test steps passed in $(($(date +%s) - start)) s"
else
  echo "FAILED steps: ${failed[*]}"
  exit 1
fi
