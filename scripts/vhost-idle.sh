#!/bin/bash
# CPU used by `ferrite tgt` (adaptive mode) serving an idle vhost-user-blk guest: a malloc bdev
# behind a controller, a TCG guest that boots, checks the disk size and powers off; prints the
# target's CPU time over the guest's whole life. Needs the guest image built by the guest tests
# (cargo test -p ferrite --test guest_infra) in $CARGO_TARGET_DIR (default target/).
# Usage: scripts/vhost-idle.sh [path/to/ferrite]
set -euo pipefail
T=${CARGO_TARGET_DIR:-target}
B=${1:-$T/release/ferrite}
VM=$(ls "$T"/guest/kernel-*/x/boot/vmlinuz-* | head -1)
INI=$(ls -t "$T"/guest/initramfs-*.cpio | head -1)
W=$(mktemp -d); trap 'kill $TP 2>/dev/null; rm -rf "$W"' EXIT
"$B" tgt -r "$W/rpc.sock" -S "$W" > "$W/tgt.log" 2>&1 & TP=$!
for _ in $(seq 100); do [ -S "$W/rpc.sock" ] && break; sleep 0.1; done
"$B" rpc -s "$W/rpc.sock" bdev_malloc_create --name M0 --num_blocks 131072 --block_size 512 >/dev/null
"$B" rpc -s "$W/rpc.sock" vhost_create_blk_controller --ctrlr vhost.0 --dev_name M0 >/dev/null
T0=$(awk '{print $14+$15}' /proc/$TP/stat); S0=$(date +%s.%N)
timeout 120 qemu-system-x86_64 -accel tcg -M q35 -bios /usr/share/qemu/qboot.rom -cpu max -smp 1 \
  -m 512M -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
  -chardev socket,id=c0,path="$W/vhost.0" -device vhost-user-blk-pci,chardev=c0,num-queues=1 \
  -nographic -no-reboot -kernel "$VM" -initrd "$INI" \
  -append "console=ttyS0 quiet panic=-1 guest.test=blk guest.checks=size guest.size=67108864" \
  > "$W/qemu.log" 2>&1
T1=$(awk '{print $14+$15}' /proc/$TP/stat); S1=$(date +%s.%N)
grep -q "GUEST: PASS size" "$W/qemu.log" || { echo "guest did not see the disk:"; tail "$W/qemu.log"; exit 1; }
echo "target CPU: $(( (T1 - T0) * 10 )) ms over $(echo "$S1 - $S0" | bc) s of guest life" \
     "($(echo "scale=2; ($T1 - $T0) / ($S1 - $S0)" | bc)% of a core)"
