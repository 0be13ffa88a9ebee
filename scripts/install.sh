#!/usr/bin/env bash
# Builds ttdrv and installs it as a C library under a prefix:
#   LIBDIR/libttdrv.so.X.Y.Z, LIBDIR/libttdrv.so.X -> libttdrv.so.X.Y.Z, LIBDIR/libttdrv.so -> libttdrv.so.X
#   LIBDIR/libttdrv.a
#   LIBDIR/pkgconfig/ttdrv.pc                                   (from packaging/ttdrv.pc.in)
#   LIBDIR/cmake/ttdrv/ttdrvConfig.cmake, ttdrvConfigVersion.cmake (from packaging/*.cmake.in)
#   INCLUDEDIR/ttdrv.h                                          (the checked-in, generated header)
# The shared library's SONAME is libttdrv.so.X (build.rs); the install refuses a library without it.
# docs/building-with-ttdrv.md says how to build against the result.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/install.sh --prefix DIR [--libdir DIR] [--includedir DIR] [--destdir DIR] [--no-build]
  --prefix DIR       install prefix (required), e.g. /usr/local or $HOME/.local
  --libdir DIR       libraries, pkg-config and CMake files (default PREFIX/lib; relative = under PREFIX),
                     e.g. --libdir lib/x86_64-linux-gnu
  --includedir DIR   the header (default PREFIX/include; relative = under PREFIX)
  --destdir DIR      stage the files under DIR (as make's DESTDIR: paths inside the files stay PREFIX-based)
  --no-build         install what target/release holds instead of running `cargo build --release -p ttdrv-ffi`
EOF
}

prefix="" libdir="" includedir="" destdir="" build=1
while [ $# -gt 0 ]; do
  case $1 in
    --prefix | --libdir | --includedir | --destdir)
      [ $# -ge 2 ] || { echo "install.sh: $1 needs a value" >&2; exit 2; }
      declare "${1#--}=$2"
      shift 2
      ;;
    --prefix=* | --libdir=* | --includedir=* | --destdir=*)
      opt=${1%%=*}
      declare "${opt#--}=${1#*=}"
      shift
      ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument \`$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$prefix" ] || { echo "install.sh: --prefix is required" >&2; usage >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=$(realpath -m "$prefix")
under_prefix() { case $1 in /*) realpath -m "$1" ;; *) realpath -m "$prefix/$1" ;; esac; }
libdir=$(under_prefix "${libdir:-lib}")
includedir=$(under_prefix "${includedir:-include}")
if [ -n "$destdir" ]; then destdir=$(realpath -m "$destdir"); fi

version=$(awk -F'"' '/^\[/ { pkg = ($0 == "[workspace.package]") } pkg && /^version *=/ { print $2; exit }' "$root/Cargo.toml")
[[ $version =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || { echo "install.sh: cannot read the version from Cargo.toml" >&2; exit 1; }
major=${BASH_REMATCH[1]}

target_dir=${CARGO_TARGET_DIR:-$root/target}
if [ "$build" = 1 ]; then
  (cd "$root" && cargo build --quiet --release -p ttdrv-ffi)
fi
so="$target_dir/release/libttdrv.so"
ar="$target_dir/release/libttdrv.a"
for f in "$so" "$ar"; do
  [ -f "$f" ] || { echo "install.sh: $f is missing; run without --no-build" >&2; exit 1; }
done
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
if [ "$soname" != "libttdrv.so.$major" ]; then
  echo "install.sh: $so has SONAME '${soname:-none}', expected libttdrv.so.$major (build.rs sets it); rebuild" >&2
  exit 1
fi

# What the static archive needs: the native libraries of Rust's standard library, as this rustc reports them for
# any static library (ttdrv's own dependencies — libc, bitflags, thiserror — link no native library; the install
# test links a program statically through pkg-config, which fails if this list is ever short).
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
libs_private=$(echo '' | rustc --edition 2021 --crate-type staticlib --crate-name probe -o "$probe/libprobe.a" \
  --print native-static-libs - 2>&1 | sed -n 's/.*native-static-libs: //p')
[ -n "$libs_private" ] || { echo "install.sh: rustc did not report native-static-libs" >&2; exit 1; }
libs_private_cmake=$(for l in $libs_private; do printf '%s;' "${l#-l}"; done)
libs_private_cmake=${libs_private_cmake%;}

# pkg-config variables relative to ${prefix} where possible, so the .pc file reads like a distribution's.
pc_path() { case $1 in "$prefix") echo '${prefix}' ;; "$prefix"/*) echo "\${prefix}/${1#"$prefix"/}" ;; *) echo "$1" ;; esac; }
subst() {
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$(pc_path "$libdir")|g" -e "s|@INCLUDEDIR@|$(pc_path "$includedir")|g" \
    -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" -e "s|@LIBS_PRIVATE@|$libs_private|g" \
    -e "s|@LIBS_PRIVATE_CMAKE@|$libs_private_cmake|g" \
    -e "s|@INCLUDEDIR_FROM_LIBDIR@|$(realpath -m --relative-to="$libdir" "$includedir")|g" "$1"
}

L="$destdir$libdir" I="$destdir$includedir"
install -d "$L" "$L/pkgconfig" "$L/cmake/ttdrv" "$I"
install -m 0755 "$so" "$L/libttdrv.so.$version"
ln -sfn "libttdrv.so.$version" "$L/libttdrv.so.$major"
ln -sfn "libttdrv.so.$major" "$L/libttdrv.so"
install -m 0644 "$ar" "$L/libttdrv.a"
install -m 0644 "$root/include/ttdrv.h" "$I/ttdrv.h"
subst "$root/packaging/ttdrv.pc.in" >"$probe/ttdrv.pc"
subst "$root/packaging/ttdrvConfig.cmake.in" >"$probe/ttdrvConfig.cmake"
subst "$root/packaging/ttdrvConfigVersion.cmake.in" >"$probe/ttdrvConfigVersion.cmake"
install -m 0644 "$probe/ttdrv.pc" "$L/pkgconfig/ttdrv.pc"
install -m 0644 "$probe/ttdrvConfig.cmake" "$probe/ttdrvConfigVersion.cmake" "$L/cmake/ttdrv/"

echo "installed ttdrv $version (SONAME libttdrv.so.$major) into ${destdir}${prefix}:"
echo "  $L/libttdrv.so.$version, libttdrv.so.$major, libttdrv.so, libttdrv.a"
echo "  $L/pkgconfig/ttdrv.pc, $L/cmake/ttdrv/ttdrvConfig.cmake"
echo "  $I/ttdrv.h"
