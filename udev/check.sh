#!/usr/bin/env bash
# Checks the host set-up files in udev/:
#   1. 70-ttdrv.rules' syntax, with udev's own rule parser (installed from Debian's `udev` package when missing and
#      this runs as root with apt-get; without it the check FAILS, it never passes on a weaker check):
#      - `udevadm verify` where udevadm has it (systemd >= 254);
#      - else `udevadm test` (every udevadm has it; it parses all rules it can see and names each bad line) in a
#        private mount namespace where the only rules visible are ours, so the host's rules neither interfere nor
#        change (needs root and unshare);
#      plus a structural check in awk (keys, operators, quoting) everywhere.
#   2. what the rules match: the vfio-pci binding only with the opt-in file; group access decided by the helper
#      ttdrv-iommu-group, run against a fake sysfs tree and allow lists (a group with any device that is neither a
#      ttdrv device nor on the list stays closed), with an empty environment as udev runs it;
#   3. the format of the sysctl.d and limits.d drop-ins (a sized memlock number, not unlimited; the number itself is
#      checked against the driver's computation by `cargo test -p ttdrv-cli`, doctor's tests).
# Debian 12 ships udev 252, whose udevadm has no `verify`: there the `udevadm test` route is the one that runs.
# Last line: `N passed, M failed`; exits non-zero on any failure.
set -euo pipefail

dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rules=$dir/70-ttdrv.rules
passed=0
failed=0
ok() {
    echo "ok   $*"
    passed=$((passed + 1))
}
bad() {
    echo "FAIL $*"
    failed=$((failed + 1))
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- 1. Rule syntax -------------------------------------------------------------------------------------------
awk_check() {
    # Joins continuation lines, splits each rule at commas outside quotes and checks every KEY{attr}OP"value".
    awk '
    function fail(msg) { printf "%s:%d: %s\n", FILENAME, start, msg; bad = 1 }
    BEGIN {
        split("ACTION DEVPATH KERNEL KERNELS SUBSYSTEM SUBSYSTEMS DRIVER DRIVERS ATTRS TAGS TEST RESULT CONST DEVTYPE", m)
        for (i in m) match_only[m[i]] = 1
        split("OWNER GROUP MODE RUN LABEL GOTO OPTIONS SECLABEL IMPORT NAME SYMLINK", a)
        for (i in a) assign_only[a[i]] = 1
        split("ATTR SYSCTL ENV TAG PROGRAM", e)
        for (i in e) either[e[i]] = 1
    }
    {
        line = $0
        if (rule == "") start = FNR
        if (line ~ /\\$/) { rule = rule substr(line, 1, length(line) - 1); next }
        rule = rule line
        r = rule; rule = ""
        if (r ~ /^[ \t]*(#|$)/) next
        n = 0; tok = ""; inq = 0
        for (i = 1; i <= length(r); i++) {
            c = substr(r, i, 1)
            if (c == "\"" && substr(r, i - 1, 1) != "\\") inq = !inq
            if (c == "," && !inq) { toks[++n] = tok; tok = ""; continue }
            tok = tok c
        }
        if (inq) { fail("unbalanced double quotes"); next }
        toks[++n] = tok
        for (k = 1; k <= n; k++) {
            t = toks[k]
            if (!match(t, /^[ \t]*[A-Z_]+(\{[^}]*\})?[ \t]*(==|!=|\+=|-=|:=|=)[ \t]*"/)) {
                fail("cannot parse `" t "`"); continue
            }
            if (t !~ /"[ \t]*$/) { fail("value not closed in `" t "`"); continue }
            key = t; sub(/^[ \t]*/, "", key); sub(/[{ \t=!+:-].*/, "", key)
            op = t; sub(/^[ \t]*[A-Z_]+(\{[^}]*\})?[ \t]*/, "", op); op = substr(op, 1, 2); sub(/".*/, "", op)
            if (!(key in match_only) && !(key in assign_only) && !(key in either)) { fail("unknown key " key); continue }
            if ((key in match_only) && op != "==" && op != "!=") fail(key " takes == or !=, not " op)
            if ((key in assign_only) && (op == "==" || op == "!=")) fail(key " is assigned, not matched")
            if ((key ~ /^(ATTR|ATTRS|ENV|SYSCTL)$/) && t !~ /\{[^}]+\}/) fail(key " needs {name}")
        }
    }
    END { exit bad }
    ' "$1"
}

if ! command -v udevadm >/dev/null && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "note udevadm is missing: installing Debian's udev package (apt-get install udev)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends udev >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends udev >/dev/null 2>&1; } ||
        echo "note apt-get install udev failed"
fi
if command -v udevadm >/dev/null && udevadm verify --help >/dev/null 2>&1; then
    if out=$(udevadm verify --resolve-names=never "$rules" 2>&1); then
        ok "udevadm verify: $rules"
    else
        bad "udevadm verify: $out"
    fi
elif command -v udevadm >/dev/null && command -v unshare >/dev/null && [[ $(id -u) -eq 0 ]] &&
    [[ -d /etc/udev/rules.d ]]; then
    # Runs `udevadm test` with only the rules file $1 visible; prints its diagnostics about that file, or
    # "NOT READ" when udevadm did not read it.
    udev_test() {
        rm -rf "$tmp/rules" && mkdir -p "$tmp/rules" && cp "$1" "$tmp/rules/"
        local dev hide="" out d name
        name=$(basename "$1")
        dev=$(ls -d /sys/class/mem/null /sys/devices/virtual/mem/null 2>/dev/null | head -n1)
        for d in /run/udev/rules.d /usr/lib/udev/rules.d /lib/udev/rules.d /usr/local/lib/udev/rules.d; do
            [[ -d $d ]] && hide+="mount -t tmpfs none $d; "
        done
        out=$(unshare -m sh -c "mount --bind '$tmp/rules' /etc/udev/rules.d; $hide udevadm test --action=add '$dev'" 2>&1) ||
            true
        if ! grep -q "Reading rules file: .*$name" <<<"$out"; then
            echo "NOT READ: $(tail -n 5 <<<"$out")"
            return
        fi
        # Expected on a host where the group does not exist yet: docs/host-setup.md creates it first.
        grep -E "$name:[0-9]+" <<<"$out" | grep -v "Unknown group 'ttdrv'" || true
    }
    getent group ttdrv >/dev/null || echo "note the group ttdrv does not exist here (groupadd -f ttdrv)"
    diags=$(udev_test "$rules")
    if [[ "$diags" == NOT\ READ* ]]; then
        bad "udevadm test did not read the rules: $diags"
    elif [[ -z "$diags" ]]; then
        ok "udev's parser (udevadm $(udevadm --version) test, our rules only) accepts $(basename "$rules")"
    else
        bad "udev's parser rejects lines of $(basename "$rules"):"$'\n'"$diags"
    fi
    # The same run on a rule with a mistake must report it, or the check above proves nothing.
    sed 's/ATTR{driver_override}="vfio-pci"/ATTR{driver_override}=="vfio-pci", OWNER+="root"/' "$rules" >"$tmp/71-canary.rules"
    canary=$(udev_test "$tmp/71-canary.rules")
    if [[ -n "$canary" && "$canary" != NOT\ READ* ]]; then
        ok "udev's parser reports a deliberate mistake in a copy ($(head -n 1 <<<"$canary" | sed 's/.*rules:[0-9]*[: ]*//'))"
    else
        bad "udevadm test did not report a deliberate mistake in a copy of the rules: ${canary:-(nothing)}"
    fi
else
    bad "udev's parser could not run: it needs udevadm (apt-get install udev), root and unshare; the awk check alone is not enough"
fi
# The awk check runs everywhere, so it stays honest on hosts where udevadm decides too.
if out=$(awk_check "$rules" 2>&1); then
    ok "awk structure check of $(basename "$rules")"
else
    bad "awk structure check of $(basename "$rules"):"$'\n'"$out"
fi

# --- 2. What the rules match --------------------------------------------------------------------------------
bind=$(grep -E 'ATTR\{driver_override\}="vfio-pci"' "$rules" || true)
if [[ $(grep -c . <<<"$bind") == 1 ]] &&
    grep -qE '^ACTION=="add", SUBSYSTEM=="pci", ATTR\{vendor\}=="0x1234", ATTR\{device\}=="0x7454", TEST=="/etc/ttdrv/vfio-autobind", ATTR\{driver_override\}="vfio-pci"' <<<"$bind"; then
    ok "bind rule: 1234:7454 gets driver_override=vfio-pci only with the opt-in /etc/ttdrv/vfio-autobind"
else
    bad "the one driver_override rule must match 1234:7454 and TEST the opt-in /etc/ttdrv/vfio-autobind: $bind"
fi
if grep -E 'MODE="0?666"' "$rules" >/dev/null || grep -E 'MODE=' "$rules" | grep -vq 'MODE="0660"'; then
    bad "a rule grants a mode other than 0660"
else
    ok "access is 0660 for group ttdrv only"
fi
helper=$dir/ttdrv-iommu-group
if ! grep -qE '^ACTION!="remove", SUBSYSTEM=="vfio", KERNEL=="\[0-9\]\*", PROGRAM="ttdrv-iommu-group %k", OWNER="root", GROUP="ttdrv", MODE="0660"$' "$rules"; then
    bad "the /dev/vfio/N rule does not ask ttdrv-iommu-group %k"
elif [[ ! -x $helper ]]; then
    bad "$helper is missing or not executable"
else
    # A fake tree: group 3 holds a bridge and a ttdrv device; group 4 has 1234 and 7454 only on different members;
    # group 5 has QEMU's edu device; group 6 does not exist; group 7 is a ttdrv device alone; group 8 two ttdrv
    # functions; group 9 a ttdrv device and a NIC.
    fake=$tmp/fake
    mkdev() { mkdir -p "$fake/kernel/iommu_groups/$1/devices/$2" && echo "$3" >"$fake/kernel/iommu_groups/$1/devices/$2/vendor" &&
        echo "$4" >"$fake/kernel/iommu_groups/$1/devices/$2/device"; }
    mkdev 3 0000:00:01.0 0x8086 0x1901
    mkdev 3 0000:01:00.0 0x1234 0x7454
    mkdev 4 0000:02:00.0 0x1234 0x11e8
    mkdev 4 0000:02:00.1 0x8086 0x7454
    mkdev 5 0000:03:00.0 0x1234 0x11e8
    mkdev 7 0000:04:00.0 0x1234 0x7454
    mkdev 8 0000:05:00.0 0x1234 0x7454
    mkdev 8 0000:05:00.1 0x1234 0x7454
    mkdev 9 0000:06:00.0 0x1234 0x7454
    mkdev 9 0000:06:00.1 0x8086 0x10fb
    # udev runs the helper with an empty PATH: so do we.
    results() {
        local r=""
        for g in 3 4 5 6 7 8 9 x; do
            if env -i TTDRV_SYSFS="$fake" TTDRV_ALLOW_LIST="$1" /bin/sh "$helper" "$g"; then r+="$g:yes "; else r+="$g:no "; fi
        done
        echo "$r"
    }
    check_case() {
        local what=$1 list=$2 want=$3 got
        got=$(results "$list")
        [[ "$got" == "$want" ]] && ok "ttdrv-iommu-group, $what: $got" || bad "ttdrv-iommu-group, $what: $got, expected $want"
    }
    check_case "no allow list" "$tmp/none" "3:no 4:no 5:no 6:no 7:yes 8:yes 9:no x:no "
    printf '# the root port above the card\n0000:00:01.0   # no ACS\n' >"$tmp/by-address"
    check_case "bridge allowed by address" "$tmp/by-address" "3:yes 4:no 5:no 6:no 7:yes 8:yes 9:no x:no "
    printf '8086:1901\n\n' >"$tmp/by-id"
    check_case "bridge allowed by id" "$tmp/by-id" "3:yes 4:no 5:no 6:no 7:yes 8:yes 9:no x:no "
    printf '0000:00:01.0 0000:02:00.0\n#8086:10fb\n' >"$tmp/several"
    check_case "several on a line, a commented one ignored" "$tmp/several" "3:yes 4:no 5:no 6:no 7:yes 8:yes 9:no x:no "
fi

# --- 3. sysctl.d and limits.d drop-ins ----------------------------------------------------------------------
sysctl_ok=1
while read -r key eq val rest; do
    [[ -z "$key" || $key == \#* ]] && continue
    if [[ "$eq" != "=" || -n "${rest:-}" || ! "$val" =~ ^[0-9]+$ || ! -e /proc/sys/${key//.//} ]]; then
        bad "ttdrv-hugepages.conf: bad line \`$key $eq $val ${rest:-}\`"
        sysctl_ok=0
    fi
done <"$dir/ttdrv-hugepages.conf"
grep -qE '^vm\.nr_hugepages = [0-9]+$' "$dir/ttdrv-hugepages.conf" || {
    bad "ttdrv-hugepages.conf does not set vm.nr_hugepages"
    sysctl_ok=0
}
((sysctl_ok)) && ok "ttdrv-hugepages.conf: $(grep -E '^vm\.' "$dir/ttdrv-hugepages.conf")"
limits_ok=1
while read -r domain type item value rest; do
    [[ -z "$domain" || $domain == \#* ]] && continue
    if [[ "$domain" != "@ttdrv" || ! "$type" =~ ^(soft|hard|-)$ || "$item" != memlock ||
        ! "$value" =~ ^[0-9]+$ || -n "${rest:-}" ]]; then
        bad "99-ttdrv-memlock.conf: bad line \`$domain $type $item $value ${rest:-}\`"
        limits_ok=0
    fi
done <"$dir/99-ttdrv-memlock.conf"
[[ $(grep -cE '^@ttdrv +(soft|hard) +memlock' "$dir/99-ttdrv-memlock.conf") == 2 ]] || {
    bad "99-ttdrv-memlock.conf needs a soft and a hard memlock line for @ttdrv"
    limits_ok=0
}
((limits_ok)) && ok "99-ttdrv-memlock.conf: @ttdrv soft and hard memlock, a sized number ($(awk '/^@ttdrv/ {print $4; exit}' "$dir/99-ttdrv-memlock.conf") KiB)"

echo "$passed passed, $failed failed"
((failed == 0))
