"""Every setting of hookd in one table (``KEYS``), and the ``Settings`` a process runs with.

Each key says, in one place: its name in the configuration file, its ``Settings`` attribute,
its parser, default and allowed range, the variable and the ``hookd run`` flag that override
it, whether a running daemon applies a change on SIGHUP, and its help text. Everything else is
derived from the table: the defaults and ``validate`` of ``Settings`` below, the ``hookd run``
flags and their help (cli.py), which keys the file may hold and ``hookd config`` (config.py);
tests hold docs/configuration.md to it. gunicorn's ``Setting`` classes are the model, as data.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hookd import wal
from hookd.errors import ConfigError
from hookd.forwarding import parse_host, parse_pg_url
from hookd.framing import DEFAULT_MAX_LINE, TYPE_RE, normalize_type
from hookd.oversize import CUT_FACTOR
from hookd.paths import PATH_RULES, Paths
from hookd.values import (
    age_limit,
    choice,
    format_duration,
    format_size,
    is_loopback,
    optional_path,
    parse_bool,
    parse_duration,
    parse_int,
    parse_listen,
    parse_ms,
    parse_path,
    parse_size,
    parse_uids,
    size_limit,
    split_listen,
    spool_limit,
)

SYNCHRONOUS_LEVELS: Final = ("off", "normal", "full")
DEFAULT_TRUNCATE_LIMIT: Final = CUT_FACTOR * DEFAULT_MAX_LINE
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Range:
    """Allowed values: ``low``..``high`` inclusive (None: no bound), said as ``text``.

    None (``forever``, ``unlimited``) always passes: only keys whose parser can return it get
    it. For a tuple (a list of uids) every item must be in range.
    """

    low: float | None
    high: float | None
    text: str
    #: ``low`` itself is not allowed: more than ``low``.
    open_low: bool = False

    def check(self, value: Any) -> None:
        for v in value if isinstance(value, tuple) else (value,):
            if v is None:
                continue
            if not isinstance(v, int | float) or isinstance(v, bool) or not self._within(v):
                raise ValueError(f"must be {self.text}")

    def _within(self, v: float) -> bool:
        if self.low is not None and (v < self.low or (self.open_low and v == self.low)):
            return False
        return self.high is None or v <= self.high


@dataclass(frozen=True)
class Flag:
    """How ``hookd run`` spells a key (cli.py adds it to the parser).

    argparse converts the text with ``type`` first, so a typo is a usage error (exit 2) with
    the usage line; the key's own parser then reads the result like any other value.
    """

    option: str
    metavar: str | None = None  # None: argparse lists the key's choices
    type: Callable[[str], Any] | None = None
    #: One value per use (``--allow-uid 1001 --allow-uid 1002``).
    repeat: bool = False
    #: The default as the flag spells it, when its unit differs from the file's.
    shown: Callable[[Any], str] | None = None
    #: When one use of the flag means less than the key (one uid of the list).
    help: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute: ``--batch-size`` -> ``batch_size``."""
        return self.option.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Key:
    name: str  # "section.key" in the TOML file
    attr: str  # the Settings attribute (of ``Settings.paths`` for paths.*)
    parse: Callable[[Any], Any]  # a TOML or variable value -> the setting's value, or ValueError
    default: Any  # None for paths: chosen by paths.choose (HOOKD_HOME, XDG)
    help: str
    range: Range | None = None
    choices: tuple[str, ...] = ()
    env: str | None = None
    flag: Flag | None = None
    #: Applied by a running daemon on SIGHUP; otherwise a change waits for a restart.
    live: bool = False
    #: For the variable and the flag, when their unit differs from the file's (milliseconds).
    override_parse: Callable[[Any], Any] | None = None

    @property
    def is_path(self) -> bool:
        return self.name.startswith("paths.")

    def value(self, settings: Settings) -> Any:
        return getattr(settings.paths if self.is_path else settings, self.attr)

    def check(self, value: Any) -> None:
        """Raise ValueError (``must be ...``) unless ``value`` is allowed."""
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}")
        if self.range is not None:
            self.range.check(value)

    def show(self, value: Any) -> Any:
        """``value`` as the configuration file spells it (durations and sizes as text)."""
        if self.parse in (parse_duration, age_limit):
            return format_duration(value)
        if self.parse in (parse_size, size_limit, spool_limit):
            return format_size(value)
        if self.parse in (parse_listen, parse_pg_url):
            return value or "off"
        if self.parse is parse_host:
            return value or ""  # the default: hookd config shows this machine's id (config.effective)
        if self.parse is optional_path:
            return "" if value is None else str(value)
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return list(value)
        return value

    def label(self, source: str) -> str:
        """How an error names this key, given where its value came from (``Settings.sources``)."""
        kind, _, where = source.partition(" ")
        if kind == "file":
            return f"{where}: {self.name}"
        if kind in ("env", "flag") and where != "HOOKD_HOME":
            return where  # the variable or the flag the user typed
        return self.name


def _path_key(attr: str, flag: Flag, help: str) -> Key:
    return Key(f"paths.{attr}", attr, parse_path, None, help, env=PATH_RULES[attr].env, flag=flag)


KEYS: Final[tuple[Key, ...]] = (
    _path_key("socket", Flag("--socket", "PATH"), "Unix socket the daemon listens on"),
    _path_key("db", Flag("--db", "PATH"), "SQLite database file"),
    _path_key("mirror_dir", Flag("--mirror-dir", "DIR"), "directory of the JSONL mirror"),
    _path_key("spool_dir", Flag("--spool-dir", "DIR"), "where clients leave events while the daemon is down"),
    Key(
        "ingest.batch_size",
        "batch_size",
        parse_int,
        1000,
        "commit a batch when it holds this many events",
        Range(1, 100_000, "1..100000"),
        env="HOOKD_BATCH_SIZE",
        flag=Flag("--batch-size", "N", int),
        live=True,
    ),
    Key(
        "ingest.batch_delay",
        "batch_delay",
        parse_duration,
        0.05,
        "... or when its oldest event has waited this long",
        Range(0, 10, "more than 0 and at most 10s", open_low=True),
        env="HOOKD_BATCH_DELAY_MS",
        flag=Flag("--batch-delay", "MS", float, shown=lambda s: f"{s * 1000:g} ms"),
        live=True,
        override_parse=parse_ms,
    ),
    Key(
        "ingest.max_line",
        "max_line",
        parse_size,
        DEFAULT_MAX_LINE,
        "longest accepted line; longer ones are rejected as too_long",
        Range(64, 64 << 20, "64 B..64 MiB"),
        env="HOOKD_MAX_LINE",
        flag=Flag("--max-line", "BYTES", int, shown=str),
    ),
    # 16 x the default max_line: a Claude Code tool response of several MB keeps its tool call.
    # The daemon holds at most 4 x this in over-long lines at once (oversize.BUDGET_FACTOR).
    Key(
        "ingest.truncate_limit",
        "truncate_limit",
        parse_size,
        DEFAULT_TRUNCATE_LIMIT,
        "a line over max_line, up to this size, is stored with its longest strings cut to fit; "
        "longer ones are rejected as too_long (0: never cut)",
        Range(0, 1 << 30, "0..1 GiB"),
        env="HOOKD_TRUNCATE_LIMIT",
    ),
    Key(
        "ingest.synchronous",
        "synchronous",
        choice(*SYNCHRONOUS_LEVELS),
        "normal",
        "SQLite synchronous level; 'full' also fsyncs the mirror per batch",
        choices=SYNCHRONOUS_LEVELS,
        env="HOOKD_SYNCHRONOUS",
        flag=Flag("--synchronous"),
    ),
    # Deep enough that the daemon frames the next batches while the writer commits (at 4 the
    # writer sat idle between commits: both processes were ~60% busy at full load).
    Key(
        "ingest.max_inflight",
        "max_inflight",
        parse_int,
        8,
        "batches handed to the writer and not yet committed; past this, reading pauses",
        Range(1, 64, "1..64"),
    ),
    Key(
        "ingest.shutdown_grace",
        "shutdown_grace",
        parse_duration,
        1.0,
        "how long clients may keep sending after SIGTERM",
        Range(0, 60, "0..60s"),
    ),
    Key(
        "ingest.backlog",
        "backlog",
        parse_int,
        4096,
        "listen backlog (hooks that connect per event need a deep one)",
        Range(1, 65535, "1..65535"),
    ),
    # A hook that connects and sends nothing, or one byte a second, must not hold a descriptor
    # for ever. One sweep checks all connections; nothing is timed per read.
    Key(
        "ingest.idle_timeout",
        "idle_timeout",
        parse_duration,
        30.0,
        "close a connection that has not completed a line for this long",
        Range(0.1, 86_400, "0.1s..1d"),
        env="HOOKD_IDLE_TIMEOUT",
        flag=Flag("--idle-timeout", "SECONDS", float, shown=lambda s: f"{s:g}"),
        live=True,
    ),
    Key(
        "ingest.spool_interval",
        "spool_interval",
        parse_duration,
        1.0,
        "how often the spool directory is read",
        Range(0.05, 3600, "50ms..1h"),
        live=True,
    ),
    # Read by the clients (HOOKD_SPOOL_MAX in their environment), not by the daemon, which only
    # reports the spool against it: ``hookd status``, and ``hookd emit`` passes it on.
    Key(
        "spool.max_size",
        "spool_max_size",
        spool_limit,
        256 << 20,
        "clients drop (and count) events that would take the spool past this size",
        env="HOOKD_SPOOL_MAX",
        live=True,
    ),
    Key(
        "security.allowed_uids",
        "allowed_uids",
        parse_uids,
        (),
        "other users (uids) whose events are accepted; your own uid always is",
        Range(0, 2**32 - 2, "0..4294967294"),
        env="HOOKD_ALLOWED_UIDS",
        flag=Flag(
            "--allow-uid",
            "UID",
            int,
            repeat=True,
            shown=lambda uids: ",".join(map(str, uids)) or "none",
            help="also accept events from this uid (your own always is); repeatable",
        ),
        live=True,
    ),
    # Off by default: a TCP port is reachable by every local user and process (the uid check
    # below refuses other users, but a port is still a surface a Unix socket does not have), and
    # only Claude Code's http hooks need it. `hookd hooks install-claude --http` reads it.
    Key(
        "http.listen",
        "http_listen",
        parse_listen,
        None,
        "serve POST /v1/events on this loopback HOST:PORT (Claude Code http hooks); off by default",
        env="HOOKD_HTTP",
        flag=Flag("--http", "HOST:PORT", str),
    ),
    Key(
        "http.token_file",
        "http_token_file",
        optional_path,
        None,
        "require `Authorization: Bearer TOKEN` on the HTTP listener, TOKEN read from this file (mode 0600)",
        env="HOOKD_HTTP_TOKEN_FILE",
        flag=Flag("--http-token-file", "FILE", str),
    ),
    Key(
        "http.allow_remote",
        "http_allow_remote",
        parse_bool,
        False,
        "let http.listen be a non-loopback address (then http.token_file is required)",
    ),
    # Read by `hookd dashboard` (its own process), not by the daemon. Loopback only, always:
    # the dashboard shows prompts, commands and file paths; another local uid gets nothing.
    Key(
        "dashboard.listen",
        "dashboard_listen",
        parse_listen,
        "127.0.0.1:8788",
        "where `hookd dashboard` serves the dashboard: a loopback HOST:PORT (port 0: any free port)",
        env="HOOKD_DASHBOARD",
    ),
    Key(
        "log.level",
        "log_level",
        choice(*LOG_LEVELS),
        "info",
        "what the daemon logs",
        choices=LOG_LEVELS,
        env="HOOKD_LOG_LEVEL",
        flag=Flag("--log-level"),
        live=True,
    ),
    Key(
        "retention.max_age",
        "max_age",
        age_limit,
        None,
        "delete events older than this, by their ts",
        Range(0, None, "a positive duration or forever", open_low=True),
        live=True,
    ),
    Key(
        "retention.max_size",
        "max_size",
        size_limit,
        None,
        "delete the oldest events while the database holds more data than this",
        Range(64 << 10, None, "at least 64 KiB or unlimited"),
        live=True,
    ),
    Key(
        "retention.mirror_max_age",
        "mirror_max_age",
        age_limit,
        None,
        "delete mirror day files older than this",
        Range(0, None, "a positive duration or forever", open_low=True),
        live=True,
    ),
    Key(
        "retention.mirror_max_size",
        "mirror_max_size",
        size_limit,
        None,
        "delete the oldest mirror files past this size",
        Range(0, None, "a positive size or unlimited", open_low=True),
        live=True,
    ),
    Key("retention.mirror_compress", "mirror_compress", parse_bool, True, "gzip mirror files of past days", live=True),
    Key(
        "retention.interval",
        "retention_interval",
        parse_duration,
        60.0,
        "how often retention runs",
        Range(0.1, 86_400, "0.1s..1d"),
        live=True,
    ),
    # Off unless a URL is given. No flags: the forwarder's configuration is the file's or the
    # environment's, and a password is never in the URL (forward.password_file, PGPASSFILE).
    Key(
        "forward.url",
        "forward_url",
        parse_pg_url,
        None,
        "forward every committed event to this PostgreSQL (postgresql://USER@HOST/DB, no password); off by default",
        env="HOOKD_FORWARD_URL",
    ),
    Key(
        "forward.password_file",
        "forward_password_file",
        optional_path,
        None,
        "the PostgreSQL password, read from this file (mode 0600); else libpq's PGPASSFILE or ~/.pgpass",
        env="HOOKD_FORWARD_PASSWORD_FILE",
    ),
    Key(
        "forward.host",
        "forward_host",
        parse_host,
        None,
        "this machine's name in PostgreSQL's host column (default: the machine id, /etc/machine-id)",
        env="HOOKD_FORWARD_HOST",
    ),
    Key(
        "forward.batch_size",
        "forward_batch_size",
        parse_int,
        10_000,
        "events per PostgreSQL transaction (one COPY) at most",
        Range(1, 100_000, "1..100000"),
    ),
    Key(
        "forward.interval",
        "forward_interval",
        parse_duration,
        0.25,
        "how often the forwarder looks for new events once it has caught up",
        Range(0.01, 60, "10ms..60s"),
    ),
    Key(
        "forward.max_lag",
        "forward_max_lag",
        parse_duration,
        300.0,
        "`hookd status --check` reports forwarding when its oldest unforwarded event waited longer",
        Range(0, None, "a positive duration", open_low=True),
        live=True,
    ),
    Key(
        "status.stale_after",
        "stale_after",
        parse_duration,
        86_400.0,
        "a type not seen for this long is `stale` in hookd status",
        Range(0, None, "a positive duration", open_low=True),
        live=True,
    ),
)
KEYS_BY_NAME: Final = {k.name: k for k in KEYS}
KEYS_BY_ATTR: Final = {k.attr: k for k in KEYS}


def _default(attr: str) -> Any:
    return KEYS_BY_ATTR[attr].default


@dataclass
class TypeConfig:
    """``[types.NAME]`` of the configuration file (its ``max_age`` lives in ``type_max_age``)."""

    #: Listed by ``hookd status`` as ``never`` until it is seen.
    expected: bool = False
    #: This type's own ``stale`` threshold (seconds); None: ``stale_after``.
    stale_after: float | None = None
    #: Extra columns of the ``<type>_events`` view: column name -> JSON path into ``data``.
    columns: dict[str, str] = field(default_factory=dict)


@dataclass
class Settings:
    """What a process runs with. The fields named in ``KEYS`` take their defaults from there
    (durations in seconds, sizes in bytes, None: no limit); see the keys for their meaning."""

    paths: Paths
    batch_size: int = _default("batch_size")
    batch_delay: float = _default("batch_delay")
    max_inflight: int = _default("max_inflight")
    max_line: int = _default("max_line")
    truncate_limit: int = _default("truncate_limit")
    synchronous: str = _default("synchronous")
    shutdown_grace: float = _default("shutdown_grace")
    backlog: int = _default("backlog")
    #: How often the daemon checkpoints the WAL from its own connection (seconds). Not a key:
    #: nothing to tune (docs/performance.md).
    checkpoint_interval: float = wal.INTERVAL
    spool_interval: float = _default("spool_interval")
    idle_timeout: float = _default("idle_timeout")
    spool_max_size: int | None = _default("spool_max_size")
    allowed_uids: tuple[int, ...] = _default("allowed_uids")

    @property
    def accepted_uids(self) -> frozenset[int]:
        """Peer uids the daemon serves: its own and ``allowed_uids``."""
        return frozenset((os.getuid(), *self.allowed_uids))

    max_age: float | None = _default("max_age")
    #: Per type: its own maximum age in seconds, or None to keep that type forever.
    type_max_age: dict[str, float | None] = field(default_factory=dict)
    max_size: int | None = _default("max_size")
    mirror_max_age: float | None = _default("mirror_max_age")
    mirror_max_size: int | None = _default("mirror_max_size")
    mirror_compress: bool = _default("mirror_compress")
    retention_interval: float = _default("retention_interval")
    log_level: str = _default("log_level")
    #: "HOST:PORT" (``[::1]:8787`` for IPv6) or None: no HTTP listener.
    http_listen: str | None = _default("http_listen")
    http_token_file: Path | None = _default("http_token_file")
    http_allow_remote: bool = _default("http_allow_remote")
    forward_url: str | None = _default("forward_url")
    forward_password_file: Path | None = _default("forward_password_file")
    forward_host: str | None = _default("forward_host")
    forward_batch_size: int = _default("forward_batch_size")
    forward_interval: float = _default("forward_interval")
    forward_max_lag: float = _default("forward_max_lag")
    stale_after: float = _default("stale_after")
    #: "HOST:PORT" of ``hookd dashboard`` (loopback), or None ("off").
    dashboard_listen: str | None = _default("dashboard_listen")
    types: dict[str, TypeConfig] = field(default_factory=dict)
    #: Incoming (normalized) type -> the type it is stored as.
    aliases: dict[str, str] = field(default_factory=dict)
    #: The configuration file read (or looked for), and where each value came from.
    config_path: Path | None = None
    config_loaded: bool = False
    sources: dict[str, str] = field(default_factory=dict)
    #: What SIGHUP reloads from: the command line's flags and --config.
    reload_args: Any = None
    reload_file: str | None = None

    def validate(self, report: Callable[[ConfigError], None] | None = None) -> Settings:
        """Every key within its range (the error names where a bad value came from), then the
        rules that span keys: per-type ages and aliases.

        With ``report``, a value that breaks a rule is given to it and left out instead (a key
        back to its default, the type's age or the alias dropped): see config.load_lenient.
        """
        for key in KEYS:
            value = key.value(self)
            try:
                key.check(value)
            except ValueError as e:
                label = key.label(self.sources.get(key.attr, "default"))
                error = ConfigError(f"{label}: {e}, got {_shown(key, value)}")
                if report is None or key.is_path:
                    raise error from None
                report(error)
                setattr(self, key.attr, key.default)
                self.sources[key.attr] = "default"
        for error, drop in self._type_errors():
            if report is None:
                raise error
            report(error)
            drop()
        self._validate_http()
        self._validate_dashboard()
        return self

    def _validate_dashboard(self) -> None:
        """The dashboard serves loopback only: no setting lets other machines see it."""
        if self.dashboard_listen is None:
            return
        host, _port = split_listen(self.dashboard_listen)
        if not is_loopback(host):
            label = KEYS_BY_ATTR["dashboard_listen"].label(self.sources.get("dashboard_listen", "default"))
            raise ConfigError(
                f"{label}: {host} is not a loopback address (127.0.0.1, [::1], localhost); the dashboard "
                "shows prompts, commands and file paths and is served on loopback only"
            )

    def _validate_http(self) -> None:
        """Loopback only, unless ``http.allow_remote``; and then a token is required."""
        if self.http_listen is None:
            return
        host, _port = split_listen(self.http_listen)
        if is_loopback(host):
            return
        label = KEYS_BY_ATTR["http_listen"].label(self.sources.get("http_listen", "default"))
        if not self.http_allow_remote:
            raise ConfigError(
                f"{label}: {host} is not a loopback address (127.0.0.1, [::1], localhost); other machines "
                "could reach it. To listen there anyway, set allow_remote = true and token_file in [http]"
            )
        if self.http_token_file is None:
            raise ConfigError(
                f"{label}: listening on {host} (allow_remote) requires a token: set http.token_file "
                "(HOOKD_HTTP_TOKEN_FILE, --http-token-file) to a file of mode 0600 holding it"
            )

    def _type_errors(self) -> Iterator[tuple[ConfigError, Callable[[], None]]]:
        """Each broken per-type rule, and how to leave it out."""
        for etype, value in list(self.type_max_age.items()):
            drop = functools.partial(self.type_max_age.pop, etype)
            if not TYPE_RE.fullmatch(etype):
                better = normalize_type(etype)
                hint = f"; did you mean {better!r}?" if better else ""
                yield ConfigError(f"type_max_age: {etype!r} is not an event type name as stored{hint}"), drop
            elif value is not None and not value > 0:
                yield (
                    ConfigError(f"max age of type {etype!r} must be a positive duration or forever, got {value!r}"),
                    drop,
                )
        for alias, target in list(self.aliases.items()):
            if target in self.aliases:
                yield (
                    ConfigError(f"alias {alias} -> {target}: {target} is itself an alias (no chains)"),
                    functools.partial(self.aliases.pop, alias),
                )


def _shown(key: Key, value: Any) -> str:
    """A bad value for an error message: as the file spells it (``0ms``), else its repr."""
    try:
        shown = key.show(value)
    except (TypeError, ValueError):  # not even of the key's type (a Settings built by hand)
        return repr(value)
    return str(shown) if shown is not value else repr(value)
