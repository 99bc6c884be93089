"""Claude Code's own hook timings, from real sessions: hookd's http hooks against its command hooks.

    .venv/bin/python bench/claude_sessions.py [--sessions 30] [--runs 3] [--quick]

The real Claude Code CLI (tests/node/claude, installed by ``./dev test``/``./dev bench``) runs
whole sessions offline against the stand-in Messages API (tests/claude_api.py), script
``parallel`` (two Read calls in one turn: SessionStart, UserPromptSubmit, 2 PreToolUse,
2 PostToolUse, PostToolBatch, Stop, SessionEnd). Its telemetry (captured by
tests/otlp_capture.py) reports ``total_duration_ms`` of each hook event it ran
(``claude_code.hook_execution_complete``): the time the agent spent on the event's hooks, the
fairest measure of what a hook costs it.

Three settings files, written by ``hookd hooks install-claude``, in three private HOMEs, their
sessions alternating (one of each, again and again):

- ``command``: ``--command``, every event through ``hookd-emit -``, as installed (``"async": true``
  for most events; Stop and SessionEnd are waited for);
- ``sync``: the same commands, every one waited for (``"timeout": 5`` instead of ``async``): what a
  command hook costs where Claude Code waits for it;
- ``http``: ``--http``, to hookd's HTTP listener (SessionStart stays a command hook: Claude
  Code's rule; it is left out of the figures, and reported on its own);
- ``bare``: the same http settings, pointed at a server that answers 204 to anything without
  storing it (uvloop + httptools): what Claude Code's own HTTP client costs, the floor.

Target (issue 18): hookd's http hooks at most a third of its command hooks at p50. The machine
is shared and noisy: the figures are ratios measured in one run, with their spread over
``--runs`` blocks of sessions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from claude_api import StandIn  # noqa: E402
from claude_cli import ClaudeHome, Session, missing, version  # noqa: E402
from http_hooks import Bare  # noqa: E402
from otlp_capture import OtlpCapture  # noqa: E402

from common import Result, clean_env, daemon, percentile  # noqa: E402
from hookd.ops import claude  # noqa: E402

SECTION = "Claude Code sessions"
SCRIPT = "parallel"
MODES = ("command", "sync", "http", "bare")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install(hookd_home: Path, home: ClaudeHome, mode: str, port: int) -> None:
    form = "command" if mode in ("command", "sync") else "http"
    env = clean_env(hookd_home, HOME=str(home.root), HOOKD_HTTP=f"127.0.0.1:{port}")
    out = subprocess.run(
        [sys.executable, "-m", "hookd", "hooks", "install-claude", "--settings", str(home.settings), f"--{form}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    if mode == "sync":
        data = json.loads(home.settings.read_text())
        for groups in data["hooks"].values():
            for h in (h for g in groups for h in g["hooks"] if claude.is_ours(h)):
                h.pop("async", None)
                h["timeout"] = claude.COMMAND_TIMEOUT
        home.settings.write_text(json.dumps(data, indent=2) + "\n")


def timings(otlp: OtlpCapture, s: Session) -> list[tuple[str, float]]:
    """(hook event, total_duration_ms) of each hook event the session ran."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        recs = otlp.events("hook_execution_complete", s.id)
        if any(r["hook_event"] == "Stop" for r in recs):
            return [(r["hook_event"], float(r["total_duration_ms"])) for r in recs]
        time.sleep(0.05)
    raise RuntimeError(f"no telemetry for session {s.id} ({s.rc}: {s.stderr[-500:]})")


def run_sessions(n: int) -> dict[str, list[list[tuple[str, float]]]]:
    """``n`` sessions per mode, alternating; per mode, each session's timings."""
    out: dict[str, list[list[tuple[str, float]]]] = defaultdict(list)
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="hookd-bench-cc-", dir="/tmp") as tmp,
        StandIn() as api,
        OtlpCapture() as otlp,
        daemon("--http", f"127.0.0.1:{port}") as d,
    ):
        bare = Bare()
        bare_port = int(bare.url.rsplit(":", 1)[1].split("/")[0])
        try:
            homes = {}
            for mode in MODES:
                homes[mode] = ClaudeHome(Path(tmp) / mode, api.url, otlp.endpoint)
                install(d.home, homes[mode], mode, bare_port if mode == "bare" else port)
            for _ in range(n):
                for mode in MODES:
                    s = homes[mode].run(SCRIPT)
                    if s.rc != 0:
                        raise RuntimeError(f"claude exited {s.rc}: {s.stderr[-800:]}")
                    out[mode].append(timings(otlp, s))
        finally:
            bare.close()
    return out


def hooks_ms(sessions: list[list[tuple[str, float]]]) -> list[float]:
    """Every timed hook event but SessionStart (a command hook in every mode)."""
    return [ms for s in sessions for event, ms in s if event != "SessionStart"]


def by_event(sessions: list[list[tuple[str, float]]]) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for s in sessions:
        for event, ms in s:
            groups[event].append(ms)
    return {e: statistics.median(v) for e, v in sorted(groups.items())}


def blocks(sessions: list, runs: int) -> list[list]:
    size = max(1, len(sessions) // runs)
    return [sessions[i : i + size] for i in range(0, size * runs, size) if sessions[i : i + size]]


def results(data: dict[str, list[list[tuple[str, float]]]], runs: int) -> list[Result]:
    p50 = {m: statistics.median(hooks_ms(data[m])) for m in MODES}
    p99 = {m: percentile(hooks_ms(data[m]), 0.99) for m in MODES}
    ratios = [
        statistics.median(hooks_ms(h)) / statistics.median(hooks_ms(c))
        for h, c in zip(blocks(data["http"], runs), blocks(data["command"], runs), strict=False)
    ]
    spread = f"ratio {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} blocks of sessions" if ratios else ""
    n = len(data["http"])
    note = f"{n} sessions per mode, {len(hooks_ms(data['http']))} http hook runs; Claude Code {version()}"
    start = statistics.median([ms for s in data["command"] for e, ms in s if e == "SessionStart"])
    ratio = p50["http"] / p50["command"]

    def row(name: str, mode: str, ref_name: str, ref: str, **kw: object) -> Result:
        value, reference = (p99 if "p99" in name else p50)[mode], (p99 if "p99" in ref_name else p50)[ref]
        return Result(SECTION, name, value, "ms", ref_name, reference, value / reference, **kw)  # type: ignore[arg-type]

    return [
        row("hook, http (hookd): p50", "http", "command (hookd-emit -, as installed): p50", "command",
            target="<= 0.33x", met=ratio <= 1 / 3, spread=spread, note=note),
        row("hook, http (hookd): p99", "http", "command, as installed: p99", "command"),
        row("hook, http (hookd): p50", "http", "command, every hook waited for: p50", "sync",
            note=f"waited-for commands p99 {p99['sync']:.0f} ms"),
        row("hook, http to a bare 204 server: p50", "bare", "http (hookd): p50", "http",
            note=f"p99 {p99['bare']:.0f} ms: Claude Code's own floor for an http hook"),
        Result(SECTION, "SessionStart (command in every mode): p50", start, "ms"),
    ]  # fmt: skip


def measure(runs: int = 3, quick: bool = False, sessions: int = 30) -> list[Result]:
    why = missing()
    if why is not None:
        raise RuntimeError(why)
    data = run_sessions(2 if quick else sessions)
    for mode in MODES:
        print(f"   {mode}: median ms by event {json.dumps(by_event(data[mode]))}", file=sys.stderr)
    return results(data, 1 if quick else runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=30, help="sessions per mode")
    ap.add_argument("--runs", type=int, default=3, help="blocks of sessions for the spread")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from run import table

    print(table(measure(args.runs, args.quick, args.sessions)))


if __name__ == "__main__":
    main()
