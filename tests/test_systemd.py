"""hookd under systemd: socket activation, sd_notify, the unit files and install-service.

There is no running systemd here. Its parts are played by real tools: systemd-socket-activate
hands hookd its socket exactly as a socket unit does (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES), a
datagram socket in the test receives what hookd would tell the manager (NOTIFY_SOCKET), and
where a socket must outlive the daemon (a restart), the test holds it, as the user manager
does for hookd.socket. systemctl is the one thing faked (a script on PATH): a real one would
act on the developer's own user manager.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Daemon, clean_env, settle
from hookd.daemon import sdnotify
from hookd.ops import service

ACTIVATE = shutil.which("systemd-socket-activate")
ANALYZE = shutil.which("systemd-analyze")
HOOKD = service.hookd_executable()

needs_activate = pytest.mark.skipif(
    ACTIVATE is None,
    reason="systemd-socket-activate is missing: `./dev test` installs it (Debian package systemd) when run as root",
)


class NotifyListener:
    """What systemd's end of NOTIFY_SOCKET receives, with arrival times."""

    def __init__(self, abstract: bool = True, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.name = f"@hookd-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind(b"\0" + self.name[1:].encode())
        else:
            assert path is not None
            self.name = str(path)
            self.sock.bind(self.name)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.messages.append((time.monotonic(), fields))

    def wait(self, pred: Callable[[dict[str, str]], bool], timeout: float = 60) -> tuple[float, dict[str, str]]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for t, m in self.messages[seen:]:
                if pred(m):
                    return t, m
            seen = len(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"no such notification in {timeout} s; got {[m for _t, m in self.messages]}")

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    n = NotifyListener()
    yield n
    n.close()


def held_socket(path: Path) -> socket.socket:
    """A listening socket as the user manager makes it for hookd.socket (SocketMode=0600)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    os.chmod(path, 0o600)
    s.listen(4096)
    return s


HAND_OVER = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="hookd", LISTEN_PID=str(os.getpid()))
os.execvp(sys.argv[2], sys.argv[2:])
"""


def activated(
    home: Path, notify: NotifyListener | None, *, held: socket.socket | None = None, tool: bool = True, **env: str
) -> Daemon:
    """``hookd run`` started by systemd-socket-activate (which execs it on the first connection).

    With ``held``, the test keeps the listening socket (as the user manager does) and passes it
    down through the tool, so it outlives the daemon; otherwise the tool binds it (``-l``).
    ``tool=False`` (with ``held``) passes the socket straight to hookd, as systemd itself does.
    """
    assert ACTIVATE is not None
    d = Daemon(home, env=clean_env(home))
    setenv = {"HOOKD_HOME": str(home), **env}
    if notify is not None:
        setenv["NOTIFY_SOCKET"] = notify.name
    prog = [ACTIVATE, *(f"--setenv={k}={v}" for k, v in setenv.items())]
    if not tool:
        d.env.update(setenv)
        prog = []
    if held is None:
        d.prefix = [*prog, "-l", str(d.socket), "--fdname=hookd"]
    else:
        # The manager's side of the protocol: the socket at fd 3, LISTEN_PID = the pid that is
        # about to exec (systemd-socket-activate then passes it on, or hookd takes it).
        d.pass_fds = (held.fileno(),)
        d.prefix = [sys.executable, "-c", HAND_OVER, str(held.fileno()), *prog]
    return d


def connect_send(path: Path, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(data)


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


# -- sdnotify, in-process -------------------------------------------------------------------


def test_notifier_does_nothing_outside_systemd() -> None:
    env: dict[str, str] = {"PATH": "/bin"}
    n = sdnotify.Notifier(env)
    assert not n.enabled and n.watchdog is None
    assert n.ready("x") is False and n.ping() is False
    assert sdnotify.listen_fds(env) == []


@pytest.mark.parametrize("abstract", [True, False])
def test_notifier_sends_to_abstract_and_path_sockets(abstract: bool, tmp_path: Path) -> None:
    listener = NotifyListener(abstract=abstract, path=tmp_path / "notify")
    try:
        env = {"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
        n = sdnotify.Notifier(env)
        assert env == {}, "the variables are removed, so children do not inherit them"
        assert n.watchdog == 3.0
        assert n.ready("1 events committed\nsecond line")
        _t, m = listener.wait(lambda m: "READY" in m, 5)
        assert m == {"READY": "1", "STATUS": "1 events committed second line"}
        assert n.ping() and n.stopping("bye")
        listener.wait(lambda m: m == {"STOPPING": "1", "STATUS": "bye"}, 5)
        n.close()
    finally:
        listener.close()


def test_watchdog_and_listen_fds_meant_for_another_pid() -> None:
    other = str(os.getpid() + 1)
    n = sdnotify.Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": other})
    assert n.watchdog is None  # the watchdog is for another process
    n.close()
    env = {"LISTEN_PID": other, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "hookd"}
    assert sdnotify.listen_fds(env) == []
    assert env == {}


async def test_keep_alive_stops_pinging_when_the_writer_is_stuck(notify: NotifyListener) -> None:
    n = sdnotify.Notifier({"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "200000"})
    state = {"waiting": 0, "done": 0}
    task = asyncio.create_task(
        sdnotify.keep_alive(
            n,
            status=lambda: f"done {state['done']}",
            progress=lambda: (state["waiting"], state["done"]),
            status_interval=0.3,
        )
    )
    try:
        await asyncio.sleep(0.5)  # idle: pinging every 0.1 s
        pings = sum("WATCHDOG" in m for _t, m in notify.messages)
        assert pings >= 3
        state["waiting"] = 2  # work handed on, and nothing finishes
        await asyncio.sleep(0.7)
        stalled = sum("WATCHDOG" in m for _t, m in notify.messages)
        await asyncio.sleep(0.5)
        assert sum("WATCHDOG" in m for _t, m in notify.messages) == stalled, "no pings while stuck"
        state["done"] = 1  # progress again
        await asyncio.sleep(0.4)
        assert sum("WATCHDOG" in m for _t, m in notify.messages) > stalled
        assert [m for _t, m in notify.messages if "STATUS" in m][:2] == [{"STATUS": "done 0"}, {"STATUS": "done 1"}]
    finally:
        task.cancel()
        n.close()


# -- socket activation with the real tool ---------------------------------------------------


@needs_activate
def test_socket_activation_reads_queued_events_and_notifies(home: Path, notify: NotifyListener) -> None:
    d = activated(home, notify, WATCHDOG_USEC="1000000")
    d.start(wait=False)
    deadline = time.monotonic() + 10
    while not d.socket.exists():
        assert time.monotonic() < deadline, d.logtext
        time.sleep(0.01)
    # The first connection makes the tool exec hookd; these all wait in the listen queue while
    # hookd starts its writer.
    for i in range(300):
        connect_send(d.socket, b'{"type":"queued","id":"q-%d"}\n' % i)
        if i == 19:
            sent = time.monotonic()  # 20 queued: microseconds, against hookd's start of a process and a writer
    ready_at, ready = notify.wait(lambda m: m.get("READY") == "1", timeout=60)
    assert ready_at > sent, "hookd was ready before any events were queued: this test proves nothing"
    assert re.fullmatch(r"\d+ events committed, 0 rejected, queue \d+", ready["STATUS"])
    d.wait_ready()
    assert "(from systemd)" in d.logtext
    assert d.wait_count(300) == 300
    notify.wait(lambda m: m.get("STATUS", "").startswith("300 events committed"), timeout=60)
    assert sum("WATCHDOG" in m for _t, m in notify.messages) >= 2  # every 0.5 s
    # Only the daemon speaks to systemd: its writer got neither NOTIFY_SOCKET nor LISTEN_*.
    assert d.proc is not None
    (writer,) = children(d.proc.pid)
    environ = Path(f"/proc/{writer}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.startswith((b"NOTIFY_SOCKET=", b"LISTEN_", b"WATCHDOG_"))]
    assert d.stop() == 0, d.logtext
    notify.wait(lambda m: m.get("STOPPING") == "1")
    assert d.count() == 300 and len(d.mirror_lines()) == 300
    # The socket belongs to whoever passed it: hookd leaves the file where it was.
    assert stat.S_ISSOCK(os.lstat(d.socket).st_mode)


@needs_activate
def test_restart_under_load_through_socket_activation_loses_nothing(home: Path, notify: NotifyListener) -> None:
    """`systemctl --user restart hookd` with hooks sending all the while: every event stored once.

    The test holds the socket as the user manager holds hookd.socket; between two daemons the
    listen queue keeps what hooks send.
    """
    path = home / "hookd.sock"
    held = held_socket(path)
    stop = threading.Event()
    down = threading.Event()  # set while no daemon runs
    sent = [0, 0, 0]
    sent_while_down = [0, 0, 0]

    def sender(k: int) -> None:
        i = 0
        while not stop.is_set():
            connect_send(path, b'{"type":"load","id":"w%d-%d"}\n' % (k, i))
            i += 1
            sent[k] = i
            if down.is_set():
                sent_while_down[k] += 1
            time.sleep(0.0005)

    # Events sent before any daemon ever ran wait in the queue.
    for i in range(200):
        connect_send(path, b'{"type":"early","id":"e-%d"}\n' % i)
    threads = [threading.Thread(target=sender, args=(k,)) for k in range(3)]
    d: Daemon | None = None
    try:
        for t in threads:
            t.start()
        for _cycle in range(3):
            d = activated(home, notify, held=held)
            d.start()
            time.sleep(0.6)
            assert d.stop() == 0, d.logtext
            before = sum(sent_while_down)
            down.set()
            time.sleep(0.3)  # stopped: what hooks send now waits in the socket ...
            deadline = time.monotonic() + 30  # ... and some of them did send (however slow the machine)
            while sum(sent_while_down) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            down.clear()
        d = activated(home, notify, held=held)
        d.start()
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(10)
        total = 200 + sum(sent)
        assert sum(sent_while_down) > 0, "no event was sent while hookd was stopped"
        settle(d, total)
        ids = d.query("SELECT count(DISTINCT json_extract(data, '$.id')) FROM events")[0][0]
        assert ids == total
        assert not any((home / "spool").iterdir()), "nothing went through the spool: the socket held it all"
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        if d is not None:
            d.kill()
        held.close()


@needs_activate
def test_second_daemon_on_an_inherited_socket_is_refused(home: Path) -> None:
    path = home / "hookd.sock"
    held = held_socket(path)
    first = activated(home, None, held=held)
    try:
        first.start(wait=False)
        connect_send(path, b'{"type":"wake"}\n')  # the tool execs its hookd on a connection
        first.wait_ready()
        second = activated(home, None, held=held, tool=False)
        second.start(wait=False)
        assert second.proc is not None
        assert second.proc.wait(20) == 1, second.logtext
        second._exited.wait(5)
        assert "already serving" in second.logtext
        connect_send(path, b'{"type":"after"}\n')
        assert first.wait_count(2) == 2
        assert first.stop() == 0
    finally:
        first.kill()
        held.close()


@needs_activate
def test_import_under_socket_activation_starts_the_daemon_and_goes_through_it(home: Path, tmp_path: Path) -> None:
    """Nothing runs yet, but the socket listens (hookd.socket): ``hookd import`` connects, which
    starts the daemon, and imports through it; an offline import would race the daemon the
    next hook starts for the writer lock (docs/operations.md, "Importing old logs")."""
    held = held_socket(home / "hookd.sock")
    d = activated(home, None, held=held)
    try:
        d.start(wait=False)
        f = tmp_path / "old.jsonl"
        f.write_text("".join(f'{{"type":"old","n":{i}}}\n' for i in range(1000)) + "not json\n")
        out = subprocess.run(
            [sys.executable, "-m", "hookd", "import", str(f)],
            env=clean_env(home), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr + d.logtext
        assert out.stdout.startswith("1001 lines: 1000 imported, 0 duplicate, 1 rejected")
        assert "through the running daemon" in out.stdout
        d.wait_ready()
        assert "(from systemd)" in d.logtext
        connect_send(home / "hookd.sock", b'{"type":"hook"}\n')  # and it serves hooks as usual
        assert d.wait_count(1001) == 1001
        assert d.stop() == 0, d.logtext
        assert d.query("SELECT count(*) FROM rejected") == [(1,)]
    finally:
        d.kill()
        held.close()


def test_the_daemon_maps_no_writable_executable_memory(daemon: Daemon) -> None:
    """MemoryDenyWriteExecute=yes in hookd.service: no JIT, no anonymous executable pages, in
    the daemon or its writer, after serving events (acknowledged ones included)."""
    for i in range(50):
        daemon.send(b'{"type":"t","n":%d}\n?{"type":"t","acked":true}\n' % i)
    assert daemon.wait_count(100) == 100
    assert daemon.proc is not None
    for pid in [daemon.proc.pid, *children(daemon.proc.pid)]:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split()
            perms, name = fields[1], fields[5] if len(fields) > 5 else ""
            if "x" in perms and name not in ("[vdso]", "[vsyscall]"):
                assert "w" not in perms and name.startswith("/"), f"pid {pid}: {line}"


# -- the unit files -------------------------------------------------------------------------


def render_units(directory: Path, executable: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in service.UNITS:
        (directory / name).write_text(service.render(name, executable))


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is missing: `./dev test` installs it (package systemd)")
@pytest.mark.parametrize("spaced", [False, True])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, spaced: bool) -> None:
    exe = HOOKD
    if spaced:  # an installation path with a space and a % must come out quoted and escaped
        (tmp_path / "my %tools dir").mkdir()
        exe = tmp_path / "my %tools dir" / "hookd"
        exe.symlink_to(HOOKD)
    units = tmp_path / "units"
    render_units(units, exe)
    text = (units / "hookd.service").read_text()
    assert "@HOOKD@" not in text
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    r = subprocess.run(
        [ANALYZE, "verify", "--user", *(str(units / n) for n in service.UNITS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    # Unknown or misspelt keys are only warnings (exit 0): any output at all is a failure.
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
    broken = text.replace(str(exe).replace("%", "%%"), "/nonexistent/hookd")
    (units / "hookd.service").write_text(broken)
    r = subprocess.run([ANALYZE, "verify", "--user", str(units / "hookd.service")], capture_output=True, env=env)
    assert r.returncode != 0, "verify must catch an ExecStart that is not there"


def test_unit_contract() -> None:
    sock = service.render("hookd.socket", HOOKD)
    svc = service.render("hookd.service", HOOKD)
    for line in (
        "ListenStream=%t/hookd/hookd.sock",
        "SocketMode=0600",
        "DirectoryMode=0700",
        "FileDescriptorName=hookd",
    ):
        assert line in sock.splitlines()
    for line in (
        "Type=notify",
        f"ExecStart={HOOKD} run",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "KillMode=mixed",
        "TimeoutStopSec=30s",
        "MemoryDenyWriteExecute=yes",
        "RestrictAddressFamilies=AF_UNIX",
    ):
        assert line in svc.splitlines()
    assert service._exec_path(Path("/a b/%x/hookd")) == '"/a b/%%x/hookd"'


# -- install-service / uninstall-service ----------------------------------------------------

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
    *show-environment*) [ -n "{down}" ] && {{ echo "Failed to connect to bus: No medium found" >&2; exit 1; }} ;;
esac
exit 0
"""


def run_hookd(tmp_path: Path, *args: str, systemctl_works: bool) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``hookd ARGS`` with HOME/XDG_CONFIG_HOME in tmp_path and a stand-in systemctl first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "systemctl.log"
    fake = bin_dir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(log=log, down="" if systemctl_works else "1"))
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKD_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    r = subprocess.run([str(HOOKD), *args], capture_output=True, text=True, env=env, timeout=60)
    return r, log


def calls(log: Path) -> list[str]:
    return [c for c in log.read_text().splitlines() if c != "--user show-environment"] if log.exists() else []


def test_install_service_dry_run_changes_nothing(tmp_path: Path) -> None:
    r, log = run_hookd(tmp_path, "install-service", "--dry-run", systemctl_works=True)
    assert r.returncode == 0, r.stderr
    units = tmp_path / "config" / "systemd" / "user"
    assert not units.exists()
    assert calls(log) == []
    assert f"would write {units / 'hookd.socket'}:" in r.stdout
    assert f"    ExecStart={HOOKD} run" in r.stdout.splitlines()
    assert r.stdout.rstrip().endswith(
        "would run:\n  systemctl --user daemon-reload\n  systemctl --user enable --now hookd.socket\n"
        "  systemctl --user try-restart hookd.service"
    )
    # the unit's comments read right once the path is in (they do not name the placeholder)
    assert "    # Installed by `hookd install-service`, which writes the absolute path of this installation's" in (
        r.stdout.splitlines()
    )
    # a dry run warns, as the install does, when this shell points hooks elsewhere than the service
    home = tmp_path / "elsewhere"
    r2 = subprocess.run(
        [str(HOOKD), "install-service", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
             "HOOKD_HOME": str(home)},
    )  # fmt: skip
    assert r2.returncode == 0, r2.stderr
    assert "note: HOOKD_HOME is set in this shell; the service listens on the default socket" in r2.stdout
    assert "HOOKD_HOME is set" not in r.stdout


def test_install_service_without_a_user_manager_prints_the_commands(tmp_path: Path) -> None:
    r, log = run_hookd(tmp_path, "install-service", systemctl_works=False)
    assert r.returncode == 0, r.stderr
    units = tmp_path / "config" / "systemd" / "user"
    for name in service.UNITS:
        assert (units / name).read_text() == service.render(name, HOOKD)
        assert stat.S_IMODE((units / name).stat().st_mode) == 0o644
    assert calls(log) == []
    assert "Failed to connect to bus" in r.stdout
    assert r.stdout.rstrip().endswith(
        "run these in your login session:\n"
        "  systemctl --user daemon-reload\n"
        "  systemctl --user enable --now hookd.socket"
    )


def test_install_and_uninstall_service_with_systemctl(tmp_path: Path) -> None:
    r, log = run_hookd(tmp_path, "install-service", systemctl_works=True)
    assert r.returncode == 0, r.stderr
    units = tmp_path / "config" / "systemd" / "user"
    assert sorted(p.name for p in units.iterdir()) == ["hookd.service", "hookd.socket"]
    assert calls(log) == [
        "--user daemon-reload",
        "--user enable --now hookd.socket",
        "--user try-restart hookd.service",
    ]
    assert "journalctl --user -u hookd" in r.stdout
    log.unlink()

    r, log = run_hookd(tmp_path, "uninstall-service", systemctl_works=True)
    assert r.returncode == 0, r.stderr
    assert not any(units.iterdir())
    assert calls(log) == ["--user disable --now hookd.socket hookd.service", "--user daemon-reload"]
    log.unlink()
    r, log = run_hookd(tmp_path, "uninstall-service", systemctl_works=True)
    assert r.returncode == 0 and "nothing to do" in r.stdout
    assert calls(log) == []


def test_a_failing_systemctl_is_an_error_that_says_where_to_look(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(
        '#!/bin/sh\ncase "$*" in *enable*) echo "Failed to start hookd.socket" >&2; exit 1;; esac\nexit 0\n'
    )
    (bin_dir / "systemctl").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKD_", "XDG_"))}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), PATH=f"{bin_dir}:{env['PATH']}")
    r = subprocess.run([str(HOOKD), "install-service"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert "Failed to start hookd.socket" in r.stdout
    assert "`systemctl --user enable --now hookd.socket` failed (exit 1)" in r.stderr
    assert "journalctl --user" in r.stderr


def test_install_service_help_names_what_it_does() -> None:
    r = subprocess.run([sys.executable, "-m", "hookd", "install-service", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "--dry-run" in r.stdout and "systemd/user" in r.stdout
    r = subprocess.run([sys.executable, "-m", "hookd", "--help"], capture_output=True, text=True)
    assert "install-service" in r.stdout and "uninstall-service" in r.stdout


def test_without_socket_activation_hookd_binds_and_removes_its_own_socket(home: Path) -> None:
    # LISTEN_* meant for another process (inherited from a parent) must be ignored.
    env = clean_env(home, LISTEN_PID="1", LISTEN_FDS="1", LISTEN_FDNAMES="hookd")
    d = Daemon(home, env=env).start()
    try:
        assert "(from systemd)" not in d.logtext
        d.send(b'{"type":"t"}\n')
        settle(d, 1)
        assert not d.socket.exists()
    finally:
        d.kill()


@needs_activate
def test_an_inherited_socket_elsewhere_than_clients_look_is_used_and_reported(home: Path) -> None:
    other = home / "elsewhere.sock"
    held = held_socket(other)
    d = activated(home, None, held=held, tool=False)
    try:
        d.start()
        assert f"systemd passed the socket {other}, but clients look for {home / 'hookd.sock'}" in d.logtext
        connect_send(other, b'{"type":"t"}\n')
        assert d.wait_count(1) == 1
        assert (home / "elsewhere.sock.lock").exists()
        assert d.stop() == 0
    finally:
        d.kill()
        held.close()
