"""What each step of the per-event hot path costs, in the daemon process.

    .venv/bin/python bench/hotpath.py

Times every step of framing one realistic ~300 B line, in isolation, with the same objects the
daemon uses (one reused msgspec Decoder/Encoder, the eid clock, the type cache), and the whole
`Framer.frame` call; plus the per-event share of packing a 1000-event batch for the writer.
Reference: the whole per-event cost, so each step is also a share of it.
"""

from __future__ import annotations

import argparse
import time
import timeit

import msgspec

from common import Result, claude_event
from hookd import wire
from hookd.framing import NO_PEER, EidClock, Envelope, Framer, MirrorLine, normalize_type


def per_call_ns(fn, number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return best / number * 1e9


def measure(runs: int = 5, quick: bool = False) -> list[Result]:
    number = 20_000 if quick else 100_000
    line = claude_event(1, 3).rstrip(b"\n")
    decode = msgspec.json.Decoder(Envelope).decode
    encode = msgspec.json.Encoder().encode
    clock = EidClock()
    framer = Framer()
    now = time.time()
    env = decode(line)
    rows = [framer.frame(claude_event(1, i).rstrip(b"\n"), now, NO_PEER) for i in range(1000)]
    batch_rows = [row for row, _mirror_line in rows]  # type: ignore[misc]
    batch_mirror = [mirror_line for _row, mirror_line in rows]  # type: ignore[misc]
    steps = {
        "envelope decode (msgspec Struct)": lambda: decode(line),
        "UTF-8 check (bytes.decode)": lambda: line.decode("utf-8"),
        "type normalization (cached)": lambda: normalize_type(env.hook_event_name),
        "eid": lambda: clock.next(now),
        "mirror line encode (Raw)": lambda: encode(
            MirrorLine(1, "post_tool_use", now, "s", None, now, 1, 2, msgspec.Raw(line))
        ),
        "batch pack for the writer (per event)": lambda: wire.pack(wire.Batch(1, batch_rows, batch_mirror, [], [], [])),
    }
    whole = per_call_ns(lambda: framer.frame(line, now, NO_PEER), number)
    out = [Result("hot path", "Framer.frame, whole", whole / 1000, "µs/event", note="all steps together")]
    for name, fn in steps.items():
        ns = per_call_ns(fn, number if "pack" not in name else max(20, number // 1000))
        if "pack" in name:
            ns /= 1000
        out.append(
            Result("hot path", name, ns / 1000, "µs/event", "Framer.frame", whole / 1000, ns / whole, note="share")
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    for r in measure(quick=args.quick):
        share = f"  ({r.ratio:.0%} of frame)" if r.ratio is not None else ""
        print(f"{r.name:42s} {r.value:6.2f} {r.unit}{share}")


if __name__ == "__main__":
    main()
