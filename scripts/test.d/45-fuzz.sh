#!/usr/bin/env bash
# step: fuzz targets (fuzz/), each for 60 s, all at once: record decoding and the emulator on arbitrary records, C-ABI call sequences, ...
# scripts/fuzz.sh builds every [[bin]] of fuzz/Cargo.toml with libFuzzer's instrumentation (plain cargo: nothing to
# install) and runs them side by side, so the step takes the build plus about 60 s whatever the number of targets.
# Fails on any crash, panic, hang past 30 s or undocumented status; the input is left in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec scripts/fuzz.sh "${TTDRV_FUZZ_SECONDS:-60}"
