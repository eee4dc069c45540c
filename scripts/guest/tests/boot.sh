#!/bin/sh
# Boot check: the guest reaches userspace and reads its command line.
. /tests/lib.sh
info "kernel $(uname -r) cpus=$(nproc) $(grep MemTotal /proc/meminfo | tr -s ' ')"
[ "$(param echo)" = hello ] && pass cmdline || fail cmdline "guest.echo=hello missing: $(cat /proc/cmdline)"
command -v fio >/dev/null && fio --version >/dev/null && pass fio "$(fio --version)" || fail fio "fio does not run"
exit $FAILED
