#!/usr/bin/env bash
# Regenerates include/ttdrv.h with the pinned cbindgen (a dev-dependency of ttdrv-ffi), from crates/ffi/src and
# crates/ffi/cbindgen.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
TTDRV_BLESS=1 cargo test --quiet -p ttdrv-ffi --test header -- --exact header_is_fresh
echo "include/ttdrv.h regenerated"
