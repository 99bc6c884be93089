"""hookd's schema in PostgreSQL: ordered migrations recorded in ``hookd_schema``, and the views.

One table, ``events``, holds every host's events, keyed by ``(host, eid)``: the local store's
columns plus ``host``, ``data`` as ``jsonb``. The analysis views are the local store's
(writer/schema.py) ported, with a ``host`` column and every pairing done within one host:
``tool_calls``, ``lost_tool_calls``, ``sessions``, and a ``<type>_events`` view per type, made
when a type first arrives (``hookd_types`` records which exist). Views of a later SQLite
migration (the telemetry views) are one more entry in ``MIGRATIONS``.

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

#: Ordered and append-only, like SQLite's: never edit one that has shipped, add the next.
MIGRATIONS: Final[Sequence[tuple[int, str, str]]] = (
    (1, "events", _EVENTS),
    (2, "analysis_views", _ANALYSIS_VIEWS),
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
