"""hookd_client: send events to hookd from any Python hook or program.

One file, standard library only: copy it next to a hook if you like.

    from hookd_client import emit
    emit("tool", tool_name="Read", session="s1")           # fire-and-forget
    emit("tool", {"tool_name": "Read"})
    eid = emit("session_outcome", outcome="ok", wait=True)  # returns once committed

Fire-and-forget (the default) connects to the daemon's Unix socket without blocking, sends one
JSON line and returns, in microseconds. It never raises into the hook. When the daemon cannot
take the event at once (socket missing, connection refused, listen queue full) the event is
written to the spool directory instead, and the daemon picks it up when it runs.

``wait=True`` (or a number of seconds) asks the daemon to acknowledge: ``emit`` returns the
event's ``eid`` once it is committed to SQLite and written to the mirror (an int; its
``truncated`` lists what the daemon cut from an event over its line limit), and raises
``DaemonUnavailable`` or ``EventRejected`` (both ``HookdClientError``) otherwise. It does not
spool.

The spool is capped (``HOOKD_SPOOL_MAX``, 256 MiB by default): past the cap an event is dropped,
``emit`` returns False, and the drop is counted in the spool directory, where the daemon reads
it and ``hookd status`` reports it. Checking the cap costs one ``stat`` of the spool's ``usage``
file, never a listing of the directory.

Paths, like the daemon's: the socket is ``HOOKD_SOCKET``, else ``$HOOKD_HOME/hookd.sock``, else
``$XDG_RUNTIME_DIR/hookd/hookd.sock``, else ``/tmp/hookd-$UID/hookd.sock``; the spool is
``HOOKD_SPOOL_DIR``, else ``$HOOKD_HOME/spool``, else ``$XDG_STATE_HOME/hookd/spool``
(``~/.local/state/hookd/spool``).
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import json
import os
import re
import socket
import time
from typing import Any

__all__ = [
    "emit",
    "socket_path",
    "spool_dir",
    "dropped",
    "spooled",
    "Committed",
    "spool_max",
    "HookdClientError",
    "DaemonUnavailable",
    "EventRejected",
]

#: How long ``wait=True`` waits for the acknowledgement, in seconds.
DEFAULT_WAIT = 5.0
# A send that cannot finish at once (a very large event) may wait this long before spooling.
_SEND_TIMEOUT = 1.0
#: The spool's cap when ``HOOKD_SPOOL_MAX`` is unset or not understood, in bytes.
DEFAULT_SPOOL_MAX = 256 << 20
# One byte of the spool's ``usage`` file stands for this many bytes of spool (a disk block).
_USAGE_UNIT = 4096
# Tries at the drop counter's lock before counting in the lock-free log instead.
_LOCK_TRIES = 8
_SIZE = re.compile(r"(\d+)(?:([kmg])(?:i?b)?|b)?", re.IGNORECASE)

_dropped = 0
_spooled = 0
_counter = itertools.count()
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str).encode


class Committed(int):
    """What ``emit(..., wait=True)`` returns: the committed event's eid (an int), and what the
    daemon said about it. ``truncated``: the values the daemon cut to fit its line limit, as
    ``[{"path": "$.tool_response.stdout", "length": 2097152}, ...]`` (JSON paths, original
    lengths in characters; also in the event's ``_hookd_truncated`` key), empty when none
    was. ``duplicate``: an event with the same ``id`` was stored already, and this is its eid.
    """

    truncated: list[dict[str, Any]]
    duplicate: bool


class HookdClientError(Exception):
    """Base of the errors ``emit(..., wait=True)`` raises."""


class DaemonUnavailable(HookdClientError):
    """The daemon could not be reached or did not answer in time."""


class EventRejected(HookdClientError):
    """The daemon refused the event. ``reason`` is a code from docs/protocol.md."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"hookd rejected the event: {reason}: {detail}")
        self.reason = reason
        self.detail = detail


def socket_path() -> str:
    """The daemon's socket path, from the environment (see the module docs)."""
    env = os.environ
    path = env.get("HOOKD_SOCKET")
    if path:
        return os.path.expanduser(path)
    home = env.get("HOOKD_HOME")
    if home:
        return os.path.join(os.path.expanduser(home), "hookd.sock")
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "hookd", "hookd.sock")
    return f"/tmp/hookd-{os.getuid()}/hookd.sock"


def spool_dir() -> str:
    """Where events wait while the daemon is down (see the module docs)."""
    env = os.environ
    path = env.get("HOOKD_SPOOL_DIR")
    if path:
        return os.path.expanduser(path)
    home = env.get("HOOKD_HOME")
    if home:
        return os.path.join(os.path.expanduser(home), "spool")
    state = env.get("XDG_STATE_HOME")
    if not (state and os.path.isabs(state)):
        state = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "hookd", "spool")


def dropped() -> int:
    """Events this process could neither hand to the daemon nor spool: the spool was full
    (these are also counted in the spool directory, for ``hookd status``) or not writable."""
    return _dropped


def spooled() -> int:
    """Events this process wrote to the spool because the daemon could not take them."""
    return _spooled


def _line(type: str, data: dict[str, Any] | None, fields: dict[str, Any]) -> bytes:
    event: dict[str, Any] = {"type": type}
    if data:
        event.update(data)
    if fields:
        event.update(fields)
    event["type"] = type  # the argument wins over a `type` key in data
    try:
        text = _dumps(event)
    except ValueError:  # NaN or Infinity: not JSON; send null, as JavaScript's JSON.stringify does
        text = _dumps(_finite(event))
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates are not UTF-8. Most come from undecodable bytes (os.fsdecode of a
        # file name): restore those bytes, then replace what is still not UTF-8 with U+FFFD,
        # rather than lose the event.
        try:
            raw = (text + "\n").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = (text + "\n").encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace").encode("utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def spool_max() -> int | None:
    """The spool's cap in bytes from ``HOOKD_SPOOL_MAX`` (None: ``unlimited``). It takes a
    number of bytes, optionally with K, M or G (KiB, MiB, GiB: powers of 1024), e.g. ``64KiB``;
    a value it cannot read means the default, 256 MiB."""
    return _parse_max(os.environ.get("HOOKD_SPOOL_MAX", ""))


@functools.lru_cache(maxsize=8)
def _parse_max(text: str) -> int | None:
    if text.strip().lower() == "unlimited":
        return None
    m = _SIZE.fullmatch(text.strip())
    if not m:
        return DEFAULT_SPOOL_MAX
    return int(m.group(1)) << {None: 0, "k": 10, "m": 20, "g": 30}[m.group(2) and m.group(2).lower()]


def _full(directory: str, size: int) -> bool:
    """Whether ``size`` more bytes would take the spool past its cap: one stat of ``usage``."""
    cap = spool_max()
    if cap is None:
        return False
    try:
        used = os.stat(os.path.join(directory, "usage")).st_size * _USAGE_UNIT
    except OSError:
        used = 0
    return used + size > cap


def _charge(directory: str, units: int) -> None:
    """Add ``units`` to the spool's ``usage`` (appended: a shell client can do the same)."""
    if units <= 0:
        return
    try:
        fd = os.open(os.path.join(directory, "usage"), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"+" * units)
        finally:
            os.close(fd)
    except OSError:
        pass  # the event is spooled; the daemon measures the spool anew when it reads it


def _drop(directory: str) -> bool:
    """Past the cap: count the event where the daemon reads it (never silent), return False."""
    global _dropped
    _dropped += 1
    now = time.time_ns()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _count_drop(os.path.join(directory, "dropped"), now):
            _log_drop(os.path.join(directory, "dropped.log"), now)
    except Exception:
        pass
    return False


def _count_drop(path: str, now: int) -> bool:
    """Add one to ``dropped``: ``<count> <first_ns> <last_ns>`` rewritten in place under an
    exclusive flock, so the file never grows. False when the lock stays busy (or the record is
    unreadable): the caller counts in the log instead. The daemon takes the file by renaming
    it, as it takes ``append.spool``: an update then goes to the new file."""
    for _ in range(_LOCK_TRIES):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    continue  # taken by the daemon between our open and our lock
            except (BlockingIOError, FileNotFoundError):
                os.sched_yield()  # another client's update: microseconds
                continue
            fields = os.pread(fd, 128, 0).split()
            if not fields:
                count, first = 0, now
            elif len(fields) == 3 and all(f.isdigit() for f in fields):
                count, first = int(fields[0]), int(fields[1])
            else:
                return False
            os.pwrite(fd, b"%020d %020d %020d\n" % (count + 1, first, now), 0)
            return True
        finally:
            os.close(fd)
    return False


def _log_drop(path: str, now: int) -> None:
    """Count one drop in ``dropped.log``, which only grows by appends: ``<epoch s>.``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        for _ in range(_LOCK_TRIES):  # shared, like append.spool: the daemon waits for it
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except (BlockingIOError, FileNotFoundError):
                pass
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.write(fd, b"%d." % (now // 1_000_000_000))
    finally:
        os.close(fd)


def _spool(payload: bytes) -> bool:
    """Append one event to the shared spool file, as one ``<time_ns>\\t<json>`` record.

    One O_APPEND write of a whole record, under a shared flock taken without waiting. The
    daemon takes the file over by renaming it and then locking it exclusively: a record is
    therefore never written into a file the daemon has read. If the file is being taken over
    (locked, or renamed under us), append to the new one. See the daemon's spool.py.
    """
    global _spooled
    try:
        directory = spool_dir()
        path = os.path.join(directory, "append.spool")
        record = b"%d\t" % time.time_ns() + payload
        if _full(directory, len(record)):
            return _drop(directory)
        for _ in range(8):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    if os.fstat(fd).st_ino != os.stat(path).st_ino:
                        continue  # renamed by the daemon between our open and our lock
                except (BlockingIOError, FileNotFoundError):
                    continue  # the daemon is taking this file over
                view = memoryview(record)
                while view:
                    view = view[os.write(fd, view) :]
                # O_APPEND left the offset at the end of our record: charge the 4 KiB
                # boundaries it crossed, so the charges add up to the file's size.
                end = os.lseek(fd, 0, os.SEEK_CUR)
                _charge(directory, end // _USAGE_UNIT - (end - len(record)) // _USAGE_UNIT)
                _spooled += 1
                return True
            finally:
                os.close(fd)
    except Exception:
        pass
    return _spool_file(payload)


def _spool_file(payload: bytes) -> bool:
    """Fallback: the event in a file of its own (a temporary name, then an atomic rename)."""
    global _spooled, _dropped
    try:
        directory = spool_dir()
        name = f"{time.time_ns()}-{os.getpid()}-{next(_counter)}{os.urandom(3).hex()}.jsonl"
        tmp = os.path.join(directory, "." + name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(directory, name))
        _charge(directory, -(-len(payload) // _USAGE_UNIT))
        _spooled += 1
        return True
    except Exception:
        _dropped += 1
        return False


def emit(type: str, data: dict[str, Any] | None = None, /, *, wait: bool | float = False, **fields: Any) -> Any:
    """Send one event of ``type``; ``data`` and keyword ``fields`` become its JSON object.

    Fire-and-forget (default): returns True once the event is handed to the daemon or spooled,
    False if it was dropped: the spool was full (``HOOKD_SPOOL_MAX``; the drop is counted for
    ``hookd status``) or could not be written. Never raises.

    ``wait=True`` or ``wait=SECONDS``: returns the event's eid (an int: a ``Committed``,
    whose ``truncated`` lists the values the daemon cut to fit its line limit) once it is
    committed; raises DaemonUnavailable or EventRejected (``reason`` ``too_long`` for an event
    too large even to be cut).
    """
    if wait:
        return _emit_and_wait(_line(type, data, fields), DEFAULT_WAIT if wait is True else float(wait))
    global _dropped
    try:
        payload = _line(type, data, fields)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except Exception:
        _dropped += 1
        return False
    try:
        s.setblocking(False)
        s.connect(socket_path())
        sent = s.send(payload)
        if sent < len(payload):
            # Larger than the socket buffer: finish it, but never wait long.
            s.settimeout(_SEND_TIMEOUT)
            s.sendall(memoryview(payload)[sent:])
        return True
    except Exception:
        # Nothing of a partly sent line is stored (the daemon rejects a cut line), so the
        # spooled copy is the only one.
        return _spool(payload)
    finally:
        s.close()


def _emit_and_wait(payload: bytes, timeout: float) -> Committed:
    path = socket_path()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"?" + payload)
            s.shutdown(socket.SHUT_WR)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise DaemonUnavailable(f"no hookd listening at {path} ({e.strerror}); start it with `hookd run`") from None
    except TimeoutError:
        raise DaemonUnavailable(f"hookd at {path} did not acknowledge within {timeout:g} s") from None
    except OSError as e:
        raise DaemonUnavailable(f"cannot talk to hookd at {path}: {e}") from None
    if not buf:
        raise DaemonUnavailable(f"hookd at {path} closed the connection without an answer")
    try:
        reply = json.loads(buf)
    except ValueError:
        raise DaemonUnavailable(f"hookd at {path} sent an unreadable answer: {buf[:200]!r}") from None
    if reply.get("ok"):
        committed = Committed(int(reply["eid"]))
        committed.truncated = list(reply.get("truncated") or [])
        committed.duplicate = bool(reply.get("duplicate"))
        return committed
    raise EventRejected(str(reply.get("reason")), str(reply.get("detail", "")))
