"""``hookd`` command line: parse arguments, run a command, map errors to exit codes.

Exit codes are ``hookd.errors.Exit`` (0 success, 1 a runtime failure, 2 a usage or
configuration error, 3 ``status`` with the daemon down, 130 interrupted). A bad argument is a
``UsageError`` (2) in every command. Nothing below this module calls ``sys.exit``.

The ``hookd run`` flags, and the path flags every command takes, are generated from the table
of keys (``hookd.settings.KEYS``): option, metavar, help, range and default come from there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hookd import __version__, config
from hookd.errors import EXIT_MEANINGS, ConfigError, Exit, HookdError, UsageError
from hookd.framing import normalize_type
from hookd.paths import PATH_RULES, check_socket_path
from hookd.settings import KEYS, KEYS_BY_NAME, Key, Settings
from hookd.values import format_size, parse_listen

log = logging.getLogger("hookd")

PATH_KEYS = tuple(k for k in KEYS if k.is_path)
RUN_KEYS = tuple(k for k in KEYS if k.flag is not None and not k.is_path)
FORMATTER = argparse.RawDescriptionHelpFormatter
#: How help names each path.
PATH_LABELS = {"socket": "socket", "db": "database", "mirror_dir": "mirror", "spool_dir": "spool"}


def paths_help() -> str:
    """The epilog of every command that reads the configuration: paths, then the file."""
    lines = ["paths (flag > variable > HOOKD_HOME > [paths] of the config file > default):"]
    for k in PATH_KEYS:
        head = f"  {PATH_LABELS[k.attr]:<11} {k.flag.option + ',':<13} {k.env:<17} "  # type: ignore[union-attr]
        text = f"default {PATH_RULES[k.attr].shown}"
        if len(head + text) > 79 and " (" in text:  # the alternative default on a line of its own
            first, rest = text.split(" (", 1)
            text = f"{first}\n{' ' * len(head)}({rest}"
        lines.append(head + text)
    under = ", ".join(f"DIR/{r.in_home}" + ("/" if attr.endswith("_dir") else "") for attr, r in PATH_RULES.items())
    lines += [
        f"  HOOKD_HOME=DIR puts them all under DIR: {under}",
        "config file: --config FILE, HOOKD_CONFIG, $HOOKD_HOME/config.toml, ~/.config/hookd/config.toml",
        "  (`hookd config` shows every setting and where it came from; docs/configuration.md)",
    ]
    return "\n".join(lines) + "\n"


def exit_help() -> str:
    return "exit codes:\n" + "".join(f"  {int(code):<4} {text}\n" for code, text in EXIT_MEANINGS.items())


def flag_help(key: Key) -> str:
    """A flag's help from its key: what it does, its range, its variable and its default."""
    flag = key.flag
    assert flag is not None
    text = flag.help or key.help
    if key.range is not None:
        text += f"; {key.range.text}"
    if key.is_path:
        return f"{text} ({key.env})"
    default = flag.shown(key.default) if flag.shown else key.show(key.default)
    return f"{text} ({key.env}; default {default})"


def add_key_flag(p: argparse.ArgumentParser, key: Key) -> None:
    """The key's flag, unset by default (None): config.load then knows it was not given."""
    flag = key.flag
    assert flag is not None
    p.add_argument(
        flag.option,
        metavar=flag.metavar,
        type=flag.type,
        choices=key.choices or None,
        action="append" if flag.repeat else "store",
        help=flag_help(key),
    )


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """--config and the path flags: every command that reads the configuration takes them."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (HOOKD_CONFIG; default $XDG_CONFIG_HOME/hookd/config.toml, "
        "or $HOOKD_HOME/config.toml when HOOKD_HOME is set)",
    )
    for key in PATH_KEYS:
        add_key_flag(p, key)


def _command(
    sub: argparse._SubParsersAction, name: str, help: str, description: str, example: str = ""
) -> argparse.ArgumentParser:
    """A command that reads the configuration: its epilog explains paths and the file (its
    parser function adds ``_add_config_flags`` after its own arguments, so help lists those first)."""
    p = sub.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=FORMATTER,
        epilog=(example + "\n\n" if example else "") + paths_help(),
    )
    return p


def _run_parser(sub: argparse._SubParsersAction) -> None:
    run = _command(
        sub,
        "run",
        "run the daemon in the foreground",
        "Run the daemon in the foreground until SIGTERM or SIGINT, which stop it "
        "cleanly: no new connections, everything already sent is read and committed, exit 0.",
    )
    _add_config_flags(run)
    for key in RUN_KEYS:
        add_key_flag(run, key)


def _rebuild_parser(sub: argparse._SubParsersAction) -> None:
    rebuild = _command(
        sub,
        "rebuild",
        "recreate the database from the JSONL mirror",
        "Recreate the database from the mirror files alone (the daemon must be stopped). "
        "The old database is kept beside it as <db>.bak-<time>; rejected lines and counters are "
        "copied from it when it is still readable.",
    )
    _add_config_flags(rebuild)


def _import_parser(sub: argparse._SubParsersAction) -> None:
    imp = _command(
        sub,
        "import",
        "backfill events from newline-delimited JSON files",
        "Store the events of existing JSONL logs, through the same validation as "
        "live events (invalid lines are recorded in `rejected`). Re-importing a file adds "
        "nothing: a line without an `id` gets one from its content and line number, and a "
        "rejected line is recorded once. While the daemon runs (or systemd listens for it) the "
        "import goes through it, beside live events; otherwise it runs on its own. Prints a "
        "summary of imported, duplicate and rejected lines; a progress bar on a terminal.",
    )
    imp.add_argument("files", nargs="+", metavar="FILE", type=Path)
    imp.add_argument("--type", metavar="T", help="store every line as type T (whatever its own type key says)")
    _add_config_flags(imp)


def _status_parser(sub: argparse._SubParsersAction) -> None:
    status = _command(
        sub,
        "status",
        "is the daemon up, what has it stored, which event types are live",
        "Show whether the daemon runs (pid, uptime, paths), what it did since it "
        "started (received, committed, rejected, spooled, queue, rate) and in total, and per "
        "event type: count, last seen, events in the last hour and a state: never (expected in "
        "the configuration, never seen), stale (silent longer than stale_after), future (its last "
        "ts is ahead of this clock) or live, problems listed first. Works with the daemon down, "
        "from the database. Exit 0 when the daemon runs, 3 when it does not; with --check, 0 or 1. "
        "A configuration error is printed first, the rest is shown without the bad setting, "
        "and the exit status is 2.",
        example="example, a crontab line (cron mails what a command prints): */15 * * * * hookd status --check",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object (keys in docs/operations.md)")
    status.add_argument(
        "--check",
        action="store_true",
        help="for monitoring: print one line per problem (an expected type never seen, stale or in the future; "
        "spool files waiting with no daemon; a daemon that does not answer) and exit 1 if there is one, "
        "else print nothing and exit 0",
    )
    _add_config_flags(status)


def _tail_parser(sub: argparse._SubParsersAction) -> None:
    tail = _command(
        sub,
        "tail",
        "print recent events; -f follows new ones as they are committed",
        "Print the last N events (oldest first), optionally only of one type or "
        "session or since a time. With -f, keep printing events as the daemon commits them: "
        "the daemon pushes them (no polling); a restart of the daemon is waited out. "
        "Ctrl-C ends it (exit 130). On a terminal, one line per event cut to its width: local "
        "time, type, session and the event's key fields (tool and command or file, prompt, "
        "commit subject...); into a pipe or file, or with --full, the whole event on each line "
        "(UTC time).",
    )
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="how many past events (default 10)")
    tail.add_argument("--type", metavar="T", help="only events of type T (PreToolUse and pre_tool_use alike)")
    tail.add_argument("--session", metavar="S", help="only events of session S")
    tail.add_argument("--since", metavar="WHEN", help="only events from WHEN on: 30m, 1h, 2d ago, or a time")
    tail.add_argument("--json", action="store_true", help="one JSON object per line: eid, type, ts, session, id, data")
    tail.add_argument("--full", action="store_true", help="on a terminal too, print each event whole (as into a pipe)")
    _add_config_flags(tail)


def _query_parser(sub: argparse._SubParsersAction) -> None:
    query = _command(
        sub,
        "query",
        "run a read-only SQL query against the database",
        "Run one SQL statement on a read-only connection to the database and print "
        "the result as a table (or JSON lines). Only reading is allowed: SELECT (WITH, "
        "functions) and the PRAGMAs that only read, such as table_info(T), table_list and "
        "index_list(T); anything else (writes, ATTACH, other PRAGMAs, transactions) is refused "
        "before it runs (exit 1), an empty statement is a usage error (exit 2). In the table, "
        "newlines, tabs and other control characters are escaped (\\n, \\t) so one row is one line. "
        "Tables and views: see docs/protocol.md.",
        example='example: hookd query "SELECT type, count FROM event_types ORDER BY count DESC"',
    )
    query.add_argument("sql", metavar="SQL")
    query.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per row; a column named data holding a JSON object or array is included as JSON, "
        "not as a string",
    )
    _add_config_flags(query)


def _config_parser(sub: argparse._SubParsersAction) -> None:
    cfg = _command(
        sub,
        "config",
        "print the effective configuration and where each value came from",
        "Print the configuration hookd would use, as TOML, with the source of every "
        "value (flag, environment variable, file, default) in a comment. Checks the file: an "
        "unknown key or a bad value is an error (exit 2) that names it.",
    )
    cfg.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: {"file": the configuration file, "loaded": whether it was read, '
        '"keys": [{"key", "value", "source"}, ...]}',
    )
    _add_config_flags(cfg)


def _dashboard_parser(sub: argparse._SubParsersAction) -> None:
    dash = _command(
        sub,
        "dashboard",
        "serve the dashboard on loopback and print its URL",
        "Serve the dashboard (tabs Overview, Activity, Tools, Sessions, Git, Kinds, Health over "
        "the live database) in the foreground until Ctrl-C or SIGTERM; its URL is printed first. "
        "It reads the database read-only, in a process of its own, and answers only your own "
        "uid on loopback (other users' connections are closed unanswered and counted). The "
        "daemon need not run; Health then says so.",
        example="example: hookd dashboard --open",
    )
    dash.add_argument("--open", action="store_true", help="also open the URL in a web browser")
    dash.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="where to serve, a loopback address; port 0 takes a free port (dashboard.listen, HOOKD_DASHBOARD; "
        "default 127.0.0.1:8788)",
    )
    _add_config_flags(dash)


def _vacuum_parser(sub: argparse._SubParsersAction) -> None:
    vac = _command(
        sub,
        "vacuum",
        "delete old events now and give the freed space back to the file system",
        "With the daemon stopped: optionally delete events older than --max-age, "
        "then the oldest ones while the data exceeds --max-size (types are not spared here), "
        "then rewrite the database without its free pages (SQLite VACUUM; needs about the "
        "database's size in free disk space meanwhile). Prints the size before and after. "
        "The mirror is not touched. While the daemon runs, retention deletes by itself and "
        "SQLite reuses the freed pages; only the file does not shrink.",
        example="examples: hookd vacuum; hookd vacuum --max-age 30d; hookd vacuum --max-size 500MiB",
    )
    vac.add_argument("--max-age", metavar="DURATION", help="delete events whose ts is older, e.g. 30d, 12h, 90m")
    vac.add_argument(
        "--max-size", metavar="SIZE", help="delete the oldest events while the data exceeds SIZE, e.g. 500MiB, 2G"
    )
    _add_config_flags(vac)


def _emit_parser(sub: argparse._SubParsersAction) -> None:
    emit = sub.add_parser(
        "emit",
        help="send one event from a terminal",
        description="Send one event. KEY=VALUE sets a string field; KEY:=JSON sets a field "
        "to a JSON value (number, true, object...). Exit 0 when the daemon took it or it was "
        "spooled for later (a note on stderr says so); with --wait, 0 once committed, 1 if not; "
        "2 for a TYPE or field hookd cannot send as written, or a configuration error. The "
        "socket and the spool are chosen as by every hookd command, [paths] of the configuration "
        "file included (the clients hookd-emit and hookd_client do not read the file: "
        "set HOOKD_SOCKET for them).",
        epilog="example: hookd emit deploy service=api ok:=true duration_ms:=812",
    )
    emit.add_argument("type", metavar="TYPE", help="event type, e.g. tool or git_commit")
    emit.add_argument("fields", nargs="*", default=[], metavar="KEY=VALUE|KEY:=JSON")
    emit.add_argument("--wait", action="store_true", help="wait until the event is committed and print its eid")
    emit.add_argument("--config", metavar="FILE", help="configuration file (HOOKD_CONFIG), for its [paths]")
    add_key_flag(emit, KEYS_BY_NAME["paths.socket"])
    add_key_flag(emit, KEYS_BY_NAME["paths.spool_dir"])


def _service_parsers(sub: argparse._SubParsersAction) -> None:
    inst = sub.add_parser(
        "install-service",
        help="run hookd as a systemd user service (socket activation)",
        description="Write hookd.socket and hookd.service, with the path of this installation's "
        "hookd, into $XDG_CONFIG_HOME/systemd/user/ (~/.config/systemd/user/), then run "
        "`systemctl --user daemon-reload`, `systemctl --user enable --now hookd.socket` and "
        "`systemctl --user try-restart hookd.service`. Where `systemctl --user` does not work "
        "(no user manager), the units are written and those commands are printed instead. "
        "From then on the socket exists from login, and hookd starts with the first event. "
        "With http.listen set (--http, HOOKD_HTTP, [http] listen), hookd-http.socket holds the HTTP port too.",
    )
    inst.add_argument("--dry-run", action="store_true", help="print the units and commands; change nothing")
    add_key_flag(inst, KEYS_BY_NAME["http.listen"])
    _add_config_flags(inst)
    uninst = sub.add_parser(
        "uninstall-service",
        help="stop, disable and remove hookd's systemd user units",
        description="Run `systemctl --user disable --now hookd.socket hookd.service` (hookd stops "
        "cleanly: what clients sent is stored), remove both units from "
        "$XDG_CONFIG_HOME/systemd/user/ and reload. The database, mirror and spool are kept.",
    )
    uninst.add_argument("--dry-run", action="store_true", help="print what would be done; change nothing")


def _hooks_parser(sub: argparse._SubParsersAction) -> None:
    hooks = sub.add_parser(
        "hooks",
        help="install hooks that send events to hookd (git, Claude Code)",
        description="Install or remove hooks that record events through hookd-emit.",
    )
    hooks_sub = hooks.add_subparsers(dest="hooks_command", metavar="SUBCOMMAND", required=True)
    for name, text in (
        (
            "install-git",
            "add post-commit, post-checkout, post-merge and post-rewrite hooks that emit git_commit, "
            "git_checkout, git_merge and git_rewrite (amend, rebase) events (existing hooks are kept and "
            "still run; running it again only refreshes hookd's hooks)",
        ),
        ("uninstall-git", "remove hookd's git hooks and put back the hooks they replaced"),
    ):
        p = hooks_sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("repo", nargs="?", default=".", type=Path, metavar="REPO", help="the repository (default: .)")
    _claude_parsers(hooks_sub)


#: ``hookd hooks install-claude --help``: what it writes and where (docs/integrations.md says more).
CLAUDE_INSTALL_HELP = """\
Merge hookd's hooks into a Claude Code settings file: one hook for every Claude Code event
that can be recorded without changing what Claude Code does (the table, with the reason for
each event left out or handled specially, is in docs/integrations.md, "Claude Code").

Every other key and every hook already in the file is kept; hookd's hooks are appended to each
event's list. Running it again refreshes them (the file stays byte-identical when nothing
changed); the first change keeps the previous file as FILE.hookd-backup. A file that is not
valid JSON is refused, with the line and column, and left untouched. The commands name this
installation's hookd-emit by its absolute path, so Claude Code's PATH does not matter.

--http (the default when the daemon's HTTP listener is configured, [http] listen or
HOOKD_HTTP): http hooks where Claude Code allows them, no process per event, but an event is
lost while nothing listens on the port (socket activation prevents that). --command: a
`hookd-emit -` process per event, spooled while the daemon is down. SessionStart, Setup and
PermissionRequest always use the command.

--telemetry also adds to the file's env what makes Claude Code export its OpenTelemetry logs
and metrics (cost, tokens, API errors) to the HTTP listener: CLAUDE_CODE_ENABLE_TELEMETRY=1,
OTEL_LOGS_EXPORTER=otlp, OTEL_METRICS_EXPORTER=otlp, OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf,
OTEL_EXPORTER_OTLP_ENDPOINT; a differing value of yours is refused, never overwritten. Whether
tool details and prompt text are exported stays yours: OTEL_LOG_TOOL_DETAILS,
OTEL_LOG_USER_PROMPTS (docs/integrations.md, "Telemetry"). --no-telemetry removes it."""


def _claude_parsers(hooks_sub: argparse._SubParsersAction) -> None:
    settings_help = (
        "the Claude Code settings file (default ~/.claude/settings.json; a project's "
        ".claude/settings.json or .claude/settings.local.json works the same)"
    )
    inst = hooks_sub.add_parser(
        "install-claude",
        help="add hooks that record every Claude Code event to ~/.claude/settings.json (or --settings FILE)",
        description=CLAUDE_INSTALL_HELP,
        formatter_class=FORMATTER,
    )
    inst.add_argument("--settings", type=Path, metavar="FILE", help=settings_help)
    form = inst.add_mutually_exclusive_group()
    form.add_argument("--http", dest="form", action="store_const", const="http", help="http hooks where allowed")
    form.add_argument("--command", dest="form", action="store_const", const="command", help="command hooks only")
    tel = inst.add_mutually_exclusive_group()
    tel.add_argument(
        "--telemetry",
        dest="telemetry",
        action="store_const",
        const=True,
        help="also make Claude Code export its OpenTelemetry logs and metrics (cost, tokens) to hookd's HTTP "
        "listener: CLAUDE_CODE_ENABLE_TELEMETRY and OTEL_* variables in the file's env (needs [http] listen)",
    )
    tel.add_argument(
        "--no-telemetry",
        dest="telemetry",
        action="store_const",
        const=False,
        help="remove what --telemetry added to env (the hooks stay)",
    )
    _add_config_flags(inst)
    uninst = hooks_sub.add_parser(
        "uninstall-claude",
        help="remove hookd's hooks from a Claude Code settings file",
        description="Remove exactly the hooks `hookd hooks install-claude` added, and the env variables its "
        "--telemetry added (every other hook and key stays); when nothing else changed since, the file is put back "
        "byte for byte from FILE.hookd-backup.",
    )
    uninst.add_argument("--settings", type=Path, metavar="FILE", help=settings_help)


#: Each command's parser, in the order ``hookd --help`` lists them.
PARSERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _run_parser,
    _rebuild_parser,
    _import_parser,
    _status_parser,
    _tail_parser,
    _query_parser,
    _config_parser,
    _dashboard_parser,
    _vacuum_parser,
    _emit_parser,
    _service_parsers,
    _hooks_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookd",
        description="hookd: a local event-ingest daemon for hooks. Hooks send newline-delimited "
        "JSON to a Unix socket; hookd validates, batches and stores it in SQLite and a JSONL mirror.",
        formatter_class=FORMATTER,
        epilog=paths_help() + "\n" + exit_help(),
    )
    parser.add_argument("--version", action="version", version=f"hookd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in PARSERS:
        add(sub)
    return parser


def event_type_arg(text: str, what: str) -> str:
    """An event type given on the command line, normalized as the daemon would; the same
    usage error (exit 2) from every command that takes one."""
    etype = normalize_type(text)
    if etype is None:
        raise UsageError(
            f"{what} {text!r} is not a valid event type: it must normalize to [a-z][a-z0-9_]{{0,62}} "
            "(see docs/protocol.md)"
        )
    return etype


def settings_from(args: argparse.Namespace) -> Settings:
    """Flags > environment > configuration file > defaults (see hookd.config)."""
    return config.load(args)


def looking_settings(args: argparse.Namespace) -> tuple[Settings, list[ConfigError]]:
    """The settings of a command that only looks (status, tail, query), without what cannot be
    used: a broken configuration must not hide what the database still shows. Each error is
    printed first; the command then runs, and ``despite`` makes its exit status 2."""
    settings, problems = config.load_lenient(args)
    for e in problems:
        print(f"hookd: error: {e} (left out: going on without it)", file=sys.stderr)
    return settings, problems


def despite(problems: Sequence[ConfigError], run: Callable[[], int]) -> int:
    """``run()``'s status, or 2 after configuration errors (printed by looking_settings): a
    script must see them even when the rest worked. A failure of its own is printed too."""
    if not problems:
        return run()
    try:
        run()
    except HookdError as e:
        print(f"hookd: error: {e}", file=sys.stderr)
    return int(Exit.USAGE)


def socket_activated() -> bool:
    """Whether systemd passed this process its socket (then no path of ours is bound)."""
    return os.environ.get("LISTEN_PID", "") == str(os.getpid()) and bool(os.environ.get("LISTEN_FDS"))


def checked_socket(settings: Settings) -> Path:
    """The socket path, refused (exit 2) when it is too long to bind or connect to."""
    check_socket_path(settings.paths.socket, settings.sources.get("socket"))
    return settings.paths.socket


def parse_fields(pairs: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        if ":=" in pair and pair.index(":=") < pair.index("=") + 1:
            key, raw = pair.split(":=", 1)
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError as e:
                raise UsageError(f"{pair!r}: the value after := is not JSON ({e.msg})") from None
        elif "=" in pair:
            key, value = pair.split("=", 1)
            out[key] = value
        else:
            raise UsageError(f"{pair!r}: expected KEY=VALUE or KEY:=JSON")
        if not key:
            raise UsageError(f"{pair!r}: empty key")
        if key == "type":
            raise UsageError(
                f"{pair!r}: the event's type is TYPE, the first argument; a field named type would be lost"
            )
    return out


def cmd_run(args: argparse.Namespace) -> int:
    import uvloop

    from hookd.daemon.app import serve

    settings = settings_from(args)
    if not socket_activated():  # refused here, before the daemon starts: not a bind traceback
        checked_socket(settings)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format="hookd: %(levelname)s: %(message)s")
    return uvloop.run(serve(settings))


def cmd_emit(args: argparse.Namespace) -> int:
    import hookd_client

    event_type_arg(args.type, "TYPE")  # checked only: the daemon normalizes and aliases it
    fields = parse_fields(args.fields)
    # The paths every hookd command uses ([paths] of the file included), handed to the client
    # the way a hook would: its variables. A path too long to connect to is refused, not spooled.
    settings = settings_from(args)
    os.environ["HOOKD_SOCKET"] = str(checked_socket(settings))
    os.environ["HOOKD_SPOOL_DIR"] = str(settings.paths.spool_dir)
    os.environ["HOOKD_SPOOL_MAX"] = format_size(settings.spool_max_size)  # "unlimited" for None
    if args.wait:
        try:
            committed = hookd_client.emit(args.type, fields, wait=True)
            print(committed)
            if committed.truncated:  # over the line limit: stored with its longest values cut
                cut = ", ".join(f"{v['path']} ({v['length']} characters)" for v in committed.truncated)
                print(f"hookd: stored with values cut to fit the line limit: {cut}", file=sys.stderr)
        except hookd_client.HookdClientError as e:
            print(f"hookd: {e}", file=sys.stderr)
            return 1
        return 0
    before = hookd_client.spooled()
    if not hookd_client.emit(args.type, fields):
        print(
            f"hookd: the event could not be sent, and the spool {hookd_client.spool_dir()} is full (spool.max_size "
            f"{format_size(settings.spool_max_size)}; the drop is counted) or not writable",
            file=sys.stderr,
        )
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
        raise UsageError(f"--max-age: {e}") from None
    try:
        max_size = config.parse_size(args.max_size) if args.max_size else None
    except ValueError as e:
        raise UsageError(f"--max-size: {e}") from None
    if max_age == 0 or max_size == 0:
        raise UsageError("hookd vacuum: --max-age and --max-size must be more than zero")
    from hookd.forwarding import forwarded_eid

    settings = settings_from(args)
    paths = settings.paths
    # With forwarding on, events not forwarded yet are kept (as by the daemon's retention).
    r = vacuum(paths, max_age=max_age, max_size=max_size, forwarded=forwarded_eid(settings))
    deleted = f"; {r.deleted} events deleted" if max_age is not None or max_size is not None else ""
    print(f"vacuumed {paths.db}: {human(r.before)} -> {human(r.after)}{deleted}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from hookd.backfill import check_arguments
    from hookd.ops.importing import through_daemon
    from hookd.writer.importer import import_files, render_progress

    force_type = event_type_arg(args.type, "--type") if args.type is not None else None
    check_arguments(args.files, force_type)
    settings = settings_from(args)
    paths = settings.paths
    progress = render_progress(sys.stderr) if sys.stderr.isatty() else None
    # Through the running (or socket-activated) daemon if there is one, else offline.
    r = through_daemon(paths, args.files, force_type, progress)
    if r is None:
        r = import_files(
            paths,
            args.files,
            force_type=force_type,
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
    if r.through is not None:
        print(f"  through the running daemon ({r.through}), beside live events")
    for reason, n in sorted(r.rejected.items()):
        print(f"  rejected {reason}: {n}")
    if rejected:
        print(f'  see: sqlite3 {paths.db} "SELECT reason, detail, preview FROM rejected ORDER BY rid DESC"')
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from hookd.ops.status import gather_status, render_problems, render_status

    settings, problems = looking_settings(args)
    try:
        checked_socket(settings)
    except ConfigError as e:  # the daemon cannot be asked; the database still answers
        print(f"hookd: error: {e}", file=sys.stderr)
        problems.append(e)

    def show() -> int:
        st = gather_status(settings)
        st["config_errors"] = [str(e) for e in problems]
        if args.json:
            print(json.dumps(st, indent=2))
        elif args.check:
            render_problems(st, sys.stdout)
        else:
            render_status(st, sys.stdout)
        if args.check:
            return Exit.FAILURE if st["problems"] else Exit.OK
        return Exit.OK if st["running"] else Exit.NOT_RUNNING

    return despite(problems, show)


def cmd_tail(args: argparse.Namespace) -> int:
    from hookd.ops.tail import tail

    if args.lines < 0:
        raise UsageError("-n must be 0 or more")
    if args.type:  # an empty --type has always meant no filter
        args.type = event_type_arg(args.type, "--type")
    settings, problems = looking_settings(args)
    if args.follow:  # following needs the daemon's socket: refuse now rather than wait forever
        checked_socket(settings)
    try:
        return despite(problems, lambda: tail(settings, args))
    except BrokenPipeError:
        return 0


def cmd_query(args: argparse.Namespace) -> int:
    from hookd.ops.query import check_sql, query

    check_sql(args.sql)  # an empty statement is a usage error before anything is opened
    settings, problems = looking_settings(args)
    return despite(problems, lambda: query(settings, args.sql, args.json))


def cmd_dashboard(args: argparse.Namespace) -> int:
    from hookd.dashboard.server import serve

    settings = settings_from(args)
    if args.listen is not None:
        try:
            settings.dashboard_listen = parse_listen(args.listen)
        except ValueError as e:
            raise UsageError(f"--listen: {e}") from None
        settings.sources["dashboard_listen"] = "flag --listen"
        settings.validate()
    if settings.dashboard_listen is None:
        raise ConfigError("dashboard.listen is off: set it to a loopback HOST:PORT, or pass --listen")
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format="hookd: %(levelname)s: %(message)s")

    def ready(url: str) -> None:
        print(url, flush=True)  # first, alone on its line: scripts read it
        if args.open:
            import webbrowser

            webbrowser.open(url)

    try:
        serve(settings, settings.dashboard_listen, ready)
    except OSError as e:
        raise HookdError(
            f"cannot serve the dashboard on {settings.dashboard_listen}: {e.strerror or e} (another dashboard "
            "running? choose another port with --listen or dashboard.listen)"
        ) from None
    return 0


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


def moved_client_paths() -> tuple[Settings, list[str]] | None:
    """The configuration, and which of the paths clients use (socket, spool) its file moves;
    None when it moves none or does not load. The clients (hookd-emit, hookd_client) read
    variables only: a path set in the file is not where they look."""
    try:
        settings = config.load(None)
    except HookdError:
        return None  # `hookd config` says what is wrong; the commands asking this go on
    moved = [a for a in ("socket", "spool_dir") if settings.sources.get(a, "").startswith("file ")]
    return (settings, moved) if moved else None


def cmd_install_service(args: argparse.Namespace) -> int:
    from hookd.ops.service import install

    settings = settings_from(args)
    install(dry_run=args.dry_run, http=settings.http_listen, forward=settings.forward_url is not None)
    found = moved_client_paths()
    if found is not None and "socket" in found[1]:
        settings = found[0]
        print(
            f"note: {settings.config_path} sets [paths] socket = {settings.paths.socket}, but the service listens "
            "on $XDG_RUNTIME_DIR/hookd/hookd.sock (hookd.socket's ListenStream=), where hooks look by default; "
            "`hookd status` and `hookd tail -f` look at the file's path: remove it from the file, or move "
            'both (docs/configuration.md, "Under systemd")'
        )
    return 0


def cmd_uninstall_service(args: argparse.Namespace) -> int:
    from hookd.ops.service import uninstall

    uninstall(dry_run=args.dry_run)
    return 0


def cmd_hooks(args: argparse.Namespace) -> int:
    from hookd.ops import claude, githooks

    if args.hooks_command == "install-claude":
        path = args.settings or claude.default_settings_file()
        lines = claude.install(path, settings_from(args), args.form, telemetry=args.telemetry)
    elif args.hooks_command == "uninstall-claude":
        lines = claude.uninstall(args.settings or claude.default_settings_file())
    else:
        action = githooks.install if args.hooks_command == "install-git" else githooks.uninstall
        lines = action(args.repo)
    for line in lines:
        print(line)
    found = moved_client_paths()
    if found is not None and args.hooks_command == "install-git":
        settings, moved = found
        env = " ".join(f"{PATH_RULES[a].env}={getattr(settings.paths, a)}" for a in moved)
        print(
            f"note: {settings.config_path} moves the {' and the '.join(PATH_LABELS[a] for a in moved)}; the hooks "
            f"send with hookd-emit, which reads no configuration file: set {env} in the environment git runs "
            "in (your shell profile), or their events go to the default socket"
        )
    return 0


COMMANDS = {
    "status": cmd_status,
    "tail": cmd_tail,
    "query": cmd_query,
    "config": cmd_config,
    "dashboard": cmd_dashboard,
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
    args = parser.parse_args(argv)  # a bad command line exits 2 here, as every UsageError does
    try:
        return int(COMMANDS[args.command](args))
    except HookdError as e:
        print(f"hookd: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except ExceptionGroup as eg:  # from the daemon's task group: one line, not a traceback
        message, code = group_error(eg)
        log.debug("the daemon failed", exc_info=eg)
        print(f"hookd: error: {message}", file=sys.stderr)
        return int(code)
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as cat and grep do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return int(Exit.OK)


def group_error(eg: BaseExceptionGroup) -> tuple[str, int]:
    """One message for every error of a group, and its exit code: the errors' own when they
    agree (a group of usage errors is still a usage error), else 1."""
    leaves = _leaves(eg)
    unexpected = [e for e in leaves if not isinstance(e, HookdError)]
    message = "; ".join(str(e) if isinstance(e, HookdError) else f"{type(e).__name__}: {e}" for e in leaves)
    if unexpected:
        message += " (with --log-level debug the log shows where)"
    codes = {e.exit_code if isinstance(e, HookdError) else Exit.FAILURE for e in leaves}
    return message, codes.pop() if len(codes) == 1 else Exit.FAILURE


def _leaves(eg: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in eg.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def entry() -> None:
    sys.exit(main())
