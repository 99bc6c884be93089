"""Fuzz target for framing: bytes in any chunking through LineSplitter and Framer.

Runs briefly with the test suite; for a long run by hand:

    HYPOTHESIS_PROFILE=fuzz ./dev test tests/test_fuzz_framing.py     # 200,000 examples per test

Properties: nothing but Rejection ever comes out of framing; however a stream is chunked, the
same events (and the same rejections) come out; a valid event round-trips byte for byte.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookd.framing import NO_PEER, Framer, LineSplitter, Rejection

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("fuzz", max_examples=200_000, deadline=None, suppress_health_check=list(HealthCheck))
#: Applied per test here, so that loading it does not change other modules' settings.
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

MAX_LINE = 300

# Bytes that look like JSON events, broken in every way: fragments of valid events, structural
# characters, escapes, invalid UTF-8, NULs, BOMs, huge numbers, newlines.
fragments = st.sampled_from(
    [
        b'{"type":"a"}',
        b'{"type":"PostToolUse","ts":1700000000,"id":7}',
        b'{"hook_event_name":"Stop","session_id":"s"}',
        b"{",
        b"}",
        b"[",
        b"]",
        b'"',
        b":",
        b",",
        b"\\",
        b"\\u",
        b"\\ud800",
        b'"type"',
        b'"ts"',
        b"1e999",
        b"-0",
        b"1" * 30,
        b"NaN",
        b"null",
        b"true",
        b"\x00",
        b"\xff",
        b"\xc3",
        b"\xef\xbb\xbf",
        b"\n",
        b"\r\n",
        b" ",
        b"?",
    ]
)
streams = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.one_of(fragments, st.binary(max_size=8)), max_size=200).map(b"".join),
)


def outcomes(data: bytes, cuts: list[int], max_line: int = MAX_LINE) -> list[tuple[str, object]]:
    """Split ``data`` at ``cuts`` and frame every line: (kind, detail) per line, in order."""
    splitter = LineSplitter(max_line)
    framer = Framer()
    out: list[tuple[str, object]] = []

    def frame(lines: list[bytes]) -> None:
        for size, _head in splitter.oversized:
            out.append(("too_long", size))
        splitter.oversized.clear()
        for line in lines:
            try:
                result = framer.frame(line, 1.0, NO_PEER)
            except Rejection as r:
                assert r.reason and isinstance(r.detail, str)
                out.append(("rejected", r.reason))
                continue
            if result is not None:
                row, mirror = result
                assert json.loads(mirror)["data"] == json.loads(row[8])
                out.append(("event", row[8]))

    pos = 0
    for n in cuts:
        frame(splitter.feed(data[pos : pos + n]))
        pos += n
    frame(splitter.feed(data[pos:]))
    tail = splitter.finish()
    frame([tail] if tail is not None else [])
    return out


@PROFILE
@given(streams, st.lists(st.integers(min_value=1, max_value=97), max_size=100))
def test_any_chunking_gives_the_same_events_and_rejections(data: bytes, cuts: list[int]) -> None:
    whole = outcomes(data, [])
    chunked = outcomes(data, cuts)
    # Oversized lines are reported when they end; their order against neighbouring lines may
    # differ with chunking, so compare them apart from the rest.
    assert [o for o in chunked if o[0] != "too_long"] == [o for o in whole if o[0] != "too_long"]
    assert sorted(o for o in chunked if o[0] == "too_long") == sorted(o for o in whole if o[0] == "too_long")


@PROFILE
@given(
    st.dictionaries(
        st.text(max_size=12),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
            max_leaves=30,
        ),
        max_size=8,
    )
)
def test_valid_events_round_trip_byte_for_byte(obj: dict) -> None:
    obj = {k: v for k, v in obj.items() if k not in ("type", "hook_event_name", "event", "ts", "session", "id")}
    obj.pop("session_id", None)
    obj["type"] = "fuzz"
    line = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return  # a lone surrogate in generated text is not UTF-8: not a valid event
    (event,) = outcomes(line + b"\n", [], max_line=1 << 20)
    assert event == ("event", line.decode())
