"""Retention through the real daemon: age and size rules in the writer, mirror compression and
deletion, gzip readers (recovery, rebuild), the WAL truncation, and `hookd vacuum`."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import Daemon, clean_env
from conftest import wait_until as wait_for
from hookd.writer.mirror import Mirror

HERE = Path(__file__).resolve().parent
DAY = 86400.0


class Retaining(Daemon):
    """The daemon with Settings fields set directly (tests/serve_settings.py)."""

    command = (str(HERE / "serve_settings.py"),)

    def __init__(self, home: Path, **fields: object) -> None:
        fields.setdefault("retention_interval", 0.2)
        super().__init__(home, json.dumps(fields))


def lines(etype: str, ts: float, n: int, pad: int = 0) -> bytes:
    extra = ', "pad": "%s"' % ("x" * pad) if pad else ""
    return b"".join(
        b'{"type": "%s", "ts": %r, "i": %d%s}\n' % (etype.encode(), ts, i, extra.encode()) for i in range(n)
    )


def counter(d: Daemon, name: str) -> int:
    rows = d.query("SELECT value FROM counters WHERE name = ?", (name,))
    return rows[0][0] if rows else 0


def vacuum(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookd", "vacuum", *args], env=clean_env(home), capture_output=True, text=True
    )


def test_age_rule_per_type_and_event_types_kept_consistent(home: Path) -> None:
    now = time.time()
    d = Retaining(home, max_age=3600, type_max_age={"keep": None, "short": 60}).start()
    try:
        d.send(
            lines("keep", now - 10 * DAY, 5)  # kept forever, however old
            + lines("tool", now - 2 * 3600, 7)  # past max_age
            + lines("tool", now, 3)
            + lines("short", now - 120, 4)  # past its own 60 s
            + lines("gone", now - 5 * 3600, 2)  # all of a type deleted
        )
        wait_for(lambda: counter(d, "retention.deleted") == 13, what="13 deletions")
        assert d.stop() == 0, d.logtext
    finally:
        d.kill()
    assert dict(d.query("SELECT type, count(*) FROM events GROUP BY type")) == {"keep": 5, "tool": 3}
    types = {t: (c, f, last) for t, c, f, last in d.query("SELECT type, count, first_ts, last_ts FROM event_types")}
    assert types["keep"][0] == 5 and abs(types["keep"][1] - (now - 10 * DAY)) < 1
    assert types["tool"][0] == 3 and abs(types["tool"][1] - now) < 1  # first_ts moved up
    assert types["short"][0] == 0 and types["gone"][0] == 0  # rows kept: status knows them
    assert abs(types["gone"][2] - (now - 5 * 3600)) < 1  # when it was last seen
    assert counter(d, "retention.deleted.age") == 13 and counter(d, "retention.deleted.size") == 0
    assert "retention deleted 13 events (13 by age, 0 by size)" in d.logtext

    # the next start does not replay the deleted events from the mirror (they were the newest:
    # recovery's floor is the eid high-water mark), and a type back after all its events were
    # deleted counts from its new events
    d2 = Daemon(home).start()
    try:
        d2.send(lines("gone", now, 1))
        assert d2.wait_count(1, where="type = 'gone'") == 1
        assert d2.stop() == 0
    finally:
        d2.kill()
    assert d2.query("SELECT count, first_ts FROM event_types WHERE type = 'gone'") == [(1, now)]


def test_size_rule_deletes_the_oldest_but_spares_types_kept_forever(home: Path) -> None:
    now = time.time()
    limit = 1 << 20
    d = Retaining(home, max_size=limit, type_max_age={"keep": None}).start()
    try:
        d.send(lines("keep", now - DAY, 300, pad=200))  # the oldest, but kept
        d.send(lines("tool", now, 12_000, pad=300))  # about 5 MiB

        def small() -> bool:
            pages, free, size = (d.query(f"PRAGMA {p}")[0][0] for p in ("page_count", "freelist_count", "page_size"))
            return (pages - free) * size <= limit and counter(d, "retention.deleted.size") > 0

        wait_for(small, what="data under max_size")
        assert d.stop() == 0, d.logtext
    finally:
        d.kill()
    assert d.count("type = 'keep'") == 300
    left = [i for (i,) in d.query("SELECT json_extract(data, '$.i') FROM events WHERE type = 'tool' ORDER BY eid")]
    assert 0 < len(left) < 12_000
    assert left == list(range(12_000 - len(left), 12_000)), "the newest are kept"
    assert counter(d, "retention.deleted.size") == 12_000 - len(left)
    assert d.query("SELECT count FROM event_types WHERE type = 'tool'") == [(len(left),)]


class Acker(threading.Thread):
    """Sends acknowledged events one at a time on one connection; records when each was acked."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.acks: list[tuple[float, float]] = []  # (sent, acked), monotonic
        self.halt = threading.Event()

    def run(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.path))
            f = s.makefile("rb")
            i = 0
            while not self.halt.is_set():
                sent = time.monotonic()
                s.sendall(b'?{"type": "live", "i": %d}\n' % i)
                assert json.loads(f.readline())["ok"]
                self.acks.append((sent, time.monotonic()))
                i += 1
                time.sleep(0.002)


def test_deletion_in_steps_while_ingesting_and_the_wal_is_truncated_after(home: Path) -> None:
    n = 30_000
    d = Retaining(home, max_age=3600, wal_truncate_bytes=1 << 20).start()
    wal = home / "events.db-wal"
    sizes: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.005):
            sizes.append(wal.stat().st_size if wal.exists() else 0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        due = time.time() + 6.0  # these events become older than max_age in 6 s
        d.send(lines("tool", due - 3600, n, pad=200))
        assert d.wait_count(n) == n
        assert time.time() < due - 1, "ingest too slow for this test's timing"
        acker = Acker(d.socket)
        acker.start()
        first_gone = done = None
        while done is None:
            left = d.count("type = 'tool'")
            if left < n and first_gone is None:
                first_gone = time.monotonic()
            if left == 0:
                done = time.monotonic()
            assert time.monotonic() < due + 30, "retention did not finish"
            time.sleep(0.01)
        small = wait_for(lambda: (wal.stat().st_size < (1 << 20)) or None, what="the -wal truncated")
        time.sleep(0.3)
        acker.halt.set()
        acker.join(10)
        assert d.stop() == 0, d.logtext
    finally:
        sampling.set()
        d.kill()
    peak = max(sizes)
    assert small and peak > (1 << 20), f"the -wal peaked at {peak} bytes"
    assert peak < 64 << 20, f"the -wal grew to {peak} bytes"
    assert counter(d, "retention.deleted.age") == n
    during = [a for s, a in acker.acks if first_gone <= s and a <= done]
    assert during, "events were acknowledged while retention was deleting"
    assert d.count("type = 'live'") == len(acker.acks)
    worst = max(a - s for s, a in acker.acks)
    print(f"acks: {len(acker.acks)}, {len(during)} during retention; worst {worst * 1000:.1f} ms; wal peak {peak}")
    assert worst < 1.0, f"an acknowledgement took {worst:.3f} s during retention"


def write_day(mirror: Path, day: str, records: list[dict], gz: bool = False) -> Path:
    mirror.mkdir(mode=0o700, exist_ok=True)
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    path = mirror / f"{day}.jsonl{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def record(eid: int, etype: str = "old", ts: float = 1e9) -> dict:
    return {
        "eid": eid,
        "type": etype,
        "ts": ts,
        "session": None,
        "id": None,
        "recv_ts": ts,
        "pid": 1,
        "uid": 1,
        "data": {"type": etype, "n": eid},
    }


def test_past_days_are_compressed_and_still_read_by_recovery_and_rebuild(home: Path) -> None:
    d = Daemon(home).start()
    d.send(lines("a", time.time(), 500))
    assert d.stop() == 0 and d.count() == 500
    mirror = home / "mirror"
    (today,) = mirror.glob("*.jsonl")
    original = today.read_bytes()
    past = today.rename(mirror / "2020-03-01.jsonl")  # a finished day
    live = d.query("SELECT * FROM events ORDER BY eid")

    r = Retaining(home).start()  # mirror_compress is on by default
    try:
        gz = mirror / "2020-03-01.jsonl.gz"
        wait_for(lambda: gz.exists() and not past.exists(), what="compression")
        r.send(lines("b", time.time(), 10))
        assert r.wait_count(510) == 510
        assert r.stop() == 0, r.logtext
    finally:
        r.kill()
    assert gzip.decompress(gz.read_bytes()) == original
    assert not list(mirror.glob("*.tmp"))
    assert [p.name.endswith(".jsonl") for p in sorted(mirror.iterdir())] == [False, True]

    # recovery reads the .gz: a deleted database is replayed from the whole mirror
    for p in home.glob("events.db*"):
        p.unlink()
    d.start()
    assert d.stop() == 0
    assert d.count() == 510
    assert d.query("SELECT * FROM events WHERE type = 'a' ORDER BY eid") == live

    # rebuild reads it too
    out = subprocess.run(
        [sys.executable, "-m", "hookd", "rebuild"], env=clean_env(home), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "510 events from 2 mirror file(s)" in out.stdout


def test_recovery_reads_only_what_is_newer_across_plain_and_gz_files(tmp_path: Path) -> None:
    mirror = tmp_path / "m"
    write_day(mirror, "2020-01-01", [record(e) for e in (1, 2, 3)], gz=True)
    write_day(mirror, "2020-01-02", [record(e) for e in (4, 5)], gz=True)
    write_day(mirror, "2020-01-03", [record(e) for e in (6, 7)])
    m = Mirror(mirror)
    assert [r.eid for r in m.records_after(0)] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.eid for r in m.records_after(4)] == [5, 6, 7]
    assert [r.eid for r in m.records_after(6)] == [7]
    # a crash between the rename of X.jsonl.gz and the unlink of X.jsonl: the next upkeep
    # removes the plain copy instead of compressing it again
    write_day(mirror, "2020-01-02", [record(e) for e in (4, 5)])
    assert [r.eid for r in m.records_after(3)] == [4, 5, 4, 5, 6, 7]  # harmless: eids are unique keys
    done = m.maintain(compress=True)
    assert "2020-01-02.jsonl" in done.compressed and "2020-01-03.jsonl" in done.compressed
    assert sorted(p.name for p in mirror.iterdir()) == [f"2020-01-0{i}.jsonl.gz" for i in (1, 2, 3)]
    assert [r.eid for r in m.records_after(0)] == [1, 2, 3, 4, 5, 6, 7]


def test_mirror_files_are_deleted_by_age_and_size_but_never_today(home: Path) -> None:
    mirror = home / "mirror"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    old = [write_day(mirror, day, [record(i)] * 200, gz=True) for i, day in enumerate(["2020-01-01", "2020-01-02"])]
    recent = [
        write_day(mirror, time.strftime("%Y-%m-%d", time.gmtime(time.time() - k * DAY)), [record(k + 10)] * 2000)
        for k in (3, 2)
    ]
    limit = recent[1].stat().st_size + 2000  # the newer past day and today's few lines fit
    d = Retaining(home, mirror_max_age=30 * DAY, mirror_max_size=limit, mirror_compress=False).start()
    try:
        d.send(lines("c", time.time(), 3))
        assert d.wait_count(3) == 3
        wait_for(lambda: not any(p.exists() for p in [*old, recent[0]]), what="old mirror files deleted")
        assert d.stop() == 0, d.logtext
    finally:
        d.kill()
    names = sorted(p.name for p in mirror.iterdir())
    assert names == [recent[1].name, f"{today}.jsonl"], names
    assert "mirror: compressed 0 file(s), deleted" in d.logtext


def test_vacuum_deletes_by_age_then_shrinks_the_file(home: Path) -> None:
    now = time.time()
    d = Daemon(home).start()
    d.send(lines("old", now - 40 * DAY, 20_000, pad=300) + lines("new", now, 100))
    assert d.wait_count(20_100) == 20_100
    out = vacuum(home)
    assert out.returncode == 1
    assert "stop it first" in out.stderr.lower() and "hookd vacuum" in out.stderr
    assert d.stop() == 0
    before = (home / "events.db").stat().st_size

    bad = vacuum(home, "--max-age", "lots")
    assert bad.returncode == 2 and "--max-age: expected a duration such as 30s" in bad.stderr

    out = vacuum(home, "--max-age", "30d")
    assert out.returncode == 0, out.stderr
    assert "20000 events deleted" in out.stdout and " -> " in out.stdout
    after = (home / "events.db").stat().st_size
    assert after < before / 5, (before, after)
    assert d.count() == 100 and d.count("type = 'old'") == 0
    assert d.query("SELECT count FROM event_types WHERE type = 'old'") == [(0,)]
    assert d.query("PRAGMA freelist_count") == [(0,)]
    assert not (home / "events.db-wal").exists() or (home / "events.db-wal").stat().st_size == 0
    # the daemon starts on the vacuumed file and keeps going
    d.start()
    d.send(lines("new", now, 1))
    assert d.wait_count(101) == 101
    assert d.stop() == 0


def test_retention_settings_are_validated() -> None:
    import pytest

    from hookd.errors import ConfigError
    from hookd.paths import resolve
    from hookd.settings import Settings

    paths = resolve({"HOOKD_HOME": "/tmp/x"})
    Settings(paths, max_age=60, type_max_age={"pre_tool_use": None, "a": 5}, max_size=1 << 20).validate()
    for bad, msg in [
        ({"max_age": 0}, "max_age"),
        ({"type_max_age": {"PreToolUse": 60}}, "'pre_tool_use'"),
        ({"type_max_age": {"x": -1}}, "type 'x'"),
        ({"max_size": 100}, "max_size"),
        ({"mirror_max_size": 0}, "mirror_max_size"),
        ({"retention_interval": 0}, "retention.interval"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            Settings(paths, **bad).validate()  # type: ignore[arg-type]
    assert os.path.basename(str(paths.db)) == "events.db"
