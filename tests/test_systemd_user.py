"""hookd under a real systemd user manager: install-service, socket activation, Restart=, the
watchdog, reload, uninstall-service and the sandboxing options, as a user's login runs them.

Each test starts its own ``/lib/systemd/systemd --user`` with a private ``HOME`` and
``XDG_RUNTIME_DIR`` and a clean environment (the manager hands its environment to its units), so
nothing touches the developer's own manager or files. systemd refuses ``--user`` unless the
machine looks booted with systemd (the directory ``/run/systemd/system``); in a container
without systemd as PID 1 (CI), the test creates that marker, as ../shared/recipes.md describes.
Elsewhere, where no user manager can start, the tests are skipped with the reason.

There is no journald here: a drop-in sends hookd's stderr to a file the test reads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, wait_until
from hookd.ops import service

SYSTEMD = Path("/lib/systemd/systemd")
SYSTEMCTL = shutil.which("systemctl")
HOOKD = service.hookd_executable()
BIN = Path(HOOKD).parent if HOOKD else Path(sys.executable).parent

pytestmark = pytest.mark.slow


def can_mark_booted() -> str | None:
    """None if a user manager can be started here, else why not."""
    if not SYSTEMD.exists() or SYSTEMCTL is None:
        return "no systemd installed (/lib/systemd/systemd, systemctl)"
    if Path("/run/systemd/system").is_dir():
        return None
    if os.getuid() != 0:
        return "/run/systemd/system is missing and creating it needs root"
    if not (Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()):
        return "/run/systemd/system is missing and this is not a container: not faking a systemd boot here"
    Path("/run/systemd/system").mkdir(parents=True, exist_ok=True)
    return None


class UserManager:
    """A private systemd user manager and the environment that talks to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.runtime = root / "run"
        self.home.mkdir()
        self.runtime.mkdir(mode=0o700)
        self.env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "LANG": "C.UTF-8",
        }
        self.log = root / "manager.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(SYSTEMD), "--user"], env=self.env, stdout=log, stderr=log)
        private = self.runtime / "systemd" / "private"
        deadline = time.monotonic() + 30
        while not private.is_socket():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"the systemd user manager did not start: {self.log.read_text()[-800:]}")
            time.sleep(0.05)
        wait_until(
            lambda: self.systemctl("is-system-running", check=False).stdout.strip() in ("running", "degraded"),
            60,
            "the user manager to finish starting",
        )

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [SYSTEMCTL or "systemctl", "--user", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check:
            assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out

    def hookd(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "hookd"), *args], env=self.env, capture_output=True, text=True, timeout=120, input=input
        )

    def emit(self, *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "hookd-emit"), *args], env=self.env, capture_output=True, text=True, timeout=60, input=input
        )

    def emit_python(self, code: str) -> None:
        """Run ``code`` with ``from hookd_client import emit`` in the manager's environment."""
        subprocess.run(
            [sys.executable, "-c", "from hookd_client import emit\n" + code],
            env={**self.env, "PYTHONPATH": str(ROOT / "clients" / "python")},
            check=True,
            timeout=120,
        )

    def main_pid(self) -> int:
        return int(self.systemctl("show", "-p", "MainPID", "--value", "hookd.service").stdout.strip() or 0)

    def prop(self, name: str, unit: str = "hookd.service") -> str:
        return self.systemctl("show", "-p", name, "--value", unit).stdout.strip()

    @property
    def db(self) -> Path:
        return self.home / ".local/share/hookd/events.db"

    @property
    def daemon_log(self) -> Path:
        return self.root / "hookd.log"

    def count(self, where: str = "1") -> int:
        if not self.db.exists():
            return -1
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(f"SELECT count(*) FROM events WHERE {where}").fetchone()[0]
        except sqlite3.OperationalError:
            return -1
        finally:
            db.close()

    def drop_in(self, text: str) -> None:
        """A drop-in for hookd.service, as `systemctl --user edit hookd` would write it."""
        d = self.home / ".config/systemd/user/hookd.service.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / "test.conf").write_text(text)
        self.systemctl("daemon-reload")

    def install(self, **drop_in: str) -> None:
        out = self.hookd("install-service")
        assert out.returncode == 0, out.stderr
        lines = [f"StandardError=append:{self.daemon_log}", *(f"{k}={v}" for k, v in drop_in.items())]
        self.drop_in("[Service]\n" + "\n".join(lines) + "\n")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the manager stops its units first
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def running_manager(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[UserManager]:
    """A started user manager (``env`` added to its environment), stopped afterwards; skips where
    none can run. The body of the ``manager`` fixtures here and in test_claude_cli.py."""
    why = can_mark_booted()
    if why is not None:
        pytest.skip(why)
    if HOOKD is None:
        pytest.skip("hookd is not installed as a command (run the suite through ./dev test)")
    m = UserManager(Path(str(tmp_path_factory.mktemp("sdu"))))
    m.env.update(env)
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.fixture
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserManager]:
    yield from running_manager(tmp_path_factory)


def started(m: UserManager) -> int:
    """The daemon's pid once systemd has it active (Type=notify: after READY=1)."""
    wait_until(lambda: m.prop("ActiveState") == "active" and m.main_pid(), 60, "hookd.service to be active")
    return m.main_pid()


def test_install_the_first_event_starts_the_service_and_it_reports_ready(manager: UserManager) -> None:
    manager.install()
    assert manager.prop("ActiveState", "hookd.socket") == "active"
    assert manager.prop("ActiveState") == "inactive"  # nothing started it yet
    out = manager.emit("--wait", "first", '{"n": 1}')
    assert out.returncode == 0, out.stderr  # --wait: committed, by a daemon systemd started for it
    started(manager)
    assert manager.count("type = 'first'") == 1
    assert "events committed" in manager.prop("StatusText")  # Type=notify with STATUS=
    st = json.loads(manager.hookd("status", "--json").stdout)
    assert st["daemon"]["pid"] == manager.main_pid()
    assert st["daemon"]["control_socket"] == str(manager.runtime / "hookd/hookd.sock.ctl")


def test_kill_9_of_the_daemon_loses_none_of_the_events_sent_during_the_restart(manager: UserManager) -> None:
    manager.install()
    assert manager.emit("--wait", "before", "{}").returncode == 0
    pid = started(manager)
    os.kill(pid, signal.SIGKILL)
    manager.emit_python("for i in range(100):\n    emit('during_restart', i=i)")
    wait_until(lambda: manager.count("type = 'during_restart'") == 100, 90, "the 100 events after the restart")
    new = started(manager)
    assert new != pid
    assert int(manager.prop("NRestarts")) == 1  # Restart=on-failure did it
    assert manager.count() == 101


def test_a_writer_crash_is_restarted_and_nothing_is_lost(manager: UserManager) -> None:
    manager.install()
    assert manager.emit("--wait", "before", "{}").returncode == 0
    pid = started(manager)
    writer = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
    os.kill(writer, signal.SIGKILL)
    wait_until(lambda: manager.main_pid() not in (0, pid), 60, "a new daemon")
    manager.emit_python("for i in range(50):\n    emit('after_crash', i=i)")
    wait_until(lambda: manager.count("type = 'after_crash'") == 50, 90, "the events after the crash")
    assert int(manager.prop("NRestarts")) >= 1
    assert "the writer process failed" in manager.daemon_log.read_text()


def test_a_stopped_daemon_is_restarted_by_the_watchdog_and_the_events_sent_meanwhile_are_kept(
    manager: UserManager,
) -> None:
    manager.install(WatchdogSec="3s")  # the unit's 30 s, shortened for the test
    assert manager.emit("--wait", "before", "{}").returncode == 0
    pid = started(manager)
    os.kill(pid, signal.SIGSTOP)  # alive, holding its socket, answering nothing
    manager.emit_python("for i in range(50):\n    emit('while_stopped', i=i)")
    wait_until(lambda: manager.main_pid() not in (0, pid), 90, "the watchdog to restart hookd")
    wait_until(lambda: manager.count("type = 'while_stopped'") == 50, 90, "the 50 events sent meanwhile")
    assert manager.prop("Result") in ("success", "watchdog")
    assert (
        "watchdog" in manager.systemctl("status", "hookd.service", check=False).stdout.lower()
        or int(manager.prop("NRestarts")) >= 1
    )


def test_reload_rereads_the_configuration(manager: UserManager) -> None:
    manager.install()
    assert manager.emit("--wait", "before", "{}").returncode == 0
    pid = started(manager)
    cfg = manager.home / ".config/hookd/config.toml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text('[types.deploy]\nexpected = true\n[aliases]\nrelease = "deploy"\n')
    manager.systemctl("reload", "hookd.service")  # ExecReload: SIGHUP
    wait_until(lambda: "SIGHUP: configuration reloaded" in manager.daemon_log.read_text(), 60, "the reload")
    assert manager.main_pid() == pid  # reloaded in place, not restarted
    assert manager.emit("--wait", "release", "{}").returncode == 0
    assert manager.count("type = 'deploy'") == 1  # the new alias applies


def test_the_sandboxing_options_are_in_force_and_hookd_works_under_them(manager: UserManager) -> None:
    manager.install()
    assert manager.emit("--wait", "first", "{}").returncode == 0
    pid = started(manager)
    writer = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
    for p in (pid, writer):
        status = dict(
            line.split(":\t", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines() if ":\t" in line
        )
        assert status["NoNewPrivs"].strip() == "1", p
        assert status["Seccomp"].strip() == "2", p  # a seccomp filter: SystemCallFilter= applies
    assert "AF_UNIX" in manager.prop("RestrictAddressFamilies")
    # What the filter denies fails with EPERM (SystemCallErrorNumber=EPERM) and the address
    # families are restricted: an AF_INET socket inside the service is refused. hookd itself needs
    # neither, and everything it does works: events, acks, status, a follower, retention.
    probe = manager.root / "probe.txt"
    script = (
        "import socket\ntry:\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n    r = 'allowed'\n"
        f"except OSError as e:\n    r = 'refused ' + str(e.errno)\nopen({str(probe)!r}, 'w').write(r)\n"
    )
    # A unit of its own with exactly hookd's sandboxing lines, running the probe.
    unit = manager.home / ".config/systemd/user/hookd-probe.service"
    body = (manager.home / ".config/systemd/user/hookd.service").read_text()
    sandbox = [line for line in body.splitlines() if line.split("=", 1)[0] in SANDBOX_KEYS]
    unit.write_text(
        "[Service]\nType=oneshot\n" + "\n".join(sandbox) + f"\nExecStart={sys.executable} -c {json.dumps(script)}\n"
    )
    manager.systemctl("daemon-reload")
    manager.systemctl("start", "hookd-probe.service")
    assert probe.read_text().startswith("refused"), probe.read_text()
    out = manager.hookd("status")
    assert out.returncode == 0 and "writer" in out.stdout, out.stdout
    assert manager.emit("--wait", "second", "{}").returncode == 0
    assert manager.count() == 2
    assert "Operation not permitted" not in manager.daemon_log.read_text()


SANDBOX_KEYS = {
    "NoNewPrivileges",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallErrorNumber",
}


def test_uninstall_stops_and_removes_everything(manager: UserManager) -> None:
    manager.install()
    assert manager.emit("--wait", "first", "{}").returncode == 0
    started(manager)
    out = manager.hookd("uninstall-service")
    assert out.returncode == 0, out.stderr
    wait_until(lambda: manager.prop("ActiveState") in ("inactive", ""), 60, "hookd.service to stop")
    assert not (manager.home / ".config/systemd/user/hookd.service").exists()
    assert not (manager.home / ".config/systemd/user/hookd.socket").exists()
    assert not (manager.runtime / "hookd/hookd.sock").exists()  # RemoveOnStop=yes
    # Clients notice at once and spool; the data stays.
    out = manager.emit("after", "{}")
    assert out.returncode == 0 and "spooled" in out.stderr, out.stderr
    assert manager.count() == 1
