"""The daemon's retention schedule: a ``retain`` frame to the writer every ``retention_interval``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hookd.wire import Policy

log = logging.getLogger("hookd.retention")

#: A retention run that deleted at least this many events asks for a TRUNCATE checkpoint.
LARGE_DELETION = 10_000


async def schedule(settings: Any, link: Any, stats: Any) -> None:
    """In the daemon: send the writer a ``retain`` frame now and every ``retention_interval``,
    and count what it reports (``stats.deleted``). Sends nothing while no rule is configured."""
    run = {"age": 0, "size": 0}

    def retained(by_age: int, by_size: int, more: bool) -> None:
        stats.deleted["age"] += by_age
        stats.deleted["size"] += by_size
        run["age"] += by_age
        run["size"] += by_size
        if not more:
            total = run["age"] + run["size"]
            if total:
                log.info("retention deleted %d events (%d by age, %d by size)", total, run["age"], run["size"])
            if total >= LARGE_DELETION:
                link.truncate_wal = True
            run["age"] = run["size"] = 0

    link.on_retained.append(retained)
    while True:  # the policy is read again each time: SIGHUP may have changed it
        policy = Policy.from_settings(settings)
        if policy.db_rules or policy.mirror_rules:
            link.control(policy.frame())
        await asyncio.sleep(settings.retention_interval)
