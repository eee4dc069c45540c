#!/usr/bin/env bash
# Builds the Linux guest the QEMU tests boot: Debian's cloud kernel and an initramfs of
# busybox-static, the virtio/vfio kernel modules, Debian's fio with its shared libraries, the
# guest scripts in scripts/guest/ and optional extra static binaries.
#
# Usage: scripts/guest/build-guest.sh [EXTRA_BINARY..]
#   env GUEST_DIR   cache directory (default: target/guest under the workspace)
# Prints two lines on stdout: KERNEL=<path> and INITRD=<path>.
#
# Everything is cached under GUEST_DIR, keyed on its inputs:
#   kernel-<package>/       the unpacked kernel package (apt-get download + dpkg -x, no root)
#   base-<hash>.cpio        busybox, modules, fio and its libraries (hash: kernel package,
#                           busybox, fio and its libraries, this script)
#   initramfs-<hash>.cpio   base + an overlay of /init, the tests and the extra binaries
#                           (hash: base and overlay contents); the kernel unpacks both archives
# so a changed test script costs one small cpio, not a rebuild.
# Needs: apt-get/dpkg (Debian), busybox-static, fio, cpio-capable busybox, flock.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
GUEST_DIR=${GUEST_DIR:-$ROOT/target/guest}
FLAVOUR=cloud-amd64
mkdir -p "$GUEST_DIR"
exec 9>"$GUEST_DIR/.lock"
flock 9

die() { echo "build-guest: $*" >&2; exit 1; }
BB=$(command -v busybox) || die "busybox missing: apt-get install busybox-static"
ldd "$BB" >/dev/null 2>&1 && die "$BB is not static: apt-get install busybox-static"
FIO=$(command -v fio) || die "fio missing: apt-get install fio"

# --- kernel ------------------------------------------------------------------------------
resolve() { apt-cache depends "linux-image-$FLAVOUR" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
IMGPKG=$(resolve)
[ -n "$IMGPKG" ] || { apt-get update -qq >&2 || true; IMGPKG=$(resolve); }
[ -n "$IMGPKG" ] || die "cannot resolve linux-image-$FLAVOUR (apt-get update?)"
KVER=${IMGPKG#linux-image-}
KD=$GUEST_DIR/kernel-$IMGPKG
if [ ! -f "$KD/ok" ]; then
  rm -rf "$KD.tmp"; mkdir -p "$KD.tmp"
  ( cd "$KD.tmp" && apt-get download "$IMGPKG" >&2 2>/dev/null ) || die "apt-get download $IMGPKG failed"
  dpkg -x "$KD.tmp/${IMGPKG}"_*.deb "$KD.tmp/x"
  rm -f "$KD.tmp/${IMGPKG}"_*.deb
  touch "$KD.tmp/ok"; rm -rf "$KD"; mv "$KD.tmp" "$KD"
fi
KERNEL=$KD/x/boot/vmlinuz-$KVER
[ -f "$KERNEL" ] || die "no $KERNEL"

# --- base archive ------------------------------------------------------------------------
fio_libs() { ldd "$FIO" | awk '/=>/{print $3} /ld-linux/{print $1}'; }
BASE_KEY=$( { echo "$IMGPKG"; sha256sum "$BB" "$FIO" "$0"; fio_libs | xargs -r sha256sum; } | sha256sum | cut -c1-16)
BASE=$GUEST_DIR/base-$BASE_KEY.cpio
if [ ! -f "$BASE" ]; then
  R=$GUEST_DIR/base-root.tmp
  rm -rf "$R"; mkdir -p "$R"/{bin,sbin,dev,proc,sys,tmp,mnt,etc,root,tests,usr/bin,usr/sbin,lib64}
  cp "$BB" "$R/bin/busybox"
  for a in $("$BB" --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
  MSRC=$KD/x/lib/modules/$KVER
  MDST=$R/lib/modules/$KVER
  for p in kernel/drivers/virtio kernel/drivers/block/virtio_blk.ko kernel/drivers/vfio \
           kernel/virt/lib/irqbypass.ko; do
    [ -e "$MSRC/$p" ] || die "kernel $KVER has no $p"
    mkdir -p "$MDST/$(dirname "$p")"; cp -r "$MSRC/$p" "$MDST/$(dirname "$p")/"
  done
  cp "$MSRC"/modules.builtin* "$MDST/" 2>/dev/null || true
  "$BB" depmod -b "$R" "$KVER"
  cp "$FIO" "$R/usr/bin/fio"
  for l in $(fio_libs); do mkdir -p "$R$(dirname "$l")"; cp -L "$l" "$R$l"; done
  [ -e "$R/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"
  ( cd "$R" && find . | "$BB" cpio -o -H newc 2>/dev/null ) > "$BASE.tmp"
  mv "$BASE.tmp" "$BASE"; rm -rf "$R"
fi

# --- small static helpers (helpers/*.rs, plain rustc, no crates) ---------------------------
HKEY=$( { rustc --version; sha256sum "$HERE"/helpers/*.rs; } | sha256sum | cut -c1-16)
HDIR=$GUEST_DIR/helpers-$HKEY
if [ ! -d "$HDIR" ]; then
  command -v rustc >/dev/null || die "rustc missing"
  rm -rf "$HDIR.tmp"; mkdir -p "$HDIR.tmp"
  for s in "$HERE"/helpers/*.rs; do
    rustc -O -C target-feature=+crt-static --target x86_64-unknown-linux-gnu --edition 2021 \
      -o "$HDIR.tmp/$(basename "$s" .rs)" "$s" >&2 || die "rustc $s failed"
  done
  mv "$HDIR.tmp" "$HDIR"
fi
set -- "$HDIR"/* "$@"

# --- overlay: init, tests, extra binaries --------------------------------------------------
for b in "$@"; do [ -f "$b" ] || die "no extra binary $b"; done
OV_KEY=$( { echo "$BASE_KEY"; sha256sum "$HERE/init" "$HERE"/tests/*.sh; for b in "$@"; do echo "$(basename "$b")"; sha256sum < "$b"; done; } | sha256sum | cut -c1-16)
INITRD=$GUEST_DIR/initramfs-$OV_KEY.cpio
if [ ! -f "$INITRD" ]; then
  O=$GUEST_DIR/overlay-root.tmp
  rm -rf "$O"; mkdir -p "$O/tests" "$O/usr/bin"
  cp "$HERE/init" "$O/init"
  cp "$HERE"/tests/*.sh "$O/tests/"
  for b in "$@"; do cp "$b" "$O/usr/bin/"; done
  chmod +x "$O/init" "$O"/tests/*.sh
  { cat "$BASE"; ( cd "$O" && find . | "$BB" cpio -o -H newc 2>/dev/null ); } > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"; rm -rf "$O"
  # keep the cache small: drop initramfs files unused for a day
  find "$GUEST_DIR" -maxdepth 1 -name 'initramfs-*.cpio' -mtime +1 -delete 2>/dev/null || true
fi
touch "$INITRD"
echo "KERNEL=$KERNEL"
echo "INITRD=$INITRD"
