#!/usr/bin/env bash
# step: C examples, bad-input suite, log callback, tiles, trace ownership, device-boundary, registered-memory and trace-patch tests, README snippet and C++ program under ASan + UBSan + LeakSanitizer (gcc), against the library
# The C side is instrumented (-fsanitize=address,undefined); the Rust library is not (that needs nightly), but its
# heap goes through the sanitizer's malloc, so a leak, double free or overrun of a block the library allocated is
# caught too. First a canary with deliberate bugs proves each checker reports in this environment.
#
# No suppressions are needed: the Rust runtime's one-time allocations (thread-local error messages, the handle
# registry, std's lazily initialised statics) stay reachable from globals, and LeakSanitizer reports only
# unreachable blocks. If one is ever needed, add it to a file passed with LSAN_OPTIONS=suppressions=... here, one
# entry per line with the reason.
set -euo pipefail
cd "$(dirname "$0")/../.."
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
export ASAN_OPTIONS="detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
B=build/asan

make --no-print-directory -C c-tests "$B/san_canary" BUILD=$B SAN="$SAN"
for case in leak:LeakSanitizer overflow:heap-buffer-overflow use-after-free:heap-use-after-free; do
  mode=${case%%:*} want=${case#*:}
  if out=$(c-tests/$B/san_canary "$mode" 2>&1); then
    echo "FAIL: the sanitizers did not stop san_canary $mode" >&2
    exit 1
  fi
  grep -q "$want" <<<"$out" || { echo "FAIL: san_canary $mode: no '$want' report: $out" >&2; exit 1; }
  echo "ok: canary $mode reported ($want)"
done

# boundary.c frees read destinations right after failed or reset reads: a write into one afterwards is a
# heap-use-after-free report here; so is a device write into registered memory that registered.c freed right after
# unregistering it.
make --no-print-directory -C c-tests header bad-input log-callback tiles trace-ownership readme boundary registered trace-patch BUILD=$B \
  SAN="$SAN"
make --no-print-directory -C c-examples run BUILD=$B EXTRA_CFLAGS="$SAN" EXTRA_LDFLAGS="$SAN"
