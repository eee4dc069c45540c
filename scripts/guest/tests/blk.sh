#!/bin/sh
# virtio-blk checks on one disk (vhost-user-blk or any virtio-blk device).
# Kernel command line:
#   guest.dev=vda            the disk (default vda)
#   guest.checks=a,b,..      which checks, in order (default size,pattern,fio):
#     size     disk size equals guest.size=BYTES
#     queues   /sys/block/DEV/mq has guest.queues=N hardware queues
#     pattern  8 MiB random pattern written at 16 MiB (O_DIRECT) reads back identical
#     fio      fio crc32c-verified 4 KiB random writes, guest.fio_mb=MiB (default 32) at 64 MiB
#     ro       the disk is read-only: writes fail, reads work
#     packed   the device negotiated the packed ring (VIRTIO_F_RING_PACKED, feature bit 34)
#     discard  a discarded 1 MiB range (after a pattern) reads back as zeroes
#     zeroes   a write-zeroes (BLKZEROOUT) 1 MiB range (after a pattern) reads back as zeroes
#     fioloop  fio runs as in "fio" (guest.fio_mb each, offsets rotating over 64..320 MiB) one
#              after another until the disk's first 8 bytes read "FE-STOP!" (the host writes
#              them into the backing file) or guest.fio_runs=N runs (default 100); each run
#              prints "GUEST: INFO fio run I ok", the first "GUEST: INFO fio started"
#   The fio check prints "GUEST: INFO fio started" when it starts (the host may act on it).
. /tests/lib.sh
DEV=$(param dev vda); D=/dev/$DEV; Q=/sys/block/$DEV/queue
wait_blk "$D" || { fail device "no $D; block devices: $(ls /sys/block | tr '\n' ' ')"; exit 1; }
SECTORS=$(cat /sys/block/$DEV/size)
info "$D sectors=$SECTORS lbs=$(cat $Q/logical_block_size) ro=$(cat /sys/block/$DEV/ro) nr_hw_queues=$(ls /sys/block/$DEV/mq | wc -l) discard_max=$(cat $Q/discard_max_bytes) write_zeroes_max=$(cat $Q/write_zeroes_max_bytes)"
MB=1048576
zero_md5() { head -c "$1" /dev/zero | md5sum | cut -d' ' -f1; }
# readback OFFSET_MB LEN_MB: md5 of that range read with O_DIRECT
readback() { dd if=$D bs=1M skip="$1" count="$2" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }
# put_pattern OFFSET_MB LEN_MB: writes random data there, prints its md5
put_pattern() {
  dd if=/dev/urandom of=/tmp/pat bs=1M count="$2" 2>/dev/null
  dd if=/tmp/pat of=$D bs=1M seek="$1" oflag=direct conv=fsync 2>/dev/null || return 1
  md5sum < /tmp/pat | cut -d' ' -f1
}

for c in $(param checks size,pattern,fio | tr ',' ' '); do
  case $c in
  size)
    W=$(param size); G=$((SECTORS * 512))
    [ "$G" = "$W" ] && pass size "$G bytes" || fail size "guest sees $G bytes, expected $W" ;;
  queues)
    W=$(param queues); G=$(ls /sys/block/$DEV/mq | wc -l)
    [ "$G" = "$W" ] && pass queues "$G" || fail queues "guest has $G hardware queues, expected $W" ;;
  pattern)
    A=$(put_pattern 16 8) || { fail pattern "write failed"; continue; }
    echo 3 > /proc/sys/vm/drop_caches
    B=$(readback 16 8)
    [ "$A" = "$B" ] && pass pattern "md5=$A" || fail pattern "read back $B, wrote $A" ;;
  fio)
    N=$(param fio_mb 32)
    info "fio started ${N}MiB"
    check fio fio --name=verify --filename=$D --rw=randwrite --bs=4k --size=${N}M --offset=64M \
      --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --do_verify=1 --verify_fatal=1 \
      --exitall_on_error=1
    grep -E 'err=|WRITE:|READ:' /tmp/check.out | sed 's/^ */GUEST: INFO fio: /' ;;
  fioloop)
    N=$(param fio_mb 16); MAX=$(param fio_runs 100); i=0; ok=1
    info "fio started ${N}MiB per run"
    while [ $i -lt "$MAX" ]; do
      i=$((i + 1))
      if ! fio --name=verify --filename=$D --rw=randwrite --bs=4k --size=${N}M \
          --offset=$((64 + (i % 16) * 16))M --ioengine=libaio --iodepth=16 --direct=1 \
          --verify=crc32c --do_verify=1 --verify_fatal=1 --exitall_on_error=1 > /tmp/f.out 2>&1; then
        fail fioloop "run $i failed"; tail -n 15 /tmp/f.out | sed 's/^/GUEST: INFO   /'; ok=0; break
      fi
      info "fio run $i ok"
      [ "$(dd if=$D bs=4096 count=1 iflag=direct 2>/dev/null | head -c 8)" = FE-STOP! ] && break
    done
    [ $ok = 1 ] && pass fioloop "$i runs" ;;
  ro)
    [ "$(cat /sys/block/$DEV/ro)" = 1 ] && pass ro-flag || fail ro-flag "/sys/block/$DEV/ro is not 1"
    if dd if=/dev/zero of=$D bs=4k count=1 seek=100 oflag=direct 2>/tmp/e; then
      fail ro-write "a write succeeded on a read-only disk"
    else pass ro-write "refused: $(tail -1 /tmp/e)"; fi
    dd if=$D of=/dev/null bs=1M count=4 iflag=direct 2>/tmp/e && pass ro-read || fail ro-read "$(tail -1 /tmp/e)" ;;
  packed)
    F=$(cat /sys/block/$DEV/device/features 2>/dev/null)
    [ "$(echo "$F" | cut -c35)" = 1 ] && pass packed "features=$F" || fail packed "VIRTIO_F_RING_PACKED not negotiated: features=$F" ;;
  discard)
    [ "$(cat $Q/discard_max_bytes)" -gt 0 ] || { fail discard "device advertises no discard"; continue; }
    put_pattern 8 1 >/dev/null || { fail discard "pattern write failed"; continue; }
    blkdiscard -o $((8 * MB)) -l $MB $D 2>/tmp/e || { fail discard "blkdiscard: $(tail -1 /tmp/e)"; continue; }
    B=$(readback 8 1)
    [ "$B" = "$(zero_md5 $MB)" ] && pass discard "reads back zeroes" || fail discard "discarded range does not read back as zeroes" ;;
  zeroes)
    [ "$(cat $Q/write_zeroes_max_bytes)" -gt 0 ] || { fail zeroes "device advertises no write-zeroes"; continue; }
    put_pattern 10 1 >/dev/null || { fail zeroes "pattern write failed"; continue; }
    blkzeroout $D $((10 * MB)) $MB 2>/tmp/e || { fail zeroes "BLKZEROOUT: $(tail -1 /tmp/e)"; continue; }
    B=$(readback 10 1)
    [ "$B" = "$(zero_md5 $MB)" ] && pass zeroes "reads back zeroes" || fail zeroes "zeroed range does not read back as zeroes" ;;
  *) fail "$c" "unknown check" ;;
  esac
done
exit $FAILED
