"""``hookd`` command line: parse arguments, run a command, map errors to exit codes.

Exit codes: 0 success; 1 a runtime failure (message on stderr); 2 a usage or configuration
error. Nothing below this module calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import ConfigError, HookdError
from .paths import resolve
from .settings import SYNCHRONOUS_LEVELS, Settings

log = logging.getLogger("hookd")

PATHS_HELP = """\
paths (flag > variable > HOOKD_HOME > default):
  socket      --socket,     HOOKD_SOCKET      default $XDG_RUNTIME_DIR/hookd/hookd.sock
                                              (or /tmp/hookd-$UID/hookd.sock)
  database    --db,         HOOKD_DB          default $XDG_DATA_HOME/hookd/events.db
  mirror      --mirror-dir, HOOKD_MIRROR_DIR  default $XDG_STATE_HOME/hookd/mirror/
  spool       --spool-dir,  HOOKD_SPOOL_DIR   default $XDG_STATE_HOME/hookd/spool/
  HOOKD_HOME=DIR puts them all under DIR: DIR/hookd.sock, DIR/events.db, DIR/mirror/, DIR/spool/
"""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None


def _add_path_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", metavar="PATH", help="Unix socket to listen on (HOOKD_SOCKET)")
    p.add_argument("--db", metavar="PATH", help="SQLite database file (HOOKD_DB)")
    p.add_argument("--mirror-dir", metavar="DIR", help="directory of the JSONL mirror (HOOKD_MIRROR_DIR)")
    p.add_argument(
        "--spool-dir", metavar="DIR", help="where clients leave events while the daemon is down (HOOKD_SPOOL_DIR)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookd",
        description="hookd: a local event-ingest daemon for hooks. Hooks send newline-delimited "
        "JSON to a Unix socket; hookd validates, batches and stores it in SQLite and a JSONL mirror.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=PATHS_HELP,
    )
    parser.add_argument("--version", action="version", version=f"hookd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run the daemon in the foreground",
        description="Run the daemon in the foreground until SIGTERM or SIGINT, which stop it "
        "cleanly: no new connections, everything already sent is read and committed, exit 0.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=PATHS_HELP,
    )
    _add_path_flags(run)
    run.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="commit a batch at N events (HOOKD_BATCH_SIZE; default 1000)",
    )
    run.add_argument(
        "--batch-delay",
        type=float,
        metavar="MS",
        help="or when its oldest event has waited MS milliseconds (HOOKD_BATCH_DELAY_MS; default 50)",
    )
    run.add_argument(
        "--max-line",
        type=int,
        metavar="BYTES",
        help="longest accepted line; longer ones are rejected as too_long (HOOKD_MAX_LINE; default 1048576)",
    )
    run.add_argument(
        "--synchronous",
        choices=SYNCHRONOUS_LEVELS,
        help="SQLite synchronous level; 'full' also fsyncs the mirror per batch (HOOKD_SYNCHRONOUS; default normal)",
    )
    run.add_argument(
        "--log-level",
        default=os.environ.get("HOOKD_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="(HOOKD_LOG_LEVEL; default info)",
    )

    rebuild = sub.add_parser(
        "rebuild",
        help="recreate the database from the JSONL mirror",
        description="Recreate the database from the mirror files alone (the daemon must be stopped). "
        "The old database is kept beside it as <db>.bak-<time>; rejected lines and counters are "
        "copied from it when it is still readable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=PATHS_HELP,
    )
    _add_path_flags(rebuild)

    imp = sub.add_parser(
        "import",
        help="backfill events from newline-delimited JSON files",
        description="Store the events of existing JSONL logs, through the same validation as "
        "live events (invalid lines are recorded in `rejected`). Re-importing a file adds "
        "nothing: a line without an `id` gets one from its content and line number. The daemon "
        "must be stopped meanwhile (hooks spool their events). Prints a summary of imported, "
        "duplicate and rejected lines; a progress bar on a terminal.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=PATHS_HELP,
    )
    imp.add_argument("files", nargs="+", metavar="FILE", type=Path)
    imp.add_argument("--type", metavar="T", help="store every line as type T (whatever its own type key says)")
    _add_path_flags(imp)

    emit = sub.add_parser(
        "emit",
        help="send one event from a terminal",
        description="Send one event. KEY=VALUE sets a string field; KEY:=JSON sets a field "
        "to a JSON value (number, true, object...). Exit 0 when the daemon took it or it was "
        "spooled for later (a note on stderr says so); with --wait, 0 once committed, 1 if not.",
        epilog="example: hookd emit deploy service=api ok:=true duration_ms:=812",
    )
    emit.add_argument("type", metavar="TYPE", help="event type, e.g. tool or git_commit")
    emit.add_argument("fields", nargs="*", metavar="KEY=VALUE|KEY:=JSON")
    emit.add_argument("--wait", action="store_true", help="wait until the event is committed and print its eid")
    emit.add_argument("--socket", metavar="PATH", help="daemon socket (HOOKD_SOCKET)")

    hooks = sub.add_parser(
        "hooks",
        help="install hooks that send events to hookd (git)",
        description="Install or remove hooks that record events through hookd-emit.",
    )
    hooks_sub = hooks.add_subparsers(dest="hooks_command", metavar="SUBCOMMAND", required=True)
    for name, text in (
        (
            "install-git",
            "add post-commit, post-checkout and post-merge hooks that emit git_commit, "
            "git_checkout and git_merge events (existing hooks are kept and still run; running it again "
            "only refreshes hookd's hooks)",
        ),
        ("uninstall-git", "remove hookd's git hooks and put back the hooks they replaced"),
    ):
        p = hooks_sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("repo", nargs="?", default=".", type=Path, metavar="REPO", help="the repository (default: .)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    paths = resolve(socket=args.socket, db=args.db, mirror_dir=args.mirror_dir, spool_dir=args.spool_dir)
    delay_ms = args.batch_delay if args.batch_delay is not None else _env_float("HOOKD_BATCH_DELAY_MS", 50.0)
    return Settings(
        paths=paths,
        batch_size=args.batch_size if args.batch_size is not None else _env_int("HOOKD_BATCH_SIZE", 1000),
        batch_delay=delay_ms / 1000.0,
        max_line=args.max_line if args.max_line is not None else _env_int("HOOKD_MAX_LINE", 1 << 20),
        synchronous=args.synchronous or os.environ.get("HOOKD_SYNCHRONOUS", "normal"),
    ).validate()


def parse_fields(pairs: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        if ":=" in pair and pair.index(":=") < pair.index("=") + 1:
            key, raw = pair.split(":=", 1)
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{pair!r}: the value after := is not JSON ({e.msg})") from None
        elif "=" in pair:
            key, value = pair.split("=", 1)
            out[key] = value
        else:
            raise ConfigError(f"{pair!r}: expected KEY=VALUE or KEY:=JSON")
        if not key:
            raise ConfigError(f"{pair!r}: empty key")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    import uvloop

    from .app import serve

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="hookd: %(levelname)s: %(message)s")
    settings = settings_from(args)
    return uvloop.run(serve(settings))


def cmd_emit(args: argparse.Namespace) -> int:
    import hookd_client

    if args.socket:
        os.environ["HOOKD_SOCKET"] = args.socket
    fields = parse_fields(args.fields)
    if args.wait:
        try:
            print(hookd_client.emit(args.type, fields, wait=True))
        except hookd_client.HookdClientError as e:
            print(f"hookd: {e}", file=sys.stderr)
            return 1
        return 0
    before = hookd_client.spooled()
    if not hookd_client.emit(args.type, fields):
        print(f"hookd: the event could not be sent nor spooled to {hookd_client.spool_dir()}", file=sys.stderr)
        return 1
    if hookd_client.spooled() > before:
        print(
            f"hookd: no daemon at {hookd_client.socket_path()}; the event was spooled to "
            f"{hookd_client.spool_dir()} and will be stored when hookd runs (`hookd run`)",
            file=sys.stderr,
        )
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from .rebuild import rebuild

    logging.basicConfig(level="WARNING", stream=sys.stderr, format="hookd: %(levelname)s: %(message)s")
    paths = resolve(socket=args.socket, db=args.db, mirror_dir=args.mirror_dir, spool_dir=args.spool_dir)
    result = rebuild(paths)
    print(f"rebuilt {paths.db}: {result.events} events from {result.files} mirror file(s)")
    if result.backup is not None:
        kept = "rejected lines and counters copied from it" if result.carried_over else "it could not be read"
        print(f"the old database is kept as {result.backup} ({kept})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .importer import import_files, render_progress

    paths = resolve(socket=args.socket, db=args.db, mirror_dir=args.mirror_dir, spool_dir=args.spool_dir)
    progress = render_progress(sys.stderr) if sys.stderr.isatty() else None
    r = import_files(paths, args.files, force_type=args.type, progress=progress)
    rejected = sum(r.rejected.values())
    rate = r.lines / r.seconds if r.seconds else 0.0
    print(
        f"{r.lines} lines: {r.imported} imported, {r.duplicates} duplicate, {rejected} rejected "
        f"({r.seconds:.1f} s, {rate:,.0f} lines/s)"
    )
    for reason, n in sorted(r.rejected.items()):
        print(f"  rejected {reason}: {n}")
    if rejected:
        print(f'  see: sqlite3 {paths.db} "SELECT reason, detail, preview FROM rejected ORDER BY rid DESC"')
    return 0


def cmd_hooks(args: argparse.Namespace) -> int:
    from . import githooks

    action = githooks.install if args.hooks_command == "install-git" else githooks.uninstall
    for line in action(args.repo):
        print(line)
    return 0


COMMANDS = {"run": cmd_run, "emit": cmd_emit, "rebuild": cmd_rebuild, "import": cmd_import, "hooks": cmd_hooks}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HookdError as e:
        print(f"hookd: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())
