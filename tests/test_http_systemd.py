"""The HTTP port under systemd: the inherited TCP socket (LISTEN_FDNAMES ``hookd-http``), a
restart that refuses no hook, the rendered units, install-service with ``http.listen``, and a
real user manager serving an http hook through ``hookd-http.socket``.

The manager's parts are played as in tests/test_systemd.py (the test holds the listening sockets
across daemon runs, as the user manager does) and tests/test_systemd_user.py (a real
``systemd --user``).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_systemd import ACTIVATE, ANALYZE, HOOKD, calls, held_socket, run_hookd
from test_systemd_user import UserManager, manager, started, wait_until  # noqa: F401  (manager: a fixture)

from conftest import Daemon, clean_env
from hookd.ops import service

CURL = shutil.which("curl")

# The manager's side of socket activation for several sockets: each descriptor moved to 3, 4...
# in order, LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID set, then the daemon exec'd.
HAND_OVER = """
import fcntl, os, sys
n = int(sys.argv[1])
fds = [int(x) for x in sys.argv[2:2 + n]]
copies = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # above 3..3+n: dup2 must not hit one
for fd in fds:
    os.close(fd)
for i, fd in enumerate(copies):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ.update(LISTEN_FDS=str(n), LISTEN_FDNAMES=sys.argv[2 + n], LISTEN_PID=str(os.getpid()))
os.execvp(sys.argv[3 + n], sys.argv[3 + n:])
"""


def tcp_listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(4096)
    return s


def activated(home: Path, unix: socket.socket, tcp: socket.socket) -> Daemon:
    d = Daemon(home, env=clean_env(home))
    d.pass_fds = (unix.fileno(), tcp.fileno())
    d.prefix = [sys.executable, "-c", HAND_OVER, "2", str(unix.fileno()), str(tcp.fileno()), "hookd:hookd-http"]
    return d


def status(d: Daemon) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(d.socket) + ".ctl")
        s.sendall(b"!status\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


@pytest.fixture
def sockets(home: Path) -> Iterator[tuple[socket.socket, socket.socket]]:
    unix, tcp = held_socket(home / "hookd.sock"), tcp_listener()
    yield unix, tcp
    unix.close()
    tcp.close()


@pytest.mark.skipif(CURL is None, reason="curl is missing: `./dev test` installs it with apt-get as root")
def test_a_restart_refuses_no_http_hook(home: Path, sockets: tuple[socket.socket, socket.socket]) -> None:
    unix, tcp = sockets
    port = tcp.getsockname()[1]
    d = activated(home, unix, tcp).start()
    try:
        assert f"HTTP: POST http://127.0.0.1:{port}/v1/events (from systemd)" in d.logtext
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(10):
            body = json.dumps({"type": "before", "i": i})
            c.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
            assert c.getresponse().read() == b""
        st = status(d)["http"]
        assert st["from_systemd"] is True and st["listen"] == f"127.0.0.1:{port}"
        assert d.stop() == 0
        c.close()
        # Hooks fired while no daemon runs: connected to systemd's socket, they wait for an answer.
        hooks = [
            subprocess.Popen(
                [
                    CURL or "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--json",
                    json.dumps({"type": "during", "i": i}),
                    f"http://127.0.0.1:{port}/v1/events",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i in range(5)
        ]
        time.sleep(1.0)
        assert all(h.poll() is None for h in hooks)
        d.start()
        assert [h.communicate(timeout=60)[0] for h in hooks] == ["204"] * 5
        assert d.wait_count(15) == 15
        assert d.stop() == 0
        assert d.count("type = 'during'") == 5
    finally:
        d.kill()


def test_an_inherited_http_socket_is_served_without_http_listen_and_checked(home: Path) -> None:
    unix = held_socket(home / "hookd.sock")
    wild = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    wild.bind(("0.0.0.0", 0))
    wild.listen(16)
    try:
        d = activated(home, unix, wild)
        d.start(wait=False)
        assert d.proc is not None and d.proc.wait(30) == 2  # not loopback, and no token: refused
        d._exited.wait(5)
        assert "which is not a loopback address" in d.logtext
    finally:
        unix.close()
        wild.close()


# -- the units -------------------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["127.0.0.1:8787", "[::1]:8787"])
def test_rendered_units_with_http(tmp_path: Path, listen: str) -> None:
    svc = service.render("hookd.service", HOOKD, listen)
    sock = service.render("hookd-http.socket", HOOKD, listen)
    family = "AF_INET6" if listen.startswith("[") else "AF_INET"
    assert f"RestrictAddressFamilies=AF_UNIX {family} AF_NETLINK" in svc.splitlines()
    assert "After=hookd.socket hookd-http.socket" in svc.splitlines() and "Wants=hookd-http.socket" in svc.splitlines()
    for line in (f"ListenStream={listen}", "FileDescriptorName=hookd-http", "Service=hookd.service"):
        assert line in sock.splitlines()
    assert service.render("hookd.service", HOOKD) == service.render("hookd.service", HOOKD, None)
    if ANALYZE is None:
        pytest.skip("systemd-analyze is missing: `./dev test` installs it (package systemd)")
    units = tmp_path / "units"
    units.mkdir()
    for name in service.units(listen):
        (units / name).write_text(service.render(name, HOOKD, listen))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    r = subprocess.run(
        [ANALYZE, "verify", "--user", *(str(units / n) for n in service.units(listen))],
        capture_output=True, text=True, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def test_install_service_with_http_and_without_it_again(tmp_path: Path) -> None:
    r, log = run_hookd(tmp_path, "install-service", "--http", "localhost:8787", systemctl_works=True)
    assert r.returncode == 0, r.stderr
    units = tmp_path / "config" / "systemd" / "user"
    assert sorted(p.name for p in units.iterdir()) == ["hookd-http.socket", "hookd.service", "hookd.socket"]
    assert "ListenStream=127.0.0.1:8787" in (units / "hookd-http.socket").read_text()
    assert calls(log) == [
        "--user daemon-reload",
        "--user enable --now hookd.socket hookd-http.socket",
        "--user try-restart hookd.service",
    ]
    log.unlink()
    r, log = run_hookd(tmp_path, "install-service", systemctl_works=True)  # http.listen no longer set
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in units.iterdir()) == ["hookd.service", "hookd.socket"]
    assert calls(log)[0] == "--user disable --now hookd-http.socket"
    assert "RestrictAddressFamilies=AF_UNIX" in (units / "hookd.service").read_text().splitlines()
    log.unlink()
    run_hookd(tmp_path, "install-service", "--http", "127.0.0.1:8787", systemctl_works=True)
    log.unlink()
    r, log = run_hookd(tmp_path, "uninstall-service", systemctl_works=True)
    assert r.returncode == 0 and not any(units.iterdir())
    assert calls(log) == ["--user disable --now hookd.socket hookd-http.socket hookd.service", "--user daemon-reload"]
    r, _ = run_hookd(tmp_path, "install-service", "--http", "127.0.0.1:0", systemctl_works=True)
    assert r.returncode == 1 and "the port must be fixed" in r.stderr


# -- a real user manager -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(CURL is None, reason="curl is missing: `./dev test` installs it with apt-get as root")
def test_user_manager_serves_an_http_hook_through_hookd_http_socket(manager: UserManager) -> None:  # noqa: F811
    port = free_port()
    config = manager.home / ".config" / "hookd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[http]\nlisten = "127.0.0.1:{port}"\n')
    manager.install()
    assert manager.prop("ActiveState", "hookd-http.socket") == "active"
    assert manager.prop("ActiveState") == "inactive"
    url = f"http://127.0.0.1:{port}/v1/events"

    def hook(i: int, query: str = "") -> subprocess.CompletedProcess[str]:
        cmd = [CURL or "curl", "-s", "-w", "\n%{http_code}", "--json", json.dumps({"type": "http_hook", "i": i})]
        return subprocess.run([*cmd, url + query], capture_output=True, text=True, timeout=60)

    first = hook(0, "?wait=1")  # starts hookd.service (socket activation on the TCP port)
    assert first.stdout.endswith("\n200") and '"ok":true' in first.stdout, first
    pid = started(manager)
    out = manager.hookd("status", "--json")
    http_status = json.loads(out.stdout)["daemon"]["http"]
    assert http_status["from_systemd"] is True and http_status["peer_uid_method"] == "netlink"
    assert set(manager.prop("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_NETLINK"}
    os.kill(pid, 9)  # a crash; systemd restarts it (Restart=on-failure) and holds the port meanwhile
    hooks = [hook(i) for i in range(1, 21)]
    assert [h.stdout for h in hooks] == ["\n204"] * 20
    wait_until(lambda: manager.main_pid() not in (0, pid), 60, "hookd to be restarted")
    wait_until(lambda: manager.count("type = 'http_hook'") == 21, 60, "all 21 http hooks stored")


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is missing: `./dev test` installs it (systemd)")
@pytest.mark.skipif(CURL is None, reason="curl is missing: `./dev test` installs it with apt-get as root")
def test_the_first_http_hook_starts_hookd_through_systemd_socket_activate(home: Path) -> None:
    """systemd-socket-activate holds both sockets, as the two socket units do, and starts hookd on
    the first connection, here an http hook's."""
    port = free_port()
    d = Daemon(home, env=clean_env(home))
    d.prefix = [ACTIVATE or "", f"--setenv=HOOKD_HOME={home}", "-l", str(d.socket), "-l", f"127.0.0.1:{port}",
                "--fdname=hookd:hookd-http"]  # fmt: skip
    d.start(wait=False)
    try:
        deadline = time.monotonic() + 30
        while True:  # the tool is listening once the port takes connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, d.logtext
                time.sleep(0.05)
        # That probe started hookd already; the hook is served by it.
        r = subprocess.run(
            [CURL or "curl", "-s", "-w", "\n%{http_code}", "--json", '{"type":"activated"}',
             f"http://127.0.0.1:{port}/v1/events?wait=1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.stdout.endswith("\n200"), (r.stdout, d.logtext)
        d.wait_ready()
        assert f"HTTP: POST http://127.0.0.1:{port}/v1/events (from systemd)" in d.logtext
        assert d.stop() == 0
        assert d.count("type = 'activated'") == 1
    finally:
        d.kill()
