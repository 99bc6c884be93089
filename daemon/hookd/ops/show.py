"""How the operator commands show times and text on a terminal: one format for ``hookd status``,
``hookd tail`` and ``hookd query``, so that the same event looks the same in each."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

#: Control characters (C0, DEL, C1): shown escaped, so that one row or event stays one line
#: and a stored escape sequence cannot drive the reader's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def local_time(ts: float | None) -> str:
    """Epoch seconds as local time to the second, ``2026-11-30 00:23:09``; ``-`` for None."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ago(seconds: float) -> str:
    """``3d ago``, ``5m ago``, ``0s ago``; a negative age (a time in the future) is ``in 3d``."""
    future = seconds < 0
    seconds = abs(seconds)
    text = f"{seconds:.0f}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            text = f"{seconds / size:.0f}{unit}"
            break
    return f"in {text}" if future else f"{text} ago"


def one_line(text: str) -> str:
    """``text`` with newlines, tabs, CR and other control characters escaped (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def columns(ch: str) -> int:
    """How many terminal columns ``ch`` takes: 2 for wide (CJK, most emoji), 0 for combining."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` terminal columns, ending with ``…`` when something was cut."""
    if sum(columns(ch) for ch in text) <= width:
        return text
    kept, used = [], 0
    for ch in text:
        used += columns(ch)
        if used > width - 1:  # one column is the ellipsis'
            break
        kept.append(ch)
    return "".join(kept) + "…" if width > 0 else ""
