"""hookd_client: send events to hookd from any Python hook or program.

One file, standard library only: copy it next to a hook if you like.

    from hookd_client import emit
    emit("tool", tool_name="Read", session="s1")
    emit("tool", {"tool_name": "Read"})

``emit`` is fire-and-forget: it connects to the daemon's Unix socket without blocking, sends
one JSON line and returns, in microseconds. It never raises into the hook. When the daemon
cannot take the event (socket missing, connection refused, listen queue full) the event is
dropped, counted in ``dropped()``, and ``emit`` returns False.

The socket is found like the daemon finds it: ``HOOKD_SOCKET``, else ``$HOOKD_HOME/hookd.sock``,
else ``$XDG_RUNTIME_DIR/hookd/hookd.sock``, else ``/tmp/hookd-$UID/hookd.sock``.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

__all__ = ["emit", "socket_path", "dropped"]

_dropped = 0
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
# A send that cannot finish at once (a very large event) may wait this long before giving up.
_SEND_TIMEOUT = 1.0


def socket_path() -> str:
    """The daemon's socket path, from the environment (see the module docs)."""
    env = os.environ
    path = env.get("HOOKD_SOCKET")
    if path:
        return path
    home = env.get("HOOKD_HOME")
    if home:
        return os.path.join(home, "hookd.sock")
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "hookd", "hookd.sock")
    return f"/tmp/hookd-{os.getuid()}/hookd.sock"


def dropped() -> int:
    """Events this process could not hand to the daemon."""
    return _dropped


def _line(type: str, data: dict[str, Any] | None, fields: dict[str, Any]) -> bytes:
    event: dict[str, Any] = {"type": type}
    if data:
        event.update(data)
    if fields:
        event.update(fields)
    event["type"] = type  # the argument wins over a `type` key in data
    return (_dumps(event) + "\n").encode("utf-8", "surrogatepass")


def emit(type: str, data: dict[str, Any] | None = None, /, **fields: Any) -> bool:
    """Send one event of ``type``; ``data`` and keyword ``fields`` become its JSON object.

    Returns True once the whole line is handed to the daemon's socket, False if the event was
    dropped. Never raises for a daemon that is down, busy or gone.
    """
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
        _dropped += 1
        return False
    finally:
        s.close()
