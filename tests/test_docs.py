"""Every example in README.md and docs/*.md runs, as written (the convention is in
docs/architecture.md, "Examples in the docs are tests").

Each file runs in a sandbox of its own: HOME, XDG_RUNTIME_DIR and TMPDIR point into a temporary
directory, so the docs' default paths (``~/.local/share/hookd/events.db``) are the sandbox's, and
a daemon runs on those defaults unless the file says ``<!-- doc-test: no-daemon -->``. Blocks run
in order, sharing the sandbox: a later block sees what an earlier one stored.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import Daemon
from doc_blocks import ROOT, Block, blocks, file_directives

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
if (ROOT / "CONTRIBUTING.md").exists():
    DOCS.append(ROOT / "CONTRIBUTING.md")
BIN = str(Path(sys.executable).parent)
SHELLS = {
    "sh": ["bash", "-eo", "pipefail", "-c"],
    "bash": ["bash", "-eo", "pipefail", "-c"],
    "zsh": ["zsh", "-e", "-c"],
}
NOT_RUN = {"", "text", "ini"}  # output, diagrams, wire examples
HINT = "fix the example, or mark it with `<!-- doc-test: skip: WHY -->` on the line above the fence"


def sandbox_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKD_", "XDG_", "GIT_"))}
    env.update(HOME=str(home / "home"), XDG_RUNTIME_DIR=str(home / "run"), TMPDIR=str(home / "tmp"))
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    for d in ("home", "run", "tmp"):
        (home / d).mkdir(mode=0o700)
    # A user's git is configured: commits need an identity.
    (home / "home" / ".gitconfig").write_text(
        "[user]\n\tname = Doc Reader\n\temail = reader@example.org\n[init]\n\tdefaultBranch = main\n"
    )
    return env


def run_script(block: Block, argv: list[str], script: str, env: dict[str, str], cwd: Path) -> None:
    proc = subprocess.Popen(
        [*argv, script],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{block.where}: ```{block.lang} block still running after 120 s:\n{out.decode(errors='replace')}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the block left in the background
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, (
        f"{block.where}: ```{block.lang} block exited {proc.returncode} ({HINT}):\n"
        + out.decode(errors="replace")[-3000:]
    )


def run_sql(block: Block, env: dict[str, str], daemon: Daemon | None) -> None:
    if daemon is not None:
        # A barrier: once this acknowledged event is committed, what earlier blocks sent is too.
        out = subprocess.run(["hookd-emit", "--wait", "doc_test_barrier"], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out
    db = sqlite3.connect(Path(env["HOME"]) / ".local" / "share" / "hookd" / "events.db", isolation_level=None)
    try:
        stmt = ""
        for line in block.text.splitlines(keepends=True):
            stmt += line
            if sqlite3.complete_statement(stmt):
                try:
                    db.execute(stmt).fetchall()
                except sqlite3.Error as e:
                    pytest.fail(f"{block.where}: ```sql statement failed: {e} ({HINT}):\n{stmt}")
                stmt = ""
        assert not stmt.strip(), f"{block.where}: unfinished SQL statement: {stmt}"
    finally:
        db.close()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_examples_run(doc: Path, home: Path) -> None:
    env = sandbox_env(home)
    cwd = ROOT if doc.parent == ROOT else Path(env["HOME"])  # README: a reader in their fresh clone
    daemon = None if any(d.startswith("no-daemon") for d in file_directives(doc)) else Daemon(home, env=env).start()
    clone_before = git_status()
    try:
        for block in blocks(doc):
            skip = block.directive("skip")
            if skip is not None:
                assert skip, f"{block.where}: a skipped block needs its reason: `<!-- doc-test: skip: WHY -->`"
                continue
            setup = block.directive("setup") or ""
            stopped = block.directive("daemon-stopped") is not None and daemon is not None
            if stopped:
                assert daemon.stop() == 0, daemon.logtext
            if block.lang in SHELLS:
                run_script(block, SHELLS[block.lang], setup + "\n" + block.text, env, cwd)
            elif block.lang == "python":
                if setup:
                    run_script(block, SHELLS["sh"], setup, env, cwd)
                run_script(block, [sys.executable, "-c"], block.text, env, cwd)
            elif block.lang == "sql":
                if setup:
                    run_script(block, SHELLS["sh"], setup, env, cwd)
                run_sql(block, env, daemon)
            elif block.lang == "json":
                try:
                    json.loads(block.text)
                except ValueError as e:
                    pytest.fail(f"{block.where}: ```json block is not JSON: {e}")
            elif block.lang == "toml":
                try:
                    tomllib.loads(block.text)
                except tomllib.TOMLDecodeError as e:
                    pytest.fail(f"{block.where}: ```toml block is not TOML: {e}")
            elif block.lang in NOT_RUN:
                commands = [ln for ln in block.text.splitlines() if ln.startswith(("$ ", "hookd ", "./dev "))]
                assert not commands, f"{block.where}: commands belong in a ```sh block, where they are run: {commands}"
            else:
                pytest.fail(
                    f"{block.where}: unknown block language {block.lang!r}: use sh, bash, zsh, python, sql, json, "
                    "toml or none"
                )
            if stopped:
                daemon.start()
    finally:
        if daemon is not None:
            code = daemon.stop()
            assert code == 0, daemon.logtext
    assert git_status() == clone_before, f"{doc.name}: its examples must not leave files in the clone"


def git_status() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True).stdout


def test_every_doc_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in DOCS if p.parent.name == "docs" and f"docs/{p.name}" not in readme]
    assert not missing, f"README.md's documentation list lacks {missing}"
