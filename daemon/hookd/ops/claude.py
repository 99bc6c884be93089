"""``hookd hooks install-claude`` / ``uninstall-claude``: hookd's hooks in a Claude Code settings file.

``EVENTS`` below is the one list of Claude Code hook events hookd knows: for each, whether
Claude Code accepts an http hook there, whether hookd installs a hook at all, in which form, and
why. docs/integrations.md shows it as a table that a test compares with ``markdown_table()``.

What install does to the file, and why:

- hookd's hooks are *appended* to each event's array, as a group of their own; every other key
  and every hook of the user's stays as it was. Installing again refreshes hookd's entries in
  place (a changed form, a moved ``hookd-emit``), so a second run leaves the file byte-identical.
- hookd's entries are recognised by what they run, never by an extra key (Claude Code validates
  its settings): a command hook running an absolute ``.../hookd-emit -`` and ending with the
  shell comment ``# hookd hooks install-claude``, or an http hook posting to ``/v1/events`` on a
  loopback address. A ``hookd-emit -`` the user wrote by hand is theirs: kept, and reported,
  since each of its events would then be stored twice.
- The file is written atomically (a temporary file renamed over it, with the file's mode); the
  first change keeps the previous bytes as ``<file>.hookd-backup`` (never overwritten); a file
  that is not JSON is refused with its line and column, untouched.
- The file's own indentation is kept (two spaces, as Claude Code writes it, for a new file).
- Uninstall removes hookd's entries (and the groups, arrays and ``hooks`` object that held only
  them); when what is left equals the backup, the backup's bytes are put back exactly.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import json
import os
import re
import shlex
import socket
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hookd.errors import ConfigError, UsageError
from hookd.framing import normalize_type
from hookd.ops import claude_telemetry
from hookd.ops.githooks import find_emit
from hookd.paths import PATH_RULES
from hookd.settings import Settings

#: Ends every command hookd installs: a shell comment, so the command runs as if it were not
#: there, and anyone reading the settings file sees where the entry came from.
TAG = "# hookd hooks install-claude"
BACKUP_SUFFIX = ".hookd-backup"
#: The only words allowed before hookd-emit in our command: where its socket and spool are.
_ASSIGNMENT = re.compile(r"HOOKD_(SOCKET|SPOOL_DIR)=.*", re.S)
#: Where Claude Code reads managed (administrator) settings on Linux.
MANAGED_SETTINGS = Path("/etc/claude-code/managed-settings.json")
#: Seconds: a command hook Claude Code waits for is killed after this (hookd-emit itself gives up
#: on the socket within about a second and spools).
COMMAND_TIMEOUT = 5
#: Seconds for an http hook: the listener answers 204 as soon as it has the event, so this only
#: matters while no daemon answers and systemd holds the port: a restart (RestartSec=1s, then
#: hookd's start) took over 2 s on a loaded machine with the real Claude Code, which then gave
#: the hook up, and the event with it (tests/test_claude_cli.py, kill -9 under systemd).
HTTP_TIMEOUT = 5
HTTP_PATH = "/v1/events"


@dataclass(frozen=True)
class ClaudeEvent:
    """One Claude Code hook event and what ``install-claude`` does for it."""

    name: str
    #: Claude Code accepts ``"type": "http"`` hooks for it (../shared/claude-code.md).
    http_allowed: bool = True
    #: install-claude registers a hook for it.
    included: bool = True
    #: With ``--http``, hookd's hook is an http hook (False: a command hook even then).
    http: bool = True
    #: The command form runs with ``"async": true``: Claude Code does not wait for it.
    background: bool = True
    #: The group's matcher (None: no matcher, every occurrence).
    matcher: str | None = None
    #: An http timeout of its own (seconds), where the event has a tighter budget.
    http_timeout: int = HTTP_TIMEOUT
    why: str = ""

    @property
    def type(self) -> str:
        """The type hookd stores it as (``PreToolUse`` -> ``pre_tool_use``)."""
        return normalize_type(self.name) or self.name

    def form(self, mode: str) -> str | None:
        """``"http"``, ``"command"`` or ``"command, async"`` with ``--http``/``--command``; None if left out."""
        if not self.included:
            return None
        if mode == "http" and self.http:
            return "http"
        return "command, async" if self.background else "command"


_CMD = {"http_allowed": False, "http": False}  # Claude Code takes only command hooks there
_SYNC = {"background": False}  # Claude Code may exit right after: a background hook could be cut off
_TOOL = {"matcher": "*"}
_QUIET = "hookd-emit prints nothing and never exits 2, so Claude Code goes on unchanged"

#: Every Claude Code hook event, in the order of Claude Code's reference. The one list: the CLI,
#: the docs' table and the tests read it from here.
# fmt: off
EVENTS: tuple[ClaudeEvent, ...] = (
    ClaudeEvent("SessionStart", **_CMD, why="command only (Claude Code's rule); its stdout would join the context: "
                "hookd-emit prints nothing"),
    ClaudeEvent("Setup", **_CMD, **_SYNC, why="command only (Claude Code's rule); waited for: Claude Code may exit "
                "right after setup"),
    ClaudeEvent("UserPromptSubmit", why="its stdout would join the prompt's context: " + _QUIET),
    ClaudeEvent("UserPromptExpansion", why=_QUIET),
    ClaudeEvent("PreToolUse", **_TOOL, why="a decision event: no output (or a 204) is no decision, the call goes on"),
    ClaudeEvent("PermissionRequest", http=False, **_TOOL, why="never http: an unreachable http hook here was reported "
                "to deny the tool call; the command answers nothing, so the dialog shows as usual"),
    ClaudeEvent("PermissionDenied", **_TOOL, why="a denied call has no PostToolUse: this tells it from a lost event"),
    ClaudeEvent("PostToolUse", **_TOOL, why="closes the call in `tool_calls`"),
    ClaudeEvent("PostToolUseFailure", **_TOOL, why="closes the call in `tool_calls` as `failed`"),
    ClaudeEvent("PostToolBatch", why="observation only"),
    ClaudeEvent("Notification", why="observation only"),
    ClaudeEvent("MessageDisplay", included=False, why="left out: it fires once per streamed text chunk (hundreds per "
                "answer) and the display waits on each hook; the text is in the transcript and in Stop's "
                "`last_assistant_message`"),
    ClaudeEvent("SubagentStart", why="observation only"),
    ClaudeEvent("SubagentStop", why="no output lets the subagent stop"),
    ClaudeEvent("TaskCreated", why="exit 2 would block the task: " + _QUIET),
    ClaudeEvent("TaskCompleted", why="exit 2 would block the task: " + _QUIET),
    ClaudeEvent("Stop", **_SYNC, why="waited for: `claude -p` exits right after; no output lets Claude stop"),
    ClaudeEvent("StopFailure", **_SYNC, why="waited for, as Stop"),
    ClaudeEvent("TeammateIdle", why="exit 2 would keep the teammate working: " + _QUIET),
    ClaudeEvent("InstructionsLoaded", why="observation only"),
    ClaudeEvent("ConfigChange", why="no output lets the change apply"),
    ClaudeEvent("CwdChanged", why="observation only"),
    ClaudeEvent("DirectoryAdded", why="observation only"),
    ClaudeEvent("FileChanged", included=False, why="left out: its matcher is the list of files Claude Code watches, "
                "yours to choose; add a hook of your own whose matcher names them"),
    ClaudeEvent("WorktreeCreate", included=False, why="left out: a WorktreeCreate hook replaces git's worktree "
                "creation and must print the new worktree's path; a recording hook would break `claude --worktree`"),
    ClaudeEvent("WorktreeRemove", why="observation only: git still removes the worktree"),
    ClaudeEvent("PreCompact", why="no output lets compaction go on"),
    ClaudeEvent("PostCompact", why="observation only"),
    ClaudeEvent("Elicitation", why="no output: the MCP server's question is shown to you as usual"),
    ClaudeEvent("ElicitationResult", why="no output passes your answer on unchanged"),
    ClaudeEvent("SessionEnd", **_SYNC, http_timeout=1, why="waited for: Claude Code exits right after; hooks share "
                "1.5 s here (http timeout 1 s); marks the session ended for `lost_tool_calls`"),
    ClaudeEvent("PreModelSwitch", included=False, why="left out: a hook that times out blocks the switch; "
                "PostModelSwitch records every switch made, with the same fields"),
    ClaudeEvent("PostModelSwitch", why="observation only"),
)
# fmt: on
EVENTS_BY_NAME: dict[str, ClaudeEvent] = {e.name: e for e in EVENTS}


def markdown_table() -> str:
    """The table of docs/integrations.md ("Which events, in which form"), generated from EVENTS."""
    rows = [
        "| event | stored as | http hooks allowed | with `--http` | with `--command` | why |",
        "|---|---|---|---|---|---|",
    ]
    for e in EVENTS:
        http, command = e.form("http") or "not installed", e.form("command") or "not installed"
        allowed = "yes" if e.http_allowed else "**no**"
        rows.append(f"| {e.name} | `{e.type}` | {allowed} | {http} | {command} | {e.why} |")
    return "\n".join(rows) + "\n"


# -- what an entry is -------------------------------------------------------------------------
def command_line(emit: str, env: Mapping[str, str] | None = None) -> str:
    """The command hookd installs: ``[VAR=value ...] /abs/hookd-emit - # hookd hooks install-claude``."""
    assign = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    return " ".join([*assign, shlex.quote(emit), "-", TAG])


def is_ours(handler: object) -> bool:
    """Whether a hook entry is one install-claude writes (see the module's docstring)."""
    if not isinstance(handler, dict):
        return False
    if handler.get("type") == "command":
        command = handler.get("command")
        if not isinstance(command, str) or not command.endswith(" - " + TAG):
            return False
        try:
            words = shlex.split(command.removesuffix(" - " + TAG))
        except ValueError:
            return False
        *assign, emit = words or [""]
        return (
            os.path.isabs(emit) and os.path.basename(emit) == "hookd-emit" and all(_ASSIGNMENT.match(a) for a in assign)
        )
    if handler.get("type") == "http":
        return _is_hookd_url(handler.get("url"))
    return False


def _is_hookd_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
    return parts.scheme == "http" and loopback and parts.path == HTTP_PATH


def _runs_hookd_emit(handler: object) -> bool:
    """A command hook of the user's own that runs hookd-emit (not one of ours)."""
    return (
        isinstance(handler, dict)
        and handler.get("type") == "command"
        and "hookd-emit" in str(handler.get("command", ""))
        and not is_ours(handler)
    )


def http_url(listen: object) -> str | None:
    """The URL of the daemon's listener from ``http_listen`` (``HOST:PORT``, ``[::1]:PORT`` or
    ``(host, port)``); None when it is not configured. A wildcard address is reached on loopback."""
    if not listen:
        return None
    if isinstance(listen, (tuple, list)) and not (len(listen) == 2 and isinstance(listen[1], int)):
        return http_url(listen[0])  # several addresses: the first one
    if isinstance(listen, str) and "," in listen:
        return http_url(listen.split(",")[0])
    if isinstance(listen, (tuple, list)):
        host, port = str(listen[0]), str(listen[1])
    else:
        host, sep, port = str(listen).strip().rpartition(":")
        if not sep:
            raise ConfigError(f"http listen address {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8787")
    host = host.strip("[]")
    # "localhost" may resolve to ::1 first for Node while the daemon listens on 127.0.0.1 (a
    # daemon told "localhost" listens on both).
    host = "127.0.0.1" if host == "localhost" else host
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"http listen address {listen!r}: the port must be a number from 1 to 65535")
    return f"http://{f'[{host}]' if ':' in host else host}:{int(port)}{HTTP_PATH}"


@dataclass(frozen=True)
class Plan:
    """What to write: the form (``http`` or ``command``), the command and the URL."""

    mode: str
    command: str
    url: str | None = None

    def handler(self, event: ClaudeEvent) -> dict[str, Any] | None:
        form = event.form(self.mode)
        if form is None:
            return None
        if form == "http":
            return {"type": "http", "url": self.url, "timeout": event.http_timeout}
        if event.background:
            return {"type": "command", "command": self.command, "async": True}
        return {"type": "command", "command": self.command, "timeout": COMMAND_TIMEOUT}

    def group(self, event: ClaudeEvent, handler: dict[str, Any]) -> dict[str, Any]:
        return {"matcher": event.matcher, "hooks": [handler]} if event.matcher else {"hooks": [handler]}


def emit_env(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables the command must carry so that hookd-emit finds this daemon without the user's
    environment (a Claude Code started from a desktop has neither HOOKD_HOME nor a shell
    profile): the socket and spool paths, only where they differ from hookd-emit's defaults."""
    env = {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith("HOOKD_")}
    out = {}
    for attr, var in (("socket", "HOOKD_SOCKET"), ("spool_dir", "HOOKD_SPOOL_DIR")):
        path = getattr(settings.paths, attr)
        if path != PATH_RULES[attr].default(env):
            out[var] = str(path)
    return out


def make_plan(settings: Settings, want: str | None, emit: str | None = None) -> Plan:
    """``want``: "http", "command" or None (http when the listener is configured, else command)."""
    command = command_line(emit or find_emit(), emit_env(settings))
    if want == "command":
        return Plan("command", command)
    url = http_url(getattr(settings, "http_listen", None))
    if url is not None and not _is_hookd_url(url):
        # Off loopback the listener wants a token, which these hooks do not carry.
        if want == "http":
            raise UsageError(
                f"--http: hookd's HTTP listener is on {url}, not a loopback address; install-claude writes http "
                "hooks for a loopback listener only (127.0.0.1 or ::1): listen there too, or use --command"
            )
        return Plan("command", command)
    if url is None:
        if want == "http":
            raise UsageError(
                '--http: hookd\'s HTTP listener is not configured. Configure it (`listen = "127.0.0.1:8787"` under '
                f"`[http]` in {settings.config_path or 'the configuration file'}, or HOOKD_HTTP=127.0.0.1:8787 "
                "for the daemon), restart hookd, and run this again; "
                "or use --command (a process per event, spooled while hookd is down)"
            )
        return Plan("command", command)
    return Plan("http", command, url)


# -- the settings file ------------------------------------------------------------------------
def default_settings_file(env: Mapping[str, str] | None = None) -> Path:
    """``~/.claude/settings.json`` (``$CLAUDE_CONFIG_DIR/settings.json`` when Claude Code is told
    to keep its configuration elsewhere)."""
    env = os.environ if env is None else env
    base = env.get("CLAUDE_CONFIG_DIR") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".claude")
    return Path(base) / "settings.json"


@dataclass
class SettingsFile:
    """A settings file as read: its bytes (None: it does not exist) and its parsed object."""

    path: Path  # the real file (a symlink, as dotfile managers make, is followed, not replaced)
    raw: bytes | None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def backup(self) -> Path:
        return self.path.with_name(self.path.name + BACKUP_SUFFIX)

    @property
    def hooks(self) -> dict[str, Any]:
        hooks = self.data.setdefault("hooks", {})
        if not isinstance(hooks, dict):
            raise ConfigError(f'{self.path}: "hooks" is not a JSON object; fix it by hand, then run this again')
        return hooks


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, where: Path) -> dict[str, Any]:
    """The object in ``raw``; a ConfigError (exit 2) naming line and column if it is not JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start}); nothing was changed") from None
    if not text.strip():
        return {}  # an empty file (`touch`) holds no settings yet
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{where}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}); Claude Code cannot read "
            "it either: fix it, then run this again (nothing was changed)"
        ) from None
    except ValueError as e:
        raise ConfigError(f"{where}: not valid JSON ({e}); fix it, then run this again (nothing was changed)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: holds a JSON {type(data).__name__}, not an object; Claude Code expects {{...}}")
    return data


def read_settings(path: Path) -> SettingsFile:
    real = Path(os.path.realpath(path))
    try:
        raw = real.read_bytes()
    except FileNotFoundError:
        return SettingsFile(real, None)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
    return SettingsFile(real, raw, parse_json(raw, path))


def render(data: dict[str, Any], like: bytes | None) -> bytes:
    """``data`` as JSON in the style of ``like`` (its indentation and final newline)."""
    indent: int | str = 2
    newline = True
    if like:
        text = like.decode("utf-8")
        lines = text.splitlines()
        if len(lines) > 1:
            lead = lines[1][: len(lines[1]) - len(lines[1].lstrip())]
            if lead and set(lead) == {"\t"}:
                indent = "\t"
            elif lead and set(lead) == {" "}:
                indent = len(lead)
        newline = text.endswith("\n")
    return (json.dumps(data, indent=indent, ensure_ascii=False) + ("\n" if newline else "")).encode()


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` in one rename: a reader (Claude Code) sees the old file or
    the new one, never a part. The mode is the old file's (0600 for a new one: settings may hold
    secrets in ``env``)."""
    if mode is None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o600
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".hookd-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


# -- merging ----------------------------------------------------------------------------------
def _groups(hooks: dict[str, Any], event: str, where: Path) -> list[Any]:
    groups = hooks.get(event)
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise ConfigError(f'{where}: "hooks.{event}" is not a JSON array; fix it by hand, then run this again')
    return groups


def _ours_in(groups: list[Any]) -> Iterator[tuple[dict[str, Any], int]]:
    """(group, index) of each of hookd's entries in an event's groups."""
    for group in groups:
        handlers = group.get("hooks") if isinstance(group, dict) else None
        if isinstance(handlers, list):
            for i, handler in enumerate(handlers):
                if is_ours(handler):
                    yield group, i


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    theirs: list[str] = field(default_factory=list)  # events that already run a hookd-emit of the user's
    env: bool = False  # the telemetry variables in ``env`` changed (claude_telemetry.py)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.env)


def merge(sf: SettingsFile, plan: Plan) -> Changes:
    """Bring hookd's entries in ``sf`` to ``plan``: one per included event, none elsewhere."""
    hooks, ch = sf.hooks, Changes()
    for name in [*hooks, *(e.name for e in EVENTS if e.name not in hooks)]:
        event = EVENTS_BY_NAME.get(name)
        want = plan.handler(event) if event else None
        groups = _groups(hooks, name, sf.path)
        found = list(_ours_in(groups))
        if any(_runs_hookd_emit(h) for g in groups if isinstance(g, dict) for h in g.get("hooks") or []):
            ch.theirs.append(name)
        if want is None:
            if found:
                _remove(hooks, name, found)
                ch.removed.append(name)
        elif not found:
            hooks.setdefault(name, []).append(plan.group(event, want))  # type: ignore[arg-type]
            ch.added.append(name)
        elif len(found) == 1 and found[0][0]["hooks"][found[0][1]] == want:
            ch.kept.append(name)
        else:
            group, i = found[0]
            group["hooks"][i] = want
            _remove(hooks, name, found[1:])
            ch.updated.append(name)
    return ch


def _remove(hooks: dict[str, Any], event: str, found: list[tuple[dict[str, Any], int]]) -> None:
    """Remove the entries ``found``, then the groups and the event array they leave empty."""
    for group, i in sorted(found, key=lambda f: -f[1]):  # from the end: earlier indexes stay valid
        del group["hooks"][i]
    emptied = {id(g) for g, _ in found if not g["hooks"]}
    hooks[event] = [g for g in hooks[event] if id(g) not in emptied]
    if not hooks[event]:
        del hooks[event]


def remove_all(sf: SettingsFile) -> list[str]:
    """Remove every entry of hookd's; returns the events that had one."""
    if not isinstance(sf.data.get("hooks"), dict):
        return []
    hooks = sf.hooks
    events = []
    for name in list(hooks):
        found = list(_ours_in(_groups(hooks, name, sf.path)))
        if found:
            _remove(hooks, name, found)
            events.append(name)
    if events and not hooks:
        del sf.data["hooks"]
    return events


def _pruned(data: Any) -> Any:
    """``data`` without empty event arrays or an empty ``hooks``: to compare with the backup."""
    if not isinstance(data, dict) or not isinstance(data.get("hooks"), dict):
        return data
    hooks = {k: v for k, v in data["hooks"].items() if v != []}
    out = {k: v for k, v in data.items() if k != "hooks"}
    if hooks:
        out["hooks"] = hooks
    return out


# -- the commands -----------------------------------------------------------------------------
def install(
    path: Path, settings: Settings, want: str | None = None, emit: str | None = None, telemetry: bool | None = None
) -> list[str]:
    """Install (or refresh) hookd's hooks in ``path``; one line per thing said. ``telemetry``:
    add (True) or remove (False) the env block of claude_telemetry.py; None refreshes it where
    an earlier ``--telemetry`` wrote it."""
    plan = make_plan(settings, want, emit)
    env = claude_telemetry.wanted(settings, http_url(getattr(settings, "http_listen", None))) if telemetry else None
    sf = read_settings(path)
    ch = merge(sf, plan)
    ch.env, said = _telemetry(sf, settings, telemetry, env)
    n = len(ch.added) + len(ch.updated) + len(ch.kept)
    form = f"http hooks posting to {plan.url}" if plan.mode == "http" else f"`{plan.command}`"
    lines = []
    if not ch.changed:
        lines.append(f"{path}: hookd's hooks are already in place for {n} events ({form}); nothing changed")
    else:
        if sf.raw is not None and not sf.backup.exists():
            write_atomic(sf.backup, sf.raw, stat.S_IMODE(sf.path.stat().st_mode))
            lines.append(f"{path}: the previous file is kept as {sf.backup}")
        write_atomic(sf.path, render(sf.data, sf.raw))
        done = (("added", ch.added), ("updated", ch.updated), ("removed", ch.removed))
        counts = ", ".join(f"{len(v)} {k}" for k, v in done if v) or "unchanged"
        lines.append(f"{path}: hookd's hooks for {n} Claude Code events ({counts}): {form}")
    left_out = [e.name for e in EVENTS if not e.included]
    lines.append(f"  not installed: {', '.join(left_out)} (why: docs/integrations.md, Claude Code)")
    if plan.mode == "http":
        http = sum(1 for e in EVENTS if e.form("http") == "http")
        lines.append(f"  {http} as http hooks; SessionStart, Setup and PermissionRequest always run the command")
    return lines + said + _notes(path, sf, ch, plan)


def _telemetry(
    sf: SettingsFile, settings: Settings, telemetry: bool | None, env: dict[str, str] | None
) -> tuple[bool, list[str]]:
    """Apply ``--telemetry`` / ``--no-telemetry`` (or refresh an earlier one) to ``sf``:
    (whether ``env`` changed, what to say)."""
    if telemetry is False:
        removed, kept = claude_telemetry.remove(sf.data, sf.path)
        if not removed and not kept:
            return False, ["telemetry: no export to hookd was set up in env; nothing to remove"]
        return True, [f"telemetry: removed {', '.join(removed) or 'nothing'} from env", *_kept(kept)]
    if env is None:
        if not claude_telemetry.installed(sf.data):
            return False, []
        try:
            env = claude_telemetry.wanted(settings, http_url(getattr(settings, "http_listen", None)))
        except UsageError as e:
            return False, [f"note: the telemetry export set up earlier is left as it is: {e}"]
    changed = claude_telemetry.merge(sf.data, env, sf.path)
    target = f"Claude Code exports its OpenTelemetry logs and metrics to {env[claude_telemetry.ENDPOINT]}"
    done = f"env: {', '.join(changed)} set" if changed else "already in place"
    line = f"telemetry: {target} ({claude_telemetry.PROTOCOL}; see the view session_usage); {done}"
    return bool(changed), [line, claude_telemetry.note_choices()]


def _kept(kept: list[str]) -> list[str]:
    if not kept:
        return []
    return [f"  kept {', '.join(kept)}: you changed them since install-claude set them"]


def _notes(path: Path, sf: SettingsFile, ch: Changes, plan: Plan) -> list[str]:
    """What the user should know about this installation: duplicates, an absent listener,
    managed settings, a shared project file."""
    notes = []
    if ch.theirs:
        notes.append(
            f"note: hooks of your own already run hookd-emit for {', '.join(ch.theirs)}, so each of those events "
            f"is stored twice: delete your entries (hookd's end with `{TAG}`)"
        )
    if plan.url is not None and not _answers(plan.url):
        notes.append(
            f"note: nothing answers on {plan.url} now: start hookd with its HTTP listener (`hookd run` or "
            "`systemctl --user restart hookd.service`), or Claude Code's events are lost until it runs; "
            "`--command` spools them instead"
        )
    notes += managed_notes(MANAGED_SETTINGS, plan)
    user_file = Path(os.path.realpath(default_settings_file()))
    if path.name == "settings.json" and path.parent.name == ".claude" and sf.path != user_file:
        notes.append(
            "note: a project's .claude/settings.json is usually committed, and these hooks name this machine's "
            "hookd-emit; .claude/settings.local.json keeps them to you"
        )
    return notes


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=0.5):
            return True
    except OSError:
        return False


def managed_notes(managed: Path, plan: Plan) -> list[str]:
    """What the administrator's managed settings do to hookd's hooks (Claude Code reads them
    first and they win): ``allowManagedHooksOnly`` runs no user hooks at all;
    ``allowedHttpHookUrls`` lists the only URLs http hooks may use."""
    try:
        data = json.loads(managed.read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    notes = []
    if data.get("allowManagedHooksOnly") is True:
        notes.append(
            f"note: {managed} sets allowManagedHooksOnly: Claude Code runs no hooks from this file; ask the "
            "administrator to add hookd's hooks to the managed settings"
        )
    allowed = data.get("allowedHttpHookUrls")
    if plan.url is not None and isinstance(allowed, list):
        if not any(isinstance(p, str) and fnmatch.fnmatchcase(plan.url, p) for p in allowed):
            notes.append(
                f"note: {managed} allows http hooks only to {allowed or 'no URL'}: Claude Code will not post to "
                f"{plan.url}; run `hookd hooks install-claude --command`, or ask for {plan.url} to be allowed"
            )
    return notes


def uninstall(path: Path) -> list[str]:
    """Remove hookd's hooks from ``path``; put the backup's exact bytes back when nothing else changed."""
    sf = read_settings(path)
    if sf.raw is None:
        return [f"{path}: no such file; nothing to do"]
    events = remove_all(sf)
    removed, kept = claude_telemetry.remove(sf.data, sf.path)
    if not events and not removed and not kept:
        return [f"{path}: no hooks of hookd's; nothing changed"]
    telemetry = [f"  telemetry: removed {', '.join(removed) or 'nothing'} from env"] if removed or kept else []
    telemetry += _kept(kept)
    try:
        backup_raw = sf.backup.read_bytes()
        backup = parse_json(backup_raw, sf.backup)
    except (OSError, ConfigError):
        backup_raw, backup = None, None
    if backup_raw is not None and _pruned(backup) == _pruned(sf.data):
        write_atomic(sf.path, backup_raw)
        sf.backup.unlink()
        return [
            f"{path}: hookd's hooks removed from {len(events)} events; the file is back as it was before "
            f"install-claude, byte for byte ({sf.backup.name} was that copy: removed)"
        ] + telemetry
    write_atomic(sf.path, render(sf.data, sf.raw))
    lines = [f"{path}: hookd's hooks removed from {len(events)} events; everything else is as it was", *telemetry]
    if backup_raw is not None:
        lines.append(f"  {sf.backup} still holds the file as it was before the first install-claude")
    return lines
