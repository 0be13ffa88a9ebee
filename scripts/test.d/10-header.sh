#!/usr/bin/env bash
# step: header compiles as C11 and C++17 (included twice, -Wall -Wextra -Wpedantic -Werror); a C++ program links and runs
# c-tests/header_twice.c includes include/ttdrv.h twice and checks at compile time what C code relies on (version
# macros, fixed status values, struct_size first); it is compiled as C11 and as C++17. c-tests/cxx_smoke.cpp is a
# C++17 program that links the library and checks a round trip, an element-wise op and an error status.
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory -C c-tests header BUILD=build/header
