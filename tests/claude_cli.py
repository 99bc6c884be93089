"""The real Claude Code CLI in tests and benchmarks: where it is, its version, and sessions run
offline against the stand-in API (claude_api.py), with a private HOME.

The CLI is the npm package pinned in tests/node/claude/package.json (+ package-lock.json), which
``./dev test`` installs with ``npm ci``. Since 2.1.x the package is a native binary (a Bun
executable) that its postinstall links to ``node_modules/.bin/claude``; when npm ran no install
scripts, the platform package's binary is used directly.

A session runs ``claude -p "[script:NAME] ..." --allowedTools ... --session-id ID --output-format
json`` in a project directory of the private HOME, with only what a Claude Code started from a
desktop has (``PATH=/usr/bin:/bin``, no ``HOOKD_*``): the installed hooks must carry what they
need. Telemetry goes to an OTLP endpoint when one is given (http/json, exported every 0.5 s).
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "tests" / "node" / "claude"
PACKAGE = "@anthropic-ai/claude-code"
#: The version package.json pins (exactly: no range).
PINNED: str = json.loads((PACKAGE_DIR / "package.json").read_text())["dependencies"][PACKAGE]
#: The project a session runs in: what the scripts of claude_api.py read.
BIG_LINES = 2000  # ~86 KB with line numbers: over the max_line tests give hookd, under Read's limit
PROJECT_FILES = {
    "hello.txt": "hello\n",
    "other.txt": "other\n",
    "CLAUDE.md": "Be brief.\n",  # fires InstructionsLoaded
    "big.txt": "".join(f"line {i:05d} {'x' * 30}\n" for i in range(BIG_LINES)),
}
DESKTOP_PATH = "/usr/bin:/bin"
ALLOWED = "Read,Bash,Agent"


def binary() -> Path | None:
    """The installed CLI, or None."""
    link = PACKAGE_DIR / "node_modules" / ".bin" / "claude"
    if link.exists() and link.stat().st_size > 1 << 20:  # the native binary, not the postinstall's stub
        return link
    arch = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for suffix in ("", "-musl"):
        native = PACKAGE_DIR / "node_modules" / "@anthropic-ai" / f"claude-code-linux-{arch}{suffix}" / "claude"
        if native.exists():
            return native
    return None


@functools.cache
def version() -> str | None:
    """``claude --version``'s number (``2.1.197``), or None when it is not installed or fails."""
    exe = binary()
    if exe is None:
        return None
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.strip() else None


def missing() -> str | None:
    """Why the real CLI cannot run here, or None."""
    if binary() is None:
        return f"Claude Code is not installed in {PACKAGE_DIR.relative_to(ROOT)}: `./dev test` installs it (npm ci)"
    got = version()
    if got is None:
        return f"{binary()} --version failed"
    if got != PINNED:
        return f"{PACKAGE_DIR.relative_to(ROOT)} holds Claude Code {got}, package.json pins {PINNED}: run ./dev test"
    return None


def header() -> str:
    """The suite's header line (conftest.pytest_report_header)."""
    why = missing()
    where = PACKAGE_DIR.relative_to(ROOT)
    if why is None:
        return f"claude code: {version()} (real CLI from {where}, pinned in package.json; tests/test_claude_cli.py)"
    return f"claude code: not run ({why})"


@dataclass
class Session:
    """One finished ``claude -p`` run."""

    id: str
    script: str
    rc: int
    result: dict[str, Any]  # --output-format json's result: total_cost_usd, usage, num_turns...
    stderr: str
    seconds: float


class ClaudeHome:
    """A private HOME for Claude Code with a project directory, and sessions run in it."""

    def __init__(self, root: Path, api_url: str, otlp_endpoint: str | None = None, **env: str) -> None:
        self.root = root
        self.project = root / "proj"
        self.project.mkdir(parents=True, exist_ok=True)
        for name, text in PROJECT_FILES.items():
            (self.project / name).write_text(text)
        self.api_url = api_url
        self.otlp_endpoint = otlp_endpoint
        self.extra = env

    @property
    def settings(self) -> Path:
        return self.root / ".claude" / "settings.json"

    def env(self) -> dict[str, str]:
        env = {
            "PATH": DESKTOP_PATH,
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "ANTHROPIC_API_KEY": "sk-ant-offline",
            "ANTHROPIC_BASE_URL": self.api_url,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
        if self.otlp_endpoint:
            env.update(
                CLAUDE_CODE_ENABLE_TELEMETRY="1",
                OTEL_LOGS_EXPORTER="otlp",
                OTEL_METRICS_EXPORTER="otlp",
                OTEL_EXPORTER_OTLP_PROTOCOL="http/json",
                OTEL_EXPORTER_OTLP_ENDPOINT=self.otlp_endpoint,
                OTEL_LOGS_EXPORT_INTERVAL="500",
                OTEL_METRIC_EXPORT_INTERVAL="1000",
            )
        return {**env, **self.extra}

    def run(self, script: str, allowed: str = ALLOWED, timeout: float = 120) -> Session:
        """One session of the stand-in's ``script``; returns when ``claude`` has exited."""
        exe = binary()
        assert exe is not None, missing()
        sid = str(uuid.uuid4())
        cmd = [str(exe), "-p", f"[script:{script}] Go.", "--allowedTools", allowed, "--session-id", sid]
        t0 = time.monotonic()
        out = subprocess.run(
            [*cmd, "--output-format", "json"],
            cwd=self.project,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        seconds = time.monotonic() - t0
        try:
            result = json.loads(out.stdout)
        except ValueError:
            result = {}
        return Session(sid, script, out.returncode, result, out.stderr, seconds)
