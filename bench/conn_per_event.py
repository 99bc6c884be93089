"""Connection-per-event ingest: hookd against a bare uvloop accept-read-close server, same run.

    .venv/bin/python bench/conn_per_event.py [--runs 5] [--quick] [--profile SECONDS]

This is how hooks really call: every event is its own connection. 8 client processes each
connect (non-blocking), send one ~300 B Claude Code payload, close, as fast as they can, for a
fixed number of events each. A connect that finds the listen queue full (EAGAIN) is retried
after a short sleep and counted; an event still not delivered after GIVE_UP seconds counts as
failed. events/s run from the first connect to the last event stored: once every client has
sent, the count is polled every 2 ms (hookd: ``.stored()`` from SQLite; the bare server: its
line count). Polling only then keeps the poller's CPU (``stored()`` opens SQLite, ~0.2 ms)
off the 2-core machine while the clients and servers compete for it.

Reference, in the same run: a bare uvloop server (an ``asyncio.Protocol`` that counts newline-
terminated lines and does nothing else, listen backlog 4096 like hookd's) in its own process,
fed by the same client code. hookd and the bare server alternate within each run (the order
flips from run to run). Target: hookd >= 0.7x the bare server.

Also reported: CPU seconds of hookd's daemon process and of its writer process over the
measured interval (utime+stime from /proc/PID/stat), against the bare server's, so the
bottleneck shows. ``--profile SECONDS`` then samples the daemon process with py-spy
(``.venv/bin/pip install py-spy``) under the same load and prints where its main thread spends
its time (``--native`` adds uvloop's C frames, but slows the daemon a lot).
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import multiprocessing as mp
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, claude_event, daemon, median_spread, rss_mb  # noqa: E402

SECTION = "conn_per_event"
CLIENTS = 8
EVENTS = 10_000  # per client
QUICK_EVENTS = 1_500
TARGET = 0.7
RETRY_SLEEP = 0.0002  # seconds between connect attempts while the listen queue is full
GIVE_UP = 10.0  # seconds one event may keep retrying before it counts as failed
BACKLOG = 4096  # hookd's default (settings.backlog)
POLL = 0.002  # seconds between completion polls, as DaemonUnderTest.wait_stored does
PHASE_TIMEOUT = 120.0
CTX = mp.get_context("fork")  # payloads reach the clients by fork, not by pickling
CLK_TCK = os.sysconf("SC_CLK_TCK")
COUNT = struct.Struct("q")  # the bare server's line count, shared through mmap


# -- clients ----------------------------------------------------------------------------------
def client(path: str, payloads: list[bytes], barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:
    """connect / send one line / close, for every payload, as fast as possible."""
    retries = failed = 0
    AF_UNIX, SOCK_STREAM = socket.AF_UNIX, socket.SOCK_STREAM  # noqa: N806
    barrier.wait()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    for p in payloads:
        s = socket.socket(AF_UNIX, SOCK_STREAM)
        try:
            s.setblocking(False)
            deadline = 0.0
            while True:
                try:
                    s.connect(path)
                    break
                except BlockingIOError:  # EAGAIN: the listen queue is full
                    retries += 1
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + GIVE_UP
                    elif now > deadline:
                        raise TimeoutError("listen queue full for too long") from None
                    time.sleep(RETRY_SLEEP)
            sent = s.send(p)
            if sent < len(p):  # never seen with ~300 B lines; finish it rather than lose it
                s.settimeout(5.0)
                s.sendall(p[sent:])
        except OSError:
            failed += 1
        finally:
            s.close()
    t1 = time.time()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out.put((t0, t1, retries, failed, cpu))


# -- the reference server -----------------------------------------------------------------------
def bare_server(path: str, count_file: str) -> None:
    """A uvloop server that accepts, counts newline-terminated lines, and closes at EOF.

    The count is published every millisecond (not per connection) to an 8-byte memory-mapped
    file, so the protocol does nothing but count. Runs in a fresh interpreter, as hookd does.
    """
    import uvloop

    lines = 0

    class Counting(asyncio.Protocol):
        __slots__ = ()

        def data_received(self, data: bytes) -> None:
            nonlocal lines
            lines += data.count(b"\n")

    async def serve(shared: mmap.mmap) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(BACKLOG)
        sock.setblocking(False)
        server = await loop.create_unix_server(Counting, sock=sock, backlog=BACKLOG)
        timer: asyncio.TimerHandle | None = None

        def publish() -> None:
            nonlocal timer
            COUNT.pack_into(shared, 0, lines)
            timer = loop.call_later(0.001, publish)

        publish()
        print("ready", flush=True)
        await stop.wait()
        server.close()
        if timer is not None:
            timer.cancel()
        COUNT.pack_into(shared, 0, lines)

    with open(count_file, "r+b") as f, mmap.mmap(f.fileno(), 8) as shared:
        uvloop.run(serve(shared))


class BareServer:
    """The reference server in its own process, on a socket in a fresh temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hookd-bare-", dir="/tmp"))
        self.path = str(self.dir / "bare.sock")
        count_file = self.dir / "count"
        count_file.write_bytes(bytes(8))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-bare", self.path, str(count_file)], stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline() != b"ready\n":
            self.close()
            raise RuntimeError("the bare server did not start")
        self._file = open(count_file, "r+b")  # noqa: SIM115
        self._shared = mmap.mmap(self._file.fileno(), 8)
        self.pid = self.proc.pid

    def lines(self) -> int:
        return COUNT.unpack_from(self._shared, 0)[0]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "_shared"):
            self._shared.close()
            self._file.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- measuring --------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_ticks() -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat: user nice system idle iowait irq softirq steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def machine_busy(ticks: list[int]) -> float:
    """CPU seconds all CPUs were busy (not idle, iowait or stolen) in a machine_ticks() delta."""
    return (sum(ticks) - ticks[3] - ticks[4] - ticks[7]) / CLK_TCK


def run_phase(path: str, payloads: list[list[bytes]], count: Callable[[], int], pids: list[int]) -> dict:
    """Run the clients against ``path``; return throughput, retries, failures and CPU use."""
    barrier = CTX.Barrier(len(payloads) + 1)
    out: mp.Queue = CTX.Queue()
    procs = [CTX.Process(target=client, args=(path, p, barrier, out)) for p in payloads]
    for p in procs:
        p.start()
    total = sum(map(len, payloads))
    barrier.wait()
    cpu0 = [cpu_seconds(pid) for pid in pids]
    m0 = machine_ticks()
    me0 = time.process_time()
    # Wait (blocking, no CPU) until every client has sent, then poll the count: polling all
    # along would take CPU from the servers on a small machine (``stored()`` opens SQLite).
    deadline = time.time() + PHASE_TIMEOUT
    reports = [out.get(timeout=PHASE_TIMEOUT) for _ in procs]
    expected = total - sum(r[3] for r in reports)  # events that failed are not waited for
    while True:
        n = count()
        if n >= expected:
            t_end = time.time()
            break
        if time.time() > deadline:
            raise TimeoutError(f"only {n} of {expected} events arrived in {PHASE_TIMEOUT:.0f} s")
        time.sleep(POLL)
    cpu1 = [cpu_seconds(pid) for pid in pids]
    me1 = time.process_time()
    m1 = machine_ticks()
    ticks = [b - a for a, b in zip(m0, m1, strict=True)]
    for p in procs:
        p.join(30)
    t0 = min(r[0] for r in reports)
    wall = t_end - t0
    return {
        "eps": expected / wall,
        "wall": wall,
        "sent_wall": max(r[1] for r in reports) - t0,
        "delivered": expected,
        "arrived": n,
        "retries": sum(r[2] for r in reports),
        "failed": sum(r[3] for r in reports),
        "client_cpu": sum(r[4] for r in reports),
        "cpu": [b - a for a, b in zip(cpu0, cpu1, strict=True)],
        "poller_cpu": me1 - me0,
        # shares of all CPUs' time over the phase: idle (+iowait), and stolen by the hypervisor
        "idle": (ticks[3] + ticks[4]) / max(1, sum(ticks)),
        "steal": ticks[7] / max(1, sum(ticks)),
        # CPU busy outside the measured processes (other jobs on a shared machine, kernel threads)
        "foreign": max(0.0, machine_busy(ticks) - sum(r[4] for r in reports) - (me1 - me0) - sum(cpu1) + sum(cpu0))
        / wall,
    }


def run_hookd(payloads: list[list[bytes]]) -> dict:
    with daemon() as dut:
        pids = dut.pids()  # [daemon, writer]
        r = run_phase(str(dut.socket), payloads, dut.stored, pids)
        r["rss"] = rss_mb(pids)
        time.sleep(0.2)
        r["final"] = dut.stored()  # nothing stored twice, nothing late
    return r


def run_bare(payloads: list[list[bytes]]) -> dict:
    srv = BareServer()
    try:
        r = run_phase(srv.path, payloads, srv.lines, [srv.pid])
        r["rss"] = rss_mb([srv.pid])
        time.sleep(0.2)
        r["final"] = srv.lines()
    finally:
        srv.close()
    return r


def make_payloads(clients: int, events: int) -> list[list[bytes]]:
    return [[claude_event(k, i) for i in range(events)] for k in range(clients)]


def _ratio_result(name: str, unit: str, vals: list[float], refs: list[float], reference: str, **kw: object) -> Result:
    ratios = [v / r for v, r in zip(vals, refs, strict=True) if r]  # runs with a zero reference have no ratio
    ratio, spread = median_spread(ratios) if ratios else (None, "no ratio: the reference was 0")
    value, _ = median_spread(vals)
    ref, _ = median_spread(refs)
    return Result(
        SECTION,
        name,
        value,
        unit,
        reference=reference,
        reference_value=ref,
        ratio=ratio,
        spread=f"ratio {spread}" if ratios else spread,
        runs=ratios,
        **kw,  # type: ignore[arg-type]
    )


def measure(runs: int = 5, quick: bool = False, clients: int = CLIENTS, events: int | None = None) -> list[Result]:
    if quick:
        runs = min(runs, 1)
    events = events or (QUICK_EVENTS if quick else EVENTS)
    payloads = make_payloads(clients, events)
    total = clients * events
    size = len(payloads[0][1])
    hs: list[dict] = []
    bs: list[dict] = []
    for r in range(runs):
        order = ("hookd", "bare") if r % 2 == 0 else ("bare", "hookd")
        for kind in order:
            (hs if kind == "hookd" else bs).append(run_hookd(payloads) if kind == "hookd" else run_bare(payloads))
        h, b = hs[-1], bs[-1]
        print(
            f"  run {r + 1}/{runs} ({order[0]} first): hookd {h['eps']:,.0f} ev/s, bare {b['eps']:,.0f} ev/s, "
            f"ratio {h['eps'] / b['eps']:.2f}; hookd CPU daemon {h['cpu'][0]:.2f} s writer {h['cpu'][1]:.2f} s "
            f"in {h['wall']:.2f} s; bare CPU {b['cpu'][0]:.2f} s in {b['wall']:.2f} s; "
            f"retries {h['retries']}/{b['retries']}, failed {h['failed']}/{b['failed']}; "
            f"machine idle {h['idle']:.0%}/{b['idle']:.0%}, steal {h['steal']:.0%}/{b['steal']:.0%}, "
            f"CPU outside the measured processes {h['foreign']:.2f}/{b['foreign']:.2f}",
            file=sys.stderr,
            flush=True,
        )
    setup = f"{clients} clients x {events:,} events ({size} B), connect/send/close each"
    us = 1e6
    results = [
        _ratio_result(
            "hookd events/s, connection per event",
            "ev/s",
            [h["eps"] for h in hs],
            [b["eps"] for b in bs],
            "bare uvloop accept-read-close server",
            target=f">= {TARGET}x",
            note=f"{setup}; first connect to last event stored; CPU busy outside the measured processes "
            f"(other jobs, kernel threads; median): {median_spread([h['foreign'] for h in hs])[0]:.2f} cores "
            "in hookd's phases, "
            f"{median_spread([b['foreign'] for b in bs])[0]:.2f} in the bare server's",
        ),
        _ratio_result(
            "hookd daemon process CPU per event",
            "us/ev",
            [h["cpu"][0] / h["delivered"] * us for h in hs],
            [b["cpu"][0] / b["delivered"] * us for b in bs],
            "bare server process CPU per event",
            note="busy (CPU s / wall s): hookd daemon {:.2f}, bare server {:.2f}".format(
                median_spread([h["cpu"][0] / h["wall"] for h in hs])[0],
                median_spread([b["cpu"][0] / b["wall"] for b in bs])[0],
            ),
        ),
        _ratio_result(
            "hookd writer process CPU per event",
            "us/ev",
            [h["cpu"][1] / h["delivered"] * us for h in hs],
            [h["cpu"][0] / h["delivered"] * us for h in hs],
            "hookd daemon process CPU per event",
            note="busy (CPU s / wall s): writer {:.2f}".format(median_spread([h["cpu"][1] / h["wall"] for h in hs])[0]),
        ),
        _ratio_result(
            "client CPU per event, against hookd",
            "us/ev",
            [h["client_cpu"] / h["delivered"] * us for h in hs],
            [b["client_cpu"] / b["delivered"] * us for b in bs],
            "client CPU per event, against the bare server",
            note=f"all {clients} clients together; clients and servers share this machine's {os.cpu_count()} CPUs",
        ),
        _ratio_result(
            "connect retries (EAGAIN, listen queue full) per 1000 events, hookd",
            "/1000 ev",
            [h["retries"] / total * 1000 for h in hs],
            [b["retries"] / total * 1000 for b in bs],
            "same, bare server",
            note=f"retry after {RETRY_SLEEP * 1e6:.0f} us sleep; failed (not delivered after {GIVE_UP:.0f} s): "
            f"hookd {sum(h['failed'] for h in hs)}, bare {sum(b['failed'] for b in bs)} of {total * runs} each",
        ),
        _ratio_result(
            "RSS after the load, hookd daemon + writer",
            "MB",
            [h["rss"] for h in hs],
            [b["rss"] for b in bs],
            "bare server RSS",
        ),
    ]
    lost_h = [h["delivered"] - h["final"] for h in hs]
    lost_b = [b["delivered"] - b["final"] for b in bs]
    if any(lost_h) or any(lost_b):
        results[0].note += f"; MISMATCH delivered-vs-stored per run: hookd {lost_h}, bare {lost_b}"
    if results[0].ratio is not None:
        results[0].met = results[0].ratio >= TARGET
    return results


# -- profile ----------------------------------------------------------------------------------
def profile(seconds: float, clients: int = CLIENTS, native: bool = False, top: int = 20) -> None:
    """Sample hookd's daemon process with py-spy while the clients load it; print the top costs."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return
    rate = 250
    events = int(20_000 * (seconds + 3) / clients)  # comfortably longer than the sampling
    payloads = make_payloads(clients, events)
    out = Path(tempfile.mkdtemp(prefix="hookd-prof-", dir="/tmp")) / "daemon.txt"
    with daemon() as dut:
        pid = dut.pids()[0]
        cmd = [spy, "record", "--format", "raw", "-o", str(out), "-p", str(pid), "-d", str(int(seconds))]
        cmd += ["-r", str(rate)] + (["--native"] if native else [])
        spy_out: dict = {}

        def run_spy() -> None:  # once the load is on; CPU is read over the sampling window
            time.sleep(0.5)
            cpu0 = cpu_seconds(pid)
            p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=seconds + 60)
            spy_out.update(cpu=cpu_seconds(pid) - cpu0, rc=p.returncode, err=p.stderr)

        thread = threading.Thread(target=run_spy)
        thread.start()
        r = run_phase(str(dut.socket), payloads, dut.stored, dut.pids())
        thread.join()
    print(f"\nprofile of the hookd daemon process: py-spy {rate} Hz for {seconds:g} s{' --native' if native else ''}")
    print(f"  load: {r['eps']:,.0f} ev/s under py-spy, {r['retries']} connect retries; {out}")
    if r["wall"] < seconds + 0.5:
        print(f"  (the load ended before the sampling did: {r['wall']:.1f} s)")
    if spy_out["rc"]:
        print(f"  py-spy failed: {spy_out['err'].decode(errors='replace').strip()[-500:]}")
        return
    summarise(out, top, rate=rate, cpu=spy_out["cpu"])


def summarise(path: Path, top: int = 20, rate: int = 0, cpu: float = 0.0) -> None:
    """Self and inclusive shares of the main thread's busy samples (py-spy --format raw)."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = other = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        if "Thread._bootstrap" in stack:  # aiosqlite's checkpoint thread, the spool-scan thread
            other += count
            continue
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        self_c[frames[-1]] += count
        for f in set(frames):
            incl_c[f] += count
    if not total:
        print("no samples")
        return
    by_file: Counter[str] = Counter()
    for f, n in self_c.items():
        by_file[f[f.rindex("(") + 1 : -1]] += n
    window = f" over the {total / rate:.1f} s window" if rate else ""
    print(f"  main thread: {total} samples; daemon process {cpu:.2f} CPU s{window} (/proc); other threads {other}")
    print("  (Runner.run's self time is uvloop's C code and the kernel: accept, read, close, epoll)")
    for title, c in (("self time by file", by_file), ("self", self_c), ("inclusive", incl_c)):
        print(f"  top {top} by {title}{'' if 'file' in title else ' time'} (share of the main thread's samples):")
        for f, n in c.most_common(top):
            print(f"    {100 * n / total:5.1f}%  {f}")


def _frame(f: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)': aggregate over lines of a function."""
    name, _, loc = f.partition(" (")
    file = loc.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({file.rsplit('/', 2)[-1] if file else '?'})"


# -- table ------------------------------------------------------------------------------------
def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) >= 1 else f"{v:.3f}"


def print_table(results: list[Result]) -> None:
    head = ("section", "figure", "value", "unit", "reference", "ref value", "ratio", "target", "met", "spread")
    rows = [
        (
            r.section,
            r.name,
            fmt(r.value),
            r.unit,
            r.reference,
            fmt(r.reference_value),
            fmt(r.ratio),
            r.target or "-",
            "-" if r.met is None else ("yes" if r.met else "NO"),
            r.spread,
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for row in (head, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
    for r in results:
        if r.note:
            print(f"  * {r.name}: {r.note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    ap.add_argument("--clients", type=int, default=CLIENTS)
    ap.add_argument("--events", type=int, default=None, help=f"events per client (default {EVENTS:,})")
    ap.add_argument("--profile", type=float, default=0, metavar="SECONDS", help="also profile the daemon with py-spy")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames of uvloop, msgspec)")
    ap.add_argument("--serve-bare", nargs=2, metavar=("SOCKET", "COUNT_FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        bare_server(*args.serve_bare)
        return
    results = measure(args.runs, args.quick, clients=args.clients, events=args.events)
    print_table(results)
    if args.profile:
        profile(args.profile, clients=args.clients, native=args.native)


if __name__ == "__main__":
    main()
