"""The daemon's lifecycle: start in order, serve, stop in reverse order without losing events.

Start: private directories, bind (or inherit) the socket, start the writer process (which
migrates the schema and replays the mirror if the last run crashed), start the pipeline and the
WAL checkpointer, accept. Stop (SIGTERM/SIGINT): stop accepting and read what clients already
sent, flush the last batch, wait for every commit, close the writer, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aiosqlite

from . import sdnotify, spool
from .errors import WriterError
from .paths import private_dir
from .pipeline import Ingest, WriterLink
from .server import FlowControl, Listener, Server
from .settings import Settings

log = logging.getLogger("hookd")


async def checkpointer(settings: Settings) -> None:
    """Run PASSIVE WAL checkpoints from a connection of our own, off the writer's path.

    Checkpointing inside the writer cost about a fifth of its insert time in the design
    measurements; here it runs in aiosqlite's thread, where SQLite releases the GIL.
    """
    async with aiosqlite.connect(settings.paths.db) as db:
        await db.execute("PRAGMA busy_timeout = 100")
        while True:
            await asyncio.sleep(settings.checkpoint_interval)
            try:
                await db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except aiosqlite.OperationalError as e:
                log.debug("checkpoint skipped: %s", e)


async def drain_spool(settings: Settings, ingest: Ingest, flow: FlowControl) -> None:
    """Feed spool files to the pipeline: at start, then every ``spool_interval`` seconds.

    Reading happens in a thread; nothing is read while the pipeline is full (backpressure
    applies to the spool too), and each round is bounded in files and bytes.
    """
    directory = settings.paths.spool_dir
    while True:
        if not flow.paused:
            files = await asyncio.to_thread(spool.scan, directory, set(ingest.spool_inflight), settings.max_line)
            for f in files:
                for size, head in f.oversized:
                    ingest.oversized(size, head, f.peer)
                ingest.spooled(f.name, f.lines, f.peer)
            if files:
                log.info("read %d spooled file(s) from %s", len(files), directory)
                ingest.flush()
                continue  # there may be more: go again once the loop has breathed
        await asyncio.sleep(settings.spool_interval)


def status_line(ingest: Ingest) -> str:
    """systemd's STATUS= (``systemctl --user status hookd``): counts since this start."""
    s = ingest.stats
    return f"{s.committed} events committed, {sum(s.rejected.values())} rejected, queue {ingest.link.inflight}"


async def serve(settings: Settings) -> int:
    """Run the daemon until SIGTERM or SIGINT. Returns the process exit status."""
    paths = settings.paths
    private_dir(paths.db.parent)
    private_dir(paths.mirror_dir)
    private_dir(paths.spool_dir)
    fds = sdnotify.listen_fds()  # socket activation: systemd holds the socket, we inherit it
    notifier = sdnotify.Notifier()  # read now, so that the writer does not inherit it either
    if fds:
        listener = Listener.inherit(fds, paths.socket)
    else:
        listener = Listener.bind(paths.socket, paths.lock, settings.backlog)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    link = WriterLink(settings)
    try:
        await link.start()
        if link.replayed:
            log.warning("recovered %d events from the mirror after an unclean stop", link.replayed)
        flow = FlowControl()
        ingest = Ingest(settings, link, flow)
        server = Server(listener, ingest, flow, max_line=settings.max_line, backlog=settings.backlog)
        async with asyncio.TaskGroup() as tg:
            replies = tg.create_task(link.read_replies(), name="hookd-writer-replies")
            cp = tg.create_task(checkpointer(settings), name="hookd-checkpointer")
            sp = tg.create_task(drain_spool(settings, ingest, flow), name="hookd-spool")
            await server.start()
            origin = "" if listener.owned else " (from systemd)"
            log.info("ready: socket %s%s, database %s, mirror %s", listener.path, origin, paths.db, paths.mirror_dir)
            if notifier.enabled:
                notifier.ready(status_line(ingest))
                sd = tg.create_task(
                    sdnotify.keep_alive(
                        notifier,
                        status=lambda: status_line(ingest),
                        progress=lambda: (link.inflight, ingest.stats.batches - link.inflight),
                    ),
                    name="hookd-systemd",
                )
            await stop.wait()
            log.info("stopping: no new connections; reading what clients already sent")
            if notifier.enabled:
                sd.cancel()
                notifier.stopping("stopping: reading what clients already sent, committing it")
            sp.cancel()
            await server.stop(settings.shutdown_grace)
            await ingest.drain()
            server.close_all()
            cp.cancel()
            code = await link.close()
            await replies
            s = ingest.stats
            log.info(
                "stopped: %d events committed, %d rejected, %d duplicates this run; "
                "%d connections (%d served at accept)",
                s.committed,
                sum(s.rejected.values()),
                s.duplicates,
                server.accepted,
                server.quick,
            )
            return 0 if code == 0 else 1
    except* WriterError as eg:
        for e in eg.exceptions:
            log.error("%s", e)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        listener.unlink()
        listener.release()
        notifier.close()
        with contextlib.suppress(Exception):
            await link.close()
    return 1
