#!/usr/bin/env bash
# End-to-end test of ttdrv's VFIO transport (src/transport/vfio) on a real Linux kernel, without hardware.
#
# Boots Debian's stock kernel in QEMU (TCG, no KVM needed) with an emulated Intel IOMMU and QEMU's `edu` teaching
# device behind a PCIe root port (so the kernel can reset it), and runs tests/vfio-qemu/vfio-edu-test.rs -- a
# static binary built from this project -- as the guest's only program. The guest kernel's vfio-pci, type1 IOMMU
# and interrupt remapping are the real ones; the test binds edu to vfio-pci, opens it through
# transport::vfio::VfioTransport and checks registers, DMA round trips (2 MiB hugepage and 4 KiB pages), a DMA to
# an unmapped IOVA being blocked, MSI through wait_irq, reset and teardown.
#
# Installs what it lacks with apt-get (qemu-system-x86, busybox-static, cpio, xz-utils); downloads the kernel
# package `linux-image-amd64` depends on with `apt-get download` and unpacks it with `dpkg -x` into
# target/vfio-qemu/cache (it is never installed). The last line of output is `N passed, M failed`; the exit status
# is non-zero on any failure and whenever the test could not run (missing tools, boot failure, timeout).
# TTDRV_SKIP_VFIO_QEMU=1 skips it. TTDRV_VFIO_QEMU_TIMEOUT sets the guest's wall-clock limit (default 120 s).
set -euo pipefail

if [[ "${TTDRV_SKIP_VFIO_QEMU:-}" == 1 ]]; then
    echo "vfio-qemu: skipped (TTDRV_SKIP_VFIO_QEMU=1): the VFIO transport was NOT tested on a kernel"
    exit 0
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
work=$target_dir/vfio-qemu
cache=$work/cache
timeout_s=${TTDRV_VFIO_QEMU_TIMEOUT:-120}
t_start=$SECONDS

# Could not run: say why, and count it as a failure so nobody mistakes it for a pass.
cannot_run() {
    echo "vfio-qemu: could not run: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

apt_updated=
apt_update() {
    if [[ -z "$apt_updated" ]]; then
        echo "vfio-qemu: apt-get update"
        as_root apt-get update -qq >/dev/null || cannot_run "apt-get update failed (root or sudo needed)"
        apt_updated=1
    fi
}

# --- 1. Host tools -------------------------------------------------------------------------------------------
command -v apt-get >/dev/null || cannot_run "apt-get not found: this script needs a Debian-based host"
installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
installed busybox-static || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
command -v gzip >/dev/null || missing+=(gzip)
if ((${#missing[@]})); then
    apt_update
    echo "vfio-qemu: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null || cannot_run "apt-get install ${missing[*]} failed (root or sudo needed)"
fi
busybox=/bin/busybox
[[ -x $busybox ]] || cannot_run "$busybox missing after installing busybox-static"
command -v cargo >/dev/null || cannot_run "cargo not found"

# --- 2. Guest kernel (downloaded, unpacked, never installed) ------------------------------------------------
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
kpkg=$(kernel_pkg)
if [[ -z "$kpkg" ]]; then
    apt_update
    kpkg=$(kernel_pkg)
fi
[[ -n "$kpkg" ]] || cannot_run "apt-cache cannot resolve the package linux-image-amd64 depends on"
kdir=$cache/$kpkg
if ! compgen -G "$kdir/boot/vmlinuz-*" >/dev/null; then
    echo "vfio-qemu: downloading $kpkg"
    mkdir -p "$cache/download"
    rm -rf "$cache/download"/*.deb "$kdir"
    (cd "$cache/download" && apt-get download -qq "$kpkg" 2>&1 | grep -v "unsandboxed" || true)
    deb=$(compgen -G "$cache/download/${kpkg}_*.deb" | head -n1) || true
    [[ -n "$deb" ]] || cannot_run "apt-get download $kpkg failed"
    dpkg -x "$deb" "$kdir.tmp" && mv "$kdir.tmp" "$kdir"
    rm -f "$deb"
fi
vmlinuz=$(compgen -G "$kdir/boot/vmlinuz-*" | head -n1)
kver=${vmlinuz##*/vmlinuz-}
moddir=$kdir/lib/modules/$kver
[[ -d $moddir ]] || cannot_run "$kpkg has no modules directory $moddir"

# --- 3. The test binary, statically linked (the guest has no libc) ------------------------------------------
echo "vfio-qemu: building vfio-edu-test"
mkdir -p "$work"
if ! (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
    --target x86_64-unknown-linux-gnu --example vfio-edu-test) >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    cannot_run "cargo build of vfio-edu-test failed (log: $work/build.log)"
fi
testbin=$target_dir/x86_64-unknown-linux-gnu/release/examples/vfio-edu-test
[[ -x $testbin ]] || cannot_run "$testbin missing after the build"

# --- 4. initramfs: busybox, modules in dependency order, the test binary, /init -----------------------------
root=$work/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,modules}
cp "$busybox" "$root/bin/busybox"
cp "$testbin" "$root/vfio-edu-test"

# Finds a module file by name (module names use '_' where file names may use '-').
module_file() {
    local n=$1
    find "$moddir" \( -name "${n//_/-}.ko" -o -name "${n//_/-}.ko.xz" -o -name "${n//-/_}.ko" \
        -o -name "${n//-/_}.ko.xz" \) -print -quit
}
declare -A seen=()
order=()
# Depth first over the depends= of each module's .modinfo: dependencies land in `order` before their users.
add_module() {
    local n=${1//-/_} f deps d
    [[ -n "${seen[$n]:-}" ]] && return 0
    seen[$n]=1
    f=$(module_file "$n")
    [[ -n "$f" ]] || cannot_run "module $n not found under $moddir"
    case $f in
        *.xz) xz -dc "$f" >"$root/modules/$n.ko" ;;
        *) cp "$f" "$root/modules/$n.ko" ;;
    esac
    deps=$(tr '\0' '\n' <"$root/modules/$n.ko" | sed -n 's/^depends=//p' | head -n1)
    for d in ${deps//,/ }; do
        add_module "$d"
    done
    order+=("$n")
}
# vfio_iommu_type1 is requested by vfio at run time, not a link-time dependency: name it explicitly.
for m in vfio vfio_iommu_type1 vfio_pci; do
    add_module "$m"
done
printf '%s\n' "${order[@]}" >"$root/modules/order"

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do
    insmod /modules/$m.ko || echo "INIT: insmod $m failed"
done
echo 8 > /proc/sys/vm/nr_hugepages
echo "INIT: at $(cut -d' ' -f1 /proc/uptime) s: kernel $(uname -r), modules: $(cat /modules/order | tr '\n' ' '), 2 MiB hugepages: $(cat /proc/sys/vm/nr_hugepages)"
# Keep kernel messages off the console while the test prints (they would interleave with its lines); show the
# IOMMU's fault reports afterwards, as evidence for the blocked DMA.
dmesg -n 1
/vfio-edu-test
status=$?
dmesg | grep -E 'DMAR: \[DMA|vfio' | sed 's/^/INIT: kernel: /'
echo "INIT: at $(cut -d' ' -f1 /proc/uptime) s: vfio-edu-test exited with status $status"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.cpio.gz"
echo "vfio-qemu: guest kernel $kver, modules ${order[*]}"

# --- 5. Boot --------------------------------------------------------------------------------------------------
log=$work/guest.log
t_boot=$SECONDS
set +e
timeout --kill-after=5 "$timeout_s" qemu-system-x86_64 \
    -accel tcg -cpu max -machine q35,kernel-irqchip=split \
    -device intel-iommu,intremap=on,caching-mode=on \
    -device pcie-root-port,id=rp0,chassis=1,slot=1 -device edu,bus=rp0 \
    -smp 2 -m 1G -kernel "$vmlinuz" -initrd "$work/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 intel_iommu=on" \
    -nographic -no-reboot -nodefaults -serial stdio -display none </dev/null >"$log.raw" 2>"$work/qemu.stderr"
qemu_rc=$?
set -e
# The serial console adds CRs and the firmware terminal escapes; strip both before matching lines.
tr -d '\r' <"$log.raw" | sed -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' >"$log"
boot_s=$((SECONDS - t_boot))

# --- 6. Verdict -----------------------------------------------------------------------------------------------
grep -E '^(INIT: |PASS |FAIL |vfio-edu-test: )' "$log" || true
if ((qemu_rc == 124 || qemu_rc == 137)); then
    echo "vfio-qemu: the guest did not finish within ${timeout_s} s; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    tail -n 5 "$work/qemu.stderr" >&2
    cannot_run "timeout"
fi
result=$(grep -E '^vfio-edu-test: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n1 || true)
if [[ -z "$result" ]]; then
    echo "vfio-qemu: no result line from the guest (qemu exit status $qemu_rc); last lines of $log:" >&2
    tail -n 30 "$log" >&2
    tail -n 5 "$work/qemu.stderr" >&2
    cannot_run "the guest did not run the test to the end"
fi
# The binary's own count is authoritative; the PASS/FAIL lines above are its details.
passed=$(sed -E 's/^vfio-edu-test: ([0-9]+) passed, ([0-9]+) failed$/\1/' <<<"$result")
failed=$(sed -E 's/^vfio-edu-test: ([0-9]+) passed, ([0-9]+) failed$/\2/' <<<"$result")
status=$(sed -n 's/^INIT: .*vfio-edu-test exited with status \([0-9]*\)$/\1/p' "$log" | tail -n1)
if [[ "$status" != 0 ]] && ((failed == 0)); then
    failed=1
    echo "vfio-qemu: vfio-edu-test exited with status ${status:-unknown}" >&2
fi
echo "vfio-qemu: guest ran ${boot_s} s, $((SECONDS - t_start)) s in total; log: $log"
echo "$passed passed, $failed failed"
((failed == 0 && passed > 0))
