"""What the forwarder (``hookd.forwarder``, a process of its own) shares with the rest of hookd.

- the ``[forward]`` values: the PostgreSQL URL (a password in it is refused: it would show in
  ``hookd config`` and in the process's environment; it comes from ``forward.password_file`` or
  libpq's ``PGPASSFILE``), the ``host`` name and its default (this machine's id);
- ``ForwardConfig``: what the daemon hands the forwarder on its stdin (one msgpack frame,
  ``wire.pack``'s framing), so nothing of it is on a command line;
- ``ForwardState``: the forwarder's state file beside the database (``<db>.forward``), written
  atomically after each commit in PostgreSQL and on each change of its error. ``hookd status``
  reads it (with the lag counted in the database), and so does retention: events above
  ``last_eid`` are not forwarded yet and are kept. PostgreSQL's cursor is the truth; this file is
  a copy that may only be behind it (written after the commit), never ahead.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Final

import msgspec

from hookd import wire

#: Where a machine's id lives (systemd's, then D-Bus's); the hostname where neither exists.
MACHINE_ID_FILES: Final = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
HOST_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_SCHEMES: Final = ("postgresql", "postgres")


def machine_id() -> str:
    """The default ``forward.host``: this machine's id (stable across reboots and renames)."""
    for path in MACHINE_ID_FILES:
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if re.fullmatch(r"[0-9a-f]{32}", text):
                return text
    return socket.gethostname()


def parse_pg_url(value: Any) -> str | None:
    """``forward.url``: a ``postgresql://`` URL without a password, or "" / "off" for none."""
    if not isinstance(value, str):
        raise ValueError(f"expected a postgresql:// URL, got {value!r}")
    text = value.strip()
    if text in ("", "off"):
        return None
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in _SCHEMES:
        raise ValueError("must be a URL such as postgresql://hookd@db.example/hookd (or off)")
    query = urllib.parse.parse_qs(parts.query)
    if parts.password is not None or "password" in query:
        raise ValueError(
            "must not hold a password (it would show in `hookd config` and the environment): put it in "
            "a file named by forward.password_file (mode 0600), or in PGPASSFILE / ~/.pgpass"
        )
    return text


def parse_host(value: Any) -> str | None:
    """``forward.host``: this machine's name in PostgreSQL; "" for the default (``machine_id``)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a name, got {value!r}")
    if value == "":
        return None
    if not HOST_RE.fullmatch(value):
        raise ValueError("must be 1-128 letters, digits and . _ : @ - (starting with a letter or digit)")
    return value


def host_of(settings: Any) -> str:
    """The host name events are forwarded under."""
    return settings.forward_host or machine_id()


def state_path(db: Path) -> Path:
    """The forwarder's state file, beside the database it reads."""
    return db.with_name(db.name + ".forward")


class ForwardConfig(msgspec.Struct, array_like=True, tag="forward"):
    """The daemon to its forwarder, once, on stdin."""

    url: str
    password_file: str | None
    host: str
    batch_size: int
    interval: float
    db: str
    log_level: str = "INFO"


class ForwardState(msgspec.Struct):
    """The forwarder's state file (JSON): where forwarding is, and its last error."""

    url: str
    host: str
    #: The largest eid PostgreSQL has committed for this host (its cursor).
    last_eid: int = 0
    #: When the last batch was committed there (epoch seconds), None before the first.
    forwarded_at: float | None = None
    #: Events this forwarder process committed to PostgreSQL since it started.
    forwarded: int = 0
    #: The last error (None once a batch got through again), and since when it lasts.
    error: str | None = None
    error_since: float | None = None
    #: Rows whose text PostgreSQL cannot hold (NUL characters, lone surrogates): stored with
    #: U+FFFD in their place, counted here (since the process started).
    sanitized: int = 0
    pid: int = 0
    updated: float = 0.0

    def matches(self, url: str | None, host: str) -> bool:
        """Whether this state is of the forwarding configured now (else its cursor means nothing)."""
        return self.url == url and self.host == host


def config_frame(cfg: ForwardConfig) -> bytes:
    """The forwarder's stdin: one frame (``wire``'s length prefix, then msgpack)."""
    body = msgspec.msgpack.encode(cfg)
    return wire.HEADER.pack(len(body)) + body


def config_of(settings: Any) -> ForwardConfig:
    """What the daemon tells its forwarder, from its settings."""
    password = settings.forward_password_file
    return ForwardConfig(
        url=settings.forward_url,
        password_file=None if password is None else str(password),
        host=host_of(settings),
        batch_size=settings.forward_batch_size,
        interval=settings.forward_interval,
        db=str(settings.paths.db),
        log_level=settings.log_level.upper(),
    )


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ForwardState).decode


def write_state(path: Path, state: ForwardState) -> None:
    """Replace the state file atomically (readers see the old one or the new one, whole)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    old = os.umask(0o077)
    try:
        tmp.write_bytes(_encode(state) + b"\n")
    finally:
        os.umask(old)
    os.replace(tmp, path)


def read_state(path: Path) -> ForwardState | None:
    """The state file, or None (none yet, or unreadable: then nothing is known)."""
    try:
        return _decode(path.read_bytes())
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def current_state(settings: Any) -> ForwardState | None:
    """The state file if it is of the forwarding configured now (else its cursor means nothing)."""
    state = read_state(state_path(settings.paths.db))
    if state is None or not state.matches(settings.forward_url, host_of(settings)):
        return None
    return state


def forwarded_eid(settings: Any) -> int | None:
    """For retention: None when forwarding is off; else the eid up to which events are in
    PostgreSQL as far as is known (0 when nothing is known yet: keep everything)."""
    if not settings.forward_url:
        return None
    state = current_state(settings)
    return 0 if state is None else state.last_eid
