"""Path resolution, settings validation and the command line."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hookd import config
from hookd.cli import build_parser, flag_help, main, parse_fields
from hookd.errors import ConfigError, UsageError
from hookd.paths import PATH_RULES, choose, resolve
from hookd.settings import KEYS, Settings


def test_defaults_follow_xdg() -> None:
    p = resolve({"HOME": "/h", "XDG_RUNTIME_DIR": "/run/user/7"})
    assert p.socket == Path("/run/user/7/hookd/hookd.sock")
    assert p.db == Path("/h/.local/share/hookd/events.db")
    assert p.mirror_dir == Path("/h/.local/state/hookd/mirror")
    p = resolve({"HOME": "/h", "XDG_DATA_HOME": "/d", "XDG_STATE_HOME": "/s"})
    assert p.socket == Path(f"/tmp/hookd-{os.getuid()}/hookd.sock")
    assert p.db == Path("/d/hookd/events.db") and p.mirror_dir == Path("/s/hookd/mirror")


def test_relative_xdg_values_are_ignored() -> None:
    p = resolve({"HOME": "/h", "XDG_RUNTIME_DIR": "rel", "XDG_DATA_HOME": "rel"})
    assert p.socket == Path(f"/tmp/hookd-{os.getuid()}/hookd.sock")
    assert p.db == Path("/h/.local/share/hookd/events.db")


def test_hookd_home_puts_everything_under_one_directory() -> None:
    p = resolve({"HOME": "/h", "HOOKD_HOME": "/x", "XDG_RUNTIME_DIR": "/r"})
    assert (p.socket, p.db, p.mirror_dir, p.spool_dir) == (
        Path("/x/hookd.sock"),
        Path("/x/events.db"),
        Path("/x/mirror"),
        Path("/x/spool"),
    )


def test_precedence_flag_then_variable_then_home() -> None:
    env = {"HOME": "/h", "HOOKD_HOME": "/x", "HOOKD_SOCKET": "/v.sock", "HOOKD_DB": "/v.db", "HOOKD_MIRROR_DIR": "/vm"}
    p = resolve(env)
    assert (p.socket, p.db, p.mirror_dir) == (Path("/v.sock"), Path("/v.db"), Path("/vm"))
    p = resolve(env, socket="/f.sock", db="/f.db", mirror_dir="/fm")
    assert (p.socket, p.db, p.mirror_dir) == (Path("/f.sock"), Path("/f.db"), Path("/fm"))


def test_the_file_is_one_step_of_the_one_precedence_rule() -> None:
    env = {"HOME": "/h", "XDG_STATE_HOME": "/s"}
    file = Path("/from/file.db")
    assert choose("db", env, file=file) == (file, "file")
    assert choose("mirror_dir", env, file=None) == (Path("/s/hookd/mirror"), "default")
    assert choose("db", {**env, "HOOKD_HOME": "/x"}, file=file) == (Path("/x/events.db"), "home")
    assert choose("db", {**env, "HOOKD_HOME": "/x", "HOOKD_DB": "/v.db"}, file=file) == (Path("/v.db"), "env")
    assert choose("db", {**env, "HOOKD_DB": "/v.db"}, flag="/f.db", file=file) == (Path("/f.db"), "flag")
    assert choose("db", {**env, "HOOKD_DB": ""}, flag="", file=file) == (file, "file")  # empty is unset


def test_settings_defaults_and_ranges_come_from_the_key_table() -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    for key in KEYS:
        if key.is_path:
            assert key.env == PATH_RULES[key.attr].env and key.default is None
            continue
        assert defaults[key.attr] == key.default, key.name
        key.check(key.default)  # every default is within its own range
        if key.range is not None and key.range.low is not None:
            below = key.range.low if key.range.open_low else key.range.low - 1
            with pytest.raises(ConfigError, match=f"^{key.name}: must be {key.range.text}"):
                Settings(paths=resolve({"HOME": "/h"}), **{key.attr: below}).validate()


def test_run_flags_are_generated_from_the_key_table() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    options = {o: a for a in run._actions for o in a.option_strings}
    flagged = [k for k in KEYS if k.flag is not None]
    assert {k.flag.option for k in flagged} <= set(options)  # type: ignore[union-attr]
    for key in flagged:
        action = options[key.flag.option]  # type: ignore[union-attr]
        assert action.help == flag_help(key) and action.default is None
        assert f"({key.env}" in action.help
        if key.choices:
            assert tuple(action.choices) == key.choices  # type: ignore[arg-type]
    assert "1..100000 (HOOKD_BATCH_SIZE; default 1000)" in flag_help(config.KEYS_BY_NAME["ingest.batch_size"])
    assert "default 50 ms" in flag_help(config.KEYS_BY_NAME["ingest.batch_delay"])  # the flag's unit


@pytest.mark.parametrize(
    ("env", "argv", "says"),
    [
        ({"HOOKD_BATCH_SIZE": "0"}, [], "HOOKD_BATCH_SIZE: must be 1..100000, got 0"),
        ({"HOOKD_BATCH_DELAY_MS": "20000"}, [], "HOOKD_BATCH_DELAY_MS: must be more than 0 and at most 10s, got 20s"),
        ({}, ["--batch-size", "0"], "--batch-size: must be 1..100000, got 0"),
        ({"HOOKD_BATCH_SIZE": "0"}, ["--batch-size", "5"], None),  # the flag wins: no error
        ({}, ["--allow-uid", "-3"], "--allow-uid: a uid cannot be negative"),
        ({}, ["--db", ""], "--db: expected a path, got ''"),
    ],
)
def test_a_value_out_of_range_is_named_by_where_it_came_from(
    tmp_path: Path, env: dict, argv: list, says: str | None
) -> None:
    args = build_parser().parse_args(["run", *argv])
    env = {"HOME": str(tmp_path), "HOOKD_HOME": str(tmp_path), **env}
    if says is None:
        assert config.load(args, env=env).batch_size == 5
        return
    with pytest.raises(ConfigError) as e:
        config.load(args, env=env)
    assert str(e.value) == says


def test_a_bad_file_value_names_the_file_and_the_key(tmp_path: Path, monkeypatch, capsys) -> None:
    for k in [k for k in os.environ if k.startswith("HOOKD_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOOKD_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text('[retention]\ninterval = "0s"\n')
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err == f"hookd: error: {tmp_path / 'config.toml'}: retention.interval: must be 0.1s..1d, got 0ms\n"


@pytest.mark.parametrize(
    "kw",
    [{"batch_size": 0}, {"batch_delay": 0.0}, {"max_line": 10}, {"synchronous": "extra"}, {"max_inflight": 0}],
)
def test_settings_reject_bad_values(kw: dict) -> None:
    with pytest.raises(ConfigError):
        Settings(paths=resolve({"HOME": "/h"}), **kw).validate()


def test_parse_fields() -> None:
    assert parse_fields(["a=1", "b:=1", "c:=true", 'd:={"x":[1]}', "e=x=y", "url=http://x:1"]) == {
        "a": "1",
        "b": 1,
        "c": True,
        "d": {"x": [1]},
        "e": "x=y",
        "url": "http://x:1",
    }
    with pytest.raises(UsageError, match="not JSON"):
        parse_fields(["a:=nope"])
    with pytest.raises(UsageError):
        parse_fields(["novalue"])


def test_bad_environment_value_is_a_usage_error(monkeypatch, capsys) -> None:
    monkeypatch.setenv("HOOKD_BATCH_SIZE", "lots")
    assert main(["run"]) == 2
    assert "HOOKD_BATCH_SIZE: expected an integer, got 'lots'" in capsys.readouterr().err


def test_help_lists_every_command_and_flag() -> None:
    text = build_parser().format_help()
    for word in ("run", "emit", "HOOKD_HOME", "HOOKD_SOCKET", "HOOKD_DB", "HOOKD_MIRROR_DIR"):
        assert word in text
    out = subprocess.run([sys.executable, "-m", "hookd", "run", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--socket", "--db", "--mirror-dir", "--batch-size", "--batch-delay", "--max-line", "--synchronous"):
        assert flag in out.stdout


def test_hookd_emit_spools_when_the_daemon_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
    env["HOOKD_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "hookd", "emit", "x", "a=1"], env=env, capture_output=True, text=True)
    assert out.returncode == 0
    assert "spooled" in out.stderr and "hookd run" in out.stderr
    assert [p.name for p in (tmp_path / "spool").iterdir()] == ["append.spool"]
    out = subprocess.run(
        [sys.executable, "-m", "hookd", "emit", "--wait", "x", "a=1"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "no hookd listening" in out.stderr


def test_hookd_emit_sends(daemon) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
    env["HOOKD_HOME"] = str(daemon.home)
    out = subprocess.run(
        [sys.executable, "-m", "hookd", "emit", "deploy", "service=api", "ok:=true", "ms:=812"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert daemon.wait_count(1) == 1
    assert daemon.query("SELECT type, json_extract(data,'$.ok'), json_extract(data,'$.ms') FROM events") == [
        ("deploy", 1, 812)
    ]


def test_installed_entry_points_exist() -> None:
    bindir = Path(sys.executable).parent
    assert (bindir / "hookd").exists()
    assert (bindir / "hookd-emit").exists(), "the shell client is installed on PATH by pip"
    out = subprocess.run([str(bindir / "hookd"), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("hookd ")


def test_output_into_a_closed_pipe_ends_quietly(tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
    env["HOOKD_HOME"] = str(tmp_path)
    (tmp_path / "one.jsonl").write_text('{"type": "x"}\n')
    hookd = [sys.executable, "-m", "hookd"]
    subprocess.run([*hookd, "import", str(tmp_path / "one.jsonl")], env=env, check=True, capture_output=True)
    many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) SELECT x FROM c"
    p = subprocess.Popen([*hookd, "query", many], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline().strip() == b"x"
    p.stdout.close()  # like `| head -1`: far more output than a pipe holds is still to come
    err = p.stderr.read()
    p.stderr.close()
    assert p.wait(30) == 0
    assert err == b"", err


def test_hookd_emit_refuses_what_it_cannot_send_as_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
    env["HOOKD_HOME"] = str(tmp_path)

    def emit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hookd", "emit", *args], env=env, capture_output=True, text=True)

    bare = emit()
    assert bare.returncode == 2
    assert "the following arguments are required: TYPE\n" in bare.stderr  # fields are optional
    for args, says in [
        (("x", "type=y"), "'type=y': the event's type is TYPE, the first argument; a field named type would be lost"),
        (("x", "type:=1"), "a field named type would be lost"),
        (("x", "novalue"), "'novalue': expected KEY=VALUE or KEY:=JSON"),
        (("x", "=v"), "'=v': empty key"),
        (("x", "n:=nope"), "'n:=nope': the value after := is not JSON"),
    ]:
        out = emit(*args)
        assert out.returncode == 2 and says in out.stderr, (args, out)
    assert not (tmp_path / "spool").exists()  # nothing was sent or spooled
    assert emit("x").returncode == 0  # an event with no fields is fine
