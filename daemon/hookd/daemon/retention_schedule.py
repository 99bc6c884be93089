"""The daemon's retention schedule: a ``retain`` frame to the writer every ``retention_interval``,
and the tally of what the writer reports deleting."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from hookd import forwarding
from hookd.wire import Policy

if TYPE_CHECKING:
    from hookd.daemon.ingest import Stats
    from hookd.daemon.writer_link import WriterLink
    from hookd.settings import Settings

log = logging.getLogger("hookd.retention")

#: A retention run that deleted at least this many events asks for a TRUNCATE checkpoint.
LARGE_DELETION = 10_000


class RetentionSchedule:
    """Sends the policy now and every ``retention_interval`` (``run``), and counts what the
    writer reports (``retained``, subscribed to the WriterLink by app) into ``stats.deleted``."""

    def __init__(self, settings: Settings, link: WriterLink, stats: Stats) -> None:
        self.settings = settings
        self.link = link
        self.stats = stats
        self._age = 0  # deleted so far in the current run
        self._size = 0

    def retained(self, by_age: int, by_size: int, more: bool) -> None:
        """One retention step's deletions; ``more`` false: the run is over."""
        self.stats.deleted["age"] += by_age
        self.stats.deleted["size"] += by_size
        self._age += by_age
        self._size += by_size
        if more:
            return
        total = self._age + self._size
        if total:
            log.info("retention deleted %d events (%d by age, %d by size)", total, self._age, self._size)
        if total >= LARGE_DELETION:
            self.link.truncate_wal = True
        self._age = self._size = 0

    async def run(self) -> None:
        """Owned by the daemon's TaskGroup. Sends nothing while no rule is configured."""
        while True:  # the policy is read again each time: SIGHUP may have changed it
            policy = Policy.from_settings(self.settings)
            if policy.db_rules and self.settings.forward_url:
                # Events not forwarded yet are kept: the forwarder's cursor, from its state file.
                policy.forwarded = await asyncio.to_thread(forwarding.forwarded_eid, self.settings)
            if policy.db_rules or policy.mirror_rules:
                self.link.retain(policy)
            await asyncio.sleep(self.settings.retention_interval)
