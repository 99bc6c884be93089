"""Shared pieces of the benchmark suite: a daemon under test, realistic events, results.

Every figure is reported next to a reference measured in the same run, as a ratio: these
machines are shared and noisy, absolute numbers move between runs, ratios hold better.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT / "clients" / "python"))

TOOLS = ["Read", "Edit", "Bash", "Grep", "Write"]


def claude_event(k: int, i: int) -> bytes:
    """A ~300 B Claude Code PreToolUse/PostToolUse payload; sessions arrive in order."""
    return (
        json.dumps(
            {
                "hook_event_name": "PostToolUse" if i % 2 else "PreToolUse",
                "session_id": f"5e7c0c4e-{k:04d}-4b1e-9a53-{i // 500:012d}",
                "cwd": "/home/dev/projects/hookd",
                "tool_name": TOOLS[i % 5],
                "tool_use_id": f"toolu_01{k:02d}{i:010d}",
                "tool_input": {"file_path": f"/home/dev/projects/hookd/daemon/hookd/mod{i % 40}.py"},
                "tool_response": {"success": True, "lines": i % 300},
            },
            separators=(",", ":"),
        )
        + "\n"
    ).encode()


def small_event(k: int, i: int) -> bytes:
    """A small git/routing event (~120 B)."""
    return (
        json.dumps(
            {"type": "routing_metrics", "session": f"s-{k}", "model": "m-large", "latency_ms": i % 997, "ok": True},
            separators=(",", ":"),
        )
        + "\n"
    ).encode()


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


@dataclass
class Result:
    """One line of the results table."""

    section: str
    name: str
    value: float  # median over runs
    unit: str
    reference: str = ""
    reference_value: float | None = None
    ratio: float | None = None  # value / reference_value (or as stated in `note`)
    target: str = ""
    met: bool | None = None
    spread: str = ""  # e.g. "ratio 0.84-0.93 over 5 runs"
    note: str = ""
    runs: list[float] = field(default_factory=list)


def bench_main(doc: str | None, measure: Callable[[int, bool], list[Result]], runs: int) -> None:
    """A benchmark module's command line: ``--runs`` (default ``runs``) and ``--quick``, then one
    printed line per result."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    for r in measure(args.runs, args.quick):
        ref = f" | {r.reference}: {r.reference_value:,.3f}" if r.reference else ""
        ratio = f" | {r.ratio:.2f}x" if r.ratio is not None else ""
        print(f"{r.name}: {r.value:,.3f} {r.unit}{ref}{ratio} | {r.spread} | {r.note}")


def median_spread(xs: list[float]) -> tuple[float, str]:
    if not xs:
        return float("nan"), ""
    return statistics.median(xs), f"{min(xs):.2f}-{max(xs):.2f} over {len(xs)} runs"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
    env["HOOKD_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(extra)
    return env


@dataclass
class DaemonUnderTest:
    home: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.home / "hookd.sock"

    @property
    def db(self) -> Path:
        return self.home / "events.db"

    def pids(self) -> list[int]:
        """The daemon and its writer process."""
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [self.proc.pid, *map(int, kids)]

    def stored(self) -> int:
        """Events stored so far (cheap: per-type counts, not count(*))."""
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return db.execute("SELECT coalesce(sum(count), 0) FROM event_types").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def wait_stored(self, n: int, timeout: float = 300) -> float:
        """Poll until n events are stored; returns the time it happened."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.stored() >= n:
                return time.time()
            time.sleep(0.002)
        raise TimeoutError(f"only {self.stored()} of {n} events stored")


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


@contextmanager
def daemon(*args: str, home: Path | None = None) -> Iterator[DaemonUnderTest]:
    """Start ``hookd run`` on a fresh HOOKD_HOME, wait until it is ready, stop it after."""
    own = home is None
    home = home or Path(tempfile.mkdtemp(prefix="hookd-bench-", dir="/tmp"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookd", "run", "--log-level", "warning", *args],
        env=clean_env(home),
        cwd=ROOT,
    )
    try:
        sock = home / "hookd.sock"
        deadline = time.time() + 30
        while not sock.exists():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("hookd did not start")
            time.sleep(0.01)
        time.sleep(0.3)  # the writer is ready once the socket exists; let the loop settle
        yield DaemonUnderTest(home, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        if own:
            shutil.rmtree(home, ignore_errors=True)
