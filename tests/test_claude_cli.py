"""The real Claude Code CLI (tests/node/claude, version in the suite's header), whole sessions
offline against the stand-in API (claude_api.py), its hooks installed by ``hookd hooks
install-claude`` into a real daemon, its telemetry captured (otlp_capture.py).

What a session fired is taken from Claude Code itself: its ``hook_execution_complete`` log
records (one per hook event run, with how many hooks succeeded). Every one of those events must
be stored, once; every tool call (telemetry ``tool_result``) paired in ``tool_calls`` with the
right status; no hook may fail or block. Then the same with the daemon stopped in the middle of
a session (command hooks spool; http hooks are lost and ``lost_tool_calls`` says so), and with
``kill -9`` under a real systemd user manager (nothing lost).

Each session starts the CLI, a native binary: about 1 s here. The sessions of a test run one
after another; the systemd tests are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from claude_api import StandIn, Tool
from claude_cli import ClaudeHome, Session, missing
from otlp_capture import OtlpCapture

from conftest import Daemon, clean_env, wait_for, wait_until
from hookd import spool
from hookd.framing import normalize_type

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

#: hookd's line limit in these tests: the long-output session's PostToolUse (~90 KB) is over it.
MAX_LINE = 16384
#: The sessions every form of hook must record in full.
SCRIPTS = ("one_tool", "failing_tool", "parallel", "bash", "subagent", "long_output")
#: Hook events Claude Code 2.1.197 runs without a hook_execution_complete record: InstructionsLoaded
#: (before telemetry starts) and SessionEnd (after it has shut down).
UNTRACKED = {"instructions_loaded", "session_end"}


@pytest.fixture(scope="module")
def api() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server
    # What else Claude Code asked: shown with -rA or on a failure, and checked below.
    print("stand-in API, extra requests:", Counter(server.log.extra), "unknown:", Counter(server.log.unknown))


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpCapture]:
    with OtlpCapture() as cap:
        yield cap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Telemetry(Protocol):
    """Where a session's telemetry is read: the capture server, or hookd's own store."""

    def events(self, name: str, session: str | None = None) -> list[dict[str, Any]]: ...


class StoredTelemetry:
    """Claude Code's telemetry as hookd stored it (``install-claude --telemetry``: exported to
    hookd's listener as OTLP protobuf): each log record an event of type ``claude_code_<name>``
    whose keys are the record's attributes, as OtlpCapture shows them."""

    def __init__(self, query: Callable[[str, tuple], list[tuple]]) -> None:
        self.query = query

    def events(self, name: str, session: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT data FROM events WHERE type = ? AND (? IS NULL OR session = ?) ORDER BY eid"
        try:
            return [json.loads(d) for (d,) in self.query(sql, (f"claude_code_{name}", session, session))]
        except sqlite3.OperationalError:
            return []


class Rig:
    """A daemon on ``home`` (HOOKD_HOME) with its HTTP listener, and a Claude Code HOME beside it
    with hookd's hooks installed in the form ``mode``: ``http``, ``command``, or ``telemetry``
    (http hooks and ``--telemetry``: Claude Code exports its telemetry to hookd, not to the
    capture server)."""

    def __init__(self, home: Path, api: StandIn, otlp: OtlpCapture, mode: str) -> None:
        self.home = home
        self.port = free_port()
        self.daemon = Daemon(home, "--http", f"127.0.0.1:{self.port}", "--max-line", str(MAX_LINE))
        telemetry = mode == "telemetry"
        self.claude = ClaudeHome(home / "u", api.url, None if telemetry else otlp.endpoint)
        self.telemetry: Telemetry = StoredTelemetry(self.query) if telemetry else otlp
        self.mode = mode
        form = ["--http", "--telemetry"] if telemetry else [f"--{mode}"]
        env = clean_env(home, HOME=str(self.claude.root), HOOKD_HTTP=f"127.0.0.1:{self.port}")
        out = subprocess.run(
            [sys.executable, "-m", "hookd", "hooks", "install-claude", "--settings", str(self.claude.settings),
             *form],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out
        hooks = json.loads(self.claude.settings.read_text())["hooks"]
        assert hooks["PreToolUse"][0]["hooks"][0]["type"] == form[0][2:]

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.daemon.query(sql, params)


def spooled(home: Path) -> int:
    """Spool files with events the daemon has not read."""
    return spool.waiting(home / "spool")


def stored_types(query: Callable[[str, tuple], list[tuple]], sid: str) -> Counter[str]:
    """The session's hook events by type (its telemetry, when hookd receives it, aside)."""
    try:
        types = [t for (t,) in query("SELECT type FROM events WHERE session = ?", (sid,))]
    except sqlite3.OperationalError:  # no database yet
        return Counter()
    return Counter(t for t in types if not t.startswith("claude_code_") and t != "otel_metric")


def fired(otlp: Telemetry, s: Session) -> list[dict[str, Any]]:
    """Claude Code's own account of the hook events it ran in session ``s``. Its telemetry is
    exported before it exits; the Stop hook's record is the last one."""

    def complete() -> list[dict[str, Any]] | None:
        recs = otlp.events("hook_execution_complete", s.id)
        return recs if any(r["hook_event"] == "Stop" for r in recs) else None

    return wait_until(complete, 30, f"the telemetry of session {s.script}")  # type: ignore[return-value]


def check_recorded(query: Callable[[str, tuple], list[tuple]], otlp: Telemetry, s: Session) -> list[dict]:
    """Every hook event Claude Code ran in ``s`` is stored once, and its tool calls are paired
    as its telemetry says they ended. Returns the session's stored payloads."""
    assert s.rc == 0 and s.result.get("subtype") == "success", (s.rc, s.result, s.stderr[-2000:])
    runs = fired(otlp, s)
    for r in runs:  # no hook failed, blocked (exit 2) or was cancelled, in Claude Code's own words
        assert (r["num_success"], r["num_blocking"], r["num_non_blocking_error"], r["num_cancelled"]) == (
            r["num_hooks"], "0", "0", "0"), r  # fmt: skip
    want = Counter(normalize_type(r["hook_event"]) for r in runs)
    want["session_end"] = 1
    if not wait_for(lambda: stored_types(query, s.id) >= want, 30):
        got = stored_types(query, s.id)
        raise AssertionError(f"session {s.script}: Claude Code ran {dict(want)}, stored {dict(got)}")
    got = stored_types(query, s.id)
    assert {t: got[t] for t in want} == dict(want), s.script
    assert set(got) - set(want) <= UNTRACKED, s.script
    # Tool calls: each tool_result Claude Code reported, paired with its closing event.
    results = {r["tool_use_id"]: r for r in otlp.events("tool_result", s.id)}
    assert results, s.script
    sql = "SELECT tool_use_id, tool_name, status FROM tool_calls WHERE session = ?"
    calls = {tid: (name, status) for tid, name, status in query(sql, (s.id,))}
    assert calls == {
        tid: (r["tool_name"], "finished" if r["success"] == "true" else "failed") for tid, r in results.items()
    }, s.script
    assert query("SELECT * FROM lost_tool_calls WHERE session = ?", (s.id,)) == []
    check_usage(otlp, s)
    rows = [json.loads(d) for (d,) in query("SELECT data FROM events WHERE session = ? ORDER BY eid", (s.id,))]
    return [r for r in rows if "hook_event_name" in r]


def check_usage(otlp: Telemetry, s: Session) -> None:
    """The session's api_request records add up to what ``claude -p`` reported it cost."""
    requests = otlp.events("api_request", s.id)
    assert requests and all(isinstance(r["cost_usd"], float) for r in requests)  # numbers here, strings elsewhere
    assert sum(r["cost_usd"] for r in requests) == pytest.approx(s.result["total_cost_usd"], abs=1e-9)
    assert sum(int(r["output_tokens"]) for r in requests) >= s.result["usage"]["output_tokens"]


def check_session_usage(query: Callable[[str, tuple], list[tuple]], telemetry: Telemetry, s: Session) -> None:
    """hookd's ``session_usage`` of the session: its api_request records added up, and what
    ``claude -p`` reported it cost."""
    requests = telemetry.events("api_request", s.id)
    sql = "SELECT cost_usd, input_tokens, output_tokens, api_requests FROM session_usage WHERE session = ?"
    ((cost, tokens_in, tokens_out, n),) = query(sql, (s.id,))
    assert n == len(requests) > 0
    assert cost == pytest.approx(sum(r["cost_usd"] for r in requests), abs=1e-9)
    assert cost == pytest.approx(s.result["total_cost_usd"], abs=1e-9)
    assert tokens_in == sum(int(r["input_tokens"]) for r in requests)
    assert tokens_out == sum(int(r["output_tokens"]) for r in requests)


def by_type(rows: list[dict], hook_event: str) -> list[dict]:
    return [r for r in rows if r.get("hook_event_name") == hook_event]


def check_script(script: str, rows: list[dict], otlp: Telemetry, s: Session) -> None:
    """What each script's session must show beyond the common checks."""
    if script == "failing_tool":
        (failure,) = by_type(rows, "PostToolUseFailure")
        assert failure["tool_name"] == "Read" and "does not exist" in failure["error"], failure
    elif script == "parallel":
        pre = by_type(rows, "PreToolUse")
        assert len(pre) == 2 and len({p["tool_use_id"] for p in pre}) == 2 and len({p["prompt_id"] for p in pre}) == 1
        (batch,) = by_type(rows, "PostToolBatch")
        assert {c["tool_use_id"] for c in batch["tool_calls"]} == {p["tool_use_id"] for p in pre}
        # Each call's hooks, in Claude Code's own sequence numbers: PreToolUse twice, PostToolUse
        # twice (each as its call ends: together or one after the other), then one PostToolBatch.
        seq = {
            name: [r["event.sequence"] for r in otlp.events(name, s.id) if r["hook_event"] == event]
            for name, event in (("hook_execution_complete", "PostToolUse"), ("hook_execution_start", "PostToolBatch"))
        }
        assert len(seq["hook_execution_complete"]) == 2 and max(seq["hook_execution_complete"]) < min(
            seq["hook_execution_start"]
        ), seq
    elif script == "bash":
        (post,) = by_type(rows, "PostToolUse")
        assert post["tool_response"]["stdout"].strip() == "bash-ran", post
    elif script == "subagent":
        (start,), (stop,) = by_type(rows, "SubagentStart"), by_type(rows, "SubagentStop")
        assert start["agent_id"] == stop["agent_id"] and stop["last_assistant_message"]
        inner = [r for r in by_type(rows, "PreToolUse") if r.get("agent_id")]
        assert [r["tool_name"] for r in inner] == ["Read"] and inner[0]["agent_id"] == start["agent_id"]
        assert {r["tool_name"] for r in by_type(rows, "PostToolUse")} == {"Read", "Agent"}
    elif script == "long_output":
        (post,) = by_type(rows, "PostToolUse")
        cut = post["_hookd_truncated"]
        assert cut["limit"] == MAX_LINE and cut["values"][0]["path"] == "$.tool_response.file.content", cut
        assert len(json.dumps(post)) <= MAX_LINE


@pytest.mark.parametrize("mode", ["http", "command", "telemetry"])
def test_every_hook_of_real_sessions_is_recorded(home: Path, api: StandIn, otlp: OtlpCapture, mode: str) -> None:
    rig = Rig(home, api, otlp, mode)
    rig.daemon.start()
    try:
        for script in SCRIPTS:
            s = rig.claude.run(script)
            rows = check_recorded(rig.query, rig.telemetry, s)
            check_script(script, rows, rig.telemetry, s)
            if mode == "telemetry":
                check_session_usage(rig.query, rig.telemetry, s)
        assert rig.query("SELECT reason, detail FROM rejected") == []
        assert spooled(home) == 0, "nothing was spooled: the daemon took every event"
        assert rig.daemon.stop() == 0, rig.daemon.logtext
    finally:
        rig.daemon.kill()
    assert {u for u in api.log.unknown} <= {"GET /"}, api.log.unknown  # a reachability probe


class Pause:
    """Script ``pause``: a Bash tool call that waits while the test acts (stops or kills the
    daemon), so the act falls between the call's PreToolUse and its PostToolUse."""

    def __init__(self, where: Path, api: StandIn, act: Callable[[], None]) -> None:
        self.mark, self.go = where / "paused", where / "go"
        self.act = act
        command = f"touch {self.mark}; while [ ! -e {self.go} ]; do sleep 0.05; done; echo resumed"
        api.scripts["pause"] = [[Tool("Bash", {"command": command, "description": "Wait"})], ["Resumed."]]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            wait_until(self.mark.exists, 120, "the Bash tool call")
            self.act()
        except BaseException as e:  # reported by join()
            self.error = e
        finally:
            self.go.touch()

    def join(self) -> None:
        self.thread.join(60)
        if self.error is not None:
            raise self.error


def test_command_hooks_spool_while_the_daemon_is_down(home: Path, api: StandIn, otlp: OtlpCapture) -> None:
    rig = Rig(home, api, otlp, "command")
    s = rig.claude.run("one_tool")  # no daemon at all
    assert s.rc == 0, s.stderr
    assert spooled(home) > 0, "the command hooks spooled the session"
    rig.daemon.start()  # takes the spool in
    try:
        check_recorded(rig.query, otlp, s)
    finally:
        rig.daemon.kill()


@pytest.mark.parametrize("mode", ["http", "command"])
def test_the_daemon_stopped_in_the_middle_of_a_session(home: Path, api: StandIn, otlp: OtlpCapture, mode: str) -> None:
    """The daemon stops during a Bash tool call and is back before the next request: command
    hooks spool the events in between; http hooks lose them (Claude Code goes on), and
    ``lost_tool_calls`` and ``hookd status`` report the unpaired call once SessionEnd arrives."""
    rig = Rig(home, api, otlp, mode)
    rig.daemon.start()
    pause = Pause(home, api, lambda: rig.daemon.stop())
    api.on_turn[("pause", 1)] = rig.daemon.start  # the request after the call: the daemon is back
    try:
        s = rig.claude.run("pause")
        pause.join()
        if mode == "command":
            check_recorded(rig.query, otlp, s)
            assert "spooled file(s)" in rig.daemon.logtext, "some came through the spool"
            return
        assert s.rc == 0, s.stderr
        runs = {r["hook_event"]: r for r in fired(otlp, s)}
        for event in ("PostToolUse", "PostToolBatch"):  # Claude Code saw them fail, and went on
            assert runs[event]["num_non_blocking_error"] == "1", runs[event]
        wait_until(lambda: stored_types(rig.query, s.id)["session_end"] == 1, 30, "SessionEnd")
        ((tid, name),) = rig.query("SELECT tool_use_id, tool_name FROM lost_tool_calls WHERE session = ?", (s.id,))
        assert name == "Bash" and tid == otlp.events("tool_result", s.id)[0]["tool_use_id"]
        assert rig.daemon.stop() == 0
        out = subprocess.run([sys.executable, "-m", "hookd", "status"], env=clean_env(home), capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert "lost: 1 tool call(s) in 1 ended session(s)" in out.stdout and s.id in out.stdout, out.stdout
    finally:
        api.on_turn.clear()
        rig.daemon.kill()


# -- kill -9 under a real systemd user manager --------------------------------------------------


@pytest.fixture
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from test_systemd_user import running_manager

    # no journal here: what happens to hookd.service, in manager.log
    yield from running_manager(tmp_path_factory, SYSTEMD_LOG_TARGET="console")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["http", "command"])
def test_kill_9_mid_session_under_systemd_loses_nothing(
    manager: Any, api: StandIn, otlp: OtlpCapture, mode: str
) -> None:
    """``install-service`` with the HTTP port; the daemon is killed with SIGKILL during a tool
    call. systemd holds the Unix socket and the port while it restarts hookd: every hook after
    the kill waits for the new daemon instead of failing."""
    from test_systemd_user import started

    port = free_port()
    config = manager.home / ".config" / "hookd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[http]\nlisten = "127.0.0.1:{port}"\n')
    manager.install()
    claude = ClaudeHome(manager.home, api.url, otlp.endpoint, XDG_RUNTIME_DIR=str(manager.runtime))
    out = manager.hookd("hooks", "install-claude", "--settings", str(claude.settings), f"--{mode}")
    assert out.returncode == 0, out
    assert manager.emit("--wait", "before", "{}").returncode == 0
    pid = started(manager)

    def query(sql: str, params: tuple = ()) -> list[tuple]:
        db = sqlite3.connect(f"file:{manager.db}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def kill() -> None:
        # After this call's PreToolUse is committed: a kill -9 loses the fire-and-forget events
        # the daemon has read and not yet handed to its writer (at most one batch, 50 ms;
        # docs/operations.md), which is not what this test is about. Everything sent after the
        # kill, while systemd restarts hookd, must arrive.
        wait_until(lambda: query("SELECT 1 FROM events WHERE type = 'pre_tool_use'"), 30, "the PreToolUse")
        os.kill(pid, signal.SIGKILL)

    pause = Pause(manager.root, api, kill)
    s = claude.run("pause")
    try:
        pause.join()
    except ProcessLookupError:
        raise AssertionError(f"hookd ({pid}) exited before the kill: {manager_state(manager)}") from None

    try:
        check_recorded(query, otlp, s)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{manager_state(manager)}") from None
    assert started(manager) != pid and int(manager.prop("NRestarts")) == 1, manager_state(manager)


def manager_state(manager: Any) -> str:
    log = manager.daemon_log.read_text() if manager.daemon_log.exists() else ""
    props = {p: manager.prop(p) for p in ("ActiveState", "Result", "NRestarts", "MainPID", "ExecMainStatus")}
    systemd = manager.log.read_text(errors="replace") if manager.log.exists() else ""
    return f"hookd.service {props}; its log:\n{log[-2000:]}\nthe manager's log:\n{systemd[-3000:]}"
