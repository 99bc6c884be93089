"""The key fields of an event in a few words, for ``hookd tail`` on a terminal: a Claude Code tool
call's tool and command or file, a prompt's start, a commit's sha, branch and subject, an API
request's model, cost and tokens (Claude Code's telemetry); for other
types, their fields as ``key=value``.

Payloads are whatever clients sent: a field of an unexpected type is skipped, never an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, Final

from hookd.ops.show import one_line

#: The ``tool_input`` field that says what a tool call does, first found wins: Bash's command,
#: Read/Edit/Write's file, Grep/Glob's pattern (then its path), WebFetch's url, WebSearch's
#: query, a Task's description.
TOOL_DETAIL: Final = (
    "command",
    "file_path",
    "notebook_path",
    "pattern",
    "url",
    "query",
    "path",
    "description",
    "prompt",
)
#: Left out of the ``key=value`` summary: the envelope (shown apart or not of interest at a glance).
ENVELOPE: Final = frozenset(("type", "ts", "id", "session", "session_id", "hook_event_name", "transcript_path"))


def summary(etype: str, data: Any) -> str:
    """A one-line summary of the event ``data`` of type ``etype`` (control characters escaped)."""
    if not isinstance(data, dict):
        return one_line(_compact(data))
    text = _BY_TYPE.get(etype, key_values)(data)
    return one_line(text)


def _text(v: Any) -> str:
    """A string field, or "" when it is missing or not a string."""
    return v if isinstance(v, str) else ""


def _short(sha: Any) -> str:
    return _text(sha)[:7]


def _compact(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _plain(v: Any) -> str:
    """A value for ``key=value``: a simple string bare, anything else as compact JSON."""
    if isinstance(v, str) and v and not any(c.isspace() or c in "\"'=" for c in v):
        return v
    return _compact(v)


def key_values(data: dict[str, Any]) -> str:
    """``service=api ok=true duration_ms=812``: every field but the envelope, in order."""
    return " ".join(f"{k}={_plain(v)}" for k, v in data.items() if k not in ENVELOPE)


def tool(data: dict[str, Any]) -> str:
    """``Bash: make test``; a failure adds its error."""
    name = _text(data.get("tool_name")) or "?"
    given = data.get("tool_input")
    detail = ""
    if isinstance(given, dict):
        detail = next((given[k] for k in TOOL_DETAIL if isinstance(given.get(k), str) and given[k]), "")
    text = f"{name}: {detail}" if detail else name
    error = _text(data.get("error"))
    return f"{text} -> failed: {error}" if error else text


def prompt(data: dict[str, Any]) -> str:
    return _text(data.get("prompt")) or key_values(data)


def _in_repo(data: dict[str, Any]) -> str:
    repo = _text(data.get("repo"))
    return f" (in {os.path.basename(repo.rstrip('/'))})" if repo else ""


def git_commit(data: dict[str, Any]) -> str:
    """``a1b2c3d main: Fix the parser (in hookd)``."""
    rebasing = " (rebasing)" if data.get("rebasing") is True else ""
    return (
        f"{_short(data.get('sha'))} {_text(data.get('branch'))}: {_text(data.get('subject'))}{rebasing}{_in_repo(data)}"
    )


def git_checkout(data: dict[str, Any]) -> str:
    """``main at a1b2c3d (from 9f8e7d6)``, or ``files at a1b2c3d`` for ``git checkout -- FILE``."""
    at = f"at {_short(data.get('sha'))}"
    if data.get("kind") == "files":
        return f"files {at}{_in_repo(data)}"
    was = _short(data.get("from"))
    return f"{_text(data.get('branch'))} {at}" + (f" (from {was})" if was else "") + _in_repo(data)


def git_merge(data: dict[str, Any]) -> str:
    """``main at a1b2c3d: merge topic: Merge made by the 'ort' strategy.``"""
    squash = " (squash)" if data.get("squash") is True else ""
    message = _text(data.get("message")) or _text(data.get("subject"))
    return f"{_text(data.get('branch'))} at {_short(data.get('sha'))}{squash}: {message}{_in_repo(data)}"


def git_rewrite(data: dict[str, Any]) -> str:
    """``rebase of topic: 3 commit(s) rewritten, now a1b2c3d``."""
    count = data.get("rewritten_count")
    n = f"{count} commit(s)" if isinstance(count, int) else "commits"
    head = f"{_text(data.get('kind')) or 'rewrite'} of {_text(data.get('branch'))}"
    return f"{head}: {n} rewritten, now {_short(data.get('sha'))}{_in_repo(data)}"


def _number(v: Any) -> float | None:
    """A figure Claude Code's telemetry sent as a number or as a string of one."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v) if isinstance(v, str) else None
    except ValueError:
        return None


def api_request(data: dict[str, Any]) -> str:
    """``claude-sonnet-4-5 $0.0123; 1,200 in / 310 out tokens; cache 5,000 read / 40 written; 912 ms``
    (Claude Code's OpenTelemetry ``claude_code.api_request``)."""
    parts = [_text(data.get("model")) or "?"]
    cost = _number(data.get("cost_usd"))
    if cost is not None:
        parts[0] += f" ${cost:.4f}"
    tokens = [
        _number(data.get(k)) for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
    ]
    if tokens[0] is not None or tokens[1] is not None:
        parts.append(f"{int(tokens[0] or 0):,} in / {int(tokens[1] or 0):,} out tokens")
    if tokens[2] or tokens[3]:
        parts.append(f"cache {int(tokens[2] or 0):,} read / {int(tokens[3] or 0):,} written")
    duration = _number(data.get("duration_ms"))
    if duration is not None:
        parts.append(f"{duration:.0f} ms")
    return "; ".join(parts)


_BY_TYPE: Final[dict[str, Callable[[dict[str, Any]], str]]] = {
    "pre_tool_use": tool,
    "post_tool_use": tool,
    "post_tool_use_failure": tool,
    "user_prompt_submit": prompt,
    "git_commit": git_commit,
    "git_checkout": git_checkout,
    "git_merge": git_merge,
    "git_rewrite": git_rewrite,
    "claude_code_api_request": api_request,
}
