"""Forwarding to PostgreSQL (issue 17): throughput while ingest goes on, lag at hook rates, and
ingest with forwarding on against off.

    .venv/bin/python bench/forward.py [--runs 3] [--quick]

A local PostgreSQL (tests/pg_server.py: initdb in a temporary directory, Unix socket only,
fsync off as in the tests, niced to stand in for a server on another machine) receives from a
daemon with ``forward.url`` set.

- throughput: 4 clients stream 4 x 50,000 Claude Code payloads; forwarded events/s from the
  first byte sent to the last event committed in PostgreSQL, next to psycopg's own COPY of the
  same rows into the same table (the reference: PostgreSQL's and psycopg's limit here).
- lag: 200 hooks/s, one connection each (as hookd-emit sends them), for 10 s; per event, the
  time from hookd receiving it to the first poll (every 20 ms) that finds PostgreSQL's cursor at
  or past it.
- ingest: the sustained-ingest figure of bench/ingest.py (4 clients x 50,000, first byte to
  last local commit) with forwarding on, against off, alternated in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from ingest import client as stream  # noqa: E402

from common import ROOT, Result, claude_event, daemon, median_spread, percentile  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from pg_server import PgServer  # noqa: E402

from hookd.forwarder import pg_schema  # noqa: E402

NICE = 10
CURSOR = "SELECT last_eid FROM hookd_forward_cursor WHERE host = 'bench'"


def home_forwarding(url: str | None) -> Path:
    home = Path(tempfile.mkdtemp(prefix="hookd-bench-", dir="/tmp"))
    if url:
        (home / "config.toml").write_text(f'[forward]\nurl = "{url}"\nhost = "bench"\n')
    return home


def pg_forwarded(server: PgServer, db: str) -> int:
    try:
        rows = server.query("SELECT events FROM hookd_forward_cursor WHERE host = 'bench'", db=db)
    except Exception:  # noqa: BLE001 - the table is not there yet
        return 0
    return rows[0][0] if rows else 0


def ingest_run(server: PgServer | None, db: str | None, clients: int, n: int) -> tuple[float, float | None]:
    """(ingest events/s to the last local commit, forwarded events/s to the last PostgreSQL
    commit or None without forwarding)."""
    url = server.fresh_database(db) if server and db else None
    home = home_forwarding(url)
    try:
        with daemon(home=home) as d:
            started: mp.Queue = mp.Queue()
            procs = [mp.Process(target=stream, args=(str(d.socket), k, n, started)) for k in range(clients)]
            for p in procs:
                p.start()
            t0 = min(started.get() for _ in procs)
            total = clients * n
            t_local = d.wait_stored(total)
            for p in procs:
                p.join()
            if server is None or db is None:
                return total / (t_local - t0), None
            while pg_forwarded(server, db) < total:
                time.sleep(0.01)
            return total / (t_local - t0), total / (time.time() - t0)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def copy_reference(server: PgServer, db: str, clients: int, n: int) -> float:
    """psycopg's COPY of the same rows into hookd's table, batches of 10,000: the limit."""
    from hookd.framing import Framer, Peer

    server.fresh_database(db)
    framer = Framer()
    now = time.time()
    rows = []
    for i in range(n):
        for k in range(clients):
            result = framer.frame(claude_event(k, i).rstrip(b"\n"), now, Peer(1, 1000))
            assert result is not None
            rows.append(("bench", *result[0]))
    with server.connect(db) as conn:
        for statement in pg_schema.statements(pg_schema.MIGRATIONS[0][2]):
            conn.execute(statement)
        cols = ", ".join(pg_schema.COLUMNS)
        t0 = time.time()
        for j in range(0, len(rows), 10_000):
            with conn.transaction(), conn.cursor() as cur, cur.copy(f"COPY events ({cols}) FROM STDIN") as copy:
                for r in rows[j : j + 10_000]:
                    copy.write_row(r)
        return len(rows) / (time.time() - t0)


def lag_run(server: PgServer, db: str, rate: int, seconds: float) -> list[float]:
    """Per event: seconds from hookd receiving it to PostgreSQL's cursor passing it."""
    home = home_forwarding(server.fresh_database(db))
    polls: list[tuple[float, int]] = []
    try:
        with daemon(home=home) as d:
            stop = threading.Event()

            def poll() -> None:
                with server.connect(db) as conn:
                    while not stop.is_set():
                        try:
                            row = conn.execute(CURSOR).fetchone()
                        except Exception:  # noqa: BLE001 - not created yet
                            row = None
                        polls.append((time.time(), row[0] if row else 0))
                        time.sleep(0.02)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            t0 = time.monotonic()
            for i in range(int(rate * seconds)):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(d.socket))
                    s.sendall(claude_event(0, i))
                time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
            total = int(rate * seconds)
            d.wait_stored(total)
            while pg_forwarded(server, db) < total:
                time.sleep(0.02)
            time.sleep(0.05)
            stop.set()
            poller.join()
            local = sqlite3.connect(f"file:{d.db}?mode=ro", uri=True)
            events = local.execute("SELECT eid, recv_ts FROM events ORDER BY eid").fetchall()
            local.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    lags, j = [], 0
    for eid, recv_ts in events:
        while j < len(polls) and polls[j][1] < eid:
            j += 1
        lags.append(polls[j][0] - recv_ts if j < len(polls) else float("inf"))
    return lags


def measure(runs: int = 3, quick: bool = False, clients: int = 4, events: int = 50_000) -> list[Result]:
    n = 10_000 if quick else events
    runs = 1 if quick else runs
    # PostgreSQL niced: it stands in for a server on another machine, whose CPU is not hookd's
    # (a local one at full load shares these two cores with the daemon and writer).
    server = PgServer(nice=NICE).init()
    try:
        fwd, ref, on, off = [], [], [], []
        for r in range(runs):
            ingest_on, forwarded = ingest_run(server, f"bench_{r}", clients, n)
            ingest_off, _ = ingest_run(None, None, clients, n)
            fwd.append(forwarded or 0.0)
            ref.append(copy_reference(server, f"ref_{r}", clients, n))
            on.append(ingest_on)
            off.append(ingest_off)
            print(
                f"run {r + 1}: forwarded {forwarded:,.0f} ev/s (COPY alone {ref[-1]:,.0f} rows/s); ingest "
                f"{ingest_on:,.0f} ev/s forwarding on, {ingest_off:,.0f} off",
                file=sys.stderr,
            )
        lags = lag_run(server, "bench_lag", 200, 3 if quick else 10)
    finally:
        server.close()
    f_ratio, f_spread = median_spread([a / b for a, b in zip(fwd, ref, strict=True)])
    i_ratio, i_spread = median_spread([a / b for a, b in zip(on, off, strict=True)])
    p50, p99, worst = percentile(lags, 0.5), percentile(lags, 0.99), max(lags)
    return [
        Result(
            "forward", f"forwarding to PostgreSQL while {clients} clients x {n:,} events are ingested",
            median_spread(fwd)[0], "events/s", "psycopg COPY alone, same rows and table", median_spread(ref)[0],
            f_ratio, "≥ 20,000 events/s", median_spread(fwd)[0] >= 20_000, f"ratio {f_spread}",
        ),
        Result(
            "forward", "lag at 200 hooks/s (one connection each), received to committed in PostgreSQL",
            p50, "s (p50)", "", None, None, "< 2 s", worst < 2.0, "", f"p99 {p99:.3f} s, max {worst:.3f} s",
        ),
        Result(
            "forward", f"ingest with forwarding on, {clients} clients x {n:,} events", median_spread(on)[0],
            "events/s", "the same with forwarding off", median_spread(off)[0], i_ratio, "≈ 1x", None,
            f"ratio {i_spread}",
        ),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from run import table

    print(table(measure(runs=args.runs, quick=args.quick)))


if __name__ == "__main__":
    main()
