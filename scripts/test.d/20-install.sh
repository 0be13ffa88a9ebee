#!/usr/bin/env bash
# step: install into a temporary prefix and build the examples through pkg-config
# Proves the installed artifacts work as a C library's do: scripts/install.sh into a temporary prefix (with a
# distribution-style libdir), then
#  - the files, symlinks and SONAME are what docs/building-with-ttdrv.md promises, and the shared and static
#    libraries export every function of the header (and the shared one nothing else);
#  - c-examples/ built through pkg-config once dynamically and once statically, and run (PASS per example);
#  - the dynamic binaries need libttdrv.so.0 and resolve it from the prefix; the static ones need no libttdrv;
#  - a CMake project finds the install with find_package(ttdrv) and with pkg_check_modules, links it shared and
#    static, and runs (cmake is installed from Debian when missing and we are root; otherwise that part is
#    skipped with a loud message).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

prefix=$tmp/prefix
scripts/install.sh --prefix "$prefix" --libdir lib/x86_64-linux-gnu
lib=$prefix/lib/x86_64-linux-gnu
version=$(awk -F'"' '/^\[/ { pkg = ($0 == "[workspace.package]") } pkg && /^version *=/ { print $2; exit }' Cargo.toml)
major=${version%%.*}

# Files, symlinks, SONAME.
for f in "$lib/libttdrv.so.$version" "$lib/libttdrv.a" "$lib/pkgconfig/ttdrv.pc" "$prefix/include/ttdrv.h" \
  "$lib/cmake/ttdrv/ttdrvConfig.cmake" "$lib/cmake/ttdrv/ttdrvConfigVersion.cmake"; do
  [ -f "$f" ] || fail "$f was not installed"
done
[ "$(readlink "$lib/libttdrv.so.$major")" = "libttdrv.so.$version" ] || fail "libttdrv.so.$major is not a symlink to libttdrv.so.$version"
[ "$(readlink "$lib/libttdrv.so")" = "libttdrv.so.$major" ] || fail "libttdrv.so is not a symlink to libttdrv.so.$major"
soname=$(readelf -d "$lib/libttdrv.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libttdrv.so.$major" ] || fail "SONAME is '$soname', expected libttdrv.so.$major"
cmp -s include/ttdrv.h "$prefix/include/ttdrv.h" || fail "the installed header differs from include/ttdrv.h"
echo "ok: files, symlinks, SONAME $soname"

# Exported symbols: every function the header declares, in both libraries; the shared library exports no other
# function (Rust internals stay hidden).
sed -n 's/^[a-z0-9_ ]*[ *]\(ttdrv_[a-z0-9_]*\)(.*/\1/p' include/ttdrv.h | sort -u >"$tmp/header.syms"
[ "$(wc -l <"$tmp/header.syms")" -ge 40 ] || fail "found only $(wc -l <"$tmp/header.syms") functions in the header"
nm -D --defined-only "$lib/libttdrv.so.$version" | awk '$2 == "T" { print $3 }' | sort -u >"$tmp/so.syms"
nm --defined-only "$lib/libttdrv.a" 2>/dev/null | awk '$2 == "T" && $3 ~ /^ttdrv_/ { print $3 }' | sort -u >"$tmp/a.syms"
diff -u "$tmp/header.syms" "$tmp/so.syms" >&2 || fail "the shared library's exported functions differ from the header's"
comm -23 "$tmp/header.syms" "$tmp/a.syms" | grep . >&2 && fail "the static archive lacks the functions above"
echo "ok: $(wc -l <"$tmp/so.syms") functions exported, exactly the header's"

# pkg-config.
export PKG_CONFIG_PATH=$lib/pkgconfig
[ "$(pkg-config --modversion ttdrv)" = "$version" ] || fail "pkg-config --modversion ttdrv is not $version"
pkg-config --validate ttdrv || fail "pkg-config --validate ttdrv"
echo "ok: pkg-config ttdrv $version: cflags '$(pkg-config --cflags ttdrv)', libs '$(pkg-config --libs ttdrv)', static '$(pkg-config --static --libs ttdrv)'"

# The examples through pkg-config, dynamic then static. Build dirs under c-examples/build (ignored by git).
for link in dynamic static; do
  echo "--- c-examples through pkg-config, LINK=$link"
  rm -rf "c-examples/build/installed-$link"
  make --no-print-directory -C c-examples run USE_PKG_CONFIG=1 LINK=$link BUILD="build/installed-$link"
done
for bin in c-examples/build/installed-dynamic/*; do
  [ -x "$bin" ] && [ -f "$bin" ] || continue
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(libttdrv[^]]*\)\]/\1/p')
  [ "$needed" = "libttdrv.so.$major" ] || fail "$bin needs '$needed', expected libttdrv.so.$major"
  resolved=$(ldd "$bin" | awk '$1 == "libttdrv.so.'"$major"'" { print $3 }')
  [ "$resolved" = "$lib/libttdrv.so.$major" ] || fail "$bin resolves libttdrv.so.$major to '$resolved', not the prefix's"
done
for bin in c-examples/build/installed-static/*; do
  [ -x "$bin" ] && [ -f "$bin" ] || continue
  # (output captured first: `grep -q` in a pipeline under pipefail can fail with SIGPIPE)
  dyn=$(readelf -d "$bin")
  syms=$(nm "$bin")
  grep -q 'NEEDED.*libttdrv' <<<"$dyn" && fail "$bin is linked statically but needs libttdrv"
  grep -q ' T ttdrv_device_open$' <<<"$syms" || fail "$bin does not contain ttdrv_device_open"
done
echo "ok: dynamic examples resolve libttdrv.so.$major from $lib; static examples contain the library"

# CMake: find_package (shared and static) and pkg_check_modules.
if ! command -v cmake >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "cmake is missing: installing it from Debian (apt-get install cmake)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends cmake >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends cmake >/dev/null; } ||
    echo "apt-get install cmake failed"
fi
if ! command -v cmake >/dev/null; then
  echo "SKIPPED: the CMake package check did not run: cmake is not installed (apt-get install cmake)"
  exit 0
fi
mkdir -p "$tmp/cmake-src"
cp c-tests/install_smoke.c "$tmp/cmake-src/"
cat >"$tmp/cmake-src/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(ttdrv_consumer C)
find_package(ttdrv 0.1 REQUIRED)
add_executable(smoke_shared install_smoke.c)
target_link_libraries(smoke_shared PRIVATE ttdrv::ttdrv)
add_executable(smoke_static install_smoke.c)
target_link_libraries(smoke_static PRIVATE ttdrv::ttdrv_static)
find_package(PkgConfig REQUIRED)
pkg_check_modules(TTDRV REQUIRED IMPORTED_TARGET ttdrv>=0.1)
add_executable(smoke_pkgconfig install_smoke.c)
target_link_libraries(smoke_pkgconfig PRIVATE PkgConfig::TTDRV)
EOF
cmake -S "$tmp/cmake-src" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log" >&2; fail "cmake configure"; }
cmake --build "$tmp/cmake-build" >>"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log" >&2; fail "cmake build"; }
for t in smoke_shared smoke_static smoke_pkgconfig; do
  "$tmp/cmake-build/$t" || fail "CMake-built $t failed"
done
grep -q "libttdrv.so.$major => $lib/" <<<"$(ldd "$tmp/cmake-build/smoke_shared")" ||
  fail "smoke_shared does not resolve libttdrv from the prefix"
grep -q 'NEEDED.*libttdrv' <<<"$(readelf -d "$tmp/cmake-build/smoke_static")" && fail "smoke_static needs libttdrv.so"
# A major version the install does not provide must be refused.
sed -i 's/find_package(ttdrv 0.1 REQUIRED)/find_package(ttdrv 1.0 REQUIRED)/' "$tmp/cmake-src/CMakeLists.txt"
if [ "$major" = 0 ] && cmake -S "$tmp/cmake-src" -B "$tmp/cmake-build2" -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/cmake2.log" 2>&1; then
  fail "find_package(ttdrv 1.0) accepted version $version"
fi
echo "ok: CMake find_package(ttdrv) shared and static, pkg_check_modules; find_package(ttdrv 1.0) refused"
