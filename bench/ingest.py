"""Sustained ingest: hookd against the raw SQLite limit, measured in the same run.

    .venv/bin/python bench/ingest.py [--clients 4] [--events 100000] [--runs 3]

hookd: N client processes stream realistic Claude Code hook payloads over long connections;
events/s from the first byte sent to the last event committed (polled from SQLite).
Raw: plain stdlib sqlite3 ``executemany`` of the same rows into the same schema, 1000 rows per
transaction, WAL, synchronous=NORMAL: what SQLite itself can take on this machine.
Each pair is run back to back; the ratio's median and spread are reported.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Result, claude_event, median_spread  # noqa: E402
from hookd.framing import Framer, Peer  # noqa: E402
from hookd.writer import schema as store  # noqa: E402

event = claude_event


def client(path: str, k: int, n: int, started: mp.Queue) -> None:
    data = b"".join(event(k, i) for i in range(n))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        started.put(time.time())
        s.sendall(data)


def run_hookd(clients: int, n: int) -> float:
    home = Path(tempfile.mkdtemp(prefix="hookd-bench-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
    env["HOOKD_HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "hookd", "run", "--log-level", "warning"], env=env, cwd=ROOT)
    try:
        sock = home / "hookd.sock"
        while not sock.exists():
            time.sleep(0.02)
        time.sleep(0.3)
        started: mp.Queue = mp.Queue()
        procs = [mp.Process(target=client, args=(str(sock), k, n, started)) for k in range(clients)]
        for p in procs:
            p.start()
        t0 = min(started.get() for _ in procs)
        db = sqlite3.connect(home / "events.db")
        total = clients * n
        # event_types holds per-type counts: a cheap poll (count(*) would scan the table)
        while (db.execute("SELECT sum(count) FROM event_types").fetchone()[0] or 0) < total:
            time.sleep(0.005)
        t1 = time.time()
        db.close()
        for p in procs:
            p.join()
        return total / (t1 - t0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        shutil.rmtree(home, ignore_errors=True)


def run_raw(clients: int, n: int) -> float:
    d = Path(tempfile.mkdtemp(prefix="hookd-raw-", dir="/tmp"))
    try:
        db = store.connect(d / "raw.db")
        store.migrate(db)
        framer = Framer()
        now = time.time()
        rows = []
        for i in range(n):  # interleaved like concurrent clients
            for k in range(clients):
                result = framer.frame(event(k, i).rstrip(b"\n"), now, Peer(1, 1000))
                assert result is not None
                rows.append(result[0])
        t0 = time.time()
        for j in range(0, len(rows), 1000):
            db.execute("BEGIN")
            db.executemany(store.INSERT_EVENT, rows[j : j + 1000])
            db.execute("COMMIT")
        t1 = time.time()
        db.close()
        return len(rows) / (t1 - t0)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def measure(runs: int = 5, quick: bool = False, clients: int = 4, events: int = 100_000) -> list[Result]:
    n = 20_000 if quick else events
    ratios, hs, rs = [], [], []
    for _ in range(2 if quick else runs):
        h = run_hookd(clients, n)
        raw = run_raw(clients, n)
        hs.append(h)
        rs.append(raw)
        ratios.append(h / raw)
    ratio, spread = median_spread(ratios)
    return [
        Result(
            "ingest", f"sustained ingest, {clients} clients x {n:,} events", median_spread(hs)[0], "events/s",
            "stdlib sqlite3 executemany, same rows and schema", median_spread(rs)[0], ratio, "≥ 0.9x",
            ratio >= 0.9, f"ratio {spread}", runs=ratios,
        )
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--events", type=int, default=100_000, help="events per client")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"payload {len(event(0, 1))} B, {args.clients} clients x {args.events} events, {args.runs} runs")
    ratios, hs, rs = [], [], []
    for r in range(args.runs):
        h = run_hookd(args.clients, args.events)
        raw = run_raw(args.clients, args.events)
        hs.append(h)
        rs.append(raw)
        ratios.append(h / raw)
        print(f"run {r + 1}: hookd {h:,.0f} ev/s, raw executemany {raw:,.0f} rows/s, ratio {h / raw:.2f}")
    print(
        f"median: hookd {statistics.median(hs):,.0f} ev/s, raw {statistics.median(rs):,.0f} rows/s, "
        f"ratio {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
