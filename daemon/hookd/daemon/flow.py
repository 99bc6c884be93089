"""Backpressure as a small class of its own (as uvicorn's flow_control.py): one switch that
pauses reading on every event connection while the pipeline is full, and resumes it.

The kernel's socket buffers and the listen backlog then hold what hooks send, and the daemon's
memory stays bounded however fast events arrive. Who else must follow the switch (the server
stops accepting) subscribes where the daemon is assembled (app.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Called with the new state: True when reading pauses, False when it resumes.
FlowCallback = Callable[[bool], None]


class FlowControl:
    """Pauses every registered transport's reading while the pipeline is full."""

    def __init__(self) -> None:
        self.paused = False
        #: The event connections' transports (the server adds and removes them).
        self.transports: set[asyncio.Transport] = set()
        #: Told of every change, in order of subscription.
        self.on_change: list[FlowCallback] = []

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            for t in self.transports:
                t.pause_reading()
            for cb in self.on_change:
                cb(True)

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            for t in self.transports:
                t.resume_reading()
            for cb in self.on_change:
                cb(False)
