"""``hookd hooks install-claude`` / ``uninstall-claude`` as real processes on real settings files,
then every Claude Code hook event sent through the installed settings' exact commands, as Claude
Code runs them (``/bin/sh -c``, the payload on stdin, a desktop's PATH), into a real daemon.
"""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, clean_env, settle
from doc_blocks import ROOT, blocks
from hookd.errors import UsageError
from hookd.ops import claude
from hookd.settings import Settings

DOC = ROOT / "docs" / "integrations.md"
EMIT = str(Path(sys.executable).parent / "hookd-emit")
DESKTOP_PATH = "/usr/bin:/bin"  # what a Claude Code started from a desktop or an IDE may have

S1 = "9a1b7c3e-5f2d-4e8a-b6c0-d4e2f1a3b5c7"
BASE = {
    "session_id": S1,
    "transcript_path": f"/home/dev/.claude/projects/-home-dev-proj/{S1}.jsonl",
    "cwd": "/home/dev/proj",
    "permission_mode": "default",
    "prompt_id": "prm_01",
}


def ev(event: str, /, **fields: Any) -> dict[str, Any]:
    return {**BASE, "hook_event_name": event, **fields}


def tool(name: str, tid: str, tool_name: str = "Bash", **fields: Any) -> dict[str, Any]:
    tool_input = (
        {"command": "pytest -q", "description": "Run the tests"} if tool_name == "Bash" else {"file_path": "/x"}
    )
    return ev(name, tool_name=tool_name, tool_input=tool_input, tool_use_id=tid, **fields)


MODEL_SWITCH = {
    "from_model": "claude-opus-4",
    "to_model": "claude-sonnet-4",
    "requested_model": "sonnet",
    "source": "command",
    "context_tokens": 48213,
    "pricing": {"input_per_mtok": 3.0, "output_per_mtok": 15.0},
}
#: A session as Claude Code would report it, with every hook event of Claude Code's reference
#: (../shared/claude-code.md) and its own fields, in a plausible order. Tool calls: t1 finishes,
#: t2 fails, t3 is denied in auto mode, t4 never gets an answer (a lost PostToolUse).
SESSION: list[dict[str, Any]] = [
    ev("Setup", trigger="init"),
    ev("SessionStart", source="startup", model="claude-opus-4"),
    ev("InstructionsLoaded", file_path="/home/dev/proj/CLAUDE.md", memory_type="Project", load_reason="session_start"),
    ev("UserPromptSubmit", prompt='Fix the failing test, "quickly" \\ please — merci ✓'),
    ev("UserPromptExpansion", expansion_type="slash_command", command_name="review", command_args="",
       command_source="project", prompt="/review"),
    ev("MessageDisplay", turn_id="turn_1", message_id="msg_1", index=0, final=False, delta="Let me look"),
    tool("PreToolUse", "toolu_01"),
    ev("PermissionRequest", tool_name="Bash", tool_input={"command": "pytest -q"},
       permission_suggestions=[{"type": "addRules", "rules": [{"toolName": "Bash"}]}]),
    ev("Notification", message="Claude needs your permission to use Bash", notification_type="permission_prompt"),
    tool("PostToolUse", "toolu_01", tool_response={"stdout": "1 failed\n{}", "stderr": ""}, duration_ms=812),
    tool("PreToolUse", "toolu_02", "Read"),
    tool("PostToolUseFailure", "toolu_02", "Read", error="File does not exist.", is_interrupt=False, duration_ms=3),
    tool("PreToolUse", "toolu_03", "Bash"),
    tool("PermissionDenied", "toolu_03", reason="auto mode: denied by rule"),
    tool("PreToolUse", "toolu_04", "Edit"),
    ev("PostToolBatch", tool_calls=[{"tool_name": "Read", "tool_input": {"file_path": "/x"}, "tool_use_id": "toolu_02",
                                     "tool_response": "error"}]),
    ev("SubagentStart", agent_id="agent_1", agent_type="Explore"),
    ev("SubagentStop", stop_hook_active=False, agent_id="agent_1", agent_type="Explore",
       agent_transcript_path="/home/dev/.claude/projects/x/agent_1.jsonl", last_assistant_message="Found it."),
    ev("TaskCreated", task_id="task_1", task_subject="Fix test", task_description="the failing one"),
    ev("TaskCompleted", task_id="task_1", task_subject="Fix test", teammate_name="bob"),
    ev("TeammateIdle", teammate_name="bob"),
    ev("ConfigChange", source="user_settings", file_path="/home/dev/.claude/settings.json"),
    ev("CwdChanged", old_cwd="/home/dev/proj", new_cwd="/home/dev/proj/sub"),
    ev("DirectoryAdded", directory="/home/dev/other", source="add_dir_command"),
    ev("FileChanged", file_path="/home/dev/proj/.env", event="change"),
    ev("WorktreeCreate", name="feature-x"),
    ev("WorktreeRemove", worktree_path="/home/dev/proj/.claude/worktrees/feature-x"),
    ev("Elicitation", mcp_server_name="github", message="Which repository?", mode="form",
       requested_schema={"type": "object", "properties": {"repo": {"type": "string"}}}),
    ev("ElicitationResult", mcp_server_name="github", action="accept", content={"repo": "me/proj"}),
    ev("PreCompact", trigger="manual", custom_instructions="keep the test names"),
    ev("PostCompact", trigger="manual", compact_summary="We fixed one test."),
    ev("PreModelSwitch", **MODEL_SWITCH),
    ev("PostModelSwitch", **MODEL_SWITCH),
    ev("Stop", stop_hook_active=False, last_assistant_message="Done: the test passes."),
    ev("StopFailure", error="rate_limit", error_details="429 from the API"),
    ev("SessionEnd", reason="prompt_input_exit"),
]  # fmt: skip


def hookd(
    home: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``hookd ARGS`` as a process, with HOME (and so ~/.claude) inside the test's directory."""
    e = env or clean_env(home, HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "hookd", *args], env=e, cwd=cwd or home, capture_output=True, text=True, timeout=60
    )


def install(home: Path, settings: Path, *extra: str) -> subprocess.CompletedProcess:
    out = hookd(home, "hooks", "install-claude", "--settings", str(settings), *extra)
    assert out.returncode == 0, out
    return out


def uninstall(home: Path, settings: Path) -> subprocess.CompletedProcess:
    out = hookd(home, "hooks", "uninstall-claude", "--settings", str(settings))
    assert out.returncode == 0, out
    return out


def ours(handler: dict[str, Any]) -> bool:
    return claude.is_ours(handler)


def hookd_entries(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Event -> hookd's entries in it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for event, groups in data.get("hooks", {}).items():
        found = [h for g in groups for h in g.get("hooks", []) if ours(h)]
        if found:
            out[event] = found
    return out


def test_the_session_covers_every_claude_code_event() -> None:
    names = [e.name for e in claude.EVENTS]
    assert len(names) == len(set(names)) == 33
    assert {p["hook_event_name"] for p in SESSION} == set(names)
    assert {e.name for e in claude.EVENTS if not e.included} == {
        "MessageDisplay",
        "FileChanged",
        "WorktreeCreate",
        "PreModelSwitch",
    }
    # Claude Code's rules: command only on SessionStart and Setup; hookd's: never http on PermissionRequest.
    assert {e.name for e in claude.EVENTS if not e.http_allowed} == {"SessionStart", "Setup"}
    assert all(e.http_allowed for e in claude.EVENTS if e.http)
    assert {e.name for e in claude.EVENTS if e.included and e.form("http") != "http"} == {
        "SessionStart",
        "Setup",
        "PermissionRequest",
    }


# -- the file: shapes, idempotency, backup, restore ---------------------------------------------
USER_GROUP = {"matcher": "Bash", "hooks": [{"type": "command", "command": "~/bin/check-bash.sh", "timeout": 30}]}
SHAPES: dict[str, bytes | None] = {
    "missing": None,
    "empty file": b"",
    "empty object": b"{}\n",
    "other keys, no hooks": json.dumps(
        {"model": "opus", "permissions": {"allow": ["Bash(npm test:*)"]}, "env": {"FOO": "1"}}, indent=2
    ).encode()
    + b"\n",
    "a user's matcher group": json.dumps(
        {"hooks": {"PreToolUse": [USER_GROUP], "Stop": [{"hooks": [{"type": "command", "command": "notify-send"}]}]}},
        indent=2,
        ensure_ascii=False,
    ).encode()
    + b"\n",
    "a hookd-emit of the user's own": json.dumps(
        {"hooks": {"PostToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": "hookd-emit -"}]}]}},
        indent=2,
    ).encode()
    + b"\n",
    "four spaces, unicode": json.dumps({"statusLine": {"command": "echo ✓"}}, indent=4, ensure_ascii=False).encode()
    + b"\n",
    "tabs": b'{\n\t"model": "sonnet",\n\t"hooks": {}\n}\n',
    "compact, no final newline": b'{"model":"sonnet","hooks":{"Notification":[{"hooks":[{"type":"command"}]}]}}',
}  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_install_merges_is_idempotent_and_uninstall_restores_the_bytes(home: Path, shape: str) -> None:
    settings = home / ".claude" / "settings.json"
    original = SHAPES[shape]
    if original is not None:
        settings.parent.mkdir()
        settings.write_bytes(original)
        settings.chmod(0o640)
    out = install(home, settings, "--command")
    data = json.loads(settings.read_bytes())
    before = json.loads(original) if original else {}

    # Every other key, and every hook of the user's, is as it was; hookd's come after them.
    assert {k: v for k, v in data.items() if k != "hooks"} == {k: v for k, v in before.items() if k != "hooks"}
    for event, groups in before.get("hooks", {}).items():
        assert data["hooks"][event][: len(groups)] == groups
        assert all(not ours(h) for g in data["hooks"][event][: len(groups)] for h in g["hooks"])
    entries = hookd_entries(data)
    assert set(entries) == {e.name for e in claude.EVENTS if e.included}
    assert all(len(v) == 1 for v in entries.values())
    pre = entries["PreToolUse"][0]
    assert pre == {"type": "command", "command": pre["command"], "async": True}
    assert pre["command"].endswith(f"/hookd-emit - {claude.TAG}") and EMIT in pre["command"]
    assert entries["SessionEnd"][0]["timeout"] == claude.COMMAND_TIMEOUT and "async" not in entries["SessionEnd"][0]
    assert ("stored twice" in out.stdout) == (shape == "a hookd-emit of the user's own")

    # Mode kept; the backup holds the bytes of before, once.
    backup = settings.with_name("settings.json.hookd-backup")
    if original is None:
        assert not backup.exists()
        assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    else:
        assert backup.read_bytes() == original
        assert stat.S_IMODE(settings.stat().st_mode) == 0o640
    first = settings.read_bytes()
    again = install(home, settings, "--command")
    assert settings.read_bytes() == first, "a second run must leave the file byte-identical"
    assert "nothing changed" in again.stdout
    assert not list(settings.parent.glob(".*hookd-tmp")), "no temporary file left behind"

    uninstall(home, settings)
    if original is None:
        assert json.loads(settings.read_bytes()) == {}
    else:
        assert settings.read_bytes() == original, "uninstall puts the original bytes back"
        assert not backup.exists()
    assert "no hooks of hookd's" in uninstall(home, settings).stdout


def test_uninstall_keeps_what_the_user_changed_since(home: Path) -> None:
    settings = home / "settings.json"
    settings.write_text(json.dumps({"hooks": {"PreToolUse": [USER_GROUP]}}, indent=2) + "\n")
    original = settings.read_bytes()
    install(home, settings, "--command")
    data = json.loads(settings.read_bytes())
    # The user adds a hook of their own after ours, and a key (as Claude Code does for "always allow").
    data["hooks"]["Stop"].append({"hooks": [{"type": "command", "command": "say done"}]})
    data["permissions"] = {"allow": ["Read"]}
    settings.write_text(json.dumps(data, indent=2) + "\n")

    out = uninstall(home, settings)
    assert "still holds the file as it was" in out.stdout
    left = json.loads(settings.read_bytes())
    assert left == {
        "hooks": {"PreToolUse": [USER_GROUP], "Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]},
        "permissions": {"allow": ["Read"]},
    }
    assert settings.with_name("settings.json.hookd-backup").read_bytes() == original  # kept, never overwritten


def test_a_file_that_is_not_json_is_refused_with_line_and_column(home: Path) -> None:
    settings = home / "settings.json"
    bad = b'{\n  "model": "opus",\n  "hooks": {\n    "Stop": [,]\n  }\n}\n'
    settings.write_bytes(bad)
    for command in ("install-claude", "uninstall-claude"):
        out = hookd(home, "hooks", command, "--settings", str(settings))
        assert out.returncode == 2, out  # a usage error: the file must be fixed
        assert f"{settings}: not valid JSON at line 4, column 14" in out.stderr, out.stderr
        assert "nothing was changed" in out.stderr
        assert settings.read_bytes() == bad
        assert sorted(p.name for p in home.iterdir() if "settings" in p.name) == ["settings.json"]
    settings.write_bytes(b'{"hooks": {"Stop": {"hooks": []}}}')
    out = hookd(home, "hooks", "install-claude", "--settings", str(settings))
    assert out.returncode == 2 and '"hooks.Stop" is not a JSON array' in out.stderr, out


def test_project_files_and_the_default_file(home: Path) -> None:
    project = home / "proj"
    project.mkdir()
    out = hookd(home, "hooks", "install-claude", "--settings", ".claude/settings.local.json", "--command", cwd=project)
    assert out.returncode == 0, out
    local = project / ".claude" / "settings.local.json"
    assert set(hookd_entries(json.loads(local.read_text()))) == {e.name for e in claude.EVENTS if e.included}
    assert "usually committed" not in out.stdout
    out = hookd(home, "hooks", "install-claude", "--settings", ".claude/settings.json", cwd=project)
    assert out.returncode == 0 and "usually committed" in out.stdout, out
    # Without --settings: ~/.claude/settings.json; without --http or a listener: commands.
    out = hookd(home, "hooks", "install-claude")
    assert out.returncode == 0, out
    user = home / ".claude" / "settings.json"
    assert all(h[0]["type"] == "command" for h in hookd_entries(json.loads(user.read_text())).values())
    assert "usually committed" not in out.stdout
    # A symlinked settings file (a dotfile manager's) stays a symlink: the file it points to changes.
    real = home / "dotfiles" / "claude.json"
    real.parent.mkdir()
    real.write_text("{}\n")
    link = home / "linked.json"
    link.symlink_to(real)
    install(home, link, "--command")
    assert link.is_symlink() and hookd_entries(json.loads(real.read_text()))


def test_http_without_a_listener_is_a_usage_error_that_says_how(home: Path) -> None:
    settings = home / "settings.json"
    out = hookd(home, "hooks", "install-claude", "--settings", str(settings), "--http")
    assert out.returncode == 2, out
    assert "[http]" in out.stderr and "HOOKD_HTTP" in out.stderr and "--command" in out.stderr, out.stderr
    assert not settings.exists()


def test_http_form_switches_in_place_and_uninstalls(tmp_path: Path) -> None:
    """In process: this branch has no listener, so ``http_listen`` is set on the Settings."""
    settings = Settings(paths=_paths(tmp_path))
    settings.http_listen = "localhost:8787"  # type: ignore[attr-defined]
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"hooks": {"PreToolUse": [USER_GROUP]}}) + "\n")
    original = path.read_bytes()
    claude.install(path, settings, None, emit=EMIT)  # the default is http when it is configured
    entries = hookd_entries(json.loads(path.read_bytes()))
    assert entries["PreToolUse"] == [{"type": "http", "url": "http://127.0.0.1:8787/v1/events", "timeout": 5}]
    assert entries["SessionEnd"] == [{"type": "http", "url": "http://127.0.0.1:8787/v1/events", "timeout": 1}]
    for name in ("SessionStart", "Setup", "PermissionRequest"):
        assert entries[name][0]["type"] == "command", name
    claude.install(path, settings, "command", emit=EMIT)
    data = json.loads(path.read_bytes())
    assert all(v[0]["type"] == "command" and len(v) == 1 for v in hookd_entries(data).values())
    assert data["hooks"]["PreToolUse"][0] == USER_GROUP and len(data["hooks"]["PreToolUse"]) == 2  # replaced in place
    claude.install(path, settings, "http", emit=EMIT)
    claude.uninstall(path)
    assert path.read_bytes() == original
    assert claude.http_url("[::1]:9000") == "http://[::1]:9000/v1/events"
    assert claude.http_url(("localhost", 9000)) == "http://127.0.0.1:9000/v1/events"
    assert claude.http_url("127.0.0.1:9000,[::1]:9000") == "http://127.0.0.1:9000/v1/events"
    # Off loopback the listener wants a token these hooks do not carry: commands, or a usage error.
    settings.http_listen = "0.0.0.0:8787"  # type: ignore[attr-defined]
    assert claude.make_plan(settings, None, EMIT).mode == "command"
    with pytest.raises(UsageError, match="not a loopback address"):
        claude.make_plan(settings, "http", EMIT)


def _paths(tmp: Path) -> Any:
    from hookd.paths import resolve

    return resolve({"HOOKD_HOME": str(tmp)})


def test_managed_settings_are_reported(tmp_path: Path) -> None:
    managed = tmp_path / "managed-settings.json"
    plan = claude.Plan("http", "x", "http://127.0.0.1:8787/v1/events")
    managed.write_text(json.dumps({"allowManagedHooksOnly": True, "allowedHttpHookUrls": ["https://*"]}))
    notes = claude.managed_notes(managed, plan)
    assert len(notes) == 2 and "allowManagedHooksOnly" in notes[0] and "--command" in notes[1]
    managed.write_text(json.dumps({"allowedHttpHookUrls": ["http://127.0.0.1:*"]}))
    assert claude.managed_notes(managed, plan) == []
    assert claude.managed_notes(tmp_path / "absent.json", plan) == []


def test_only_hookds_own_entries_are_recognised() -> None:
    assert claude.is_ours({"type": "command", "command": f"{EMIT} - {claude.TAG}"})
    assert claude.is_ours(
        {"type": "command", "command": f"HOOKD_SOCKET='/a b/s.sock' '/x y/hookd-emit' - {claude.TAG}"}
    )
    assert claude.is_ours({"type": "http", "url": "http://[::1]:8787/v1/events"})
    for theirs in (
        {"type": "command", "command": "hookd-emit -"},
        {"type": "command", "command": f"{EMIT} -"},
        {"type": "command", "command": f"hookd-emit - {claude.TAG}"},  # not an absolute path
        {"type": "command", "command": f"rm -rf ~; {EMIT} - {claude.TAG}"},
        {"type": "http", "url": "http://example.com:8787/v1/events"},
        {"type": "http", "url": "http://127.0.0.1:8787/other"},
        {"type": "prompt", "prompt": "x"},
    ):
        assert not claude.is_ours(theirs), theirs


def test_the_docs_table_is_generated_from_the_event_list() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = claude.markdown_table()
    assert table in text, (
        "docs/integrations.md's event table differs from hookd.ops.claude.EVENTS; paste the output of "
        "`.venv/bin/python -c 'from hookd.ops.claude import markdown_table; print(markdown_table())'`"
    )


def test_the_docs_example_is_what_install_writes() -> None:
    (example,) = [b.text for b in blocks(DOC) if b.lang == "json" and claude.TAG in b.text]
    shown = json.loads(example)["hooks"]
    command = next(h["command"] for g in shown["PreToolUse"] for h in g["hooks"])
    plan = claude.Plan("command", command)
    for name, groups in shown.items():
        event = claude.EVENTS_BY_NAME[name]
        assert groups == [plan.group(event, plan.handler(event))], name


# -- every event through the installed commands, into a real daemon -----------------------------
def deliver(handler: dict[str, Any], payload: bytes, env: dict[str, str], cwd: Path) -> None:
    """One hook, as Claude Code runs it: a command through ``/bin/sh -c`` with the payload on
    stdin; an http hook as a POST of the payload. Either must succeed in silence."""
    if handler["type"] == "command":
        out = subprocess.run(["/bin/sh", "-c", handler["command"]], input=payload, env=env, cwd=cwd,
                             capture_output=True, timeout=handler.get("timeout", 30))  # fmt: skip
        assert out.returncode == 0, out  # 2 would block the tool call, the prompt, the stop...
        assert out.stdout == b"", out  # Claude Code reads stdout (context, decisions, a worktree's path)
        assert out.stderr == b"", out  # the daemon took it: nothing spooled
    else:
        req = urllib.request.Request(handler["url"], data=payload, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=handler["timeout"]) as resp:
            assert 200 <= resp.status < 300 and resp.read() == b""


def run_session(home: Path, settings: Path) -> list[tuple[str, bytes]]:
    """Send SESSION through every hook the settings file holds; returns (event, payload) sent."""
    data = json.loads(settings.read_bytes())
    assert shutil.which("hookd-emit", path=DESKTOP_PATH) is None
    env = {"PATH": DESKTOP_PATH, "HOME": str(home), "LANG": "C.UTF-8"}  # no HOOKD_*, no XDG_*
    sent = []
    for payload in SESSION:
        event = payload["hook_event_name"]
        handlers = [h for g in data["hooks"].get(event, []) for h in g["hooks"]]
        assert len(handlers) == claude.EVENTS_BY_NAME[event].included, event
        raw = json.dumps(payload, ensure_ascii=False).encode()
        for handler in handlers:
            deliver(handler, raw, env, home)
            sent.append((event, raw))
    return sent


def test_every_event_through_the_installed_commands(daemon: Daemon, home: Path, socat: str) -> None:
    settings = home / ".claude" / "settings.json"
    install(home, settings)  # no listener configured: the command form
    sent = run_session(home, settings)
    assert sum(e.included for e in claude.EVENTS) == 29
    assert len(sent) == sum(claude.EVENTS_BY_NAME[p["hook_event_name"]].included for p in SESSION)

    settle(daemon, len(sent))
    rows = daemon.query("SELECT type, session, data FROM events ORDER BY eid")
    types = {e.name: e.type for e in claude.EVENTS}
    assert rows == [(types[e], S1, raw.decode()) for e, raw in sent]  # whole, byte for byte, in order
    assert daemon.query(
        "SELECT tool_use_id, tool_name, status, duration_ms, duration_source FROM tool_calls ORDER BY pre_eid"
    ) == [
        ("toolu_01", "Bash", "finished", 812, "claude_code"),  # Claude Code's own duration_ms
        ("toolu_02", "Read", "failed", 3, "claude_code"),
        ("toolu_03", "Bash", "unfinished", None, None),
        ("toolu_04", "Edit", "unfinished", None, None),
    ]
    # Denied (PermissionDenied) is not lost; t4 is: a PreToolUse and nothing after it, session ended.
    assert daemon.query("SELECT session, tool_use_id, tool_name FROM lost_tool_calls") == [(S1, "toolu_04", "Edit")]
    check_status_reports_lost(home)


def check_status_reports_lost(home: Path) -> None:
    out = hookd(home, "status", "--json", env=clean_env(home))
    assert out.returncode == 3, out  # the daemon was stopped by settle()
    lost = json.loads(out.stdout)["lost_tool_calls"]
    assert lost["total"] == 1 and lost["sessions"] == {S1: 1}
    text = hookd(home, "status", env=clean_env(home)).stdout
    assert "lost: 1 tool call(s) in 1 ended session(s)" in text and f"  {S1}  1" in text, text


def test_tool_calls_pair_out_of_order_events(daemon: Daemon, home: Path) -> None:
    """Background hooks may deliver a PostToolUse before its PreToolUse: still one finished call."""
    lines = [
        {"hook_event_name": "PostToolUse", "session_id": "s", "tool_use_id": "t1", "tool_name": "Read"},
        {"hook_event_name": "PreToolUse", "session_id": "s", "tool_use_id": "t1", "tool_name": "Read"},
        {"hook_event_name": "PreToolUse", "session_id": "s", "tool_use_id": "t2", "tool_name": "Read"},
        {"hook_event_name": "SessionEnd", "session_id": "s", "reason": "other"},
        {"hook_event_name": "PreToolUse", "session_id": "s", "tool_use_id": "t3", "tool_name": "Read"},  # resumed
    ]
    # Times of their own: sent at once, they would share one receive time.
    daemon.send(b"".join(json.dumps({**x, "ts": 1_800_000_000 + i}).encode() + b"\n" for i, x in enumerate(lines)))
    settle(daemon, len(lines))
    assert daemon.query("SELECT tool_use_id, status FROM tool_calls ORDER BY pre_eid") == [
        ("t1", "finished"),
        ("t2", "unfinished"),
        ("t3", "unfinished"),
    ]
    assert daemon.query("SELECT tool_use_id FROM lost_tool_calls") == [("t2",)]  # t3 came after the end


def test_http_hooks_through_the_listener(home: Path, socat: str) -> None:
    """The same session through http hooks, once the daemon has its HTTP listener."""
    if not hasattr(Settings(paths=_paths(home)), "http_listen"):
        pytest.skip("this hookd has no HTTP listener (Settings.http_listen): the listener branch brings it")
    with socket.socket() as s:  # a free port, for the daemon to listen on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = clean_env(home, HOME=str(home), HOOKD_HTTP=f"127.0.0.1:{port}")
    daemon = Daemon(home, env=env).start()
    try:
        settings = home / ".claude" / "settings.json"
        out = hookd(home, "hooks", "install-claude", "--settings", str(settings), env=env)
        assert out.returncode == 0, out
        assert hookd_entries(json.loads(settings.read_bytes()))["PreToolUse"][0]["type"] == "http"
        sent = run_session(home, settings)
        settle(daemon, len(sent))
        assert daemon.query("SELECT tool_use_id FROM lost_tool_calls") == [("toolu_04",)]
    finally:
        daemon.kill()
