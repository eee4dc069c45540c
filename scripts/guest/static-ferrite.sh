#!/usr/bin/env bash
# Builds a statically linked release `ferrite` for the test guests (-C target-feature=+crt-static;
# built for x86_64-unknown-linux-gnu explicitly so build scripts and proc macros stay dynamic) in
# its own cargo target dir, GUEST_DIR/static-target (default target/guest). No debug info and no
# LTO: it runs under TCG, where build time matters more than speed. Cargo rebuilds only what
# changed. Prints the binary's path.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
GUEST_DIR=${GUEST_DIR:-$ROOT/target/guest}
cd "$ROOT"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$GUEST_DIR/static-target" \
CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --quiet --release -p ferrite --target x86_64-unknown-linux-gnu >&2
echo "$GUEST_DIR/static-target/x86_64-unknown-linux-gnu/release/ferrite"
