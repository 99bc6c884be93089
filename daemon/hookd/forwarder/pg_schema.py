"""hookd's schema in PostgreSQL: ordered migrations recorded in ``hookd_schema``, and the views.

One table, ``events``, holds every host's events, keyed by ``(host, eid)``: the local store's
columns plus ``host``, ``data`` as ``jsonb``. The analysis views are the local store's
(writer/schema.py) ported, with a ``host`` column and every pairing done within one host:
``tool_calls``, ``lost_tool_calls``, ``sessions``, and a ``<type>_events`` view per type, made
when a type first arrives (``hookd_types`` records which exist); and SQLite's migration 6,
the telemetry views (``session_usage``, ``prompt_usage``, ``metric_totals``, cost and tokens in
``sessions``, the tool_result record in ``tool_calls``), as migration 3. Views of a later
SQLite migration are one more entry in ``MIGRATIONS``.

Migrations run in one transaction each, under an advisory lock, so that many hookds starting
at once against one database migrate it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

#: pg_advisory_xact_lock key for migrations ("hookd" in ASCII).
LOCK_KEY: Final = 0x686F6F6B64
#: PostgreSQL truncates longer identifiers: types whose view name would not fit get no view.
MAX_IDENTIFIER: Final = 63

VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS hookd_schema (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

_EVENTS = """
CREATE TABLE events (
    host      text NOT NULL,             -- forward.host of the machine it came from
    eid       bigint NOT NULL,           -- hookd's time-ordered id on that machine
    type      text NOT NULL,
    ts        double precision NOT NULL, -- event time, epoch seconds
    session   text,
    client_id text,
    recv_ts   double precision NOT NULL, -- when that hookd read it, epoch seconds
    pid       integer,
    uid       bigint,
    data      jsonb NOT NULL,            -- the event as the client sent it
    PRIMARY KEY (host, eid)
);
CREATE INDEX events_type_ts ON events (type, ts);
CREATE INDEX events_session_ts ON events (session, ts);
-- tool_calls pairs a PreToolUse with its closing event by tool_use_id: a lookup, not a scan.
CREATE INDEX events_tool_use_id ON events (host, (data->>'tool_use_id'))
    WHERE type IN ('post_tool_use', 'post_tool_use_failure');

-- Each host's cursor: the largest eid committed here. It moves in the same transaction as
-- the events it covers, so a crash anywhere leaves both or neither.
CREATE TABLE hookd_forward_cursor (
    host       text PRIMARY KEY,
    last_eid   bigint NOT NULL DEFAULT 0,
    events     bigint NOT NULL DEFAULT 0,  -- events stored for this host, all time
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The types that have a <type>_events view.
CREATE TABLE hookd_types (
    type       text PRIMARY KEY,
    first_host text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""

# The duration as SQLite's view gives it: Claude Code's own duration_ms where the closing
# event carries a number, else the gap between the two events' times, rounded to 0.1 ms.
_DURATION = "(post.data->>'duration_ms')::double precision"
_HAS_DURATION = "jsonb_typeof(post.data->'duration_ms') = 'number'"

_ANALYSIS_VIEWS = f"""
CREATE VIEW tool_calls AS
SELECT pre.host                                     AS host,
       pre.session                                  AS session,
       pre.data->>'tool_use_id'                     AS tool_use_id,
       pre.data->>'tool_name'                       AS tool_name,
       pre.ts                                       AS started,
       post.ts                                      AS finished,
       CASE WHEN {_HAS_DURATION} THEN {_DURATION}
            ELSE round(((post.ts - pre.ts) * 1000.0)::numeric, 1)::double precision END AS duration_ms,
       CASE WHEN post.eid IS NULL THEN NULL
            WHEN {_HAS_DURATION} THEN 'claude_code' ELSE 'received' END AS duration_source,
       CASE WHEN post.eid IS NULL THEN 'unfinished'
            WHEN post.type = 'post_tool_use_failure' THEN 'failed'
            ELSE 'finished' END                     AS status,
       pre.eid                                      AS pre_eid,
       post.eid                                     AS post_eid
FROM events AS pre
LEFT JOIN LATERAL (
    SELECT c.eid, c.ts, c.type, c.data FROM events AS c
    WHERE c.host = pre.host
      AND c.type IN ('post_tool_use', 'post_tool_use_failure')
      AND c.data->>'tool_use_id' = pre.data->>'tool_use_id'
    ORDER BY c.eid LIMIT 1) AS post ON true
WHERE pre.type = 'pre_tool_use';

CREATE VIEW lost_tool_calls AS
SELECT pre.host                                     AS host,
       pre.session                                  AS session,
       pre.data->>'tool_use_id'                     AS tool_use_id,
       pre.data->>'tool_name'                       AS tool_name,
       pre.ts                                       AS started,
       ended.ts                                     AS session_ended,
       pre.eid                                      AS pre_eid
FROM (SELECT host, session, max(ts) AS ts FROM events
      WHERE type = 'session_end' AND session IS NOT NULL GROUP BY host, session) AS ended
JOIN events AS pre ON pre.host = ended.host AND pre.session = ended.session
                  AND pre.type = 'pre_tool_use' AND pre.ts <= ended.ts
WHERE pre.data->>'tool_use_id' IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM events AS c
      WHERE c.host = pre.host AND c.type IN ('post_tool_use', 'post_tool_use_failure')
        AND c.data->>'tool_use_id' = pre.data->>'tool_use_id')
  AND NOT EXISTS (
      SELECT 1 FROM events AS d
      WHERE d.host = pre.host AND d.type = 'permission_denied' AND d.session = pre.session
        AND d.data->>'tool_use_id' = pre.data->>'tool_use_id');

CREATE VIEW sessions AS
SELECT host,
       session,
       min(ts)                                                          AS started,
       max(ts) FILTER (WHERE type = 'session_end')                      AS ended,
       max(ts)                                                          AS last_seen,
       count(*)                                                         AS events,
       count(*) FILTER (WHERE type = 'user_prompt_submit')              AS prompts,
       count(*) FILTER (WHERE type = 'pre_tool_use')                    AS tool_calls,
       count(*) FILTER (WHERE type = 'post_tool_use_failure')           AS tool_failures,
       count(*) FILTER (WHERE type = 'pre_tool_use')
         - count(*) FILTER (WHERE type IN ('post_tool_use', 'post_tool_use_failure'))
                                                                        AS tool_calls_unfinished,
       max(data->>'reason') FILTER (WHERE type = 'session_end')         AS end_reason,
       max(data->>'cwd') FILTER (WHERE type = 'session_start')          AS cwd
FROM events
WHERE session IS NOT NULL
GROUP BY host, session"""

_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


def _api_sums() -> str:
    """cost_usd and the token columns: sums over a group's api_request records."""
    api = "FILTER (WHERE type = 'claude_code_api_request')"
    return ",\n       ".join(
        [f"sum(hookd_real(data->'cost_usd')) {api} AS cost_usd"]
        + [f"sum(hookd_int(data->'{t}')) {api} AS {t}" for t in _TOKENS]
    )


def _usage_sums() -> str:
    """The columns of session_usage's and prompt_usage's inner groups (per model)."""
    return ",\n             ".join(
        [
            _api_sums(),
            "count(*) FILTER (WHERE type = 'claude_code_api_request') AS api_requests",
            "count(*) FILTER (WHERE type = 'claude_code_api_error') AS api_errors",
            "sum(hookd_real(data->'duration_ms')) FILTER (WHERE type = 'claude_code_api_request') AS api_duration_ms",
        ]
    )


# Migration 3: SQLite's migration 6 (writer/schema.py, telemetry_usage), ported. Claude Code
# sends some figures as strings (tool_result's duration_ms), and any client may send anything:
# hookd_real and hookd_int read a jsonb value as SQLite's CAST(... AS REAL / INTEGER) reads
# json_extract's, so that each view gives the local store's answer and no value makes it fail:
# a number as is, a string by its numeric prefix (' 12.5x' is 12.5, 'n/a' is 0), true 1, false
# 0, an object or array 0, JSON null or a missing key NULL; beyond double precision's range
# +-Infinity (or 0), an integer clamped to bigint's. The regular expressions bound every digit
# run (200 digits, an exponent of 4), so that the cast to numeric cannot overflow: a string
# of more digits than that is read from its first 200 (SQLite reads them all).
_FLOAT = """(CASE WHEN abs(n) >= 1.7976931348623157e308 THEN sign(n)::double precision * 'Infinity'::double precision
              WHEN abs(n) < 1e-320 THEN 0::double precision
              ELSE n::double precision END)"""
_REAL_PREFIX = "'^[[:space:]]*([+-]?(?:[0-9]{1,200}(?:[.][0-9]{0,200})?|[.][0-9]{1,200})(?:[eE][+-]?[0-9]{1,4})?)'"
_INT_PREFIX = "'^[[:space:]]*([+-]?[0-9]{1,30})'"
_BOOL_OR_CONTAINER = """WHEN 'boolean' THEN CASE WHEN v = 'true'::jsonb THEN 1 ELSE 0 END
                             WHEN 'object' THEN 0 WHEN 'array' THEN 0"""

_TELEMETRY_USAGE = f"""
CREATE FUNCTION hookd_float(n numeric) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT {_FLOAT} $$;

CREATE FUNCTION hookd_bigint(n numeric) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (CASE WHEN n > 9223372036854775807 THEN 9223372036854775807
                       WHEN n < -9223372036854775808 THEN -9223372036854775808 ELSE n END)::bigint $$;

CREATE FUNCTION hookd_real(v jsonb) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE jsonb_typeof(v)
                      WHEN 'number' THEN hookd_float(v::numeric)
                      WHEN 'string' THEN hookd_float(coalesce(substring(v #>> '{{}}' FROM {_REAL_PREFIX})::numeric, 0))
                      {_BOOL_OR_CONTAINER} END $$;

CREATE FUNCTION hookd_int(v jsonb) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hookd_bigint(CASE jsonb_typeof(v)
                      WHEN 'number' THEN trunc(v::numeric)
                      WHEN 'string' THEN coalesce(substring(v #>> '{{}}' FROM {_INT_PREFIX})::numeric, 0)
                      {_BOOL_OR_CONTAINER} END) $$;

-- tool_calls joins the tool_result telemetry by tool_use_id: a lookup, as for the hooks.
CREATE INDEX events_otel_tool_use_id ON events (host, (data->>'tool_use_id'))
    WHERE type = 'claude_code_tool_result';

-- Cost and tokens per host and session, from the api_request records (api_error counted beside
-- them). first_ts and last_ts span all the session's events, hooks and telemetry. Token sums
-- are numeric (they cannot overflow), counts bigint.
CREATE VIEW session_usage AS
SELECT u.host, u.session,
       coalesce(sum(u.cost_usd), 0)                    AS cost_usd,
       coalesce(sum(u.input_tokens), 0)                AS input_tokens,
       coalesce(sum(u.output_tokens), 0)               AS output_tokens,
       coalesce(sum(u.cache_read_tokens), 0)           AS cache_read_tokens,
       coalesce(sum(u.cache_creation_tokens), 0)       AS cache_creation_tokens,
       sum(u.api_requests)::bigint                     AS api_requests,
       sum(u.api_errors)::bigint                       AS api_errors,
       string_agg(u.model, ',' ORDER BY u.model COLLATE "C") AS models,
       coalesce(sum(u.api_duration_ms), 0)             AS api_duration_ms,
       (SELECT min(e.ts) FROM events AS e WHERE e.host = u.host AND e.session = u.session) AS first_ts,
       (SELECT max(e.ts) FROM events AS e WHERE e.host = u.host AND e.session = u.session) AS last_ts
FROM (SELECT host, session, data->>'model' AS model,
             {_usage_sums()}
      FROM events
      WHERE type IN ('claude_code_api_request', 'claude_code_api_error') AND session IS NOT NULL
      GROUP BY host, session, data->>'model') AS u
GROUP BY u.host, u.session;

-- The same per prompt (the telemetry's prompt.id, the hooks' prompt_id), with the prompt's
-- tool calls: distinct tool_use_ids of tool_result records and PreToolUse hooks.
CREATE VIEW prompt_usage AS
SELECT g.host, g.prompt_id,
       max(g.session)                                  AS session,
       coalesce(sum(g.cost_usd), 0)                    AS cost_usd,
       coalesce(sum(g.input_tokens), 0)                AS input_tokens,
       coalesce(sum(g.output_tokens), 0)               AS output_tokens,
       coalesce(sum(g.cache_read_tokens), 0)           AS cache_read_tokens,
       coalesce(sum(g.cache_creation_tokens), 0)       AS cache_creation_tokens,
       sum(g.api_requests)::bigint                     AS api_requests,
       sum(g.api_errors)::bigint                       AS api_errors,
       string_agg(g.model, ',' ORDER BY g.model COLLATE "C") AS models,
       sum(g.tool_calls)::bigint                       AS tool_calls,
       coalesce(sum(g.api_duration_ms), 0)             AS api_duration_ms,
       min(g.first_ts)                                 AS first_ts,
       max(g.last_ts)                                  AS last_ts
FROM (SELECT host, prompt_id, max(session COLLATE "C") AS session, model,
             {_usage_sums()},
             count(DISTINCT data->>'tool_use_id')
                 FILTER (WHERE type IN ('claude_code_tool_result', 'pre_tool_use')) AS tool_calls,
             min(ts) AS first_ts,
             max(ts) AS last_ts
      FROM (SELECT host, session, type, ts, data,
                   CASE WHEN type = 'pre_tool_use' THEN data->>'prompt_id' ELSE data->>'prompt.id' END AS prompt_id,
                   CASE WHEN type IN ('claude_code_api_request', 'claude_code_api_error')
                        THEN data->>'model' END AS model
            FROM events
            WHERE type IN ('claude_code_api_request', 'claude_code_api_error', 'claude_code_tool_result',
                           'claude_code_user_prompt', 'pre_tool_use')) AS p
      WHERE prompt_id IS NOT NULL
      GROUP BY host, prompt_id, model) AS g
GROUP BY g.host, g.prompt_id;

-- OTLP metric points (type otel_metric) per host and series without double counting. A
-- cumulative series' total is the last point of each start time, added up over start times,
-- a delta series' the sum of its points, a gauge's its last point. The series' other columns
-- are its last point's.
CREATE VIEW metric_totals AS
SELECT host, series,
       max(session) FILTER (WHERE rn_series = 1)       AS session,
       max(name) FILTER (WHERE rn_series = 1)          AS name,
       max(unit) FILTER (WHERE rn_series = 1)          AS unit,
       max(kind) FILTER (WHERE rn_series = 1)          AS kind,
       max(temporality) FILTER (WHERE rn_series = 1)   AS temporality,
       (array_agg(attributes) FILTER (WHERE rn_series = 1))[1] AS attributes,
       CASE max(temporality) FILTER (WHERE rn_series = 1)
            WHEN 'delta' THEN sum(value)
            WHEN 'cumulative' THEN sum(value) FILTER (WHERE rn_start = 1)
            ELSE max(value) FILTER (WHERE rn_series = 1) END AS value,
       count(*)                                        AS points,
       min(ts)                                         AS first_ts,
       max(ts)                                         AS last_ts
FROM (SELECT host, session, ts,
             data->>'series'      AS series,
             data->>'name'        AS name,
             data->>'unit'        AS unit,
             data->>'kind'        AS kind,
             data->>'temporality' AS temporality,
             data->'attributes'   AS attributes,
             hookd_real(data->'value') AS value,
             row_number() OVER (PARTITION BY host, data->>'series', data->'start_ts'
                                ORDER BY ts DESC, eid DESC) AS rn_start,
             row_number() OVER (PARTITION BY host, data->>'series' ORDER BY ts DESC, eid DESC) AS rn_series
      FROM events WHERE type = 'otel_metric') AS m
GROUP BY host, series;

-- sessions and tool_calls again, with migration 2's columns unchanged and the telemetry's
-- added at the end: CREATE OR REPLACE, so that views of your own built on them stay.
CREATE OR REPLACE VIEW sessions AS
SELECT host,
       session,
       min(ts)                                                          AS started,
       max(ts) FILTER (WHERE type = 'session_end')                      AS ended,
       max(ts)                                                          AS last_seen,
       count(*)                                                         AS events,
       count(*) FILTER (WHERE type = 'user_prompt_submit')              AS prompts,
       count(*) FILTER (WHERE type = 'pre_tool_use')                    AS tool_calls,
       count(*) FILTER (WHERE type = 'post_tool_use_failure')           AS tool_failures,
       count(*) FILTER (WHERE type = 'pre_tool_use')
         - count(*) FILTER (WHERE type IN ('post_tool_use', 'post_tool_use_failure'))
                                                                        AS tool_calls_unfinished,
       max(data->>'reason') FILTER (WHERE type = 'session_end')         AS end_reason,
       max(data->>'cwd') FILTER (WHERE type = 'session_start')          AS cwd,
       {_api_sums()},
       count(*) FILTER (WHERE type = 'claude_code_api_request')         AS api_requests
FROM events
WHERE session IS NOT NULL
GROUP BY host, session;

CREATE OR REPLACE VIEW tool_calls AS
SELECT pre.host                                     AS host,
       pre.session                                  AS session,
       pre.data->>'tool_use_id'                     AS tool_use_id,
       pre.data->>'tool_name'                       AS tool_name,
       pre.ts                                       AS started,
       post.ts                                      AS finished,
       CASE WHEN {_HAS_DURATION} THEN {_DURATION}
            ELSE round(((post.ts - pre.ts) * 1000.0)::numeric, 1)::double precision END AS duration_ms,
       CASE WHEN post.eid IS NULL THEN NULL
            WHEN {_HAS_DURATION} THEN 'claude_code' ELSE 'received' END AS duration_source,
       CASE WHEN post.eid IS NULL THEN 'unfinished'
            WHEN post.type = 'post_tool_use_failure' THEN 'failed'
            ELSE 'finished' END                     AS status,
       pre.eid                                      AS pre_eid,
       post.eid                                     AS post_eid,
       hookd_real(tr.data->'duration_ms')           AS telemetry_duration_ms,
       CASE lower(tr.data->>'success') WHEN 'true' THEN 1 WHEN '1' THEN 1
            WHEN 'false' THEN 0 WHEN '0' THEN 0 END AS telemetry_success,
       tr.data->>'error'                            AS telemetry_error,
       tr.eid                                       AS telemetry_eid
FROM events AS pre
LEFT JOIN LATERAL (
    SELECT c.eid, c.ts, c.type, c.data FROM events AS c
    WHERE c.host = pre.host
      AND c.type IN ('post_tool_use', 'post_tool_use_failure')
      AND c.data->>'tool_use_id' = pre.data->>'tool_use_id'
    ORDER BY c.eid LIMIT 1) AS post ON true
LEFT JOIN LATERAL (
    SELECT t.eid, t.data FROM events AS t
    WHERE t.host = pre.host
      AND t.type = 'claude_code_tool_result'
      AND t.data->>'tool_use_id' = pre.data->>'tool_use_id'
    ORDER BY t.eid LIMIT 1) AS tr ON true
WHERE pre.type = 'pre_tool_use'"""

#: Ordered and append-only, like SQLite's: never edit one that has shipped, add the next.
MIGRATIONS: Final[Sequence[tuple[int, str, str]]] = (
    (1, "events", _EVENTS),
    (2, "analysis_views", _ANALYSIS_VIEWS),
    (3, "telemetry_usage", _TELEMETRY_USAGE),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]

#: The columns of ``events`` in PostgreSQL, in the order the forwarder copies them.
COLUMNS: Final = ("host", "eid", "type", "ts", "session", "client_id", "recv_ts", "pid", "uid", "data")


def statements(script: str) -> list[str]:
    """A migration's statements (they hold no ``;`` inside a statement)."""
    return [s.strip() for s in script.split(";") if s.strip() and not _only_comments(s)]


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


def type_view(etype: str) -> str | None:
    """The ``<type>_events`` view's statement, or None when its name is too long for PostgreSQL.
    Types are ``[a-z0-9_]`` (framing.TYPE_RE), so the quoted name needs no escaping."""
    name = f"{etype}_events"
    if len(name) > MAX_IDENTIFIER:
        return None
    columns = ", ".join(COLUMNS)
    return f"CREATE OR REPLACE VIEW \"{name}\" AS SELECT {columns} FROM events WHERE type = '{etype}'"
