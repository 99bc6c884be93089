"""What bounds growth: the spool's cap (both clients), and the daemon's ``rejected`` table.

Real processes throughout: clients run as processes of their own (``python -c`` with
hookd_client, ``hookd-emit``), the daemon is ``hookd run``, ``hookd status`` is the command.
Every drop is counted exactly: what the clients say they dropped (``dropped()``, the stderr
line of hookd-emit) equals what the spool's counters hold, what ``hookd status`` reports before
the daemon runs, and what the daemon records in ``counters`` after; what they say they spooled
is what gets stored.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hookd_client
from conftest import SHELL_CLIENT, Daemon, clean_env, wait_for
from hookd import spool
from hookd.settings import KEYS_BY_NAME
from hookd.values import spool_limit
from hookd.writer import schema

CAP = 64 << 10  # tiny, so that tests fill it in a moment
PAD = "x" * 100

#: One Python client process: emits ``n`` events, prints what emit() returned and its counters.
PY_EMITTER = textwrap.dedent(
    """
    import sys, hookd_client as h
    k, n, pad = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    r = [h.emit("capped", k=k, i=i, pad=pad) for i in range(n)]
    print(r.count(True), r.count(False), h.spooled(), h.dropped())
    """
)


def py_emit(env: dict[str, str], n: int, k: str = "py") -> tuple[int, int]:
    """``n`` events from a Python client process: (spooled, dropped), checked against its counters."""
    out = subprocess.run(
        [sys.executable, "-c", PY_EMITTER, k, str(n), PAD], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    sent, dropped, spooled_count, dropped_count = map(int, out.stdout.split())
    assert (sent, dropped) == (spooled_count, dropped_count)
    return sent, dropped


def sh_emit(env: dict[str, str], n: int, k: str = "sh") -> tuple[int, int]:
    """``n`` runs of hookd-emit: (spooled, dropped) as their stderr says; every one exits 0."""
    spooled = dropped = 0
    for i in range(n):
        p = subprocess.run(
            ["sh", str(SHELL_CLIENT), "capped", json.dumps({"k": k, "i": i, "pad": PAD})],
            env=env,
            capture_output=True,
            timeout=30,
        )
        assert p.returncode == 0, p
        if b"event spooled" in p.stderr:
            spooled += 1
        elif b"is full (HOOKD_SPOOL_MAX=" in p.stderr and b"dropped and counted" in p.stderr:
            dropped += 1
        else:
            raise AssertionError(p.stderr)
    return spooled, dropped


def status(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookd", "status", *args], env=env, capture_output=True, text=True, timeout=60
    )


def status_json(home: Path, env: dict[str, str]) -> dict:
    return json.loads(status(home, env, "--json").stdout)


def on_disk(directory: Path) -> int:
    """What the spool's event files take: per-event files by the block, the append file by the byte."""
    total = 0
    for p in directory.iterdir():
        if p.name.endswith(".jsonl"):
            total += spool.units(p.stat().st_size) * spool.USAGE_UNIT
        elif p.name.endswith(".spool"):
            total += p.stat().st_size
    return total


def recorded(d: Daemon) -> int:
    rows = d.query("SELECT value FROM counters WHERE name = 'spool.dropped'")
    return rows[0][0] if rows else 0


@pytest.fixture
def capped(home: Path, socat: str) -> dict[str, str]:
    """Clients with no daemon to reach, a 64 KiB spool cap, the spool in HOOKD_HOME."""
    return clean_env(home, HOOKD_SPOOL_MAX="64KiB")


# -- both clients past the cap --------------------------------------------------------------


def test_both_clients_past_the_cap_count_every_drop_and_the_spool_takes_events_again(
    home: Path, capped: dict[str, str]
) -> None:
    directory = home / "spool"
    # hookd-emit first: ten files, each counted as the 4 KiB block it takes on disk
    assert sh_emit(capped, 10) == (10, 0)
    assert (directory / "usage").stat().st_size == 10
    py_sent, py_dropped = py_emit(capped, 1000)  # fills the remaining 24 KiB, then drops
    assert py_sent > 100 and py_dropped > 700
    assert sh_emit(capped, 5, "sh-late") == (0, 5)  # full for the shell client too
    sent, dropped = 10 + py_sent, py_dropped + 5
    print(f"\nspooled {sent} (10 hookd-emit, {py_sent} Python), dropped {dropped} ({py_dropped} Python, 5 hookd-emit)")
    assert on_disk(directory) <= CAP + spool.USAGE_UNIT, "the cap holds (to within one block)"
    assert on_disk(directory) > CAP - 2 * spool.USAGE_UNIT, "and the spool is used up to it"
    # counted in the spool, and reported by hookd status before any daemon ran
    assert spool.read_drops(directory, spool.DROPPED_NAME).events == py_dropped
    assert spool.read_drops(directory, spool.DROPPED_LOG).events == 5
    st = status_json(home, capped)
    assert st["spool_dropped"]["events"] == dropped
    assert st["spool_max_size"] == CAP and st["spool_bytes"] == CAP
    assert st["spool_dropped"]["first"] <= st["spool_dropped"]["last"] <= time.time()
    human = status(home, capped).stdout
    assert f"spool: {dropped:,} events dropped while the spool was full, since " in human, human
    check = status(home, capped, "--check")
    assert check.returncode == 1 and f"{dropped:,} events dropped while the spool was full" in check.stdout

    # the daemon drains as before, records the drops once, and the spool is empty again
    d = Daemon(home, env=capped).start()
    try:
        assert d.wait_count(sent) == sent
        assert wait_for(lambda: recorded(d) == dropped), (recorded(d), dropped, d.logtext)
        assert wait_for(lambda: (directory / "usage").stat().st_size == 0)
        assert sorted(p.name for p in directory.iterdir()) == ["usage"]
        assert f"clients dropped {py_dropped} event(s) while the spool was full" in d.logtext
        assert status_json(home, capped)["spool_dropped"]["events"] == dropped  # not counted twice
        assert d.stop() == 0, d.logtext
        # the next events spool again, from both clients
        assert py_emit(capped, 3, "after") == (3, 0)
        assert sh_emit(capped, 2, "after") == (2, 0)
        d.start()
        assert d.wait_count(sent + 5) == sent + 5
        assert d.stop() == 0
    finally:
        d.kill()
    assert d.count() == sent + 5
    assert recorded(d) == dropped
    assert d.query("SELECT count(*) FROM events WHERE json_extract(data, '$.k') = 'sh-late'") == [(0,)]


@pytest.mark.slow
def test_the_drop_counter_survives_concurrent_emitters_while_the_daemon_drains(home: Path, socat: str) -> None:
    """Eight Python processes and four shell loops spool into a 16 KiB spool while the daemon
    drains it and takes the drop counters (every 50 ms here): every event is either stored or
    counted, once."""
    (home / "config.toml").write_text('[ingest]\nspool_interval = "50ms"\n')
    started = int(time.time())
    d = Daemon(home).start()
    env = clean_env(
        home, HOOKD_SOCKET=str(home / "nowhere.sock"), HOOKD_SPOOL_DIR=str(home / "spool"), HOOKD_SPOOL_MAX="16KiB"
    )
    try:
        py = [
            subprocess.Popen([sys.executable, "-c", PY_EMITTER, f"p{k}", "5000", PAD], env=env, stdout=subprocess.PIPE)
            for k in range(8)
        ]
        shells = [
            subprocess.Popen(
                ["sh", "-c", f'for i in $(seq 25); do "$0" capped \'{{"k":"s{k}"}}\'; done', str(SHELL_CLIENT)],
                env=env,
                stderr=subprocess.PIPE,
            )
            for k in range(4)
        ]
        py_counts = [tuple(map(int, p.communicate(timeout=180)[0].split()))[:2] for p in py]
        sh_err = b"".join(p.communicate(timeout=180)[1] for p in shells)
        assert all(p.returncode == 0 for p in (*py, *shells))
        sent = sum(s for s, _ in py_counts) + sh_err.count(b"event spooled")
        dropped = sum(x for _, x in py_counts) + sh_err.count(b"dropped and counted")
        assert sh_err.count(b"event spooled") + sh_err.count(b"dropped and counted") == 100
        assert dropped > 1000, "the cap was reached"
        print(f"\n{sent + dropped} sent: {sent} spooled, {dropped} dropped")
        assert d.wait_count(sent, timeout=60) == sent
        assert wait_for(lambda: recorded(d) == dropped, timeout=30), (recorded(d), dropped)
        assert d.stop() == 0, d.logtext
    finally:
        d.kill()
    assert d.count() == sent and recorded(d) == dropped
    (first,), (last,) = d.query(
        "SELECT value FROM counters WHERE name IN ('spool.dropped.first', 'spool.dropped.last') ORDER BY name"
    )
    assert started <= first <= last <= time.time(), "the earliest first and the latest last of many collections"
    assert d.logtext.count("while the spool was full") > 5, "counters were taken while clients counted"
    assert not [p for p in (home / "spool").iterdir() if p.name != "usage"]


def test_a_python_client_that_finds_the_counter_locked_counts_in_the_log(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = home / "spool"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("HOOKD_SOCKET", str(home / "nowhere.sock"))
    monkeypatch.setenv("HOOKD_SPOOL_DIR", str(directory))
    monkeypatch.setenv("HOOKD_SPOOL_MAX", "0")  # spool nothing: every event is dropped
    before = hookd_client.dropped()
    assert [hookd_client.emit("t", i=i) for i in range(3)] == [False] * 3
    fd = os.open(directory / spool.DROPPED_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another client in the middle of its update, stopped
        assert [hookd_client.emit("t", i=i) for i in range(4)] == [False] * 4
    finally:
        os.close(fd)
    assert hookd_client.dropped() == before + 7
    assert spool.read_drops(directory, spool.DROPPED_NAME).events == 3
    assert spool.read_drops(directory, spool.DROPPED_LOG).events == 4
    assert sum(x.events for x in spool.pending_drops(directory, set())) == 7


def test_taken_drop_counters_are_counted_once_across_a_kill(home: Path) -> None:
    """A counter the daemon took and committed but did not delete (killed in between) is
    deleted at the next start without being counted again; one it took but never committed is
    counted then."""
    d = Daemon(home).start()
    assert d.stop() == 0
    directory = home / "spool"
    directory.mkdir(exist_ok=True)
    committed = f"{time.time_ns() - 10**10}-0-count{spool.DROPS_SUFFIX}"
    (directory / committed).write_bytes(b"%020d %020d %020d\n" % (7, 1, 2))
    taken = f"{time.time_ns() - 10**10}-0-log{spool.DROPS_SUFFIX}"
    (directory / taken).write_bytes(b"1700000000...")
    with __import__("sqlite3").connect(d.db_path) as db:
        db.execute("INSERT INTO spool_done (name) VALUES (?)", (committed,))
        db.execute("INSERT INTO counters (name, value) VALUES ('spool.dropped', 7)")
    assert status_json(home, clean_env(home))["spool_dropped"]["events"] == 10  # 7 recorded + 3 waiting
    d.start()
    try:
        assert wait_for(lambda: recorded(d) == 10), d.logtext
        assert wait_for(lambda: not list(directory.glob("*" + spool.DROPS_SUFFIX)))
        assert d.stop() == 0
    finally:
        d.kill()
    assert recorded(d) == 10
    assert d.query("SELECT value FROM counters WHERE name = 'spool.dropped.first'") == [(1_700_000_000,)]


def test_the_daemon_measures_the_spool_as_the_clients_count_it(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    (d / "1-2-sh1.jsonl").write_bytes(b"x" * 5000)  # a file: 2 blocks
    (d / "append.spool").write_bytes(b"x" * 9000)  # appended records: by the byte, 2 whole blocks
    (d / "3-0-taken.spool").write_bytes(b"x" * 90_000)  # read, being committed: skipped
    (d / ".4-5-sh2.jsonl.tmp").write_bytes(b"x" * 10)  # a client writing it now: 1 block
    stale = d / ".6-7-sh3.jsonl.tmp"  # a client killed an hour and more ago
    stale.write_bytes(b"x" * 10)
    os.utime(stale, (time.time() - spool.STALE_TEMP - 60,) * 2)
    (d / "usage").write_bytes(b"+" * 100)
    assert spool.measure(d, {"3-0-taken.spool"}) == 5
    assert not stale.exists()
    spool.set_usage(d, 5)
    assert spool.usage(d) == 5 * spool.USAGE_UNIT
    spool.set_usage(d, 0)
    assert (d / "usage").stat().st_size == 0


CLIENT_SIZES = [
    ("65536", 65536),
    ("64K", 64 << 10),
    ("64kib", 64 << 10),
    ("64KB", 64 << 10),
    ("256MiB", 256 << 20),
    ("1G", 1 << 30),
    ("12b", 12),
    ("0", 0),
    ("unlimited", None),
    ("Unlimited", None),
    ("1.5GiB", "bad"),
    ("2 GiB", "bad"),
    ("-5", "bad"),
    ("MiB", "bad"),
    ("64KiBs", "bad"),
    ("", "bad"),  # unset (an empty variable is unset for hookd too)
]


@pytest.mark.parametrize(("text", "value"), CLIENT_SIZES, ids=[t for t, _ in CLIENT_SIZES])
def test_hookd_spool_max_reads_alike_in_both_clients_and_the_daemon(text: str, value: int | str | None) -> None:
    """The clients read what the daemon accepts, and fall back to the default on what it
    refuses (so `hookd config` catches a value every hook would ignore)."""
    assert hookd_client.DEFAULT_SPOOL_MAX == KEYS_BY_NAME["spool.max_size"].default == 256 << 20
    client = hookd_client.DEFAULT_SPOOL_MAX if value == "bad" else value
    assert hookd_client._parse_max(text) == client
    script = SHELL_CLIENT.read_text()
    function = re.search(r"^spool_max\(\) \{.*?^\}\n", script, re.M | re.S).group(0)
    sh = subprocess.run(
        ["sh", "-c", f'{function}spool_max; echo "${{max:-unlimited}}"'],
        env={**os.environ, "HOOKD_SPOOL_MAX": text},
        capture_output=True,
        text=True,
    )
    assert sh.stdout.strip() == ("unlimited" if client is None else str(client)), sh.stderr
    if value == "bad" and text:
        with pytest.raises(ValueError):
            spool_limit(text)
    elif value == "bad":
        pass
    else:
        assert spool_limit(text) == value


# -- what emit() costs near the cap ---------------------------------------------------------


@pytest.fixture
def ram_spool(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The spool on tmpfs when there is one, so that the timing is the client's, not the disk's."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="hookd-test-", dir=shm)) if os.access(shm, os.W_OK) else home
    monkeypatch.setenv("HOOKD_SOCKET", str(home / "nowhere.sock"))
    monkeypatch.setenv("HOOKD_SPOOL_DIR", str(base / "spool"))
    try:
        yield base / "spool"
    finally:
        if base != home:
            shutil.rmtree(base, ignore_errors=True)


def test_emit_latency_spooling_up_to_the_cap_and_past_it(ram_spool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prints emit()'s latency with no daemon: spooling far below the cap, in the last tenth
    before it, and dropping past it (the figures in docs/reliability.md come from
    bench/spool_cap.py, which does the same at more length)."""
    monkeypatch.setenv("HOOKD_SPOOL_MAX", "4MiB")
    event = {"tool_name": "Read", "tool_input": {"file_path": "/home/dev/proj/src/app.py"}, "pad": "x" * 200}
    phases: dict[str, list[float]] = {"below": [], "near": [], "past": []}
    clock = time.perf_counter_ns
    while len(phases["past"]) < 3000:
        used = spool.usage(ram_spool)
        t0 = clock()
        ok = hookd_client.emit("post_tool_use", event)
        elapsed = clock() - t0
        phase = "past" if not ok else ("near" if used > 0.9 * (4 << 20) else "below")
        phases[phase].append(elapsed / 1000)
    report = {k: (statistics.median(v), sorted(v)[int(len(v) * 0.99)], len(v)) for k, v in phases.items()}
    print("\nemit() latency with the spool on", ram_spool, "(p50 µs, p99 µs, calls):", report)
    assert report["near"][2] > 1000 and report["below"][2] > 10_000
    assert sum(phases["past"]) / 1e6 < 1.5, "3000 dropped emits take well under a second"
    assert spool.read_drops(ram_spool, spool.DROPPED_NAME).events == 3000


# -- the daemon's own growth: rejected ------------------------------------------------------


@pytest.mark.slow
def test_a_flood_of_bad_lines_keeps_the_latest_rejected_rows_and_counts_all(daemon: Daemon) -> None:
    n = schema.REJECTED_KEPT + 1500
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(daemon.socket))
        s.sendall(b"".join(b"not json %d\n" % i for i in range(n)) + b'{"type":"after"}\n')
    assert daemon.wait_count(1) == 1
    assert daemon.stop() == 0, daemon.logtext
    assert daemon.query("SELECT value FROM counters WHERE name = 'rejected.invalid_json'") == [(n,)]
    rows = daemon.query("SELECT preview FROM rejected ORDER BY rid")
    assert len(rows) == schema.REJECTED_KEPT
    assert rows[0][0] == f"not json {n - schema.REJECTED_KEPT}" and rows[-1][0] == f"not json {n - 1}"


def rss_kb(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in text.splitlines() if line.startswith("VmRSS")).split()[1])


@pytest.mark.slow
def test_a_client_that_does_not_read_its_acknowledgements_is_not_buffered_without_bound(daemon: Daemon) -> None:
    """400,000 ``?`` lines sent without reading a reply: once the replies it owes pass the
    transport's high-water mark, the daemon reads no more of them (what it had read already,
    up to a full pipeline, is committed), so its memory stops growing; once the client reads,
    everything is committed and answered, in order."""
    assert daemon.proc is not None
    n = 400_000
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(daemon.socket))
    sender = threading.Thread(target=s.sendall, args=(b'?{"type":"x"}\n' * n,), daemon=True)
    sender.start()
    time.sleep(2)
    held, rss = daemon.count(), rss_kb(daemon.proc.pid)
    time.sleep(3)
    assert sender.is_alive(), "the daemon read every request although no reply was read"
    assert daemon.count() == held < n
    assert rss_kb(daemon.proc.pid) - rss < 5_000, "memory stays flat meanwhile"
    replies = bytearray()
    s.settimeout(30)
    while replies.count(b"\n") < n:  # now read: the daemon takes the rest as replies drain
        chunk = s.recv(1 << 20)
        assert chunk, f"closed after {replies.count(10)} replies"
        replies += chunk
    sender.join(30)
    s.close()
    lines = bytes(replies).splitlines()
    assert len(lines) == n and all(line.startswith(b'{"ok":true,"eid":') for line in lines)
    eids = [int(line[len(b'{"ok":true,"eid":') : -1]) for line in lines]
    assert eids == sorted(eids)
    assert daemon.wait_count(n) == n
