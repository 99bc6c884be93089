"""The forwarder process as the daemon sees it: started, restarted if it dies, stopped.

When ``forward.url`` is set, the daemon starts ``python -m hookd.forwarder`` once its writer is
ready (the database exists then), hands it its ``ForwardConfig`` on stdin and keeps that pipe
open: its end tells the forwarder to stop, also when the daemon is killed. Nothing flows back:
the forwarder keeps its state in its state file (hookd.forwarding), which ``hookd status`` and
retention read, and logs to the daemon's stderr. The daemon never waits on it while serving;
the event loop only awaits its exit, and restarts it after an unexpected one with a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Final

from hookd import forwarding
from hookd.settings import Settings

log = logging.getLogger("hookd.forward")

#: After an unexpected exit: wait this long before starting it again, doubling up to the last.
RESTART_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: A forwarder that ran this long was healthy: the next restart waits the shortest delay again.
HEALTHY_RUN: Final = 60.0
#: How long a stop waits for the forwarder to finish its transaction before killing it (a
#: killed forwarder loses nothing: PostgreSQL rolls its transaction back).
STOP_GRACE: Final = 5.0


class ForwarderLink:
    """Owns the forwarder process; ``run`` is a task of the daemon's TaskGroup."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False

    async def run(self) -> None:
        """Start the forwarder, and again whenever it exits without being asked to."""
        cfg = forwarding.config_of(self.settings)
        log.info("forwarding committed events to %s as host %s", cfg.url, cfg.host)
        failures = 0
        while not self._stopping:
            loop = asyncio.get_running_loop()
            started = loop.time()
            code = await self._run_once()
            if self._stopping:
                return
            failures = 0 if loop.time() - started > HEALTHY_RUN else failures + 1
            delay = RESTART_DELAYS[max(0, min(failures, len(RESTART_DELAYS)) - 1)]
            self.restarts += 1
            log.error("the forwarder process exited with status %s; starting it again in %g s", code, delay)
            await asyncio.sleep(delay)

    async def _run_once(self) -> int | None:
        cfg = forwarding.config_of(self.settings)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hookd.forwarder", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
        )
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(forwarding.config_frame(cfg))
            await self.proc.stdin.drain()
        except (ConnectionError, BrokenPipeError):
            pass  # it died at once: its exit status says more
        return await self.proc.wait()

    async def stop(self) -> None:
        """Close its stdin (it stops between transactions), wait a little, then kill it."""
        self._stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            log.warning("the forwarder did not stop within %g s; killed (PostgreSQL rolls its batch back)", STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
