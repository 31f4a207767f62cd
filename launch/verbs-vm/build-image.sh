#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Makes (once) the kernel and initramfs of the verbs test VM in CACHE_DIR:
#   vmlinuz     Debian's 6.1 kernel, from `apt-get download` of the image package
#               that linux-image-amd64 currently depends on (the host's own kernel
#               may lack rdma_rxe, as this project's CI kernel does)
#   initrd.gz   busybox-static, the modules below, and guest-init as /init
# Reused while guest-init and this script are unchanged; delete CACHE_DIR to
# rebuild. Exits 77 when a piece cannot be obtained (no apt, no network, no
# busybox-static), so test runners can report SKIPPED rather than FAILED.
#   launch/verbs-vm/build-image.sh CACHE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:?usage: build-image.sh CACHE_DIR}
skip() { echo "verbs-vm: $* (skipping)" >&2; exit 77; }

# insmod order: dependencies first (busybox insmod does not resolve them).
# crc32_generic provides the crc32 rdma_rxe computes ICRCs with: without it
# `rdma link add` fails.
MODULES=(virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio virtio_pci
         failover net_failover virtio_net crc32_generic
         ib_core ib_uverbs udp_tunnel ip6_udp_tunnel rdma_rxe ib_cm iw_cm configfs rdma_cm rdma_ucm
         9pnet 9pnet_virtio netfs fscache 9p overlay)

stamp=$(cat "$here/guest-init" "$0" | sha256sum | cut -c1-16)
if [[ -f $cache/vmlinuz && -f $cache/initrd.gz && "$(cat "$cache/stamp" 2>/dev/null)" == "$stamp" ]]; then
  exit 0
fi

if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
  skip "/bin/busybox is missing or not static; run launch/verbs-vm/setup.sh (busybox-static)"
fi
command -v cpio >/dev/null || skip "cpio is missing; run launch/verbs-vm/setup.sh"

pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[[ -n $pkg ]] || skip "apt knows no linux-image-amd64 (is this Debian with its package lists?)"

mkdir -p "$cache"
work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "verbs-vm: fetching $pkg (once; cached in $cache)" >&2
(cd "$work" && apt-get download -q "$pkg" >/dev/null 2>"$work/apt.err") ||
  skip "apt-get download $pkg failed: $(tail -1 "$work/apt.err")"
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/pkg"
kver=${pkg#linux-image-}
moddir=$work/pkg/lib/modules/$kver

root=$work/root
mkdir -p "$root"/{bin,modules,proc,sys,dev,lower,rw,newroot}
cp /bin/busybox "$root/bin/busybox"
cp "$here/guest-init" "$root/init"
chmod +x "$root/init"
for m in "${MODULES[@]}"; do
  ko=$(find "$moddir/kernel" -name "$m.ko" -print -quit)
  [[ -n $ko ]] || skip "$pkg has no module $m.ko"
  cp "$ko" "$root/modules/"
  echo "$m" >>"$root/modules.order"
done
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"
cp "$work/pkg/boot/vmlinuz-$kver" "$work/vmlinuz"
mv "$work/vmlinuz" "$work/initrd.gz" "$cache/"
echo "$kver" >"$cache/kernel-version"
echo "$stamp" >"$cache/stamp"
echo "verbs-vm: image ready: kernel $kver, $(du -h "$cache/initrd.gz" | cut -f1) initramfs" >&2
