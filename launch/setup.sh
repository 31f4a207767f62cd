#!/usr/bin/env bash
# Installs what epcomm needs from Debian's packages (only what is missing) and
# builds it into build/. Idempotent; safe to run on every CI job.
#   launch/setup.sh            install missing packages, configure, build
#   launch/setup.sh --no-build install missing packages only
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(openmpi-bin libopenmpi-dev libhwloc-dev hwloc libibverbs-dev rdma-core libnuma-dev numactl
          libgtest-dev cmake g++ pkg-config libhwy-dev python3-numpy python3-matplotlib)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[[ "${1:-}" == "--no-build" ]] && exit 0

BUILD_DIR=${EPCOMM_BUILD_DIR:-build}
echo "== setup: configuring and building $BUILD_DIR/"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${EPCOMM_CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j"$(nproc)"
