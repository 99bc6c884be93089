"""Forwarding without a PostgreSQL: the [forward] keys (a password in the URL refused, the
host's default shown), and retention sparing events that are not forwarded yet."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import clean_env
from hookd import forwarding
from hookd.wire import Policy
from hookd.writer import retention, schema


def hookd(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookd", *args], env=clean_env(home, **env), capture_output=True, text=True
    )


def test_a_password_in_the_url_is_refused_and_the_host_defaults_to_the_machine_id(home: Path) -> None:
    bad = hookd(home, "config", HOOKD_FORWARD_URL="postgresql://hookd:s3cret@db.example/hookd")
    assert bad.returncode == 2
    assert "HOOKD_FORWARD_URL: must not hold a password" in bad.stderr and "s3cret" not in bad.stderr
    bad = hookd(home, "config", HOOKD_FORWARD_URL="postgresql://db.example/hookd?password=x")
    assert bad.returncode == 2 and "must not hold a password" in bad.stderr
    bad = hookd(home, "config", HOOKD_FORWARD_URL="mysql://db.example/hookd")
    assert bad.returncode == 2 and "postgresql://" in bad.stderr
    shown = hookd(home, "config", HOOKD_FORWARD_URL="postgresql://hookd@db.example/hookd").stdout
    assert 'url = "postgresql://hookd@db.example/hookd"  # env HOOKD_FORWARD_URL' in shown
    assert f'host = "{forwarding.machine_id()}"  # default' in shown
    assert 'url = "off"  # default' in hookd(home, "config").stdout
    named = hookd(home, "config", HOOKD_FORWARD_HOST="ci-runner-3").stdout
    assert 'host = "ci-runner-3"  # env HOOKD_FORWARD_HOST' in named
    assert hookd(home, "config", HOOKD_FORWARD_HOST="bad host").returncode == 2


def store(tmp_path: Path, rows: list[tuple[int, str, float]]):
    """A local store holding events (eid, type, ts), as the writer makes it."""
    db = schema.connect(tmp_path / "events.db")
    schema.migrate(db)
    db.execute("BEGIN")
    data = '{"pad": "%s"}' % ("x" * 200)
    schema.insert_events(db, [(eid, t, ts, None, None, ts, 1, 0, data) for eid, t, ts in rows], [])
    db.execute(schema.TYPES_FROM_RANGE, (rows[0][0], rows[-1][0]))
    db.execute("COMMIT")
    return db


def eids(db) -> list[int]:
    return [e for (e,) in db.execute("SELECT eid FROM events ORDER BY eid")]


def test_the_age_rule_keeps_events_not_forwarded_yet(tmp_path: Path) -> None:
    old = time.time() - 10 * 86400
    db = store(tmp_path, [(i, "tool", old) for i in range(1, 101)])
    r = retention.step(db, Policy(max_age=86400, forwarded=60))
    assert r.age == 60 and r.unforwarded == 0
    assert eids(db) == list(range(61, 101))
    assert retention.step(db, Policy(max_age=86400, forwarded=0)).age == 0  # nothing known: all kept
    assert retention.step(db, Policy(max_age=86400, forwarded=None)).age == 40  # forwarding off
    assert eids(db) == []


def test_the_size_rule_deletes_forwarded_events_first_and_counts_the_others(tmp_path: Path) -> None:
    now = time.time()
    db = store(tmp_path, [(i, "tool", now) for i in range(1, 2001)])
    full = retention.data_size(db)
    policy = Policy(max_size=full * 6 // 10, forwarded=500, step_rows=100)  # about 800 events must go
    steps = []
    while True:
        steps.append(retention.step(db, policy))
        if not steps[-1].more:
            break
    # Forwarded events first (steps of 100, none of them unforwarded), then the others, counted.
    assert [r.unforwarded for r in steps[:5]] == [0] * 5 and sum(r.size for r in steps[:5]) == 500
    left = eids(db)
    assert left[0] > 501 and left[-1] == 2000
    unforwarded = db.execute("SELECT value FROM counters WHERE name = ?", (retention.UNFORWARDED,)).fetchone()[0]
    assert unforwarded == left[0] - 501 == sum(r.unforwarded for r in steps)
    assert retention.data_size(db) <= policy.max_size


def test_the_state_file_is_the_retention_cursor_only_for_the_forwarding_configured(tmp_path: Path) -> None:
    class S:
        forward_url = "postgresql://a@b/c"
        forward_host = "h"

        class paths:  # noqa: N801
            db = tmp_path / "events.db"

    assert forwarding.forwarded_eid(S) == 0  # no state yet: keep everything
    path = forwarding.state_path(S.paths.db)
    forwarding.write_state(path, forwarding.ForwardState(url=S.forward_url, host="h", last_eid=42))
    assert forwarding.forwarded_eid(S) == 42
    forwarding.write_state(path, forwarding.ForwardState(url=S.forward_url, host="other", last_eid=42))
    assert forwarding.forwarded_eid(S) == 0  # another host's cursor means nothing here
    S.forward_url = None
    assert forwarding.forwarded_eid(S) is None


def test_the_service_unit_allows_tcp_for_the_forwarder() -> None:
    from hookd.ops import service

    exe = Path("/usr/local/bin/hookd")
    plain = service.render("hookd.service", exe).splitlines()
    assert "RestrictAddressFamilies=AF_UNIX" in plain
    forwarding_unit = service.render("hookd.service", exe, forward=True).splitlines()
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in forwarding_unit
    both = service.render("hookd.service", exe, "127.0.0.1:8787", forward=True).splitlines()
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_NETLINK AF_INET6" in both
    assert "Wants=hookd-http.socket" in both
