"""Effective configuration: defaults < the TOML file < environment < command-line flags.

One table of keys (``KEYS``) says, for every setting, its TOML name, its type, the variable
and flag that override it, and whether a running daemon applies a change on SIGHUP. Per-type
tables (``[types.NAME]``) and ``[aliases]`` are free-form but checked just as strictly: an
unknown key anywhere is an error that names it.

The file: ``--config FILE``, else ``HOOKD_CONFIG``, else ``$HOOKD_HOME/config.toml`` when
HOOKD_HOME is set, else ``$XDG_CONFIG_HOME/hookd/config.toml``. A missing default file means
defaults; a missing file that was asked for by name is an error.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookd import records
from hookd.errors import ConfigError
from hookd.framing import normalize_type
from hookd.paths import Paths, _xdg, resolve
from hookd.settings import SYNCHRONOUS_LEVELS, Settings, TypeConfig

# -- value parsers: each takes what TOML or a variable holds, returns the setting's value ----

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_FOREVER = ("forever", "infinity", "never", "none")


def parse_duration(value: Any, *, forever: bool = False) -> float | None:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"30s"``, ``"50ms"`` or a number of seconds; with
    ``forever``, also ``"forever"`` (None: no limit)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 12h or 30d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        if forever and value.strip().lower() in _FOREVER:
            return None
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    hint = ' or "forever"' if forever else ""
    raise ValueError(f"expected a duration such as 30s, 12h or 30d{hint}, got {value!r}")


def parse_size(value: Any, *, unlimited: bool = False) -> int | None:
    """``"500MiB"``, ``"2GB"``, ``"64k"`` or a number of bytes (powers of 1024 either way)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64KiB, 500MiB or 2GiB")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        if unlimited and value.strip().lower() in _FOREVER + ("unlimited",):
            return None
        m = _SIZE.match(value)
        if m:
            unit = (m.group(2) or "b").lower()[0]
            return int(float(m.group(1)) * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit])
    hint = ' or "unlimited"' if unlimited else ""
    raise ValueError(f"expected a size such as 64KiB, 500MiB or 2GiB{hint}, got {value!r}")


def _age_limit(value: Any) -> float | None:
    return parse_duration(value, forever=True)


def _size_limit(value: Any) -> int | None:
    return parse_size(value, unlimited=True)


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError(f"expected true or false, got {value!r}")


def _uids(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of uids, got {value!r}")
    try:
        out = tuple(_int(v) for v in value)
    except ValueError:
        raise ValueError(
            f"expected user ids (comma-separated in a variable, a list in the file), got {value!r}"
        ) from None
    if any(u < 0 for u in out):
        raise ValueError("a uid cannot be negative")
    return out


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")

    return parse


def _path(value: Any) -> Path:
    if isinstance(value, str) and value:
        return Path(value).expanduser().absolute()
    raise ValueError(f"expected a path, got {value!r}")


@dataclass(frozen=True)
class Key:
    name: str  # "section.key" in the TOML file
    attr: str  # the Settings attribute
    parse: Callable[[Any], Any]
    env: str | None = None
    flag: str | None = None  # argparse dest
    live: bool = False  # applied by a running daemon on SIGHUP
    #: For the variable and the flag, when their unit differs from the file's (milliseconds).
    override_parse: Callable[[Any], Any] | None = None
    help: str = ""

    def value(self, settings: Settings) -> Any:
        return getattr(settings.paths if self.name.startswith("paths.") else settings, self.attr)


def _ms(value: Any) -> float:
    try:
        return float(value) / 1000.0
    except (TypeError, ValueError):
        raise ValueError(f"expected milliseconds, got {value!r}") from None


KEYS: tuple[Key, ...] = (
    Key("paths.socket", "socket", _path, "HOOKD_SOCKET", "socket", help="Unix socket the daemon listens on"),
    Key("paths.db", "db", _path, "HOOKD_DB", "db", help="SQLite database file"),
    Key("paths.mirror_dir", "mirror_dir", _path, "HOOKD_MIRROR_DIR", "mirror_dir", help="JSONL mirror directory"),
    Key("paths.spool_dir", "spool_dir", _path, "HOOKD_SPOOL_DIR", "spool_dir", help="client spool directory"),
    Key("ingest.batch_size", "batch_size", _int, "HOOKD_BATCH_SIZE", "batch_size", True, help="events per batch"),
    Key(
        "ingest.batch_delay",
        "batch_delay",
        parse_duration,
        "HOOKD_BATCH_DELAY_MS",
        "batch_delay",
        True,
        override_parse=_ms,
        help="longest wait of a batch's oldest event",
    ),
    Key("ingest.max_line", "max_line", parse_size, "HOOKD_MAX_LINE", "max_line", help="longest accepted line"),
    Key(
        "ingest.synchronous",
        "synchronous",
        _choice(*SYNCHRONOUS_LEVELS),
        "HOOKD_SYNCHRONOUS",
        "synchronous",
        help="SQLite synchronous level (full also fsyncs the mirror)",
    ),
    Key("ingest.max_inflight", "max_inflight", _int, help="batches handed to the writer before reading pauses"),
    Key("ingest.shutdown_grace", "shutdown_grace", parse_duration, help="how long clients may send after SIGTERM"),
    Key("ingest.backlog", "backlog", _int, help="listen backlog"),
    Key(
        "ingest.idle_timeout",
        "idle_timeout",
        parse_duration,
        "HOOKD_IDLE_TIMEOUT",
        "idle_timeout",
        True,
        help="close a connection that completed no line for this long",
    ),
    Key("ingest.spool_interval", "spool_interval", parse_duration, live=True, help="how often the spool is read"),
    Key(
        "security.allowed_uids",
        "allowed_uids",
        _uids,
        "HOOKD_ALLOWED_UIDS",
        "allow_uid",
        True,
        help="other uids whose events are accepted (your own always is)",
    ),
    Key(
        "log.level",
        "log_level",
        _choice("debug", "info", "warning", "error"),
        "HOOKD_LOG_LEVEL",
        "log_level",
        True,
        help="daemon log level",
    ),
    Key(
        "retention.max_age",
        "max_age",
        _age_limit,
        live=True,
        help="delete events older than this",
    ),
    Key(
        "retention.max_size",
        "max_size",
        _size_limit,
        live=True,
        help="delete the oldest events past this much data",
    ),
    Key(
        "retention.mirror_max_age",
        "mirror_max_age",
        _age_limit,
        live=True,
        help="delete mirror day files older than this",
    ),
    Key(
        "retention.mirror_max_size",
        "mirror_max_size",
        _size_limit,
        live=True,
        help="delete the oldest mirror files past this size",
    ),
    Key("retention.mirror_compress", "mirror_compress", _bool, live=True, help="gzip mirror files of past days"),
    Key("retention.interval", "retention_interval", parse_duration, live=True, help="how often retention runs"),
    Key(
        "status.stale_after",
        "stale_after",
        parse_duration,
        live=True,
        help="a type silent this long is `stale` in hookd status",
    ),
)
KEYS_BY_NAME = {k.name: k for k in KEYS}
SECTIONS = sorted({k.name.split(".")[0] for k in KEYS} | {"types", "aliases"})
TYPE_KEYS = ("expected", "stale_after", "max_age", "columns")
PATH_ATTRS = ("socket", "db", "mirror_dir", "spool_dir")


def default_config_path(env: Mapping[str, str]) -> Path:
    home = env.get("HOOKD_HOME", "")
    if home:
        return Path(home).expanduser().absolute() / "config.toml"
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "hookd" / "config.toml"


def _read_file(path: Path, required: bool) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"configuration file {path} does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None


def _type_name(name: str, where: str) -> str:
    norm = normalize_type(name)  # None unless it is a valid type
    if norm is None:
        raise ConfigError(f"{where}: {name!r} is not a valid event type (letters, digits, _; see docs/protocol.md)")
    return norm


def _parse_types(table: Any, where: str) -> tuple[dict[str, TypeConfig], dict[str, float | None]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [types] must be a table of [types.NAME] tables")
    types: dict[str, TypeConfig] = {}
    max_ages: dict[str, float | None] = {}
    for raw_name, spec in table.items():
        tw = f"{where}: [types.{raw_name}]"
        name = _type_name(raw_name, tw)
        if not isinstance(spec, dict):
            raise ConfigError(f"{tw} must be a table with keys {', '.join(TYPE_KEYS)}")
        tc = TypeConfig()
        for key, value in spec.items():
            try:
                if key == "expected":
                    tc.expected = _bool(value)
                elif key == "stale_after":
                    tc.stale_after = parse_duration(value)
                elif key == "max_age":
                    max_ages[name] = _age_limit(value)
                elif key == "columns":
                    tc.columns = _parse_columns(value)
                else:
                    raise ConfigError(f"{tw}: unknown key {key!r} (known: {', '.join(TYPE_KEYS)})")
            except ValueError as e:
                raise ConfigError(f"{tw} {key}: {e}") from None
        types[name] = tc
    return types, max_ages


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


def _parse_aliases(table: Any, where: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f'{where}: [aliases] must be a table such as "OldName" = "new_name"')
    out = {}
    for src, dst in table.items():
        if not isinstance(dst, str):
            raise ConfigError(f"{where}: [aliases] {src!r} must name a type, got {dst!r}")
        out[_type_name(src, f"{where}: [aliases]")] = _type_name(dst, f"{where}: [aliases] {src}")
    return out


def load(
    args: Any = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Build the effective Settings. ``args`` is an argparse Namespace (or None): any of the
    flags named in ``KEYS`` that are set override everything else."""
    env = os.environ if env is None else env
    config_file = config_file or getattr(args, "config", None)
    explicit = config_file or env.get("HOOKD_CONFIG", "")
    path = Path(explicit).expanduser().absolute() if explicit else default_config_path(env)
    data = _read_file(path, required=bool(explicit))
    where = str(path)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        if section in ("types", "aliases"):
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} must be a table: [{section}]")
        for key, value in table.items():
            name = f"{section}.{key}"
            k = KEYS_BY_NAME.get(name)
            if k is None:
                known = ", ".join(n.split(".", 1)[1] for n in KEYS_BY_NAME if n.startswith(section + "."))
                raise ConfigError(f"{where}: unknown key {key!r} in [{section}] (known: {known})")
            try:
                values[k.attr] = k.parse(value)
            except ValueError as e:
                raise ConfigError(f"{where}: {name}: {e}") from None
            sources[k.attr] = f"file {path}"
    types, type_max_age = _parse_types(data.get("types", {}), where)
    aliases = _parse_aliases(data.get("aliases", {}), where)

    for k in KEYS:
        parse = k.override_parse or k.parse
        overrides = []
        if k.env and env.get(k.env, ""):
            overrides.append((env[k.env], k.env, f"env {k.env}"))
        flag = getattr(args, k.flag, None) if (args is not None and k.flag) else None
        if flag not in (None, [], ()):
            name = f"--{k.flag.replace('_', '-')}"  # type: ignore[union-attr]
            overrides.append((flag, name, f"flag {name}"))
        for raw, name, source in overrides:  # the flag last: it wins
            try:
                values[k.attr] = parse(raw)
            except ValueError as e:
                raise ConfigError(f"{name}: {e}") from None
            sources[k.attr] = source

    # Paths: a flag or the path's own variable (above) wins; then HOOKD_HOME, then the file,
    # then the XDG default (paths.resolve knows HOOKD_HOME and XDG).
    home = env.get("HOOKD_HOME", "")
    base = resolve(env={k: v for k, v in env.items() if not k.startswith("HOOKD_") or k == "HOOKD_HOME"})
    for attr in PATH_ATTRS:
        src = sources.get(attr, "")
        if src.startswith(("flag", "env")):
            continue
        if home:
            values[attr], sources[attr] = getattr(base, attr), "env HOOKD_HOME"
        elif not src:
            values[attr], sources[attr] = getattr(base, attr), "default"
    path_values = {attr: values.pop(attr) for attr in PATH_ATTRS}
    settings = Settings(paths=Paths(**path_values))
    for attr, value in values.items():
        setattr(settings, attr, value)
    settings.types = types
    settings.type_max_age = type_max_age
    settings.aliases = aliases
    settings.config_path = path
    settings.config_loaded = bool(data) or path.exists()
    for k in KEYS:
        sources.setdefault(k.attr, "default")
    settings.sources = sources
    settings.reload_args = args
    settings.reload_file = config_file
    return settings.validate()


def effective(settings: Settings) -> list[tuple[str, Any, str]]:
    """(key, value, source) for every key, in the order of KEYS, then types and aliases."""
    rows: list[tuple[str, Any, str]] = []
    for k in KEYS:
        rows.append((k.name, k.value(settings), settings.sources.get(k.attr, "default")))
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


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "forever"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def format_size(size: int | None) -> str:
    if size is None:
        return "unlimited"
    for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= n and size % n == 0:
            return f"{size // n}{unit}"
    return str(size)


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


_DURATION_KEYS = {k.name for k in KEYS if k.parse in (parse_duration, _age_limit)}
_SIZE_KEYS = {k.name for k in KEYS if k.parse in (parse_size, _size_limit)}


def display_value(name: str, value: Any) -> Any:
    """A value as the configuration file would spell it (durations and sizes as text)."""
    leaf = name.rsplit(".", 1)[-1]
    if name in _DURATION_KEYS or (name.startswith("types.") and leaf in ("max_age", "stale_after")):
        return format_duration(value)
    if name in _SIZE_KEYS:
        return format_size(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
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
