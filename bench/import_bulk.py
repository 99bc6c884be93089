"""Bulk import: `hookd import` of a JSONL file against `sqlite-utils insert --nl` of the same file.

    .venv/bin/python bench/import_bulk.py [--events 1000000] [--runs 3] [--quick]

Both start from an empty database each run. hookd validates every line, derives idempotency
ids, keeps the two indexes and the id index, writes the mirror; sqlite-utils creates a table
with a column per key and inserts. The figure is hookd's lines/s over sqlite-utils' lines/s.

A third measurement in the same run is the ceiling: the rows hookd stored (with their import
ids), inserted again by apsw's executemany into an empty database of the same schema, 2000 rows
a transaction, WAL, synchronous=NORMAL, and nothing else (no reading, framing, mirror or pipe).
Its ratio to sqlite-utils says how far any importer into this schema could go.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Result, claude_event, clean_env, median_spread, small_event


def make_file(path: Path, n: int) -> None:
    with open(path, "wb") as f:
        for i in range(n):
            f.write(claude_event(i % 8, i) if i % 4 else small_event(i % 8, i))


def sqlite_utils() -> str | None:
    exe = Path(sys.executable).parent / "sqlite-utils"
    return str(exe) if exe.exists() else shutil.which("sqlite-utils")


def time_hookd(src: Path, work: Path) -> float:
    home = work / "hookd"
    home.mkdir()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hookd", "import", str(src)], env=clean_env(home), cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - t


def time_ceiling(stored: Path, work: Path) -> float:
    """apsw executemany of hookd's stored rows into a fresh database of the same schema."""
    import apsw

    from hookd.writer import schema as store

    src = sqlite3.connect(stored)
    rows = src.execute(f"SELECT {', '.join(store.BASE_COLUMNS)} FROM events ORDER BY eid").fetchall()
    src.close()
    path = work / "ceiling.db"
    db = store.connect(path)
    store.migrate(db)
    db.close()
    c = apsw.Connection(os.fspath(path))
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("PRAGMA synchronous = NORMAL")
    t = time.perf_counter()
    for k in range(0, len(rows), 2000):
        c.execute("BEGIN IMMEDIATE")
        c.executemany(store.INSERT_EVENT, rows[k : k + 2000])
        c.execute("COMMIT")
    dt = time.perf_counter() - t
    c.close()
    return dt


def time_sqlite_utils(exe: str, src: Path, work: Path) -> float:
    t = time.perf_counter()
    subprocess.run([exe, "insert", str(work / "su.db"), "events", str(src), "--nl"], check=True)
    return time.perf_counter() - t


def measure(runs: int = 3, quick: bool = False, events: int = 1_000_000) -> list[Result]:
    exe = sqlite_utils()
    if exe is None:
        skipped = "skipped: sqlite-utils is missing (./dev bench installs it)"
        return [Result("import", "hookd import vs sqlite-utils", float("nan"), "", note=skipped)]
    n = 50_000 if quick else events
    tmp = Path(tempfile.mkdtemp(prefix="hookd-import-bench-", dir="/tmp"))
    try:
        src = tmp / "events.jsonl"
        make_file(src, n)
        ratios, ceil_ratios, of_ceiling, hs, ss, cs = [], [], [], [], [], []
        for r in range(1 if quick else runs):
            work = tmp / f"run{r}"
            work.mkdir()
            h = time_hookd(src, work)
            c = time_ceiling(work / "hookd" / "events.db", work)
            s = time_sqlite_utils(exe, src, work)
            shutil.rmtree(work)
            hs.append(n / h)
            ss.append(n / s)
            cs.append(n / c)
            ratios.append(s / h)
            ceil_ratios.append(s / c)
            of_ceiling.append(c / h)
        ratio, spread = median_spread(ratios)
        cratio, cspread = median_spread(ceil_ratios)
        oratio, ospread = median_spread(of_ceiling)
        hv, _ = median_spread(hs)
        sv, _ = median_spread(ss)
        cv, _ = median_spread(cs)
        return [
            Result(
                "import", f"hookd import, {n:,} events", hv, "lines/s", "sqlite-utils insert --nl", sv, ratio,
                "≥ 5x", ratio >= 5, f"ratio {spread}", f"file {src.stat().st_size / 1e6:.0f} MB",
            ),
            Result(
                "import", "ceiling: the same rows, apsw executemany alone", cv, "rows/s", "sqlite-utils insert --nl",
                sv, cratio, "", None, f"ratio {cspread}",
                "hookd's stored rows with their import ids into an empty database of the same schema, 2000 per "
                "transaction, nothing else: what any importer into this schema could reach",
            ),
            Result(
                "import", "hookd import against the ceiling", hv, "lines/s", "ceiling (row above)", cv, oratio,
                "", None, f"ratio {ospread}",
            ),
        ]  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    for r in measure(args.runs, args.quick, args.events):
        target = f"target {r.target}, {'met' if r.met else 'NOT met'}; " if r.target else ""
        print(f"{r.name}: {r.value:,.0f} {r.unit}; {r.reference}: {r.reference_value or 0:,.0f}")
        print(f"  ratio {r.ratio or 0:.2f} ({target}{r.spread}) {r.note}")


if __name__ == "__main__":
    main()
