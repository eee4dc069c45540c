#!/usr/bin/env bash
# Runs Ferrite's whole test suite on this machine, installing what the tests need first.
# Usage: scripts/test-all.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# System packages the tests use (only when root and missing).
need=()
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# QEMU guest tests: qemu-system-x86 (also brings qemu-storage-daemon and the qboot firmware),
# fio and busybox-static go into the guest's initramfs (scripts/guest/build-guest.sh).
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-storage-daemon >/dev/null || need+=(qemu-system-x86)
command -v fio >/dev/null || need+=(fio)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
fi

log "SPDK's RPC client (PyPI spdk 25.9 and 26.9) in virtual environments"
bash scripts/setup-spdk-venvs.sh

command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

log "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "guest image and the static ferrite the VFIO guest tests run (cached under the target dir)"
export GUEST_DIR="${CARGO_TARGET_DIR:-$PWD/target}/guest"
bash scripts/guest/static-ferrite.sh >/dev/null
bash scripts/guest/build-guest.sh >/dev/null

log "tests"
exec cargo nextest run --workspace --no-fail-fast "$@"
