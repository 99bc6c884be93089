"""Per-event latency of the clients, each against a reference measured in the same run.

    .venv/bin/python bench/latency.py [--runs 5] [--quick]

1. Python ``emit()`` with the daemon up (fire-and-forget: socket, connect, send, close), p50 and
   p99 over many sequential calls from one process, against a bare stdlib ``socket``
   connect + send + close of the same bytes to the same daemon (the floor).
2. ``emit()`` with the daemon down, so every event is spooled (one record appended to the spool file):
   spool on the normal disk (what the default spool location gives users) and on /dev/shm,
   against the same ``emit()`` with the daemon up.
3. ``hookd-emit TYPE JSON`` as a whole process, against ``sh -c "printf '%s\\n' JSON | socat -u -
   UNIX-CONNECT:sock"`` (the floor for a shell hook) and against a per-event ``python3 -c`` script
   that opens SQLite (WAL), inserts one row, commits and appends the row to a JSONL file (what
   hookd replaces).
4. ``emit(..., wait=True)`` (acknowledged once committed), sequential at light load, against the
   fire-and-forget ``emit()`` in the same run.

All events are realistic ~300 B Claude Code payloads (``claude_event``). Within each run the
measured thing and its reference alternate in blocks, so both see the same machine. Each figure
is the median over the runs; ``ratio`` is the median of the per-run ratios (value / reference,
or reference / value where the note says "speed-up"); ``spread`` gives the min-max over runs.
Events meant for the daemon carry HOOKD_SPOOL_DIR pointing at a directory the daemon does not
read, so any event that was spooled instead of sent is counted (and reported) rather than hidden.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hookd_client  # noqa: E402  (common puts clients/python on sys.path)
from common import (  # noqa: E402
    ROOT,
    DaemonUnderTest,
    Result,
    claude_event,
    clean_env,
    daemon,
    median_spread,
    percentile,
)
from hookd_client import emit  # noqa: E402

HOOKD_EMIT = ROOT / ".venv" / "bin" / "hookd-emit"
# The per-event writer runs under the system python3 (what a hook's `#!/usr/bin/env python3`
# usually finds); on this machine `python3` on PATH is a pyenv shim, a bash script, which would
# flatter hookd. Fall back to the interpreter running the bench.
PYTHON3 = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

# The approach hookd replaces: one Python process per event that stores it itself. Same
# durability as hookd (WAL, synchronous=NORMAL: no fsync per commit), so the comparison is fair.
WRITER_SCRIPT = r"""
import json, sqlite3, sys, time
type_, event, db_path, jsonl_path = sys.argv[1:5]
ev = json.loads(event)
db = sqlite3.connect(db_path, timeout=10)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute(
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, type TEXT NOT NULL, ts REAL NOT NULL,"
    " session TEXT, data TEXT NOT NULL)"
)
row = (type_, time.time(), ev.get("session_id"), event)
db.execute("INSERT INTO events (type, ts, session, data) VALUES (?, ?, ?, ?)", row)
db.commit()
db.close()
with open(jsonl_path, "a", encoding="utf-8") as f:
    f.write(json.dumps({"type": row[0], "ts": row[1], "session": row[2], "data": ev}, separators=(",", ":")) + "\n")
"""


@dataclass(frozen=True)
class Sizes:
    """How many events each measurement takes per run."""

    emit_calls: int  # 1: emit() and bare socket, each
    emit_block: int
    spool_calls: int  # 2: each of up / disk spool / shm spool
    spool_block: int
    proc_calls: int  # 3: hookd-emit and printf|socat, each
    writer_every: int  # 3: one python3 writer per this many hookd-emit calls
    ack_calls: int  # 4: emit(wait=True) and fire-and-forget emit, each
    ack_block: int
    warmup: int


FULL = Sizes(20_000, 500, 5_000, 250, 200, 4, 2_000, 100, 1_000)
QUICK = Sizes(2_000, 250, 600, 100, 24, 4, 300, 50, 200)


# -- events and environment ------------------------------------------------------------------


def emit_args(n: int, k: int = 1) -> list[tuple[str, dict]]:
    """(type, data) pairs for emit(): Claude Code payloads, typed by their hook_event_name."""
    out = []
    for i in range(n):
        data = json.loads(claude_event(k, i))
        out.append((data["hook_event_name"], data))
    return out


def wire_line(type_: str, data: dict) -> bytes:
    """The exact bytes emit(type_, data) sends."""
    return hookd_client._line(type_, data, {})


@contextmanager
def client_env(**values: str) -> Iterator[None]:
    """Set HOOKD_* for this process's emit() (only the given ones), restore afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("HOOKD_")}
    try:
        for k in saved:
            del os.environ[k]
        os.environ.update(values)
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("HOOKD_")]:
            del os.environ[k]
        os.environ.update(saved)


def fs_of(path: Path) -> str:
    """The file system type and mount point that hold path, and whether an ext4 has a journal."""
    best = ("?", "?", "")
    real = str(path.resolve())
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            dev, mnt, fstype, *_ = line.split()
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[2]):
                best = (dev, fstype, mnt)
    except OSError:
        pass
    dev, fstype, mnt = best
    text = f"{fstype} ({mnt})"
    if fstype == "ext4" and Path("/proc/fs/jbd2").is_dir():
        # jbd2 lists one entry per journal, named after the device (vda-8, sda1-8, ...)
        journaled = any(e.name.startswith(Path(dev).name + "-") for e in Path("/proc/fs/jbd2").iterdir())
        text += ", with a journal" if journaled else ", NO journal"
    return text


def count_files(d: Path) -> int:
    """Spooled events in a spool directory: records of the append file and per-event files."""
    try:
        return sum(p.read_bytes().count(b"\n") for p in d.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return 0


# -- timing loops ----------------------------------------------------------------------------

_clock = time.perf_counter_ns


def time_emit(args: list[tuple[str, dict]], start: int, n: int, out: list[float], **kw: object) -> None:
    """n sequential emit() calls, each timed, in microseconds, appended to out."""
    m = len(args)
    for j in range(start, start + n):
        type_, data = args[j % m]
        t0 = _clock()
        emit(type_, data, **kw)
        out.append((_clock() - t0) / 1000)


def time_bare(path: str, lines: list[bytes], start: int, n: int, out: list[float]) -> None:
    """n sequential bare stdlib socket, connect, sendall, close; microseconds."""
    m = len(lines)
    unix, stream = socket.AF_UNIX, socket.SOCK_STREAM
    for j in range(start, start + n):
        line = lines[j % m]
        t0 = _clock()
        s = socket.socket(unix, stream)
        s.connect(path)
        s.sendall(line)
        s.close()
        out.append((_clock() - t0) / 1000)


def time_proc(argv: list[str], env: dict[str, str]) -> float:
    """Wall time of one whole process, milliseconds."""
    t0 = _clock()
    rc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode
    t = (_clock() - t0) / 1e6
    if rc != 0:
        raise RuntimeError(f"{argv[:3]}... exited {rc}")
    return t


# -- results ---------------------------------------------------------------------------------


def result(
    section: str,
    name: str,
    unit: str,
    values: list[float],
    refs: list[float],
    reference: str,
    *,
    target: str = "",
    ok: Callable[[float, float], bool] | None = None,
    speedup: bool = False,
    note: str = "",
) -> Result:
    """A Result from per-run values and their per-run references.

    ``ok(value, ratio)`` decides whether the target is met; ``speedup`` makes the ratio
    reference / value ("x faster") instead of value / reference.
    """
    value, vspread = median_spread(values)
    ref, _ = median_spread(refs)
    ratios = [(r / v if speedup else v / r) for v, r in zip(values, refs, strict=True) if v > 0 and r > 0]
    ratio, rspread = median_spread(ratios)
    return Result(
        section=section,
        name=name,
        value=value,
        unit=unit,
        reference=reference,
        reference_value=ref,
        ratio=ratio,
        target=target,
        met=None if ok is None else bool(ok(value, ratio)),
        spread=f"{unit} {vspread}; ratio {rspread}",
        note=(("ratio = speed-up (reference / value). " if speedup else "") + note).strip(),
        runs=values,
    )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the measurements ------------------------------------------------------------------------


class Bench:
    def __init__(self, d: DaemonUnderTest, runs: int, sizes: Sizes, scratch: Path) -> None:
        self.d = d
        self.runs = runs
        self.sz = sizes
        self.scratch = scratch
        self.sock = str(d.socket)
        # Events meant for the daemon that did not reach it land here (the daemon never reads it).
        self.canary = scratch / "canary-spool"
        self.sent = 0  # events sent to the daemon, for the final check
        n = max(sizes.emit_calls, sizes.spool_calls, sizes.ack_calls, 1000)
        self.args = emit_args(min(n, 5000))
        self.lines = [wire_line(t, d) for t, d in self.args]

    def up_env(self) -> dict[str, str]:
        return {"HOOKD_HOME": str(self.d.home), "HOOKD_SPOOL_DIR": str(self.canary)}

    def drain(self) -> None:
        """Start the next block on an idle daemon: one acknowledged event on its own connection.

        The daemon answers once that event is committed, and a batch that holds an acknowledged
        event is committed at once, so by then the connections queued before it have been read
        and committed too (about a millisecond; waiting for the batch deadline would take 50 ms).
        Back to back without this, one client connects faster than the daemon accepts: the listen
        queue fills and emit() spools. That is a throughput limit, not the latency measured here.
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(self.sock)
            s.sendall(b'?{"type":"bench_drain"}\n')
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        if b'"ok":true' not in reply:
            raise RuntimeError(f"drain: the daemon answered {reply!r}")
        self.sent += 1

    # 1 ------------------------------------------------------------------------------------
    def emit_up(self) -> list[Result]:
        sz = self.sz
        p50s, p99s, b50s, b99s = [], [], [], []
        spooled0 = hookd_client.spooled()
        with client_env(**self.up_env()):
            warm: list[float] = []
            for b in range(0, sz.warmup, sz.emit_block):
                self.drain()
                time_emit(self.args, b, sz.emit_block, warm)
                time_bare(self.sock, self.lines, b, sz.emit_block, warm)
                self.sent += 2 * sz.emit_block
            for r in range(self.runs):
                gc.collect()
                em: list[float] = []
                bare: list[float] = []
                for b in range(0, sz.emit_calls, sz.emit_block):
                    n = min(sz.emit_block, sz.emit_calls - b)
                    self.drain()
                    time_emit(self.args, b, n, em)
                    self.sent += n
                    self.drain()
                    time_bare(self.sock, self.lines, b, n, bare)
                    self.sent += n
                p50s.append(percentile(em, 0.50))
                p99s.append(percentile(em, 0.99))
                b50s.append(percentile(bare, 0.50))
                b99s.append(percentile(bare, 0.99))
                log(
                    f"  1 run {r + 1}: emit p50 {p50s[-1]:.1f} p99 {p99s[-1]:.1f} us; "
                    f"bare socket p50 {b50s[-1]:.1f} p99 {b99s[-1]:.1f} us"
                )
        spooled = hookd_client.spooled() - spooled0
        note = (
            f"{sz.emit_calls:,} calls per run, blocks of {sz.emit_block} alternating with the reference, "
            "each block started once the daemon had stored all earlier events"
        )
        if spooled:
            note += f"; {spooled} of them were SPOOLED (listen queue full?)"
        sec = "1 emit(), daemon up"
        ref = "bare socket connect+send+close"
        return [
            result(
                sec, "emit p50", "us", p50s, b50s, ref + " p50", target="<= 30 us", ok=lambda v, _: v <= 30, note=note
            ),
            result(sec, "emit p99", "us", p99s, b99s, ref + " p99", target="<= 250 us", ok=lambda v, _: v <= 250),
        ]

    # 2 ------------------------------------------------------------------------------------
    def emit_down(self) -> list[Result]:
        sz = self.sz
        disk_home = Path(tempfile.mkdtemp(prefix="hookd-bench-down-", dir="/tmp"))
        shm_home = Path(tempfile.mkdtemp(prefix="hookd-bench-down-", dir="/dev/shm"))
        homes = {"disk": disk_home, "shm": shm_home}
        up = self.up_env()
        down = {k: {"HOOKD_HOME": str(h)} for k, h in homes.items()}
        series: dict[str, dict[str, list[float]]] = {k: {"p50": [], "p99": []} for k in ("up", "disk", "shm")}
        counted = {"disk": 0, "shm": 0}
        try:
            with client_env(**up):
                for r in range(self.runs):
                    for h in homes.values():  # a clean spool each run: no spool directory at all
                        shutil.rmtree(h / "spool", ignore_errors=True)
                    gc.collect()
                    lat: dict[str, list[float]] = {"up": [], "disk": [], "shm": []}
                    spooled0 = hookd_client.spooled()
                    for b in range(0, sz.spool_calls, sz.spool_block):
                        n = min(sz.spool_block, sz.spool_calls - b)
                        for key, env in (("up", up), ("disk", down["disk"]), ("shm", down["shm"])):
                            if key == "up":
                                self.drain()
                            with client_env(**env):
                                time_emit(self.args, b, n, lat[key])
                            if key == "up":
                                self.sent += n
                    for key, xs in lat.items():
                        series[key]["p50"].append(percentile(xs, 0.50))
                        series[key]["p99"].append(percentile(xs, 0.99))
                    for key, h in homes.items():
                        counted[key] = count_files(h / "spool")
                        if counted[key] != sz.spool_calls:
                            raise RuntimeError(f"{key}: {counted[key]} spooled events, expected {sz.spool_calls}")
                    if hookd_client.spooled() - spooled0 != 2 * sz.spool_calls:
                        raise RuntimeError("daemon-up emits were spooled")
                    log(
                        f"  2 run {r + 1}: "
                        + "; ".join(f"{k} p50 {v['p50'][-1]:.1f} p99 {v['p99'][-1]:.1f} us" for k, v in series.items())
                    )
        finally:
            for h in homes.values():
                shutil.rmtree(h, ignore_errors=True)
        sec = "2 emit(), daemon down (spool)"
        per = f"{sz.spool_calls:,} spooled events per run and spool (spool emptied between runs)"
        up_s = series["up"]
        disk_fs, shm_fs = fs_of(Path("/tmp")), fs_of(Path("/dev/shm"))
        return [
            result(
                sec,
                "spool on disk p50",
                "us",
                series["disk"]["p50"],
                up_s["p50"],
                "emit, daemon up p50",
                note=f"spool on {disk_fs}; {per}",
            ),
            result(
                sec,
                "spool on disk p99",
                "us",
                series["disk"]["p99"],
                up_s["p99"],
                "emit, daemon up p99",
                target="<= 300 us",
                ok=lambda v, _: v <= 300,
            ),
            result(
                sec,
                "spool on /dev/shm p50",
                "us",
                series["shm"]["p50"],
                up_s["p50"],
                "emit, daemon up p50",
                note=f"spool on {shm_fs}, for comparison",
            ),
            result(
                sec,
                "spool on /dev/shm p99",
                "us",
                series["shm"]["p99"],
                up_s["p99"],
                "emit, daemon up p99",
                target="(<= 300 us)",
                note="comparison only: users' default spool is on disk",
            ),
        ]

    # 3 ------------------------------------------------------------------------------------
    def processes(self) -> list[Result]:
        sz = self.sz
        env = clean_env(self.d.home, HOOKD_SPOOL_DIR=str(self.canary))
        wdir = self.scratch / "writer"
        wdir.mkdir(exist_ok=True)
        db, jsonl = str(wdir / "events.db"), str(wdir / "events.jsonl")
        payloads = [claude_event(2, i).decode().rstrip("\n") for i in range(sz.proc_calls)]
        type_ = "PostToolUse"

        def hookd_emit(p: str) -> list[str]:
            return [str(HOOKD_EMIT), type_, p]

        def printf_socat(p: str) -> list[str]:
            # the same line hookd-emit sends: TYPE appended as the object's last key
            line = p[:-1] + f',"type":"{type_}"' + "}"
            return ["sh", "-c", 'printf "%s\\n" "$1" | socat -u - "UNIX-CONNECT:$2"', "sh", line, self.sock]

        def writer(p: str) -> list[str]:
            return [PYTHON3, "-c", WRITER_SCRIPT, type_, p, db, jsonl]

        canary0 = count_files(self.canary)
        for p in payloads[:3]:  # warm the page cache for sh, socat, python3 and create the db
            time_proc(hookd_emit(p), env)
            time_proc(printf_socat(p), env)
            time_proc(writer(p), env)
        self.sent += 6
        he50, he99, ps50, ps99, py50, py99 = [], [], [], [], [], []
        for r in range(self.runs):
            he: list[float] = []
            ps: list[float] = []
            py: list[float] = []
            for i, p in enumerate(payloads):
                # alternate which goes first, so neither always follows the other
                if i % 2:
                    he.append(time_proc(hookd_emit(p), env))
                    ps.append(time_proc(printf_socat(p), env))
                else:
                    ps.append(time_proc(printf_socat(p), env))
                    he.append(time_proc(hookd_emit(p), env))
                if i % sz.writer_every == 0:
                    py.append(time_proc(writer(p), env))
            self.sent += len(he) + len(ps)
            he50.append(percentile(he, 0.50))
            he99.append(percentile(he, 0.99))
            ps50.append(percentile(ps, 0.50))
            ps99.append(percentile(ps, 0.99))
            py50.append(percentile(py, 0.50))
            py99.append(percentile(py, 0.99))
            log(
                f"  3 run {r + 1}: hookd-emit p50 {he50[-1]:.2f} p99 {he99[-1]:.2f} ms; printf|socat p50 "
                f"{ps50[-1]:.2f} p99 {ps99[-1]:.2f} ms; python3 writer p50 {py50[-1]:.2f} p99 {py99[-1]:.2f} ms"
            )
        spooled = count_files(self.canary) - canary0
        sec = "3 hookd-emit, whole process"
        n_py = len(range(0, sz.proc_calls, sz.writer_every))
        note = (
            f"{sz.proc_calls} hookd-emit and {sz.proc_calls} printf|socat runs per run, alternating; "
            f"{n_py} python3 writer runs ({PYTHON3}) interleaved"
        )
        if spooled:
            note += f"; {spooled} hookd-emit events were SPOOLED"
        return [
            result(
                sec,
                "hookd-emit p50",
                "ms",
                he50,
                ps50,
                "sh -c printf|socat p50",
                target="<= 1.3x",
                ok=lambda _, x: x <= 1.3,
                note=note,
            ),
            result(
                sec,
                "hookd-emit p99",
                "ms",
                he99,
                ps99,
                "sh -c printf|socat p99",
                target="(<= 1.3x)",
                note="p99 rows of section 3: for information (few samples); the targets apply to p50",
            ),
            result(
                sec,
                "hookd-emit p50 vs python3 writer",
                "ms",
                he50,
                py50,
                "python3 sqlite+jsonl writer p50",
                target=">= 5x faster",
                ok=lambda _, x: x >= 5,
                speedup=True,
            ),
            result(
                sec,
                "hookd-emit p99 vs python3 writer",
                "ms",
                he99,
                py99,
                "python3 sqlite+jsonl writer p99",
                target="(>= 5x faster)",
                speedup=True,
            ),
        ]

    # 4 ------------------------------------------------------------------------------------
    def acked(self) -> list[Result]:
        sz = self.sz
        a50, a99, f50 = [], [], []
        with client_env(**self.up_env()):
            warm: list[float] = []
            self.drain()
            time_emit(self.args, 0, sz.warmup // 4, warm, wait=True)
            self.sent += sz.warmup // 4
            for r in range(self.runs):
                gc.collect()
                ack: list[float] = []
                ff: list[float] = []
                for b in range(0, sz.ack_calls, sz.ack_block):
                    n = min(sz.ack_block, sz.ack_calls - b)
                    self.drain()
                    time_emit(self.args, b, n, ack, wait=True)
                    self.sent += n
                    self.drain()
                    time_emit(self.args, b, n, ff)
                    self.sent += n
                a50.append(percentile(ack, 0.50))
                a99.append(percentile(ack, 0.99))
                f50.append(percentile(ff, 0.50))
                log(
                    f"  4 run {r + 1}: ack p50 {a50[-1]:.0f} p99 {a99[-1]:.0f} us; fire-and-forget p50 {f50[-1]:.1f} us"
                )
        sec = "4 emit(wait=True), light load"
        ref = "fire-and-forget emit p50"
        note = f"{sz.ack_calls:,} sequential acknowledged calls per run, blocks of {sz.ack_block}, no ids"
        return [
            result(sec, "ack p50", "us", a50, f50, ref, target="<= 1000 us", ok=lambda v, _: v <= 1000, note=note),
            result(sec, "ack p99", "us", a99, f50, ref, target="<= 3000 us", ok=lambda v, _: v <= 3000),
        ]

    def check(self) -> str:
        """Every event sent to the daemon is stored, none spooled instead."""
        canary = count_files(self.canary)
        try:
            self.d.wait_stored(self.sent - canary, timeout=60)
            stored = f"all {self.sent - canary:,} events that reached the daemon were stored"
        except TimeoutError as e:
            stored = f"NOT ALL STORED: {e}"
        return stored + (f"; {canary} of {self.sent:,} were SPOOLED instead of sent" if canary else "; none spooled")


def measure(runs: int = 5, quick: bool = False) -> list[Result]:
    """Run the four latency measurements; one Result per figure (median over ``runs``)."""
    sizes = QUICK if quick else FULL
    scratch = Path(tempfile.mkdtemp(prefix="hookd-bench-lat-", dir="/tmp"))
    try:
        with daemon() as d:
            bench = Bench(d, runs, sizes, scratch)
            results: list[Result] = []
            for label, step in (
                ("1 emit(), daemon up", bench.emit_up),
                ("2 emit(), daemon down", bench.emit_down),
                ("3 hookd-emit processes", bench.processes),
                ("4 acknowledged emit", bench.acked),
            ):
                t0 = time.monotonic()
                log(f"{label} ...")
                results.extend(step())
                log(f"  ({time.monotonic() - t0:.1f} s)")
            log("check: " + bench.check())
            return results
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- output ----------------------------------------------------------------------------------


def fmt(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(results: list[Result]) -> str:
    head = ("name", "value", "reference", "ref value", "ratio", "target", "met", "spread (min-max)")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    section = None
    out: list[str] = []
    for r in results:
        if r.section != section:
            section = r.section
            rows.append(("#" + section,))
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        rows.append(
            (
                r.name,
                f"{fmt(r.value)} {r.unit}",
                r.reference,
                f"{fmt(r.reference_value)} {r.unit}",
                f"{r.ratio:.2f}x" if r.ratio is not None else "-",
                r.target,
                met,
                r.spread,
            )
        )
        if r.note:
            notes.append(f"  {r.section}: {r.name}: {r.note}")
    widths = [max(len(row[i]) for row in [head, *rows] if len(row) > 1) for i in range(len(head))]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    out.append(line)
    out.append("-" * len(line))
    for row in rows:
        if len(row) == 1:
            out.append(row[0][1:])
            continue
        out.append(
            "  ".join(
                c.rjust(w) if i in (1, 3, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    out.append("")
    out.append("notes:")
    out.extend(notes)
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5); figures are medians")
    ap.add_argument("--quick", action="store_true", help="far fewer calls per run: a smoke run of a few seconds")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    t0 = time.monotonic()
    results = measure(args.runs, args.quick)
    event = claude_event(1, 1)
    print()
    print(
        f"hookd client latency: {args.runs} runs{' (quick)' if args.quick else ''}, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, event ~{len(event)} B (claude_event), "
        f"{time.monotonic() - t0:.0f} s"
    )
    print("value and ref value: medians over the runs; ratio: median of per-run ratios")
    print()
    print(table(results))
    met = [r for r in results if r.met is not None]
    print()
    print(f"targets met: {sum(1 for r in met if r.met)} of {len(met)}")


if __name__ == "__main__":
    main()
