#!/usr/bin/env bash
# Reserves or releases 2 MiB hugepages for ttdrv's DMA memory.
#
#   scripts/hugepages.sh reserve N   set the pool to N pages (fails if the kernel could not find them all)
#   scripts/hugepages.sh release     empty the pool (pages still in use are freed when their user exits)
#   scripts/hugepages.sh status      print the pool
#
# CI: `scripts/hugepages.sh reserve 64`, then `TTDRV_REQUIRE_HUGEPAGES=1 cargo test`, then `release`. 64 pages
# (128 MiB) cover tests/hugepages.rs (which needs 5 free pages) even while other test binaries' devices hold some.
# Needs root (uses sudo when not root).
set -euo pipefail

NR=/proc/sys/vm/nr_hugepages

usage() {
    echo "usage: $0 reserve N | release | status" >&2
    exit 2
}

set_pool() {
    if [[ $EUID -eq 0 ]]; then
        echo "$1" >"$NR"
    else
        echo "$1" | sudo tee "$NR" >/dev/null
    fi
}

status() {
    grep -E '^(HugePages_(Total|Free|Rsvd|Surp)|Hugepagesize):' /proc/meminfo
}

case "${1:-}" in
reserve)
    n="${2:-}"
    [[ "$n" =~ ^[0-9]+$ ]] || usage
    set_pool "$n"
    got="$(cat "$NR")"
    if ((got < n)); then
        echo "only $got of $n hugepages could be reserved (memory too fragmented?); try again after" \
            "'echo 3 > /proc/sys/vm/drop_caches' or reserve at boot (hugepages=$n on the kernel command line)" >&2
        status >&2
        exit 1
    fi
    ;;
release)
    set_pool 0
    ;;
status) ;;
*)
    usage
    ;;
esac
status
