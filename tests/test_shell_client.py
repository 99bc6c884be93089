"""clients/shell/hookd-emit as a real subprocess, run through its shebang and with `sh` (dash).

Most tests go against the real daemon (``daemon`` fixture) and check what was stored, exactly
once. A few look at the exact bytes the client sends by pointing HOOKD_SOCKET at a listening
socket of the test's own (``Capture``), which needs no daemon. When the daemon cannot take an
event, the client spools it; every test points the spool (HOOKD_HOME, HOOKD_SPOOL_DIR or HOME)
at a temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHELL_CLIENT, Daemon, clean_env, settle, stored

#: How the client is started: through its `#!/bin/sh` line, and with `sh` named explicitly.
RUNNERS = {"exec": [str(SHELL_CLIENT)], "sh": ["sh", str(SHELL_CLIENT)]}
#: For the byte-exact wire tests, also every other POSIX shell at hand (the script must not
#: depend on the one /bin/sh happens to be).
SHELLS = dict(RUNNERS)
for _shell, _argv in {"dash": ["dash"], "bash_posix": ["bash", "--posix"], "busybox": ["busybox", "sh"]}.items():
    if shutil.which(_argv[0]):
        SHELLS[_shell] = [*_argv, str(SHELL_CLIENT)]

# A realistic Claude Code PostToolUse payload: nested objects, braces and escaped quotes inside
# strings, non-ASCII text and an emoji, a raw-newline-free but "\n"-escaped file body.
CLAUDE_PAYLOAD = {
    "session_id": "7f3c2a9e-1b4d-4c8e-9a0f-2d6b8e1c3f57",
    "transcript_path": "/home/dev/.claude/projects/-home-dev-proj/7f3c2a9e.jsonl",
    "cwd": "/home/dev/proj",
    "permission_mode": "default",
    "hook_event_name": "PostToolUse",
    "tool_name": "Edit",
    "tool_input": {
        "file_path": "/home/dev/proj/src/app.py",
        "old_string": 'def f():\n    return {"a": 1}\n',
        "new_string": 'def f():\n    return {"a": "}{", "b": "say \\"hi\\""}\n',
        "replace_all": False,
    },
    "tool_response": {
        "filePath": "/home/dev/proj/src/app.py",
        "success": True,
        "stdout": 'done } { "quoted" \\ back\\slash\ttab',
        "summary": "naïve café – 日本語 ✓ 🎉",
        "structuredPatch": [{"oldStart": 1, "lines": ["-    return {", "+    return }{"]}],
        "empty": {},
        "none": None,
        "n": -1.5e-3,
    },
}

HOOK = {"hook_event_name": "PostToolUse", "session_id": "s1", "tool_name": "Bash"}

BAD_TYPES = ["a b", 'a"b', "a'b", "a;b", "a/b", "a{b}", "$(id)", "caf\u00e9", "a\tb", "a\nb", "x,y"]


def run(runner: list[str], *args: str, env: dict[str, str], input: str | bytes = "", timeout: float = 10):
    """Run the client; stdin is always a pipe (empty unless ``input`` says otherwise)."""
    return subprocess.run(
        [*runner, *args],
        env=env,
        input=input.encode() if isinstance(input, str) else input,
        capture_output=True,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc
    assert proc.stdout == b"", proc
    assert proc.stderr == b"", proc  # the daemon took it: nothing to say


def by_marker(daemon: Daemon) -> dict[str, tuple[str, str]]:
    """marker -> (type, raw data), for events that carry a `marker` key."""
    rows = daemon.query("SELECT json_extract(data, '$.marker'), type, data FROM events")
    out = {m: (t, d) for m, t, d in rows}
    assert len(out) == len(rows), "markers are unique"
    return out


def spool_files(directory: Path) -> list[Path]:
    """Complete spool files (not the hidden temporaries), oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(".jsonl") and not p.name.startswith("."))


@pytest.fixture(params=list(RUNNERS))
def runner(request: pytest.FixtureRequest, socat: str) -> list[str]:
    return RUNNERS[request.param]


class Capture:
    """A listening socket standing in for the daemon: what one client connection sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.sock.settimeout(5)

    def take(self) -> bytes:
        """The bytes of the next connection, up to its end (the client has exited by then)."""
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(5)
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def pending(self) -> bool:
        """Whether a connection is waiting (without blocking)."""
        self.sock.setblocking(False)
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(5)
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def capture(home: Path) -> Iterator[Capture]:
    c = Capture(home / "capture.sock")
    yield c
    c.close()


# -- payloads against the real daemon ------------------------------------------------------


def test_type_with_json_argument(daemon: Daemon, runner: list[str]) -> None:
    env = clean_env(daemon.home)
    ok(run(runner, "git_commit", '{"sha": "3f2a9c1", "branch": "main", "n": 1}', env=env))
    # With a JSON argument stdin is not read, even when it holds something.
    ok(run(runner, "git_push", '{"remote":"origin"}', env=env, input='{"from": "stdin"}\n'))
    settle(daemon, 2)
    assert stored(daemon) == [
        ("git_commit", None, {"sha": "3f2a9c1", "branch": "main", "n": 1, "type": "git_commit"}),
        ("git_push", None, {"remote": "origin", "type": "git_push"}),
    ]
    # The argument's text is kept byte for byte, with the type appended as the last key.
    assert daemon.query("SELECT data FROM events WHERE type = 'git_push'") == [
        ('{"remote":"origin","type":"git_push"}',)
    ]


def test_claude_payload_on_stdin_compact_and_pretty(daemon: Daemon, runner: list[str]) -> None:
    env = clean_env(daemon.home)
    variants = {
        "compact": json.dumps({**CLAUDE_PAYLOAD, "marker": "compact"}),
        "compact_utf8": json.dumps({**CLAUDE_PAYLOAD, "marker": "compact_utf8"}, ensure_ascii=False) + "\n",
        "pretty": json.dumps({**CLAUDE_PAYLOAD, "marker": "pretty"}, indent=2, ensure_ascii=False) + "\n\n",
        "pretty_crlf": json.dumps({**CLAUDE_PAYLOAD, "marker": "pretty_crlf"}, indent="\t").replace("\n", "\r\n")
        + "\r\n",
    }
    for text in variants.values():
        ok(run(runner, "tool_post", env=env, input=text))
    settle(daemon, len(variants))  # each multi-line payload is one event, not one per line
    got = by_marker(daemon)
    assert set(got) == set(variants)
    for marker, (etype, data) in got.items():
        assert etype == "tool_post", marker  # TYPE wins over hook_event_name
        assert json.loads(data) == {**CLAUDE_PAYLOAD, "marker": marker, "type": "tool_post"}, marker
        assert "\n" not in data and "\r" not in data
    assert daemon.query("SELECT DISTINCT session FROM events") == [(CLAUDE_PAYLOAD["session_id"],)]
    assert daemon.query("SELECT DISTINCT json_extract(data, '$.tool_response.summary') FROM events") == [
        ("naïve café – 日本語 ✓ 🎉",)
    ]
    assert daemon.query("SELECT DISTINCT json_extract(data, '$.tool_input.new_string') FROM events") == [
        (CLAUDE_PAYLOAD["tool_input"]["new_string"],)
    ]


def test_empty_object_and_missing_payload_give_just_the_type(daemon: Daemon, socat: str) -> None:
    env = clean_env(daemon.home)
    for name, runner in RUNNERS.items():
        ok(run(runner, f"a_empty_{name}", "{}", env=env))
        ok(run(runner, f"b_spaced_{name}", " {  } \n", env=env))
        ok(run(runner, f"c_stdin_empty_object_{name}", env=env, input="{}\n"))
        ok(run(runner, f"d_no_payload_{name}", env=env, input=""))  # stdin at EOF at once
        ok(run(runner, f"e_blank_stdin_{name}", env=env, input=" \n\t\n"))
    settle(daemon, 5 * len(RUNNERS))
    rows = dict(daemon.query("SELECT type, data FROM events"))
    assert sorted(rows) == sorted(
        f"{case}_{name}"
        for case in ("a_empty", "b_spaced", "c_stdin_empty_object", "d_no_payload", "e_blank_stdin")
        for name in RUNNERS
    )
    for etype, data in rows.items():
        assert data == json.dumps({"type": etype}, separators=(",", ":")), etype


def test_dash_keeps_the_payloads_type_and_type_argument_overrides_it(daemon: Daemon, socat: str) -> None:
    env = clean_env(daemon.home)
    for name, runner in RUNNERS.items():
        hook = {**HOOK, "marker": f"dash_stdin_{name}"}
        ok(run(runner, "-", env=env, input=json.dumps(hook, indent=2)))
        ok(run(runner, "-", f'{{"event": "Routing-Metrics", "marker": "dash_arg_{name}"}}', env=env))
        typed = f'{{"type": "Self Heal", "hook_event_name": "Stop", "marker": "dash_type_{name}"}}'
        ok(run(runner, "-", typed, env=env))
        # TYPE given: it beats the payload's own type (and hook_event_name) for the type column.
        ok(run(runner, "my_type", f'{{"type": "other", "marker": "override_arg_{name}"}}', env=env))
        stdin = f'{{"hook_event_name": "Stop", "type": "x", "marker": "override_stdin_{name}"}}'
        ok(run(runner, "my_type", env=env, input=stdin))
    settle(daemon, 5 * len(RUNNERS))
    got = by_marker(daemon)
    for name in RUNNERS:
        assert got[f"dash_stdin_{name}"][0] == "post_tool_use"
        assert json.loads(got[f"dash_stdin_{name}"][1]) == {**HOOK, "marker": f"dash_stdin_{name}"}  # `-` adds nothing
        arg = f'{{"event": "Routing-Metrics", "marker": "dash_arg_{name}"}}'
        assert got[f"dash_arg_{name}"] == ("routing_metrics", arg)  # byte for byte
        assert got[f"dash_type_{name}"][0] == "self_heal"
        for marker in (f"override_arg_{name}", f"override_stdin_{name}"):
            etype, data = got[marker]
            assert etype == "my_type"
            assert json.loads(data)["type"] == "my_type"  # last key wins for a JSON parser
    assert daemon.query("SELECT DISTINCT session FROM events WHERE type = 'post_tool_use'") == [("s1",)]


def test_type_argument_is_normalized_like_any_type(daemon: Daemon, socat: str) -> None:
    env = clean_env(daemon.home)
    cases = {"PostToolUse": "post_tool_use", "git-commit": "git_commit", "ci.step:done": "ci_step_done", "A_b": "a_b"}
    for i, raw in enumerate(cases):
        ok(run(RUNNERS["sh"], raw, json.dumps({"i": i}), env=env))
    settle(daemon, len(cases))
    rows = daemon.query("SELECT type, json_extract(data, '$.i') FROM events")
    assert sorted(rows, key=lambda r: r[1]) == [(norm, i) for i, norm in enumerate(cases.values())]


def test_non_object_payload_is_rejected_not_object_and_exits_0(daemon: Daemon, socat: str) -> None:
    env = clean_env(daemon.home)
    for runner in RUNNERS.values():
        ok(run(runner, "t", "[1]", env=env))
        ok(run(runner, "t", env=env, input='"just text"\n'))
        ok(run(runner, "-", "42", env=env))
        ok(run(runner, "t", '{"after": "bad ones"}', env=env))  # the daemon still takes good events
    settle(daemon, len(RUNNERS), rejected=3 * len(RUNNERS))
    assert daemon.query("SELECT reason, preview FROM rejected ORDER BY rid") == [
        ("not_object", "[1]"),
        ("not_object", '"just text"'),
        ("not_object", "42"),
    ] * len(RUNNERS)
    assert stored(daemon) == [("t", None, {"after": "bad ones", "type": "t"})] * len(RUNNERS)


def test_many_events_each_stored_exactly_once(daemon: Daemon, socat: str) -> None:
    env = clean_env(daemon.home)
    n = 15
    for i in range(n):
        for name, runner in RUNNERS.items():
            ok(run(runner, "batch", json.dumps({"i": i, "via": name}), env=env))
    settle(daemon, 2 * n)
    distinct = "SELECT count(DISTINCT json_extract(data, '$.via') || json_extract(data, '$.i')) FROM events"
    assert daemon.query(distinct) == [(2 * n,)]
    assert daemon.query("SELECT count FROM event_types WHERE type = 'batch'") == [(2 * n,)]


# -- misuse --------------------------------------------------------------------------------


def test_invalid_type_exits_64_and_sends_nothing(daemon: Daemon, socat: str) -> None:
    env = clean_env(daemon.home)
    for name, runner in RUNNERS.items():
        for bad in BAD_TYPES:
            for wait in ((), ("--wait",)):
                p = run(runner, *wait, bad, '{"a": 1}', env=env)
                assert p.returncode == 64, (name, bad, p)  # and so never 2 ("block the tool call")
                assert b"invalid TYPE" in p.stderr, (name, bad, p)
            p = run(runner, bad, env=env, input='{"a": 1}')
            assert p.returncode == 64, (name, bad, p)
    settle(daemon, 0, rejected=0)
    assert spool_files(daemon.home / "spool") == []


@pytest.mark.parametrize("name", list(RUNNERS))
def test_usage(home: Path, name: str) -> None:
    runner = RUNNERS[name]
    env = clean_env(home)
    for flag in ("--help", "-h"):
        p = run(runner, flag, env=env)
        assert p.returncode == 0, p
        assert p.stdout.startswith(b"usage: hookd-emit "), p
        assert b"TYPE [JSON]" in p.stdout and b"HOOKD_SOCKET" in p.stdout and p.stderr == b""
    for args in ((), ("",), ("t", "{}", "extra"), ("--wait",), ("--wait", "t", "{}", "extra")):
        p = run(runner, *args, env=env)
        assert p.returncode == 64, (args, p)
        assert p.stderr.startswith(b"usage: hookd-emit"), (args, p)
        assert p.stdout == b""
    assert not (home / "spool").exists()


# -- daemon down: the spool ----------------------------------------------------------------


def test_daemon_down_exits_0_at_once_and_spools(home: Path, runner: list[str]) -> None:
    env = clean_env(home)  # nothing listens at home/hookd.sock
    cases = [
        (("t", '{"a": 1}'), "", {"a": 1, "type": "t"}),
        (("t",), json.dumps(CLAUDE_PAYLOAD, indent=2), {**CLAUDE_PAYLOAD, "type": "t"}),
    ]
    for args, stdin, _ in cases:
        t0 = time.monotonic()
        p = run(runner, *args, env=env, input=stdin)
        elapsed = time.monotonic() - t0
        assert p.returncode == 0, p
        assert elapsed < 0.5, elapsed
        assert p.stderr.decode() == (
            f"hookd-emit: hookd is not reachable at {home}/hookd.sock; event spooled to {home}/spool\n"
        )
        assert p.stdout == b""
    files = spool_files(home / "spool")
    assert [json.loads(f.read_bytes()) for f in files] == [want for *_, want in cases]
    assert all(f.read_bytes().count(b"\n") == 1 and f.read_bytes().endswith(b"\n") for f in files)
    assert all(os.stat(f).st_mode & 0o777 == 0o600 for f in files)
    assert os.stat(home / "spool").st_mode & 0o777 == 0o700
    assert [p.name for p in (home / "spool").iterdir() if p.name.startswith(".")] == []  # no temporaries


def test_spooled_events_are_stored_once_when_the_daemon_starts(home: Path, socat: str) -> None:
    env = clean_env(home)
    for i, (name, runner) in enumerate(RUNNERS.items()):
        p = run(runner, "later", json.dumps({"i": i, "via": name}), env=env)
        assert p.returncode == 0 and b"event spooled" in p.stderr, p
    p = run(RUNNERS["sh"], "-", env=env, input=json.dumps({**CLAUDE_PAYLOAD, "marker": "hook"}, indent=2))
    assert p.returncode == 0 and b"event spooled" in p.stderr, p
    assert len(spool_files(home / "spool")) == 3
    d = Daemon(home).start()
    try:
        assert d.wait_count(3) == 3
        ok(run(RUNNERS["sh"], "live", "{}", env=env))  # the socket works as usual
        settle(d, 4)
    finally:
        d.kill()
    assert sorted(t for t, *_ in stored(d)) == ["later", "later", "live", "post_tool_use"]
    assert [data for t, _, data in stored(d) if t == "post_tool_use"] == [{**CLAUDE_PAYLOAD, "marker": "hook"}]
    assert spool_files(home / "spool") == []


def test_stale_socket_file_exits_0_at_once(home: Path, runner: list[str]) -> None:
    """A daemon killed with SIGKILL leaves its socket file: connecting is refused, not waited on."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(home / "hookd.sock"))
    assert (home / "hookd.sock").exists()
    t0 = time.monotonic()
    p = run(runner, "t", "{}", env=clean_env(home))
    assert time.monotonic() - t0 < 0.5
    assert p.returncode == 0 and b"not reachable" in p.stderr, p
    assert len(spool_files(home / "spool")) == 1


def test_spool_not_writable_exits_0_and_says_dropped(home: Path, runner: list[str]) -> None:
    (home / "a-file").write_text("x")
    env = clean_env(home, HOOKD_SPOOL_DIR=str(home / "a-file" / "spool"))  # under a regular file
    t0 = time.monotonic()
    p = run(runner, "t", "{}", env=env)
    assert time.monotonic() - t0 < 0.5
    assert p.returncode == 0, p
    assert b"not reachable" in p.stderr or b"cannot create spool" in p.stderr, p
    assert b"event dropped" in p.stderr, p


def test_socat_missing_exits_0_and_spools(home: Path) -> None:
    """No socat on PATH (but the usual tools): exit 0, say so, spool the event."""
    bindir = home / "bin"
    bindir.mkdir()
    for tool in ("cat", "tr", "id", "date", "od", "mv", "mkdir", "rm"):
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    env = clean_env(home, PATH=str(bindir))
    for runner in ([str(SHELL_CLIENT)], [shutil.which("sh") or "/bin/sh", str(SHELL_CLIENT)]):
        p = run(runner, "t", '{"a": 1}', env=env)
        assert p.returncode == 0, p
        assert b"socat is not installed" in p.stderr and b"event spooled" in p.stderr, p
        p = run(runner, "--wait", "t", '{"a": 1}', env=env)
        assert p.returncode == 1 and b"socat is not installed" in p.stderr, p
    assert [json.loads(f.read_bytes()) for f in spool_files(home / "spool")] == [{"a": 1, "type": "t"}] * 2


# -- --wait --------------------------------------------------------------------------------


def test_wait_prints_the_committed_eid_or_the_rejection(daemon: Daemon, socat: str) -> None:
    env = clean_env(daemon.home)
    for name, runner in RUNNERS.items():
        p = run(runner, "--wait", f"acked_{name}", '{"n": 1}', env=env)
        assert p.returncode == 0 and p.stderr == b"", p
        eid = int(p.stdout)
        # committed before hookd-emit returned: visible at once
        assert daemon.query("SELECT type, json_extract(data, '$.n') FROM events WHERE eid = ?", (eid,)) == [
            (f"acked_{name}", 1)
        ]
        p = run(runner, "--wait", "-", env=env, input=json.dumps(CLAUDE_PAYLOAD, indent=2))
        assert p.returncode == 0, p
        assert daemon.query("SELECT type FROM events WHERE eid = ?", (int(p.stdout),)) == [("post_tool_use",)]
        # rejections: exit 1 and the reason on stderr
        p = run(runner, "--wait", "t", "[1]", env=env)
        assert p.returncode == 1, p
        assert b"rejected" in p.stderr and b"not_object" in p.stderr and p.stdout == b"", p
        p = run(runner, "--wait", "-", '{"no_type": 1}', env=env)
        assert p.returncode == 1 and b"missing_type" in p.stderr, p
    settle(daemon, 2 * len(RUNNERS), rejected=2 * len(RUNNERS))


def test_wait_with_daemon_down_exits_1_at_once_and_does_not_spool(home: Path, runner: list[str]) -> None:
    t0 = time.monotonic()
    p = run(runner, "--wait", "t", "{}", env=clean_env(home))
    assert time.monotonic() - t0 < 0.5
    assert p.returncode == 1 and b"not reachable" in p.stderr and p.stdout == b"", p
    assert not (home / "spool").exists()


# -- socket resolution ---------------------------------------------------------------------


def test_hookd_socket_wins_over_hookd_home(daemon: Daemon, socat: str) -> None:
    for name, runner in RUNNERS.items():
        tmp_path = daemon.home / name  # short: socket paths are limited to 108 bytes
        elsewhere = tmp_path / "no-daemon-here"
        elsewhere.mkdir(parents=True)
        ok(run(runner, f"via_socket_{name}", "{}", env=clean_env(elsewhere, HOOKD_SOCKET=str(daemon.socket))))
        assert not (elsewhere / "spool").exists()
        # the other way round: HOOKD_SOCKET names a dead path, HOOKD_HOME the live daemon
        dead, sp = str(tmp_path / "dead.sock"), str(tmp_path / "sp")
        p = run(runner, "spooled_one", "{}", env=clean_env(daemon.home, HOOKD_SOCKET=dead, HOOKD_SPOOL_DIR=sp))
        assert p.returncode == 0 and f"not reachable at {dead}; event spooled to {sp}\n".encode() in p.stderr, p
        assert len(spool_files(Path(sp))) == 1
        # an empty HOOKD_SOCKET counts as unset
        ok(run(runner, f"via_home_{name}", "{}", env=clean_env(daemon.home, HOOKD_SOCKET="")))
        # XDG_RUNTIME_DIR when neither HOOKD_ variable is set (a symlink to the daemon's socket)
        xdg = tmp_path / "run"
        (xdg / "hookd").mkdir(parents=True)
        (xdg / "hookd" / "hookd.sock").symlink_to(daemon.socket)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKD_", "XDG_"))}
        env.update(XDG_RUNTIME_DIR=str(xdg), HOME=str(tmp_path / "user-home"))
        ok(run(runner, f"via_xdg_{name}", "{}", env=env))
    settle(daemon, 3 * len(RUNNERS))
    assert sorted(t for t, *_ in stored(daemon)) == sorted(
        f"{via}_{name}" for via in ("via_home", "via_socket", "via_xdg") for name in RUNNERS
    )


@pytest.mark.parametrize("name", list(RUNNERS))
def test_socket_and_spool_path_precedence(home: Path, name: str, socat: str) -> None:
    """Which socket the client tries and where it spools, from its message (nothing listens)."""
    runner = RUNNERS[name]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKD_", "XDG_"))}
    base["HOME"] = str(home / "user-home")
    head, mid = "hookd-emit: hookd is not reachable at ", "; event spooled to "

    def tried(**env: str) -> tuple[str, str]:
        p = run(runner, "t", "{}", env={**base, **env})
        assert p.returncode == 0, p
        msg = p.stderr.decode()
        assert msg.startswith(head) and mid in msg and msg.endswith("\n"), msg
        sock, spool = msg[len(head) : -1].split(mid)
        assert len(spool_files(Path(spool))) >= 1
        return sock, spool

    sock, hh, xdg, state, sp = (str(home / n) for n in ("s.sock", "h", "x", "st", "sp"))
    everything = dict(HOOKD_SOCKET=sock, HOOKD_SPOOL_DIR=sp, HOOKD_HOME=hh, XDG_RUNTIME_DIR=xdg, XDG_STATE_HOME=state)
    assert tried(**everything) == (sock, sp)
    assert tried(**{**everything, "HOOKD_SOCKET": "", "HOOKD_SPOOL_DIR": ""}) == (hh + "/hookd.sock", hh + "/spool")
    assert tried(XDG_RUNTIME_DIR=xdg, XDG_STATE_HOME=state) == (xdg + "/hookd/hookd.sock", state + "/hookd/spool")
    fallback = f"/tmp/hookd-{os.getuid()}/hookd.sock"
    if os.path.exists(fallback):
        pytest.skip(f"{fallback} exists (a real daemon?): not sending test events to it")
    default_spool = base["HOME"] + "/.local/state/hookd/spool"
    # relative XDG values are ignored, as the XDG spec says
    assert tried(XDG_RUNTIME_DIR="relative/run", XDG_STATE_HOME="relative/state") == (fallback, default_spool)
    assert tried() == (fallback, default_spool)


# -- regressions: bugs found by these tests, fixed --


@pytest.mark.parametrize("char", [",", ":"])
def test_socket_path_with_socat_special_characters(home: Path, socat: str, char: str) -> None:
    odd = home / f"a{char}b"
    odd.mkdir(mode=0o700)
    d = Daemon(odd).start()
    try:
        p = run(RUNNERS["sh"], "odd_path", "{}", env=clean_env(odd))
        assert p.returncode == 0, p
        assert p.stderr == b"", "socat must not read , or : in the path as address syntax"
        assert d.wait_count(1) == 1
        w = run(RUNNERS["sh"], "--wait", "odd_path", "{}", env=clean_env(odd))
        assert w.returncode == 0, w
        assert d.wait_count(2) == 2
    finally:
        d.kill()


def test_large_event_goes_to_the_spool_and_never_stalls_or_is_cut(capture: Capture, socat: str) -> None:
    """A daemon that accepted but reads nothing (paused under backpressure) cannot take a line
    bigger than the socket buffer: such events are spooled without trying, whole."""
    home = capture.path.parent
    payload = {"big": "z" * 4_000_000}
    t0 = time.monotonic()
    p = run(RUNNERS["sh"], "big", env=clean_env(home, HOOKD_SOCKET=str(capture.path)), input=json.dumps(payload))
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p
    assert elapsed < 2.5, elapsed
    assert not capture.pending(), "nothing was sent to the socket"
    spooled = [json.loads(f.read_bytes()) for f in spool_files(home / "spool")]
    assert spooled == [{**payload, "type": "big"}]
    assert b"spooled" in p.stderr


def test_event_just_under_the_spool_threshold_is_sent(capture: Capture, socat: str) -> None:
    home = capture.path.parent
    payload = {"mid": "m" * 49_000}
    p = run(RUNNERS["sh"], "mid", env=clean_env(home, HOOKD_SOCKET=str(capture.path)), input=json.dumps(payload))
    assert p.returncode == 0, p
    assert json.loads(capture.take()) == {**payload, "type": "mid"}
    assert not spool_files(home / "spool")


# -- the exact line on the wire (no daemon needed) -----------------------------------------


@pytest.mark.parametrize("shell", list(SHELLS))
def test_wire_line_is_one_line_with_type_last(capture: Capture, socat: str, shell: str) -> None:
    runner = SHELLS[shell]
    env = clean_env(capture.path.parent, HOOKD_SOCKET=str(capture.path))
    cases = [
        (("t", '{"a": 1}'), "", b'{"a": 1,"type":"t"}\n'),
        (("t", "{}"), "", b'{"type":"t"}\n'),
        (("t", "{ }  "), "", b'{"type":"t"}\n'),
        (("t",), "", b'{"type":"t"}\n'),
        (("t",), '{\n  "a": "}{",\n  "b": {}\n}\n\n', b'{   "a": "}{",   "b": {},"type":"t"}\n'),
        (("t",), '{"a":"\\\\"}\r\n', b'{"a":"\\\\","type":"t"}\n'),  # backslashes untouched
        (("t", "[1]"), "", b"[1]\n"),
        (("-", '{"event":"e"}'), "", b'{"event":"e"}\n'),
    ]
    for args, stdin, want in cases:
        ok(run(runner, *args, env=env, input=stdin))
        assert capture.take() == want, (args, stdin)
    assert not capture.pending()


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    obj=st.dictionaries(st.text(), JSON_VALUES, max_size=6),
    indent=st.sampled_from([None, 1, "\t"]),
    ascii_only=st.booleans(),
    as_arg=st.booleans(),
    shell=st.sampled_from(list(SHELLS)),
)
def test_any_json_object_arrives_as_that_object_plus_type(
    capture: Capture, socat: str, obj: dict, indent, ascii_only: bool, as_arg: bool, shell: str
) -> None:
    text = json.dumps(obj, indent=indent, ensure_ascii=ascii_only)
    env = clean_env(capture.path.parent, HOOKD_SOCKET=str(capture.path))
    if as_arg:
        ok(run(SHELLS[shell], "prop", text, env=env))
    else:
        ok(run(SHELLS[shell], "prop", env=env, input=text + "\n"))
    line = capture.take()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {**obj, "type": "prop"}


# -- options, terminals and honest messages (issue 13) -------------------------------------


@pytest.mark.parametrize("name", list(RUNNERS))
def test_version_and_unknown_options_store_nothing(daemon: Daemon, name: str, socat: str) -> None:
    from hookd import __version__

    runner = RUNNERS[name]
    env = clean_env(daemon.home)
    for flag in ("--version", "-V"):
        p = run(runner, flag, env=env)
        assert p.returncode == 0 and p.stdout == f"hookd-emit {__version__}\n".encode() and p.stderr == b"", p
    for args in (("-v",), ("--wiat", "deploy"), ("-x", "{}"), ("--wait", "--wait", "t"), ("--wait", "-v")):
        p = run(runner, *args, env=env, input="{}")
        assert p.returncode == 64, (args, p)  # misuse, never 2 ("block the tool call")
        assert b"unknown option" in p.stderr and p.stdout == b"", (args, p)
    ok(run(runner, "-", '{"type": "still_works"}', env=env))
    settle(daemon, 1)
    assert [t for t, _s, _d in stored(daemon)] == ["still_works"]
    assert spool_files(daemon.home / "spool") == []


def test_no_payload_on_a_terminal_sends_the_type_and_says_so(daemon: Daemon, socat: str) -> None:
    """On a terminal, reading stdin would wait for ^D in silence: never hang."""
    import pty

    env = clean_env(daemon.home)
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.execve(str(SHELL_CLIENT), [str(SHELL_CLIENT), "from_tty"], env)
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert b"no JSON given and stdin is a terminal" in out
    settle(daemon, 1)
    assert [(t, d) for t, _s, d in stored(daemon)] == [("from_tty", {"type": "from_tty"})]


def test_a_large_event_is_spooled_with_the_reason_not_as_unreachable(capture: Capture, socat: str) -> None:
    home = capture.path.parent
    p = run(
        RUNNERS["sh"], "big", env=clean_env(home, HOOKD_SOCKET=str(capture.path)), input='{"b": "' + "z" * 60_000 + '"}'
    )
    assert p.returncode == 0, p
    assert b"not reachable" not in p.stderr and b"the event is large" in p.stderr, p
    assert len(spool_files(home / "spool")) == 1
