#!/usr/bin/env python3
"""Measures the vhost-user-blk figures recorded in docs/PERFORMANCE.md.

The target under test runs on core 0, the client on core 1: `ferrite bench` over the
virtio-user bdev (`bdev_virtio_attach_controller`, trtype user) doing 4 KiB randread at queue
depth 32 and 128. Targets: `ferrite tgt` serving a null and a malloc bdev through
`vhost_create_blk_controller`, and qemu-storage-daemon's vhost-user-blk export of a `null-co`
node, measured by the same client in the same run. Cases run interleaved (A B C A B C ...)
ROUNDS times; the report gives medians. A target's busy CPU is the growth of its
utime + stime (/proc/PID/stat) over the client's run, divided by the run's wall time; for
Ferrite's target also the busy ticks of its lightweight threads (`thread_get_stats`: time in
pollers that found work), which leaves out the idle polling an adaptive reactor does before
it sleeps and measures what each I/O costs the target.
Idle: a client attached and doing nothing, the target's CPU over a quiet window.

With --bin-b PATH a second Ferrite target (another build) serves the same null and malloc
bdevs from its own directory, and its cases ("B null", "B malloc") run interleaved with the
others, measured by the same client: an A/B of two builds in one run.

Usage: scripts/perf_vhost.py [--rounds N] [--seconds S] [--idle-seconds S] [--quick] [--bin-b PATH]
Environment: FERRITE_BIN (default $CARGO_TARGET_DIR/release/ferrite, else target/release/ferrite):
the client, and the target under test unless --bin-b names the second one.
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FERRITE_BIN", os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "ferrite"))
HZ = os.sysconf("SC_CLK_TCK")
SIZE = 1 << 30  # bytes of every exported disk


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def rpc(sock, method):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode())
    buf = b""
    dec = json.JSONDecoder()
    while True:
        buf += s.recv(65536)
        try:
            v, _ = dec.raw_decode(buf.decode())
            s.close()
            return v["result"]
        except ValueError:
            continue


def busy_seconds(sock):
    st = rpc(sock, "thread_get_stats")
    return sum(t["busy"] for t in st["threads"] if t["name"] != "app_thread") / st["tick_rate"]


def wait_sock(path, proc, what):
    for _ in range(300):
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            sys.exit(f"{what} exited early")
        time.sleep(0.05)
    sys.exit(f"{what} did not create {path}")


def start_ferrite_target(d, binary=None):
    conf = os.path.join(d, "tgt.json")
    json.dump({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_null_create",
             "params": {"name": "Null0", "num_blocks": SIZE // 4096, "block_size": 4096}},
            {"method": "bdev_malloc_create",
             "params": {"name": "Malloc0", "num_blocks": SIZE // 4 // 4096, "block_size": 4096}}]},
        {"subsystem": "vhost_blk", "config": [
            {"method": "vhost_create_blk_controller", "params": {"ctrlr": "vhost.null", "dev_name": "Null0"}},
            {"method": "vhost_create_blk_controller", "params": {"ctrlr": "vhost.malloc", "dev_name": "Malloc0"}}]}]},
        open(conf, "w"))
    p = subprocess.Popen([binary or BIN, "tgt", "-m", "0x1", "-r", os.path.join(d, "tgt.sock"), "-S", d, "-c", conf],
                         stdout=open(os.path.join(d, "tgt.log"), "w"), stderr=subprocess.STDOUT)
    wait_sock(os.path.join(d, "vhost.malloc"), p, "ferrite tgt")
    wait_sock(os.path.join(d, "tgt.sock"), p, "ferrite tgt")
    return p


def start_qsd(d):
    sock = os.path.join(d, "qsd.sock")
    qsd = shutil.which("qemu-storage-daemon")
    if not qsd:
        sys.exit("qemu-storage-daemon not found: apt-get install qemu-system-common")
    p = subprocess.Popen(["taskset", "-c", "0", qsd,
                          "--blockdev", f"driver=null-co,node-name=disk0,size={SIZE}",
                          "--export", "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,"
                          f"addr.path={sock},writable=on,num-queues=1,logical-block-size=4096"],
                         stdout=open(os.path.join(d, "qsd.log"), "w"), stderr=subprocess.STDOUT)
    wait_sock(sock, p, "qemu-storage-daemon")
    return p, sock


def client_conf(d, sock, tag):
    conf = os.path.join(d, f"client-{tag}.json")
    json.dump({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_virtio_attach_controller",
         "params": {"name": "VirtioBlk0", "trtype": "user", "traddr": sock, "dev_type": "blk",
                    "vq_count": 1, "vq_size": 512}}]}]}, open(conf, "w"))
    return conf


def run_case(conf, qd, seconds, target_pid, rpc_sock):
    cmd = [BIN, "bench", "-m", "0x2", "-c", conf, "-q", str(qd), "-o", "4k", "-w", "randread",
           "-t", str(seconds), "--output-json"]
    b0 = busy_seconds(rpc_sock) if rpc_sock else 0
    t0, w0 = cpu_ticks(target_pid), time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    t1, w1 = cpu_ticks(target_pid), time.time()
    b1 = busy_seconds(rpc_sock) if rpc_sock else 0
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    d = json.loads(out.stdout)
    busy = (t1 - t0) / HZ / (w1 - w0)
    runtime = d["results"][0]["runtime"]
    ios = d["total"]["iops"] * runtime
    # Busy target time per I/O (ns): poller time with work, over the I/O of the run.
    ns_per_io = (b1 - b0) * 1e9 / ios if rpc_sock and ios else float("nan")
    return d["total"]["iops"], busy, ns_per_io


def idle_cpu(conf, target_pid, seconds):
    """A client attached (bench -z waits for perform_tests, doing no I/O)."""
    d = tempfile.mkdtemp(prefix="ferrite-idle-")
    sock = os.path.join(d, "b.sock")
    c = subprocess.Popen([BIN, "bench", "-z", "-m", "0x2", "-r", sock, "-c", conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_sock(sock, c, "bench -z")
        time.sleep(2)
        t0, w0 = cpu_ticks(target_pid), time.time()
        time.sleep(seconds)
        t1, w1 = cpu_ticks(target_pid), time.time()
        return 100.0 * (t1 - t0) / HZ / (w1 - w0)
    finally:
        c.send_signal(signal.SIGTERM)
        c.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--idle-seconds", type=float, default=10)
    ap.add_argument("--bin-b", default=None,
                    help="a second ferrite build whose target is measured beside the first")
    ap.add_argument("--quick", action="store_true",
                    help="one round of 2 s per case, 3 s idle window (a smoke run, about 20 s)")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.seconds, a.idle_seconds = 1, 2.0, 3.0
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not found: cargo build --release -p ferrite (or set FERRITE_BIN)")
    d = tempfile.mkdtemp(prefix="ferrite-perf-vhost-")
    if a.bin_b and not os.path.exists(a.bin_b):
        sys.exit(f"{a.bin_b} not found")
    tgt = start_ferrite_target(d)
    db = tgt_b = None
    if a.bin_b:
        db = tempfile.mkdtemp(prefix="ferrite-perf-vhost-b-")
        tgt_b = start_ferrite_target(db, a.bin_b)
    qsd, qsock = start_qsd(d)
    try:
        tsock = os.path.join(d, "tgt.sock")
        targets = {
            "ferrite null": (client_conf(d, os.path.join(d, "vhost.null"), "fnull"), tgt.pid, tsock),
            "ferrite malloc": (client_conf(d, os.path.join(d, "vhost.malloc"), "fmalloc"), tgt.pid, tsock),
            "qsd null-co": (client_conf(d, qsock, "qsd"), qsd.pid, None),
        }
        if tgt_b:
            bsock = os.path.join(db, "tgt.sock")
            targets["B null"] = (client_conf(db, os.path.join(db, "vhost.null"), "bnull"), tgt_b.pid, bsock)
            targets["B malloc"] = (client_conf(db, os.path.join(db, "vhost.malloc"), "bmalloc"), tgt_b.pid, bsock)
            print(f"A: {BIN}\nB: {a.bin_b}")
        cases = [(name, qd) for qd in (32, 128) for name in targets]
        vals = {c: [] for c in cases}
        print(f"machine: {os.cpu_count()} cores; {a.rounds} interleaved rounds of {a.seconds} s per case; "
              "target on core 0, client (ferrite bench over bdev_virtio) on core 1")
        for r in range(a.rounds):
            for c in cases:
                conf, pid, rs = targets[c[0]]
                vals[c].append(run_case(conf, c[1], a.seconds, pid, rs))
                print(f"  round {r + 1} {c[0]} qd {c[1]}: {vals[c][-1][0]:,.0f} IOPS, "
                      f"target busy {100 * vals[c][-1][1]:.0f}%", file=sys.stderr)
        print("\n| target | qd | IOPS (median) | min | max | target CPU (/proc) | IOPS per target core (/proc) | target busy ns per I/O (pollers with work) |")
        print("|---|---|---|---|---|---|---|---|")
        per_core = {}
        for c in cases:
            iops = [v[0] for v in vals[c]]
            busy = statistics.median(v[1] for v in vals[c])
            m = statistics.median(iops)
            pc = statistics.median(v[0] / v[1] for v in vals[c] if v[1] > 0)
            per_core[c] = pc
            ns = statistics.median(v[2] for v in vals[c])
            print(f"| {c[0]} | {c[1]} | {m:,.0f} | {min(iops):,.0f} | {max(iops):,.0f} | "
                  f"{100 * busy:.0f}% | {pc:,.0f} | {ns:,.0f} |")
        for qd in (32, 128):
            ratio = per_core[("ferrite null", qd)] / per_core[("qsd null-co", qd)]
            print(f"\nqd {qd}: ferrite null / qsd null-co, IOPS per busy target core: {ratio:.2f}x")
            if tgt_b:
                for k in ("null", "malloc"):
                    ab = statistics.median(x[0] / y[0] for x, y in zip(vals[(f"ferrite {k}", qd)], vals[(f"B {k}", qd)]))
                    print(f"qd {qd}: A / B {k}, median of per-round IOPS ratios: {ab:.2f}")
        for qd in (32, 128):
            ns = statistics.median(v[2] for v in vals[("ferrite null", qd)])
            print(f"qd {qd}: ferrite null at {ns:,.0f} busy ns per I/O = {1e9 / ns:,.0f} IOPS per fully busy core")
        idle = idle_cpu(targets["ferrite null"][0], tgt.pid, a.idle_seconds)
        print(f"\nidle: ferrite tgt (adaptive) with a virtio-user client attached and no I/O: "
              f"{idle:.2f}% of a core over {a.idle_seconds} s")
    finally:
        for p in (tgt, qsd, tgt_b):
            if p is None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)
        if db:
            shutil.rmtree(db, ignore_errors=True)


if __name__ == "__main__":
    main()
