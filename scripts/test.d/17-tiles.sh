#!/usr/bin/env bash
# step: tiled tensors from C (c-tests/tiles.c): round trips, compute, raw device bytes against the documented in-tile order
# Tiled buffers (TTDRV_TENSOR_LAYOUT_TILE) of shapes that are and are not multiples of 32, interleaved and sharded,
# round-trip; a matmul of tiled operands, an add mixing tiled and row-major operands and ttdrv_to_layout both ways
# match plain C references; and a tiled buffer's pages, copied raw through a row-major view of the same DRAM pages,
# hold the elements in the order docs/device-interface.md §8.3.2 documents, padding zero.
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory -C c-tests tiles BUILD=build/plain
