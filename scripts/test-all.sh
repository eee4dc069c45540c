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
# qemu-storage-daemon: the vhost-user-blk server the virtio-user bdev tests attach to.
command -v qemu-storage-daemon >/dev/null || need+=(qemu-system-common)
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

log "tests"
exec cargo nextest run --workspace --no-fail-fast "$@"
