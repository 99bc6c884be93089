"""Tunables of a running daemon, with their defaults and limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookd.errors import ConfigError
from hookd.framing import DEFAULT_MAX_LINE, TYPE_RE, normalize_type
from hookd.paths import Paths

SYNCHRONOUS_LEVELS = ("off", "normal", "full")
LOG_LEVELS = ("debug", "info", "warning", "error")


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
    paths: Paths
    #: Flush a batch when it holds this many events ...
    batch_size: int = 1000
    #: ... or when its oldest event has waited this long (seconds).
    batch_delay: float = 0.05
    #: Batches handed to the writer and not yet committed; past this, reading pauses. Deep
    #: enough that the daemon frames the next batches while the writer commits (at 4 the
    #: writer sat idle between commits: both processes were ~60% busy at full load).
    max_inflight: int = 8
    #: Longest accepted line in bytes (without the newline).
    max_line: int = DEFAULT_MAX_LINE
    #: SQLite ``PRAGMA synchronous`` and whether the mirror is fsync'ed per batch (``full``).
    synchronous: str = "normal"
    #: On SIGTERM/SIGINT, how long open connections may keep sending before they are closed.
    shutdown_grace: float = 1.0
    #: Listen backlog: hooks that connect per event need a deep one (see docs/performance.md).
    backlog: int = 4096
    #: How often the daemon checkpoints the WAL from its own connection (seconds).
    checkpoint_interval: float = 0.5
    #: How often the spool directory is scanned for events clients left there (seconds).
    spool_interval: float = 1.0
    #: A connection that has not completed a line for this long is closed (seconds): a hook
    #: that connects and sends nothing, or one byte a second, must not hold a descriptor for
    #: ever. One sweep checks all connections; nothing is timed per read.
    idle_timeout: float = 30.0
    #: Other users (uids) whose connections are accepted. The daemon's own uid always is.
    allowed_uids: tuple[int, ...] = ()

    @property
    def accepted_uids(self) -> frozenset[int]:
        """Peer uids the daemon serves: its own and ``allowed_uids``."""
        return frozenset((os.getuid(), *self.allowed_uids))

    # -- retention (see docs/configuration.md); None means keep forever ---------------------
    #: Events older than this (by their ``ts``, seconds) are deleted, unless their type says otherwise.
    max_age: float | None = None
    #: Per type: its own maximum age in seconds, or None to keep that type forever.
    type_max_age: dict[str, float | None] = field(default_factory=dict)
    #: Delete the oldest events while the database holds more than this many bytes of data.
    max_size: int | None = None
    #: Mirror day files (``YYYY-MM-DD.jsonl``) older than this many seconds are deleted.
    mirror_max_age: float | None = None
    #: Delete the oldest mirror files while the mirror directory holds more than this many bytes.
    mirror_max_size: int | None = None
    #: Compress mirror day files once the day is over (``YYYY-MM-DD.jsonl.gz``).
    mirror_compress: bool = True
    #: How often retention runs (seconds); each run deletes in small steps.
    retention_interval: float = 60.0

    # -- logging, status, types (docs/configuration.md) --------------------------------------
    log_level: str = "info"
    #: A type not seen for this long is ``stale`` in ``hookd status`` (seconds).
    stale_after: float = 86400.0
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

    def validate(self) -> Settings:
        if not 1 <= self.batch_size <= 100_000:
            raise ConfigError(f"batch size must be 1..100000, got {self.batch_size}")
        if not 0.0 < self.batch_delay <= 10.0:
            raise ConfigError(f"batch delay must be in (0, 10] seconds, got {self.batch_delay}")
        if not 1 <= self.max_inflight <= 64:
            raise ConfigError(f"max in-flight batches must be 1..64, got {self.max_inflight}")
        if not 64 <= self.max_line <= 64 << 20:
            raise ConfigError(f"max line must be 64 B..64 MiB, got {self.max_line}")
        if self.synchronous not in SYNCHRONOUS_LEVELS:
            raise ConfigError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, got {self.synchronous!r}")
        if not 0.0 <= self.shutdown_grace <= 60.0:
            raise ConfigError(f"shutdown grace must be 0..60 seconds, got {self.shutdown_grace}")
        if not 1 <= self.backlog <= 65535:
            raise ConfigError(f"backlog must be 1..65535, got {self.backlog}")
        if not 0.05 <= self.spool_interval <= 3600.0:
            raise ConfigError(f"spool interval must be 50ms..1h, got {self.spool_interval}")
        if self.stale_after <= 0:
            raise ConfigError(f"stale_after must be positive, got {self.stale_after}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        for alias, target in self.aliases.items():
            if target in self.aliases:
                raise ConfigError(f"alias {alias} -> {target}: {target} is itself an alias (no chains)")
        if not 0.1 <= self.idle_timeout <= 86_400.0:
            raise ConfigError(f"idle timeout must be 0.1..86400 seconds, got {self.idle_timeout}")
        for uid in self.allowed_uids:
            if not isinstance(uid, int) or isinstance(uid, bool) or not 0 <= uid < 2**32 - 1:
                raise ConfigError(f"allowed uid must be an integer 0..4294967294, got {uid!r}")
        self._validate_retention()
        return self

    def _validate_retention(self) -> None:
        for name in ("max_age", "mirror_max_age"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be a positive duration or forever, got {value!r}")
        for etype, value in self.type_max_age.items():
            if not TYPE_RE.fullmatch(etype):
                better = normalize_type(etype)
                hint = f"; did you mean {better!r}?" if better else ""
                raise ConfigError(f"type_max_age: {etype!r} is not an event type name as stored{hint}")
            if value is not None and not value > 0:
                raise ConfigError(f"max age of type {etype!r} must be a positive duration or forever, got {value!r}")
        if self.max_size is not None and self.max_size < 64 << 10:
            raise ConfigError(f"max_size must be at least 64 KiB (or unset), got {self.max_size}")
        if self.mirror_max_size is not None and self.mirror_max_size <= 0:
            raise ConfigError(f"mirror_max_size must be positive (or unset), got {self.mirror_max_size}")
        if not 0.1 <= self.retention_interval <= 86400:
            raise ConfigError(f"retention interval must be 0.1 s..1 day, got {self.retention_interval}")
