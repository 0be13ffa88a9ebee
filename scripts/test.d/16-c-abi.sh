#!/usr/bin/env bash
# step: log callback from C (hugepage-fallback warning on the calling thread, re-entry, silent stderr), trace ownership from C, the README's C snippet, the device boundary and registered host memory from C, trace patching from C
# c-tests/log_callback.c takes every free hugepage, installs a callback and opens a device with hugepages requested:
# the fallback warning must reach the callback on the calling thread before ttdrv_device_open returns, and the
# callback calls back into ttdrv. Child processes check that without a callback nothing reaches stderr (a panic
# inside a call included) and that TTDRV_LOG=warn prints there. Then README.md's "Using ttdrv from C" snippet is
# extracted exactly as written, compiled as C11 and C++17 with -Werror, and run. c-tests/trace_ownership.c checks
# which device memory a trace owns (intermediates freed during a capture, concurrent captures, a buffer of another
# spec over a freed output, ttdrv_program_run_io). c-tests/boundary.c checks the device boundary from C: failed reads
# cancelled, pending reads ended by a reset, partial writes and resets reported per buffer
# (TTDRV_STATUS_CONTENTS_UNDEFINED, ttdrv_buffer_contents), a lying device refused until reset, close bounded.
# c-tests/registered.c moves data through registered host memory (DRAM and L1, blocking and not), checks every
# argument, and that unregister waits for the transfers in flight. c-tests/trace_patch.c patches captured traces:
# listings, rebinding for all replays and for one, named scalars, launch_with roles, a saved file's bindings, a patch
# racing a replay on another queue (refused, then ordered by an event), and every argument check.
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory -C c-tests log-callback trace-ownership readme boundary registered trace-patch BUILD=build/abi
