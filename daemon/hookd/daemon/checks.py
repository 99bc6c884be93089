"""Start-up checks: what would let the daemon say "ready" and then fail, refused before it.

A read-only database (or its directory, the mirror's, the spool's) used to pass the start: the
writer opens SQLite read-only without complaint and only its first commit fails, so the daemon
said "ready", crashed at the first event with a traceback, and under systemd's
``Restart=on-failure`` crashed again at every start, answering ``store_failed`` for events it
then replayed from the mirror (duplicates for a retrying client). A ``--db`` naming a directory
gave SQLite's "unable to open database file". Both are one line now, naming the path and what
to do, before anything is bound or started.

The checks try what the writer will do rather than trust ``os.access`` (which root passes, and
which knows nothing of ``chattr +i``): open each existing file of the database read-write, and
create and remove a file in each directory. Blocking file system calls: run in a thread.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

from hookd.errors import ConfigError, StoreError
from hookd.paths import Paths, private_dir

#: Files beside the database that the writer and the daemon open read-write when they exist.
DB_SIDECARS = ("-wal", "-shm", ".writer-lock", ".daemon-lock")


def prepare(paths: Paths, sources: dict[str, str]) -> bool:
    """Create the directories, then refuse what the daemon could not write. Returns whether the
    database file existed already (a new one is filled from the mirror: the start says so)."""
    for directory in (paths.db.parent, paths.mirror_dir, paths.spool_dir):
        private_dir(directory)
    existed = _check_db_file(paths.db, origin(sources.get("db", "default"), "--db"))
    for sidecar in DB_SIDECARS:
        extra = paths.db.with_name(paths.db.name + sidecar)
        if extra.exists():
            _check_writable_file(extra, f"{extra.name}, beside the database")
    _check_dir(paths.db.parent, "the database's directory", "--db")
    _check_dir(paths.mirror_dir, "the mirror directory", "--mirror-dir")
    _check_dir(paths.spool_dir, "the spool directory", "--spool-dir")
    for mirror_file in _mirror_files_appended(paths.mirror_dir):
        _check_writable_file(mirror_file, "a file of the mirror")
    return existed


def origin(source: str, flag: str) -> str:
    """Where a path came from, as the user set it (``Settings.sources``)."""
    kind, _, where = source.partition(" ")
    if kind == "file":
        return f"[paths] in {where}"
    if kind in ("env", "flag"):
        return where
    return "the default" if kind == "default" else flag


def _check_db_file(db: Path, where: str) -> bool:
    try:
        st = db.stat()
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(
            f"the database path {db} (from {where}) is a directory; give the database file's path, "
            f"e.g. --db {db / 'events.db'}"
        )
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"the database path {db} (from {where}) is not a regular file; give a database file's path")
    _check_writable_file(db, "the database")
    return True


def _check_writable_file(path: Path, what: str) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # opening changes nothing; the writer will need it
    except OSError as e:
        raise StoreError(
            f"cannot write {path} ({what}): {e.strerror}{_owner(path)}; hookd would start, then fail at the "
            f"first event. Make it writable (`chmod u+w {path}`, or a file system mounted read-write), "
            "or choose another database with --db or HOOKD_HOME"
        ) from None
    os.close(fd)


def _check_dir(directory: Path, what: str, flag: str) -> None:
    probe = directory / f".hookd-write-check-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StoreError(
            f"cannot create files in {directory} ({what}): {e.strerror}; hookd would start, then fail at "
            f"the first event. Make it writable (`chmod u+w {directory}`, or a file system mounted "
            f"read-write), or choose another place with {flag} or HOOKD_HOME"
        ) from None
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(probe)


def _mirror_files_appended(directory: Path) -> list[Path]:
    """The plain mirror files the writer may append to or cut: today's (UTC) and the newest."""
    plain = sorted(directory.glob("????-??-??.jsonl"))
    today = directory / time.strftime("%Y-%m-%d.jsonl", time.gmtime())
    return sorted({p for p in (*plain[-1:], today) if p.exists()})


def _owner(path: Path) -> str:
    with contextlib.suppress(OSError):
        uid = path.stat().st_uid
        if uid != os.getuid():
            return f" (it belongs to uid {uid}, not to you, uid {os.getuid()})"
    return ""
