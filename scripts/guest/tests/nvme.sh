# Ferrite's userspace NVMe driver on the controller vfio.sh bound (sourced by vfio.sh with
# guest.then=nvme). Parameters:
#   guest.qsize=N   entries per I/O queue (bdev_nvme_set_options io_queue_requests; default 64)
#   guest.seed=N    seed of the verify run left on namespace 2 for the host to check
# Checks: verify at depth 1 and far above the queue size (back-pressure), 128 KiB verify
# (PRP lists), random mixed I/O, unmap, write zeroes, flush, both namespaces, a controller
# reset during a verify run, the pattern left on namespace 2, and a save_config round trip.
QS=$(param qsize 64)
SEED=$(param seed 4242)
mkdir -p /var/tmp
cat > /tmp/nvme.json <<EOF
{"subsystems":[{"subsystem":"bdev","config":[
 {"method":"bdev_nvme_set_options","params":{"io_queue_requests":$QS}},
 {"method":"bdev_nvme_attach_controller","params":{"name":"Nvme0","trtype":"PCIe","traddr":"$NVME_BDF"}}]}]}
EOF
B="ferrite bench -c /tmp/nvme.json -m 0x1"
# guest.hostraid=NAME: the host put a raid superblock (CRC-checked) on namespace 3; attaching
# the controller must read it through the driver and the raid module must find the raid.
HOSTRAID=$(param hostraid)
if [ -n "$HOSTRAID" ]; then
  ferrite tgt -c /tmp/nvme.json -r /tmp/h.sock > /tmp/h.out 2>&1 &
  HP=$!
  for _ in $(seq 300); do [ -S /tmp/h.sock ] && break; sleep 0.1; done
  ferrite rpc -s /tmp/h.sock bdev_raid_get_bdevs --category all > /tmp/raid.out 2>&1
  kill $HP; wait $HP
  for _ in $(seq 100); do [ -S /tmp/h.sock ] || break; sleep 0.1; done
  if grep -q "\"$HOSTRAID\"" /tmp/raid.out && grep -q Nvme0n3 /tmp/raid.out; then pass host-pattern; else
    fail host-pattern "raid '$HOSTRAID' not assembled from namespace 3"
    tail -n 20 /tmp/raid.out /tmp/h.out | sed 's/^/GUEST: INFO   /'; fi
fi
check verify-qd1 $B -T Nvme0n1 -q 1 -o 4096 -w verify -t 2
check verify-deep $B -T Nvme0n1 -q 256 -o 4096 -w verify -t 3
check verify-prp-list $B -T Nvme0n2 -q 8 -o 131072 -w verify -t 3
check randrw $B -T Nvme0n1 -q 32 -o 4096 -w randrw -M 50 -t 2
check unmap $B -T Nvme0n1 -q 8 -o 65536 -w unmap -t 1
check write-zeroes $B -T Nvme0n1 -q 8 -o 65536 -w write_zeroes -t 1
check flush $B -T Nvme0n1 -q 1 -o 4096 -w flush -t 1
check two-namespaces $B -q 16 -o 4096 -w randread -t 2
check pattern-out $B -T Nvme0n2 -q 4 -o 4096 -w verify -t 2 --seed "$SEED"
# A controller reset while a verify run is going: I/O in flight is resubmitted, none fails.
ferrite bench -z -c /tmp/nvme.json -m 0x1 > /tmp/z.out 2>&1 &
ZP=$!
for _ in $(seq 200); do [ -S /var/tmp/spdk.sock ] && break; sleep 0.1; done
ferrite rpc -t 120 perform_tests \
  '{"queue_depth":32,"io_size":4096,"workload_type":"verify","time_in_sec":6,"targets":["Nvme0n1"]}' \
  > /tmp/pt.out 2>&1 &
PT=$!
sleep 2
check reset-rpc ferrite rpc bdev_nvme_reset_controller --name Nvme0
wait $PT; RC=$?
grep -E '"(io_failed|iops|miscompares|status)"' /tmp/pt.out | head -n 8 | sed 's/^/GUEST: INFO   /'
if [ $RC = 0 ] && ! grep -qE '"io_failed": *[1-9]|"status": *"failed"' /tmp/pt.out; then
  pass reset-during-io; else
  fail reset-during-io "perform_tests exit=$RC"; tail -n 20 /tmp/pt.out /tmp/z.out | sed 's/^/GUEST: INFO   /'; fi
check controllers ferrite rpc bdev_nvme_get_controllers
ferrite rpc bdev_nvme_get_controllers | grep -E '"(state|io_queues_in_use)"' | sed 's/^/GUEST: INFO   /'
kill $ZP; wait $ZP
# save_config round trip through the target: attach from the saved config, save again, same.
tgt_save() {
  ferrite tgt -c "$1" -r /tmp/t.sock > /tmp/tgt.out 2>&1 &
  TP=$!
  for _ in $(seq 200); do [ -S /tmp/t.sock ] && break; sleep 0.1; done
  ferrite rpc -s /tmp/t.sock save_config > "$2"; R=$?
  kill $TP; wait $TP
  for _ in $(seq 100); do [ -S /tmp/t.sock ] || break; sleep 0.1; done
  return $R
}
if tgt_save /tmp/nvme.json /tmp/s1.json && tgt_save /tmp/s1.json /tmp/s2.json \
   && grep -q bdev_nvme_attach_controller /tmp/s1.json && cmp -s /tmp/s1.json /tmp/s2.json; then
  pass save-config-round-trip; else
  fail save-config-round-trip "configs differ or target failed"
  tail -n 10 /tmp/tgt.out | sed 's/^/GUEST: INFO   /'; diff /tmp/s1.json /tmp/s2.json | head -n 20 | sed 's/^/GUEST: INFO   /'; fi
