"""`hookd hooks install-git`: real repositories, real commits, checkouts and merges, a real daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Daemon, clean_env

pytestmark = pytest.mark.usefixtures("socat")

HOOKS = ("post-commit", "post-checkout", "post-merge", "post-rewrite")


def hookd(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookd", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )


def git(repo: Path, *args: str, env: dict[str, str]) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    return out.stdout.strip()


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    # hookd-emit must be found the way a user's install finds it: beside the Python running hookd.
    e = clean_env(home, GIT_AUTHOR_NAME="Ada Lovelace", GIT_AUTHOR_EMAIL="ada@example.org")
    e.update(GIT_COMMITTER_NAME="Ada Lovelace", GIT_COMMITTER_EMAIL="ada@example.org", GIT_CONFIG_NOSYSTEM="1")
    e["HOME"] = str(home)  # no user ~/.gitconfig (core.hooksPath, templates) leaks in
    return e


@pytest.fixture
def repo(home: Path, env: dict[str, str]) -> Path:
    r = home / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(r)], env=env, check=True)
    return r


def events(daemon: Daemon, n: int, type_: str | None = None) -> list[dict]:
    where = f"type = '{type_}'" if type_ else "type LIKE 'git_%'"
    assert daemon.wait_count(n, where=where) >= n, daemon.logtext
    return [json.loads(d) for (d,) in daemon.query(f"SELECT data FROM events WHERE {where} ORDER BY eid")]


def test_commits_checkouts_and_merges_are_recorded(daemon: Daemon, repo: Path, env: dict[str, str]) -> None:
    out = hookd("hooks", "install-git", str(repo), env=env)
    assert out.returncode == 0, out
    assert [line.split(":")[0] for line in out.stdout.splitlines()] == list(HOOKS)

    (repo / 'odd "name" é.txt').write_text("a\n")
    (repo / "b.txt").write_text("1\n2\n")
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-q", "-m", 'first "commit" \\ with\ttab', env=env)
    first = git(repo, "rev-parse", "HEAD", env=env)
    [c] = events(daemon, 1, "git_commit")
    assert c["type"] == "git_commit" and c["sha"] == first and c["branch"] == "main"
    assert c["repo"] == str(repo) and c["author"] == "Ada Lovelace" and c["author_email"] == "ada@example.org"
    assert c["subject"] == 'first "commit" \\ with\ttab'
    assert (c["files_changed"], c["insertions"], c["deletions"]) == (2, 3, 0)
    assert sorted(c["files"]) == ["b.txt", 'odd "name" é.txt']

    git(repo, "checkout", "-q", "-b", "topic", env=env)
    (repo / "b.txt").write_text("1\n2\n3\n")
    git(repo, "commit", "-q", "-am", "second", env=env)
    second = git(repo, "rev-parse", "HEAD", env=env)
    git(repo, "checkout", "-q", "main", env=env)
    (repo / "c.txt").write_text("c\n")
    git(repo, "add", "c.txt", env=env)
    git(repo, "commit", "-q", "-m", "third", env=env)
    third = git(repo, "rev-parse", "HEAD", env=env)
    git(repo, "merge", "-q", "--no-ff", "-m", "merge topic", "topic", env=env)
    merge = git(repo, "rev-parse", "HEAD", env=env)

    got = events(daemon, 6)
    # Each hook sends from the background, so events of quick successive commands may reach hookd
    # in any order; the ts each hook took when git ran it keeps them in git's order.
    assert sorted(e["type"] for e in got) == ["git_checkout"] * 2 + ["git_commit"] * 3 + ["git_merge"]
    in_ts_order = [
        (t, json.loads(d)["sha"])
        for t, d in daemon.query("SELECT type, data FROM events WHERE type LIKE 'git_%' ORDER BY ts, eid")
    ]
    assert in_ts_order == [
        ("git_commit", first),
        ("git_checkout", first),  # checkout -b topic: HEAD stays at the first commit
        ("git_commit", second),
        ("git_checkout", first),
        ("git_commit", third),
        ("git_merge", merge),
    ]
    assert all(isinstance(e["ts"], float) and abs(e["ts"] - time.time()) < 120 for e in got)
    by = {(e["type"], e["sha"]): e for e in got}
    assert by[("git_commit", second)]["branch"] == "topic"
    assert by[("git_commit", second)]["files"] == ["b.txt"]
    back = by[("git_checkout", first)]
    assert back["branch"] == "main" and back["from"] == second and back["kind"] == "branch"
    assert back["files"] == ["b.txt"] and back["deletions"] == 1
    m = by[("git_merge", merge)]
    assert m["branch"] == "main" and m["from"] == third and m["squash"] is False
    assert m["files"] == ["b.txt"] and m["message"].startswith("merge topic")
    assert daemon.query("SELECT count(*) FROM git_merge_events")[0][0] == 1
    assert daemon.query("SELECT count(*) FROM rejected")[0][0] == 0


def test_existing_hooks_are_kept_and_still_run(daemon: Daemon, repo: Path, env: dict[str, str]) -> None:
    hooks = repo / ".git" / "hooks"
    log = repo.parent / "orig.log"
    (hooks / "post-commit").write_text(f'#!/bin/sh\necho "post-commit $*" >> {log}\n')
    (hooks / "post-checkout").write_text(f'#!/bin/sh\necho "post-checkout $*" >> {log}\nexit 3\n')
    for name in ("post-commit", "post-checkout"):
        (hooks / name).chmod(0o755)
    original = (hooks / "post-checkout").read_text()
    git(repo, "commit", "-q", "--allow-empty", "-m", "zero", env=env)
    checkout = ["git", "-C", str(repo), "checkout", "-q", "-b"]
    before = subprocess.run([*checkout, "before"], env=env, capture_output=True).returncode
    assert before != 0
    log.unlink()

    first = hookd("hooks", "install-git", cwd=repo, env=env)  # REPO defaults to the current directory
    assert first.returncode == 0, first
    assert "kept as post-commit.hookd-orig" in first.stdout
    scripts = {n: (hooks / n).read_text() for n in HOOKS}
    again = hookd("hooks", "install-git", str(repo), env=env)
    assert again.returncode == 0 and "refreshed" in again.stdout, again
    assert {n: (hooks / n).read_text() for n in HOOKS} == scripts  # idempotent: nothing doubled
    assert sorted(p.name for p in hooks.glob("*.hookd-orig")) == ["post-checkout.hookd-orig", "post-commit.hookd-orig"]

    git(repo, "commit", "-q", "--allow-empty", "-m", "one", env=env)
    # The original hook's failure still reaches git, as it did before.
    assert subprocess.run([*checkout, "after"], env=env, capture_output=True).returncode == before
    assert log.read_text().splitlines()[0] == "post-commit "
    assert log.read_text().splitlines()[1].startswith("post-checkout ")
    assert log.read_text().splitlines()[1].endswith(" 1")  # its arguments are passed on
    assert len(events(daemon, 2)) == 2

    out = hookd("hooks", "uninstall-git", str(repo), env=env)
    assert out.returncode == 0, out
    assert (hooks / "post-checkout").read_text() == original
    assert not (hooks / "post-merge").exists() and not (hooks / "post-rewrite").exists()
    assert not list(hooks.glob("*.hookd-orig"))


def test_core_hooks_path_is_respected(daemon: Daemon, repo: Path, env: dict[str, str]) -> None:
    git(repo, "config", "core.hooksPath", ".githooks", env=env)
    out = hookd("hooks", "install-git", str(repo), env=env)
    assert out.returncode == 0 and "core.hooksPath" in out.stdout, out
    assert all((repo / ".githooks" / n).is_file() for n in HOOKS)
    assert not (repo / ".git" / "hooks" / "post-commit").exists()
    git(repo, "commit", "-q", "--allow-empty", "-m", "x", env=env)
    assert events(daemon, 1, "git_commit")[0]["files_changed"] == 0


def test_git_never_waits_on_hookd(home: Path, repo: Path, env: dict[str, str]) -> None:
    """A stuck hookd-emit does not hold up git, and with no daemon the event is spooled."""
    slow = home / "slow-emit"
    slow.write_text(f'#!/bin/sh\nsleep 5\necho "$@" > {home}/slow.done\n')
    slow.chmod(0o755)
    assert hookd("hooks", "install-git", str(repo), env=env).returncode == 0
    t = time.monotonic()
    git(repo, "commit", "-q", "--allow-empty", "-m", "x", env={**env, "HOOKD_EMIT": str(slow)})
    assert time.monotonic() - t < 2.5

    # No daemon at all: git succeeds, the event waits in the spool for the daemon.
    git(repo, "commit", "-q", "--allow-empty", "-m", "y", env=env)
    deadline = time.monotonic() + 10
    while not list((home / "spool").glob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.05)
    d = Daemon(home, env=env).start()
    try:
        assert d.wait_count(1, where="type = 'git_commit'") == 1, d.logtext
        assert json.loads(d.query("SELECT data FROM events")[0][0])["subject"] == "y"
    finally:
        d.stop()

    # hookd-emit gone: a hint on stderr, git still succeeds.
    out = subprocess.run(
        ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "z"],
        env={**env, "HOOKD_EMIT": str(home / "nowhere")},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "hookd hooks install-git" in out.stderr, out


def test_errors_say_what_to_do(home: Path, env: dict[str, str]) -> None:
    out = hookd("hooks", "install-git", str(home), env=env)
    assert out.returncode == 1 and "git init" in out.stderr, out
    out = hookd("hooks", "install-git", str(home / "missing"), env=env)
    assert out.returncode == 2 and "no such directory" in out.stderr, out
    assert hookd("hooks", env=env).returncode == 2  # a subcommand is required


def test_installed_hooks_are_posix_sh(repo: Path, env: dict[str, str]) -> None:
    assert hookd("hooks", "install-git", str(repo), env=env).returncode == 0
    for name in HOOKS:
        path = repo / ".git" / "hooks" / name
        assert os.access(path, os.X_OK)
        for shell in filter(shutil.which, ("sh", "dash", "bash")):
            out = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
            assert out.returncode == 0, (shell, name, out.stderr)


def test_amends_rebases_and_squash_merges_are_recorded(daemon: Daemon, repo: Path, env: dict[str, str]) -> None:
    hooks = repo / ".git" / "hooks"
    log = repo.parent / "orig-rewrite.log"
    # A post-rewrite hook already there reads git's list on stdin: it must still get it.
    (hooks / "post-rewrite").write_text(f'#!/bin/sh\n{{ echo "orig $1"; cat; }} >> {log}\n')
    (hooks / "post-rewrite").chmod(0o755)
    assert hookd("hooks", "install-git", str(repo), env=env).returncode == 0
    git(repo, "commit", "-q", "--allow-empty", "-m", "one", env=env)
    before = git(repo, "rev-parse", "HEAD", env=env)
    git(repo, "commit", "-q", "--amend", "--allow-empty", "-m", "one, amended", env=env)
    amended = git(repo, "rev-parse", "HEAD", env=env)
    [r] = events(daemon, 1, "git_rewrite")
    assert (r["kind"], r["branch"], r["sha"], r["subject"]) == ("amend", "main", amended, "one, amended")
    assert r["rewritten"] == [{"old": before, "new": amended}] and r["rewritten_count"] == 1
    assert log.read_text().splitlines() == ["orig amend", f"{before} {amended}"]

    git(repo, "checkout", "-q", "-b", "topic", env=env)
    for name in ("x", "y"):
        (repo / name).write_text(name + "\n")
        git(repo, "add", name, env=env)
        git(repo, "commit", "-q", "-m", f"topic {name}", env=env)
    git(repo, "checkout", "-q", "main", env=env)
    (repo / "z").write_text("z\n")
    git(repo, "add", "z", env=env)
    git(repo, "commit", "-q", "-m", "main z", env=env)
    git(repo, "checkout", "-q", "topic", env=env)
    git(repo, "rebase", "-q", "main", env=env)
    rebased = git(repo, "rev-parse", "HEAD", env=env)
    rewrites = events(daemon, 2, "git_rewrite")
    rb = rewrites[-1] if rewrites[-1]["kind"] == "rebase" else rewrites[0]
    assert (rb["kind"], rb["branch"], rb["sha"], rb["rewritten_count"]) == ("rebase", "topic", rebased, 2)
    # The commits a rebase picks are made on a detached HEAD: they name the branch being rewritten.
    picked = [c for c in events(daemon, 6, "git_commit") if c["rebasing"]]
    assert len(picked) == 2 and {c["branch"] for c in picked} == {"topic"}
    assert picked[-1]["sha"] == rebased or picked[0]["sha"] == rebased

    git(repo, "checkout", "-q", "main", env=env)
    git(repo, "merge", "-q", "--squash", "topic", env=env)
    [m] = events(daemon, 1, "git_merge")
    assert m["squash"] is True and m["branch"] == "main" and m["from"] == ""
    assert m["message"] == "Squashed commit of the following:"  # its own, not the checkout's
    assert sorted(m["files"]) == ["x", "y"]  # what the squash staged
    assert daemon.query("SELECT count(*) FROM rejected")[0][0] == 0
