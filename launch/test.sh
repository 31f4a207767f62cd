#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# README command 2 (and .ci/run): on a fresh Debian 12 machine, as root or with sudo.
# The build trees and their tests are CMake presets (CMakePresets.json); this script
# installs the packages and runs the workflows in order:
#   1. packages, test tools included (launch/setup.sh --dev --no-build)
#   2. cmake --workflow --preset ci: build/ with warnings as errors; every test but
#      the emulated cluster: unit, multi-rank (mpirun), the verbs VM, the installed
#      package (install into a temporary prefix, run the installed programs and the
#      examples/ consumers), lint (SPDX lines, shellcheck)
#   3. cmake --workflow --preset asan: build-asan/ (AddressSanitizer +
#      UndefinedBehaviorSanitizer), unit tests and the 2- and 4-rank exchange,
#      overlap and failure tests
#   4. cmake --workflow --preset tsan: build-tsan/ (ThreadSanitizer, no verbs), the
#      2- and 4-rank exchange and overlap tests (progress thread beside the caller's)
#   5. ctest --preset cluster: fault tests on an emulated cluster in build/ (network
#      namespaces: SIGSTOP / link down / SIGKILL / bad launches); skipped where
#      namespaces are not allowed
#   6. cmake --workflow --preset fuzz: build-fuzz/ (clang), the libFuzzer decode
#      target for 30 s
# Fails at the first error. EPCOMM_JOBS overrides the build parallelism (nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
export CMAKE_BUILD_PARALLEL_LEVEL=${EPCOMM_JOBS:-$(nproc)}
stage() {
  printf '\n==================== %s  [%ds]\n' "$*" $((SECONDS - start))
}
on_exit() {
  local rc=$?
  ((rc == 0)) || printf '\n==================== FAILED (exit %d) after %ds\n' "$rc" $((SECONDS - start))
}
trap on_exit EXIT

stage "1/6 packages (launch/setup.sh --dev --no-build)"
bash launch/setup.sh --dev --no-build

stage "2/6 cmake --workflow --preset ci (build/, -Werror; all tests but the emulated cluster)"
cmake --workflow --preset ci

stage "3/6 cmake --workflow --preset asan (build-asan/, ASan + UBSan)"
# Open MPI keeps allocations until exit by design: the preset turns leak reports off.
# (Not the VM runs of the same suites: the guest does not see ASAN_OPTIONS, and
# instrumented binaries under emulation are slow.)
cmake --workflow --preset asan

stage "4/6 cmake --workflow --preset tsan (build-tsan/, ThreadSanitizer)"
# The progress thread and the caller's thread share every exchange: TSan checks that
# all of it is ordered by the engine lock and the shared-memory flags. Built without
# the verbs transport (which only runs in the VM), so the build without it (#ifdef
# paths, "verbs" refused with kUnsupported) is compiled and tested too.
cmake --workflow --preset tsan

stage "5/6 ctest --preset cluster (emulated cluster: fault tests)"
# One emulated cluster at a time (the tests hold a resource lock), each test a fresh
# 2-host cluster: ~1.5 minutes in all.
ctest --preset cluster

stage "6/6 cmake --workflow --preset fuzz (libFuzzer: decoders on arbitrary bytes, 30 s)"
# Any byte string must decode within its row: the fuzz target decodes, accumulates
# and re-encodes random rows of every format and width. Only the kernels are built.
cmake --workflow --preset fuzz

stage "all stages passed"
printf 'total time: %dm%02ds\n' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60))
