"""The whole benchmark suite, in one run: prints a table and writes it into docs/performance.md.

    ./dev bench            # full suite, a few minutes; updates docs/performance.md
    ./dev bench --quick    # smoke run, seconds; prints only

Every figure is measured next to its reference in the same run and reported as a ratio, with
the median and spread over several runs: these machines are shared and noisy. Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import sqlite3
import sys
import time
import traceback
from pathlib import Path

from common import ROOT, Result

MODULES = [
    "ingest",
    "conn_per_event",
    "latency",
    "http_hooks",
    "claude_sessions",
    "otlp",
    "import_bulk",
    "memory",
    "peer_rsyslog",
    "hotpath",
    "forward",
]
BEGIN = "<!-- bench:begin (written by bench/run.py; edit the text around it, not inside) -->"
END = "<!-- bench:end -->"


def fmt(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if abs(x) >= 1000:
        return f"{x:,.0f}{unit}"
    if abs(x) >= 10:
        return f"{x:.1f}{unit}"
    return f"{x:.2f}{unit}"


def table(results: list[Result]) -> str:
    rows = [
        "| section | measure | value | reference (same run) | ratio | target | met | spread / note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ref = f"{r.reference}: {fmt(r.reference_value)}" if r.reference else ""
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        note = "; ".join(x for x in (r.spread, r.note) if x)
        rows.append(
            f"| {r.section} | {r.name} | {fmt(r.value)} {r.unit} | {ref} | {fmt(r.ratio, 'x')} | {r.target} "
            f"| {met} | {note} |"
        )
    return "\n".join(rows)


def machine() -> str:
    try:
        import apsw

        apsw_v = f", apsw {apsw.apsw_version()} (SQLite {apsw.sqlite_lib_version()}) in the writer"
    except ImportError:
        apsw_v = ""
    return (
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, system SQLite {sqlite3.sqlite_version}{apsw_v}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: few events, one run, docs untouched")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", nargs="*", choices=MODULES, help="run only these parts")
    args = ap.parse_args()
    results: list[Result] = []
    failed = []
    for name in args.only or MODULES:
        print(f"== {name} ...", file=sys.stderr, flush=True)
        t = time.monotonic()
        try:
            mod = importlib.import_module(name)
            few = ("import_bulk", "peer_rsyslog", "http_hooks", "otlp", "forward", "claude_sessions")
            runs = 3 if name in few else args.runs
            results += mod.measure(runs=runs, quick=args.quick)
        except Exception:
            failed.append(name)
            traceback.print_exc()
        print(f"   {name}: {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
    text = f"Measured {machine()}.\n\n{table(results)}\n"
    print(text)
    if failed:
        print(f"FAILED parts: {', '.join(failed)}", file=sys.stderr)
    if args.quick or args.only:
        return
    doc = ROOT / "docs" / "performance.md"
    content = doc.read_text()
    if BEGIN in content and END in content:
        head, rest = content.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
        print(f"updated {doc.relative_to(ROOT)}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
