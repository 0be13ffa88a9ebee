#!/usr/bin/env bash
# step: transformer ops from C (c-tests/nn.c): a tiny encoder layer op by op against C references, GELU erf form, bad arguments
# Embedding (word + position + type), layer norm (plain and residual), linear (bias, no bias, GELU erf), attention
# scores and context through ttdrv_bmm reading and writing heads in place, masked softmax and normalized mean pooling
# are each checked against a double-precision C reference computed from the device's own inputs to that op; then
# ttdrv_eltwise_unary's TTDRV_UNARY_GELU_ERF against libm's erf, and invalid arguments (INVALID_ARGUMENT, message,
# output untouched). docs/device-interface.md §8.2 defines the kernels.
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory -C c-tests nn BUILD=build/plain
