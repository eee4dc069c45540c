# The userspace NVMe driver against the kernel's on the same emulated controller (sourced by
# vfio.sh with guest.then=nvme-perf, run by scripts/guest/nvme-perf.sh): `ferrite bench`
# random 4 KiB reads on the NVMe bdev at depth 1 and 32, then the controller goes back to the
# kernel's nvme driver and fio (io_uring, O_DIRECT) runs the same. guest.secs=N per run.
SECS=$(param secs 10)
mkdir -p /var/tmp
cat > /tmp/nvme.json <<EOF
{"subsystems":[{"subsystem":"bdev","config":[
 {"method":"bdev_nvme_attach_controller","params":{"name":"Nvme0","trtype":"PCIe","traddr":"$NVME_BDF"}}]}]}
EOF
for QD in 1 32; do
  ferrite bench -c /tmp/nvme.json -m 0x1 -T Nvme0n1 -q $QD -o 4096 -w randread -t "$SECS" > /tmp/b.out 2>&1 \
    && pass "ferrite-qd$QD" || fail "ferrite-qd$QD" "bench failed"
  grep -vE 'INFO|^$' /tmp/b.out | sed "s/^/GUEST: INFO ferrite qd=$QD | /"
done
S=/sys/bus/pci/devices/$NVME_BDF
echo > "$S/driver_override"
echo "$NVME_BDF" > "$S/driver/unbind"
echo "$NVME_BDF" > /sys/bus/pci/drivers_probe
wait_blk /dev/nvme0n1 || { fail kernel-nvme "no /dev/nvme0n1"; exit 1; }
for QD in 1 32; do
  fio --name=r --filename=/dev/nvme0n1 --ioengine=io_uring --direct=1 --rw=randread --bs=4k \
    --iodepth=$QD --runtime="$SECS" --time_based --size=200M > /tmp/f.out 2>&1 \
    && pass "fio-qd$QD" || fail "fio-qd$QD" "fio failed"
  grep -E 'IOPS=|cpu|lat \(usec\): min' /tmp/f.out | sed "s/^/GUEST: INFO fio qd=$QD | /"
done
