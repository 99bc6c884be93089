"""The C reference for socket-to-disk ingest: rsyslog, against hookd, same clients, same run.

    .venv/bin/python bench/peer_rsyslog.py [--runs 5] [--quick]

rsyslog (the Debian package) receives the same newline-delimited JSON events on a Unix stream
socket (imptcp with ``path=``) and writes each one, as received, to a file (omfile with a
``%rawmsg%\\n`` template); it runs in the foreground (``rsyslogd -n -f CONF -i PIDFILE``) with its
own work directory and no system configuration. hookd ingests the same events into SQLite and
its JSONL mirror (its defaults). 4 client processes each stream 100,000 realistic ~300 B Claude
Code payloads over one long connection, as bench/ingest.py does; events/s run from the first
byte sent to the last line in rsyslog's output file (polled by size, then the lines counted) or
the last event stored by hookd (``wait_stored``). The two alternate within each run, the order
flipping from run to run. There is no target: this is context for hookd's sustained figure.

When rsyslogd is missing it is installed with apt-get if we are root; otherwise the figure is
skipped (a Result whose note says so).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conn_per_event import cpu_seconds, machine_busy, machine_ticks, print_table  # noqa: E402

from common import Result, claude_event, daemon, median_spread, rss_mb  # noqa: E402

SECTION = "peer_rsyslog"
CLIENTS = 4
EVENTS = 100_000  # per client
QUICK_EVENTS = 25_000
POLL = 0.002
PHASE_TIMEOUT = 300.0
CTX = mp.get_context("fork")  # the (large) client payloads reach the clients by fork

# imptcp on a Unix socket -> omfile, the message exactly as received plus a newline. The only
# tuning: a 64 KiB write buffer for the file (the default is 4 KiB); the file is still flushed
# at the end of every batch rsyslog dequeues, as hookd writes its mirror once per batch.
RSYSLOG_CONF = """\
global(workDirectory="{work}")
module(load="imptcp")
template(name="rawline" type="string" string="%rawmsg%\\n")
ruleset(name="bench") {{
    action(type="omfile" file="{out}" template="rawline" ioBufferSize="64k")
}}
input(type="imptcp" path="{sock}" unlink="on" ruleset="bench")
"""


# -- rsyslog ----------------------------------------------------------------------------------
def find_rsyslogd() -> str | None:
    return shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None
    )


def ensure_rsyslogd() -> tuple[str | None, str]:
    """The rsyslogd binary, installing the Debian package when missing and we are root."""
    path = find_rsyslogd()
    if path:
        return path, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "rsyslogd is not installed (apt-get install rsyslog, as root, to run this part)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("rsyslogd missing: apt-get install -y rsyslog ...", file=sys.stderr, flush=True)
    install = ["apt-get", "install", "-y", "-q", "rsyslog"]
    r = subprocess.run(install, env=env, capture_output=True, text=True)
    if r.returncode != 0:  # stale package lists: update them once and try again
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        r = subprocess.run(install, env=env, capture_output=True, text=True)
    path = find_rsyslogd()
    if path is None:
        return None, f"rsyslogd could not be installed with apt-get: {r.stderr.strip()[-300:]}"
    return path, ""


class Rsyslog:
    """rsyslogd in the foreground on a fresh directory: socket, config, work dir, output file."""

    def __init__(self, binary: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hookd-rsyslog-", dir="/tmp"))
        self.socket = self.dir / "rsyslog.sock"
        self.out = self.dir / "out.jsonl"
        (self.dir / "work").mkdir()
        conf = self.dir / "rsyslog.conf"
        conf.write_text(RSYSLOG_CONF.format(work=self.dir / "work", out=self.out, sock=self.socket))
        self.log = open(self.dir / "rsyslogd.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [binary, "-n", "-f", str(conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        deadline = time.time() + 30
        while not self._accepts():
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError(f"rsyslogd did not start: {self._log_tail()}")
            time.sleep(0.02)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.socket))
            except OSError:
                return False
        return True

    def _log_tail(self) -> str:
        try:
            return (self.dir / "rsyslogd.log").read_text(errors="replace").strip()[-500:]
        except OSError:
            return ""

    def written(self) -> int:
        try:
            return self.out.stat().st_size
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- clients and phases ---------------------------------------------------------------------
def client(path: str, data: bytes, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:
    """One long connection: all of this client's events in one stream (as bench/ingest.py)."""
    barrier.wait()
    cpu0 = time.process_time()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        t0 = time.time()
        s.sendall(data)
    out.put((t0, time.process_time() - cpu0))


def run_phase(path: str, streams: list[bytes], wait_done: object, pids: list[int]) -> dict:
    """Stream to ``path`` and call ``wait_done()`` once the clients have sent everything."""
    barrier = CTX.Barrier(len(streams) + 1)
    out: mp.Queue = CTX.Queue()
    procs = [CTX.Process(target=client, args=(path, d, barrier, out)) for d in streams]
    for p in procs:
        p.start()
    barrier.wait()
    cpu0 = [cpu_seconds(pid) for pid in pids]
    m0 = machine_ticks()
    me0 = time.process_time()
    # Block (no CPU) until every client has handed its stream to the kernel, then poll.
    reports = [out.get(timeout=PHASE_TIMEOUT) for _ in procs]
    for p in procs:
        p.join(PHASE_TIMEOUT)
    t_end = wait_done()  # type: ignore[operator]
    cpus = [cpu_seconds(pid) - c0 for pid, c0 in zip(pids, cpu0, strict=True)]
    ticks = [b - a for a, b in zip(m0, machine_ticks(), strict=True)]
    wall = t_end - min(r[0] for r in reports)
    ours = sum(cpus) + sum(r[1] for r in reports) + time.process_time() - me0
    return {
        "wall": wall,
        "cpu": sum(cpus),
        "cpus": cpus,
        "busy": machine_busy(ticks) / wall,
        "foreign": max(0.0, machine_busy(ticks) - ours) / wall,  # other jobs, kernel threads (writeback)
        "rss": rss_mb(pids),
    }


def run_hookd(streams: list[bytes], total: int) -> dict:
    with daemon() as dut:
        r = run_phase(str(dut.socket), streams, lambda: dut.wait_stored(total, timeout=PHASE_TIMEOUT), dut.pids())
        r["eps"] = total / r["wall"]
        r["stored"] = dut.stored()
    return r


def run_rsyslog(binary: str, streams: list[bytes], total: int, expected: list[bytes]) -> dict:
    size = sum(map(len, streams))
    rs = Rsyslog(binary)
    try:

        def wait_done() -> float:
            deadline = time.time() + PHASE_TIMEOUT
            while rs.written() < size:
                if time.time() > deadline or rs.proc.poll() is not None:
                    raise TimeoutError(f"rsyslog wrote {rs.written()} of {size} bytes: {rs._log_tail()}")
                time.sleep(POLL)
            return time.time()

        r = run_phase(str(rs.socket), streams, wait_done, [rs.proc.pid])
        r["eps"] = total / r["wall"]
        with open(rs.out, "rb") as f:
            data = f.read()
        r["stored"] = data.count(b"\n")
        r["intact"] = sorted(data.splitlines()) == expected  # every event exactly once, byte for byte
    finally:
        rs.close()
    return r


def skipped(note: str) -> list[Result]:
    print(f"peer_rsyslog: skipped: {note}", file=sys.stderr)
    return [
        Result(
            SECTION,
            "hookd sustained ingest vs rsyslog",
            float("nan"),
            "ev/s",
            reference="rsyslog imptcp (Unix socket) -> omfile",
            note=f"skipped: {note}",
        )
    ]


def measure(runs: int = 5, quick: bool = False, clients: int = CLIENTS, events: int | None = None) -> list[Result]:
    binary, why = ensure_rsyslogd()
    if binary is None:
        return skipped(why)
    if quick:
        runs = min(runs, 1)
    events = events or (QUICK_EVENTS if quick else EVENTS)
    streams = [b"".join(claude_event(k, i) for i in range(events)) for k in range(clients)]
    total = clients * events
    expected = sorted(line for stream in streams for line in stream.splitlines())
    hs: list[dict] = []
    rs: list[dict] = []
    for r in range(runs):
        order = ("hookd", "rsyslog") if r % 2 == 0 else ("rsyslog", "hookd")
        for kind in order:
            if kind == "hookd":
                hs.append(run_hookd(streams, total))
            else:
                rs.append(run_rsyslog(binary, streams, total, expected))
        h, s = hs[-1], rs[-1]
        print(
            f"  run {r + 1}/{runs} ({order[0]} first): hookd {h['eps']:,.0f} ev/s "
            f"(CPU daemon {h['cpus'][0]:.2f} s + writer {h['cpus'][1]:.2f} s in {h['wall']:.2f} s), "
            f"rsyslog {s['eps']:,.0f} ev/s "
            f"(CPU {s['cpu']:.2f} s in {s['wall']:.2f} s), ratio {h['eps'] / s['eps']:.2f}; "
            f"machine busy {h['busy']:.2f}/{s['busy']:.2f} of {os.cpu_count()} CPUs, "
            f"CPU outside the measured processes {h['foreign']:.2f}/{s['foreign']:.2f}",
            file=sys.stderr,
            flush=True,
        )
    setup = f"{clients} clients x {events:,} events ({len(claude_event(0, 1))} B) over long connections"
    ratios = [h["eps"] / s["eps"] for h, s in zip(hs, rs, strict=True)]
    ratio, spread = median_spread(ratios)
    checks = []
    if any(h["stored"] != total for h in hs):
        checks.append(f"hookd stored {[h['stored'] for h in hs]} of {total}")
    if any(s["stored"] != total or not s["intact"] for s in rs):
        checks.append(f"rsyslog wrote {[s['stored'] for s in rs]} lines of {total}, intact {[s['intact'] for s in rs]}")
    us = 1e6
    cpu_h = [h["cpu"] / total * us for h in hs]
    cpu_s = [s["cpu"] / total * us for s in rs]
    cpu_r = [a / b for a, b in zip(cpu_h, cpu_s, strict=True)]
    rss_r = [h["rss"] / s["rss"] for h, s in zip(hs, rs, strict=True)]
    return [
        Result(
            SECTION,
            "hookd sustained ingest (SQLite + JSONL mirror)",
            median_spread([h["eps"] for h in hs])[0],
            "ev/s",
            reference="rsyslog imptcp (Unix socket) -> omfile, %rawmsg%",
            reference_value=median_spread([s["eps"] for s in rs])[0],
            ratio=ratio,
            target="none (context)",
            spread=f"ratio {spread}",
            note="; ".join([f"{setup}; first byte sent to last event stored / last line written", *checks]),
            runs=ratios,
        ),
        Result(
            SECTION,
            "hookd CPU per event (daemon + writer processes)",
            median_spread(cpu_h)[0],
            "us/ev",
            reference="rsyslogd CPU per event",
            reference_value=median_spread(cpu_s)[0],
            ratio=median_spread(cpu_r)[0],
            spread=f"ratio {median_spread(cpu_r)[1]}",
            note="utime+stime from /proc/PID/stat over the measured interval; hookd daemon {:.2f} us/ev "
            "(busy {:.2f} of a core), writer {:.2f} us/ev (busy {:.2f}); rsyslogd busy {:.2f} cores".format(
                median_spread([h["cpus"][0] / total * us for h in hs])[0],
                median_spread([h["cpus"][0] / h["wall"] for h in hs])[0],
                median_spread([h["cpus"][1] / total * us for h in hs])[0],
                median_spread([h["cpus"][1] / h["wall"] for h in hs])[0],
                median_spread([s["cpu"] / s["wall"] for s in rs])[0],
            ),
            runs=cpu_r,
        ),
        Result(
            SECTION,
            "RSS after the load, hookd daemon + writer",
            median_spread([h["rss"] for h in hs])[0],
            "MB",
            reference="rsyslogd RSS",
            reference_value=median_spread([s["rss"] for s in rs])[0],
            ratio=median_spread(rss_r)[0],
            spread=f"ratio {median_spread(rss_r)[1]}",
            runs=rss_r,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    ap.add_argument("--clients", type=int, default=CLIENTS)
    ap.add_argument("--events", type=int, default=None, help=f"events per client (default {EVENTS:,})")
    args = ap.parse_args()
    print_table(measure(args.runs, args.quick, clients=args.clients, events=args.events))


if __name__ == "__main__":
    main()
