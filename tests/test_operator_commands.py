"""Operator commands as a new user meets them (issue 13): socket paths over the AF_UNIX limit,
the configuration's paths in every command, `hookd query` strictly read-only, `hookd status`
for monitoring, `hookd tail` on a terminal, `hookd config --help`."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from test_operate import Follower, hookd, send_wait, wait_followers

from conftest import Daemon, clean_env
from hookd import config
from hookd.errors import ConfigError
from hookd.framing import DEFAULT_MAX_LINE
from hookd.ops import summary
from hookd.ops.show import cut, local_time, one_line
from hookd.paths import SUN_PATH_MAX, check_socket_path, socket_path_fits


# -- item 3: socket paths over the AF_UNIX limit ------------------------------------------------
def long_home(home: Path, socket_bytes: int) -> Path:
    """A directory under ``home`` whose ``hookd.sock`` is ``socket_bytes`` bytes long."""
    d = home / ("d" * (socket_bytes - len(str(home)) - len("/") - len("/hookd.sock")))
    d.mkdir(mode=0o700)
    assert len(os.fsencode(d / "hookd.sock")) == socket_bytes
    return d


def test_the_limit_is_107_bytes_and_the_message_says_what_to_do(tmp_path: Path) -> None:
    fits = Path("/" + "s" * (SUN_PATH_MAX - 2))  # 107 bytes
    assert socket_path_fits(fits) and not socket_path_fits(Path(str(fits) + "x"))
    check_socket_path(fits)
    with pytest.raises(Exception) as e:
        check_socket_path(Path(str(fits) + "x"), "env HOOKD_HOME")
    text = str(e.value)
    assert f"{fits}x (from env HOOKD_HOME) is 108 bytes" in text
    assert "107 bytes; 108 with the terminating NUL" in text and "HOOKD_HOME" in text and "--socket" in text
    assert e.value.exit_code == 2  # type: ignore[attr-defined]


def test_a_socket_path_too_long_is_one_clear_error_in_every_command(home: Path) -> None:
    d = long_home(home, SUN_PATH_MAX)
    sock = d / "hookd.sock"
    run = subprocess.run(
        [sys.executable, "-m", "hookd", "run"], env=clean_env(d), capture_output=True, text=True, timeout=60
    )
    for argv in (("status",), ("tail", "-f"), ("emit", "x"), ("emit", "--wait", "x")):
        out = hookd(d, *argv)  # tail -f used to wait forever; emit to spool where no daemon can ever be
        assert out.returncode == 2, (argv, out)
        assert "Traceback" not in out.stderr
        assert f"socket path {sock} (from env HOOKD_HOME) is 108 bytes, over the limit" in out.stderr, argv
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert f"socket path {sock} (from env HOOKD_HOME) is 108 bytes" in run.stderr
    assert not (d / "spool").exists()
    assert "NOT running" in hookd(d, "status").stdout  # what the database knows is still shown


def test_a_control_path_too_long_alone_still_runs_and_is_reached_on_the_event_socket(home: Path) -> None:
    d = long_home(home, SUN_PATH_MAX - 1)  # the socket fits; <socket>.ctl does not
    daemon = Daemon(d).start()
    f = Follower(d)
    try:
        assert "no control socket at" in daemon.logtext
        st = json.loads(hookd(d, "status", "--json").stdout)
        assert st["running"] is True and st["daemon"]["control_socket"] is None
        wait_followers(d, 1)  # tail -f follows through the event socket
        send_wait(daemon, {"type": "seen", "n": 1})
        assert [e["data"]["n"] for e in f.wait(1)] == [1]
    finally:
        f.close()
        assert daemon.stop() == 0


# -- item 9: [paths] of the configuration file in every command -----------------------------------
def file_paths_env(home: Path) -> dict[str, str]:
    """No HOOKD_HOME (it would win over the file): the paths come from config.toml alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
    env.update(XDG_CONFIG_HOME=str(home / "cfg"), XDG_RUNTIME_DIR=str(home / "run"), HOME=str(home))
    (home / "cfg" / "hookd").mkdir(parents=True)
    (home / "run").mkdir(mode=0o700)
    (home / "cfg" / "hookd" / "config.toml").write_text(
        f'[paths]\nsocket = "{home}/hookd.sock"\ndb = "{home}/events.db"\n'
        f'mirror_dir = "{home}/mirror"\nspool_dir = "{home}/spool"\n'
    )
    return env


def run_hookd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hookd", *args], env=env, capture_output=True, text=True, timeout=60)


def test_hookd_emit_uses_the_socket_and_spool_of_the_configuration_file(home: Path) -> None:
    env = file_paths_env(home)
    spooled = run_hookd(env, "emit", "early")  # no daemon yet: into the file's spool
    assert spooled.returncode == 0 and f"spooled to {home / 'spool'}" in spooled.stderr, spooled.stderr
    d = Daemon(home, env=env).start()
    try:
        out = run_hookd(env, "emit", "--wait", "deploy", "service=api")
        assert out.returncode == 0, out.stderr
        assert d.wait_count(2) == 2
        assert sorted(t for (t,) in d.query("SELECT type FROM events")) == ["deploy", "early"]
        assert json.loads(run_hookd(env, "status", "--json").stdout)["running"] is True
    finally:
        assert d.stop() == 0
    assert not (home / "run" / "hookd").exists()  # nothing went to the default socket's directory


def test_commands_for_clients_say_that_clients_do_not_read_the_file(home: Path, tmp_path: Path) -> None:
    env = file_paths_env(home)
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    out = run_hookd(env, "hooks", "install-git", str(repo))
    assert out.returncode == 0, out.stderr
    assert f"set HOOKD_SOCKET={home}/hookd.sock HOOKD_SPOOL_DIR={home}/spool" in out.stdout
    env["XDG_CONFIG_HOME"] = str(home / "cfg")
    dry = run_hookd(env, "install-service", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"sets [paths] socket = {home}/hookd.sock, but the service listens" in dry.stdout


# -- item 11: hookd query is strictly read-only ----------------------------------------------------
@pytest.fixture
def stored(home: Path) -> Path:
    d = Daemon(home).start()
    try:
        send_wait(d, {"type": "note", "text": "line one\nline\ttwo\r", "n": 1})
        send_wait(d, {"type": "note", "text": "plain", "n": 2})
    finally:
        assert d.stop() == 0
    return home


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("ATTACH DATABASE '{tmp}/x.db' AS x", "hookd query is read-only: ATTACH (and VACUUM INTO) is not allowed"),
        ("VACUUM INTO '{tmp}/x.db'", "ATTACH (and VACUUM INTO) is not allowed"),
        ("PRAGMA journal_mode=DELETE", "hookd query is read-only: PRAGMA journal_mode = DELETE is not allowed"),
        ("PRAGMA user_version = 7", "PRAGMA user_version = 7 is not allowed"),
        ("PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA wal_checkpoint = TRUNCATE is not allowed"),
        ("DELETE FROM events", "hookd query is read-only: DELETE (on events) is not allowed"),
        ("CREATE TABLE t(a)", "changing the schema (CREATE, DROP, ALTER) is not allowed"),
        ("CREATE TEMP VIEW v AS SELECT 1", "changing the schema"),
        ("BEGIN", "BEGIN is not allowed"),
        ("SELECT load_extension('x')", "the function load_extension() is not allowed"),
    ],
)
def test_query_refuses_everything_but_reading(stored: Path, tmp_path: Path, sql: str, says: str) -> None:
    out = hookd(stored, "query", sql.format(tmp=tmp_path))
    assert out.returncode == 1, out
    assert says in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "x.db").exists()  # ATTACH used to create it
    assert hookd(stored, "query", "SELECT count(*) FROM events").stdout.splitlines()[1] == "2"


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA table_info(events)",
        "PRAGMA table_list",
        "PRAGMA index_list(events)",
        "PRAGMA journal_mode",
        "SELECT name FROM pragma_table_info('events')",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3) SELECT x FROM c",
        "SELECT value FROM json_each((SELECT data FROM events LIMIT 1))",
    ],
)
def test_query_allows_reading_pragmas_and_table_functions(stored: Path, sql: str) -> None:
    out = hookd(stored, "query", sql)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("rows)") or out.stdout.rstrip().endswith("(1 row)")


@pytest.mark.parametrize("sql", ["", "   ", ";", "-- only a comment", "/* nothing */ ;"])
def test_an_empty_query_is_a_usage_error(home: Path, sql: str) -> None:
    out = hookd(home, "query", sql)  # before a database exists, too
    assert out.returncode == 2 and "the SQL statement is empty" in out.stderr, out


def test_query_cells_are_one_line_and_json_embeds_data(stored: Path) -> None:
    sql = "SELECT json_extract(data, '$.text') AS text, json_extract(data, '$.n') AS n FROM note_events ORDER BY eid"
    table = hookd(stored, "query", sql)
    escaped = "line one\\nline\\ttwo\\r"  # 21 characters on one line
    assert table.stdout.splitlines() == [f"{'text':<21}  n", f"{escaped}  1", f"{'plain':<21}  2", "(2 rows)"]
    js = hookd(stored, "query", "--json", "SELECT data, json_extract(data, '$.n') AS n, x'00ff' AS b FROM events")
    rows = [json.loads(line) for line in js.stdout.splitlines()]
    assert rows[0] == {"data": {"type": "note", "text": "line one\nline\ttwo\r", "n": 1}, "n": 1, "b": "x'00ff'"}
    # only the `data` column: other text stays text, even when it looks like JSON
    other = hookd(stored, "query", "--json", "SELECT '{\"a\":1}' AS x, 'not json' AS data")
    assert json.loads(other.stdout) == {"x": '{"a":1}', "data": "not json"}


# -- item 12: hookd status for monitoring -----------------------------------------------------------
MONITORED = """
[status]
stale_after = "1d"

[types.live_one]
expected = true

[types.slow]
expected = true
stale_after = "1h"

[types.missing]
expected = true

[types.ahead]
expected = true
"""


def test_status_lists_problems_first_flags_the_future_and_check_exits_1(home: Path) -> None:
    (home / "config.toml").write_text(MONITORED)
    now = time.time()
    d = Daemon(home).start()
    try:
        send_wait(d, {"type": "live_one"})
        send_wait(d, {"type": "slow", "ts": now - 7200})
        send_wait(d, {"type": "ahead", "ts": now + 2 * 86400})  # a client clock two days ahead
        send_wait(d, {"type": "unwatched", "ts": now - 3 * 86400})  # stale, but nobody expects it
        st = json.loads(hookd(home, "status", "--json").stdout)
        assert {t: v["state"] for t, v in st["types"].items()} == {
            "ahead": "future",
            "live_one": "live",
            "missing": "never",
            "slow": "stale",
            "unwatched": "stale",
        }
        assert st["summary"] == {"live": 1, "stale": 2, "never": 1, "future": 1}
        human = hookd(home, "status").stdout.splitlines()
        table = human[human.index(next(line for line in human if line.startswith("TYPE"))) + 1 :]
        assert [line.split()[0] for line in table[: table.index("")]] == [
            "missing",
            "slow",
            "unwatched",
            "ahead",
            "live_one",
        ]
        assert "in 2d" in next(line for line in table if line.startswith("ahead"))
        assert "1 live, 2 stale, 1 never, 1 future" in human[-1]
        check = hookd(home, "status", "--check")
        assert check.returncode == 1, check
        lines = check.stdout.splitlines()
        assert len(lines) == 3 and check.stderr == ""
        assert lines[0] == "hookd: missing: never seen (expected = true in the configuration)"
        assert lines[1].startswith("hookd: slow: stale: last seen 2h ago (") and lines[1].endswith("stale after 1h")
        assert lines[2].startswith("hookd: ahead: its last ts is in the future (") and "in 2d" in lines[2]
        assert st["problems"] == [line.removeprefix("hookd: ") for line in lines]
        (home / "config.toml").write_text("[types.live_one]\nexpected = true\n")
        ok = hookd(home, "status", "--check")
        assert (ok.returncode, ok.stdout) == (0, "")
    finally:
        assert d.stop() == 0
    hookd(home, "emit", "late")  # spooled: no daemon runs
    down = hookd(home, "status", "--check")
    assert down.returncode == 1 and "the daemon is not running and 1 spool file(s) wait in" in down.stdout


@pytest.mark.parametrize(
    "bad",
    ["[ingest]\nbatch_sise = 5\n[types.missing]\nexpected = true\n", "[ingest\n"],
    ids=["unknown-key", "not-toml"],
)
def test_a_configuration_error_still_lets_status_tail_and_query_show(home: Path, bad: str) -> None:
    d = Daemon(home).start()
    try:
        send_wait(d, {"type": "kept", "n": 1})
    finally:
        assert d.stop() == 0
    (home / "config.toml").write_text(bad)
    for argv, shown in (
        (("status",), "kept "),
        (("tail", "--json"), '"kept"'),
        (("query", "SELECT type FROM events"), "kept"),
    ):
        out = hookd(home, *argv)
        assert out.returncode == 2, (argv, out)
        assert shown in out.stdout, (argv, out.stdout)
        assert out.stderr.startswith(f"hookd: error: {home / 'config.toml'}") and "left out" in out.stderr
    if "batch_sise" in bad:  # the rest of the file still applies: the expected type is listed
        assert json.loads(hookd(home, "status", "--json").stdout)["types"]["missing"]["state"] == "never"
    assert hookd(home, "config").returncode == 2  # commands that act stay strict
    assert hookd(home, "emit", "x").returncode == 2


def test_a_lenient_load_leaves_out_only_what_is_broken(home: Path) -> None:
    (home / "config.toml").write_text(
        '[ingest]\nbatch_size = 7\nmax_line = "lots"\n[aliases]\na = "b"\nb = "c"\n[types.x]\nexpected = true\n'
    )
    env = {"HOME": str(home), "HOOKD_HOME": str(home), "HOOKD_BATCH_SIZE": "0"}
    with pytest.raises(ConfigError):
        config.load(None, env=env)  # strict, as every command that acts
    settings, errors = config.load_lenient(None, env=env)
    assert [str(e) for e in errors] == [
        f"{home / 'config.toml'}: ingest.max_line: expected a size such as 64KiB, 500MiB or 2GiB, got 'lots'",
        "HOOKD_BATCH_SIZE: must be 1..100000, got 0",
        "alias a -> b: b is itself an alias (no chains)",
    ]
    assert (settings.batch_size, settings.max_line) == (1000, DEFAULT_MAX_LINE)  # back to the defaults
    assert settings.sources["batch_size"] == "default" and settings.types["x"].expected
    assert settings.paths.db == home / "events.db" and len(settings.aliases) == 1


# -- item 13: hookd tail on a terminal ------------------------------------------------------------------
TS = 1795996389.25
SID = "0f4d8a52-1c3e-4b7a-9d2e-5f6a7b8c9d0e"
SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
EVENTS = [
    (
        {
            "hook_event_name": "PreToolUse",
            "session_id": SID,
            "tool_name": "Bash",
            "tool_input": {"command": "make test"},
        },
        "pre_tool_use [0f4d8a52] Bash: make test",
    ),
    (
        {
            "hook_event_name": "PostToolUse",
            "session_id": SID,
            "tool_name": "Read",
            "tool_input": {"file_path": "/etc/hosts"},
        },
        "post_tool_use [0f4d8a52] Read: /etc/hosts",
    ),
    (
        {
            "hook_event_name": "PostToolUseFailure",
            "session_id": SID,
            "tool_name": "Bash",
            "tool_input": {"command": "false"},
            "error": "exit code 1",
        },
        "post_tool_use_failure [0f4d8a52] Bash: false -> failed: exit code 1",
    ),
    (
        {"hook_event_name": "PreToolUse", "tool_name": "Grep", "tool_input": {"pattern": "TODO", "path": "/src"}},
        "pre_tool_use Grep: TODO",
    ),
    (
        {"hook_event_name": "PreToolUse", "tool_name": "WebFetch", "tool_input": {"url": "https://example.org/"}},
        "pre_tool_use WebFetch: https://example.org/",
    ),
    (
        {"hook_event_name": "UserPromptSubmit", "session_id": SID, "prompt": "Fix the test\nthen commit"},
        "user_prompt_submit [0f4d8a52] Fix the test\\nthen commit",
    ),
    (
        {"type": "git_commit", "repo": "/home/me/proj", "sha": SHA, "branch": "main", "subject": "Fix the parser"},
        "git_commit a1b2c3d main: Fix the parser (in proj)",
    ),
    (
        {
            "type": "git_checkout",
            "repo": "/home/me/proj",
            "sha": SHA,
            "branch": "topic",
            "from": "9f8e7d6c5b",
            "kind": "branch",
        },
        "git_checkout topic at a1b2c3d (from 9f8e7d6) (in proj)",
    ),
    (
        {
            "type": "git_merge",
            "repo": "/p",
            "sha": SHA,
            "branch": "main",
            "message": "merge topic: Fast-forward",
            "squash": False,
        },
        "git_merge main at a1b2c3d: merge topic: Fast-forward (in p)",
    ),
    (
        {"type": "git_rewrite", "repo": "/p", "sha": SHA, "branch": "main", "kind": "amend", "rewritten_count": 1},
        "git_rewrite amend of main: 1 commit(s) rewritten, now a1b2c3d (in p)",
    ),
    (
        {
            "type": "deploy",
            "session": "s1",
            "service": "api",
            "ok": True,
            "ms": 812,
            "note": "two words",
            "tags": ["a"],
        },
        'deploy [s1] service=api ok=true ms=812 note="two words" tags=["a"]',
    ),
]


def on_a_terminal(home: Path, *args: str, columns: int = 100) -> list[str]:
    """``hookd ARGS`` with its stdout on a pseudo-terminal ``columns`` wide; its lines."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookd", *args], env=clean_env(home), stdout=slave, stderr=subprocess.PIPE
    )
    os.close(slave)
    seen = b""
    while select.select([master], [], [], 30)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return seen.decode().split("\r\n")[:-1]


def test_tail_on_a_terminal_shows_one_line_of_key_fields_per_event(home: Path) -> None:
    d = Daemon(home).start()
    try:
        for i, (event, _) in enumerate(EVENTS):
            send_wait(d, {**event, "ts": TS + i})
        send_wait(d, {"type": "long", "text": "x" * 300, "ts": TS + 99})
    finally:
        assert d.stop() == 0
    lines = on_a_terminal(home, "tail", "-n", "100")
    want = [f"{local_time(TS + i)} {line}" for i, (_, line) in enumerate(EVENTS)]
    assert lines[:-1] == want
    assert (
        len(lines[-1]) == 100
        and lines[-1].startswith(f"{local_time(TS + 99)} long text=xxx")
        and lines[-1].endswith("…")
    )
    narrow = on_a_terminal(home, "tail", "-n", "100", columns=40)
    assert all(len(line) <= 40 for line in narrow) and narrow[0] == cut(want[0], 40)
    piped = hookd(home, "tail", "-n", "100").stdout.splitlines()  # into a pipe: the whole event, as before
    assert on_a_terminal(home, "tail", "-n", "100", "--full") == piped
    assert piped[0].endswith(f" pre_tool_use [{SID}] " + json.dumps({**EVENTS[0][0], "ts": TS}, separators=(",", ":")))


def test_summaries_never_fail_on_odd_payloads() -> None:
    assert summary.summary("pre_tool_use", {"tool_name": 3, "tool_input": "ls"}) == "?"
    assert summary.summary("git_commit", {}) == " : "
    assert summary.summary("user_prompt_submit", {"x": 1}) == "x=1"
    assert summary.summary("other", [1, 2]) == "[1,2]"
    assert summary.summary("other", {"a": "x\x1b[31m"}) == "a=x\\x1b[31m"
    assert one_line("a\r\nb") == "a\\r\\nb"
    assert cut("日本語テキスト", 6) == "日本…"


# -- item 15: hookd config --help ---------------------------------------------------------------------
def test_config_help_describes_the_json_it_prints(home: Path) -> None:
    out = hookd(home, "config", "--json")
    keys = json.loads(out.stdout)
    text = " ".join(hookd(home, "config", "--help").stdout.split())
    for key in keys:
        assert f'"{key}"' in text, key
    for key in keys["keys"][0]:
        assert f'"{key}"' in text, key
