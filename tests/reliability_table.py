"""Run the hardening tests (Unix socket and HTTP) and print docs/reliability.md's table from the figures they record.

    .venv/bin/python tests/reliability_table.py        # (or ./dev test first, for the venv)

Each case in tests/test_hardening.py and tests/test_http.py calls ``record()``; with HOOKD_RELIABILITY_OUT set, the
figures (events sent, stored, rejected by reason, lost) are appended there as JSON lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.jsonl"
        env = {**os.environ, "HOOKD_RELIABILITY_OUT": str(out)}
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(HERE / "test_hardening.py"),
                str(HERE / "test_http.py"),
            ],
            env=env,
            cwd=HERE.parent,
        )
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    print("| case | events sent | stored | rejected, by reason | refused connections | lost |")
    print("|---|---:|---:|---|---:|---:|")
    total = {"sent": 0, "stored": 0, "rejected": 0, "refused": 0, "lost": 0}
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["rejected"].items())) or "none"
        print(f"| {r['case']} | {r['sent']:,} | {r['stored']:,} | {reasons} | {r['refused']} | {r['lost']} |")
        total["sent"] += r["sent"]
        total["stored"] += r["stored"]
        total["rejected"] += sum(r["rejected"].values())
        total["refused"] += r["refused"]
        total["lost"] += r["lost"]
    print(
        f"| **all cases** | **{total['sent']:,}** | **{total['stored']:,}** | **{total['rejected']:,} lines** "
        f"| **{total['refused']}** | **{total['lost']}** |"
    )
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
