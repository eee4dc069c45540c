#!/usr/bin/env python3
"""Instructions per I/O of `ferrite bench` cases, counted with callgrind.

Wall-clock figures on shared, noisy machines move by 10-20 % from run to run; instruction
counts do not. Each case runs once under `valgrind --tool=callgrind` (2 s of bench time, one
core). In steady state every I/O is completed, called back and resubmitted from the bdev
layer's completion poller, one `finish_io` call per completion at the top of each stack: the
report gives `finish_io`'s inclusive instruction count divided by the I/O the bench completed
("per I/O": bench side, bdev layer, module and backend, every layer of a stacked bdev). Left
out: the poller's loop around it (a queue pop per completion, a few instructions) and the
per-poll costs of the reactor, shared by a whole batch.

Usage: scripts/perf_instr.py [--bin PATH] [--keep DIR] [CASE ...]
With --keep, the callgrind output of each case is kept in DIR (read it with
`callgrind_annotate --inclusive=yes DIR/CASE.out`).
"""
import argparse, json, os, re, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
CFG = os.path.join(ROOT, "docs", "perf", "configs.json")
STACKED = os.path.join(ROOT, "docs", "perf", "stacked.json")

ONE = ["-q", "128", "-o", "4k", "-m", "0x1"]
CASES = {
    "null": (CFG, ONE + ["-w", "randread", "-T", "Null0"]),
    "passthru": (CFG, ONE + ["-w", "randread", "-T", "PT0"]),
    "malloc": (CFG, ONE + ["-w", "randread", "-T", "Malloc0"]),
    "raid0-null": (STACKED, ONE + ["-w", "randread", "-T", "Raid0Null"]),
    "malloc-write": (STACKED, ONE + ["-w", "randwrite", "-T", "Malloc0"]),
    "raid0-malloc": (STACKED, ONE + ["-w", "randread", "-T", "Raid0"]),
    # Two 64 MiB members: the capacity of the malloc base (Raid0's members are 128 MiB each).
    "raid0-malloc-small": (STACKED, ONE + ["-w", "randread", "-T", "Raid0Small"]),
    "raid1-malloc": (STACKED, ONE + ["-w", "randread", "-T", "Raid1"]),
    "raid1-malloc-write": (STACKED, ONE + ["-w", "randwrite", "-T", "Raid1"]),
}


def inclusive(out, pattern):
    """Inclusive instruction count of the first function whose name contains `pattern`."""
    p = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
                       capture_output=True, text=True, timeout=300)
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(.*?\)\s+[^:]*:(.*)", line)
        if m and pattern in m.group(2):
            return int(m.group(1).replace(",", ""))
    sys.exit(f"function '{pattern}' not found in {out}")


def run(binary, cfg, args, seconds, out):
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "bench",
           "-c", cfg, "--output-json", "-t", str(seconds)] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    d = json.loads(p.stdout)
    ios = sum(r["iops"] * r["runtime"] for r in d["results"])
    return ios


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(TARGET, "release", "ferrite"))
    ap.add_argument("--keep", default=None)
    ap.add_argument("--seconds", type=float, default=2)
    ap.add_argument("cases", nargs="*", default=list(CASES))
    a = ap.parse_args()
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
    print("| case | command | instructions per I/O |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.cases:
            cfg, args = CASES[name]
            out = os.path.join(a.keep, f"{name}.out") if a.keep else os.path.join(tmp, "cg.out")
            ios = run(a.bin, cfg, args, a.seconds, out)
            per_io = inclusive(out, "ferrite_bdev::channel::finish_io") / ios
            rel = os.path.relpath(cfg, ROOT)
            print(f"| {name} | `valgrind --tool=callgrind ferrite bench -c {rel} {' '.join(args)} -t {a.seconds:g}` "
                  f"| {per_io:.0f} |", flush=True)


if __name__ == "__main__":
    main()
