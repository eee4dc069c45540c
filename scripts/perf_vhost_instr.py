#!/usr/bin/env python3
"""Instructions per I/O on both sides of the vhost-user-blk path, counted with callgrind.

Wall-clock figures on a shared, noisy machine say little; instruction counts are stable.
A `ferrite tgt` serving a null bdev through `vhost_create_blk_controller` and a
`ferrite bench` driving it through the virtio-user bdev (4 KiB randread) both run under
`valgrind --tool=callgrind`; the I/O the bench completed divides:
- each process's total instructions ("total", which includes the reactors' idle polling:
  under valgrind the two processes run far slower than natively and the polls that find no
  work are many, so this is an upper bound);
- the inclusive cost of the functions on the I/O path (below), which leaves the reactor loop
  out but still includes the empty calls of each poller (a few tens of instructions each).

Usage: scripts/perf_vhost_instr.py [--bin PATH] [--seconds S] [--qd N] [--bdev null|malloc]
                                   [--keep DIR] [--strace]
With --bdev malloc the target serves a 256 MiB malloc bdev instead of the null bdev (its 4 KiB
copy per read then shows in the target's figures).
With --keep, the two callgrind outputs are kept in DIR (`callgrind_annotate
--inclusive=yes DIR/tgt.out`).
With --strace, both processes run natively under `strace -c -f` instead and the script prints
each process's system calls per I/O (eventfd writes are the call/kick notifications: about
zero per I/O while both sides poll).
"""
import argparse, json, os, re, shutil, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
SIZE = 1 << 30

# (label, substring of the function name in callgrind_annotate's output)
TARGET_FUNCS = [
    ("vhost queue poller (pop, parse, bdev submit)", "ferrite_vhost::queue::QueuePoller as ferrite_reactor::poller::Poll>::poll"),
    ("bdev completion poller (completion, push_used, publish, call)", "ferrite_bdev::thread::"),
]
CLIENT_FUNCS = [
    ("virtio-user submit", "ferrite_virtio::io::VirtioChannel as ferrite_bdev::bdev::BackendChannel>::submit"),
    ("virtio-user poller (used ring, completion, bench callback, resubmit)", "ferrite_virtio::io::VirtioPoller as ferrite_reactor::poller::Poll>::poll"),
]


def annotate(out):
    p = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out],
                       capture_output=True, text=True, timeout=600)
    rows, total = [], None
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(.*?\)\s+PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
        m = re.match(r"\s*([\d,]+) \(.*?\)\s+[^:]*:(.*)", line)
        if m:
            rows.append((int(m.group(1).replace(",", "")), m.group(2)))
    return total, rows


def first(rows, pattern):
    for n, name in rows:
        if pattern in name:
            return n, name
    return None, None


def wait_sock(path, proc, what, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        time.sleep(0.2)
    sys.exit(f"{what} did not create {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(TARGET, "release", "ferrite"))
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--qd", type=int, default=32)
    ap.add_argument("--bdev", choices=["null", "malloc"], default="null")
    ap.add_argument("--keep", default=None)
    ap.add_argument("--strace", action="store_true")
    a = ap.parse_args()
    tool = "strace" if a.strace else "valgrind"
    if not shutil.which(tool):
        sys.exit(f"{tool} not found: apt-get install {tool}")
    d = tempfile.mkdtemp(prefix="ferrite-vhost-instr-")
    keep = a.keep or d
    os.makedirs(keep, exist_ok=True)
    tconf = os.path.join(d, "tgt.json")
    json.dump({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_null_create",
             "params": {"name": "Null0", "num_blocks": SIZE // 4096, "block_size": 4096}}
            if a.bdev == "null" else
            {"method": "bdev_malloc_create",
             "params": {"name": "Null0", "num_blocks": SIZE // 4 // 4096, "block_size": 4096}}]},
        {"subsystem": "vhost_blk", "config": [
            {"method": "vhost_create_blk_controller",
             "params": {"ctrlr": "vhost.null", "dev_name": "Null0"}}]}]}, open(tconf, "w"))
    cconf = os.path.join(d, "client.json")
    json.dump({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_virtio_attach_controller",
         "params": {"name": "VirtioBlk0", "trtype": "user", "traddr": os.path.join(d, "vhost.null"),
                    "dev_type": "blk", "vq_count": 1, "vq_size": 512}}]}]}, open(cconf, "w"))
    tout, cout = os.path.join(keep, "tgt.out"), os.path.join(keep, "client.out")

    def wrap(out):
        if a.strace:
            return ["strace", "-c", "-f", "-o", out]
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]

    tgt = subprocess.Popen(wrap(tout) + [a.bin, "tgt", "-m", "0x1", "-r", os.path.join(d, "tgt.sock"), "-S", d, "-c", tconf],
                           stdout=open(os.path.join(d, "tgt.log"), "w"), stderr=subprocess.STDOUT)
    try:
        wait_sock(os.path.join(d, "vhost.null"), tgt, "ferrite tgt")
        cmd = wrap(cout) + [a.bin, "bench",
               "-m", "0x2", "-c", cconf, "-q", str(a.qd), "-o", "4k", "-w", "randread",
               "-t", str(a.seconds), "--output-json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
        res = json.loads(p.stdout)
        ios = sum(r["iops"] * r["runtime"] for r in res["results"])
    finally:
        victims = [tgt.pid]
        if a.strace:
            # Stop the traced target itself (strace then prints its summary and exits).
            try:
                kids = open(f"/proc/{tgt.pid}/task/{tgt.pid}/children").read().split()
                victims = [int(k) for k in kids] or victims
            except OSError:
                pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            tgt.wait(timeout=300)
        except subprocess.TimeoutExpired:
            tgt.kill()
    print(f"{ios:,.0f} I/O at qd {a.qd} (4 KiB randread, {a.bdev} bdev)\n")
    if a.strace:
        print("| side | system call | calls | per I/O |")
        print("|---|---|---|---|")
        for side, out in (("target", tout), ("client", cout)):
            for line in open(out):
                f = line.split()
                # % time, seconds, usecs/call, calls, [errors,] syscall
                if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                    calls = int(f[3])
                    print(f"| {side} | {f[-1]} | {calls:,} | {calls / ios:.4f} |")
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
        return
    print("| side | what | instructions per I/O |")
    print("|---|---|---|")
    for side, out, funcs in (("target", tout, TARGET_FUNCS), ("client", cout, CLIENT_FUNCS)):
        total, rows = annotate(out)
        if total:
            print(f"| {side} | whole process (upper bound, with idle polling) | {total / ios:,.0f} |")
        for label, pat in funcs:
            n, _ = first(rows, pat)
            print(f"| {side} | {label} | {'not found' if n is None else f'{n / ios:,.0f}'} |")
    if not a.keep:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
