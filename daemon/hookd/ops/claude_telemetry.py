"""``hookd hooks install-claude --telemetry``: the ``env`` block that makes Claude Code export its
OpenTelemetry logs and metrics to hookd's HTTP listener (``POST /v1/logs``, ``/v1/metrics``).

What it writes into the settings file's ``env`` (docs/integrations.md, "Telemetry")::

    CLAUDE_CODE_ENABLE_TELEMETRY=1  OTEL_LOGS_EXPORTER=otlp  OTEL_METRICS_EXPORTER=otlp
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT

and ``HOOKD_TELEMETRY_ENV``, the names of the variables it added (a variable the user had
already set to the same value is not listed: it stays theirs). With the same guarantees as the
hooks (claude.py): a second run changes no byte; ``uninstall-claude`` (or ``--no-telemetry``)
removes exactly the listed variables, and keeps one whose value the user changed since; a
variable the user set to another value is never overwritten: install refuses, names it, and
changes nothing. The endpoint is hookd's own: when the listener's port changes, it is updated.

Whether tool details and prompt text are exported (``OTEL_LOG_TOOL_DETAILS``,
``OTEL_LOG_USER_PROMPTS``) stays the user's choice: never written here.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from hookd.errors import ConfigError, UsageError
from hookd.settings import Settings
from hookd.values import is_loopback

#: Lists the variables install-claude --telemetry added: exactly what uninstall removes.
MARK: Final = "HOOKD_TELEMETRY_ENV"
ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
PROTOCOL: Final = "http/protobuf"
#: Every variable but the endpoint, with the value hookd writes.
FIXED: Final = {
    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOL,
}


def wanted(settings: Settings, http_url: str | None) -> dict[str, str]:
    """The variables for this daemon's listener (``http_url``: its ``/v1/events`` URL, None when
    the listener is not configured). UsageError when Claude Code could not export to it."""
    where = settings.config_path or "the configuration file"
    if http_url is None:
        raise UsageError(
            "--telemetry: hookd's HTTP listener is not configured, and Claude Code exports its telemetry over "
            f'HTTP. Configure it (`listen = "127.0.0.1:8787"` under `[http]` in {where}, or HOOKD_HTTP=127.0.0.1:8787 '
            "for the daemon), restart hookd, and run this again"
        )
    base = http_url.rsplit("/v1/", 1)[0]
    if not _loopback_base(base):
        raise UsageError(
            f"--telemetry: hookd's HTTP listener is on {base}, not a loopback address; Claude Code would need its "
            "token: listen on 127.0.0.1 too, or configure the exporter yourself (docs/integrations.md, Telemetry)"
        )
    if settings.http_token_file is not None:
        raise UsageError(
            "--telemetry: hookd's HTTP listener asks for a token (http.token_file), which this settings file should "
            "not hold: set OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer TOKEN' in the environment Claude Code "
            "starts in, with the other variables of docs/integrations.md (Telemetry)"
        )
    return {**FIXED, ENDPOINT: base}


def _loopback_base(url: object) -> bool:
    """``http://LOOPBACK:PORT`` with no path: an endpoint install-claude writes."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        return parts.scheme == "http" and parts.path in ("", "/") and is_loopback(host)
    except ValueError:
        return False


def _env(data: dict[str, Any], where: object) -> dict[str, Any]:
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise ConfigError(f'{where}: "env" is not a JSON object; fix it by hand, then run this again')
    return env


def _ours(env: dict[str, Any]) -> list[str]:
    mark = env.get(MARK)
    return mark.split() if isinstance(mark, str) else []


def installed(data: dict[str, Any]) -> bool:
    """Whether install-claude --telemetry has written this file's ``env``."""
    env = data.get("env")
    return isinstance(env, dict) and MARK in env


def merge(data: dict[str, Any], want: dict[str, str], where: object) -> list[str]:
    """Bring ``env`` to ``want``; returns the variables added or updated ([] when none). A
    variable set to another value by the user is refused (ConfigError) before anything changes."""
    env = _env(data, where)
    ours = _ours(env)
    conflicts = [
        f"{k}={env[k]!r} (hookd writes {v!r})"
        for k, v in want.items()
        if k in env and env[k] != v and not (k == ENDPOINT and k in ours and _loopback_base(env[k]))
    ]
    if conflicts:
        raise ConfigError(
            f'{where}: its "env" already sets {"; ".join(conflicts)}. hookd does not overwrite your settings: '
            "remove those variables (or set them to hookd's values) and run this again, or install without "
            "--telemetry; nothing was changed"
        )
    changed = [k for k, v in want.items() if env.get(k) != v]
    listed = [k for k in want if k in ours or k not in env]
    if not changed and listed == ours:
        return []
    env.update(want)
    if listed:
        env[MARK] = " ".join(listed)
    data["env"] = env
    return changed or [MARK]


def remove(data: dict[str, Any], where: object) -> tuple[list[str], list[str]]:
    """Remove the variables install added: (removed, kept because the user changed them since)."""
    env = data.get("env")
    if not isinstance(env, dict) or MARK not in env:
        return [], []
    removed, kept = [], []
    for k in _ours(env):
        if k not in env:
            continue
        if env[k] == FIXED.get(k) or (k == ENDPOINT and _loopback_base(env[k])):
            del env[k]
            removed.append(k)
        else:
            kept.append(k)
    del env[MARK]
    if not env:
        del data["env"]
    return removed, kept


def note_choices() -> str:
    return (
        "  tool details and prompt text stay out of the export unless you set OTEL_LOG_TOOL_DETAILS=1 / "
        "OTEL_LOG_USER_PROMPTS=1 yourself (docs/integrations.md, Telemetry)"
    )
