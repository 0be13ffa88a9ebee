#!/usr/bin/env bash
# step: VFIO transport on a real kernel (QEMU guest with an emulated IOMMU and the edu device)
# Installs its Debian packages if missing; fails when it cannot run. TTDRV_SKIP_VFIO_QEMU=1 skips it explicitly.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec tests/vfio-qemu/run.sh
