"""The dashboard's speed (issue 16): panel queries on 1M and 10M realistic events, the first
paint of each tab, what schema migrations 7 and 8 (the summaries) cost an insert, and ingest
with and without a dashboard refreshing.

    python bench/dashboard.py [--sizes 1000000,10000000] [--skip-browser] [--skip-ingest]
                              [--skip-panels] [--skip-insert]

The databases are generated straight into SQLite (executemany, the writer's own statements for
the summaries, one transaction per 10,000 rows) and cached in $TMPDIR/hookd-bench-dashboard/
(generation time is printed and kept beside each file). Realistic: Claude Code sessions of
about 100 events (a start, prompts, tool calls with inputs and responses of 100 B to 4 KB, 4%
failing, 1% never closed, an end), 1% git events, 4% other kinds, spread over 90 days.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import claude_event, clean_env, daemon, median_spread
from hookd.dashboard.queries import PANELS, Ask
from hookd.paths import Paths
from hookd.settings import Settings
from hookd.writer import schema

CACHE = Path(tempfile.gettempdir()) / "hookd-bench-dashboard"
SPAN = 90 * 86400
TOOLS = ["Read", "Edit", "Bash", "Grep", "Write", "Glob", "WebFetch", "Task"]
OTHER = ["routing_metrics", "self_heal", "recovery", "coordinator", "notification"]


def _session_events(rng: random.Random, s: str, t: float, dt: float) -> list[tuple[str, float, dict]]:
    out: list[tuple[str, float, dict]] = [
        ("session_start", t, {"hook_event_name": "SessionStart", "cwd": "/home/dev/p"})
    ]
    for p in range(rng.randint(4, 12)):
        t += dt
        out.append(("user_prompt_submit", t, {"hook_event_name": "UserPromptSubmit", "prompt": f"step {p} " * 8}))
        for c in range(rng.randint(3, 8)):
            tool = rng.choice(TOOLS)
            tid = f"toolu_{s}_{p}_{c}"
            call = {"tool_name": tool, "tool_use_id": tid, "tool_input": {"file_path": f"/home/dev/p/m{c}.py"}}
            t += dt
            out.append(("pre_tool_use", t, {"hook_event_name": "PreToolUse", **call}))
            r = rng.random()
            if r < 0.01:
                continue
            t += dt
            if r < 0.05:
                out.append(
                    ("post_tool_use_failure", t, {"hook_event_name": "PostToolUseFailure", **call, "error": "x"})
                )
            else:
                body = "x" * int(rng.lognormvariate(6, 1.0) % 4000)
                done = {"hook_event_name": "PostToolUse", **call, "tool_response": {"output": body}}
                out.append(("post_tool_use", t, {**done, "duration_ms": rng.randint(5, 5000)}))
    out.append(("session_end", t + dt, {"hook_event_name": "SessionEnd", "reason": "exit"}))
    return out


def _extra(rng: random.Random, t: float) -> tuple[str, float, dict, str | None]:
    if rng.random() < 0.2:
        kind = rng.choice(["git_commit", "git_commit", "git_checkout", "git_merge", "git_rewrite"])
        repo = f"/src/repo{rng.randint(0, 5)}"
        return kind, t, {"type": kind, "repo": repo, "branch": rng.choice(["main", "topic"]), "sha": "ab" * 20}, None
    kind = rng.choice(OTHER)
    return kind, t, {"type": kind, "route": "fast", "latency_ms": rng.randint(1, 900)}, None


def rows(n: int, end: float, seed: int = 7):
    """``n`` events in time order over the 90 days before ``end``, as ``events`` rows."""
    rng = random.Random(seed)
    step = SPAN / (n * 0.96)  # the other kinds (~4-5%) come between session events without a step
    t, made, last, k = end - SPAN, 0, 0, 0
    while made < n:
        k += 1
        s = f"5e7c0c4e-{k:08d}"
        batch = [(*e, s) for e in _session_events(rng, s, t, step)]
        for _ in range(len(batch) // 20):  # git and other kinds beside the session: ~5%
            batch.append(_extra(rng, t + rng.random() * step * len(batch)))
        batch.sort(key=lambda e: e[1])
        for etype, ts, data, session in batch:
            eid = max(last + 1, int(ts * 1000) << 20)
            last = eid
            if session is not None:
                data["session_id"] = session
            yield (eid, etype, ts, session, None, ts, 4242, 1000, json.dumps(data, separators=(",", ":")))
            made += 1
            if made >= n:
                return
        t = batch[-1][1] + step


def generate(n: int, path: Path, end: float) -> float:
    """Write ``n`` events into a new database at ``path``; the seconds it took."""
    started = time.perf_counter()
    tmp = path.with_suffix(".part")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    db = schema.connect(tmp, synchronous="off")
    schema.migrate(db)
    chunk: list[tuple] = []

    def flush() -> None:
        db.execute("BEGIN")
        db.executemany(schema.INSERT_EVENT, chunk)
        lo, hi = chunk[0][0], chunk[-1][0]
        db.execute(schema.TYPES_FROM_RANGE, (lo, hi))
        schema.summarize_upto(db, hi)
        db.execute("COMMIT")
        chunk.clear()

    for row in rows(n, end):
        chunk.append(row)
        if len(chunk) >= 10_000:
            flush()
    if chunk:
        flush()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    tmp.rename(path)
    return time.perf_counter() - started


def database(n: int) -> tuple[Path, float, float]:
    """The cached database of ``n`` events: its path, its last event's ts, generation seconds."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"events-{n}.db"
    meta = CACHE / f"events-{n}.json"
    if not path.exists() or not meta.exists():
        end = time.time()
        took = generate(n, path, end)
        meta.write_text(json.dumps({"end": end, "seconds": took}))
    info = json.loads(meta.read_text())
    db = schema.connect(path)  # a database cached by an older hookd gets the newer migrations
    t0 = time.perf_counter()
    applied = schema.migrate(db)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    if applied:
        print(f"{path}: applied {', '.join(applied)} in {time.perf_counter() - t0:.1f} s")
    return path, info["end"], info["seconds"]


def settings_for(db: Path) -> Settings:
    home = db.parent
    return Settings(paths=Paths(home / "none.sock", db, home / "mirror", home / "spool"))


#: (panel, parameters) as the tabs ask them.
ASKED = [
    ("head", {}),
    ("overview", {"range": "24h"}),
    ("overview", {"range": "7d"}),
    ("overview", {"range": "30d"}),
    ("activity", {}),
    ("activity", {"type": "git_commit"}),
    ("activity", {"since": "WEEK"}),
    ("activity", {"session": "SESSION"}),
    ("activity", {"q": "step 3"}),
    ("tools", {"range": "1h"}),
    ("tools", {"range": "24h"}),
    ("tools", {"range": "7d"}),
    ("tools", {"range": "30d"}),
    ("sessions", {"range": "7d"}),
    ("sessions", {"range": "30d"}),
    ("session", {"id": "SESSION"}),
    ("git", {"range": "30d"}),
    ("kinds", {}),
    ("kinds", {"type": "routing_metrics", "range": "7d"}),
    ("health", {}),
]


def panel_times(db: Path, end: float, repeat: int = 5) -> list[tuple[str, float, float]]:
    """(panel and parameters, median ms, max ms) over ``repeat`` runs, the first one cold."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.execute("PRAGMA query_only = ON")
    session = conn.execute("SELECT session FROM session_stats ORDER BY started DESC LIMIT 1 OFFSET 3").fetchone()[0]
    settings = settings_for(db)
    out = []
    for name, params in ASKED:
        given = {k: {"SESSION": session, "WEEK": str(end - 7 * 86400)}.get(v, v) for k, v in params.items()}
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            PANELS[name](conn, Ask(given, settings, end))
            times.append((time.perf_counter() - t0) * 1000)
        label = name + ("" if not params else " " + " ".join(f"{k}={v}" for k, v in params.items()))
        out.append((label, statistics.median(times), max(times)))
    conn.close()
    return out


def first_paints(db: Path, runs: int = 3) -> dict[str, float]:
    """Per tab, from navigation start to its panels drawn (ms), median of ``runs`` fresh loads."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    proc = subprocess.Popen(
        [sys.executable, "-m", "hookd", "dashboard", "--db", str(db), "--listen", "127.0.0.1:0"],
        env=clean_env(db.parent),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = proc.stdout.readline().strip()  # type: ignore[union-attr]
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    out: dict[str, list[float]] = {}
    try:
        for _ in range(runs):
            for tab in ("overview", "activity", "tools", "sessions", "git", "kinds", "health"):
                driver.get("about:blank")
                driver.get(f"{url}#{tab}")
                deadline = time.time() + 30
                while time.time() < deadline:
                    at = driver.execute_script("return window.paintedAt || null")
                    if at is not None:
                        out.setdefault(tab, []).append(at)
                        break
                    time.sleep(0.02)
    finally:
        driver.quit()
        proc.terminate()
        proc.communicate(timeout=10)
    return {tab: statistics.median(v) for tab, v in out.items()}


#: What each configuration of ``insert_cost`` adds to the writer's own statements.
COSTED = {
    "none": (),
    "m7": ("events_ts", "hours", "sessions"),
    "m7+m8": ("events_ts", "hours", "sessions", "tools"),
}


def _insert_rate(sample: list[tuple], parts: tuple[str, ...]) -> float:
    d = Path(tempfile.mkdtemp(prefix="hookd-cost-"))
    db = schema.connect(d / "x.db")
    schema.migrate(db)
    if "events_ts" not in parts:
        db.execute("DROP INDEX events_ts")
    t0 = time.perf_counter()
    for j in range(0, len(sample), 1000):
        part = sample[j : j + 1000]
        lo, hi = part[0][0], part[-1][0]
        db.execute("BEGIN")
        db.executemany(schema.INSERT_EVENT, part)
        db.execute(schema.TYPES_FROM_RANGE, (lo, hi))
        if "hours" in parts:
            db.execute(schema.HOURS_FROM_RANGE, (lo, hi))
        if "sessions" in parts:
            db.execute(schema.SESSIONS_FROM_RANGE, (lo, hi))
        if "tools" in parts:
            schema.summarize_tools(db, lo, hi)
        db.execute("COMMIT")
    rate = len(sample) / (time.perf_counter() - t0)
    db.close()
    shutil.rmtree(d)
    return rate


def insert_cost(n: int = 200_000, runs: int = 5) -> dict[str, tuple[float, float, str]]:
    """Rows/s inserted as the writer does (1,000-row transactions of realistic rows), without
    the dashboard's summaries, with migration 7's (``event_hours``, ``session_stats``,
    ``events_ts``) and with 7's and 8's (the tool summaries); alternated, ``runs`` times.
    Per configuration: median rows/s, its ratio to ``none`` and the ratio's spread."""
    sample = list(rows(n, time.time(), seed=3))
    rates: dict[str, list[float]] = {k: [] for k in COSTED}
    for r in range(runs):
        for name in COSTED if r % 2 == 0 else reversed(COSTED):
            rates[name].append(_insert_rate(sample, COSTED[name]))
    out = {}
    for name, got in rates.items():
        ratio, spread = median_spread([a / b for a, b in zip(got, rates["none"], strict=True)])
        out[name] = (statistics.median(got), ratio, spread)
    return out


def _blast(sock: Path, clients: int, n: int) -> None:
    def one(k: int) -> None:
        data = b"".join(claude_event(k, i) for i in range(n))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(sock))
            s.sendall(data)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


last_error = [""]


def _refresher(url: str, stop: threading.Event, counts: list[int]) -> None:
    """What open pages do, and more: every panel of every tab once a second."""
    panels = ["head", "overview", "activity", "tools", "sessions", "git", "kinds", "health"]
    while not stop.is_set():
        t0 = time.time()
        for p in panels:
            try:
                with urllib.request.urlopen(url + "api/" + p, timeout=10) as r:
                    r.read()
                counts[0] += 1
            except OSError as e:  # 503: a query over its time limit, or all connections busy
                counts[1] += 1
                last_error[0] = str(e)
        stop.wait(max(0.0, 1.0 - (time.time() - t0)))


def ingest_with_dashboard(clients: int = 4, n: int = 50_000, pairs: int = 3) -> dict[str, object]:
    """Events/s into a daemon, alone and while a dashboard on its database refreshes every
    panel every second; alternated, ``pairs`` times."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    requests = [0, 0]
    for _ in range(pairs):
        for with_dash in (False, True):
            with daemon() as d:
                dash, stop, thread = None, threading.Event(), None
                if with_dash:
                    dash = subprocess.Popen(
                        [sys.executable, "-m", "hookd", "dashboard", "--listen", "127.0.0.1:0"],
                        env=clean_env(d.home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                    )  # fmt: skip
                    url = dash.stdout.readline().strip()  # type: ignore[union-attr]
                    thread = threading.Thread(target=_refresher, args=(url, stop, requests))
                    thread.start()
                before = d.stored()
                t0 = time.time()
                _blast(d.socket, clients, n)
                t1 = d.wait_stored(before + clients * n)
                rates[with_dash].append(clients * n / (t1 - t0))
                stop.set()
                if thread is not None:
                    thread.join()
                if dash is not None:
                    dash.terminate()
                    dash.communicate(timeout=10)
    ratios = [a / b for a, b in zip(rates[True], rates[False], strict=True)]
    ratio, spread = median_spread(ratios)
    return {
        "alone": statistics.median(rates[False]),
        "ratio": ratio,
        "spread": spread,
        "requests": requests[0],
        "errors": requests[1],
        "last_error": last_error[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-panels", action="store_true", help="no panel queries or first paints (no databases)")
    ap.add_argument("--skip-insert", action="store_true", help="no insert cost of the summaries")
    args = ap.parse_args()
    for n in [] if args.skip_panels else map(int, args.sizes.split(",")):
        path, end, took = database(n)
        size = path.stat().st_size
        print(f"\n{n:,} events: {path} ({size / 2**30:.2f} GiB), generated in {took:.0f} s")
        limit = 250 if n <= 1_000_000 else 1000
        for label, med, worst in panel_times(path, end):
            print(f"  {label:<45} median {med:8.1f} ms  max {worst:8.1f} ms  {'ok' if worst <= limit else 'OVER'}")
        if not args.skip_browser and n == 1_000_000:
            for tab, ms in first_paints(path).items():
                print(f"  first paint {tab:<10} {ms:6.0f} ms  {'ok' if ms < 1000 else 'OVER'}")
    for name, (rate, ratio, spread) in ({} if args.skip_insert else insert_cost()).items():
        print(f"insert as the writer does, summaries {name:<6} {rate:>9,.0f} rows/s  {ratio:.2f}x ({spread})")
    if not args.skip_ingest:
        r = ingest_with_dashboard()
        print(
            f"daemon ingest alone {r['alone']:,.0f} events/s; with a dashboard refreshing every panel every second "
            f"{r['ratio']:.2f}x ({r['spread']}; {r['requests']} panel requests)"
        )


if __name__ == "__main__":
    main()
