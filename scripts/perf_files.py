#!/usr/bin/env python3
"""Measures file-backed and stacked bdev figures against their targets (docs/PERFORMANCE.md).

Files: ferrite's aio and uring bdevs on a 1 GiB file on tmpfs (/dev/shm) and on the disk
(target/, ext4), one core, 4 KiB randread at qd 32 and 128, against fio's libaio and io_uring
engines on the same file with the same depth (O_DIRECT, pinned to CPU 0 like `ferrite bench -m 0x1`).
Stacked: malloc, raid0 and raid1 over two malloc, null and raid0 over two null, one core, qd 128.

Cases of one group run interleaved (A B C D A B C D ...) ROUNDS times, so machine drift hits
them alike; the report gives median, min and max of each and ratios between medians, and for
the stacked cases also the ratio round by round (median and range), which a slow drift of a
shared machine disturbs less.
Usage: scripts/perf_files.py [--bin PATH] [--rounds N] [--seconds S] [--only files|stacked]
                             [--poll-mode poll|adaptive|interrupt]
--bin is the ferrite binary to measure (default: release/ferrite in $CARGO_TARGET_DIR, or in
target/ when it is not set), e.g. a build of another branch for an A/B in two runs.
--poll-mode is passed to `ferrite bench` for the file groups (default: the bench's poll mode):
with `interrupt` the reactor sleeps while every I/O is in the kernel, as fio does.
The data files are created (random content) when missing; run from anywhere.
"""
import argparse, json, os, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "ferrite")  # --bin replaces it
FILES_CFG = "docs/perf/files.json"      # relative to ROOT (the file paths in it are too)
STACKED_CFG = "docs/perf/stacked.json"
FILES = {"tmpfs": "/dev/shm/ferrite-1g.dat", "disk": "target/ferrite-1g.dat"}
BDEVS = {"tmpfs": ("AioShm", "UringShm"), "disk": ("AioDisk", "UringDisk")}
SIZE = 1 << 30


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout)


def ferrite(cfg, args):
    cmd = [BIN, "bench", "-c", cfg, "-m", "0x1", "--output-json"] + args
    return cmd, lambda: run(cmd)["total"]["iops"]


def fio(engine, path, qd, seconds):
    cmd = ["fio", "--name=perf", f"--filename={path}", f"--size={SIZE}", f"--ioengine={engine}",
           "--direct=1", "--rw=randread", "--bs=4k", f"--iodepth={qd}", "--numjobs=1",
           "--cpus_allowed=0", "--time_based", f"--runtime={seconds:g}", "--group_reporting",
           "--norandommap", "--randrepeat=0", "--output-format=json"]
    return cmd, lambda: run(cmd)["jobs"][0]["read"]["iops"]


def group(name, cases, rounds):
    """cases: list of (label, (cmd, measure)); returns {label: median}; the values of every
    round stay in LAST_ROUNDS for `paired`."""
    vals = {label: [] for label, _ in cases}
    for _ in range(rounds):
        for label, (_, measure) in cases:
            vals[label].append(measure())
    print(f"\n### {name}\n")
    print("| case | command | median | min | max |")
    print("|---|---|---|---|---|")
    for label, (cmd, _) in cases:
        v = vals[label]
        c = " ".join(shown(x) if x == BIN else x for x in cmd)
        print(f"| {label} | `{c}` | {statistics.median(v):,.0f} | {min(v):,.0f} | {max(v):,.0f} |")
    sys.stdout.flush()
    LAST_ROUNDS.clear()
    LAST_ROUNDS.update(vals)
    return {k: statistics.median(v) for k, v in vals.items()}


LAST_ROUNDS = {}


def paired(a, b):
    """a / b round by round in the last group (the two ran seconds apart, so a drift of the
    machine hits both): "median (min-max)" of those ratios."""
    r = [x / y for x, y in zip(LAST_ROUNDS[a], LAST_ROUNDS[b])]
    return f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"


def shown(path):
    """A path as the report shows it: relative to the repository when inside it."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def ensure_files():
    for path in FILES.values():
        p = os.path.join(ROOT, path)
        if not os.path.exists(p) or os.path.getsize(p) != SIZE:
            subprocess.run(["dd", "if=/dev/urandom", f"of={p}", "bs=1M", f"count={SIZE >> 20}",
                            "conv=fsync", "status=none"], check=True)


def files(rounds, seconds, poll_mode=None):
    ensure_files()
    t = ["-t", f"{seconds:g}"] + (["--poll-mode", poll_mode] if poll_mode else [])
    for where in ("tmpfs", "disk"):
        aio, uring = BDEVS[where]
        for qd in (32, 128):
            w = ["-q", str(qd), "-o", "4k", "-w", "randread"] + t
            m = group(f"1 GiB file on {where}, one core, 4 KiB randread, qd {qd} (IOPS)", [
                ("ferrite aio", ferrite(FILES_CFG, w + ["-T", aio])),
                ("ferrite uring", ferrite(FILES_CFG, w + ["-T", uring])),
                ("fio libaio", fio("libaio", FILES[where], qd, seconds)),
                ("fio io_uring", fio("io_uring", FILES[where], qd, seconds)),
            ], rounds)
            best = max(("fio libaio", "fio io_uring"), key=lambda k: m[k])
            print(f"\nbest fio engine: {best}; ferrite aio / {best} = {m['ferrite aio'] / m[best]:.2f}, "
                  f"ferrite uring / {best} = {m['ferrite uring'] / m[best]:.2f} "
                  f"(target: >= {'1.2' if where == 'tmpfs' else '1.0'})")


def stacked(rounds, seconds):
    t = ["-t", f"{seconds:g}"]
    for wl in ("randread", "randwrite"):
        w = ["-q", "128", "-o", "4k", "-w", wl] + t
        m = group(f"Stacked on malloc, one core, 4 KiB {wl}, qd 128 (IOPS)", [
            ("malloc", ferrite(STACKED_CFG, w + ["-T", "Malloc0"])),
            ("raid0 over 2 malloc", ferrite(STACKED_CFG, w + ["-T", "Raid0"])),
            ("raid1 over 2 malloc", ferrite(STACKED_CFG, w + ["-T", "Raid1"])),
            # Like for like: two 64 MiB members, the capacity of the 128 MiB malloc base (the
            # raid0 above reads from 256 MiB).
            ("raid0 over 2 malloc of 64 MiB", ferrite(STACKED_CFG, w + ["-T", "Raid0Small"])),
        ], rounds)
        tgt = "0.90" if wl == "randread" else "raid1 0.50"
        print(f"\nraid0 / malloc = {m['raid0 over 2 malloc'] / m['malloc']:.2f}, "
              f"raid1 / malloc = {m['raid1 over 2 malloc'] / m['malloc']:.2f} (target: >= {tgt}); "
              f"like for like, raid0 over 2 x 64 MiB / malloc = "
              f"{m['raid0 over 2 malloc of 64 MiB'] / m['malloc']:.2f}")
        print(f"per round (median, min-max): raid0 / malloc = {paired('raid0 over 2 malloc', 'malloc')}, "
              f"raid1 / malloc = {paired('raid1 over 2 malloc', 'malloc')}, like for like = "
              f"{paired('raid0 over 2 malloc of 64 MiB', 'malloc')}")
    w = ["-q", "128", "-o", "4k", "-w", "randread"] + t
    m = group("Stacked on null, one core, 4 KiB randread, qd 128 (IOPS)", [
        ("null", ferrite(STACKED_CFG, w + ["-T", "Null0"])),
        ("raid0 over 2 null", ferrite(STACKED_CFG, w + ["-T", "Raid0Null"])),
    ], rounds)
    print(f"\nraid0 over null / null = {m['raid0 over 2 null'] / m['null']:.2f} (target: >= 0.80); "
          f"per round {paired('raid0 over 2 null', 'null')}")


def main():
    global BIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=BIN, help="the ferrite binary to measure")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--only", choices=["files", "stacked"])
    ap.add_argument("--poll-mode", choices=["poll", "adaptive", "interrupt"])
    a = ap.parse_args()
    BIN = os.path.abspath(a.bin)
    if not os.access(BIN, os.X_OK):
        sys.exit(f"no executable ferrite at {BIN} (build it: cargo build --release, or pass --bin)")
    print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}; "
          f"{a.rounds} interleaved rounds of {a.seconds:g} s per case; binary {shown(BIN)}")
    if a.only != "stacked":
        files(a.rounds, a.seconds, a.poll_mode)
    if a.only != "files":
        stacked(a.rounds, a.seconds)


if __name__ == "__main__":
    main()
