"""Effective configuration: defaults < the TOML file < environment < command-line flags.

What each key is (parser, default, range, variable, flag, help) is the table
``hookd.settings.KEYS``; this module finds the values: it reads the file, applies the
variables and the flags over it, and chooses the paths (``hookd.paths.choose``). Per-type tables
(``[types.NAME]``) and ``[aliases]`` are free-form but checked just as strictly: an unknown key
anywhere is an error that names it. It also prints the result (``hookd config``).

The file: ``--config FILE``, else ``HOOKD_CONFIG``, else ``$HOOKD_HOME/config.toml`` when
HOOKD_HOME is set, else ``$XDG_CONFIG_HOME/hookd/config.toml``. A missing default file means
defaults; a missing file that was asked for by name is an error.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookd import records
from hookd.errors import ConfigError
from hookd.forwarding import machine_id
from hookd.framing import normalize_type
from hookd.paths import Paths, choose, xdg_dir
from hookd.settings import KEYS, KEYS_BY_NAME, Key, Settings, TypeConfig
from hookd.values import age_limit, format_duration, format_size, parse_bool, parse_duration, parse_size

# Where callers have always found them (hookd.daemon.app reads KEYS on SIGHUP).
__all__ = [
    "KEYS",
    "KEYS_BY_NAME",
    "Key",
    "display_value",
    "effective",
    "format_duration",
    "format_size",
    "load",
    "load_lenient",
    "parse_duration",
    "parse_size",
    "render_toml",
]

SECTIONS = sorted({k.name.split(".")[0] for k in KEYS} | {"types", "aliases"})
TYPE_KEYS = ("expected", "stale_after", "max_age", "columns")
#: Where each path came from, by the step of paths.choose that gave it.
_PATH_SOURCES = {"home": "env HOOKD_HOME", "default": "default"}
#: What load does with a value it cannot use: raise it (strict), or note it and go on without it.
Report = Callable[[ConfigError], None]


def _raise(e: ConfigError) -> None:
    raise e


@dataclass
class Problems:
    """The errors a lenient load went on without (``load_lenient``)."""

    errors: list[ConfigError] = field(default_factory=list)

    def __call__(self, e: ConfigError) -> None:
        self.errors.append(e)


def default_config_path(env: Mapping[str, str]) -> Path:
    home = env.get("HOOKD_HOME", "")
    if home:
        return Path(home).expanduser().absolute() / "config.toml"
    return xdg_dir(env, "XDG_CONFIG_HOME", ".config") / "hookd" / "config.toml"


def _read_file(path: Path, required: bool, report: Report = _raise) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if required:
            report(ConfigError(f"configuration file {path} does not exist"))
    except tomllib.TOMLDecodeError as e:
        report(ConfigError(f"{path}: not valid TOML: {e}"))
    except OSError as e:
        report(ConfigError(f"cannot read configuration file {path}: {e.strerror}"))
    return {}


def _type_name(name: str, where: str) -> str:
    norm = normalize_type(name)  # None unless it is a valid type
    if norm is None:
        raise ConfigError(f"{where}: {name!r} is not a valid event type (letters, digits, _; see docs/protocol.md)")
    return norm


def _parse_types(
    table: Any, where: str, report: Report = _raise
) -> tuple[dict[str, TypeConfig], dict[str, float | None]]:
    types: dict[str, TypeConfig] = {}
    max_ages: dict[str, float | None] = {}
    if not isinstance(table, dict):
        report(ConfigError(f"{where}: [types] must be a table of [types.NAME] tables"))
        return types, max_ages
    for raw_name, spec in table.items():
        tw = f"{where}: [types.{raw_name}]"
        try:
            name = _type_name(raw_name, tw)
            if not isinstance(spec, dict):
                raise ConfigError(f"{tw} must be a table with keys {', '.join(TYPE_KEYS)}")
        except ConfigError as e:
            report(e)
            continue
        tc = TypeConfig()
        for key, value in spec.items():
            try:
                _type_key(tc, max_ages, name, key, value, tw)
            except ValueError as e:
                report(ConfigError(f"{tw} {key}: {e}"))
            except ConfigError as e:
                report(e)
        types[name] = tc
    return types, max_ages


def _type_key(tc: TypeConfig, max_ages: dict[str, float | None], name: str, key: str, value: Any, tw: str) -> None:
    """One key of ``[types.NAME]`` into ``tc`` (or ``max_ages``); ValueError for a bad value."""
    if key == "expected":
        tc.expected = parse_bool(value)
    elif key == "stale_after":
        tc.stale_after = parse_duration(value)
    elif key == "max_age":
        max_ages[name] = age_limit(value)
    elif key == "columns":
        tc.columns = _parse_columns(value)
    else:
        raise ConfigError(f"{tw}: unknown key {key!r} (known: {', '.join(TYPE_KEYS)})")


def _parse_columns(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError('expected a table such as { tool_name = "$.tool_name" }')
    out = {}
    for col, path in value.items():
        if not records.COLUMN_RE.fullmatch(col) or col in records.BASE_COLUMNS:
            raise ValueError(f"column name {col!r} must be lowercase letters, digits and _, and not a built-in column")
        if not isinstance(path, str) or not records.JSON_PATH_RE.fullmatch(path):
            raise ValueError(f'column {col}: {path!r} is not a JSON path such as "$.tool_name" or "$.items[0].id"')
        out[col] = path
    return out


def _parse_aliases(table: Any, where: str, report: Report = _raise) -> dict[str, str]:
    out: dict[str, str] = {}
    if not isinstance(table, dict):
        report(ConfigError(f'{where}: [aliases] must be a table such as "OldName" = "new_name"'))
        return out
    for src, dst in table.items():
        try:
            if not isinstance(dst, str):
                raise ConfigError(f"{where}: [aliases] {src!r} must name a type, got {dst!r}")
            out[_type_name(src, f"{where}: [aliases]")] = _type_name(dst, f"{where}: [aliases] {src}")
        except ConfigError as e:
            report(e)
    return out


def load(
    args: Any = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
    report: Report = _raise,
) -> Settings:
    """Build the effective Settings. ``args`` is an argparse Namespace (or None): any of the
    flags named in ``KEYS`` that are set override everything else. A value that cannot be
    used is a ConfigError, given to ``report``: raised by default (see ``load_lenient``)."""
    env = os.environ if env is None else env
    config_file = config_file or getattr(args, "config", None)
    path, explicit = config_path(env, config_file)
    data = _read_file(path, explicit, report)
    values, sources = _file_values(data, path, report)
    types, type_max_age = _parse_types(data.get("types", {}), str(path), report)
    aliases = _parse_aliases(data.get("aliases", {}), str(path), report)
    _override(values, sources, args, env, report)
    paths = _choose_paths(values, sources, args, env, report)
    settings = Settings(paths=paths, **values)
    settings.types = types
    settings.type_max_age = type_max_age
    settings.aliases = aliases
    settings.config_path = path
    settings.config_loaded = bool(data) or path.exists()
    settings.sources = {k.attr: sources.get(k.attr, "default") for k in KEYS}
    settings.reload_args = args
    settings.reload_file = config_file
    return settings.validate(None if report is _raise else report)


def load_lenient(args: Any = None, env: Mapping[str, str] | None = None) -> tuple[Settings, list[ConfigError]]:
    """Settings without what cannot be used, and the errors that were left out.

    For the commands that only look (``hookd status``, ``tail``, ``query``): a broken file or
    variable must not hide what the database can still show. A file that is not TOML at all
    is left out whole; otherwise only the bad key (or the bad ``[types.NAME]`` key, alias,
    variable or flag) is, and the rest, ``[paths]`` included, applies.
    """
    problems = Problems()
    return load(args, env, report=problems), problems.errors


def config_path(env: Mapping[str, str], config_file: str | None = None) -> tuple[Path, bool]:
    """The configuration file, and whether it was named (then it must exist)."""
    explicit = config_file or env.get("HOOKD_CONFIG", "")
    if explicit:
        return Path(explicit).expanduser().absolute(), True
    return default_config_path(env), False


def _file_values(data: Mapping[str, Any], path: Path, report: Report = _raise) -> tuple[dict[str, Any], dict[str, str]]:
    """attr -> value of every key the file sets, and attr -> its source."""
    where = str(path)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            report(ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(SECTIONS)})"))
            continue
        if section in ("types", "aliases"):
            continue
        if not isinstance(table, dict):
            report(ConfigError(f"{where}: {section} must be a table: [{section}]"))
            continue
        for name, value in table.items():
            k = KEYS_BY_NAME.get(f"{section}.{name}")
            try:
                if k is None:
                    known = ", ".join(n.split(".", 1)[1] for n in KEYS_BY_NAME if n.startswith(section + "."))
                    raise ConfigError(f"{where}: unknown key {name!r} in [{section}] (known: {known})")
                values[k.attr] = _parse(k.parse, value, f"{where}: {k.name}")
            except ConfigError as e:
                report(e)
                continue
            sources[k.attr] = f"file {path}"
    return values, sources


def _parse(parse: Callable[[Any], Any], raw: Any, label: str) -> Any:
    """``parse(raw)``; its complaint as a ConfigError that names where ``raw`` came from."""
    try:
        return parse(raw)
    except ValueError as e:
        raise ConfigError(f"{label}: {e}") from None


def _flag_value(args: Any, key: Key) -> Any:
    """The key's flag as given on the command line, or None (not given, or not a flag of it)."""
    if args is None or key.flag is None:
        return None
    value = getattr(args, key.flag.dest, None)
    return None if value in ([], ()) else value


def _override(
    values: dict[str, Any], sources: dict[str, str], args: Any, env: Mapping[str, str], report: Report = _raise
) -> None:
    """The variables, then the flags (the flag wins), over what the file said; not the paths."""
    for k in KEYS:
        if k.is_path:
            continue
        parse = k.override_parse or k.parse
        given = []
        if k.env and env.get(k.env, ""):
            given.append((env[k.env], k.env, f"env {k.env}"))
        flag = _flag_value(args, k)
        if flag is not None:
            option = k.flag.option  # type: ignore[union-attr]
            given.append((flag, option, f"flag {option}"))
        for raw, label, source in given:
            try:
                values[k.attr] = _parse(parse, raw, label)
            except ConfigError as e:
                report(e)
                continue
            sources[k.attr] = source


def _choose_paths(
    values: dict[str, Any], sources: dict[str, str], args: Any, env: Mapping[str, str], report: Report = _raise
) -> Paths:
    """Each path by the one precedence rule (paths.choose), the file's value as one of its steps."""
    chosen: dict[str, Path] = {}
    for k in KEYS:
        if not k.is_path:
            continue
        flag = _flag_value(args, k)
        if flag is not None:
            try:
                flag = _parse(k.parse, flag, k.flag.option)  # type: ignore[union-attr]
            except ConfigError as e:
                report(e)
                flag = None
        chosen[k.attr], step = choose(k.attr, env, flag=flag, file=values.pop(k.attr, None))
        if step == "flag":
            sources[k.attr] = f"flag {k.flag.option}"  # type: ignore[union-attr]
        elif step == "env":
            sources[k.attr] = f"env {k.env}"
        elif step != "file":  # a file value keeps the source recorded when it was read
            sources[k.attr] = _PATH_SOURCES[step]
    return Paths(**chosen)


def effective(settings: Settings) -> list[tuple[str, Any, str]]:
    """(key, value, source) for every key, in the order of KEYS, then types and aliases."""
    rows: list[tuple[str, Any, str]] = []
    for k in KEYS:
        value, source = k.value(settings), settings.sources.get(k.attr, "default")
        if k.attr == "forward_host" and value is None:
            value, source = machine_id(), "default: this machine's id"
        rows.append((k.name, value, source))
    src = f"file {settings.config_path}"
    for name in sorted(set(settings.types) | set(settings.type_max_age)):
        tc = settings.types.get(name) or TypeConfig()
        rows.append((f"types.{name}.expected", tc.expected, src))
        if name in settings.type_max_age:
            rows.append((f"types.{name}.max_age", settings.type_max_age[name], src))
        if tc.stale_after is not None:
            rows.append((f"types.{name}.stale_after", tc.stale_after, src))
        if tc.columns:
            rows.append((f"types.{name}.columns", dict(tc.columns), src))
    for alias, target in sorted(settings.aliases.items()):
        rows.append((f"aliases.{alias}", target, src))
    return rows


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Path):
        return _toml_value(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def display_value(name: str, value: Any) -> Any:
    """A value as the configuration file would spell it (durations and sizes as text)."""
    key = KEYS_BY_NAME.get(name)
    if key is not None:
        return key.show(value)
    if name.startswith("types.") and name.rsplit(".", 1)[-1] in ("max_age", "stale_after"):
        return format_duration(value)
    return value


def render_toml(settings: Settings) -> str:
    """The effective configuration as a TOML file, each value commented with its source."""
    state = "read" if settings.config_loaded else "not present: defaults apply"
    out = [
        f"# configuration file: {settings.config_path} ({state})",
        "# precedence: flag > environment > file > default",
    ]
    section = None
    for name, value, source in effective(settings):
        parts = name.split(".")
        if parts[0] == "types":
            sec, key = f"types.{parts[1]}", parts[2]
        else:
            sec, key = parts[0], ".".join(parts[1:])
            if parts[0] == "aliases":
                key = _toml_value(key)
        if sec != section:
            out.append(f"\n[{sec}]")
            section = sec
        out.append(f"{key} = {_toml_value(display_value(name, value))}  # {source}")
    return "\n".join(out) + "\n"
