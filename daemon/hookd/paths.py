"""Where hookd keeps things, and the one rule for choosing.

Precedence for each path (``choose``): command-line flag, then its own variable
(``HOOKD_SOCKET``, ``HOOKD_DB``, ``HOOKD_MIRROR_DIR``, ``HOOKD_SPOOL_DIR``), then
``HOOKD_HOME``, then ``[paths]`` of the configuration file, then the XDG default.
``resolve`` applies it without a file (tests, benchmarks); ``hookd.config.load`` with one.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hookd.errors import ConfigError, SocketPathError


@dataclass(frozen=True)
class Paths:
    socket: Path
    db: Path
    mirror_dir: Path
    spool_dir: Path

    @property
    def lock(self) -> Path:
        """Held (flock) by the daemon serving ``socket`` for its whole life."""
        return self.socket.with_name(self.socket.name + ".lock")

    @property
    def control(self) -> Path:
        """The daemon's control socket (``hookd status``, ``hookd tail -f``): see control_path."""
        return control_path(self.socket)


def control_path(socket: Path) -> Path:
    """Where the daemon serving ``socket`` answers control commands: ``<socket>.ctl`` beside it.

    A socket of its own, never paused: backpressure stops accepting on the event socket, and
    the operator's questions must still be answered then (docs/architecture.md).
    """
    return socket.with_name(socket.name + ".ctl")


#: ``sun_path`` of ``struct sockaddr_un`` on Linux: 108 bytes, the terminating NUL included, so
#: a socket path has at most 107 bytes. bind and connect refuse a longer one.
SUN_PATH_MAX: Final = 108
#: What a user can do about a path that is too long, in every message that says so.
_SHORTER = "choose a shorter one: HOOKD_HOME=DIR, --socket PATH or HOOKD_SOCKET (or [paths] socket in the config file)"


def socket_path_fits(path: Path) -> bool:
    """Whether ``path`` can be bound or connected to (AF_UNIX: under ``SUN_PATH_MAX`` bytes)."""
    return len(os.fsencode(path)) < SUN_PATH_MAX


def check_socket_path(path: Path, source: str | None = None) -> None:
    """Refuse a socket path too long for AF_UNIX, before anything binds, connects or waits.

    A usage error (exit 2): today's bind gives a traceback and a connect "AF_UNIX path too
    long", which ``hookd tail -f`` would wait out forever. Only the event socket's path is
    checked: when its control socket (``<socket>.ctl``, 4 bytes longer) alone does not fit,
    the daemon runs without one and logs so, and the CLI asks on the event socket.
    """
    size = len(os.fsencode(path))
    if size >= SUN_PATH_MAX:
        where = f" (from {source})" if source else ""
        raise ConfigError(
            f"socket path {path}{where} is {size} bytes, over the limit for Unix sockets "
            f"({SUN_PATH_MAX - 1} bytes; {SUN_PATH_MAX} with the terminating NUL); {_SHORTER}"
        )


def xdg_dir(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var, "")
    # The XDG spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or os.path.expanduser("~")) / fallback


def default_runtime_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_RUNTIME_DIR/hookd``, else a private per-user directory under /tmp."""
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "hookd"
    return Path(f"/tmp/hookd-{os.getuid()}")


@dataclass(frozen=True)
class PathRule:
    """How one path is chosen: its own variable, its name under HOOKD_HOME, its default."""

    env: str
    in_home: str
    default: Callable[[Mapping[str, str]], Path]
    #: The default as ``hookd --help`` shows it.
    shown: str


#: Every path of ``Paths``, by attribute, in the order help and ``hookd config`` list them.
PATH_RULES: Final[dict[str, PathRule]] = {
    "socket": PathRule(
        "HOOKD_SOCKET",
        "hookd.sock",
        lambda env: default_runtime_dir(env) / "hookd.sock",
        "$XDG_RUNTIME_DIR/hookd/hookd.sock (or /tmp/hookd-$UID/hookd.sock)",
    ),
    "db": PathRule(
        "HOOKD_DB",
        "events.db",
        lambda env: xdg_dir(env, "XDG_DATA_HOME", ".local/share") / "hookd/events.db",
        "$XDG_DATA_HOME/hookd/events.db",
    ),
    "mirror_dir": PathRule(
        "HOOKD_MIRROR_DIR",
        "mirror",
        lambda env: xdg_dir(env, "XDG_STATE_HOME", ".local/state") / "hookd/mirror",
        "$XDG_STATE_HOME/hookd/mirror/",
    ),
    "spool_dir": PathRule(
        "HOOKD_SPOOL_DIR",
        "spool",
        lambda env: xdg_dir(env, "XDG_STATE_HOME", ".local/state") / "hookd/spool",
        "$XDG_STATE_HOME/hookd/spool/",
    ),
}


def choose(
    attr: str, env: Mapping[str, str], *, flag: str | Path | None = None, file: Path | None = None
) -> tuple[Path, str]:
    """One path by the precedence rule, and which step gave it: ``"flag"``, ``"env"`` (its own
    variable), ``"home"`` (HOOKD_HOME), ``"file"`` or ``"default"``. Empty values do not count."""
    rule = PATH_RULES[attr]
    if flag:
        return Path(flag).expanduser().absolute(), "flag"
    if env.get(rule.env, ""):
        return Path(env[rule.env]).expanduser().absolute(), "env"
    if env.get("HOOKD_HOME", ""):
        return Path(env["HOOKD_HOME"]).expanduser().absolute() / rule.in_home, "home"
    if file is not None:
        return file, "file"
    return rule.default(env), "default"


def resolve(
    env: Mapping[str, str] | None = None,
    *,
    socket: str | None = None,
    db: str | None = None,
    mirror_dir: str | None = None,
    spool_dir: str | None = None,
) -> Paths:
    """Every path from flags (the keyword arguments) and the environment; no configuration file."""
    env = os.environ if env is None else env
    flags = {"socket": socket, "db": db, "mirror_dir": mirror_dir, "spool_dir": spool_dir}
    return Paths(**{attr: choose(attr, env, flag=flags[attr])[0] for attr in PATH_RULES})


def daemon_running(paths: Paths) -> bool:
    """Whether a daemon holds the lock beside ``paths.socket`` (see daemon/listener.py)."""
    try:
        fd = os.open(paths.lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) mode 0700; refuse an existing one owned by someone else.

    Existing directories we own are left with their mode, except that group/other write bits
    on the socket's own directory are an error (see ``check_socket_dir``).
    """
    old = os.umask(0o077)  # missing parents are created 0700 too, as the XDG spec asks
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create directory {path}: {e.strerror}") from None
    finally:
        os.umask(old)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} exists and is not a directory")
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
            "choose another path with HOOKD_HOME or the matching flag"
        )
    return path


def check_socket_dir(path: Path) -> None:
    """The socket's directory must be ours and closed to others, or anyone could swap the socket."""
    private_dir(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o022:
        raise SocketPathError(
            f"socket directory {path} is writable by others (mode {mode:o}); "
            f"run `chmod 700 {path}` or choose another path"
        )
