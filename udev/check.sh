#!/usr/bin/env bash
# Checks the host set-up files in udev/:
#   1. 70-ttdrv.rules' syntax, with udev's own rule parser:
#      - `udevadm verify` where udevadm has it (systemd >= 254);
#      - else `udevadm test` (every udevadm has it; it parses all rules it can see and names each bad line) in a
#        private mount namespace where the only rules visible are ours, so the host's rules neither interfere nor
#        change (needs root and unshare);
#      - else a structural check in awk (keys, operators, quoting), which catches typos but not everything udev
#        rejects; the output says which check ran.
#   2. the behaviour of the rule's PROGRAM (does this IOMMU group hold a ttdrv device?) against a fake sysfs tree;
#   3. the format of the sysctl.d and limits.d drop-ins.
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

if command -v udevadm >/dev/null && udevadm verify --help >/dev/null 2>&1; then
    if out=$(udevadm verify --resolve-names=never "$rules" 2>&1); then
        ok "udevadm verify: $rules"
    else
        bad "udevadm verify: $out"
    fi
elif command -v udevadm >/dev/null && command -v unshare >/dev/null && [[ $(id -u) -eq 0 ]] &&
    [[ -d /etc/udev/rules.d ]]; then
    mkdir -p "$tmp/rules"
    cp "$rules" "$tmp/rules/"
    dev=$(ls -d /sys/class/mem/null /sys/devices/virtual/mem/null 2>/dev/null | head -n1)
    hide=""
    for d in /run/udev/rules.d /usr/lib/udev/rules.d /lib/udev/rules.d /usr/local/lib/udev/rules.d; do
        [[ -d $d ]] && hide+="mount -t tmpfs none $d; "
    done
    out=$(unshare -m sh -c "mount --bind '$tmp/rules' /etc/udev/rules.d; $hide udevadm test --action=add '$dev'" 2>&1) ||
        true
    if ! grep -q "Reading rules file: .*70-ttdrv.rules" <<<"$out"; then
        bad "udevadm test did not read the rules:"$'\n'"$(tail -n 5 <<<"$out")"
    else
        diags=$(grep -E '70-ttdrv\.rules:[0-9]+' <<<"$out" || true)
        if ! getent group ttdrv >/dev/null; then
            # Expected on a host where the group does not exist yet: docs/host-setup.md creates it first.
            grep -q "Unknown group 'ttdrv'" <<<"$diags" && echo "note the group ttdrv does not exist here (groupadd -f ttdrv)"
            diags=$(grep -v "Unknown group 'ttdrv'" <<<"$diags" || true)
        fi
        if [[ -z "$diags" ]]; then
            ok "udev's parser (udevadm $(udevadm --version) test, our rules only) accepts $(basename "$rules")"
        else
            bad "udev's parser rejects lines of $(basename "$rules"):"$'\n'"$diags"
        fi
    fi
else
    echo "note udevadm with root and unshare is not available: checking the structure only (awk)"
fi
# The awk check runs everywhere, so it stays honest on hosts where udevadm decides too.
if out=$(awk_check "$rules" 2>&1); then
    ok "awk structure check of $(basename "$rules")"
else
    bad "awk structure check of $(basename "$rules"):"$'\n'"$out"
fi

# --- 2. What the rules match --------------------------------------------------------------------------------
grep -qE '^ACTION=="add", SUBSYSTEM=="pci", ATTR\{vendor\}=="0x1234", ATTR\{device\}=="0x7454", ATTR\{driver_override\}="vfio-pci"' "$rules" &&
    ok "bind rule: 1234:7454 gets driver_override=vfio-pci" || bad "bind rule for 1234:7454 with driver_override not found"
if grep -E 'MODE="0?666"' "$rules" >/dev/null || grep -E 'MODE=' "$rules" | grep -vq 'MODE="0660"'; then
    bad "a rule grants a mode other than 0660"
else
    ok "access is 0660 for group ttdrv only"
fi
prog=$(sed -n 's/.*SUBSYSTEM=="vfio", .*PROGRAM="\([^"]*\)".*/\1/p' "$rules")
if [[ -z "$prog" ]]; then
    bad "no PROGRAM in the /dev/vfio/N rule"
else
    # A fake tree: group 3 holds a bridge and a ttdrv device; group 4 has 1234 and 7454 only on different members;
    # group 5 has QEMU's edu device.
    fake=$tmp/fake
    mkdev() { mkdir -p "$fake/sys/kernel/iommu_groups/$1/devices/$2" && echo "$3" >"$fake/sys/kernel/iommu_groups/$1/devices/$2/vendor" &&
        echo "$4" >"$fake/sys/kernel/iommu_groups/$1/devices/$2/device"; }
    mkdev 3 0000:00:01.0 0x8086 0x1901
    mkdev 3 0000:01:00.0 0x1234 0x7454
    mkdev 4 0000:02:00.0 0x1234 0x11e8
    mkdev 4 0000:02:00.1 0x8086 0x7454
    mkdev 5 0000:03:00.0 0x1234 0x11e8
    run_prog() {
        # udev substitutes %k (the group number) and turns $$ into $; the paths move into the fake tree.
        local cmd=${prog//%k/$1}
        cmd=${cmd//\$\$/\$}
        cmd=${cmd//\/sys\//$fake\/sys\/}
        (eval "$cmd")
    }
    results=""
    for g in 3 4 5 6; do
        if run_prog $g; then results+="$g:match "; else results+="$g:no "; fi
    done
    [[ "$results" == "3:match 4:no 5:no 6:no " ]] &&
        ok "/dev/vfio/N rule matches only groups holding a 1234:7454 device ($results)" ||
        bad "/dev/vfio/N rule PROGRAM gives $results, expected 3:match 4:no 5:no 6:no"
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
        ! "$value" =~ ^(unlimited|infinity|[0-9]+)$ || -n "${rest:-}" ]]; then
        bad "99-ttdrv-memlock.conf: bad line \`$domain $type $item $value ${rest:-}\`"
        limits_ok=0
    fi
done <"$dir/99-ttdrv-memlock.conf"
[[ $(grep -cE '^@ttdrv +(soft|hard) +memlock' "$dir/99-ttdrv-memlock.conf") == 2 ]] || {
    bad "99-ttdrv-memlock.conf needs a soft and a hard memlock line for @ttdrv"
    limits_ok=0
}
((limits_ok)) && ok "99-ttdrv-memlock.conf: @ttdrv soft and hard memlock"

echo "$passed passed, $failed failed"
((failed == 0))
