#!/usr/bin/env python3
"""Measures the figures recorded in docs/PERFORMANCE.md.

Each benchmark case is a `ferrite bench ... --output-json` command; cases of one group run
interleaved (A B C A B C ...) ROUNDS times, so machine drift hits them alike, and the report
gives the median of each and the ratios between medians. Idle CPU per poll mode is read from
/proc for a target left idle. Usage: scripts/perf.py [--rounds N] [--seconds S] [--quick]
"""
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ferrite")
CFG = os.path.join(ROOT, "docs", "perf", "configs.json")


def bench(args):
    cmd = [BIN, "bench", "-c", CFG, "--output-json"] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout)


def group(name, cases, rounds):
    """cases: list of (label, args, extract) ; returns {label: [values]}"""
    vals = {label: [] for label, _, _ in cases}
    for _ in range(rounds):
        for label, args, extract in cases:
            vals[label].append(extract(bench(args)))
    print(f"\n### {name}\n")
    print("| case | command | median | min | max |")
    print("|---|---|---|---|---|")
    for label, args, _ in cases:
        v = vals[label]
        print(f"| {label} | `ferrite bench -c docs/perf/configs.json {' '.join(args)}` | "
              f"{statistics.median(v):,.0f} | {min(v):,.0f} | {max(v):,.0f} |")
    return {k: statistics.median(v) for k, v in vals.items()}


def total_iops(d):
    return d["total"]["iops"]


def p99_ns(d):
    return d["total"]["latency_percentiles_us"]["p99"] * 1000


def p50_ns(d):
    return d["total"]["latency_percentiles_us"]["p50"] * 1000


def idle_cpu(mode, seconds):
    sock = tempfile.mktemp(prefix="ferrite-idle-", suffix=".sock")
    p = subprocess.Popen([BIN, "tgt", "-r", sock, "--poll-mode", mode],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        def ticks():
            f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])
        t0, w0 = ticks(), time.time()
        time.sleep(seconds)
        t1, w1 = ticks(), time.time()
        return 100.0 * (t1 - t0) / os.sysconf("SC_CLK_TCK") / (w1 - w0)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    t = ["-t", str(a.seconds)]
    r = a.rounds
    print(f"machine: {os.cpu_count()} cores; {r} interleaved rounds of {a.seconds} s per case")
    one = ["-q", "128", "-o", "4k", "-w", "randread"] + t
    m = group("One core, 4 KiB randread, queue depth 128 (IOPS)", [
        ("null", one + ["-T", "Null0"], total_iops),
        ("passthru on null", one + ["-T", "PT0"], total_iops),
        ("malloc", one + ["-T", "Malloc0"], total_iops),
    ], r)
    print(f"\npassthru / null = {m['passthru on null'] / m['null']:.2f}")
    s = group("Scaling: null, 4 KiB randread, qd 128 (IOPS)", [
        ("1 core, 1 bdev", one + ["-m", "0x1", "-T", "Null0"], total_iops),
        ("2 cores, 2 bdevs", one + ["-m", "0x3", "-T", "Null0", "-T", "Null1"], total_iops),
    ], r)
    print(f"\n2 cores / 1 core = {s['2 cores, 2 bdevs'] / s['1 core, 1 bdev']:.2f}")
    qd1 = ["-q", "1", "-o", "4k", "-w", "randread", "-T", "Null0"] + t
    group("Latency on null, queue depth 1 (p99 in ns)", [("null qd1 p99", qd1, p99_ns)], r)
    group("Latency on null, queue depth 1 (p50 in ns)", [("null qd1 p50", qd1, p50_ns)], r)
    print("\n### Idle CPU of one reactor (ferrite tgt, no I/O), % of one core\n")
    print("| mode | command | CPU % |")
    print("|---|---|---|")
    for mode in ["poll", "adaptive", "interrupt"]:
        print(f"| {mode} | `ferrite tgt --poll-mode {mode}` | {idle_cpu(mode, min(a.seconds, 5)):.2f} |")


if __name__ == "__main__":
    main()
