"""Bounds on what the daemon spends: open files (one per connection) and log lines.

Both exist because of floods: thousands of hooks at once need thousands of descriptors, and a
misconfigured client that connects a thousand times a second must not write a thousand log
lines a second.
"""

from __future__ import annotations

import logging
import resource
import time

log = logging.getLogger("hookd.server")


class LogThrottle:
    """At most one log line per key per ``interval``; lines in between are counted instead and
    the count is reported with the next one. Bounded: at most ``max_keys`` keys are kept."""

    def __init__(self, interval: float = 60.0, max_keys: int = 1024) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._seen: dict[object, list[float]] = {}  # key -> [last logged (monotonic), suppressed]

    def __call__(self, key: object, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return
        if entry is not None and entry[1]:
            msg += f" (and {int(entry[1])} more like it in the last {now - entry[0]:.0f} s)"
        if entry is None and len(self._seen) >= self.max_keys:
            self._seen.clear()
        self._seen[key] = [now, 0]
        log.log(level, msg, *args)


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now in force.

    Each connection holds a descriptor; the usual soft limit (1024) would cap the daemon at
    about a thousand simultaneous hooks, while the hard limit is usually far higher.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, e)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        log.warning(
            "only %d open files allowed: at most about %d simultaneous connections; raise `ulimit -Hn`",
            soft,
            soft - 64,
        )
    return soft
