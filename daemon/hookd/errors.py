"""One exception tree for everything hookd raises on purpose, and the exit codes they map to.

The CLI maps these to exit codes and one-line messages; nothing below the CLI calls
``sys.exit``. The same mistake gives the same exit code whichever command makes it: a value
that hookd cannot use is a ``UsageError`` (2) wherever it is found.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class Exit(IntEnum):
    """Every exit status of ``hookd`` (docs/configuration.md, "Exit codes"; a test compares)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_RUNNING = 3
    INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


#: One line per exit status, for ``hookd --help``; the docs' table says the same at more length.
EXIT_MEANINGS: Final[dict[Exit, str]] = {
    Exit.OK: "success (also a clean stop of `hookd run` by SIGTERM or SIGINT)",
    Exit.FAILURE: "a runtime failure, or a problem found by `hookd status --check`; the message says which",
    Exit.USAGE: "a usage or configuration error: a bad argument, flag, variable or file",
    Exit.NOT_RUNNING: "`hookd status`: the daemon is not running",
    Exit.INTERRUPTED: "interrupted by Ctrl-C (SIGINT), except `hookd run`",
}


class HookdError(Exception):
    """Base of every error hookd raises deliberately. ``str()`` is a message for a human."""

    exit_code: int = Exit.FAILURE


class UsageError(HookdError):
    """A command was given something it cannot use: a malformed argument or flag value.

    Exit 2, the status argparse gives an unknown flag, so that a caller can tell "you asked
    wrongly" from "it failed" whichever command was asked.
    """

    exit_code = Exit.USAGE


class ConfigError(UsageError):
    """A setting, flag or environment variable has a value hookd cannot use."""


class SocketPathError(HookdError):
    """The socket path is unusable: not a socket, someone else's, or a live daemon owns it."""


class AlreadyRunning(SocketPathError):
    """Another hookd is serving the same socket path, or writing the same database."""


class DaemonDown(HookdError):
    """No daemon answers on its control or event socket (``hookd tail -f`` waits it out)."""


class StoreError(HookdError):
    """The database cannot be opened, migrated or written."""


class WriterError(HookdError):
    """The writer process failed or went away."""
