#!/usr/bin/env bash
# step: bad-input suite in C (c-tests/bad_input.c): documented status, message, and a working device after every bad call
# NULL for every pointer argument, freed/forged/wrong-kind handles of every kind, zero/huge/overflowing sizes,
# out-of-range values, wrong queue ids, calls out of order, PROGRAM_NOT_CACHED, TRACE_REGION, a closed device,
# close with work in flight, a forked child, the panic boundary. Prints "bad_input: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory -C c-tests bad-input BUILD=build/plain
