# Shared by the guest tests (sourced). Output protocol, one line each on the console:
#   GUEST: PASS <check> [detail]     a check passed
#   GUEST: FAIL <check> <detail>     a check failed
#   GUEST: INFO <text>               anything else worth seeing in a failure report
# param KEY [DEFAULT]: the value of guest.KEY=VALUE on the kernel command line.
param() {
  v=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^guest\.$1=//p" | tail -1)
  echo "${v:-$2}"
}
pass() { c=$1; shift; echo "GUEST: PASS $c $*"; }
fail() { c=$1; shift; echo "GUEST: FAIL $c $*"; FAILED=1; }
info() { echo "GUEST: INFO $*"; }
# check NAME CMD..: runs CMD, PASS/FAIL by its exit status, output shown on failure.
check() {
  c=$1; shift
  if "$@" > /tmp/check.out 2>&1; then pass "$c"; else
    fail "$c" "exit=$? cmd: $*"; tail -n 15 /tmp/check.out | sed 's/^/GUEST: INFO   /'; fi
}
# wait_blk DEV: waits up to 5 s for a block device to appear.
wait_blk() {
  for _ in $(seq 50); do [ -b "$1" ] && return 0; sleep 0.1; done
  return 1
}
FAILED=${FAILED:-0}
