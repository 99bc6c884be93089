"""What the spool's cap costs ``emit()`` with no daemon: spooling, near the cap, past it.

    .venv/bin/python bench/spool_cap.py [--runs 5] [--quick] [--dir DIR]

One process emits ~300 B Claude Code payloads (``claude_event``) with no daemon listening, so
every event goes to the spool, in four phases per run:

1. ``uncapped``: ``HOOKD_SPOOL_MAX=unlimited``, the reference (no ``stat`` of ``usage``);
2. ``below``: capped, the spool far from its cap (blocks of 1 and 2 alternate);
3. ``near``: the last tenth before the cap (the same work as 2; the figure shows it stays so);
4. ``past``: dropping: each event is counted in the spool's ``dropped`` file (flock, pread,
   pwrite) and ``emit`` returns False.

Per phase, p50 and p99 of single ``emit()`` calls; each figure is the median over the runs, with
the spread. The spool is on the normal disk (where users' spools are) and on /dev/shm, each
cleared between runs. The figures go into docs/reliability.md by hand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hookd_client  # noqa: E402  (common puts clients/python on sys.path)
from common import claude_event, median_spread, percentile  # noqa: E402

PHASES = ("uncapped", "below", "near", "past")


def one_run(directory: Path, cap: int, drops: int) -> dict[str, list[float]]:
    """The phases into a fresh ``directory``: per phase, each emit() in µs. Below the cap,
    blocks of uncapped and capped emits alternate, so both see the same machine and file."""
    shutil.rmtree(directory, ignore_errors=True)
    os.environ["HOOKD_SPOOL_DIR"] = str(directory)
    out: dict[str, list[float]] = {p: [] for p in PHASES}
    fields = {"payload": claude_event(0, 1).decode().strip()}
    clock = time.perf_counter_ns
    usage = directory / "usage"
    block = 0
    while len(out["past"]) < drops:
        uncapped = len(out["past"]) == 0 and block % 2 == 0
        os.environ["HOOKD_SPOOL_MAX"] = "unlimited" if uncapped else str(cap)
        for _ in range(200):
            near = usage.exists() and usage.stat().st_size * 4096 > 0.9 * cap
            t0 = clock()
            ok = hookd_client.emit("post_tool_use", fields)
            elapsed = (clock() - t0) / 1000
            phase = "uncapped" if uncapped else "past" if not ok else "near" if near else "below"
            out[phase].append(elapsed)
        block += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", type=Path, help="also measure a spool here")
    args = ap.parse_args()
    runs, cap, drops = (1, 1 << 20, 2000) if args.quick else (args.runs, 16 << 20, 20_000)
    os.environ["HOOKD_SOCKET"] = "/nonexistent/hookd.sock"
    places = {"disk": Path(tempfile.mkdtemp(prefix="hookd-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")))}
    if os.access("/dev/shm", os.W_OK):
        places["tmpfs"] = Path(tempfile.mkdtemp(prefix="hookd-bench-", dir="/dev/shm"))
    if args.dir:
        places[str(args.dir)] = args.dir
    print(f"cap {cap >> 20} MiB, {drops} dropped emits per run, {runs} runs; p50 / p99 in µs (median, spread)")
    try:
        for place, base in places.items():
            per_run = [one_run(base / "spool", cap, drops) for _ in range(runs)]
            for phase in PHASES:
                p50, s50 = median_spread([percentile(r[phase], 0.5) for r in per_run])
                p99, s99 = median_spread([percentile(r[phase], 0.99) for r in per_run])
                n = len(per_run[0][phase])
                print(f"{place:6} {phase:9} n={n:6}  p50 {p50:6.1f} ({s50})  p99 {p99:6.1f} ({s99})")
    finally:
        for place, base in places.items():
            if place in ("disk", "tmpfs"):
                shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
