"""``hookd hooks install-claude --telemetry``: the settings file's ``env`` block, as real
processes on real files; then the variables it wrote, handed to the OpenTelemetry JS exporter
(Claude Code's), bring the records to a real daemon."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from test_claude import hookd
from test_otlp_node import NODE, OTEL

from conftest import Daemon, clean_env
from hookd.ops import claude_telemetry

USER = {
    "model": "opus",
    "env": {"FOO": "bar", "CLAUDE_CODE_ENABLE_TELEMETRY": "1"},  # one of ours, already the user's
    "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(home: Path, settings: Path, *args: str, port: int | None = 8787) -> subprocess.CompletedProcess:
    env = clean_env(home, HOME=str(home))
    if port is not None:
        env["HOOKD_HTTP"] = f"127.0.0.1:{port}"
    return hookd(home, "hooks", *args, "--settings", str(settings), env=env)


def test_telemetry_needs_the_http_listener(home: Path) -> None:
    settings = home / "settings.json"
    out = run(home, settings, "install-claude", "--telemetry", port=None)
    assert out.returncode == 2, out
    assert "[http]" in out.stderr and "HOOKD_HTTP" in out.stderr, out.stderr
    assert not settings.exists()


def test_install_is_idempotent_refreshes_the_port_and_uninstall_restores_the_bytes(home: Path) -> None:
    settings = home / "settings.json"
    settings.write_text(json.dumps(USER, indent=2) + "\n")
    original = settings.read_bytes()
    out = run(home, settings, "install-claude", "--command", "--telemetry")
    assert out.returncode == 0, out
    assert "OTEL_LOG_TOOL_DETAILS" in out.stdout and "OTEL_LOG_USER_PROMPTS" in out.stdout
    env = json.loads(settings.read_bytes())["env"]
    assert env == {
        "FOO": "bar",
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:8787",
        claude_telemetry.MARK: "OTEL_LOGS_EXPORTER OTEL_METRICS_EXPORTER OTEL_EXPORTER_OTLP_PROTOCOL "
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    }
    installed = settings.read_bytes()
    for args in (("--telemetry",), ()):  # again, and without the flag: not a byte changes
        assert run(home, settings, "install-claude", "--command", *args).returncode == 0
        assert settings.read_bytes() == installed
    # The listener moved: hookd's endpoint follows, nothing else changes.
    assert run(home, settings, "install-claude", "--command", port=9999).returncode == 0
    moved = json.loads(settings.read_bytes())["env"]
    assert moved == {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9999"}
    out = run(home, settings, "uninstall-claude")
    assert out.returncode == 0 and "telemetry: removed" in out.stdout, out
    assert settings.read_bytes() == original  # CLAUDE_CODE_ENABLE_TELEMETRY was the user's: kept


def test_a_differing_value_of_the_users_is_refused_and_nothing_changes(home: Path) -> None:
    settings = home / "settings.json"
    settings.write_text(json.dumps({"env": {"OTEL_METRICS_EXPORTER": "prometheus"}}) + "\n")
    before = settings.read_bytes()
    out = run(home, settings, "install-claude", "--telemetry")
    assert out.returncode == 2, out
    assert "OTEL_METRICS_EXPORTER='prometheus'" in out.stderr and "nothing was changed" in out.stderr, out.stderr
    assert settings.read_bytes() == before
    assert not settings.with_name(settings.name + ".hookd-backup").exists()


def test_no_telemetry_removes_only_the_env_and_keeps_what_the_user_changed(home: Path) -> None:
    settings = home / "settings.json"
    assert run(home, settings, "install-claude", "--command", "--telemetry").returncode == 0
    data = json.loads(settings.read_bytes())
    data["env"]["OTEL_METRICS_EXPORTER"] = "otlp,console"  # the user's change after install
    settings.write_text(json.dumps(data, indent=2) + "\n")
    out = run(home, settings, "install-claude", "--command", "--no-telemetry")
    assert out.returncode == 0 and "kept OTEL_METRICS_EXPORTER" in out.stdout, out
    after = json.loads(settings.read_bytes())
    assert after["env"] == {"OTEL_METRICS_EXPORTER": "otlp,console"}
    assert after["hooks"] == data["hooks"]  # the hooks stay


@pytest.mark.skipif(NODE is None or not (OTEL / "node_modules").is_dir(), reason="node or tests/node/otel missing")
def test_the_variables_bring_the_js_exporters_records_to_hookd(home: Path) -> None:
    port = free_port()
    settings = home / "settings.json"
    assert run(home, settings, "install-claude", "--command", "--telemetry", port=port).returncode == 0
    env = json.loads(settings.read_bytes())["env"]
    d = Daemon(home, "--http", f"127.0.0.1:{port}").start()
    try:
        # Claude Code reads its settings' env: the exporter finds hookd from those variables alone.
        proc_env = {k: v for k, v in clean_env(home).items() if not k.startswith("OTEL_")}
        proc_env.update(env)
        run_ = subprocess.run(
            [NODE or "node", "emit.mjs", "-", "proto", "from-settings", "3"],
            cwd=OTEL,
            env=proc_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run_.returncode == 0, run_.stdout + run_.stderr
        assert d.wait_count(4) == 4
        assert d.query("SELECT api_requests FROM session_usage WHERE session = 'from-settings'") == [(3,)]
    finally:
        d.kill()
