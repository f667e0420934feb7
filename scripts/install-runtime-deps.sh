#!/usr/bin/env bash
# Host packages soulbox-runtime needs (Debian 12): the OCI runtime, netns/veth tools, nftables,
# the base-template builder, the busybox used by the `test` template and mkfs.xfs for the disk image.
set -euo pipefail
need=()
command -v runc >/dev/null || need+=(runc)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)   # sandboxes disk image (project quotas)
command -v mkfs.ext4 >/dev/null && command -v e2fsck >/dev/null || need+=(e2fsprogs)   # per-sandbox disk images
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
