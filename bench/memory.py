"""Memory of all hookd processes together (daemon + writer): idle, and peak under a flood.

    .venv/bin/python bench/memory.py [--events 1000000]

8 clients stream --events events in total over long connections, as fast as they can (far
faster than SQLite takes them); RSS is sampled every 10 ms. Targets: idle ≤ 60 MB, peak
≤ 150 MB. The ratios are to those bounds.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import threading
import time

from common import Result, claude_event, daemon, rss_mb


def client(path: str, k: int, n: int) -> None:
    data = b"".join(claude_event(k, i) for i in range(n))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(data)


def measure(runs: int = 1, quick: bool = False, events: int = 1_000_000) -> list[Result]:
    n = 80_000 if quick else events
    with daemon() as d:
        pids = d.pids()
        time.sleep(0.5)
        idle = rss_mb(pids)
        peak = [idle]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(pids))
                time.sleep(0.01)

        t = threading.Thread(target=sample)
        t.start()
        t0 = time.time()
        procs = [mp.Process(target=client, args=(str(d.socket), k, n // 8)) for k in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        d.wait_stored(n // 8 * 8, timeout=600)
        elapsed = time.time() - t0
        stop.set()
        t.join()
    return [
        Result("memory", "idle RSS, daemon + writer", idle, "MB", "bound", 60, idle / 60, "≤ 60 MB", idle <= 60),
        Result(
            "memory", f"peak RSS under a flood of {n:,} events", peak[0], "MB", "bound", 150, peak[0] / 150,
            "≤ 150 MB", peak[0] <= 150, note=f"all {n // 8 * 8:,} stored in {elapsed:.1f} s",
        ),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    for r in measure(quick=args.quick, events=args.events):
        print(f"{r.name}: {r.value:.1f} {r.unit} (target {r.target}: {'met' if r.met else 'NOT met'}) {r.note}")


if __name__ == "__main__":
    main()
