"""Operating hookd: the configuration file, `hookd config`, `status`, `tail`, `query`, SIGHUP."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import Daemon, clean_env
from hookd import cli, config
from hookd.errors import EXIT_MEANINGS, ConfigError, Exit, UsageError, WriterError

CONFIG = """
[ingest]
batch_size = 500
batch_delay = "20ms"

[status]
stale_after = "1h"

[types.PreToolUse]
expected = true
columns = { tool_name = "$.tool_name", file = "$.tool_input.file_path" }

[types.session_end]
expected = true

[aliases]
"tool-call" = "pre_tool_use"
"""


def hookd(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookd", *args],
        env=clean_env(home, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def send_wait(d: Daemon, obj: dict) -> int:
    """One acknowledged event; returns its eid once it is committed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(d.socket))
        s.sendall(b"?" + json.dumps(obj).encode() + b"\n")
        reply = json.loads(s.makefile("rb").readline())
    assert reply["ok"], reply
    return reply["eid"]


# -- configuration ----------------------------------------------------------------------------
def test_precedence_is_flag_then_environment_then_file_then_default(home: Path, monkeypatch) -> None:
    (home / "config.toml").write_text(CONFIG)
    for k in [k for k in os.environ if k.startswith("HOOKD_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOOKD_HOME", str(home))
    s = config.load(None)
    assert (s.batch_size, s.sources["batch_size"]) == (500, f"file {home / 'config.toml'}")
    assert (s.batch_delay, s.max_inflight, s.sources["max_inflight"]) == (0.02, 8, "default")
    assert s.aliases == {"tool_call": "pre_tool_use"}
    assert s.types["pre_tool_use"].columns == {"tool_name": "$.tool_name", "file": "$.tool_input.file_path"}
    monkeypatch.setenv("HOOKD_BATCH_SIZE", "700")
    s = config.load(None)
    assert (s.batch_size, s.sources["batch_size"]) == (700, "env HOOKD_BATCH_SIZE")
    args = cli.build_parser().parse_args(["run", "--batch-size", "9", "--db", str(home / "other.db")])
    s = config.load(args)
    assert (s.batch_size, s.sources["batch_size"]) == (9, "flag --batch-size")
    assert (s.paths.db, s.sources["db"]) == (home / "other.db", "flag --db")
    assert (s.paths.socket, s.sources["socket"]) == (home / "hookd.sock", "env HOOKD_HOME")


def test_file_paths_apply_without_hookd_home(tmp_path: Path, monkeypatch) -> None:
    for k in [k for k in os.environ if k.startswith("HOOKD_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "cfg" / "hookd").mkdir(parents=True)
    (tmp_path / "cfg" / "hookd" / "config.toml").write_text(f'[paths]\ndb = "{tmp_path}/mine.db"\n')
    s = config.load(None)
    assert s.paths.db == tmp_path / "mine.db"
    assert (s.paths.mirror_dir, s.sources["mirror_dir"]) == (tmp_path / "state" / "hookd" / "mirror", "default")
    assert s.sources["db"] == f"file {tmp_path / 'cfg' / 'hookd' / 'config.toml'}"
    monkeypatch.setenv("HOOKD_DB", str(tmp_path / "env.db"))
    assert config.load(None).paths.db == tmp_path / "env.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ingest]\nbatch_sise = 5\n", "unknown key 'batch_sise' in [ingest]"),
        ("[ingets]\nbatch_size = 5\n", "unknown section [ingets]"),
        ('[retention]\nmax_age = "3 weeks"\n', "retention.max_age: expected a duration"),
        ("[ingest]\nbatch_size = 0\n", "ingest.batch_size: must be 1..100000, got 0"),
        ('[types.x]\ncolumns = { a = "tool_name" }\n', "is not a JSON path"),
        ('[types.x]\ncolumns = { "a\'b" = "$.a" }\n', "column name"),
        ('[types."a;drop view x"]\nexpected = true\n', "is not a valid event type"),
        ('[types."1x"]\nexpected = true\n', "is not a valid event type"),
        ("[types.x]\ncolour = 1\n", "unknown key 'colour'"),
        ("[ingest\n", "not valid TOML"),
    ],
)
def test_bad_configuration_is_named_and_exits_2(home: Path, text: str, message: str) -> None:
    (home / "config.toml").write_text(text)
    out = hookd(home, "config")
    assert out.returncode == 2, out.stdout
    assert message in out.stderr
    assert str(home / "config.toml") in out.stderr


def test_a_named_config_file_must_exist(home: Path) -> None:
    out = hookd(home, "config", "--config", str(home / "nope.toml"))
    assert out.returncode == 2
    assert f"configuration file {home / 'nope.toml'} does not exist" in out.stderr
    out = hookd(home, "status", HOOKD_CONFIG=str(home / "nope.toml"))
    assert out.returncode == 2


def test_hookd_config_prints_each_value_with_its_source(home: Path) -> None:
    (home / "config.toml").write_text(CONFIG)
    out = hookd(home, "config", HOOKD_SYNCHRONOUS="full")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"# configuration file: {home / 'config.toml'} (read)"
    assert f"batch_size = 500  # file {home / 'config.toml'}" in lines
    assert f'batch_delay = "20ms"  # file {home / "config.toml"}' in lines
    assert 'synchronous = "full"  # env HOOKD_SYNCHRONOUS' in lines
    assert f'socket = "{home / "hookd.sock"}"  # env HOOKD_HOME' in lines
    assert 'max_age = "forever"  # default' in lines
    assert "[types.pre_tool_use]" in lines
    data = json.loads(hookd(home, "config", "--json").stdout)
    keys = {k["key"]: k for k in data["keys"]}
    assert keys["ingest.batch_size"] == {"key": "ingest.batch_size", "value": 500, "source": f"file {home}/config.toml"}
    assert keys["types.pre_tool_use.columns"]["value"] == {"tool_name": "$.tool_name", "file": "$.tool_input.file_path"}
    assert keys["aliases.tool_call"]["value"] == "pre_tool_use"
    # what `hookd config` prints is itself a valid configuration file
    (home / "config.toml").write_text(out.stdout)
    again = hookd(home, "config", HOOKD_SYNCHRONOUS="full")
    assert again.returncode == 0, again.stderr
    assert [line.split("  #")[0] for line in again.stdout.splitlines()[2:]] == [
        line.split("  #")[0] for line in lines[2:]
    ]


# -- status -----------------------------------------------------------------------------------
def test_status_running_then_down(home: Path) -> None:
    (home / "config.toml").write_text(CONFIG)
    d = Daemon(home).start()
    try:
        for i in range(3):
            send_wait(d, {"hook_event_name": "PreToolUse", "session_id": "s1", "tool_name": "Bash", "i": i})
        send_wait(d, {"type": "git_commit", "ts": time.time() - 7200})  # last seen 2 h ago: stale
        d.send(b"not json\n")
        assert d.wait_count(4) == 4
        out = hookd(home, "status", "--json")
        assert out.returncode == 0, out.stderr
        st = json.loads(out.stdout)
        assert st["running"] is True and st["daemon"]["pid"] == d.proc.pid
        assert st["daemon"]["since_start"]["committed"] == 4
        assert st["committed"] == 4
        assert st["db"] == str(home / "events.db")
        types = st["types"]
        assert types["pre_tool_use"]["state"] == "live" and types["pre_tool_use"]["count"] == 3
        assert types["pre_tool_use"]["last_hour"] == 3
        assert types["git_commit"]["state"] == "stale" and types["git_commit"]["last_hour"] == 0
        assert abs(types["git_commit"]["last_ts"] - (time.time() - 7200)) < 60
        assert types["session_end"] == {
            "state": "never",
            "count": 0,
            "first_ts": None,
            "last_ts": None,
            "last_hour": 0,
            "expected": True,
            "stale_after": 3600.0,
        }
        assert st["summary"] == {"live": 1, "stale": 1, "never": 1, "future": 0}  # keys are only added
        deadline = time.monotonic() + 5
        while json.loads(hookd(home, "status", "--json").stdout)["rejected"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        human = hookd(home, "status").stdout
        assert f"hookd: running (pid {d.proc.pid}" in human
        assert "1 live, 1 stale, 1 never" in human
        assert "total: 4 committed, 1 rejected" in human
    finally:
        assert d.stop() == 0
    down = hookd(home, "status")
    assert down.returncode == 3
    assert "hookd: NOT running" in down.stdout and "1 live, 1 stale, 1 never" in down.stdout
    st = json.loads(hookd(home, "status", "--json").stdout)
    assert st["running"] is False and st["daemon"] is None and st["committed"] == 4


def test_status_before_anything_was_stored(home: Path) -> None:
    out = hookd(home, "status")
    assert out.returncode == 3
    assert "NOT running" in out.stdout and "(not created yet)" in out.stdout


# -- tail -------------------------------------------------------------------------------------
def test_tail_filters(home: Path) -> None:
    d = Daemon(home).start()
    try:
        old = time.time() - 3 * 3600
        send_wait(d, {"type": "a", "session": "s1", "n": 0, "ts": old})
        for n in range(1, 6):
            send_wait(d, {"type": "a" if n % 2 else "b", "session": f"s{n % 2}", "n": n})
    finally:
        assert d.stop() == 0

    def ns(*args: str) -> list[int]:
        out = hookd(home, "tail", "--json", *args)
        assert out.returncode == 0, out.stderr
        return [json.loads(line)["data"]["n"] for line in out.stdout.splitlines()]

    assert ns() == [0, 1, 2, 3, 4, 5]
    assert ns("-n", "2") == [4, 5]
    assert ns("--type", "b") == [2, 4]
    assert ns("--type", "A") == [0, 1, 3, 5]  # normalized like event types
    assert ns("--session", "s1", "-n", "2") == [3, 5]
    assert ns("--since", "1h") == [1, 2, 3, 4, 5]
    assert ns("--since", str(old - 1)) == [0, 1, 2, 3, 4, 5]
    ev = json.loads(hookd(home, "tail", "--json", "-n", "1").stdout)
    assert set(ev) == {"eid", "type", "ts", "session", "id", "recv_ts", "pid", "uid", "data"}
    human = hookd(home, "tail", "-n", "1").stdout.strip()
    assert human.endswith(' a [s1] {"type":"a","session":"s1","n":5}')
    bad = hookd(home, "tail", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since 'yesterday-ish'" in bad.stderr  # a usage error


class Follower:
    """`hookd tail -f --json` as a real process; records when each line arrives."""

    def __init__(self, home: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hookd", "tail", "-f", "--json", "-n", "0", *args],
            env=clean_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Ctrl-C as at a terminal: a test run started in the background (`cmd &` in a
            # script) hands its children SIGINT ignored, and Python then never sees it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.got: list[tuple[float, dict]] = []
        self.stderr = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.got.append((time.monotonic(), json.loads(line)))

    def wait(self, n: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return [e for _, e in self.got]

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()


def wait_followers(home: Path, n: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = hookd(home, "status", "--json")
        if out.returncode == 0 and json.loads(out.stdout)["daemon"]["followers"] == n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} follower(s)")


def test_tail_follow_is_pushed_within_100ms_of_commit(home: Path) -> None:
    d = Daemon(home).start()
    f = Follower(home, "--type", "ping")
    try:
        wait_followers(home, 1)
        committed: dict[int, float] = {}
        for i in range(20):
            d.send(json.dumps({"type": "other", "i": i}).encode() + b"\n")  # filtered out
            eid = send_wait(d, {"type": "ping", "i": i})
            committed[eid] = time.monotonic()  # the ack is written right after the commit
            time.sleep(0.02)
        got = f.wait(20)
        assert [e["data"]["i"] for e in got] == list(range(20))
        delays = [t - committed[e["eid"]] for t, e in f.got]
        assert max(delays) < 0.1, delays
    finally:
        f.close()
        d.stop()


def test_tail_follow_survives_a_daemon_restart(home: Path) -> None:
    d = Daemon(home).start()
    f = Follower(home)
    try:
        wait_followers(home, 1)
        send_wait(d, {"type": "t", "n": 1})
        assert len(f.wait(1)) == 1
        assert d.stop() == 0
        d.start()
        send_wait(d, {"type": "t", "n": 2})
        send_wait(d, {"type": "t", "n": 3})
        assert [e["data"]["n"] for e in f.wait(3)] == [1, 2, 3]
    finally:
        f.close()
        d.stop()
    assert b"waiting for it to start" in f.stderr


def test_control_connection_errors_are_answered(home: Path) -> None:
    d = Daemon(home).start()
    try:
        for command, reason in ((b"!nope\n", "bad_command"), (b"!follow [1]\n", "bad_command")):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(d.socket))
                s.sendall(command)
                reply = json.loads(s.makefile("rb").readline())
            assert reply["ok"] is False and reply["reason"] == reason
        # a status request sent and half-closed at once is still answered
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(d.socket))
            s.sendall(b"!status")
            s.shutdown(socket.SHUT_WR)
            assert json.loads(s.makefile("rb").readline())["running"] is True
        send_wait(d, {"type": "still_fine"})
        assert d.count() == 1
    finally:
        assert d.stop() == 0


# -- query ------------------------------------------------------------------------------------
def test_query_table_json_and_read_only(home: Path) -> None:
    d = Daemon(home).start()
    try:
        for n in range(3):
            send_wait(d, {"type": "q", "n": n})
        out = hookd(home, "query", "SELECT json_extract(data, '$.n') AS n, type FROM events ORDER BY eid")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["n  type", "0  q", "1  q", "2  q", "(3 rows)"]
        js = hookd(home, "query", "--json", "SELECT type, count FROM event_types")
        assert [json.loads(x) for x in js.stdout.splitlines()] == [{"type": "q", "count": 3}]
        denied = hookd(home, "query", "DELETE FROM events")
        assert denied.returncode == 1 and "read-only" in denied.stderr
        bad = hookd(home, "query", "SELEC 1")
        assert bad.returncode == 1 and "query failed" in bad.stderr
        assert d.count() == 3
    finally:
        assert d.stop() == 0


# -- SIGHUP -----------------------------------------------------------------------------------
def wait_log(d: Daemon, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in d.logtext:
        assert time.monotonic() < deadline, d.logtext
        time.sleep(0.02)


def test_sighup_reloads_aliases_columns_and_keeps_running_on_a_bad_file(home: Path) -> None:
    cfg = home / "config.toml"
    cfg.write_text(CONFIG)
    d = Daemon(home).start()
    try:
        send_wait(d, {"type": "tool-call", "tool_name": "Bash", "tool_input": {"file_path": "/a"}})
        assert d.query("SELECT tool_name, file FROM pre_tool_use_events") == [("Bash", "/a")]
        cfg.write_text(
            CONFIG.replace('"tool-call" = "pre_tool_use"', '"tool-call" = "tool_call_v2"')
            .replace('file = "$.tool_input.file_path"', 'cmd = "$.tool_input.command"')
            .replace("batch_size = 500", 'batch_size = 500\nsynchronous = "full"')
        )
        d.send_signal(signal.SIGHUP)
        wait_log(d, f"SIGHUP: configuration reloaded from {cfg}; changed: ")
        assert "ingest.synchronous changed but needs a restart" in d.logtext
        send_wait(d, {"type": "tool-call", "tool_name": "Edit", "tool_input": {"command": "ls"}})
        assert d.query("SELECT type FROM events ORDER BY eid") == [("pre_tool_use",), ("tool_call_v2",)]
        assert d.query("SELECT tool_name, cmd FROM pre_tool_use_events") == [("Bash", None)]
        cfg.write_text("[ingest]\nbatch_sise = 1\n")
        d.send_signal(signal.SIGHUP)
        wait_log(d, "configuration not reloaded, keeping the current one")
        send_wait(d, {"type": "tool-call"})
        assert d.count() == 3
        cfg.unlink()  # no file any more: the defaults, and the log says so instead of naming the file
        d.send_signal(signal.SIGHUP)
        wait_log(d, f"SIGHUP: configuration reloaded from defaults and environment (no file at {cfg}); changed: ")
    finally:
        assert d.stop() == 0


# -- import's progress bar --------------------------------------------------------------------
def test_import_shows_progress_on_a_terminal_only(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "old.jsonl"
    src.write_text("".join(json.dumps({"type": "old", "n": n}) + "\n" for n in range(20_000)))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookd", "import", str(src)],
        env=clean_env(home),
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    assert b"importing [" in seen and b"100%" in seen
    assert out.decode().startswith("20000 lines: 20000 imported, 0 duplicate, 0 rejected")
    piped = hookd(home, "import", str(src))
    assert "importing [" not in piped.stderr
    assert piped.stdout.startswith("20000 lines: 0 imported, 20000 duplicate, 0 rejected")


def test_config_error_class_is_a_usage_error() -> None:
    assert ConfigError("x").exit_code == UsageError("x").exit_code == 2
    assert isinstance(ConfigError("x"), UsageError)


def test_documented_example_config_loads_and_every_key_is_documented(home: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    example = root / "docs" / "config.example.toml"
    out = hookd(home, "config", "--config", str(example))
    assert out.returncode == 0, out.stderr
    assert f"# configuration file: {example} (read)" in out.stdout
    doc = (root / "docs" / "configuration.md").read_text()
    for key in config.KEYS:
        assert f"| `{key.name}` |" in doc, f"{key.name} is not in docs/configuration.md"
        if key.env:
            assert f"`{key.env}`" in doc


def doc_table(heading: str, doc: str = "configuration.md") -> list[list[str]]:
    """The rows of the first table after ``heading`` in docs/``doc``, as lists of cells."""
    text = (Path(__file__).resolve().parent.parent / "docs" / doc).read_text()
    rows, started = [], False
    for line in text[text.index(heading) :].splitlines()[1:]:
        if line.startswith("|"):
            started = True
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif started:
            break
    return rows[2:]  # past the header and the |---| line


def first_code(cell: str) -> str:
    """The first `code` span of a table cell (`--batch-size N` -> --batch-size), or ""."""
    return cell.split("`")[1].split(" ")[0] if "`" in cell else ""


def test_the_documented_keys_table_says_what_the_key_table_says() -> None:
    rows = {first_code(r[0]): r for r in doc_table("### Keys")}
    assert list(rows) == [k.name for k in config.KEYS], "same keys, same order"
    for key in config.KEYS:
        _, default, variable, flag, sighup, _ = rows[key.name]
        assert first_code(variable) == (key.env or ""), key.name
        assert first_code(flag) == (key.flag.option if key.flag else ""), key.name
        assert sighup == ("applied" if key.live else "restart"), key.name
        if not key.is_path:
            shown = key.show(key.default)
            want = json.dumps(shown) if isinstance(shown, bool | list) else str(shown)
            assert default.strip("`") == want, key.name


def test_the_documented_exit_codes_are_the_codes_of_the_program() -> None:
    rows = doc_table("## Exit codes of `hookd`")
    assert [int(r[0]) for r in rows] == [int(c) for c in Exit] == [int(c) for c in EXIT_MEANINGS]
    top = cli.build_parser().format_help()
    listed = top[top.index("exit codes:") :].splitlines()[1:]
    assert [int(line.split()[0]) for line in listed] == [int(c) for c in Exit]


@pytest.mark.parametrize(
    ("mistake", "commands", "code"),
    [
        # a type that is no event type, wherever a command takes one
        ("bad type", [("tail", "--type", "x!"), ("import", "--type", "x!", "F"), ("emit", "x!")], 2),
        # a flag the command does not have
        (
            "unknown flag",
            [("tail", "--nope"), ("import", "--nope", "F"), ("query", "--nope", "SELECT 1"), ("emit", "--nope", "x")],
            2,
        ),
        # a configuration value hookd cannot use (every command that reads the configuration)
        ("bad variable", [("tail",), ("import", "F"), ("query", "SELECT 1")], 2),
        # a configuration file asked for by name that is not there
        (
            "missing --config",
            [
                ("tail", "--config", "nope.toml"),
                ("import", "--config", "nope.toml", "F"),
                ("query", "--config", "nope.toml", "SELECT 1"),
            ],
            2,
        ),
        # a value of the command's own arguments
        (
            "bad argument",
            [
                ("tail", "--since", "soon"),
                ("tail", "-n", "-1"),
                ("emit", "x", "novalue"),
                ("vacuum", "--max-age", "soon"),
            ],
            2,
        ),
        # nothing stored yet: a runtime failure, not a usage error
        ("no database", [("tail",), ("query", "SELECT 1")], 1),
    ],
)
def test_the_same_mistake_exits_the_same_in_every_command(
    home: Path, mistake: str, commands: list[tuple[str, ...]], code: int
) -> None:
    (home / "F").write_text('{"type": "x"}\n')
    env = {"HOOKD_MAX_LINE": "lots"} if mistake == "bad variable" else {}
    for argv in commands:
        argv = tuple(str(home / a) if a in ("F", "nope.toml") else a for a in argv)
        out = hookd(home, *argv, **env)
        assert out.returncode == code, (mistake, argv, out.stderr)
        assert out.stderr.count("\n") <= 3 and "Traceback" not in out.stderr, out.stderr
    assert not (home / "events.db").exists() and not (home / "spool").exists()  # nothing was done


@pytest.mark.parametrize("daemon_up", [True, False], ids=["following", "waiting-for-the-daemon"])
def test_ctrl_c_ends_a_blocking_command_with_130(home: Path, daemon_up: bool) -> None:
    d = Daemon(home).start() if daemon_up else None
    try:
        f = Follower(home)
        if daemon_up:
            wait_followers(home, 1)  # blocked reading the daemon's pushes
        else:
            deadline = time.monotonic() + 30
            while not (f.proc.stderr and select.select([f.proc.stderr], [], [], 0.1)[0]):
                assert time.monotonic() < deadline, "tail -f never said it waits"
        f.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert f.proc.wait(10) == 130
        f.close()
        assert b"Traceback" not in f.stderr
    finally:
        if d is not None:
            assert d.stop() == 0


def test_an_exception_group_from_the_daemon_is_one_line(monkeypatch, capsys) -> None:
    def run(args: object) -> int:
        raise ExceptionGroup("unhandled errors in a TaskGroup", [WriterError("the writer process failed: gone")])

    monkeypatch.setitem(cli.COMMANDS, "run", run)
    assert cli.main(["run"]) == 1
    assert capsys.readouterr().err == "hookd: error: the writer process failed: gone\n"

    def bug(args: object) -> int:
        inner = ExceptionGroup("inner", [RuntimeError("boom"), WriterError("gone")])
        raise ExceptionGroup("unhandled errors in a TaskGroup", [inner])

    monkeypatch.setitem(cli.COMMANDS, "run", bug)
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hookd: error: RuntimeError: boom; gone") and err.count("\n") == 1


def test_status_of_a_stopped_process_says_it_runs_but_does_not_answer(home: Path) -> None:
    d = Daemon(home).start()
    try:
        d.send_signal(signal.SIGSTOP)  # holds its lock and socket, answers nothing
        out = hookd(home, "status", "--json")
        st = json.loads(out.stdout)
        assert out.returncode == 0 and st["running"] is True and st["daemon"] is None
        assert "did not answer within 3 s" in hookd(home, "status").stdout
    finally:
        d.send_signal(signal.SIGCONT)
        assert d.stop() == 0


def test_a_follower_is_never_closed_as_idle(home: Path) -> None:
    d = Daemon(home, "--idle-timeout", "0.5").start()
    f = Follower(home)
    try:
        wait_followers(home, 1)
        time.sleep(2.0)  # four idle timeouts without a line from the follower
        send_wait(d, {"type": "late"})
        assert [e["type"] for e in f.wait(1)] == ["late"]
        assert f.proc.poll() is None
    finally:
        f.close()
        d.stop()
    assert b"waiting for it" not in f.stderr  # it never lost the daemon
