#!/usr/bin/env bash
# Userspace NVMe driver (ferrite bench on the NVMe bdev over VFIO) against the kernel driver
# (fio, io_uring, O_DIRECT) on the same QEMU-emulated NVMe controller in one TCG guest (one
# vCPU, q35 with an intel-iommu), random 4 KiB reads at depth 1 and 32.
# Usage: scripts/guest/nvme-perf.sh [SECONDS_PER_RUN]   (GUEST_DIR as for the tests)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export GUEST_DIR=${GUEST_DIR:-$ROOT/target/guest}
SECS=${1:-10}
FERRITE=$(bash "$ROOT/scripts/guest/static-ferrite.sh")
OUT=$(bash "$ROOT/scripts/guest/build-guest.sh" "$FERRITE")
KERNEL=$(echo "$OUT" | sed -n 's/^KERNEL=//p'); INITRD=$(echo "$OUT" | sed -n 's/^INITRD=//p')
IMG=$(mktemp /tmp/nvme-perf.XXXXXX.img); trap 'rm -f "$IMG"' EXIT
truncate -s 256M "$IMG"
timeout $((SECS * 4 + 240)) qemu-system-x86_64 -accel tcg -M q35 -cpu max \
  -bios /usr/share/qemu/qboot.rom -smp 1 -m 768M -device intel-iommu \
  -display none -serial stdio -monitor none -no-reboot -kernel "$KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 quiet panic=-1 intel_iommu=on no_timer_check guest.test=vfio guest.then=nvme-perf guest.hugepages=16 guest.secs=$SECS" \
  -drive "file=$IMG,if=none,id=nvm0,format=raw" -device nvme,serial=fe0001,drive=nvm0 \
  < /dev/null | grep -a 'GUEST'
