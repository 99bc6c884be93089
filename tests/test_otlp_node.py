"""OTLP/HTTP from the OpenTelemetry JavaScript SDK, the runtime Claude Code itself exports from:
``@opentelemetry/sdk-logs`` with ``@opentelemetry/exporter-logs-otlp-http`` (JSON) and
``-otlp-proto`` (protobuf) on Node 20 (tests/node/otel: package.json and package-lock.json,
installed by ``./dev test`` with ``npm ci``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_otlp import endpoint, otlp_counts

from conftest import Daemon

NODE = shutil.which("node")
OTEL = Path(__file__).resolve().parent / "node" / "otel"
pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node (20+) is not installed: Claude Code's runtime"),
    pytest.mark.skipif(
        not (OTEL / "node_modules" / "@opentelemetry" / "sdk-logs").is_dir(),
        reason="tests/node/otel is not installed: `./dev test` runs npm ci there",
    ),
]
COUNT = 700  # more than one export batch (512)


@pytest.fixture
def hd(home: Path) -> Iterator[Daemon]:
    d = Daemon(home, "--http", "127.0.0.1:0").start()
    yield d
    d.kill()


@pytest.mark.parametrize("fmt", ["json", "proto"])
def test_node_sdk_exports_are_stored_once_with_their_types(hd: Daemon, fmt: str) -> None:
    session = f"node-{fmt}"
    run = subprocess.run(
        [NODE or "node", "emit.mjs", endpoint(hd), fmt, session, str(COUNT)],
        cwd=OTEL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and json.loads(run.stdout.splitlines()[-1]) == {"ok": True}, run.stdout + run.stderr
    assert hd.wait_count(COUNT + 1) == COUNT + 1
    usage = hd.query(
        "SELECT cost_usd, input_tokens, output_tokens, api_requests, models FROM session_usage WHERE session = ?",
        (session,),
    )
    cost = sum(0.25 + i / 1000 for i in range(COUNT))
    tokens = sum(100 + i for i in range(COUNT))
    assert usage == [(pytest.approx(cost), tokens, 20 * COUNT, COUNT, "claude-haiku-4-5,claude-sonnet-4-5")]
    (data,) = hd.query("SELECT data FROM events WHERE type = 'claude_code_tool_result'")[0]
    data = json.loads(data)
    assert (data["success"], data["duration_ms"], data["tool_use_id"]) == ("true", "12", f"toolu_{fmt}")
    assert data["scope"] == "com.anthropic.claude_code.events" and data["resource"]["service.name"] == "claude-code"
    counts = otlp_counts(hd)["logs"]
    assert counts["records"] == COUNT + 1 and counts["requests"] >= 2 and counts["rejected"] == 0
