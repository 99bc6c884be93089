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

from hookd import __version__, config
from hookd.errors import ConfigError, HookdError
from hookd.settings import LOG_LEVELS, SYNCHRONOUS_LEVELS, Settings

log = logging.getLogger("hookd")

PATHS_HELP = """\
paths (flag > variable > HOOKD_HOME > [paths] of the config file > default):
  socket      --socket,     HOOKD_SOCKET      default $XDG_RUNTIME_DIR/hookd/hookd.sock
                                              (or /tmp/hookd-$UID/hookd.sock)
  database    --db,         HOOKD_DB          default $XDG_DATA_HOME/hookd/events.db
  mirror      --mirror-dir, HOOKD_MIRROR_DIR  default $XDG_STATE_HOME/hookd/mirror/
  spool       --spool-dir,  HOOKD_SPOOL_DIR   default $XDG_STATE_HOME/hookd/spool/
  HOOKD_HOME=DIR puts them all under DIR: DIR/hookd.sock, DIR/events.db, DIR/mirror/, DIR/spool/
config file: --config FILE, HOOKD_CONFIG, $HOOKD_HOME/config.toml, ~/.config/hookd/config.toml
  (`hookd config` shows every setting and where it came from; docs/configuration.md)
"""


def _add_path_flags(p: argparse.ArgumentParser, *, listens: bool = False) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (HOOKD_CONFIG; default $XDG_CONFIG_HOME/hookd/config.toml, "
        "or $HOOKD_HOME/config.toml when HOOKD_HOME is set)",
    )
    socket_help = "Unix socket to listen on" if listens else "the daemon's Unix socket"
    p.add_argument("--socket", metavar="PATH", help=f"{socket_help} (HOOKD_SOCKET)")
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
    _add_path_flags(run, listens=True)
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
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="close a connection that has not completed a line for this long (HOOKD_IDLE_TIMEOUT; default 30)",
    )
    run.add_argument(
        "--allow-uid",
        type=int,
        action="append",
        metavar="UID",
        help="also accept events from this uid; repeatable (HOOKD_ALLOWED_UIDS; default: your own uid only)",
    )
    run.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
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

    status = sub.add_parser(
        "status",
        help="is the daemon up, what has it stored, which event types are live",
        description="Show whether the daemon runs (pid, uptime, paths), what it did since it "
        "started (received, committed, rejected, spooled, queue, rate) and in total, and per "
        "event type: count, last seen, events in the last hour and a state: live (seen within "
        "stale_after), stale (silent longer), never (expected in the configuration, never "
        "seen). Works with the daemon down, from the database. Exit 0 when the daemon runs, "
        "3 when it does not.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=PATHS_HELP,
    )
    status.add_argument("--json", action="store_true", help="print one JSON object (keys in docs/operations.md)")
    _add_path_flags(status)

    tail = sub.add_parser(
        "tail",
        help="print recent events; -f follows new ones as they are committed",
        description="Print the last N events (oldest first), optionally only of one type or "
        "session or since a time. With -f, keep printing events as the daemon commits them: "
        "the daemon pushes them (no polling); a restart of the daemon is waited out.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=PATHS_HELP,
    )
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="how many past events (default 10)")
    tail.add_argument("--type", metavar="T", help="only events of type T (PreToolUse and pre_tool_use alike)")
    tail.add_argument("--session", metavar="S", help="only events of session S")
    tail.add_argument("--since", metavar="WHEN", help="only events from WHEN on: 30m, 1h, 2d ago, or a time")
    tail.add_argument("--json", action="store_true", help="one JSON object per line: eid, type, ts, session, id, data")
    _add_path_flags(tail)

    query = sub.add_parser(
        "query",
        help="run a read-only SQL query against the database",
        description="Run one SQL statement on a read-only connection to the database and print "
        "the result as a table (or JSON lines). Writing statements fail: the database belongs "
        "to the daemon. Tables and views: see docs/protocol.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='example: hookd query "SELECT type, count FROM event_types ORDER BY count DESC"\n\n' + PATHS_HELP,
    )
    query.add_argument("sql", metavar="SQL")
    query.add_argument("--json", action="store_true", help="one JSON object per row")
    _add_path_flags(query)

    cfg = sub.add_parser(
        "config",
        help="print the effective configuration and where each value came from",
        description="Print the configuration hookd would use, as TOML, with the source of every "
        "value (flag, environment variable, file, default) in a comment. Checks the file: an "
        "unknown key or a bad value is an error (exit 2) that names it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=PATHS_HELP,
    )
    cfg.add_argument("--json", action="store_true", help="print [{key, value, source}, ...] as JSON")
    _add_path_flags(cfg)

    vac = sub.add_parser(
        "vacuum",
        help="delete old events now and give the freed space back to the file system",
        description="With the daemon stopped: optionally delete events older than --max-age, "
        "then the oldest ones while the data exceeds --max-size (types are not spared here), "
        "then rewrite the database without its free pages (SQLite VACUUM; needs about the "
        "database's size in free disk space meanwhile). Prints the size before and after. "
        "The mirror is not touched. While the daemon runs, retention deletes by itself and "
        "SQLite reuses the freed pages; only the file does not shrink.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples: hookd vacuum; hookd vacuum --max-age 30d; hookd vacuum --max-size 500MiB\n\n" + PATHS_HELP,
    )
    vac.add_argument("--max-age", metavar="DURATION", help="delete events whose ts is older, e.g. 30d, 12h, 90m")
    vac.add_argument(
        "--max-size", metavar="SIZE", help="delete the oldest events while the data exceeds SIZE, e.g. 500MiB, 2G"
    )
    _add_path_flags(vac)

    emit = sub.add_parser(
        "emit",
        help="send one event from a terminal",
        description="Send one event. KEY=VALUE sets a string field; KEY:=JSON sets a field "
        "to a JSON value (number, true, object...). Exit 0 when the daemon took it or it was "
        "spooled for later (a note on stderr says so); with --wait, 0 once committed, 1 if not.",
        epilog="example: hookd emit deploy service=api ok:=true duration_ms:=812",
    )
    emit.add_argument("type", metavar="TYPE", help="event type, e.g. tool or git_commit")
    emit.add_argument("fields", nargs="*", default=[], metavar="KEY=VALUE|KEY:=JSON")
    emit.add_argument("--wait", action="store_true", help="wait until the event is committed and print its eid")
    emit.add_argument("--socket", metavar="PATH", help="daemon socket (HOOKD_SOCKET)")

    inst = sub.add_parser(
        "install-service",
        help="run hookd as a systemd user service (socket activation)",
        description="Write hookd.socket and hookd.service, with the path of this installation's "
        "hookd, into $XDG_CONFIG_HOME/systemd/user/ (~/.config/systemd/user/), then run "
        "`systemctl --user daemon-reload`, `systemctl --user enable --now hookd.socket` and "
        "`systemctl --user try-restart hookd.service`. Where `systemctl --user` does not work "
        "(no user manager), the units are written and those commands are printed instead. "
        "From then on the socket exists from login, and hookd starts with the first event.",
    )
    inst.add_argument("--dry-run", action="store_true", help="print the units and commands; change nothing")
    uninst = sub.add_parser(
        "uninstall-service",
        help="stop, disable and remove hookd's systemd user units",
        description="Run `systemctl --user disable --now hookd.socket hookd.service` (hookd stops "
        "cleanly: what clients sent is stored), remove both units from "
        "$XDG_CONFIG_HOME/systemd/user/ and reload. The database, mirror and spool are kept.",
    )
    uninst.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")
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
    """Flags > environment > configuration file > defaults (see hookd.config)."""
    return config.load(args)


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
        if key == "type":
            raise ConfigError(
                f"{pair!r}: the event's type is TYPE, the first argument; a field named type would be lost"
            )
    return out


def cmd_run(args: argparse.Namespace) -> int:
    import uvloop

    from hookd.daemon.app import serve

    settings = settings_from(args)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format="hookd: %(levelname)s: %(message)s")
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
    from hookd.writer.rebuild import rebuild

    logging.basicConfig(level="WARNING", stream=sys.stderr, format="hookd: %(levelname)s: %(message)s")
    paths = settings_from(args).paths
    result = rebuild(paths)
    print(f"rebuilt {paths.db}: {result.events} events from {result.files} mirror file(s)")
    if result.backup is not None:
        kept = "rejected lines and counters copied from it" if result.carried_over else "it could not be read"
        print(f"the old database is kept as {result.backup} ({kept})")
    return 0


def cmd_vacuum(args: argparse.Namespace) -> int:
    from hookd.writer.retention import human
    from hookd.writer.vacuum import vacuum

    try:
        max_age = config.parse_duration(args.max_age) if args.max_age else None
    except ValueError as e:
        raise ConfigError(f"--max-age: {e}") from None
    try:
        max_size = config.parse_size(args.max_size) if args.max_size else None
    except ValueError as e:
        raise ConfigError(f"--max-size: {e}") from None
    if max_age == 0 or max_size == 0:
        raise ConfigError("hookd vacuum: --max-age and --max-size must be more than zero")
    paths = settings_from(args).paths
    r = vacuum(paths, max_age=max_age, max_size=max_size)
    deleted = f"; {r.deleted} events deleted" if max_age is not None or max_size is not None else ""
    print(f"vacuumed {paths.db}: {human(r.before)} -> {human(r.after)}{deleted}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from hookd.writer.importer import import_files, render_progress

    settings = settings_from(args)
    paths = settings.paths
    progress = render_progress(sys.stderr) if sys.stderr.isatty() else None
    r = import_files(
        paths,
        args.files,
        force_type=args.type,
        max_line=settings.max_line,
        aliases=settings.aliases,
        progress=progress,
    )
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


def cmd_status(args: argparse.Namespace) -> int:
    from hookd.ops.status import gather_status, render_status

    st = gather_status(settings_from(args))
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        render_status(st, sys.stdout)
    return 0 if st["running"] else 3


def cmd_tail(args: argparse.Namespace) -> int:
    from hookd.ops.tail import tail

    if args.lines < 0:
        raise ConfigError("-n must be 0 or more")
    try:
        return tail(settings_from(args), args)
    except BrokenPipeError:
        return 0


def cmd_query(args: argparse.Namespace) -> int:
    from hookd.ops.query import query

    return query(settings_from(args), args.sql, args.json)


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.json:
        rows = [
            {"key": k, "value": config.display_value(k, v), "source": src} for k, v, src in config.effective(settings)
        ]
        print(json.dumps({"file": str(settings.config_path), "loaded": settings.config_loaded, "keys": rows}, indent=2))
    else:
        sys.stdout.write(config.render_toml(settings))
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    from hookd.ops.service import install

    install(dry_run=args.dry_run)
    return 0


def cmd_uninstall_service(args: argparse.Namespace) -> int:
    from hookd.ops.service import uninstall

    uninstall(dry_run=args.dry_run)
    return 0


def cmd_hooks(args: argparse.Namespace) -> int:
    from hookd.ops import githooks

    action = githooks.install if args.hooks_command == "install-git" else githooks.uninstall
    for line in action(args.repo):
        print(line)
    return 0


COMMANDS = {
    "status": cmd_status,
    "tail": cmd_tail,
    "query": cmd_query,
    "config": cmd_config,
    "run": cmd_run,
    "emit": cmd_emit,
    "rebuild": cmd_rebuild,
    "import": cmd_import,
    "vacuum": cmd_vacuum,
    "install-service": cmd_install_service,
    "uninstall-service": cmd_uninstall_service,
    "hooks": cmd_hooks,
}


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
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as cat and grep do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return 0


def entry() -> None:
    sys.exit(main())
