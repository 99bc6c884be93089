"""A real PostgreSQL for tests and benchmarks: initdb in a temporary directory, a Unix socket
only (no TCP port), run as an unprivileged uid when we are root (initdb and postgres refuse
root). The recipe of ../shared/recipes.md, as a class.

Besides the trust-authenticated superuser ``hookd``, a role ``pwuser`` must give a password
(scram-sha-256), for the tests of forward.password_file.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

NOBODY = 65534
PASSWORD_ROLE = ("pwuser", "secret-pw-1234")


def find_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def missing_reason() -> str | None:
    if find_bin() is None:
        return "PostgreSQL is not installed (/usr/lib/postgresql/*/bin): `./dev test` installs it with apt-get as root"
    if os.getuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is needed to run PostgreSQL as an unprivileged uid"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[test]'"
    return None


class PgServer:
    def __init__(self, nice: int = 0) -> None:
        #: Run the server at this niceness (the benchmark's stand-in for a server on another machine).
        self.nice = nice
        self.bin = find_bin()
        assert self.bin is not None
        self.dir = Path(tempfile.mkdtemp(prefix="hkpg-", dir="/tmp"))
        self.data = self.dir / "data"
        if os.getuid() == 0:
            os.chown(self.dir, NOBODY, NOBODY)
            self.as_user = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        else:
            self.as_user = []

    def _run(self, *cmd: str) -> None:
        if cmd[0] == "nice":  # nice first: an unprivileged user cannot lower it again, only we can
            cmd, niced = cmd[3:], list(cmd[:3])
        else:
            niced = []
        subprocess.run([*niced, *self.as_user, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self) -> PgServer:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "hookd", "--no-sync")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"local all {PASSWORD_ROLE[0]} scram-sha-256\nlocal all all trust\n")
        self.start()
        with self.connect("postgres") as conn:
            conn.execute("CREATE DATABASE hookd")
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE[0]} LOGIN SUPERUSER PASSWORD '{PASSWORD_ROLE[1]}'")
        return self

    def start(self) -> None:
        # fsync off: tests stop PostgreSQL cleanly (pg_ctl -m fast), never crash the machine.
        options = f"-k {self.dir} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        log = str(self.dir / "log")
        niced = ["nice", "-n", str(self.nice)] if self.nice else []
        self._run(*niced, str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, db: str = "hookd", user: str = "hookd") -> str:
        return f"postgresql://{user}@/{db}?host={self.dir}"

    def connect(self, db: str = "hookd") -> Any:
        import psycopg

        return psycopg.connect(f"host={self.dir} user=hookd dbname={db}", autocommit=True)

    def query(self, sql: str, params: tuple = (), db: str = "hookd") -> list[tuple]:
        with self.connect(db) as conn:
            return conn.execute(sql, params).fetchall()

    def fresh_database(self, name: str) -> str:
        """A new, empty database (each test its own); its URL."""
        with self.connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
