"""The control socket: `hookd status` and `hookd tail -f` answer while the daemon is flooded.

Backpressure stops the daemon accepting on its event socket; control commands have a socket of
their own (``<socket>.ctl``) that is never paused. These tests make the backpressure certain
(the writer process is stopped with SIGSTOP, so nothing commits) instead of racing a flood
against the question.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from test_hardening import as_other_user, good, reap, stream, writer_pid

from conftest import Daemon, clean_env, wait_for
from hookd import paths
from hookd.ops import reading as queries


def status_json(home: Path, code: int = 0) -> dict:
    """``hookd status --json``: exit 0 with a daemon, 3 without (docs/operations.md)."""
    out = subprocess.run(
        [sys.executable, "-m", "hookd", "status", "--json"],
        env=clean_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == code, out.stderr
    return json.loads(out.stdout)


def paused(sock: Path) -> bool:
    st = queries.daemon_status(sock)
    return bool(st and st["queue"]["reading_paused"])


def test_status_and_a_new_follower_are_answered_while_the_writer_is_stopped_and_events_flood_in(
    home: Path,
) -> None:
    d = Daemon(home).start()
    wpid = writer_pid(d)
    n = 60_000
    flood = threading.Thread(target=stream, args=(d.socket, [good(i, "flood") + b"\n" for i in range(n)]))
    follower = None
    try:
        assert (home / "hookd.sock.ctl").is_socket()
        os.kill(wpid, signal.SIGSTOP)  # nothing commits from here on: backpressure is certain
        flood.start()
        assert wait_for(lambda: paused(d.socket), 60), d.logtext
        # The event socket no longer accepts (the flood's clients are stuck in sendall) ...
        assert flood.is_alive()
        # ... and every question is answered at once, not after status's 3 s timeout.
        for _ in range(5):
            t0 = time.monotonic()
            st = queries.daemon_status(d.socket)
            took = time.monotonic() - t0
            assert st is not None and took < 1.0, (took, st)
            assert st["queue"]["reading_paused"] is True
            assert st["queue"]["inflight_batches"] >= 8  # max_inflight reached: the pipeline is full
        full = status_json(home)
        daemon = full["daemon"]
        assert daemon is not None, full
        assert daemon["writer"]["state"] == "ok"
        assert daemon["queue"]["reading_paused"] is True
        assert 0 < daemon["since_start"]["received"] < n
        assert daemon["since_start"]["committed"] == 0
        assert daemon["control_socket"] == str(home / "hookd.sock.ctl")
        # A follower that starts during the flood is taken on, and gets every event once the
        # writer runs again.
        follower = subprocess.Popen(
            [sys.executable, "-m", "hookd", "tail", "-f", "-n", "0", "--json", "--type", "flood"],
            env=clean_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert wait_for(lambda: (queries.daemon_status(d.socket) or {}).get("followers") == 1, 30)
        os.kill(wpid, signal.SIGCONT)
        flood.join(120)
        assert not flood.is_alive()
        assert d.wait_count(n, timeout=120, where="type = 'flood'") == n
        assert follower.stdout is not None
        seen = set()
        while len(seen) < n:
            line = follower.stdout.readline()
            assert line, "the follower ended early"
            seen.add(json.loads(line)["data"]["i"])
        assert seen == set(range(n))
        assert d.stop() == 0, d.logtext
    finally:
        try:
            os.kill(wpid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        d.kill()
        reap(follower)
        if follower is not None:
            for f in (follower.stdout, follower.stderr):
                if f is not None:
                    f.close()
    # The daemon removes its control socket when it stops; status says it is down.
    assert not (home / "hookd.sock.ctl").exists()
    assert status_json(home, code=3)["daemon"] is None


def test_the_control_socket_refuses_other_users_and_takes_no_events(home: Path) -> None:
    d = Daemon(home).start()
    ctl = paths.control_path(d.socket)
    try:
        st = os.stat(ctl)
        assert st.st_mode & 0o777 == 0o600
        # Events are not taken here: the sender is told where they go.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(ctl))
            s.sendall(good(0) + b"\n")
            reply = json.loads(s.makefile("rb").readline())
        assert reply["ok"] is False and reply["reason"] == "bad_command"
        assert "event socket" in reply["detail"]
        # Another user is refused and counted, as on the event socket.
        os.chmod(home, 0o711)
        os.chmod(ctl, 0o666)
        r = as_other_user(ctl)
        assert r.startswith("closed:") or json.loads(r[6:])["reason"] == "refused_uid", r
        d.send(good(1) + b"\n")
        assert d.wait_count(1) == 1
        assert wait_for(lambda: d.query("SELECT value FROM counters WHERE name = 'connections.refused_uid'") == [(1,)])
        assert d.stop() == 0
    finally:
        d.kill()
    assert d.count("type = 'good'") == 1


def test_a_stale_control_socket_is_replaced_and_status_falls_back_to_the_event_socket(home: Path) -> None:
    d = Daemon(home).start()
    ctl = paths.control_path(d.socket)
    d.kill()  # kill -9: both socket files stay behind
    assert ctl.is_socket()
    assert queries.daemon_status(d.socket) is None  # refused on both: no daemon
    d.start()
    try:
        assert ctl.is_socket() and queries.daemon_status(d.socket) is not None
        os.unlink(ctl)  # as a daemon from before the control socket: status asks the event socket
        st = queries.daemon_status(d.socket)
        assert st is not None and st["running"] is True
        assert d.stop() == 0
    finally:
        d.kill()


def test_a_control_connection_that_sends_nothing_is_closed(home: Path) -> None:
    """It must not hold a descriptor for ever (idle_timeout); others are served meanwhile."""
    d = Daemon(home, "--idle-timeout", "0.5").start()
    ctl = paths.control_path(d.socket)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        silent.connect(str(ctl))
        assert queries.daemon_status(d.socket) is not None
        silent.settimeout(60)
        assert silent.recv(1) == b""  # closed by the daemon
        assert wait_for(
            lambda: d.query("SELECT value FROM counters WHERE name = 'connections.idle_timeout'") == [(1,)], 30
        )
        assert d.stop() == 0
    finally:
        silent.close()
        d.kill()


def test_a_command_on_the_event_socket_gets_the_same_control_protocol(home: Path) -> None:
    """A ``!`` command that arrives after the accept (in pieces, or never finished) is handed
    from the event connection to the control protocol: answered, or closed at idle_timeout."""
    d = Daemon(home, "--idle-timeout", "0.5").start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(d.socket))
            time.sleep(0.2)  # accepted before any byte: an event connection at first
            s.sendall(b"!sta")
            time.sleep(0.1)
            s.sendall(b"tus\n")
            assert json.loads(s.makefile("rb").readline())["running"] is True
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(d.socket))
            time.sleep(0.2)
            s.sendall(b"!stat")  # never finished
            s.settimeout(30)
            assert s.recv(1) == b""  # closed by the daemon
        assert wait_for(
            lambda: d.query("SELECT value FROM counters WHERE name = 'connections.idle_timeout'") == [(1,)], 30
        )
        d.send(good(0) + b"\n")  # the event path is unaffected
        assert d.wait_count(1) == 1
        assert d.stop() == 0
    finally:
        d.kill()
