"""docs/integrations.md as written: the shell snippets and the analysis views, each against a
real daemon (Claude Code's installer: tests/test_claude.py).

The snippets are read out of the doc itself, so the doc cannot drift from what is tested.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Daemon, clean_env, settle, stored
from doc_blocks import ROOT, blocks

DOC = ROOT / "docs" / "integrations.md"
BIN = str(Path(sys.executable).parent)  # where hookd-emit is installed, beside this Python


def doc_block(lang: str, containing: str = "") -> str:
    found = [b.text for b in blocks(DOC) if b.lang == lang and containing in b.text]
    assert len(found) == 1, f"expected one ```{lang} block containing {containing!r} in {DOC}"
    return found[0]


def hook_env(home: Path, **extra: str) -> dict[str, str]:
    env = clean_env(home, **extra)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    return env


def emit_wait(home: Path, payload: dict) -> None:
    out = subprocess.run(
        ["hookd-emit", "--wait", "-"], input=json.dumps(payload).encode(), env=hook_env(home), capture_output=True
    )
    assert out.returncode == 0, out


def test_tool_calls_and_sessions_views(daemon: Daemon, home: Path, socat: str) -> None:
    def tool(event: str, tid: str, session: str, **extra: object) -> dict:
        return {"hook_event_name": event, "session_id": session, "tool_name": "Bash", "tool_use_id": tid, **extra}

    emit_wait(home, {"hook_event_name": "SessionStart", "session_id": "a", "cwd": "/p", "source": "startup"})
    emit_wait(home, {"hook_event_name": "UserPromptSubmit", "session_id": "a", "prompt": "go"})
    emit_wait(home, tool("PreToolUse", "t1", "a"))
    emit_wait(home, tool("PreToolUse", "t2", "a"))  # never answered
    emit_wait(home, tool("PreToolUse", "t3", "a"))
    emit_wait(home, tool("PostToolUse", "t1", "a", tool_response={"stdout": ""}))
    emit_wait(home, tool("PostToolUseFailure", "t3", "a", error="exit 1"))
    emit_wait(home, tool("PreToolUse", "t4", "b"))
    emit_wait(home, tool("PostToolUse", "t4", "b"))
    emit_wait(home, {"hook_event_name": "SessionEnd", "session_id": "a", "reason": "logout"})

    calls = daemon.query(
        "SELECT session, tool_use_id, status, duration_ms >= 0, duration_source FROM tool_calls ORDER BY pre_eid"
    )
    assert calls == [  # no duration_ms in these payloads: the time between receptions
        ("a", "t1", "finished", 1, "received"),
        ("a", "t2", "unfinished", None, None),
        ("a", "t3", "failed", 1, "received"),
        ("b", "t4", "finished", 1, "received"),
    ]
    a = daemon.query(
        "SELECT events, prompts, tool_calls, tool_failures, tool_calls_unfinished, end_reason, cwd, "
        "ended = last_seen, started < ended FROM sessions WHERE session = 'a'"
    )
    assert a == [(8, 1, 3, 1, 1, "logout", "/p", 1, 1)]
    assert daemon.query("SELECT session, tool_calls, ended FROM sessions WHERE session = 'b'") == [("b", 1, None)]

    # The pairing is an index lookup per call, not a scan per call (docs/integrations.md, "Cost").
    plan = " | ".join(r[3] for r in daemon.query("EXPLAIN QUERY PLAN SELECT * FROM tool_calls WHERE session = 'a'"))
    assert "USING INDEX events_tool_use_id" in plan, plan


def run_shell(argv: list[str], script: str, home: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    e = hook_env(home, HOME=str(home), **env)
    return subprocess.run(argv, input=script.encode(), env=e, cwd=home, capture_output=True, timeout=60)


SHELL_SESSION = """\
true
sleep 0.3
false
 echo hidden secret
echo "quo\\"te" && ls /nonexistent-hookd
cd /

exit
"""


def check_shell_events(daemon: Daemon, shell: str) -> None:
    assert daemon.wait_count(6) >= 6, daemon.logtext
    daemon.stop()
    got = sorted((e for t, _, e in stored(daemon) if t == "shell_command"), key=lambda e: e["ts"])
    assert [(e["command"], e["exit"]) for e in got] == [
        ("true", 0),
        ("sleep 0.3", 0),
        ("false", 1),
        (None, 0),  # hidden from history: no text
        ('echo "quo\\"te" && ls /nonexistent-hookd', 2),
        ("cd /", 0),
    ]
    assert 300 <= got[1]["duration_ms"] < 5000 and got[0]["duration_ms"] < 300
    assert {e["shell"] for e in got} == {shell} and len({e["session"] for e in got}) == 1
    assert got[0]["cwd"] != "/" and got[-1]["cwd"] == "/"


def test_bash_snippet(daemon: Daemon, home: Path, socat: str) -> None:
    rc = home / "bashrc"
    rc.write_text(doc_block("bash", "__hookd_precmd"))
    out = run_shell(["bash", "--rcfile", str(rc), "-i"], SHELL_SESSION, home, HISTCONTROL="ignoreboth")
    assert b"hookd:" not in out.stderr, out.stderr
    check_shell_events(daemon, "bash")


def test_zsh_snippet(daemon: Daemon, home: Path, socat: str) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed: `./dev test` installs it with apt-get when run as root")
    (home / ".zshrc").write_text("setopt HIST_IGNORE_SPACE\n" + doc_block("zsh", "__hookd_precmd"))
    out = run_shell(["zsh", "-i"], SHELL_SESSION, home, ZDOTDIR=str(home))
    assert b"hookd:" not in out.stderr, out.stderr
    check_shell_events(daemon, "zsh")


def test_a_missing_hookd_emit_is_said_once_at_start(home: Path) -> None:
    rc = home / "bashrc"
    rc.write_text(doc_block("bash", "__hookd_precmd"))
    env = clean_env(home, HOME=str(home), PATH="/usr/bin:/bin")
    out = subprocess.run(["bash", "--rcfile", str(rc), "-i"], input=b"true\n", env=env, capture_output=True)
    assert out.stderr.count(b"hookd-emit is not on PATH") == 1, out.stderr


def test_python_client_examples_store_what_they_say(daemon: Daemon, home: Path) -> None:
    doc = ROOT / "docs" / "python-client.md"
    for block in (b for b in blocks(doc) if b.lang == "python"):
        out = subprocess.run([sys.executable, "-c", block.text], env=hook_env(home), capture_output=True, text=True)
        assert out.returncode == 0, (block.where, out.stderr)
    settle(daemon, 8)  # deploy, backup, 2 routing_metrics, 1 session_outcome (a retry), 2 self_heal, 1 recovery
    counts = dict(daemon.query("SELECT type, count(*) FROM events GROUP BY type"))
    assert counts == {
        "deploy": 1,
        "backup": 1,
        "routing_metrics": 2,
        "session_outcome": 1,
        "self_heal": 2,
        "recovery": 1,
    }
    assert daemon.query("SELECT json_extract(data, '$.model') FROM routing_metrics_events ORDER BY eid") == [
        ("small",),
        ("large",),
    ]
    assert daemon.query("SELECT session, json_extract(data, '$.pr') FROM session_outcome_events") == [("s-42", 1234)]
    assert daemon.query("SELECT json_extract(data, '$.recovered') FROM recovery_events") == [(1,)]
