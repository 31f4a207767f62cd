#!/usr/bin/env bash
# README command 2 (and .ci/run): on a fresh Debian 12 machine, as root or with sudo.
#   1. install missing packages (launch/setup.sh --no-build)
#   2. build build/ with warnings as errors
#   3. run the whole ctest suite (unit + multi-rank tests)
#   4. install to build/install and build + run examples/ against it, through the
#      CMake package and through pkg-config, and the Python example on the
#      installed Python package
#   5. build build-asan/ with AddressSanitizer + UndefinedBehaviorSanitizer and run
#      the unit tests and the 2- and 4-rank exchange, overlap and failure tests
#   6. build build-tsan/ with ThreadSanitizer and run the 2- and 4-rank exchange and
#      overlap tests (progress thread beside the caller's thread)
#   7. fault tests on an emulated cluster (ctest -L cluster: network namespaces,
#      SIGSTOP / link down / SIGKILL / bad launches); skipped where namespaces are
#      not allowed
#   8. build build-fuzz/ with clang and run the libFuzzer decode target for 30 s
# Fails at the first error. EPCOMM_JOBS overrides the build parallelism (nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
jobs=${EPCOMM_JOBS:-$(nproc)}
stage() {
  printf '\n==================== %s  [%ds]\n' "$*" $((SECONDS - start))
}
on_exit() {
  local rc=$?
  ((rc == 0)) || printf '\n==================== FAILED (exit %d) after %ds\n' "$rc" $((SECONDS - start))
}
trap on_exit EXIT

stage "1/8 packages"
bash launch/setup.sh --no-build
source launch/mpi_env.sh

stage "2/8 build build/ (RelWithDebInfo, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEPCOMM_WERROR=ON \
  -DEPCOMM_BUILD_TESTS=ON -DEPCOMM_BUILD_BENCH=ON -DEPCOMM_SANITIZE=OFF
cmake --build build -j"$jobs"

stage "3/8 ctest build/"
# Multi-rank tests declare PROCESSORS 2, so -j2 runs them one at a time on 2 cores
# while unit tests fill the gaps.
ctest --test-dir build --output-on-failure -j2 -LE cluster

stage "4/8 installed package: CMake and pkg-config consumers of examples/"
prefix=$PWD/build/install
rm -rf "$prefix" build/example
cmake --install build --prefix "$prefix"
cmake -S examples -B build/example -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$prefix"
cmake --build build/example -j"$jobs"
echo "-- CMake package: mpirun -np 2 (2 emulated nodes)"
EPCOMM_RANKS_PER_NODE=1 "${EPCOMM_MPIRUN[@]}" -np 2 -x EPCOMM_RANKS_PER_NODE build/example/minimal_exchange
pc_path=$(dirname "$(find "$prefix" -name epcomm.pc -print -quit)")
pc_flags=$(PKG_CONFIG_PATH="$pc_path" pkg-config --cflags --libs epcomm)
echo "-- pkg-config: mpicxx examples/minimal_exchange.cpp $pc_flags"
# shellcheck disable=SC2086  # pkg-config output is a word list
mpicxx -O2 examples/minimal_exchange.cpp $pc_flags -o build/example/minimal_exchange_pc
"${EPCOMM_MPIRUN[@]}" -np 2 build/example/minimal_exchange_pc
py_module=$(find "$prefix" -name '_epcomm*.so' -print -quit)
if [[ -n $py_module ]]; then
  echo "-- Python package: examples/torch_moe.py on the installed package, 4 ranks (2 emulated nodes)"
  EPCOMM_RANKS_PER_NODE=2 PYTHONPATH=$(dirname "$(dirname "$py_module")") \
    "${EPCOMM_MPIRUN[@]}" -np 4 -x EPCOMM_RANKS_PER_NODE -x PYTHONPATH /usr/bin/python3 examples/torch_moe.py --steps 3
fi

stage "5/8 sanitizers: build build-asan/ (Debug, ASan + UBSan) and test"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DEPCOMM_SANITIZE=ON \
  -DEPCOMM_BUILD_BENCH=OFF -DEPCOMM_BUILD_TESTS=ON
cmake --build build-asan -j"$jobs"
# Open MPI keeps allocations until exit by design: leak reports would be its own.
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure -j2 -L unit
# (not the VM runs of the same suites: the guest does not see ASAN_OPTIONS, and
# instrumented binaries under emulation are slow)
ctest --test-dir build-asan --output-on-failure -j2 -R 'test_(exchange|overlap|failures)\.np(2|4)' -LE verbs-vm
unset ASAN_OPTIONS UBSAN_OPTIONS

stage "6/8 ThreadSanitizer: build build-tsan/ (Debug) and the multi-threaded tests"
# The progress thread and the caller's thread share every exchange: TSan checks
# that all of it is ordered by the engine lock and the shared-memory flags. Built
# without the verbs transport (which only runs in the VM), so the build without it
# (#ifdef paths, "verbs" refused with kUnsupported) is compiled and tested too.
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DEPCOMM_TSAN=ON -DEPCOMM_WITH_VERBS=OFF \
  -DEPCOMM_BUILD_BENCH=OFF -DEPCOMM_BUILD_TESTS=ON
cmake --build build-tsan -j"$jobs"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build-tsan --output-on-failure -j2 -R 'test_(exchange|overlap)\.np(2|4)'

stage "7/8 emulated cluster: fault tests (ctest -L cluster)"
# One emulated cluster at a time (the tests hold a resource lock), each test a
# fresh 2-host cluster: ~1.5 minutes in all.
ctest --test-dir build --output-on-failure -L cluster

stage "8/8 libFuzzer: decoders on arbitrary bytes (clang, ASan + UBSan, 30 s)"
# Any byte string must decode within its row: the fuzz target decodes, accumulates
# and re-encodes random rows of every format and width. Only the kernels are built.
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DEPCOMM_FUZZ=ON -DEPCOMM_BUILD_TESTS=OFF -DEPCOMM_BUILD_BENCH=OFF
cmake --build build-fuzz -j"$jobs" --target fuzz_decode
mkdir -p build-fuzz/corpus
build-fuzz/tests/fuzz/fuzz_decode -max_total_time=30 -print_final_stats=1 build-fuzz/corpus

stage "all stages passed"
printf 'total time: %dm%02ds\n' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60))
