#!/usr/bin/env bash
# Creates Python virtual environments holding SPDK's own RPC client (PyPI package `spdk`), used by
# app/tests/spdk_rpc_compat.rs to drive `ferrite tgt` with the real `spdk-rpc`:
#   target/spdk-venv/25.9  (spdk==25.9, matches the SPDK v25.09 contract)
#   target/spdk-venv/26.9  (spdk==26.9, the newest client; partly incompatible with v25.09)
# Idempotent: a venv whose bin/spdk-rpc already runs is left alone.
# Usage: scripts/setup-spdk-venvs.sh [VERSION...]   (default: 25.9 26.9)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
base="$root/target/spdk-venv"
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(25.9 26.9)

say() { printf 'setup-spdk-venvs: %s\n' "$*"; }

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  say "no $python on PATH" >&2
  exit 1
fi

# `python3 -m venv` with pip (ensurepip) is needed; Debian splits it into python3-venv.
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "python venv support missing: installing python3-venv with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    say "'$python -m venv' is unavailable; install python3-venv (needs root)" >&2
    exit 1
  fi
fi

works() { # venv dir, version
  [ -x "$1/bin/spdk-rpc" ] && "$1/bin/spdk-rpc" --help >/dev/null 2>&1 &&
    [ "$("$1/bin/python" -c 'import importlib.metadata as m; print(m.version("spdk"))' 2>/dev/null)" = "$2" ]
}

mkdir -p "$base"
for v in "${versions[@]}"; do
  dir="$base/$v"
  if works "$dir" "$v"; then
    say "$dir: spdk==$v already installed, skipping"
    continue
  fi
  say "$dir: creating venv with $("$python" --version 2>&1)"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  say "$dir: pip install spdk==$v"
  "$dir/bin/python" -m pip install --disable-pip-version-check -q "spdk==$v"
  if ! works "$dir" "$v"; then
    say "$dir: spdk-rpc does not run after installing spdk==$v" >&2
    exit 1
  fi
  say "$dir: ok ($dir/bin/spdk-rpc)"
done
