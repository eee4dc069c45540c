#!/usr/bin/env python3
"""Instructions per reactor iteration of an idle target (the per-poll cost), counted with callgrind.

Runs `ferrite tgt --no-rpc-server --poll-mode poll -c docs/perf/configs.json` under
`valgrind --tool=callgrind --separate-threads=yes` for N seconds, stops it with SIGINT, and
divides the reactor OS thread's instruction total by its iterations (its start-up, loading the
config, is included: a few instructions per iteration over millions of iterations). One
reactor, one lightweight thread: an iteration is one poll of the app thread with its pollers;
the `bdev_completions` poller runs once in each (its calls count the iterations, its own cost
is reported too). A busy poll pays the same fixed
costs once for up to 2048 completions (4 rounds of 512).

Usage: scripts/perf_poll_instr.py [--bin PATH] [--seconds N]
"""
import argparse, os, re, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
CFG = os.path.join(ROOT, "docs", "perf", "configs.json")


def profile(binary, seconds, tmp):
    """(instructions, iterations, completion-poller instructions) of the reactor's OS thread."""
    out = os.path.join(tmp, "cg.out")
    cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
           f"--callgrind-out-file={out}", binary, "tgt", "--no-rpc-server", "--poll-mode",
           "poll", "-c", CFG]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)
    best = None
    for f in sorted(os.listdir(tmp)):
        ann = subprocess.run(["callgrind_annotate", "--tree=calling", "--inclusive=yes",
                              "--threshold=100", os.path.join(tmp, f)], capture_output=True,
                             text=True, timeout=300).stdout.splitlines()
        total = cq = iters = None
        for line in ann:
            m = re.match(r"\s*([\d,]+) .*PROGRAM TOTALS", line)
            if m:
                total = int(m.group(1).replace(",", ""))
            # A dyn call, never inlined: its call count is the number of iterations.
            m = re.match(r"\s*([\d,]+) .*>\s+\S*:<ferrite_bdev::thread::CqPoller as \S+>::poll \(([\d,]+)x\)", line)
            if cq is None and m:
                cq, iters = (int(g.replace(",", "")) for g in m.groups())
        if total and iters and (best is None or iters > best[1]):
            best = (total, iters, cq)
    if best is None:
        sys.exit(f"no reactor thread with a completion poller in the profile of: {' '.join(cmd)}")
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(TARGET, "release", "ferrite"))
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        total, iters, cq = profile(a.bin, a.seconds, tmp)
    print(f"({iters:,} iterations, {total:,} instructions on the reactor thread)")
    print("| figure | instructions |")
    print("|---|---|")
    print(f"| reactor iteration, idle (one thread, its pollers included) | {total / iters:.0f} |")
    print(f"| `bdev_completions` poll with nothing to do | {cq / iters:.0f} |")

if __name__ == "__main__":
    main()
