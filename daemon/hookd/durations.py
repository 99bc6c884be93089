"""The duration buckets of the Tools summaries (schema migration 8): fixed and log-spaced.

Shared by the writer, which counts tool calls' durations into them (``tool_hours.durations``),
and the dashboard, which reads percentiles from them.
"""

from __future__ import annotations

from typing import Final

#: Buckets per doubling of the duration: a bucket spans a factor 2^(1/4), about 19%.
BUCKETS_PER_DOUBLING: Final = 4
#: Bucket 0 holds durations under 1 ms; bucket k >= 1 holds [2^((k-1)/4), 2^(k/4)) ms; the
#: last one everything from 2^((BUCKETS - 2) / 4) ms (2^32 ms, about 50 days) up.
BUCKETS: Final = 130


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """The durations (ms) ``bucket`` holds: ``[lo, hi)`` (``hi`` infinite for the last one)."""
    if bucket <= 0:
        return 0.0, 1.0
    hi = 2 ** (bucket / BUCKETS_PER_DOUBLING) if bucket < BUCKETS - 1 else float("inf")
    return 2 ** ((bucket - 1) / BUCKETS_PER_DOUBLING), hi
