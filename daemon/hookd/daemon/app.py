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

from hookd import config, spool
from hookd.daemon import retention_schedule, sdnotify
from hookd.daemon.control import Control
from hookd.daemon.control_listener import ControlListener
from hookd.daemon.http_listener import HttpListener
from hookd.daemon.ingest import Ingest
from hookd.daemon.server import FlowControl, Listener, Server, raise_fd_limit
from hookd.daemon.writer_link import WriterLink
from hookd.errors import WriterError
from hookd.paths import control_path, private_dir
from hookd.settings import Settings

log = logging.getLogger("hookd")

#: When the WAL holds more than this, or after a large retention deletion, the checkpointer
#: truncates the -wal file (a PASSIVE checkpoint only lets SQLite reuse it from the start).
WAL_TRUNCATE_BYTES = 64 << 20


async def checkpointer(settings: Settings, link: WriterLink) -> None:
    """Run PASSIVE WAL checkpoints from a connection of our own, off the writer's path.

    Checkpointing inside the writer cost about a fifth of its insert time in the design
    measurements; here it runs in aiosqlite's thread, where SQLite releases the GIL.
    A TRUNCATE checkpoint follows a PASSIVE one when the WAL is large: the PASSIVE one has
    copied nearly everything already, so the TRUNCATE holds off the writer only briefly
    (its wait for readers is bounded by the 100 ms busy timeout).
    """
    async with aiosqlite.connect(settings.paths.db) as db:
        await db.execute("PRAGMA busy_timeout = 100")
        async with db.execute("PRAGMA page_size") as cur:
            page_size = (await cur.fetchone())[0]
        while True:
            await asyncio.sleep(settings.checkpoint_interval)
            try:
                async with db.execute("PRAGMA wal_checkpoint(PASSIVE)") as cur:
                    _busy, wal_pages, _copied = await cur.fetchone()
                if link.truncate_wal or wal_pages * page_size >= WAL_TRUNCATE_BYTES:
                    link.truncate_wal = False
                    await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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


def view_columns(settings: Settings) -> dict[str, dict[str, str]]:
    return {t: dict(tc.columns) for t, tc in settings.types.items() if tc.columns}


async def reload(settings: Settings, ingest: Ingest, server: Server) -> None:
    """SIGHUP: read the configuration again and apply what can change while running.

    Paths, the synchronous level, in-flight depth and backlog need a restart: a change to
    them is logged and ignored. A configuration that does not load is logged and ignored: the
    daemon keeps running on the one it has. The file is read in a thread, off the event loop.
    """
    try:
        new = await asyncio.to_thread(config.load, settings.reload_args, config_file=settings.reload_file)
    except Exception as e:  # noqa: BLE001 - any error: keep the old configuration
        log.error("SIGHUP: configuration not reloaded, keeping the current one: %s", e)
        return
    changed = []
    for key in config.KEYS:
        old_v, new_v = key.value(settings), key.value(new)
        if old_v == new_v:
            continue
        if not key.live:
            log.warning("SIGHUP: %s changed but needs a restart to apply (kept %r)", key.name, old_v)
            continue
        setattr(settings, key.attr, new_v)
        changed.append(key.name)
    for attr in ("types", "type_max_age", "aliases"):
        if getattr(settings, attr) != getattr(new, attr):
            setattr(settings, attr, getattr(new, attr))
            changed.append(attr)
    settings.sources = new.sources
    ingest.framer.aliases = dict(settings.aliases)
    server.accepted_uids = settings.accepted_uids
    server.idle_timeout = settings.idle_timeout
    ingest.link.send_views(view_columns(settings))
    logging.getLogger().setLevel(settings.log_level.upper())
    source = new.config_path if new.config_loaded else f"defaults and environment (no file at {new.config_path})"
    log.info("SIGHUP: configuration reloaded from %s; changed: %s", source, ", ".join(changed) or "nothing")


def status_line(ingest: Ingest) -> str:
    """systemd's STATUS= (``systemctl --user status hookd``): counts since this start."""
    s = ingest.stats
    line = f"{s.committed} events committed, {sum(s.rejected.values())} rejected, queue {ingest.link.inflight}"
    return line if s.writer_state == "ok" else f"{line}; writer {s.writer_state}"


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
    try:
        http = HttpListener.open(settings, fds)  # None unless configured or passed by systemd
    except BaseException:
        listener.unlink()
        listener.release()
        raise
    raise_fd_limit()  # a descriptor per connection: thousands of hooks at once
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, log.warning, "SIGHUP during start-up: ignored, send it again")
    link = WriterLink(settings)
    control_listener: ControlListener | None = None
    try:
        await link.start()
        if link.replayed:
            log.warning("recovered %d events from the mirror after an unclean stop", link.replayed)
        link.send_views(view_columns(settings))
        flow = FlowControl()
        ingest = Ingest(settings, link, flow)
        server = Server(
            listener,
            ingest,
            flow,
            max_line=settings.max_line,
            backlog=settings.backlog,
            idle_timeout=settings.idle_timeout,
            accepted_uids=settings.accepted_uids,
        )
        control = Control(settings, ingest, writer_pid=link.proc.pid if link.proc else None)
        control.server = server
        server.control = control
        if http is not None:
            http.attach(ingest, refused=server.note_refused, accepted_uids=lambda: server.accepted_uids)
            control.http = http
        control_listener = ControlListener(
            control_path(listener.path),
            control,
            accepted_uids=lambda: server.accepted_uids,
            refused=server.note_refused,
            count=ingest.count,
            idle_timeout=lambda: server.idle_timeout,
        )
        async with asyncio.TaskGroup() as tg:
            loop.add_signal_handler(
                signal.SIGHUP, lambda: tg.create_task(reload(settings, ingest, server), name="hookd-reload")
            )
            replies = tg.create_task(link.read_replies(), name="hookd-writer-replies")
            cp = tg.create_task(checkpointer(settings, link), name="hookd-checkpointer")
            rt = tg.create_task(retention_schedule.schedule(settings, link, ingest.stats), name="hookd-retention")
            sp = tg.create_task(drain_spool(settings, ingest, flow), name="hookd-spool")
            rates = tg.create_task(control.sample_rates(), name="hookd-rates")
            if await control_listener.start():
                control.control_socket = str(control_listener.path)
            await server.start()
            if http is not None:
                await http.start()
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
            rates.cancel()
            control.close()
            await control_listener.stop()
            rt.cancel()
            if http is not None:
                await http.stop(settings.shutdown_grace)
            await server.stop(settings.shutdown_grace)
            await ingest.drain()
            server.close_all()
            if http is not None:
                http.close_all()
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
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if control_listener is not None:
            await control_listener.stop()
        listener.unlink()
        listener.release()
        if http is not None:
            http.release()
        notifier.close()
        with contextlib.suppress(Exception):
            await link.close()
    return 1
