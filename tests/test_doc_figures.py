"""The figures the docs quote are the code's.

Docs restate constants of the code (how many batches wait for the writer, a step's rows, pipe
sizes, defaults, limits). Each such statement is a row of ``FIGURES``: a pattern that finds the
figure in the doc (whitespace-normalized, so line breaks do not matter) and the value it must
equal. A changed constant fails here until the docs say the new figure; a reworded sentence
fails until its row follows it. A doc that quotes a new figure gets a row.

Measurements (µs, events/s, MB) are not constants and are not checked here; docs/performance.md
has its own procedure.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import hookd_client

# -- Where each constant lives: the one place to adjust when a module moves. ----------------
from hookd import cli, config, durations, framing, otlp, oversize, spool, wal, wire
from hookd.daemon import (
    control_protocol,
    forwarder_link,
    http_listener,
    http_protocol,
    limits,
    otlp_http,
    retention_schedule,
    sdnotify,
)
from hookd.dashboard import queries as dashboard_queries
from hookd.dashboard import server as dashboard_server
from hookd.forwarder import forwarder as forwarder_process
from hookd.ops import claude, githooks
from hookd.ops import status as status_command
from hookd.paths import Paths
from hookd.settings import Settings
from hookd.writer import mirror, schema
from hookd.writer import writer as writer_process

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(Settings) if f.default is not dataclasses.MISSING
}
SHELL_CLIENT = (ROOT / "clients" / "shell" / "hookd-emit").read_text()
SERVICE_UNIT = (ROOT / "systemd" / "hookd.service").read_text()


def _shell(pattern: str) -> int:
    """A figure of the shell client, which has no module to import."""
    (value,) = set(re.findall(pattern, SHELL_CLIENT))
    return int(value)


def _unit_seconds(key: str) -> float:
    m = re.search(rf"^{key}=(\d+)s$", SERVICE_UNIT, re.M)
    assert m, f"{key}= not in systemd/hookd.service"
    return float(m.group(1))


#: ``hookd tail``'s default for ``-n``.
TAIL_LINES: int = cli.build_parser().parse_args(["tail"]).lines
#: Uids refused are logged once per this many seconds.
REFUSED_LOG_INTERVAL: float = inspect.signature(limits.LogThrottle).parameters["interval"].default
WATCHDOG_SEC = _unit_seconds("WatchdogSec")
#: How often keep_alive pings the watchdog under the shipped unit.
WATCHDOG_PING = min(sdnotify.STATUS_INTERVAL, WATCHDOG_SEC / 2)
SHELL_WAIT = _shell(r"\$\{HOOKD_WAIT:-(\d+)\}")
SHELL_SPOOL_CHARS = _shell(r'"\$\{#line\}" -gt (\d+)')
SHELL_MISUSE_EXIT = _shell(r"usage >&2; exit (\d+)")


def config_defaults() -> dict[str, Any]:
    """Every configuration key (``section.key``) with its default as the file spells it."""
    return {k.name: config.display_value(k.name, DEFAULTS[k.attr]) for k in config.KEYS if k.attr in DEFAULTS}


def accepts(**value: Any) -> bool:
    """Whether the settings accept ``value`` (one field), everything else at its default."""
    paths = Paths(*(Path("/nonexistent"),) * 4)
    try:
        Settings(paths, **value).validate()
    except Exception:
        return False
    return True


# -- Reading a figure as the docs write it --------------------------------------------------
UNITS = {
    "": 1,
    "B": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "ms": 0.001,
    "s": 1,
    "second": 1,
    "seconds": 1,
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
QUANTITY = re.compile(r"(?:(\d[\d, ]*(?:\.\d+)?|a|one)\s*)?([A-Za-z]*)")


def quantity(text: str) -> float:
    """``2000``, ``10 000``, ``50,000``, ``0.5 s``, ``1 MiB``, ``a second``, ``minute``, ``one day``."""
    m = QUANTITY.fullmatch(text.strip())
    assert m and m.group(2) in UNITS, f"cannot read {text!r} as a figure"
    number = m.group(1)
    n = 1.0 if number in (None, "a", "one") else float(number.replace(",", "").replace(" ", ""))
    return n * UNITS[m.group(2)]


@dataclass(frozen=True)
class Figure:
    doc: str  # relative to the repository root
    pattern: str  # one group: the figure as written
    value: float  # what it must equal

    def __str__(self) -> str:
        return f"{self.doc}: {self.pattern}"


FIGURES = [
    # the dashboard and its summaries (schema migration 8)
    Figure("docs/architecture.md", r"CPU priority \(`os.nice\((\d+)\)`", dashboard_server.NICE),
    Figure("docs/architecture.md", r"`server.AnswerCache`,\s+up to (\d+ s)\)", dashboard_server.CACHE_SECONDS),
    Figure("docs/architecture.md", r"`tool_slowest` \(the (\d+) slowest", schema.SLOWEST_PER_HOUR),
    Figure("docs/architecture.md", r"among the newest ([\d,]+) calls", dashboard_queries.UNCLOSED_SEARCHED),
    Figure("docs/architecture.md", r"log-spaced buckets, (\d+) a doubling", durations.BUCKETS_PER_DOUBLING),
    Figure("docs/protocol.md", r"the (\d+) slowest timed closing events", schema.SLOWEST_PER_HOUR),
    # the pipeline's depth and the writer's
    Figure("docs/architecture.md", r"`max_inflight` \((\d+)\) batches", DEFAULTS["max_inflight"]),
    Figure("docs/performance.md", r"\(`max_inflight`, (\d+)\)", DEFAULTS["max_inflight"]),
    Figure("docs/reliability.md", r"the pipeline is full \((\d+) batches\)", DEFAULTS["max_inflight"]),
    Figure("docs/architecture.md", r"committed together \(up to (\d+)\)", writer_process.MAX_COALESCE),
    Figure("docs/performance.md", r"the writer commits together \((\d+)\)", writer_process.MAX_COALESCE),
    Figure("docs/reliability.md", r"doubling to (\d+ s)\)", writer_process.MAX_BACKOFF),
    Figure("docs/architecture.md", r"pipes enlarged to (\d+ MiB)", wire.PIPE_SIZE),
    Figure("docs/performance.md", r"daemon's are enlarged to (\d+ MiB)", wire.PIPE_SIZE),
    # ingest defaults quoted in prose
    Figure("docs/operations.md", r"listen queue \((\d+) deep\)", DEFAULTS["backlog"]),
    Figure("docs/operations.md", r"listen queue \((\d+) connections deep", DEFAULTS["backlog"]),
    Figure("docs/operations.md", r"in the listen queue \(up to (\d+) connections\)", DEFAULTS["backlog"]),
    Figure("docs/operations.md", r"one batch, ≤ (\d+ ms) worth", DEFAULTS["batch_delay"]),
    Figure("docs/operations.md", r"keep sending for up to (\S+ seconds?)", DEFAULTS["shutdown_grace"]),
    Figure("docs/protocol.md", r"`--idle-timeout` seconds \((\d+) by default\)", DEFAULTS["idle_timeout"]),
    Figure("docs/protocol.md", r"\((\d+ MiB) by default, `--max-line`\)", DEFAULTS["max_line"]),
    # events over the line limit (oversize.py)
    Figure("docs/protocol.md", r"over `max_line` \((\d+ MiB)\)", DEFAULTS["max_line"]),
    Figure("docs/protocol.md", r"over `truncate_limit` \((\d+ MiB);", DEFAULTS["truncate_limit"]),
    Figure("docs/protocol.md", r"none is cut below (\d+)\s+characters", oversize.MIN_KEEP),
    Figure("docs/protocol.md", r"longest first, at most (\d+) of them", oversize.MAX_LISTED),
    Figure("docs/protocol.md", r"with over ([\d,]+) values to look at", oversize.MAX_VALUES),
    Figure("docs/protocol.md", r"about ([\d,]+) of\s+its values", oversize.MAX_VALUES),
    Figure("docs/protocol.md", r"at most (\d+) × `truncate_limit`", oversize.BUDGET_FACTOR),
    Figure(
        "docs/protocol.md", r"× `truncate_limit` \((\d+ MiB)\)", oversize.BUDGET_FACTOR * DEFAULTS["truncate_limit"]
    ),
    Figure("docs/protocol.md", r"cuts them too \(up to (\d+) ×", oversize.CUT_FACTOR),
    Figure("docs/configuration.md", r"holds at most (\d+) × this", oversize.BUDGET_FACTOR),
    Figure("docs/protocol.md", r"the daemon reads the spool within (a second)", DEFAULTS["spool_interval"]),
    Figure("docs/operations.md", r"`stale_after` \(default (one day)", DEFAULTS["stale_after"]),
    # checkpoints and retention
    Figure("docs/architecture.md", r"PASSIVE, every ([\d.]+ s)", DEFAULTS["checkpoint_interval"]),
    Figure("docs/operations.md", r"PASSIVE every ([\d.]+ s)", DEFAULTS["checkpoint_interval"]),
    Figure("docs/operations.md", r"checkpoints the WAL every ([\d.]+ s)", DEFAULTS["checkpoint_interval"]),
    Figure("docs/operations.md", r"when the WAL holds more than (\d+ MiB)", wal.TRUNCATE_BYTES),
    Figure("docs/operations.md", r"deleted ([\d ]+) events or more", retention_schedule.LARGE_DELETION),
    Figure("docs/operations.md", r"`retention_interval` \((\d+ s)\)", DEFAULTS["retention_interval"]),
    Figure("docs/configuration.md", r"\| `\[retention\] interval` \| (\d+ s) \|", DEFAULTS["retention_interval"]),
    Figure("docs/architecture.md", r"one step deletes at most (\d+) events", wire.STEP_ROWS),
    Figure("docs/configuration.md", r"Deletion runs in steps of at most (\d+) events", wire.STEP_ROWS),
    Figure("docs/operations.md", r"deletes what is due in steps of at most (\d+) events", wire.STEP_ROWS),
    # the control socket, the event format, the mirror
    Figure("docs/architecture.md", r"its own bounds \((\d+) connections", control_protocol.MAX_CONNECTIONS),
    Figure("docs/protocol.md", r"at most (\d+) are open at once", control_protocol.MAX_CONNECTIONS),
    Figure("docs/protocol.md", r"logs once per uid per (minute)", REFUSED_LOG_INTERVAL),
    Figure("docs/protocol.md", r"since the epoch × 2\^(\d+)", framing.EidClock.SHIFT),
    Figure("docs/protocol.md", r"`eid >> (\d+)` is the receive time", framing.EidClock.SHIFT),
    Figure("docs/protocol.md", r"its first (\d+) bytes \(`preview`", framing.PREVIEW_BYTES),
    Figure("docs/protocol.md", r"\(and (\d+ minutes) more\), its file is compressed", mirror.GRACE),
    # the HTTP listener
    Figure("docs/protocol.md", r"a request line and headers over (\d+ KiB)", http_protocol.MAX_HEAD),
    Figure("docs/protocol.md", r"\*\*Bounds\*\*: headers (\d+ KiB)", http_protocol.MAX_HEAD),
    Figure("docs/architecture.md", r"the bounds \((\d+ KiB) of headers", http_protocol.MAX_HEAD),
    Figure("docs/protocol.md", r"more than (\d+) connections open", http_listener.MAX_CONNECTIONS),
    Figure("docs/protocol.md", r"one line at a time, (\d+) connections", http_listener.MAX_CONNECTIONS),
    Figure("docs/architecture.md", r"connections are capped at (\d+)", http_listener.MAX_CONNECTIONS),
    Figure("docs/protocol.md", r"\(at most (\d+) unanswered per connection", http_protocol.MAX_PIPELINE),
    Figure("docs/architecture.md", r"(\d+) unanswered requests a connection", http_protocol.MAX_PIPELINE),
    Figure("docs/protocol.md", r"\(the first (\d+) errors;", http_protocol.MAX_ERRORS),
    Figure("docs/configuration.md", r"at least (\d+) printable characters", http_listener.MIN_TOKEN),
    Figure("docs/protocol.md", r"a body over (\d+ MiB) as sent", otlp.MAX_BODY),
    Figure("docs/protocol.md", r"or over (\d+ MiB) once inflated", otlp.MAX_INFLATED),
    Figure("docs/protocol.md", r"its bounds \((\d+ MiB) as sent", otlp.MAX_BODY),
    Figure("docs/protocol.md", r"as sent, (\d+ MiB) inflated\)", otlp.MAX_INFLATED),
    Figure("docs/protocol.md", r"more than (\d+ MiB) of OTLP bodies", otlp_http.MAX_BUFFERED),
    Figure("docs/protocol.md", r"over (\d+ MiB) by `Content-Length`", otlp.MAX_BODY),
    Figure("docs/protocol.md", r"with `Retry-After: (\d+)`", otlp_http.RETRY_AFTER),
    # systemd
    Figure("docs/operations.md", r"pings the watchdog every (\d+ s)", WATCHDOG_PING),
    Figure("docs/operations.md", r"is stuck for (\d+ s) the pings stop", WATCHDOG_SEC),
    Figure("docs/operations.md", r"systemd restarts it (a second) later", _unit_seconds("RestartSec")),
    # clients and operator commands
    Figure("docs/protocol.md", r"`wait=True` \((\d+ s)\)", hookd_client.DEFAULT_WAIT),
    Figure("docs/python-client.md", r"`wait=True` \((\d+ s)\)", hookd_client.DEFAULT_WAIT),
    Figure("docs/protocol.md", r"`HOOKD_WAIT` seconds \(default (\d+)\)", SHELL_WAIT),
    Figure("docs/configuration.md", r"`hookd-emit --wait` waits for the acknowledgement \(default (\d+)\)", SHELL_WAIT),
    Figure("docs/protocol.md", r"An event over ([\d,]+) characters goes straight to the spool", SHELL_SPOOL_CHARS),
    Figure("docs/protocol.md", r"exits (\d+), never 2", SHELL_MISUSE_EXIT),
    # the spool's cap, and what bounds the daemon's own growth
    Figure("docs/protocol.md", r"`HOOKD_SPOOL_MAX` \((\d+ MiB) by default", DEFAULTS["spool_max_size"]),
    Figure("docs/protocol.md", r"`HOOKD_SPOOL_MAX` \((\d+ MiB) by default", hookd_client.DEFAULT_SPOOL_MAX),
    Figure("docs/reliability.md", r"`HOOKD_SPOOL_MAX` \((\d+ MiB) by default", DEFAULTS["spool_max_size"]),
    Figure("docs/configuration.md", r"The default, (\d+ MiB), holds", DEFAULTS["spool_max_size"]),
    Figure("docs/protocol.md", r"its length in bytes × (\d+) \(a byte per", spool.USAGE_UNIT),
    Figure("docs/reliability.md", r"to within one (\d+ KiB) block", spool.USAGE_UNIT),
    Figure("docs/protocol.md", r"`dropped.log` is read (a second) after the rename", spool.LOG_SETTLE),
    Figure("docs/reliability.md", r"deleted by the daemon (one hour) later", spool.STALE_TEMP),
    Figure("docs/configuration.md", r"for (a day) after the last one", status_command.DROPPED_RECENT),
    # Forwarding to PostgreSQL: its backoff and how often a changed error is logged
    Figure("docs/operations.md", r"retrying every ([\d.]+ s) doubling", forwarder_process.BACKOFF_MIN),
    Figure("docs/operations.md", r"doubling to (\d+ s);", forwarder_process.BACKOFF_MAX),
    Figure("docs/operations.md", r"at most once (a minute) if the error changes", forwarder_process.LOG_EVERY),
    Figure("docs/operations.md", r"restarted after (\d+ s) when it dies", forwarder_link.RESTART_DELAYS[0]),
    Figure("docs/protocol.md", r"`rejected` keeps the latest ([\d,]+) rows", schema.REJECTED_KEPT),
    Figure("docs/reliability.md", r"the latest ([\d,]+) rows \(at most", schema.REJECTED_KEPT),
    Figure("docs/integrations.md", r"`files` lists at most (\d+) names", githooks.MAX_FILES),
    Figure("docs/operations.md", r"the last N events \(default (\d+)", TAIL_LINES),
    # Claude Code's hooks and what hookd status says of them
    Figure("docs/integrations.md", r'/v1/events", "timeout": (\d+)\}', claude.HTTP_TIMEOUT),
    Figure("docs/integrations.md", r"where it waits for them \(at most (\d+ s);", claude.COMMAND_TIMEOUT),
    Figure(
        "docs/integrations.md",
        r"counts these per session for the calls of the last (\d+ days)",
        status_command.LOST_WINDOW,
    ),
    Figure("docs/operations.md", r"started since `since` \(the last (\d+ days)\)", status_command.LOST_WINDOW),
    Figure("docs/operations.md", r"tool calls of the last (\d+ days) lack", status_command.LOST_WINDOW),
]


def doc_text(doc: str) -> str:
    return " ".join((ROOT / doc).read_text(encoding="utf-8").split())


@pytest.mark.parametrize("figure", FIGURES, ids=str)
def test_doc_quotes_the_constant(figure: Figure) -> None:
    found = re.findall(figure.pattern, doc_text(figure.doc))
    assert found, f"{figure.doc} no longer says {figure.pattern!r}: update the row in this test"
    for text in found:
        assert quantity(text) == pytest.approx(figure.value), (
            f"{figure.doc} says {text!r} where the code has {figure.value:g}"
        )


#: Validity ranges the configuration reference quotes: (pattern with the bounds as groups,
#: the Settings field). A pattern with one group quotes a lower bound only.
RANGES: list[tuple[str, str, str]] = [
    ("docs/configuration.md", r"commit when a batch holds N events \((\d+)–(\d+)\)", "batch_size"),
    ("docs/configuration.md", r"waited this long \(up to (\d+ s)\)", "batch_delay"),
    ("docs/configuration.md", r"longest line stored as sent \((\d+ B)–(\d+ MiB)\)", "max_line"),
    ("docs/configuration.md", r"over all connections \((\d+)–(\d+ GiB)\)", "truncate_limit"),
    ("docs/configuration.md", r"completed no line for this long \(([\d.]+ s)–(\d+ d)\)", "idle_timeout"),
    ("docs/configuration.md", r"`max_size` is at least (\d+ KiB)", "max_size"),
    ("docs/configuration.md", r"`retention_interval` ([\d.]+ s) to (\d+ day)", "retention_interval"),
]


@pytest.mark.parametrize(("doc", "pattern", "field"), RANGES, ids=[r[2] for r in RANGES])
def test_doc_quotes_the_validated_range(doc: str, pattern: str, field: str) -> None:
    m = re.search(pattern, doc_text(doc))
    assert m, f"{doc} no longer says {pattern!r}: update the row in this test"
    bounds = [quantity(g) for g in m.groups()]
    integer = isinstance(DEFAULTS[field], int) or field == "max_size"
    cast: Callable[[float], float] = int if integer else float
    step = 1 if integer else 1e-3
    if "up to" in pattern:
        low, high = None, bounds[0]
    elif len(bounds) == 1:
        low, high = bounds[0], None
    else:
        low, high = bounds
    if low is not None:
        assert accepts(**{field: cast(low)}), f"{doc}: {field} {low:g} is documented as allowed"
        assert not accepts(**{field: cast(low - step)}), f"{doc}: {field} below {low:g} is documented as refused"
    if high is not None:
        assert accepts(**{field: cast(high)}), f"{doc}: {field} {high:g} is documented as allowed"
        assert not accepts(**{field: cast(high + step)}), f"{doc}: {field} above {high:g} is documented as refused"


def _cell(shown: str) -> Any:
    """A table cell's value: TOML where it is (``1000``, ``true``, ``[]``), else its text (``50ms``)."""
    try:
        return tomllib.loads(f"v = {shown}")["v"]
    except tomllib.TOMLDecodeError:
        return shown


def test_configuration_reference_quotes_every_default() -> None:
    """The key table's default column, the `hookd config` sample's ``# default`` lines (which
    list every key) and the unknown-key message's list of known keys."""
    defaults = config_defaults()
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name, value in defaults.items():
        m = re.search(rf"^\| `{re.escape(name)}` \| ([^|]*) \|", text, re.M)
        assert m, f"docs/configuration.md: no row for {name}"
        shown = m.group(1).strip().strip("`")
        assert _cell(shown) == value, f"docs/configuration.md: {name} default {shown!r}, the code has {value!r}"

    sample = text.split("### `hookd config`", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    section, listed = "", []
    for line in sample.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif " = " in line:
            key, rest = line.split(" = ", 1)
            name = f"{section}.{key}"
            listed.append(name)
            if rest.endswith("# default") and not name.startswith("paths."):
                shown = tomllib.loads(f"v = {rest}")["v"]
                assert shown == defaults[name], f"`hookd config` sample: {name} = {shown!r}, default {defaults[name]!r}"
    keys = [n for n in listed if not n.startswith(("types.", "aliases."))]  # the example file's own tables
    assert keys == [k.name for k in config.KEYS], "the `hookd config` sample lists every key, in order"

    m = re.search(r"unknown key '\w+' in \[ingest\] \(known: ([^)]*)\)", text)
    assert m, "docs/configuration.md: the unknown-key example is gone"
    assert m.group(1) == ", ".join(k.name.split(".")[1] for k in config.KEYS if k.name.startswith("ingest."))


def test_quantities_read_as_written() -> None:
    assert quantity("10 000") == 10_000 and quantity("50,000") == 50_000
    assert quantity("0.5 s") == 0.5 and quantity("50 ms") == pytest.approx(0.05)
    assert quantity("1 MiB") == 1 << 20 and quantity("a second") == 1 and quantity("minute") == 60
    assert quantity("one day") == 86400 and quantity("5 minutes") == 300
