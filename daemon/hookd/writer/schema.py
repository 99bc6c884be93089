"""The SQLite schema and everything that touches it synchronously.

Used by the writer process (inserts) and by CLI commands (reads); the daemon's event loop
never calls into this module directly, only through aiosqlite or the writer process.

Schema changes are named, ordered migrations recorded in ``schema_migrations``; the schema
uses nothing newer than SQLite 3.40 so the system ``sqlite3`` can always read the file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from hookd.durations import BUCKETS, bucket_bounds
from hookd.errors import StoreError
from hookd.framing import TYPE_RE
from hookd.records import BASE_COLUMNS, CLIENT_ID, COLUMN_RE, EID, JSON_PATH_RE, LINE_KEY

Migration = Callable[[sqlite3.Connection], None]


def _statements(script: str) -> list[str]:
    """Split a DDL script into statements (executescript would commit our transaction)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _m001_initial(db: sqlite3.Connection) -> None:
    for stmt in _statements(
        """
        CREATE TABLE events (
            eid       INTEGER PRIMARY KEY,   -- time-ordered unique id assigned by hookd
            type      TEXT NOT NULL,         -- normalized event type
            ts        REAL NOT NULL,         -- event time, epoch seconds
            session   TEXT,                  -- `session` or `session_id` of the event
            client_id TEXT,                  -- the client's `id` (idempotency key)
            recv_ts   REAL NOT NULL,         -- when hookd read the line, epoch seconds
            pid       INTEGER,               -- sender's pid (SO_PEERCRED)
            uid       INTEGER,               -- sender's uid (SO_PEERCRED)
            data      TEXT NOT NULL          -- the JSON object exactly as the client sent it
        );
        CREATE INDEX events_type_ts ON events(type, ts);
        CREATE INDEX events_session_ts ON events(session, ts);
        CREATE UNIQUE INDEX events_client_id ON events(client_id) WHERE client_id IS NOT NULL;

        CREATE TABLE rejected (
            rid      INTEGER PRIMARY KEY,
            recv_ts  REAL NOT NULL,
            reason   TEXT NOT NULL,          -- stable code, see docs/protocol.md
            detail   TEXT NOT NULL,          -- human explanation
            size     INTEGER NOT NULL,       -- bytes in the rejected line
            preview  TEXT NOT NULL,          -- its first bytes, escaped
            pid      INTEGER,
            uid      INTEGER
        );
        CREATE INDEX rejected_recv_ts ON rejected(recv_ts);

        -- One row per type ever stored: cheap answers for status and view upkeep.
        CREATE TABLE event_types (
            type     TEXT PRIMARY KEY,
            count    INTEGER NOT NULL,
            first_ts REAL NOT NULL,
            last_ts  REAL NOT NULL
        ) WITHOUT ROWID;
        """
    ):
        db.execute(stmt)


def _m002_counters_and_spool(db: sqlite3.Connection) -> None:
    for stmt in _statements(
        """
        -- Totals that survive restarts (and the trimming of `rejected`): every event not stored,
        -- by reason, and other lifetime counts. Names are documented in docs/protocol.md.
        CREATE TABLE counters (
            name  TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID;

        -- Spool files whose events are committed but whose file may not be deleted yet: a crash
        -- between the commit and the unlink must not ingest the file twice.
        CREATE TABLE spool_done (
            name TEXT PRIMARY KEY
        ) WITHOUT ROWID;
        """
    ):
        db.execute(stmt)


def _m003_analysis_views(db: sqlite3.Connection) -> None:
    for stmt in _statements(
        """
        -- Claude Code tool calls: PreToolUse paired with what followed it (PostToolUse, or
        -- PostToolUseFailure where Claude Code sends it) by `tool_use_id`. A partial expression
        -- index on the closing events makes the pairing a lookup per call instead of a scan
        -- (docs/integrations.md); only they are looked up, so PreToolUse inserts pay nothing.
        CREATE INDEX IF NOT EXISTS events_tool_use_id ON events(json_extract(data, '$.tool_use_id'))
            WHERE type IN ('post_tool_use', 'post_tool_use_failure');

        CREATE VIEW IF NOT EXISTS tool_calls AS
        SELECT pre.session                                  AS session,
               json_extract(pre.data, '$.tool_use_id')      AS tool_use_id,
               json_extract(pre.data, '$.tool_name')        AS tool_name,
               pre.ts                                       AS started,
               post.ts                                      AS finished,
               round((post.ts - pre.ts) * 1000.0, 1)        AS duration_ms,
               CASE WHEN post.eid IS NULL THEN 'unfinished'
                    WHEN post.type = 'post_tool_use_failure' THEN 'failed'
                    ELSE 'finished' END                     AS status,
               pre.eid                                      AS pre_eid,
               post.eid                                     AS post_eid
        FROM events AS pre
        LEFT JOIN events AS post
               ON post.type IN ('post_tool_use', 'post_tool_use_failure')
              AND json_extract(post.data, '$.tool_use_id') = json_extract(pre.data, '$.tool_use_id')
              AND post.eid > pre.eid
        WHERE pre.type = 'pre_tool_use';

        -- One row per session key: when it started and ended, and what happened in it.
        CREATE VIEW IF NOT EXISTS sessions AS
        SELECT session,
               min(ts)                                                          AS started,
               max(CASE WHEN type = 'session_end' THEN ts END)                  AS ended,
               max(ts)                                                          AS last_seen,
               count(*)                                                         AS events,
               sum(type = 'user_prompt_submit')                                 AS prompts,
               sum(type = 'pre_tool_use')                                       AS tool_calls,
               sum(type = 'post_tool_use_failure')                              AS tool_failures,
               sum(type = 'pre_tool_use') - sum(type IN ('post_tool_use', 'post_tool_use_failure'))
                                                                                AS tool_calls_unfinished,
               max(CASE WHEN type = 'session_end' THEN json_extract(data, '$.reason') END) AS end_reason,
               max(CASE WHEN type = 'session_start' THEN json_extract(data, '$.cwd') END) AS cwd
        FROM events
        WHERE session IS NOT NULL
        GROUP BY session;
        """
    ):
        db.execute(stmt)


#: Migration 4: ``tool_calls`` paired in either order, Claude Code's own durations, and
#: ``lost_tool_calls``.
_CLAUDE_CODE_PAIRING = """
-- tool_calls again, for hooks that run in the background ("async": true, as
-- `hookd hooks install-claude` writes them) and may reach hookd out of order: a call's
-- closing event is its first PostToolUse or PostToolUseFailure by tool_use_id, before or
-- after the PreToolUse. duration_ms is Claude Code's own figure where the closing event
-- carries one (PostToolUse, PostToolUseFailure since 2.1.119), else the gap between the
-- times hookd received the two events (which holds the hooks' own cost); duration_source
-- says which: 'claude_code' or 'received'.
DROP VIEW IF EXISTS tool_calls;
CREATE VIEW tool_calls AS
SELECT pre.session                                  AS session,
       json_extract(pre.data, '$.tool_use_id')      AS tool_use_id,
       json_extract(pre.data, '$.tool_name')        AS tool_name,
       pre.ts                                       AS started,
       post.ts                                      AS finished,
       CASE WHEN typeof(json_extract(post.data, '$.duration_ms')) IN ('integer', 'real')
            THEN json_extract(post.data, '$.duration_ms')
            ELSE round((post.ts - pre.ts) * 1000.0, 1) END AS duration_ms,
       CASE WHEN post.eid IS NULL THEN NULL
            WHEN typeof(json_extract(post.data, '$.duration_ms')) IN ('integer', 'real')
            THEN 'claude_code' ELSE 'received' END  AS duration_source,
       CASE WHEN post.eid IS NULL THEN 'unfinished'
            WHEN post.type = 'post_tool_use_failure' THEN 'failed'
            ELSE 'finished' END                     AS status,
       pre.eid                                      AS pre_eid,
       post.eid                                     AS post_eid
FROM events AS pre
LEFT JOIN events AS post ON post.eid = (
    SELECT c.eid FROM events AS c
    WHERE c.type IN ('post_tool_use', 'post_tool_use_failure')
      AND json_extract(c.data, '$.tool_use_id') = json_extract(pre.data, '$.tool_use_id')
    ORDER BY c.eid LIMIT 1)
WHERE pre.type = 'pre_tool_use';

-- Events that went missing, as far as the data can tell: a PreToolUse whose tool_use_id
-- never got a PostToolUse, a PostToolUseFailure or a PermissionDenied, in a session whose
-- SessionEnd was recorded after it. hookd cannot see an http hook that Claude Code never
-- sent; this is where such a gap shows (`hookd status` counts them per session).
CREATE VIEW lost_tool_calls AS
SELECT pre.session                                  AS session,
       json_extract(pre.data, '$.tool_use_id')      AS tool_use_id,
       json_extract(pre.data, '$.tool_name')        AS tool_name,
       pre.ts                                       AS started,
       ended.ts                                     AS session_ended,
       pre.eid                                      AS pre_eid
FROM (SELECT session, max(ts) AS ts FROM events
      WHERE type = 'session_end' AND session IS NOT NULL GROUP BY session) AS ended
JOIN events AS pre ON pre.session = ended.session AND pre.type = 'pre_tool_use' AND pre.ts <= ended.ts
WHERE json_extract(pre.data, '$.tool_use_id') IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM events AS c
      WHERE c.type IN ('post_tool_use', 'post_tool_use_failure')
        AND json_extract(c.data, '$.tool_use_id') = json_extract(pre.data, '$.tool_use_id'))
  AND NOT EXISTS (
      SELECT 1 FROM events AS d
      WHERE d.type = 'permission_denied' AND d.session = pre.session
        AND json_extract(d.data, '$.tool_use_id') = json_extract(pre.data, '$.tool_use_id'));
"""


def _m004_claude_code_pairing(db: sqlite3.Connection) -> None:
    for stmt in _statements(_CLAUDE_CODE_PAIRING):
        db.execute(stmt)


def _m_rejected_line_key(db: sqlite3.Connection) -> None:
    """``rejected.line_key``: the key of a rejected line of an imported file (its line number and
    a hash of it, ``hookd.backfill``), unique, so that importing the file again records it no
    second time. Live lines have none (NULL: every rejection of a live line is recorded).

    Its function carries no number (MIGRATIONS gives it one) and it can run twice: branches
    that each add a migration are renumbered at merge by editing MIGRATIONS only."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(rejected)")}
    if "line_key" not in columns:
        db.execute("ALTER TABLE rejected ADD COLUMN line_key TEXT")
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS rejected_line_key ON rejected(line_key) WHERE line_key IS NOT NULL")


#: Migration 6: Claude Code's telemetry (OTLP, daemon/otlp_http.py) beside the hook events.
#: Attribute types vary between Claude Code's events (``duration_ms`` a number on api_request,
#: a string on tool_result), so every figure is CAST. docs/protocol.md lists every column.
#: A token count the views take from one record, at most (and at least 0): a value past any
#: model's (numbers arrive as strings; "9" * 30 casts to SQLite's largest integer) must not make
#: the sums overflow, which fails the whole view for every session.
TOKENS_MAX: Final = 10**12
_TELEMETRY_USAGE = """
-- tool_calls joins the tool_result telemetry by tool_use_id: an expression index on those
-- records only (the pairing's pattern: other inserts pay nothing).
CREATE INDEX IF NOT EXISTS events_otel_tool_use_id ON events(json_extract(data, '$.tool_use_id'))
    WHERE type = 'claude_code_tool_result';

-- Cost and tokens per session, from the api_request records (api_error counted beside them);
-- first_ts and last_ts span all the session's events, hooks and telemetry.
DROP VIEW IF EXISTS session_usage;
CREATE VIEW session_usage AS
SELECT session,
       total(cost_usd)                        AS cost_usd,
       coalesce(sum(input_tokens), 0)         AS input_tokens,
       coalesce(sum(output_tokens), 0)        AS output_tokens,
       coalesce(sum(cache_read_tokens), 0)    AS cache_read_tokens,
       coalesce(sum(cache_creation_tokens), 0) AS cache_creation_tokens,
       sum(api_requests)                      AS api_requests,
       sum(api_errors)                        AS api_errors,
       group_concat(model, ',')               AS models,
       total(api_duration_ms)                 AS api_duration_ms,
       (SELECT min(e.ts) FROM events AS e WHERE e.session = u.session) AS first_ts,
       (SELECT max(e.ts) FROM events AS e WHERE e.session = u.session) AS last_ts
FROM (SELECT session,
             json_extract(data, '$.model') AS model,
             total(CASE WHEN type = 'claude_code_api_request'
                        THEN CAST(json_extract(data, '$.cost_usd') AS REAL) END)              AS cost_usd,
             sum(CASE WHEN type = 'claude_code_api_request'
                      THEN min(max(CAST(json_extract(data, '$.input_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                                  AS input_tokens,
             sum(CASE WHEN type = 'claude_code_api_request'
                      THEN min(max(CAST(json_extract(data, '$.output_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                                  AS output_tokens,
             sum(CASE WHEN type = 'claude_code_api_request'
                      THEN min(max(CAST(json_extract(data, '$.cache_read_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                                  AS cache_read_tokens,
             sum(CASE WHEN type = 'claude_code_api_request'
                      THEN min(max(CAST(json_extract(data, '$.cache_creation_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                                  AS cache_creation_tokens,
             sum(type = 'claude_code_api_request')                                            AS api_requests,
             sum(type = 'claude_code_api_error')                                              AS api_errors,
             total(CASE WHEN type = 'claude_code_api_request'
                        THEN CAST(json_extract(data, '$.duration_ms') AS REAL) END)           AS api_duration_ms
      FROM events
      WHERE type IN ('claude_code_api_request', 'claude_code_api_error') AND session IS NOT NULL
      GROUP BY session, model
      ORDER BY session, model) AS u
GROUP BY session;

-- The same per prompt (the telemetry's prompt.id, the hooks' prompt_id), with the prompt's
-- tool calls: distinct tool_use_ids of tool_result records and PreToolUse hooks.
DROP VIEW IF EXISTS prompt_usage;
CREATE VIEW prompt_usage AS
SELECT prompt_id,
       max(session)                           AS session,
       total(cost_usd)                        AS cost_usd,
       coalesce(sum(input_tokens), 0)         AS input_tokens,
       coalesce(sum(output_tokens), 0)        AS output_tokens,
       coalesce(sum(cache_read_tokens), 0)    AS cache_read_tokens,
       coalesce(sum(cache_creation_tokens), 0) AS cache_creation_tokens,
       sum(api_requests)                      AS api_requests,
       sum(api_errors)                        AS api_errors,
       group_concat(model, ',')               AS models,
       sum(tool_calls)                        AS tool_calls,
       total(api_duration_ms)                 AS api_duration_ms,
       min(first_ts)                          AS first_ts,
       max(last_ts)                           AS last_ts
FROM (SELECT prompt_id,
             max(session) AS session,
             model,
             total(CASE WHEN type = 'claude_code_api_request'
                        THEN CAST(json_extract(data, '$.cost_usd') AS REAL) END)              AS cost_usd,
             sum(CASE WHEN type = 'claude_code_api_request'
                      THEN min(max(CAST(json_extract(data, '$.input_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                                  AS input_tokens,
             sum(CASE WHEN type = 'claude_code_api_request'
                      THEN min(max(CAST(json_extract(data, '$.output_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                                  AS output_tokens,
             sum(CASE WHEN type = 'claude_code_api_request'
                      THEN min(max(CAST(json_extract(data, '$.cache_read_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                                  AS cache_read_tokens,
             sum(CASE WHEN type = 'claude_code_api_request'
                      THEN min(max(CAST(json_extract(data, '$.cache_creation_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                                  AS cache_creation_tokens,
             sum(type = 'claude_code_api_request')                                            AS api_requests,
             sum(type = 'claude_code_api_error')                                              AS api_errors,
             count(DISTINCT CASE WHEN type IN ('claude_code_tool_result', 'pre_tool_use')
                                 THEN json_extract(data, '$.tool_use_id') END)                 AS tool_calls,
             total(CASE WHEN type = 'claude_code_api_request'
                        THEN CAST(json_extract(data, '$.duration_ms') AS REAL) END)           AS api_duration_ms,
             min(ts) AS first_ts,
             max(ts) AS last_ts
      FROM (SELECT CASE WHEN type = 'pre_tool_use' THEN json_extract(data, '$.prompt_id')
                        ELSE json_extract(data, '$."prompt.id"') END AS prompt_id,
                   CASE WHEN type IN ('claude_code_api_request', 'claude_code_api_error')
                        THEN json_extract(data, '$.model') END AS model,
                   session, type, ts, data
            FROM events
            WHERE type IN ('claude_code_api_request', 'claude_code_api_error', 'claude_code_tool_result',
                           'claude_code_user_prompt', 'pre_tool_use'))
      WHERE prompt_id IS NOT NULL
      GROUP BY prompt_id, model
      ORDER BY prompt_id, model)
GROUP BY prompt_id;

-- OTLP metric points (type otel_metric) per series without double counting: a cumulative
-- series' total is the last point of each start time, added up over start times (a restart
-- of the exporter begins a new one); a delta series' is the sum of its points; a gauge's is
-- its last point.
DROP VIEW IF EXISTS metric_totals;
CREATE VIEW metric_totals AS
SELECT series, session, name, unit, kind, temporality, attributes,
       CASE WHEN temporality = 'delta' THEN sum(value)
            WHEN temporality = 'cumulative' THEN sum(CASE WHEN rn_start = 1 THEN value END)
            ELSE max(CASE WHEN rn_series = 1 THEN value END) END AS value,
       count(*) AS points,
       min(ts)  AS first_ts,
       max(ts)  AS last_ts
FROM (SELECT session, ts,
             json_extract(data, '$.series')      AS series,
             json_extract(data, '$.name')        AS name,
             json_extract(data, '$.unit')        AS unit,
             json_extract(data, '$.kind')        AS kind,
             json_extract(data, '$.temporality') AS temporality,
             json_extract(data, '$.attributes')  AS attributes,
             json_extract(data, '$.value')       AS value,
             row_number() OVER (PARTITION BY json_extract(data, '$.series'), json_extract(data, '$.start_ts')
                                ORDER BY ts DESC, eid DESC) AS rn_start,
             row_number() OVER (PARTITION BY json_extract(data, '$.series') ORDER BY ts DESC, eid DESC) AS rn_series
      FROM events WHERE type = 'otel_metric')
GROUP BY series;

-- sessions again, with what the session cost (NULL where no telemetry came).
DROP VIEW IF EXISTS sessions;
CREATE VIEW sessions AS
SELECT session,
       min(ts)                                                          AS started,
       max(CASE WHEN type = 'session_end' THEN ts END)                  AS ended,
       max(ts)                                                          AS last_seen,
       count(*)                                                         AS events,
       sum(type = 'user_prompt_submit')                                 AS prompts,
       sum(type = 'pre_tool_use')                                       AS tool_calls,
       sum(type = 'post_tool_use_failure')                              AS tool_failures,
       sum(type = 'pre_tool_use') - sum(type IN ('post_tool_use', 'post_tool_use_failure'))
                                                                        AS tool_calls_unfinished,
       max(CASE WHEN type = 'session_end' THEN json_extract(data, '$.reason') END) AS end_reason,
       max(CASE WHEN type = 'session_start' THEN json_extract(data, '$.cwd') END) AS cwd,
       sum(CASE WHEN type = 'claude_code_api_request'
                THEN CAST(json_extract(data, '$.cost_usd') AS REAL) END)              AS cost_usd,
       sum(CASE WHEN type = 'claude_code_api_request'
                THEN min(max(CAST(json_extract(data, '$.input_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                            AS input_tokens,
       sum(CASE WHEN type = 'claude_code_api_request'
                THEN min(max(CAST(json_extract(data, '$.output_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                            AS output_tokens,
       sum(CASE WHEN type = 'claude_code_api_request'
                THEN min(max(CAST(json_extract(data, '$.cache_read_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                            AS cache_read_tokens,
       sum(CASE WHEN type = 'claude_code_api_request'
                THEN min(max(CAST(json_extract(data, '$.cache_creation_tokens') AS INTEGER), 0), {TMAX}) END)
                                                                            AS cache_creation_tokens,
       sum(type = 'claude_code_api_request')                            AS api_requests
FROM events
WHERE session IS NOT NULL
GROUP BY session;

-- tool_calls again, with Claude Code's tool_result telemetry for the call (its first record
-- by tool_use_id): its own duration and success (sent as strings: cast here).
DROP VIEW IF EXISTS tool_calls;
CREATE VIEW tool_calls AS
SELECT pre.session                                  AS session,
       json_extract(pre.data, '$.tool_use_id')      AS tool_use_id,
       json_extract(pre.data, '$.tool_name')        AS tool_name,
       pre.ts                                       AS started,
       post.ts                                      AS finished,
       CASE WHEN typeof(json_extract(post.data, '$.duration_ms')) IN ('integer', 'real')
            THEN json_extract(post.data, '$.duration_ms')
            ELSE round((post.ts - pre.ts) * 1000.0, 1) END AS duration_ms,
       CASE WHEN post.eid IS NULL THEN NULL
            WHEN typeof(json_extract(post.data, '$.duration_ms')) IN ('integer', 'real')
            THEN 'claude_code' ELSE 'received' END  AS duration_source,
       CASE WHEN post.eid IS NULL THEN 'unfinished'
            WHEN post.type = 'post_tool_use_failure' THEN 'failed'
            ELSE 'finished' END                     AS status,
       pre.eid                                      AS pre_eid,
       post.eid                                     AS post_eid,
       CAST(json_extract(tr.data, '$.duration_ms') AS REAL) AS telemetry_duration_ms,
       CASE lower(CAST(json_extract(tr.data, '$.success') AS TEXT))
            WHEN 'true' THEN 1 WHEN '1' THEN 1 WHEN 'false' THEN 0 WHEN '0' THEN 0 END AS telemetry_success,
       json_extract(tr.data, '$.error')             AS telemetry_error,
       tr.eid                                       AS telemetry_eid
FROM events AS pre
LEFT JOIN events AS post ON post.eid = (
    SELECT c.eid FROM events AS c
    WHERE c.type IN ('post_tool_use', 'post_tool_use_failure')
      AND json_extract(c.data, '$.tool_use_id') = json_extract(pre.data, '$.tool_use_id')
    ORDER BY c.eid LIMIT 1)
LEFT JOIN events AS tr ON tr.eid = (
    SELECT t.eid FROM events AS t
    WHERE t.type = 'claude_code_tool_result'
      AND json_extract(t.data, '$.tool_use_id') = json_extract(pre.data, '$.tool_use_id')
    ORDER BY t.eid LIMIT 1)
WHERE pre.type = 'pre_tool_use';
""".replace("{TMAX}", str(TOKENS_MAX))


def _m_telemetry_usage(db: sqlite3.Connection) -> None:
    """``session_usage``, ``prompt_usage``, ``metric_totals``; cost and tokens in ``sessions``,
    the tool_result telemetry in ``tool_calls``. Numbered in MIGRATIONS only (6), and it can run
    twice (every view dropped first, the index IF NOT EXISTS), like migration 5."""
    for stmt in _statements(_TELEMETRY_USAGE):
        db.execute(stmt)


def _latest(col: str) -> str:
    """An upsert's ``col`` kept as the larger of the stored and the new value, NULL meaning none
    (SQLite's two-argument max() is NULL when either is): what ``max(col)`` over all rows gives."""
    return (
        f"{col} = CASE WHEN excluded.{col} IS NULL THEN {col} WHEN {col} IS NULL THEN excluded.{col} "
        f"ELSE max({col}, excluded.{col}) END"
    )


#: What migration 7's trigger takes out of ``event_hours`` and ``session_stats`` for a deleted event.
_SUMMARIES_DELETE = """\
    UPDATE event_hours SET count = count - 1 WHERE type = old.type AND hour = CAST(old.ts / 3600 AS INTEGER);
    DELETE FROM event_hours WHERE type = old.type AND hour = CAST(old.ts / 3600 AS INTEGER) AND count <= 0;
    UPDATE session_stats SET events = events - 1,
                             prompts = prompts - (old.type = 'user_prompt_submit'),
                             tool_calls = tool_calls - (old.type = 'pre_tool_use'),
                             tool_failures = tool_failures - (old.type = 'post_tool_use_failure'),
                             tool_closed = tool_closed - (old.type IN ('post_tool_use', 'post_tool_use_failure'))
        WHERE session = old.session;
    DELETE FROM session_stats WHERE session = old.session AND events <= 0;
"""

#: Migration 7: what the dashboard reads (hookd.dashboard), so that no panel scans ``events``.
#: ``event_hours``: events per type and hour (``hour`` = floor(ts / 3600)); ``session_stats``:
#: the ``sessions`` view as a table, one row per session; ``events_ts``: the Activity timeline and
#: time ranges in ts order. The two tables are filled from an eid range of new events by
#: ``summarize`` (one aggregate over those rows, as ``event_types``; since migration 8, in the
#: writer's idle time up to ``summary_mark``, see ``summarize_upto``); the trigger takes
#: deleted events out again (retention, vacuum), so they stay exact. ``session_stats.started``
#: is the first event ever seen of the session, even once retention deleted it.
_DASHBOARD_SUMMARIES = (
    """
CREATE TABLE IF NOT EXISTS event_hours (
    type  TEXT NOT NULL,
    hour  INTEGER NOT NULL,               -- floor(ts / 3600): hours since the epoch, UTC
    count INTEGER NOT NULL,
    PRIMARY KEY (type, hour)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_hours_hour ON event_hours(hour);

CREATE TABLE IF NOT EXISTS session_stats (
    session       TEXT PRIMARY KEY,
    started       REAL NOT NULL,
    last_seen     REAL NOT NULL,
    ended         REAL,                   -- its last session_end's ts
    events        INTEGER NOT NULL,
    prompts       INTEGER NOT NULL,
    tool_calls    INTEGER NOT NULL,       -- pre_tool_use events
    tool_failures INTEGER NOT NULL,       -- post_tool_use_failure events
    tool_closed   INTEGER NOT NULL,       -- post_tool_use and post_tool_use_failure events
    end_reason    TEXT,
    cwd           TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS session_stats_started ON session_stats(started);

CREATE INDEX IF NOT EXISTS events_ts ON events(ts);

DROP TRIGGER IF EXISTS events_summaries_delete;
CREATE TRIGGER events_summaries_delete AFTER DELETE ON events BEGIN
"""
    + _SUMMARIES_DELETE
    + """END;
"""
)

_HOURS_FROM = (
    "INSERT INTO event_hours (type, hour, count) "
    "SELECT type, CAST(ts / 3600 AS INTEGER), count(*) FROM events WHERE {where} GROUP BY 1, 2 "
    "ON CONFLICT(type, hour) DO UPDATE SET count = count + excluded.count"
)
_SESSIONS_FROM = (
    "INSERT INTO session_stats (session, started, last_seen, ended, events, prompts, tool_calls, tool_failures, "
    "tool_closed, end_reason, cwd) "
    "SELECT session, min(ts), max(ts), max(CASE WHEN type = 'session_end' THEN ts END), count(*), "
    "sum(type = 'user_prompt_submit'), sum(type = 'pre_tool_use'), sum(type = 'post_tool_use_failure'), "
    "sum(type IN ('post_tool_use', 'post_tool_use_failure')), "
    "max(CASE WHEN type = 'session_end' THEN json_extract(data, '$.reason') END), "
    "max(CASE WHEN type = 'session_start' THEN json_extract(data, '$.cwd') END) "
    "FROM events WHERE {where} AND session IS NOT NULL GROUP BY session "
    "ON CONFLICT(session) DO UPDATE SET started = min(started, excluded.started), "
    "last_seen = max(last_seen, excluded.last_seen), events = events + excluded.events, "
    "prompts = prompts + excluded.prompts, tool_calls = tool_calls + excluded.tool_calls, "
    "tool_failures = tool_failures + excluded.tool_failures, tool_closed = tool_closed + excluded.tool_closed, "
    + ", ".join(_latest(c) for c in ("ended", "end_reason", "cwd"))
)
#: The summaries of the rows of one transaction, found by their eid range (``summarize``).
HOURS_FROM_RANGE = _HOURS_FROM.format(where="eid BETWEEN ?1 AND ?2")
SESSIONS_FROM_RANGE = _SESSIONS_FROM.format(where="eid BETWEEN ?1 AND ?2")


def _m_dashboard_summaries(db: sqlite3.Connection) -> None:
    """Migration 7 (see ``_DASHBOARD_SUMMARIES``). Can run twice: the tables are filled anew."""
    for stmt in _statements(_DASHBOARD_SUMMARIES):
        db.execute(stmt)
    db.execute("DELETE FROM event_hours")
    db.execute("DELETE FROM session_stats")
    db.execute(_HOURS_FROM.format(where="true"))
    db.execute(_SESSIONS_FROM.format(where="true"))


def summarize(db: Any, lo: int, hi: int) -> None:
    """Add the events with eids ``lo``..``hi`` (none of them summarized yet, in the caller's
    transaction) to ``event_hours`` and ``session_stats`` (migration 7), ``tool_hours``,
    ``tool_days`` and ``tool_slowest`` (8). ``summarize_upto`` says which events that is."""
    db.execute(HOURS_FROM_RANGE, (lo, hi))
    db.execute(SESSIONS_FROM_RANGE, (lo, hi))
    summarize_tools(db, lo, hi)


def summary_mark(db: Any) -> int:
    """The eid up to which the summaries hold every event (``summary_mark``)."""
    return db.execute("SELECT eid FROM summary_mark").fetchone()[0]


def summarize_upto(db: Any, hi: int, limit: int | None = None) -> int:
    """Summarize the events after the mark up to eid ``hi`` (at most ``limit`` of them), in the
    caller's transaction, and move the mark. Returns the new mark."""
    mark = summary_mark(db)
    if limit is not None:
        last = db.execute(
            "SELECT max(eid) FROM (SELECT eid FROM events WHERE eid > ? AND eid <= ? ORDER BY eid LIMIT ?)",
            (mark, hi, limit),
        ).fetchone()[0]
        hi = hi if last is None else last
    if hi <= mark:
        return mark
    summarize(db, mark + 1, hi)
    db.execute("UPDATE summary_mark SET eid = ?", (hi,))
    return hi


#: Migration 8: what the Tools tab reads, so that it never pairs calls at query time.
#: ``tool_hours`` and ``tool_days``: per tool and hour (day) of the event's ts, the PreToolUse
#: events (``calls``), the closing events (``closed``: PostToolUse and PostToolUseFailure;
#: ``failed``: the latter), and of the closing events that carry Claude Code's own
#: ``duration_ms`` (``timed``), a histogram ``durations`` = ``{"bucket": count}`` in fixed,
#: log-spaced buckets (``hookd.durations``, ``tool_duration_buckets``: four a doubling, so a
#: percentile read from it is within one bucket, 19%, of the exact one). Days make a month cheap
#: to read (the edges of a range come from hours). ``tool_slowest``: the ``SLOWEST_PER_HOUR``
#: slowest timed closing events of each hour. Every event counts alone (no pairing), so the
#: trigger takes a deleted one out exactly.
SLOWEST_PER_HOUR = 20
TOOL_TYPES = "('pre_tool_use', 'post_tool_use', 'post_tool_use_failure')"
#: The summary tables of migration 8 by time unit: (table, its time column, seconds).
TOOL_SPANS = (("tool_hours", "hour", 3600), ("tool_days", "day", 86400))


def _tool_span_table(table: str, col: str, seconds: int) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    tool      TEXT NOT NULL,               -- tool_name ('?' when an event has none)
    {col:<9} INTEGER NOT NULL,            -- floor(ts / {seconds})
    calls     INTEGER NOT NULL,            -- pre_tool_use events
    closed    INTEGER NOT NULL,            -- post_tool_use and post_tool_use_failure events
    failed    INTEGER NOT NULL,            -- post_tool_use_failure events
    timed     INTEGER NOT NULL,            -- closing events with a numeric duration_ms
    durations TEXT NOT NULL,               -- their histogram: {{"bucket": count}}
    PRIMARY KEY (tool, {col})
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {table}_{col} ON {table}({col});
"""


def _tool_span_delete(table: str, col: str, seconds: int) -> str:
    """The trigger's part for one summary table: the deleted event taken out of its row."""
    return f"""
    UPDATE {table} SET calls = calls - (old.type = 'pre_tool_use'),
                          closed = closed - (old.type <> 'pre_tool_use'),
                          failed = failed - (old.type = 'post_tool_use_failure'),
                          timed = timed - (x.d IS NOT NULL),
                          durations = CASE WHEN x.d IS NULL THEN durations
                              WHEN coalesce(durations ->> x.path, 0) <= 1 THEN json_remove(durations, x.path)
                              ELSE json_set(durations, x.path, (durations ->> x.path) - 1) END
        FROM (SELECT y.tool, y.d, '$."' || (SELECT bucket FROM tool_duration_buckets WHERE lo_ms <= y.d
                                           ORDER BY lo_ms DESC LIMIT 1) || '"' AS path
              FROM (SELECT coalesce(j ->> 0, '?') AS tool,
                           CASE WHEN old.type <> 'pre_tool_use' AND typeof(j ->> 1) IN ('integer', 'real')
                                THEN j ->> 1 END AS d
                    FROM (SELECT json_extract(old.data, '$.tool_name', '$.duration_ms') AS j)) AS y) AS x
        WHERE {table}.tool = x.tool AND {table}.{col} = CAST(old.ts / {seconds} AS INTEGER);
    DELETE FROM {table} WHERE {col} = CAST(old.ts / {seconds} AS INTEGER) AND calls <= 0 AND closed <= 0;"""


_TOOL_SUMMARIES = (
    """
-- The summaries (of migrations 7 and 8) hold every event up to this eid, none above: the
-- writer adds what is newer when it is idle, or in steps once it is STEP_BEHIND events behind.
CREATE TABLE IF NOT EXISTS summary_mark (
    eid INTEGER NOT NULL
);

-- Migration 7's trigger again, for the events the summaries hold only.
DROP TRIGGER IF EXISTS events_summaries_delete;
CREATE TRIGGER events_summaries_delete AFTER DELETE ON events
    WHEN old.eid <= (SELECT eid FROM summary_mark) BEGIN
"""
    + _SUMMARIES_DELETE
    + """END;

CREATE TABLE IF NOT EXISTS tool_duration_buckets (
    lo_ms  REAL PRIMARY KEY,               -- the bucket holds durations from lo_ms to the next one's
    bucket INTEGER NOT NULL
) WITHOUT ROWID;
"""
    + "".join(_tool_span_table(*span) for span in TOOL_SPANS)
    + f"""
CREATE TABLE IF NOT EXISTS tool_slowest (
    eid         INTEGER PRIMARY KEY,       -- the closing event
    hour        INTEGER NOT NULL,
    tool        TEXT NOT NULL,
    duration_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tool_slowest_hour ON tool_slowest(hour, duration_ms);

DROP TRIGGER IF EXISTS events_tools_delete;
CREATE TRIGGER events_tools_delete AFTER DELETE ON events
    WHEN old.type IN {TOOL_TYPES} AND old.eid <= (SELECT eid FROM summary_mark) BEGIN"""
    + "".join(_tool_span_delete(*span) for span in TOOL_SPANS)
    + """
    DELETE FROM tool_slowest WHERE eid = old.eid;
END;
"""
)

#: A transaction's tool events, each JSON read once (json_extract keeps a parsed document for
#: the next call on the same text): by tool, hour and duration bucket, and the timed closing
#: events slower than the slowest kept of their hour, into a temporary table of a few rows that
#: the upserts of each summary table read.
_TOOL_BATCH = (
    "CREATE TEMP TABLE IF NOT EXISTS tool_batch (tool TEXT, hour INTEGER, bucket INTEGER, "
    "calls INTEGER, closed INTEGER, failed INTEGER, timed INTEGER, eid INTEGER, d REAL)",
    "INSERT INTO temp.tool_batch "
    "WITH b AS MATERIALIZED (SELECT eid, type, hour, tool, d, CASE WHEN d IS NOT NULL THEN ("
    "    SELECT bucket FROM tool_duration_buckets WHERE lo_ms <= d ORDER BY lo_ms DESC LIMIT 1) END AS bucket "
    "  FROM (SELECT eid, type, CAST(ts / 3600 AS INTEGER) AS hour, "
    "    coalesce(json_extract(data, '$.tool_name'), '?') AS tool, "
    "    CASE WHEN type <> 'pre_tool_use' AND typeof(json_extract(data, '$.duration_ms')) IN ('integer', 'real') "
    "         THEN json_extract(data, '$.duration_ms') END AS d "
    f"    FROM events WHERE eid BETWEEN ?1 AND ?2 AND +type IN {TOOL_TYPES})), "  # +type: the eid range, no index
    "floor AS (SELECT hour, coalesce((SELECT s.duration_ms FROM tool_slowest AS s WHERE s.hour = h.hour "
    f"    ORDER BY s.duration_ms DESC LIMIT 1 OFFSET {SLOWEST_PER_HOUR - 1}), -1e308) AS ms "
    "    FROM (SELECT DISTINCT hour FROM b WHERE d IS NOT NULL) AS h) "
    "SELECT tool, hour, bucket, sum(type = 'pre_tool_use'), sum(type <> 'pre_tool_use'), "
    "    sum(type = 'post_tool_use_failure'), count(d), NULL, NULL FROM b GROUP BY 1, 2, 3 "
    "UNION ALL "
    "SELECT tool, hour, bucket, 0, 0, 0, 0, eid, d FROM b JOIN floor USING (hour) WHERE d > floor.ms",
)


def _tool_span_upsert(table: str, col: str, seconds: int) -> str:
    """The batch's counts and histograms added to ``table``'s rows (histograms merged by bucket)."""
    span = "hour" if seconds == 3600 else f"hour * 3600 / {seconds}"
    return (
        f"INSERT INTO {table} (tool, {col}, calls, closed, failed, timed, durations) "
        "SELECT tool, span, sum(calls), sum(closed), sum(failed), sum(timed), "
        "json_group_object(bucket, timed) FILTER (WHERE bucket IS NOT NULL) "
        f"FROM (SELECT tool, {span} AS span, bucket, sum(calls) AS calls, sum(closed) AS closed, "
        "sum(failed) AS failed, sum(timed) AS timed FROM temp.tool_batch WHERE eid IS NULL GROUP BY 1, 2, 3) "
        "GROUP BY tool, span "
        f"ON CONFLICT(tool, {col}) DO UPDATE SET calls = calls + excluded.calls, closed = closed + excluded.closed, "
        "failed = failed + excluded.failed, timed = timed + excluded.timed, "
        "durations = CASE WHEN excluded.durations = '{}' THEN durations ELSE ("
        "SELECT json_group_object(key, n) FROM (SELECT key, sum(value) AS n FROM ("
        f"SELECT key, value FROM json_each({table}.durations) UNION ALL "
        "SELECT key, value FROM json_each(excluded.durations)) GROUP BY key)) END"
    )


TOOL_SPANS_FROM_BATCH = tuple(_tool_span_upsert(*span) for span in TOOL_SPANS)
#: The transaction's candidates for the slowest of their hour.
TOOL_SLOWEST_FROM_BATCH = (
    "INSERT OR IGNORE INTO tool_slowest (eid, hour, tool, duration_ms) "
    "SELECT eid, hour, tool, d FROM temp.tool_batch WHERE eid IS NOT NULL"
)
#: What is no longer among the slowest of an hour the transaction added to.
TOOL_SLOWEST_TRIM = (
    "DELETE FROM tool_slowest WHERE eid IN (SELECT eid FROM (SELECT eid, row_number() OVER ("
    "PARTITION BY hour ORDER BY duration_ms DESC, eid) AS r FROM tool_slowest WHERE hour IN ("
    f"SELECT DISTINCT hour FROM temp.tool_batch WHERE eid IS NOT NULL)) WHERE r > {SLOWEST_PER_HOUR})"
)


def summarize_tools(db: Any, lo: int, hi: int) -> None:
    """Add the tool events with eids ``lo``..``hi`` (in the caller's transaction) to
    ``tool_hours``, ``tool_days`` and ``tool_slowest``."""
    db.execute(_TOOL_BATCH[0])
    before = db.total_changes
    db.execute(_TOOL_BATCH[1], (lo, hi))
    if db.total_changes == before:
        return
    for upsert in TOOL_SPANS_FROM_BATCH:
        db.execute(upsert)
    before = db.total_changes
    db.execute(TOOL_SLOWEST_FROM_BATCH)
    if db.total_changes != before:
        db.execute(TOOL_SLOWEST_TRIM)
    db.execute("DELETE FROM temp.tool_batch")


#: Events read per step when migration 8 fills its tables from what is stored.
_FILL_STEP = 100_000


def _m_tool_summaries(db: sqlite3.Connection) -> None:
    """Migration 8 (see ``_TOOL_SUMMARIES``). Can run twice: the tool tables are filled anew."""
    had_mark = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'summary_mark'").fetchone() is not None
    for stmt in _statements(_TOOL_SUMMARIES):
        db.execute(stmt)
    db.execute("DELETE FROM tool_duration_buckets")
    db.executemany(
        "INSERT INTO tool_duration_buckets (lo_ms, bucket) VALUES (?, ?)",
        [(-1e308 if b == 0 else bucket_bounds(b)[0], b) for b in range(BUCKETS)],
    )
    for table in ("tool_hours", "tool_days", "tool_slowest"):
        db.execute(f"DELETE FROM {table}")
    top = db.execute("SELECT coalesce(max(eid), 0) FROM events").fetchone()[0]
    if had_mark:  # run again: migration 7's tables first catch up with every event
        mark = summary_mark(db)
        db.execute(HOURS_FROM_RANGE, (mark + 1, top))
        db.execute(SESSIONS_FROM_RANGE, (mark + 1, top))
        db.execute("UPDATE summary_mark SET eid = ?", (top,))
    else:  # migration 7 has just summarized every event
        db.execute("INSERT INTO summary_mark (eid) VALUES (?)", (top,))
    lo, hi = db.execute("SELECT min(eid), max(eid) FROM events").fetchone()
    while lo is not None and lo <= hi:
        step = db.execute(
            "SELECT max(eid) FROM (SELECT eid FROM events WHERE eid >= ? ORDER BY eid LIMIT ?)", (lo, _FILL_STEP)
        ).fetchone()[0]
        summarize_tools(db, lo, step)
        lo = step + 1


#: Ordered and append-only: never edit a migration that has shipped, add the next one.
MIGRATIONS: Sequence[tuple[int, str, Migration]] = (
    (1, "initial", _m001_initial),
    (2, "counters_and_spool", _m002_counters_and_spool),
    (3, "analysis_views", _m003_analysis_views),
    (4, "claude_code_pairing", _m004_claude_code_pairing),
    (5, "rejected_line_key", _m_rejected_line_key),
    (6, "telemetry_usage", _m_telemetry_usage),
    (7, "dashboard_summaries", _m_dashboard_summaries),
    (8, "tool_summaries", _m_tool_summaries),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

SYNCHRONOUS = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}

INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (eid, type, ts, session, client_id, recv_ts, pid, uid, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: OR IGNORE: a rejected line of an imported file that is already recorded (same ``line_key``).
INSERT_REJECTED = (
    "INSERT OR IGNORE INTO rejected (recv_ts, reason, detail, size, preview, pid, uid, line_key) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# A type whose events were all deleted by retention keeps its row with count 0 (so status can
# say when it was last seen); its first_ts then restarts from the events stored next.
_FIRST_LAST = (
    "first_ts = CASE WHEN count = 0 THEN excluded.first_ts ELSE min(first_ts, excluded.first_ts) END, "
    "last_ts = max(last_ts, excluded.last_ts)"
)
#: Per-type counts sent with a batch by the daemon ([type, count, first_ts, last_ts]).
ADD_TYPE_COUNTS = (
    "INSERT INTO event_types (type, count, first_ts, last_ts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(type) DO UPDATE SET count = count + excluded.count, " + _FIRST_LAST
)
#: Per-type counts for the rows of one transaction, found by their eid range (no Python per row).
TYPES_FROM_RANGE = (
    "INSERT INTO event_types (type, count, first_ts, last_ts) "
    "SELECT type, count(*), min(ts), max(ts) FROM events WHERE eid BETWEEN ? AND ? GROUP BY type "
    "ON CONFLICT(type) DO UPDATE SET count = count + excluded.count, " + _FIRST_LAST
)


def connect(path: Path, *, synchronous: str = "normal", readonly: bool = False) -> sqlite3.Connection:
    """Open the database with hookd's pragmas. Writers get WAL mode and private file modes."""
    try:
        if readonly:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        else:
            old = os.umask(0o077)  # the db, -wal and -shm files are the user's alone
            try:
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            finally:
                os.umask(old)
        db.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{path}: cannot switch the database to WAL mode (got {mode})")
            db.execute(f"PRAGMA synchronous = {SYNCHRONOUS[synchronous]}")
    except sqlite3.DatabaseError as e:
        hint = ""
        code = getattr(e, "sqlite_errorcode", None)
        damaged = isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)
        if not isinstance(e, sqlite3.OperationalError) or damaged:
            hint = "; move it aside, or run `hookd rebuild` (with the daemon stopped) to recreate it from the mirror"
        raise StoreError(f"cannot open database {path}: {e}{hint}") from None
    return db


def schema_version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
    if row is None:
        return 0
    return db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction. Returns their names."""
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        current = schema_version(db)
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {current} is newer than this hookd understands "
                f"({SCHEMA_VERSION}); upgrade hookd"
            )
        # Every migration not recorded, not only those above the highest recorded: branches
        # that each add one (numbered ahead for another's) must not skip each other's.
        done = {v for (v,) in db.execute("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, fn in MIGRATIONS:
            if version in done:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                fn(db)
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            applied.append(name)
        return applied
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot prepare the database schema: {e}") from None


def view_name(etype: str) -> str | None:
    """The ``<type>_events`` view of a type, or None where SQLite forbids the name."""
    if not TYPE_RE.fullmatch(etype) or etype.startswith("sqlite_"):
        return None
    return f"{etype}_events"


def writer_lock(db: Path) -> Path:
    """Held (flock) by whoever writes ``db``: the writer process, ``hookd vacuum``."""
    return db.with_name(db.name + ".writer-lock")


def create_view(db: sqlite3.Connection, etype: str, columns: dict[str, str] | None = None, *, replace=False) -> bool:
    """Create ``<type>_events`` (if missing, or anew with ``replace``), with the configured
    extra ``columns`` (name -> JSON path into ``data``). The type, the column names and the
    paths are checked against strict patterns first, so no client or configuration text
    reaches the SQL unvalidated."""
    name = view_name(etype)
    if name is None:
        return False
    extra = ""
    for col, path in (columns or {}).items():
        if not COLUMN_RE.fullmatch(col) or col in BASE_COLUMNS or not JSON_PATH_RE.fullmatch(path):
            raise StoreError(f"view {name}: column {col!r} = {path!r} is not a valid column name and JSON path")
        extra += f", json_extract(data, '{path}') AS \"{col}\""
    if replace:
        db.execute(f'DROP VIEW IF EXISTS "{name}"')
    db.execute(
        f'CREATE VIEW IF NOT EXISTS "{name}" AS '
        f"SELECT {', '.join(BASE_COLUMNS)}{extra} "
        f"FROM events WHERE type = '{etype}'"
    )
    return True


def known_types(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT type FROM event_types")}


#: In ``counters``: the largest eid retention ever deleted (a high-water mark, not a count).
DELETED_EID_MAX = "retention.deleted_eid_max"


def max_eid(db: sqlite3.Connection) -> int:
    """The largest eid ever stored: recovery replays only newer mirror lines, and new eids start
    above it. Retention may have deleted the newest events; their mark keeps them from coming
    back from the mirror at the next start."""
    return db.execute(
        "SELECT max(coalesce((SELECT max(eid) FROM events), 0), "
        "coalesce((SELECT value FROM counters WHERE name = ?), 0))",
        (DELETED_EID_MAX,),
    ).fetchone()[0]


def insert_events(db: sqlite3.Connection, rows: Sequence[Sequence], with_id: Iterable[int]) -> list[tuple[int, int]]:
    """Insert rows inside the caller's transaction. Returns ``(index, stored_eid)`` for each row
    not stored because an event with the same client ``id`` is already there.

    Rows without a client id go through one ``executemany``; the few with one are inserted
    alone so that a duplicate can be told apart (and the stored event's eid looked up).
    """
    keyed = set(with_id)
    if not keyed:
        db.executemany(INSERT_EVENT, rows)
        return []
    plain = [row for i, row in enumerate(rows) if i not in keyed]
    if plain:
        db.executemany(INSERT_EVENT, plain)
    # Usually no id is a duplicate: try them all at once and only go row by row if one was.
    db.execute("SAVEPOINT keyed")
    before = db.total_changes
    db.executemany(INSERT_EVENT, [rows[i] for i in sorted(keyed)])
    if db.total_changes - before == len(keyed):
        db.execute("RELEASE keyed")
        return []
    db.execute("ROLLBACK TO keyed")
    db.execute("RELEASE keyed")
    dropped = []
    for i in sorted(keyed):
        before = db.total_changes
        db.execute(INSERT_EVENT, rows[i])
        if db.total_changes == before:
            found = db.execute("SELECT eid FROM events WHERE client_id = ?", (rows[i][CLIENT_ID],)).fetchone()
            dropped.append((i, found[0] if found else rows[i][EID]))
    return dropped


def insert_rejected(db: sqlite3.Connection, rejects: Sequence[Sequence]) -> list[Sequence]:
    """Insert ``rejected`` rows inside the caller's transaction; returns those recorded now.

    Rows without a ``line_key`` (live lines) are all recorded, with one ``executemany``; the few
    with one (lines of an imported file) are inserted alone, so that one already recorded by an
    earlier import is told apart and not counted again."""
    keyed = [r for r in rejects if r[LINE_KEY] is not None]
    if not keyed:
        db.executemany(INSERT_REJECTED, rejects)
        return list(rejects)
    recorded = [r for r in rejects if r[LINE_KEY] is None]
    if recorded:
        db.executemany(INSERT_REJECTED, recorded)
    for r in keyed:
        before = db.total_changes
        db.execute(INSERT_REJECTED, r)
        if db.total_changes != before:
            recorded.append(r)
    return recorded


#: Counters that are times, not counts: a name ending so keeps the lowest (the first time
#: something happened) or the highest value given (the last), instead of adding them up.
FIRST, LAST = ".first", ".last"
_UPSERT = "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = "


def merge_counter(name: str, old: int | None, new: int) -> int:
    """Two values given for one counter, as ``bump_counters`` combines them."""
    if old is None:
        return new
    if name.endswith(FIRST):
        return min(old, new)
    return max(old, new) if name.endswith(LAST) else old + new


def bump_counters(db: sqlite3.Connection, counts: dict[str, int]) -> None:
    rows = [(k, v) for k, v in counts.items() if v]
    db.executemany(_UPSERT + "value + excluded.value", [r for r in rows if not r[0].endswith((FIRST, LAST))])
    db.executemany(_UPSERT + "min(value, excluded.value)", [r for r in rows if r[0].endswith(FIRST)])
    db.executemany(_UPSERT + "max(value, excluded.value)", [r for r in rows if r[0].endswith(LAST)])


#: Rows ``rejected`` keeps: the latest; older ones are deleted as new ones come. The totals per
#: reason stay in ``counters`` (``rejected.<reason>``). A row is at most about 3 KB (a 256-byte
#: preview, escaped, and a 500-character detail), so the table stays under about 30 MB
#: whatever a flood of bad lines sends; typical rows are a few hundred bytes.
REJECTED_KEPT = 10_000


def trim_rejected(db: sqlite3.Connection) -> None:
    """Keep the latest ``REJECTED_KEPT`` rows of ``rejected``: one range delete on the primary
    key (rids only grow while the newest row stays), so it costs what it deletes."""
    db.execute(
        "DELETE FROM rejected WHERE rid <= (SELECT max(rid) FROM rejected) - ?",
        (REJECTED_KEPT,),
    )
