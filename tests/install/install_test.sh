#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The installed package, used from a prefix outside the build tree, as a user would:
#   1. cmake --install BUILD --prefix <fresh temporary directory>
#   2. every program in <prefix>/bin finds libepcomm.so inside the prefix (run path
#      $ORIGIN/../lib) and runs there: a 2-rank run whose rows must say check=true
#   3. examples/ builds against the prefix, through the CMake package and through
#      pkg-config, and runs on 2 ranks (2 emulated nodes for the CMake build)
#   4. where the CUDA codecs were built, a consumer of epcomm::cuda_kernels builds
#      against the prefix and runs (host code only: no GPU needed)
#   5. the package's version rule: find_package(epcomm 0.x) accepts only its own 0.x
#   tests/install/install_test.sh BUILD_DIR     (ctest: install.prefix)
# EPCOMM_INSTALL_TEST_PREFIX: install there instead (kept afterwards).
set -euo pipefail
build=$(cd "${1:?usage: install_test.sh BUILD_DIR}" && pwd)
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=launch/mpi_env.sh
source "$source_dir/launch/mpi_env.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=${EPCOMM_INSTALL_TEST_PREFIX:-$work/prefix}
echo "-- install to $prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null

# Each installed program and a small run that shows it works. A new program must be
# added here: the test fails on any it does not know.
declare -A runs=(
  [epcomm-bench]="--tokens 32 --hidden 256 --experts 4 --topk 2 --warmup 1 --iters 2 --json"
  [epcomm-overlap-bench]="--tokens 32 --hidden 128 --ffn 128 --experts 4 --topk 2 --layers 1 --warmup 1 --iters 1 --json"
)
shopt -s nullglob
programs=("$prefix"/bin/*)
((${#programs[@]})) || { echo "FAIL: nothing installed in $prefix/bin" >&2; exit 1; }
for program in "${programs[@]}"; do
  name=$(basename "$program")
  [[ -v runs[$name] ]] || { echo "FAIL: $name is installed but install_test.sh has no run for it" >&2; exit 1; }
  lib=$(ldd "$program" | awk '/libepcomm\.so/ {print $3}')
  [[ $lib == "$prefix"/* ]] || { echo "FAIL: $name loads libepcomm.so from '$lib', not from $prefix" >&2; exit 1; }
  echo "-- $name (libepcomm.so from the prefix): mpirun -np 2 $name ${runs[$name]}"
  # shellcheck disable=SC2086  # the run's flags are a word list
  (cd "$work" && "${EPCOMM_MPIRUN[@]}" -np 2 "$program" ${runs[$name]}) >"$work/$name.out"
  grep -Eq '"check": ?true' "$work/$name.out" || { cat "$work/$name.out"; echo "FAIL: $name: no check=true row" >&2; exit 1; }
  if grep -Eq '"check": ?false' "$work/$name.out"; then
    cat "$work/$name.out"; echo "FAIL: $name: a check=false row" >&2; exit 1
  fi
done

echo "-- examples/ through the CMake package"
cmake -S "$source_dir/examples" -B "$work/example" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/example" >/dev/null
EPCOMM_RANKS_PER_NODE=1 "${EPCOMM_MPIRUN[@]}" -np 2 -x EPCOMM_RANKS_PER_NODE "$work/example/minimal_exchange"

pc_path=$(dirname "$(find "$prefix" -name epcomm.pc -print -quit)")
pc_flags=$(PKG_CONFIG_PATH="$pc_path" pkg-config --cflags --libs epcomm)
echo "-- examples/ through pkg-config: mpicxx minimal_exchange.cpp $pc_flags"
# shellcheck disable=SC2086  # pkg-config output is a word list
mpicxx -O2 "$source_dir/examples/minimal_exchange.cpp" $pc_flags -o "$work/minimal_exchange_pc"
"${EPCOMM_MPIRUN[@]}" -np 2 "$work/minimal_exchange_pc"

if [[ -n $(find "$prefix" -name epcommCudaTargets.cmake -print -quit) ]]; then
  echo "-- CUDA codecs (epcomm::cuda_kernels): tests/install/cuda_consumer"
  cmake -S "$source_dir/tests/install/cuda_consumer" -B "$work/cuda_consumer" \
    -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
  cmake --build "$work/cuda_consumer" >/dev/null
  "$work/cuda_consumer/cuda_consumer"
fi

echo "-- version rule of epcommConfigVersion.cmake"
version_file=$(find "$prefix" -name epcommConfigVersion.cmake -print -quit)
version=$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")$/\1/p' "$version_file")
IFS=. read -r major minor _ <<<"$version"
cat >"$work/compatible.cmake" <<'CMAKE'
string(REPLACE "." ";" parts "${PACKAGE_FIND_VERSION}")
list(GET parts 0 PACKAGE_FIND_VERSION_MAJOR)
list(GET parts 1 PACKAGE_FIND_VERSION_MINOR)
include(${VERSION_FILE})
if(PACKAGE_VERSION_COMPATIBLE)
  message("TRUE")
else()
  message("FALSE")
endif()
CMAKE
compatible() {  # compatible REQUESTED -> TRUE or FALSE, as find_package would decide
  cmake -DPACKAGE_FIND_VERSION="$1" -DVERSION_FILE="$version_file" -P "$work/compatible.cmake" 2>&1
}
expect() {
  local got
  got=$(compatible "$1")
  [[ $got == "$2" ]] || { echo "FAIL: find_package(epcomm $1) against $version: compatible=$got, expected $2" >&2; exit 1; }
  echo "   find_package(epcomm $1) with $version installed: compatible=$got"
}
expect "$major.$minor" TRUE
expect "$major.$((minor + 1))" FALSE
if ((major == 0 && minor > 0)); then
  expect "0.$((minor - 1))" FALSE
fi
echo "-- installed package: all checks passed"
