"""Bytes to events: line splitting, the envelope rules, event ids.

Pure functions and small classes, no sockets and no event loop, so that every rule here is
testable on its own. The server feeds bytes in; what comes out is a row ready for SQLite, a
line ready for the mirror, or a rejection with its reason.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Final, NamedTuple

import msgspec

#: A type must match this after normalization; it becomes part of a view name.
TYPE_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
#: Longest line accepted by default (bytes, without the newline).
DEFAULT_MAX_LINE: Final = 1 << 20
#: Bytes of a rejected line kept in the ``rejected`` table.
PREVIEW_BYTES: Final = 256


class Envelope(msgspec.Struct):
    """The keys hookd reads from an event; every other key is kept in ``data`` untouched.

    Wrong-typed values (``"ts": true``, ``"type": 3``) fail decoding and are rejected.
    """

    type: str | None = None
    hook_event_name: str | None = None
    event: str | None = None
    ts: int | float | str | None = None
    session: str | int | None = None
    session_id: str | int | None = None
    id: str | int | None = None


class MirrorLine(msgspec.Struct, omit_defaults=False):
    """One line of the JSONL mirror: the envelope hookd decided, and the client's object.

    Encoded here for live events; decoded again by recovery and ``hookd rebuild``.
    """

    eid: int
    type: str
    ts: float
    session: str | None
    id: str | None
    recv_ts: float
    pid: int | None
    uid: int | None
    data: msgspec.Raw

    def row(self) -> tuple:
        """The ``events`` row of this line, in the table's column order."""
        data = bytes(self.data).decode("utf-8")
        return (self.eid, self.type, self.ts, self.session, self.id, self.recv_ts, self.pid, self.uid, data)


class Peer(NamedTuple):
    """Credentials of the process at the other end of a connection (SO_PEERCRED)."""

    pid: int | None
    uid: int | None


NO_PEER: Final = Peer(None, None)


class Rejection(Exception):
    """A line hookd will not store, and why. ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


_CAMEL_1 = re.compile(r"(.)([A-Z][a-z]+)")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[\s\-./:]+")
_type_cache: dict[str, str | None] = {}
_TYPE_CACHE_MAX: Final = 4096


def normalize_type(raw: str) -> str | None:
    """``PostToolUse`` -> ``post_tool_use``; ``git-commit`` -> ``git_commit``.

    Returns None when the result is still not a valid type. Results are cached: hooks send a
    handful of distinct types, millions of times.
    """
    cached = _type_cache.get(raw, False)
    if cached is not False:
        return cached  # type: ignore[return-value]
    name = _SEPARATORS.sub("_", raw.strip())
    name = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", name)).lower()
    name = re.sub(r"_+", "_", name).strip("_")
    result = name if TYPE_RE.fullmatch(name) else None
    if len(_type_cache) < _TYPE_CACHE_MAX:
        _type_cache[raw] = result
    return result


def parse_ts(value: int | float | str, now: float) -> float:
    """Epoch seconds (int or float) or RFC 3339 text to epoch seconds.

    Text without an offset is read as local time (what ``datetime.now().isoformat()`` writes in
    old logs). Raises Rejection for anything else.
    """
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Rejection("bad_ts", f"not RFC 3339 text: {value[:64]!r}") from None
        return dt.timestamp()
    try:
        ts = float(value)
    except OverflowError:  # an integer with hundreds of digits
        raise Rejection("bad_ts", f"epoch seconds out of range: {str(value)[:40]}...") from None
    if not math.isfinite(ts) or ts < 0:
        raise Rejection("bad_ts", f"epoch seconds out of range: {value!r}")
    return ts if ts else now


class EidClock:
    """Time-ordered unique 63-bit event ids: milliseconds since the epoch << 20 | sequence.

    Ids only grow, within a run and across restarts (``floor`` is the largest stored id), even
    when the wall clock steps back; a burst of over a million events in one millisecond borrows
    from the next millisecond.
    """

    SHIFT: Final = 20

    def __init__(self, floor: int = 0) -> None:
        self._last = floor

    def next(self, now: float) -> int:
        eid = int(now * 1000) << self.SHIFT
        last = self._last
        if eid <= last:
            eid = last + 1
        self._last = eid
        return eid


#: A high surrogate escape (\ud800-\udbff) not followed by the low one it needs.
_LONE_HIGH_SURROGATE = re.compile(rb"\\[uU][dD][89abAB][0-9a-fA-F]{2}(?!\\[uU][dD][c-fC-F][0-9a-fA-F]{2})")


def _decode_detail(msg: str, line: bytes) -> str:
    """msgspec's error, corrected where it misleads: a high surrogate escape without its low
    half is reported as "truncated" although the line is whole."""
    if msg == "Input data was truncated" and _LONE_HIGH_SURROGATE.search(line):
        return "JSON is malformed: a \\u escape of a high surrogate (\\ud800-\\udbff) without its low half"
    return msg


class Framer:
    """Turns complete lines into rows for ``events`` and lines for the mirror.

    One instance per daemon: it holds the reused decoder and encoder and the eid clock.
    """

    def __init__(self, clock: EidClock | None = None, aliases: dict[str, str] | None = None) -> None:
        self.clock = clock or EidClock()
        #: Normalized type -> the type it is stored as (configuration ``[aliases]``); may be
        #: replaced while running (SIGHUP).
        self.aliases = aliases or {}
        self._decode = msgspec.json.Decoder(Envelope).decode
        self._encode = msgspec.json.Encoder().encode

    def frame(
        self, line: bytes, now: float, peer: Peer, force_type: str | None = None, default_id: str | None = None
    ) -> tuple[tuple, bytes] | None:
        """Validate one line (without its ``\\n``) and build ``(row, mirror_line)``.

        Blank lines are not events and give None. Raises Rejection with a reason code, and
        nothing else, for any other input bytes. ``force_type`` (already normalized) replaces
        the line's type and ``default_id`` is the id of a line without one (both for import).
        """
        line = line.strip()
        if not line:
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Rejection("invalid_utf8", str(e)) from None
        try:
            env = self._decode(line)
        except msgspec.ValidationError as e:
            msg = str(e)
            if msg.startswith("Expected `object`"):
                raise Rejection("not_object", msg) from None
            raise Rejection("bad_field", msg) from None
        except msgspec.DecodeError as e:
            raise Rejection("invalid_json", _decode_detail(str(e), line)) from None
        except RecursionError:
            raise Rejection("too_deep", "nesting too deep") from None

        if force_type is not None:
            etype = force_type
        else:
            raw_type = (
                env.type
                if env.type is not None
                else (env.hook_event_name if env.hook_event_name is not None else env.event)
            )
            if raw_type is None:
                raise Rejection("missing_type", "no `type`, `hook_event_name` or `event` key")
            etype = normalize_type(raw_type)  # type: ignore[assignment]
            if etype is None:
                raise Rejection("bad_type", f"{raw_type[:80]!r} does not normalize to [a-z][a-z0-9_]{{0,62}}")
            if self.aliases:
                etype = self.aliases.get(etype, etype)
        ts = now if env.ts is None else parse_ts(env.ts, now)
        session = env.session if env.session is not None else env.session_id
        if session is not None and not isinstance(session, str):
            session = str(session)
        cid = env.id
        if cid is None:
            cid = default_id
        elif not isinstance(cid, str):
            cid = str(cid)
        eid = self.clock.next(now)
        mirror = (
            self._encode(MirrorLine(eid, etype, ts, session, cid, now, peer.pid, peer.uid, msgspec.Raw(line))) + b"\n"
        )
        return (eid, etype, ts, session, cid, now, peer.pid, peer.uid, text), mirror


def preview(line: bytes, limit: int = PREVIEW_BYTES) -> str:
    """A bounded, printable excerpt of a rejected line for the ``rejected`` table."""
    cut = line[:limit]
    text = cut.decode("utf-8", errors="backslashreplace")
    return text + ("…" if len(line) > limit else "")


class LineSplitter:
    """Reassembles newline-delimited lines from arbitrary chunks, with a bounded buffer.

    ``feed`` returns complete lines. A line longer than ``max_line`` is skipped up to its next
    newline without being held in memory; once it has ended, ``(size, head)`` is appended to
    ``oversized`` for the caller to report and clear.
    """

    __slots__ = ("max_line", "_partial", "_skipping", "_skipped", "_skip_head", "oversized")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = bytearray()
        self._skipping = False
        self._skipped = 0
        self._skip_head = b""
        self.oversized: list[tuple[int, bytes]] = []

    def feed(self, data: bytes) -> list[bytes]:
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                self._skipped += len(data)
                return []
            self._end_skip(nl)
            data = data[nl + 1 :]
        partial = self._partial
        if partial:
            if b"\n" not in data:
                # A slow writer: grow the buffer in place (amortized), no quadratic copying.
                partial += data
                if len(partial) > self.max_line:
                    self._start_skip(bytes(partial[:PREVIEW_BYTES]), len(partial))
                    partial.clear()
                return []
            data = bytes(partial) + data
            partial.clear()
        lines = data.split(b"\n")
        tail = lines.pop()
        if len(data) > self.max_line:
            # Lines that arrived complete in one chunk can be too long as well.
            for i, line in enumerate(lines):
                if len(line) > self.max_line:
                    self.oversized.append((len(line), line[:PREVIEW_BYTES]))
                    lines[i] = b""
        if len(tail) > self.max_line:
            self._start_skip(tail[:PREVIEW_BYTES], len(tail))
        elif tail:
            partial += tail
        return lines

    def _start_skip(self, head: bytes, size: int) -> None:
        self._skipping = True
        self._skipped = size
        self._skip_head = head

    def _end_skip(self, extra: int) -> None:
        self.oversized.append((self._skipped + extra, self._skip_head))
        self._skipping = False
        self._skip_head = b""

    def finish(self) -> bytes | None:
        """At end of stream: the last line if it had no newline (it still counts)."""
        if self._skipping:
            self._end_skip(0)
        tail = bytes(self._partial)
        self._partial.clear()
        return tail or None

    @property
    def buffered(self) -> int:
        return len(self._partial)
