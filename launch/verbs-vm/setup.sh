#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what the verbs test VM needs on Debian 12 (only missing packages):
# QEMU, a static busybox and cpio for the initramfs, and the host-side verbs tools
# the guest uses through its view of the host's root (rdma from iproute2, the rxe
# provider, ibv_* tools). The guest kernel is fetched later, by build-image.sh.
#   launch/verbs-vm/setup.sh
set -euo pipefail

PACKAGES=(qemu-system-x86 busybox-static cpio rdma-core ibverbs-providers ibverbs-utils iproute2
          libibverbs-dev openmpi-bin)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "== verbs-vm setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "verbs-vm setup: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "== verbs-vm setup: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
