#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages epcomm needs (only those missing; apt-get runs only
# then) and builds epcomm into build/ (RelWithDebInfo). Idempotent: safe to run on
# every CI job and before every quickstart.
#   launch/setup.sh              runtime and build packages; configure, build
#   launch/setup.sh --dev        also the test tools (VM, fuzzing, plots, lint)
#   launch/setup.sh --no-build   install missing packages only
# Environment: EPCOMM_BUILD_DIR (default build), EPCOMM_CMAKE_ARGS (extra configure
# arguments, word-split), EPCOMM_JOBS (default nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
dev=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --dev) dev=1 ;;
    -h|--help) sed -n '3,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

# To build and run the library, its tests and bench programs.
PACKAGES=(
  openmpi-bin libopenmpi-dev             # MPI (Open MPI 4.1)
  libhwloc-dev hwloc                     # topology
  libibverbs-dev rdma-core               # RDMA verbs
  ibverbs-providers                      # verbs drivers of the adapters (and soft-RoCE)
  libnuma-dev numactl                    # NUMA placement
  libisal-dev                            # CRC32C of ExchangeConfig::checksum (ISA-L)
  libgtest-dev                           # tests (built by default)
  cmake make g++ pkg-config              # toolchain (make: cmake only recommends it)
  libhwy-dev                             # SIMD kernels (Highway)
  libeigen3-dev                          # matrix multiplies of epcomm-overlap-bench
  libcli11-dev nlohmann-json3-dev        # command lines and JSON output of bench/ and the test drivers
  python3-dev pybind11-dev libdlpack-dev # Python package (python/): module headers, bindings, DLPack
  python3-mpi4py                         # Python package: the communicator comes from mpi4py
)
# Only to test and develop it (launch/test.sh passes --dev).
DEV_PACKAGES=(
  qemu-system-x86 busybox-static cpio    # verbs test VM (launch/verbs-vm)
  ibverbs-utils                          # ibv_* tools, used in the VM
  clang libclang-rt-dev                  # libFuzzer target (cmake --workflow --preset fuzz)
  python3-numpy python3-matplotlib       # bench plots
  iproute2 procps                        # emulated cluster: ip/tc, ps/pgrep (launch/emulate-cluster, tests/cluster)
  shellcheck                             # lint of the shell scripts (ctest -L lint)
  slurmctld slurmd slurm-client          # a one-host Slurm for epcomm-run's srun path (ctest -L slurm)
  python3-torch python3-pytest           # Python package tests and examples/torch_moe.py
)
((dev)) && PACKAGES+=("${DEV_PACKAGES[@]}")

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== setup: installing ${missing[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup.sh: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "== setup: all ${#PACKAGES[@]} packages present"
fi

((build)) || exit 0

build_dir=${EPCOMM_BUILD_DIR:-build}
echo "== setup: configuring and building $build_dir/ (RelWithDebInfo)"
# shellcheck disable=SC2086  # EPCOMM_CMAKE_ARGS is a word list on purpose
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${EPCOMM_CMAKE_ARGS:-}
cmake --build "$build_dir" -j"${EPCOMM_JOBS:-$(nproc)}"
