"""One exception tree for everything hookd raises on purpose.

The CLI maps these to exit codes and one-line messages; nothing below the CLI calls
``sys.exit``.
"""

from __future__ import annotations


class HookdError(Exception):
    """Base of every error hookd raises deliberately. ``str()`` is a message for a human."""

    exit_code = 1


class ConfigError(HookdError):
    """A setting, flag or environment variable has a value hookd cannot use."""

    exit_code = 2


class SocketPathError(HookdError):
    """The socket path is unusable: not a socket, someone else's, or a live daemon owns it."""


class AlreadyRunning(SocketPathError):
    """Another hookd is serving the same socket path."""


class StoreError(HookdError):
    """The database cannot be opened, migrated or written."""


class WriterError(HookdError):
    """The writer process failed or went away."""
