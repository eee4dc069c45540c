#!/bin/sh
# Binds QEMU's emulated NVMe controller(s) to vfio-pci for a userspace driver, then runs a
# command and/or a named test script. Needs -M q35 -device intel-iommu and intel_iommu=on
# (without an IOMMU the vfio-pci probe fails: Debian kernels have no VFIO no-IOMMU mode).
# Kernel command line:
#   guest.hugepages=N   2 MiB hugepages to reserve, mounted on /dev/hugepages (default 0)
#   guest.cmd=HEX       a shell command (hex of its text) run after binding: PASS/FAIL "cmd"
#                       by its exit status, its output as INFO lines
#   guest.then=NAME     then sources /tests/NAME.sh (it reports its own checks)
# The command and the script see NVME_BDFS (the bound functions, space-separated), NVME_BDF
# (the first) and NVME_GROUP (the first one's /dev/vfio group).
. /tests/lib.sh
HP=$(param hugepages 0)
if [ "$HP" -gt 0 ]; then
  echo "$HP" > /proc/sys/vm/nr_hugepages
  mount -t hugetlbfs -o pagesize=2M none /dev/hugepages
  info "hugepages $(cat /proc/sys/vm/nr_hugepages) of $HP"
fi
# vfio_iommu_type1 is not pulled in by vfio-pci: without it VFIO_SET_IOMMU fails with ENODEV.
modprobe vfio_iommu_type1 && modprobe vfio-pci || { fail vfio-modules "modprobe failed"; exit 1; }
NVME_BDFS=""
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/class")" = 0x010802 ] && NVME_BDFS="$NVME_BDFS $(basename "$d")"
done
NVME_BDFS=${NVME_BDFS# }
[ -n "$NVME_BDFS" ] || { fail vfio-bind "no NVMe PCI function"; exit 1; }
for b in $NVME_BDFS; do
  S=/sys/bus/pci/devices/$b
  [ -e "$S/driver" ] && echo "$b" > "$S/driver/unbind"
  echo vfio-pci > "$S/driver_override"
  echo "$b" > /sys/bus/pci/drivers_probe
  DRV=$(basename "$(readlink "$S/driver")")
  G=$(basename "$(readlink "$S/iommu_group")")
  [ "$DRV" = vfio-pci ] && [ -c "/dev/vfio/$G" ] || {
    fail vfio-bind "$b: driver=$DRV group=$G /dev/vfio: $(ls /dev/vfio | tr '\n' ' ')"
    dmesg | grep -iE 'vfio|dmar|iommu' | tail -5 | sed 's/^/GUEST: INFO   /'; exit 1; }
done
NVME_BDF=${NVME_BDFS%% *}
NVME_GROUP=$(basename "$(readlink "/sys/bus/pci/devices/$NVME_BDF/iommu_group")")
export NVME_BDFS NVME_BDF NVME_GROUP
pass vfio-bind "$NVME_BDFS group=$NVME_GROUP"
CMD=$(param cmd)
if [ -n "$CMD" ]; then
  CMD=$(echo "$CMD" | xxd -r -p) || { fail cmd "guest.cmd is not hex"; exit 1; }
  info "running: $CMD"
  sh -c "$CMD" > /tmp/cmd.out 2>&1; RC=$?
  sed 's/^/GUEST: INFO   /' /tmp/cmd.out
  [ $RC = 0 ] && pass cmd || fail cmd "exit=$RC: $CMD"
fi
THEN=$(param then)
[ -z "$THEN" ] || . "/tests/$THEN.sh"
exit $FAILED
