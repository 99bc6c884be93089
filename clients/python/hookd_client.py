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

Paths, like the daemon's: the socket is ``HOOKD_SOCKET``, else ``$HOOKD_HOME/hookd.sock``, else
``$XDG_RUNTIME_DIR/hookd/hookd.sock``, else ``/tmp/hookd-$UID/hookd.sock``; the spool is
``HOOKD_SPOOL_DIR``, else ``$HOOKD_HOME/spool``, else ``$XDG_STATE_HOME/hookd/spool``
(``~/.local/state/hookd/spool``).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
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
    "HookdClientError",
    "DaemonUnavailable",
    "EventRejected",
]

#: How long ``wait=True`` waits for the acknowledgement, in seconds.
DEFAULT_WAIT = 5.0
# A send that cannot finish at once (a very large event) may wait this long before spooling.
_SEND_TIMEOUT = 1.0

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
    """Events this process could neither hand to the daemon nor spool."""
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


def _spool(payload: bytes) -> bool:
    """Append one event to the shared spool file, as one ``<time_ns>\\t<json>`` record.

    One O_APPEND write of a whole record, under a shared flock taken without waiting. The
    daemon takes the file over by renaming it and then locking it exclusively: a record is
    therefore never written into a file the daemon has read. If the file is being taken over
    (locked, or renamed under us), append to the new one. See the daemon's spool.py.
    """
    global _spooled, _dropped
    try:
        directory = spool_dir()
        path = os.path.join(directory, "append.spool")
        record = b"%d\t" % time.time_ns() + payload
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
        _spooled += 1
        return True
    except Exception:
        _dropped += 1
        return False


def emit(type: str, data: dict[str, Any] | None = None, /, *, wait: bool | float = False, **fields: Any) -> Any:
    """Send one event of ``type``; ``data`` and keyword ``fields`` become its JSON object.

    Fire-and-forget (default): returns True once the event is handed to the daemon or spooled,
    False only if even the spool could not be written. Never raises.

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
