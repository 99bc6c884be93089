"""Bulk import: `hookd import` of a JSONL file against `sqlite-utils insert --nl` of the same file.

    .venv/bin/python bench/import_bulk.py [--events 1000000] [--runs 3] [--quick]

Both start from an empty database each run. hookd validates every line, derives idempotency
ids, keeps the two indexes and the id index, writes the mirror; sqlite-utils creates a table
with a column per key and inserts. The figure is hookd's lines/s over sqlite-utils' lines/s.
"""

from __future__ import annotations

import argparse
import shutil
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
        ratios, hs, ss = [], [], []
        for r in range(1 if quick else runs):
            work = tmp / f"run{r}"
            work.mkdir()
            h = time_hookd(src, work)
            s = time_sqlite_utils(exe, src, work)
            shutil.rmtree(work)
            hs.append(n / h)
            ss.append(n / s)
            ratios.append(s / h)
        ratio, spread = median_spread(ratios)
        hv, _ = median_spread(hs)
        sv, _ = median_spread(ss)
        return [
            Result(
                "import", f"hookd import, {n:,} events", hv, "lines/s", "sqlite-utils insert --nl", sv, ratio,
                "≥ 5x", ratio >= 5, f"ratio {spread}", f"file {src.stat().st_size / 1e6:.0f} MB",
            )
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
        met = "met" if r.met else "NOT met"
        print(f"{r.name}: {r.value:,.0f} {r.unit}; {r.reference}: {r.reference_value or 0:,.0f}; ")
        print(f"  ratio {r.ratio or 0:.2f} (target {r.target}, {met}; {r.spread}) {r.note}")


if __name__ == "__main__":
    main()
