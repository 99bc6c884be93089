"""A small OTLP/HTTP (http/json) capture server for tests: what Claude Code's telemetry exports.

Claude Code 2.1.197 posts ``/v1/logs`` and ``/v1/metrics`` with ``Transfer-Encoding: chunked``,
which ``http.server`` does not decode: the requests are parsed with httptools (llhttp, hookd's own
HTTP parser) in an asyncio loop of a thread of its own. Every body is kept as parsed JSON with the
request's path and headers; ``log_records()`` flattens the logs into one dict per record.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httptools


class _Request(asyncio.Protocol):
    def __init__(self, capture: OtlpCapture) -> None:
        self.capture = capture
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        path = self.url.decode("latin-1").split("?", 1)[0]
        try:
            data: Any = json.loads(self.body or b"{}")
        except ValueError:
            data = None
        self.capture.add(path, dict(self.headers), data)
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        self._reset()


def _value(v: dict[str, Any]) -> Any:
    """An OTLP AnyValue as Python (ints arrive as strings in OTLP/JSON: kept as sent)."""
    for key in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if key in v:
            return v[key]
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    if "kvlistValue" in v:
        return {a["key"]: _value(a.get("value", {})) for a in v["kvlistValue"].get("values", [])}
    return None


class OtlpCapture:
    """``with OtlpCapture() as cap:``; ``cap.endpoint`` for OTEL_EXPORTER_OTLP_ENDPOINT."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-capture", daemon=True)
        self.port = 0

    def add(self, path: str, headers: dict[str, str], data: Any) -> None:
        with self._lock:
            self.requests.append((path, headers, data))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(self._loop.create_server(lambda: _Request(self), "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def __enter__(self) -> OtlpCapture:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def log_records(self) -> list[dict[str, Any]]:
        """Every log record received: its attributes, plus ``body`` and the resource's attributes
        under ``resource``."""
        out = []
        with self._lock:
            bodies = [d for p, _, d in self.requests if p == "/v1/logs" and isinstance(d, dict)]
        for data in bodies:
            for rl in data.get("resourceLogs", []):
                resource = {a["key"]: _value(a["value"]) for a in rl.get("resource", {}).get("attributes", [])}
                for sl in rl.get("scopeLogs", []):
                    for rec in sl.get("logRecords", []):
                        attrs = {a["key"]: _value(a["value"]) for a in rec.get("attributes", [])}
                        attrs["body"] = _value(rec.get("body", {}))
                        attrs["resource"] = resource
                        out.append(attrs)
        return out

    def events(self, name: str, session: str | None = None) -> list[dict[str, Any]]:
        """Log records whose ``event.name`` is ``name`` (``hook_execution_complete``...)."""
        return [
            r
            for r in self.log_records()
            if r.get("event.name") == name and (session is None or r.get("session.id") == session)
        ]
