#!/usr/bin/env bash
# step: unsafe code paths (DMA memory, emulated IOMMU, rings; the C ABI) under valgrind memcheck
# tests/unsafe_paths.rs runs the code that uses `unsafe` at small sizes (smallest rings, 64 KiB mappings); here its
# debug build runs under memcheck, which fails the step on any invalid read or write, use of uninitialised memory,
# bad free or definite leak. Miri and Rust's sanitizers need nightly, which cannot be installed. A canary with
# deliberate bugs proves memcheck reports them here. Timeouts are scaled for valgrind (TTDRV_TEST_TIMEOUT_S).
# Then the bad-input suite runs against the release library under memcheck too: the library's FFI code reads and
# writes the caller's memory, which ASan (step 30) cannot check because the Rust side is not instrumented. Leaks are
# not checked there (LeakSanitizer does, in step 30): the suite forks, and memcheck reports the blocks the parent's
# device threads own as lost in the child, where those threads do not exist.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "FAIL: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
VG=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
  --show-leak-kinds=definite -q)
B=build/valgrind

make --no-print-directory -C c-tests "$B/san_canary" BUILD=$B SAN=
for mode in leak overflow use-after-free; do
  rc=0
  out=$("${VG[@]}" c-tests/$B/san_canary "$mode" 2>&1) || rc=$?
  [ "$rc" = 99 ] || { echo "FAIL: memcheck did not report san_canary $mode (exit $rc): $out" >&2; exit 1; }
  echo "ok: canary $mode reported by memcheck"
done

bin=$(cargo test --quiet -p ttdrv --no-run --test unsafe_paths --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\/unsafe_paths-[0-9a-f]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "FAIL: could not build tests/unsafe_paths.rs" >&2; exit 1; }
TTDRV_TEST_TIMEOUT_S=300 timeout 900 "${VG[@]}" "$bin" --test-threads=1
# The driver's own unit tests of its DMA buffers and completion consumer (private layers, so tested in the crate).
lib=$(cargo test --quiet -p ttdrv --lib --no-run --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\/ttdrv-[0-9a-f]*\)".*/\1/p' | tail -n 1)
[ -x "$lib" ] || { echo "FAIL: could not build the ttdrv crate's unit tests" >&2; exit 1; }
timeout 900 "${VG[@]}" "$lib" --test-threads=1 dma:: queue::
make --no-print-directory -C c-tests lib "$B/bad_input" BUILD=$B
timeout 900 valgrind --tool=memcheck --error-exitcode=99 --leak-check=no -q c-tests/$B/bad_input
