"""Start-up (issue 13, items 1, 2, 5, 9): mistakes refused before "ready", in one line; every
start-up wait ends at SIGTERM or SIGINT; the start says what it did and where clients look.

Real daemon processes. The read-only cases run the daemon as another user (uid 65534): the
suite runs as root, and root writes whatever the file modes say.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from conftest import ROOT, Daemon, clean_env, wait_for
from hookd import db_lock

NOBODY = 65534


def refused(d: Daemon, timeout: float = 30) -> int:
    """Wait for a daemon that must refuse to start; its exit status. Fails if it got ready."""
    assert d.proc is not None
    try:
        code = d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        d.kill()
        pytest.fail("the daemon did not refuse (still running):\n" + d.logtext)
    d._exited.wait(5)
    assert ": ready:" not in d.logtext, d.logtext
    assert "Traceback" not in d.logtext, d.logtext
    return code


# -- item 1: one daemon per database; signals during start-up -----------------------------------


def test_second_daemon_on_the_same_database_is_refused_before_binding(daemon: Daemon, tmp_path: Path) -> None:
    other = daemon.home / "other"
    env = clean_env(other, HOOKD_DB=str(daemon.db_path))
    second = Daemon(other, env=env).start(wait=False)
    assert refused(second, 20) == 1
    assert daemon.proc is not None
    assert f"database {daemon.db_path} is in use by hookd pid {daemon.proc.pid} (socket {daemon.socket})" in (
        second.logtext
    )
    assert f"export HOOKD_SOCKET={daemon.socket}" in second.logtext
    assert not (other / "hookd.sock").exists()  # never bound: no client handed it an event
    # The offline commands name the daemon too, whatever its socket.
    out = subprocess.run([sys.executable, "-m", "hookd", "vacuum"], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert f"is in use by hookd pid {daemon.proc.pid} (socket {daemon.socket})" in out.stderr
    daemon.send(b'{"type":"still_served"}\n')
    assert daemon.wait_count(1) == 1
    assert daemon.stop() == 0


def test_a_daemon_does_not_start_on_a_database_a_command_is_rewriting(home: Path) -> None:
    with db_lock.for_command(home / "events.db", "hookd rebuild"):  # as `hookd rebuild` holds it
        d = Daemon(home).start(wait=False)
        assert refused(d) == 1
    assert f"is in use by `hookd rebuild` (pid {os.getpid()}); wait for it to finish" in d.logtext
    assert not d.socket.exists()
    d.start()  # and once it is done, the start goes ahead
    assert d.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_the_writer_waits_for_its_lock_ends_the_start(home: Path, sig: int) -> None:
    """A writer still finishing (or `hookd import`) holds the writer lock: the start waits for
    it, and a SIGTERM or SIGINT meanwhile ends it at once, exit 0, having accepted nothing: a
    client meanwhile finds no socket and spools, and its event is stored at the next start."""
    lock = os.open(home / "events.db.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    d = Daemon(home).start(wait=False)
    try:
        assert wait_for(lambda: "waiting for it to finish" in d.logtext), d.logtext
        assert not d.socket.exists()
        emit = "import hookd_client; assert hookd_client.emit('while_starting')"
        subprocess.run([sys.executable, "-c", emit], env=clean_env(home), check=True, timeout=30)
        t = time.monotonic()
        assert d.stop(sig, timeout=10) == 0, d.logtext
        assert time.monotonic() - t < 5
    finally:
        d.kill()
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert "stopped before ready" in d.logtext and "Traceback" not in d.logtext, d.logtext
    # The writer was killed with its daemon: nobody takes the lock we just let go.
    time.sleep(0.3)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(lock)
    d.start()
    try:
        assert d.wait_count(1, where="type = 'while_starting'") == 1
        assert d.stop() == 0
    finally:
        d.kill()


# -- item 2: a store the daemon cannot write ------------------------------------------------------


#: What the daemon and its writer import, beside hookd itself.
RUNTIME_PACKAGES = (
    "uvloop",
    "msgspec",
    "aiosqlite",
    "apsw",
    "httptools",
    "typing_extensions.py",
    "google",
    "opentelemetry",
)


def readable_copy_of_hookd() -> list[Path]:
    """hookd and its runtime packages, copied once per test run where uid 65534 can read them:
    a clean clone (and its .venv) may sit in a directory only root can enter (`mktemp -d`)."""
    root = Path("/tmp") / f"hookd-for-uid-{NOBODY}-{os.getpid()}"  # /tmp: every user can enter it
    if not root.exists():
        atexit.register(shutil.rmtree, root, True)
        tmp = Path(f"{root}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ROOT / "daemon" / "hookd", tmp / "src" / "hookd", ignore=shutil.ignore_patterns("__pycache__"))
        site = Path(sysconfig.get_paths()["purelib"])
        for name in RUNTIME_PACKAGES:
            if (site / name).is_dir():
                shutil.copytree(site / name, tmp / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif (site / name).exists():
                (tmp / "site").mkdir(parents=True, exist_ok=True)
                shutil.copy2(site / name, tmp / "site" / name)
        for d in (tmp, *tmp.rglob("*")):
            d.chmod(0o755 if d.is_dir() else 0o644 | (d.stat().st_mode & 0o111))
        tmp.rename(root)
    return [root / "src", root / "site"]


def other_user_python(env: dict[str, str]) -> list[str]:
    """A command running hookd's Python as uid 65534, for the daemon and the writer it starts.

    The venv's interpreter may live where that user cannot go (pyenv under /root): the daemon
    starts, but not its writer. The system's python3 of the same version runs the same code with
    the venv's packages on PYTHONPATH."""
    setpriv = shutil.which("setpriv")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.getuid() != 0 or setpriv is None or python is None:
        pytest.skip("needs root, setpriv and /usr/bin/python3 to run the daemon as another user")
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in readable_copy_of_hookd())
    cmd = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python]
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    probe = "import sys, hookd.daemon.app, hookd.writer.writer; print('%d.%d' % sys.version_info[:2])"
    out = subprocess.run([*cmd, "-c", probe], env=env, capture_output=True, text=True, cwd="/")
    if out.returncode != 0 or out.stdout.strip() != want:
        pytest.skip(f"{python} cannot run hookd as uid {NOBODY} (needs Python {want}): {out.stderr[-200:]}")
    return cmd


@pytest.mark.parametrize("what", ["database file", "database directory", "mirror directory", "spool directory"])
def test_a_store_it_cannot_write_is_refused_before_ready(home: Path, what: str) -> None:
    """Before: "ready", then a traceback at the first event, a crash loop under systemd, and an
    event answered store_failed stored later from the mirror. Now: exit 1 at start, one line."""
    mine = home / "other"
    env = clean_env(mine, HOOKD_DB=str(mine / "data" / "events.db"))
    cmd = other_user_python(env)
    os.chmod(home, 0o711)
    d = Daemon(mine, env=env).start()  # as root: a database with one event, to be handed over
    try:
        d.send(b'{"type":"x"}\n')
        assert d.stop() == 0
    finally:
        d.kill()
    db = sqlite3.connect(mine / "data" / "events.db")
    assert db.execute("SELECT count(*) FROM events").fetchone() == (1,)
    db.close()
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(mine)], check=True)
    target = {
        "database file": mine / "data" / "events.db",
        "database directory": mine / "data",
        "mirror directory": mine / "mirror",
        "spool directory": mine / "spool",
    }[what]
    mode = target.stat().st_mode
    os.chmod(target, 0o444 if target.is_file() else 0o555)
    proc = subprocess.run([*cmd, "-m", "hookd", "run"], env=env, capture_output=True, text=True, timeout=30, cwd="/")
    assert proc.returncode == 1, proc.stderr
    assert "ready" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert str(target) in proc.stderr and "chmod u+w" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    if what == "database file":  # the same start with the mode put back: the recipe itself works
        os.chmod(target, mode)
        with subprocess.Popen([*cmd, "-m", "hookd", "run"], env=env, stderr=subprocess.PIPE, text=True, cwd="/") as ok:
            assert ok.stderr is not None
            lines = []
            for line in ok.stderr:
                lines.append(line)
                if ": ready:" in line:
                    ok.send_signal(signal.SIGTERM)
        assert ok.returncode == 0 and any(": ready:" in line for line in lines), "".join(lines)


# -- item 5: --db a directory; a new database on an existing mirror -------------------------------


def test_db_path_that_is_a_directory_is_a_usage_error(home: Path) -> None:
    (home / "dbdir").mkdir()
    d = Daemon(home, "--db", str(home / "dbdir")).start(wait=False)
    assert refused(d) == 2
    assert f"the database path {home / 'dbdir'} (from --db) is a directory" in d.logtext
    assert "unable to open" not in d.logtext


def test_a_new_database_on_an_existing_mirror_says_what_happened(home: Path) -> None:
    d = Daemon(home).start()
    d.send(b'{"type":"a"}\n{"type":"b"}\n{"type":"c"}\n')
    assert d.wait_count(3) == 3
    assert d.stop() == 0
    fresh = Daemon(home, env=clean_env(home, HOOKD_DB=str(home / "fresh.db"))).start()
    assert fresh.stop() == 0
    assert f"the database {home / 'fresh.db'} was new: loaded 3 events from the mirror in {home / 'mirror'}" in (
        fresh.logtext
    )
    assert "unclean stop" not in fresh.logtext
    assert "clients look for" not in d.logtext + fresh.logtext  # the socket is where clients look


# -- item 9 (daemon side): a socket where clients do not look -------------------------------------


@pytest.mark.parametrize("how", ["flag", "config"])
def test_a_socket_where_clients_do_not_look_is_warned_with_the_fix(home: Path, how: str) -> None:
    moved = home / "elsewhere" / "hookd.sock"
    moved.parent.mkdir(mode=0o700)
    if how == "flag":
        d = Daemon(home, "--socket", str(moved))
        expected, origin = home / "hookd.sock", "--socket"
    else:  # [paths] socket in the file: no HOOKD_HOME, clients use the XDG default
        config = home / "config.toml"
        config.write_text(f'[paths]\nsocket = "{moved}"\n')
        env = clean_env(home, XDG_RUNTIME_DIR=str(home / "run"), HOOKD_CONFIG=str(config))
        del env["HOOKD_HOME"]
        env.update(HOOKD_DB=str(home / "events.db"), HOOKD_MIRROR_DIR=str(home / "mirror"))
        env.update(HOOKD_SPOOL_DIR=str(home / "spool"))
        d = Daemon(home, env=env)
        expected, origin = home / "run" / "hookd" / "hookd.sock", f"[paths] in {config}"
    d.start()
    assert d.stop() == 0
    warning = next(line for line in d.log if "clients look for" in line)
    assert f"at {expected}" in warning and f"listens at {moved} ({origin})" in warning, warning
    assert f"export HOOKD_SOCKET={moved}" in warning
