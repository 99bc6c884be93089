"""Tunables of a running daemon, with their defaults and limits."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError
from .framing import DEFAULT_MAX_LINE
from .paths import Paths

SYNCHRONOUS_LEVELS = ("off", "normal", "full")


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
        if not 0.1 <= self.idle_timeout <= 86_400.0:
            raise ConfigError(f"idle timeout must be 0.1..86400 seconds, got {self.idle_timeout}")
        for uid in self.allowed_uids:
            if not isinstance(uid, int) or isinstance(uid, bool) or not 0 <= uid < 2**32 - 1:
                raise ConfigError(f"allowed uid must be an integer 0..4294967294, got {uid!r}")
        return self
