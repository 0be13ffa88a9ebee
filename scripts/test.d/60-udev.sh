#!/usr/bin/env bash
# step: udev rules and host configuration files (syntax and matching)
set -euo pipefail
cd "$(dirname "$0")/../.."
exec udev/check.sh
