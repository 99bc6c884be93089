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

from hookd import oversize

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

    ``feed`` returns complete lines. A line longer than ``max_line`` but not than
    ``cut_limit`` is held whole (taking from ``budget``, when given, as it grows) and comes out
    as an ``oversize.Cut`` (its values cut to fit) or, when it cannot be cut, an
    ``oversize.TooLong``. A longer line, or one that finds the budget spent, is skipped up to
    its next newline without being held in memory and becomes a ``TooLong`` once it has ended.

    With ``in_order`` a ``TooLong`` takes the line's place among the lines (a waiting sender
    is then answered in order); without, ``(size, head)`` is appended to ``oversized`` for the
    caller to report and clear, as ``hookd import`` does. ``marked`` counts the ``Cut`` and
    ``TooLong`` lines returned, for the caller to check (and reset): lines of a feed with none
    are all plain.
    """

    __slots__ = (
        "max_line",
        "cut_limit",
        "budget",
        "in_order",
        "stamped",
        "marked",
        "oversized",
        "_partial",
        "_held",
        "_skipping",
        "_skipped",
        "_skip_head",
        "_skip_why",
    )

    def __init__(
        self,
        max_line: int = DEFAULT_MAX_LINE,
        *,
        cut_limit: int | None = None,
        budget: oversize.Budget | None = None,
        in_order: bool = False,
        stamped: bool = False,
    ) -> None:
        self.max_line = max_line
        #: Longest line held whole to be cut to fit; not above ``max_line``: nothing is cut.
        self.cut_limit = oversize.CUT_FACTOR * max_line if cut_limit is None else cut_limit
        self.budget = budget
        self.in_order = in_order
        #: Lines are ``append.spool`` records, ``<time_ns>\t<json>``: cut the JSON only.
        self.stamped = stamped
        self.marked = 0
        self.oversized: list[tuple[int, bytes]] = []
        self._partial = bytearray()
        self._held = 0  # bytes of an over-long line held whole (taken from the budget)
        self._skipping = False
        self._skipped = 0
        self._skip_head = b""
        self._skip_why = ""

    def feed(self, data: bytes) -> list[bytes]:
        first: bytes | None = None
        if self._skipping or self._held:  # rare: in the middle of an over-long line
            first, rest = self._continue_long(data)
            if rest is None:
                return [] if first is None else [first]
            data = rest
        partial = self._partial
        if partial:
            if b"\n" not in data:
                # A slow writer: grow the buffer in place (amortized), no quadratic copying.
                partial += data
                if len(partial) > self.max_line:
                    self._grow_long()
                return [] if first is None else [first]
            data = bytes(partial) + data
            partial.clear()
        lines = data.split(b"\n")
        tail = lines.pop()
        if len(data) > self.max_line:
            # Lines that arrived complete in one chunk can be too long as well.
            for i, line in enumerate(lines):
                if len(line) > self.max_line:
                    lines[i] = self._whole(line)
        if len(tail) > self.max_line:
            partial += tail
            self._grow_long()
        elif tail:
            partial += tail
        if first is not None:
            lines.insert(0, first)
        return lines

    def _continue_long(self, data: bytes) -> tuple[bytes | None, bytes | None]:
        """Feed ``data`` to the over-long line in progress: (the line if it ended here, or
        None; what follows it, or None when the line took all of ``data``)."""
        nl = data.find(b"\n")
        if self._skipping:
            if nl < 0:
                self._skipped += len(data)
                return None, None
            return self._end_skip(nl), data[nl + 1 :]
        partial = self._partial
        if nl < 0:
            partial += data
            self._grow_long()
            return None, None
        partial += data[:nl]  # the end of the line: handled now, not held across reads
        return self._complete_long(), data[nl + 1 :]

    def _grow_long(self) -> None:
        """The unfinished line is over ``max_line``: hold it whole to cut it later, or skip it."""
        n = len(self._partial)
        why = ""
        if n > self.cut_limit:
            why = "cut_limit"
        elif self.budget is not None and not self.budget.take(n - self._held):
            why = "budget"
        if not why:
            self._held = n
            return
        head = bytes(self._partial[: oversize.HEAD])
        self._release()
        self._skipping, self._skipped, self._skip_head, self._skip_why = True, n, head, why

    def _complete_long(self) -> bytes:
        """The held line has ended: cut it (the budget is given back once it is cut)."""
        line = self._partial
        try:
            return self._whole(line)
        finally:
            self._release()

    def _release(self) -> None:
        if self.budget is not None:
            self.budget.give(self._held)
        self._held = 0
        self._partial = bytearray()  # drops the large buffer (clear() would keep it)

    def _whole(self, line: bytes | bytearray) -> bytes:
        """A complete line over ``max_line``: cut to fit, or rejected."""
        size = len(line)
        if size > self.cut_limit:
            return self._too_long(oversize.too_long(bytes(line[: oversize.HEAD]), size, self._why("cut_limit", size)))
        try:
            out = oversize.fit(line, self.max_line, stamped=self.stamped)
        except Exception as e:  # a bug in hookd must cost this line only, never its neighbours
            detail = f"line too long, and cutting it failed (a bug in hookd; please report it): {e!r}"[:300]
            out = oversize.too_long(bytes(line[: oversize.HEAD]), size, detail)
        if type(out) is oversize.TooLong:
            return self._too_long(out)
        if type(out) is oversize.Cut:
            self.marked += 1
        return out

    def _too_long(self, t: oversize.TooLong) -> bytes:
        if self.in_order:
            self.marked += 1
            return t
        self.oversized.append((t.size, bytes(t)))
        return b""

    def _why(self, why: str, size: int) -> str:
        limits = oversize.limits(size, self.max_line)
        if self.cut_limit <= self.max_line:
            return f"line too long ({limits})"
        if why == "budget":
            held = self.budget.limit if self.budget is not None else 0
            return (
                f"line too long ({limits}); not cut: other lines held the memory set aside for cutting ({held} bytes)"
            )
        return f"line too long ({limits}); lines over {self.cut_limit} bytes are not cut to fit"

    def _end_skip(self, extra: int) -> bytes | None:
        size = self._skipped + extra
        t = oversize.too_long(self._skip_head, size, self._why(self._skip_why, size))
        self._skipping = False
        self._skip_head = b""
        if self.in_order:
            self.marked += 1
            return t
        self.oversized.append((size, bytes(t)))
        return None

    def finish(self) -> bytes | None:
        """At end of stream: the last line if it had no newline (it still counts), or the
        over-long line it ended (with ``in_order``). Gives back what the line held."""
        if self._skipping:
            return self._end_skip(0)
        if self._held:
            return self._complete_long() or None
        tail = bytes(self._partial)
        self._partial.clear()
        return tail or None

    @property
    def buffered(self) -> int:
        return len(self._partial)
