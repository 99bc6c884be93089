"""The daemon's lifecycle in named phases: start in order, serve, stop without losing events.

``serve`` runs three phases:

- ``_start``: signal handlers first (every start-up wait ends at SIGTERM or SIGINT); the
  start-up checks (checks.py: directories made, the database and the directories writable,
  refused before anything else); systemd's environment; the event socket claimed (its lock
  taken, the path checked) or inherited; the database's own lock (db_lock.py: a second daemon
  on the same database is refused at once); the open-file limit; the writer process (it waits
  for a previous writer, migrates the schema and replays the mirror if need be). Then
  ``_assemble`` makes the parts and subscribes them to each other. Each step registers its
  undo on an ``AsyncExitStack``. A stop before the writer is ready kills it and exits 0.
- ``_run``: a TaskGroup owns the background tasks (writer replies, WAL checkpoints,
  retention, spool, rates, systemd); the control socket opens, then the event socket is
  bound (only now: until the writer is ready, clients spool rather than wait in a queue that
  a failed start would drop) and accepts, and the daemon reports ready. It serves until
  SIGTERM or SIGINT.
- ``_stop``: stop accepting and read what clients already sent, flush the last batch, wait
  for every commit, close the writer; exit 0.

The exit stack then undoes the start, on every path (a failed writer too), in reverse:

1. every control connection closed, the control socket removed;
2. the event socket's path removed: new clients spool at once instead of waiting;
3. the writer closed (after a clean stop it has exited already; after a failure it is gone);
4. the database's lock released, then the socket's: only now may another daemon start on
   them;
5. the systemd notifier closed;
6. the signal handlers removed.

A failed writer ends the TaskGroup with a ``WriterError``: ``serve`` logs one line and returns 1
(no traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from hookd import config, db_lock, spool, wal
from hookd.daemon import checks, retention_schedule, sdnotify
from hookd.daemon.control import Control
from hookd.daemon.control_listener import ControlListener
from hookd.daemon.flow import FlowControl
from hookd.daemon.forwarder_link import ForwarderLink
from hookd.daemon.http_listener import HttpListener
from hookd.daemon.ingest import Ingest
from hookd.daemon.limits import raise_fd_limit
from hookd.daemon.listener import Listener
from hookd.daemon.peers import UidRule
from hookd.daemon.server import Server
from hookd.daemon.state import DaemonState
from hookd.daemon.writer_link import WriterLink
from hookd.errors import AlreadyRunning, WriterError
from hookd.paths import choose, control_path
from hookd.settings import Settings

log = logging.getLogger("hookd")


async def checkpointer(settings: Settings, link: WriterLink) -> None:
    """WAL checkpoints (see hookd.wal) from a connection of our own, in aiosqlite's thread,
    where SQLite releases the GIL: off the writer's path and off the event loop."""
    async with aiosqlite.connect(settings.paths.db) as db:
        await db.execute(wal.BUSY_TIMEOUT)
        async with db.execute(wal.PAGE_SIZE) as cur:
            page_size = (await cur.fetchone())[0]
        while True:
            await asyncio.sleep(settings.checkpoint_interval)
            try:
                async with db.execute(wal.PASSIVE) as cur:
                    _busy, wal_pages, _copied = await cur.fetchone()
                if wal.should_truncate(wal_pages, page_size, asked=link.truncate_wal):
                    link.truncate_wal = False
                    await db.execute(wal.TRUNCATE)
            except aiosqlite.OperationalError as e:
                log.debug("checkpoint skipped: %s", e)


async def drain_spool(settings: Settings, ingest: Ingest, flow: FlowControl) -> None:
    """Feed spool files to the pipeline: at start, then every ``spool_interval`` seconds.

    Reading happens in a thread; nothing is read while the pipeline is full (backpressure
    applies to the spool too), and each round is bounded in files and bytes. Once everything
    is read, the spool's ``usage`` is set to what is left (the clients' cap counts it) and the
    clients' drop counters are collected (spool.upkeep).
    """
    directory = settings.paths.spool_dir
    while True:
        if not flow.paused:
            files = await asyncio.to_thread(
                spool.scan, directory, set(ingest.spool_inflight), settings.max_line, cut_limit=settings.truncate_limit
            )
            for f in files:
                for size, head in f.oversized:
                    ingest.oversized(size, head, f.peer)
                ingest.spooled(f.name, f.lines, f.peer)
            if files:
                log.info("read %d spooled file(s) from %s", len(files), directory)
                ingest.flush()
                continue  # there may be more: go again once the loop has breathed
            # All read: measuring is cheap now (the spool is nearly empty), and drop counts can
            # go with the next batch.
            for drops in await asyncio.to_thread(spool.upkeep, directory, set(ingest.spool_inflight)):
                ingest.dropped(drops)
        await asyncio.sleep(settings.spool_interval)


def view_columns(settings: Settings) -> dict[str, dict[str, str]]:
    return {t: dict(tc.columns) for t, tc in settings.types.items() if tc.columns}


async def reload(settings: Settings, link: WriterLink) -> None:
    """SIGHUP: read the configuration again and apply what can change while running.

    One reload style: every part of the daemon holds the one ``Settings`` object and reads a
    live key where it uses it (the accept loop ``allowed_uids`` per connection, the idle sweep
    ``idle_timeout`` per round, the batcher ``batch_size`` per batch, retention its rules per
    run, the framer the ``aliases`` dict per line). So a reload only updates that object, in
    place (its dicts too, so that a part holding one sees the change), and pushes nothing
    into the parts. Chosen over an ``apply(settings)`` per part because most parts already
    read live, and a part that keeps a copy is one a reload can silently miss. Two things
    are outside this process's objects and are told: the writer (its views) and the logging
    level.

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
        held, fresh = getattr(settings, attr), getattr(new, attr)
        if held != fresh:
            held.clear()
            held.update(fresh)
            changed.append(attr)
    settings.sources = new.sources
    link.send_views(view_columns(settings))
    logging.getLogger().setLevel(settings.log_level.upper())
    source = new.config_path if new.config_loaded else f"defaults and environment (no file at {new.config_path})"
    log.info("SIGHUP: configuration reloaded from %s; changed: %s", source, ", ".join(changed) or "nothing")


@dataclass
class Daemon:
    """The assembled parts of one running daemon."""

    settings: Settings
    listener: Listener
    notifier: sdnotify.Notifier
    stop: asyncio.Event  # set by SIGTERM and SIGINT
    link: WriterLink
    state: DaemonState
    flow: FlowControl
    ingest: Ingest
    control: Control
    server: Server
    control_listener: ControlListener
    retention: retention_schedule.RetentionSchedule
    http: HttpListener | None  # the HTTP listener, when configured (http.listen) or passed by systemd
    forwarder: ForwarderLink | None = None  # the forwarder process, when forward.url is set


@dataclass
class Tasks:
    """The background tasks, owned by ``_run``'s TaskGroup; ``_stop`` ends them in order."""

    replies: asyncio.Task[None]
    checkpointer: asyncio.Task[None]
    retention: asyncio.Task[None]
    spool: asyncio.Task[None]
    rates: asyncio.Task[None]
    systemd: asyncio.Task[None] | None = None
    forwarder: asyncio.Task[None] | None = None


def status_line(d: Daemon) -> str:
    """systemd's STATUS= (``systemctl --user status hookd``): counts since this start."""
    s = d.state
    line = f"{s.committed} events committed, {sum(s.rejected.values())} rejected, queue {d.link.inflight}"
    return line if s.writer_state == "ok" else f"{line}; writer {s.writer_state}"


async def serve(settings: Settings) -> int:
    """Run the daemon until SIGTERM or SIGINT. Returns the process exit status."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            d = await _start(settings, stack)
            if d is None:
                return 0  # stopped during start-up, as asked, before accepting anything
            return await _run(d)
    except* WriterError as eg:
        for e in eg.exceptions:
            log.error("%s", e)
    return 1


# -- start ---------------------------------------------------------------------------------------
async def _start(settings: Settings, stack: contextlib.AsyncExitStack) -> Daemon | None:
    """The start phases, in order; each registers its undo on ``stack`` (see the module doc).
    None when SIGTERM or SIGINT came before the writer was ready."""
    paths = settings.paths
    stop = _install_signals(stack)  # first: every wait below must end at SIGTERM or SIGINT
    db_existed = await asyncio.to_thread(checks.prepare, paths, settings.sources)
    # Read (and removed from the environment) before the writer starts, so that it inherits
    # neither systemd's sockets nor its notification socket.
    fds = sdnotify.listen_fds()  # socket activation: systemd holds the socket, we inherit it
    notifier = sdnotify.Notifier()
    stack.callback(notifier.close)
    if fds:
        listener = Listener.inherit(fds, paths.socket)
    else:
        listener = Listener.claim(paths.socket, paths.lock)  # bound in _open, once the writer is ready
    stack.callback(listener.release)
    stack.callback(os.close, _own_database(paths.db, listener.path))
    http = HttpListener.open(settings, fds)  # None unless configured or passed by systemd
    if http is not None:
        stack.callback(http.release)
    _warn_if_clients_look_elsewhere(listener, settings)
    raise_fd_limit()  # a descriptor per connection: thousands of hooks at once
    link = WriterLink(settings)
    stack.push_async_callback(_close_writer, link)
    stack.callback(listener.unlink)
    if not await _writer_started(link, stop):
        log.warning(
            "stopped before ready (SIGTERM or SIGINT) while the writer was still starting (waiting for a "
            "lock, migrating the schema or replaying the mirror: see the lines above); nothing had been "
            "accepted yet (clients spool meanwhile, or wait in systemd's socket)"
        )
        return None
    _log_replayed(settings, link.replayed, db_existed)
    link.send_views(view_columns(settings))
    d = _assemble(settings, listener, notifier, stop, link, http)
    stack.push_async_callback(d.control_listener.stop)
    stack.callback(d.control.close)
    return d


def _own_database(db: Path, socket: Path) -> int:
    """Take the database's own lock (db_lock) before anything is bound or started: a second
    daemon on the same database, whatever its socket, is refused at once, naming the first."""
    try:
        return db_lock.take(db, socket=socket)
    except db_lock.Held as e:
        holder = e.holder
        if holder.socket is not None:
            todo = (
                f"one daemon writes a database: send events to that one (export HOOKD_SOCKET={holder.socket}), "
                "or give this one another database with --db or HOOKD_HOME"
            )
        else:
            todo = "wait for it to finish, then start hookd again"
        raise AlreadyRunning(f"database {db} is in use by {holder.describe()}; {todo}") from None


async def _writer_started(link: WriterLink, stop: asyncio.Event) -> bool:
    """Start the writer; False when SIGTERM or SIGINT came first.

    The writer can take long to be ready, or forever: it waits for the lock of a writer still
    finishing (after a kill -9 of its daemon, or a ``hookd import``), for SQLite's lock while
    it migrates, and it replays what the mirror holds beyond the database. A stop meanwhile
    kills it: it has been handed no event (the event socket is bound only once it is ready),
    and an unfinished migration or replay transaction is rolled back by SQLite and done again
    at the next start.
    """
    starting = asyncio.ensure_future(link.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((starting, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    if not starting.cancelled():
        try:
            starting.result()  # the writer's own failure (WriterError), if it failed
        except OSError as e:  # it could not even be started: one line, not a traceback
            raise WriterError(f"cannot start the writer process ({sys.executable} -m hookd.writer): {e}") from None
        return True
    if link.proc is not None and link.proc.returncode is None:
        link.proc.kill()  # it ignores SIGTERM: the daemon owns its lifetime
        await link.proc.wait()
    return False


def _log_replayed(settings: Settings, replayed: int, db_existed: bool) -> None:
    """Say why events came from the mirror: an unclean stop, or a database that was not there."""
    if not replayed:
        return
    if db_existed:
        log.warning("recovered %d events from the mirror after an unclean stop", replayed)
    else:
        log.info(
            "the database %s was new: loaded %d events from the mirror in %s (the first start with this "
            "database, or it was deleted)",
            settings.paths.db,
            replayed,
            settings.paths.mirror_dir,
        )


def _warn_if_clients_look_elsewhere(listener: Listener, settings: Settings) -> None:
    """Clients find the socket by HOOKD_SOCKET, else HOOKD_HOME, else the default; not by the
    configuration file, the daemon's flags or systemd's socket unit. Our own environment is the
    best guess of theirs."""
    expected, step = choose("socket", os.environ)
    if listener.path == expected:
        return
    by = {"env": "HOOKD_SOCKET", "home": "HOOKD_HOME"}.get(step, "the default")
    if listener.owned:
        origin = checks.origin(settings.sources.get("socket", "default"), "--socket")
        where = f"{listener.path} ({origin})"
        what = f"clients look for the socket at {expected} ({by}), but this daemon listens at {where}"
    else:
        what = f"systemd passed the socket {listener.path}, but clients look for {expected} ({by})"
    log.warning(
        "%s: their events would be spooled and wait. Point them at it: export HOOKD_SOCKET=%s where hooks "
        "run (docs/configuration.md)",
        what,
        listener.path,
    )


def _install_signals(stack: contextlib.AsyncExitStack) -> asyncio.Event:
    """SIGTERM and SIGINT set the returned event; SIGHUP waits for ``_run`` (reload)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, log.warning, "SIGHUP during start-up: ignored, send it again")

    def remove() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    stack.callback(remove)
    return stop


async def _close_writer(link: WriterLink) -> None:
    with contextlib.suppress(Exception):  # it may have failed already: that was reported
        await link.close()


def _assemble(
    settings: Settings,
    listener: Listener,
    notifier: sdnotify.Notifier,
    stop: asyncio.Event,
    link: WriterLink,
    http: HttpListener | None,
) -> Daemon:
    """Make the parts and subscribe them to each other: here, and nowhere else.

    Counters go to one ``DaemonState`` that every part is given. The return path (commit
    replies from the writer back to clients) runs: ``WriterLink`` → ``Ingest`` (acks, flow
    control) → ``on_commit`` subscribers (followers) and ``FlowControl.on_change`` subscribers
    (the accept loop); the writer's state and retention reports go to ``Ingest`` and
    ``RetentionSchedule``.
    """
    state = DaemonState()
    flow = FlowControl()
    ingest = Ingest(settings, link, flow, state)
    retention = retention_schedule.RetentionSchedule(settings, link, state)
    link.subscribe(committed=ingest.committed, state=ingest.writer_state, retained=retention.retained)
    uids = UidRule(settings, ingest.count)
    control = Control(settings, ingest, state, writer_pid=link.proc.pid if link.proc else None)
    server = Server(listener, ingest, flow=flow, state=state, settings=settings, uids=uids, control=control)
    ingest.on_commit.append(control.committed)  # push committed events to followers
    ingest.on_commit.append(control.imports.committed)  # imports: progress, and read again
    flow.on_change.append(server.flow_changed)  # stop accepting while reading is paused
    control_listener = ControlListener(control_path(listener.path), control, uids)
    if http is not None:  # the same uid rule and counts as the Unix sockets
        http.attach(
            ingest, refused=uids.refused, accepted_uids=lambda: settings.accepted_uids, cut_budget=server.cut_budget
        )
        flow.on_change.append(http.flow_changed)  # pause its connections' reading too
        control.http = http
    parts = (settings, listener, notifier, stop, link, state, flow, ingest, control, server, control_listener)
    forwarder = ForwarderLink(settings) if settings.forward_url else None  # reads committed rows, on its own
    return Daemon(*parts, retention, http, forwarder)


# -- run -----------------------------------------------------------------------------------------
async def _run(d: Daemon) -> int:
    """Serve until SIGTERM or SIGINT, then ``_stop``. A failed writer ends the TaskGroup."""
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as tg:
        loop.add_signal_handler(signal.SIGHUP, lambda: tg.create_task(reload(d.settings, d.link), name="hookd-reload"))
        try:
            tasks = _start_tasks(d, tg)
            await _open(d, tg, tasks)
            await d.stop.wait()
            return await _stop(d, tasks)
        finally:
            # The TaskGroup takes no new task once it is left.
            loop.add_signal_handler(signal.SIGHUP, log.warning, "SIGHUP while stopping: ignored")


def _start_tasks(d: Daemon, tg: asyncio.TaskGroup) -> Tasks:
    """The background tasks: the writer's replies (the return path), WAL checkpoints,
    retention runs, the spool, rate samples for ``!status``, the forwarder's supervision."""
    tasks = Tasks(
        replies=tg.create_task(d.link.read_replies(), name="hookd-writer-replies"),
        checkpointer=tg.create_task(checkpointer(d.settings, d.link), name="hookd-checkpointer"),
        retention=tg.create_task(d.retention.run(), name="hookd-retention"),
        spool=tg.create_task(drain_spool(d.settings, d.ingest, d.flow), name="hookd-spool"),
        rates=tg.create_task(d.control.sample_rates(), name="hookd-rates"),
    )
    if d.forwarder is not None:
        tasks.forwarder = tg.create_task(d.forwarder.run(), name="hookd-forwarder")
    return tasks


async def _open(d: Daemon, tg: asyncio.TaskGroup, tasks: Tasks) -> None:
    """Open the control socket, then accept on the event socket, then report ready."""
    if await d.control_listener.start():
        d.state.control_socket = str(d.control_listener.path)
    await asyncio.to_thread(d.listener.bind, d.settings.backlog)  # clients spooled until now
    await d.server.start()
    if d.http is not None:
        await d.http.start()
    origin = "" if d.listener.owned else " (from systemd)"
    paths = d.settings.paths
    log.info("ready: socket %s%s, database %s, mirror %s", d.listener.path, origin, paths.db, paths.mirror_dir)
    if d.notifier.enabled:
        d.notifier.ready(status_line(d))
        tasks.systemd = tg.create_task(
            sdnotify.keep_alive(
                d.notifier,
                status=lambda: status_line(d),
                progress=lambda: (d.link.inflight, d.state.batches - d.link.inflight),
            ),
            name="hookd-systemd",
        )


# -- stop ----------------------------------------------------------------------------------------
async def _stop(d: Daemon, tasks: Tasks) -> int:
    """Stop without losing what clients sent, in this order (each step needs the one before):

    1. no more from the spool, no more rate samples, systemd told we are stopping;
    2. followers told nothing more is coming, the control socket closed;
    3. no more retention runs; the forwarder stopped (between two transactions);
    4. the HTTP port and the event socket: stop accepting, read what clients already sent;
    5. flush the last batch and wait for every commit (acks are written as they commit);
    6. close the connections kept open for those acks;
    7. no more WAL checkpoints; close the writer (it commits, checkpoints, exits) and read
       its last replies.

    Returns the exit status: 0, or 1 when the writer did not exit cleanly.
    """
    log.info("stopping: no new connections; reading what clients already sent")
    if tasks.systemd is not None:
        tasks.systemd.cancel()
        d.notifier.stopping("stopping: reading what clients already sent, committing it")
    tasks.spool.cancel()
    tasks.rates.cancel()
    d.control.close()
    await d.control_listener.stop()
    tasks.retention.cancel()
    if d.forwarder is not None and tasks.forwarder is not None:
        await d.forwarder.stop()
        tasks.forwarder.cancel()
    if d.http is not None:
        await d.http.stop(d.settings.shutdown_grace)
    await d.server.stop(d.settings.shutdown_grace)
    await d.ingest.drain()
    d.server.close_all()
    if d.http is not None:
        d.http.close_all()
    d.control.close()  # control connections that came in while the event socket drained
    tasks.checkpointer.cancel()
    code = await d.link.close()
    await tasks.replies
    s = d.state
    log.info(
        "stopped: %d events committed, %d rejected, %d duplicates this run; %d connections (%d served at accept)",
        s.committed,
        sum(s.rejected.values()),
        s.duplicates,
        s.accepted,
        s.quick,
    )
    return 0 if code == 0 else 1
