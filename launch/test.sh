#!/usr/bin/env bash
# README command 2 (and .ci/run): install what is missing, build with warnings as
# errors, run the whole ctest suite (multi-rank tests included), check the installed
# package from a separate project (CMake and pkg-config), then build with
# AddressSanitizer + UndefinedBehaviorSanitizer and run the unit and multi-rank
# tests again.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
stage() { echo; echo "==== $* ($(( $(date +%s) - start )) s)"; }

stage "packages"
bash launch/setup.sh --no-build
source launch/mpi_env.sh

stage "build (warnings are errors)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEPCOMM_WERROR=ON
cmake --build build -j"$(nproc)"

stage "tests"
ctest --test-dir build --output-on-failure -j2

stage "installed package: CMake and pkg-config consumers"
rm -rf build/install build/example
cmake --install build --prefix "$PWD/build/install" >/dev/null
cmake -S examples -B build/example -DCMAKE_PREFIX_PATH="$PWD/build/install" -DCMAKE_BUILD_TYPE=Release
cmake --build build/example -j"$(nproc)"
"${EPCOMM_MPIRUN[@]}" -np 2 build/example/minimal_exchange
PKG_CONFIG_PATH="$PWD/build/install/lib/pkgconfig" \
  mpicxx examples/minimal_exchange.cpp $(PKG_CONFIG_PATH="$PWD/build/install/lib/pkgconfig" pkg-config --cflags --libs epcomm) \
  -o build/example/minimal_exchange_pc
EPCOMM_RANKS_PER_NODE=1 "${EPCOMM_MPIRUN[@]}" -np 2 build/example/minimal_exchange_pc

stage "sanitizers (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DEPCOMM_SANITIZE=ON -DEPCOMM_BUILD_BENCH=OFF -DEPCOMM_WERROR=ON
cmake --build build-asan -j"$(nproc)"
# Open MPI keeps its allocations until exit by design: leak reports would be its own.
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j2

stage "done"
