"""Over-long lines: an event over ``max_line`` is stored with its longest strings cut to fit.

A Claude Code PostToolUse can carry megabytes of ``tool_response``; rejecting the whole line
would lose the tool call (``tool_calls`` could not pair it). So a line over ``max_line`` but
not over the cutting limit (``ingest.truncate_limit``) is read whole and decoded, its longest
string values are cut to one common length (the longest first, none below ``MIN_KEEP``
characters), and a ``_hookd_truncated`` key says what was cut:

    "_hookd_truncated": {"size": 2097312, "limit": 1048576,
                         "values": [{"path": "$.tool_response.stdout", "length": 2097152}]}

``size`` is the line's original length in bytes, ``limit`` the ``max_line`` it was cut to,
``values`` the JSON paths (SQLite's syntax, for ``json_extract``) and original lengths in
characters of the values cut, longest first, at most ``MAX_LISTED`` of them (``unlisted``
counts the rest). The envelope keys and the keys that join events (``KEEP``) are never cut.

What cannot be cut this way stays a ``too_long`` rejection, with the reason in its detail: not
a JSON object, no type, still too long with every string cut, over the cutting limit, or over
the daemon's memory ``Budget`` for such lines.

Pure functions and small classes, no sockets: ``framing.LineSplitter`` calls ``fit`` when an
over-long line is complete, so only such lines pay for any of this.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

#: A string value is never cut below this many characters (nor is a shorter one touched).
MIN_KEEP: Final = 32
#: Objects and arrays smaller than this (bytes) are kept whole: their strings are short.
DESCEND: Final = 256
#: Values looked at in Python at most, over the whole line, and items an object or array may
#: hold to be looked into: bounds the time and memory cutting takes whatever the line's shape
#: (a million small numbers, say). About 50 ms of the event loop's time on the development
#: machine (docs/protocol.md).
MAX_VALUES: Final = 50_000
#: Values listed in ``_hookd_truncated`` at most (the longest); the rest are only counted.
MAX_LISTED: Final = 100
#: The key added to a cut event.
MARK: Final = "_hookd_truncated"
#: The default cutting limit is this many times ``max_line`` (16 MiB for the default 1 MiB).
CUT_FACTOR: Final = 16
#: The daemon holds at most this many cutting limits' worth of over-long lines at once.
BUDGET_FACTOR: Final = 4
#: Top-level keys never cut: the envelope, and what views join events on (``tool_calls``).
KEEP: Final = frozenset(
    ("type", "hook_event_name", "event", "ts", "session", "session_id", "id", "tool_use_id", "tool_name", "agent_id")
)
_TYPE_KEYS: Final = ("type", "hook_event_name", "event")
#: Bytes of a line kept as its preview (the ``rejected`` table keeps as many).
HEAD: Final = 256
_ATTEMPTS: Final = 6
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_decode = msgspec.json.decode
_decode_object = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
#: The first byte of an object, of an array (what to decode them into, one level deep), of a string.
_CONTAINER: Final = {ord("{"): dict[str, msgspec.Raw], ord("["): list[msgspec.Raw]}
_QUOTE: Final = ord('"')
_OPEN_ARRAY: Final = ord("[")
#: Items of an array with many commas that are still looked at (see ``_children``).
FEW: Final = 256
# An array's first FEW + 1 items: msgspec skips (validates, makes nothing for) further ones.
_Few = msgspec.defstruct("_Few", [(f"i{n}", msgspec.Raw, msgspec.Raw()) for n in range(FEW + 1)], array_like=True)
_decode_few = msgspec.json.Decoder(_Few).decode
_encode = msgspec.json.Encoder().encode


class Cut(bytes):
    """An over-long line cut to fit: the bytes are the new line (with its ``?`` if it had one)."""

    size: int  # the event's length in bytes before it was cut (without a ``?`` or a stamp)
    values: list[dict[str, Any]]  # what was cut, as listed in ``_hookd_truncated``

    def ack_extra(self) -> bytes:
        """What an acknowledgement adds for this event: ``,"truncated":[...]``."""
        return b',"truncated":' + _encode(self.values)


class TooLong(bytes):
    """An over-long line that is not stored: the bytes are its head (``?`` included), for the
    preview and to know whether its sender waits for an answer."""

    size: int
    detail: str


def cut(line: bytes, size: int, values: list[dict[str, Any]]) -> Cut:
    c = Cut(line)
    c.size = size
    c.values = values
    return c


def too_long(head: bytes, size: int, detail: str) -> TooLong:
    t = TooLong(head[:HEAD])
    t.size = size
    t.detail = detail
    return t


def limits(size: int, max_line: int) -> str:
    return f"{size} bytes, limit {max_line}"


class Budget:
    """Bytes of over-long lines the daemon holds whole at once, over all its connections.

    A connection reading such a line takes from it as the line grows and gives back when the
    line is complete (and cut) or abandoned; a line that finds the budget spent is skipped and
    rejected as before. So many clients sending huge lines at once cannot exhaust memory.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


def fit(line: bytes | bytearray, max_line: int, *, stamped: bool = False) -> bytes:
    """A complete line over ``max_line``: returns the line to frame instead, a ``Cut``, or a
    ``TooLong`` saying why it cannot be cut. Raises nothing for any input bytes (an invalid
    part kept as sent is found by the framing that follows, as for any line).

    A leading ``?`` (an acknowledgement asked for) or, with ``stamped``, a ``<time_ns>\\t``
    (a record of ``append.spool``) is kept in front and not counted against ``max_line``.
    Blocking work, bounded: C-speed scans of the line, about ``MAX_VALUES`` values looked at
    in Python, and only the strings that are cut are decoded. Callers bound the line's size
    (the cutting limit) before calling.
    """
    size = len(line)
    skip = _prefix(line, stamped)
    head = bytes(line[:HEAD])
    if size - skip <= max_line:
        return bytes(line)  # only the prefix made it long: the event itself fits
    where = limits(size - skip, max_line)
    with memoryview(line) as view:
        body = view[skip:]
        commas = line.count(b",")
        if _too_many_keys(line, commas):
            return too_long(head, size, f"line too long, and too many values (over {MAX_VALUES}) to cut ({where})")
        try:
            root = _decode_object(body)
        except msgspec.ValidationError:
            return too_long(head, size, f"line too long and not a JSON object, so not cut ({where})")
        except (msgspec.DecodeError, RecursionError) as e:
            return too_long(head, size, f"line too long and not valid JSON, so not cut ({where}): {e}")
        why = _uncuttable(root)
        if why:
            return too_long(head, size, f"line too long and {why}, so not cut ({where})")
        try:
            out = _cut_to_fit(root, commas >= MAX_VALUES, size - skip, max_line)
        except (msgspec.DecodeError, RecursionError) as e:  # found in a part decoded only now
            return too_long(head, size, f"line too long and not valid JSON, so not cut ({where}): {e}")
        finally:
            del body, root  # the Raw values point into ``line``: let go of them before the view
    if out is None:
        detail = f"line too long, and cutting its long string values does not make it fit ({where})"
        return too_long(head, size, detail)
    new, values = out
    return cut(bytes(line[:skip]) + new if skip else new, size - skip, values)


def _prefix(line: bytes | bytearray, stamped: bool) -> int:
    """Bytes in front of the JSON: a ``?``, or a spool record's ``<time_ns>\\t``."""
    if stamped:
        tab = line.find(b"\t", 0, 24)
        if tab > 0 and line[:tab].isdigit():
            return tab + 1
    return 1 if line[:1] == b"?" else 0


def _uncuttable(root: dict[str, msgspec.Raw]) -> str:
    """Why an object is not an event worth cutting ("" if it is)."""
    for key in _TYPE_KEYS:
        raw = root.get(key)
        if raw is not None and bytes(raw) != b"null":
            return "" if bytes(raw)[:1] == b'"' else f"its `{key}` is not a string"
    return "without a type"


def _cut_to_fit(
    root: dict[str, Any], crowded: bool, size: int, max_line: int
) -> tuple[bytes, list[dict[str, Any]]] | None:
    """Cut ``root``'s longest strings (in place) until it encodes within ``max_line``.

    One length ``level`` for all cut strings, the highest that frees enough (water-filling)
    over their encoded sizes, known exactly from the raw JSON; what decoding and encoding again
    changes (escapes) is then measured and, when still over, the level is lowered again.
    """
    strings = _strings(root, crowded)
    sizes = sorted((s[0] for s in strings), reverse=True)
    text: dict[int, str] = {}  # decoded once, cut again from the original on a retry
    excess = size - max_line + 256  # 256: a first guess at the _hookd_truncated key's size
    for _ in range(_ATTEMPTS):
        level = _level(sizes, excess)
        if level is None:
            return None
        done = []
        for i, (n, raw, node, key, parent) in enumerate(strings):
            if n > level:
                value = text.get(i)
                if value is None:
                    value = text[i] = _decode(raw)
                keep = level - 2 if n == len(value) + 2 else len(value) * (level - 2) // (n - 2)
                node[key] = value[:keep]
                done.append((len(value), parent, key))
        values = _listing(done)
        root[MARK] = mark = {"size": size, "limit": max_line, "values": values}
        if len(done) > MAX_LISTED:
            mark["unlisted"] = len(done) - MAX_LISTED
        new = _encode(root)
        if len(new) <= max_line:
            return new, values
        excess += len(new) - max_line + 64
    return None


def _strings(root: dict[str, Any], crowded: bool) -> list[tuple[int, msgspec.Raw, Any, Any, tuple | None]]:
    """The string values that may be cut: (encoded size, raw JSON, container, key, parent path).

    Values stay raw JSON (``msgspec.Raw``, pointing into the line) unless they are objects or
    arrays of at least ``DESCEND`` bytes, which are decoded one level more: a small value is
    copied back unchanged, byte for byte, and never costs a Python object per item. About
    ``MAX_VALUES`` values are looked at, at most; when the line has that many commas
    (``crowded``) a container is first checked not to hold more items (``_children``).
    A path is a chain of ``(parent, key)`` tuples, turned into text only for the values cut.
    """
    out = []
    seen = 0
    stack: list[tuple[Any, tuple | None]] = [(root, None)]
    while stack and seen < MAX_VALUES:
        node, path = stack.pop()
        seen += len(node)
        for key, raw in node.items() if type(node) is dict else enumerate(node):
            n = len(raw)
            if n <= MIN_KEEP + 2:
                continue
            with memoryview(raw) as view:
                first = view[0]
            if first == _QUOTE:
                if not (path is None and key in KEEP):
                    out.append((n, raw, node, key, path))
            elif n >= DESCEND and first in _CONTAINER:
                child = _children(raw, first, crowded)
                if child is not None:
                    node[key] = child
                    stack.append((child, (path, key)))
    return out


def _children(raw: msgspec.Raw, first: int, crowded: bool) -> dict[str, msgspec.Raw] | list[msgspec.Raw] | None:
    """An object or array decoded one level deep, or None to keep it whole: when it may hold
    more than ``MAX_VALUES`` items (counted as commas, and for an object also as the quotes
    its keys need: upper bounds, in C). An array with many commas (a long CSV text inside,
    say) is looked into when it has at most ``FEW`` items, found by a scan that makes no
    object for further items."""
    if crowded:
        data = bytes(raw)
        if first == _OPEN_ARRAY:
            if data.count(b",") >= MAX_VALUES:
                items = msgspec.structs.astuple(_decode_few(data))
                return None if len(items[FEW]) else [i for i in items if len(i)]
        elif _too_many_keys(data, data.count(b",")):
            return None
    return _decode(raw, type=_CONTAINER[first])


def _too_many_keys(data: bytes | bytearray, commas: int) -> bool:
    """Whether an object may have ``MAX_VALUES`` keys: it has as many ``commas``, and as many
    pairs of quotes that are not escaped (both upper bounds, counted in C)."""
    if commas < MAX_VALUES:
        return False
    return (data.count(b'"') - data.count(b'\\"')) // 2 >= MAX_VALUES


def _level(sizes: list[int], excess: int) -> int | None:
    """The highest encoded size that, given to every string longer (``sizes``, longest
    first), frees ``excess`` bytes; None if not even ``MIN_KEEP`` characters do."""
    floor = MIN_KEEP + 2  # the quotes count in an encoded size
    total = 0
    for k, n in enumerate(sizes, 1):
        total += n
        below = max(sizes[k] if k < len(sizes) else floor, floor)
        if total - k * below >= excess:
            return (total - excess) // k
    return None


def _listing(done: list[tuple[int, tuple | None, Any]]) -> list[dict[str, Any]]:
    done.sort(key=lambda d: d[0], reverse=True)
    return [{"path": json_path(parent, key), "length": n} for n, parent, key in done[:MAX_LISTED]]


def json_path(parent: tuple | None, key: Any) -> str:
    """``$.a.b[3]``, with keys that are not plain names quoted (``$."a b"``), as SQLite reads it."""
    parts = []
    node: tuple | None = (parent, key)
    while node is not None:
        node, k = node
        if type(k) is int:
            parts.append(f"[{k}]")
        elif _PLAIN_KEY.match(k):
            parts.append(f".{k}")
        else:
            parts.append("." + _encode(k).decode())
    return "$" + "".join(reversed(parts))
