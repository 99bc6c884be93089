"""OTLP/HTTP (``POST /v1/logs``, ``/v1/metrics``): real daemons, the OpenTelemetry Python SDK's
own OTLP/HTTP exporters (protobuf, as Claude Code's ``http/protobuf``), raw requests for what no
exporter sends (malformed bodies, gzip bombs, chunked JSON), and another real uid.

Records are shaped like Claude Code's (../shared/claude-code.md): the name in the body, no
``event_name``, ``event.name`` an attribute, ``cost_usd`` a double and token counts ints on
api_request, ``duration_ms`` and ``success`` strings on tool_result.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from test_hardening import NOBODY, rejected_by_reason
from test_http import CURL, address, daemon_status, needs_curl

from conftest import Daemon, clean_env, wait_until
from hookd import otlp, otlp_wire, oversize
from hookd.otlp_worker import worker

SCOPE = "com.anthropic.claude_code.events"
RESOURCE = {"service.name": "claude-code", "service.version": "2.1.197", "os.type": "linux", "host.arch": "x64"}
A, B = "5e7c0c4e-1111-4b1e-9a53-00000000000a", "5e7c0c4e-1111-4b1e-9a53-00000000000b"
PROTOBUF, JSON = "application/x-protobuf", "application/json"


@pytest.fixture
def hd(home: Path) -> Iterator[Daemon]:
    """A daemon with the HTTP listener on a free loopback port."""
    d = Daemon(home, "--http", "127.0.0.1:0").start()
    yield d
    d.kill()


def endpoint(d: Daemon, signal: str = "logs") -> str:
    host, port = address(d)
    return f"http://{host}:{port}/v1/{signal}"


def otlp_counts(d: Daemon) -> dict:
    return daemon_status(d)["http"]["otlp"]


# -- Claude-Code-shaped records through the Python SDK ------------------------------------------
API_REQUESTS = [  # (session, prompt, model, cost_usd, input, output, cache_read, cache_creation)
    (A, "p-a1", "claude-sonnet-4-5", 0.125, 1200, 310, 5000, 40),
    (A, "p-a1", "claude-haiku-4-5", 0.0625, 300, 50, 0, 0),
    (A, "p-a2", "claude-sonnet-4-5", 0.5, 2500, 900, 7000, 120),
    (B, "p-b1", "claude-opus-4-1", 1.75, 4000, 1500, 0, 800),
]


def emit_claude_records() -> list:
    """The records of two sessions, as the SDK hands them to its exporter."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create(RESOURCE))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    log = provider.get_logger(SCOPE, "2.1.197")
    t0 = time.time_ns() - 10_000_000_000
    for i, (session, prompt, model, cost, inp, out, cr, cc) in enumerate(API_REQUESTS):
        log.emit(
            timestamp=t0 + i * 1_000_000,
            body="claude_code.api_request",
            attributes={
                **_common(session, prompt, "api_request", i),
                "model": model,
                "cost_usd": cost,
                "duration_ms": 900 + i,
                "input_tokens": inp,
                "output_tokens": out,
                "cache_read_tokens": cr,
                "cache_creation_tokens": cc,
                "request_id": f"req_{i}",
            },
        )
    extra = (
        ("claude_code.api_error", {"model": "claude-sonnet-4-5", "error": "overloaded", "status_code": "529"}),
        (
            "claude_code.tool_result",
            {"tool_name": "Read", "tool_use_id": "toolu_a1", "success": "true", "duration_ms": "37"},
        ),
        ("claude_code.user_prompt", {"prompt_length": "42", "prompt": "<REDACTED>"}),
    )
    for j, (name, attrs) in enumerate(extra, start=len(API_REQUESTS)):
        log.emit(timestamp=t0 + j * 1_000_000, body=name, attributes={**_common(A, "p-a1", name[12:], j), **attrs})
    provider.force_flush()
    return list(memory.get_finished_logs())


def _common(session: str, prompt: str, name: str, seq: int) -> dict:
    return {
        "event.name": name,
        "event.timestamp": "2026-05-01T10:00:00.000Z",
        "event.sequence": seq,
        "session.id": session,
        "prompt.id": prompt,
        "user.id": "u" * 64,
        "terminal.type": "xterm-256color",
    }


def hook(d: Daemon, payload: dict) -> None:
    host, port = address(d)
    c = http.client.HTTPConnection(host, port, timeout=30)
    try:
        c.request("POST", "/v1/events", body=json.dumps(payload), headers={"Content-Type": JSON})
        assert c.getresponse().status == 204
    finally:
        c.close()


def test_python_sdk_logs_every_record_once_and_the_views_add_up(hd: Daemon) -> None:
    records = emit_claude_records()
    # The hooks of the same tool call, which the telemetry joins (tool_calls, prompt_usage).
    for event in ("PreToolUse", "PostToolUse"):
        hook(hd, {"hook_event_name": event, "session_id": A, "prompt_id": "p-a1", "tool_name": "Read",
                  "tool_use_id": "toolu_a1", "tool_input": {"file_path": "/x"}})  # fmt: skip
    gz = OTLPLogExporter(endpoint=endpoint(hd), compression=Compression.Gzip)
    assert gz.export(records).name == "SUCCESS"
    telemetry = "type LIKE 'claude_code_%'"
    assert hd.wait_count(len(records), where=telemetry) == len(records)
    # An exporter that retries the batch (it never saw our answer): no duplicates.
    plain = OTLPLogExporter(endpoint=endpoint(hd))
    assert plain.export(records).name == "SUCCESS"
    wait_until(lambda: daemon_status(hd)["since_start"]["duplicates"] == len(records), what="the retry's duplicates")
    assert hd.count(telemetry) == len(records)
    types = dict(hd.query("SELECT type, count(*) FROM events GROUP BY type"))
    assert types == {
        "claude_code_api_request": 4,
        "claude_code_api_error": 1,
        "claude_code_tool_result": 1,
        "claude_code_user_prompt": 1,
        "pre_tool_use": 1,
        "post_tool_use": 1,
    }
    _check_stored_record(hd)
    _check_session_usage(hd)
    _check_joins(hd)
    assert otlp_counts(hd)["logs"] == {"records": 2 * len(records), "rejected": 0, "requests": 2}
    assert otlp_counts(hd)["buffered_bytes"] == 0


def _check_stored_record(hd: Daemon) -> None:
    """One record as stored: envelope from the record, attributes flat with their types."""
    (row,) = hd.query("SELECT session, client_id, data FROM events WHERE type = 'claude_code_tool_result'")
    session, cid, data = row[0], row[1], json.loads(row[2])
    assert session == A and cid.startswith("otlp-") and data["id"] == cid
    assert data["success"] == "true" and data["duration_ms"] == "37"  # strings, as Claude Code sends them
    assert data["event.sequence"] == 5 and data["body"] == "claude_code.tool_result" and data["scope"] == SCOPE
    assert data["resource"]["service.name"] == "claude-code"
    (api,) = hd.query(
        "SELECT data FROM events WHERE type = 'claude_code_api_request' "
        "AND json_extract(data, '$.request_id') = 'req_0'"
    )
    api = json.loads(api[0])
    assert api["cost_usd"] == 0.125 and api["input_tokens"] == 1200 and isinstance(api["input_tokens"], int)


def _check_session_usage(hd: Daemon) -> None:
    rows = hd.query(
        "SELECT session, cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
        "api_requests, api_errors, models, first_ts, last_ts FROM session_usage ORDER BY session"
    )
    want = {}
    for session, _p, model, cost, inp, out, cr, cc in API_REQUESTS:
        w = want.setdefault(session, [0.0, 0, 0, 0, 0, 0, set()])
        for k, v in enumerate((cost, inp, out, cr, cc, 1)):
            w[k] += v
        w[6].add(model)
    assert [r[0] for r in rows] == [A, B]
    for session, cost, inp, out, cr, cc, requests, errors, models, first, last in rows:
        w = want[session]
        assert cost == pytest.approx(w[0]) and (inp, out, cr, cc, requests) == tuple(w[1:6])
        assert errors == (1 if session == A else 0)
        assert models == ",".join(sorted(w[6] | ({"claude-sonnet-4-5"} if session == A else set())))
        assert first <= last
    # The hooks' events count as activity: session A's span reaches the PostToolUse.
    (last_hook,) = hd.query("SELECT max(ts) FROM events WHERE session = ?", (A,))[0]
    assert rows[0][10] == last_hook
    # sessions gains the same figures.
    (s,) = hd.query("SELECT cost_usd, input_tokens, api_requests, tool_calls FROM sessions WHERE session = ?", (A,))
    assert s[0] == pytest.approx(want[A][0]) and s[1:] == (want[A][1], 3, 1)


def _check_joins(hd: Daemon) -> None:
    prompts = hd.query(
        "SELECT prompt_id, session, cost_usd, input_tokens, api_requests, api_errors, models, tool_calls "
        "FROM prompt_usage ORDER BY prompt_id"
    )
    assert prompts == [
        ("p-a1", A, pytest.approx(0.1875), 1500, 2, 1, "claude-haiku-4-5,claude-sonnet-4-5", 1),
        ("p-a2", A, 0.5, 2500, 1, 0, "claude-sonnet-4-5", 0),
        ("p-b1", B, 1.75, 4000, 1, 0, "claude-opus-4-1", 0),
    ]
    calls = hd.query("SELECT tool_use_id, status, telemetry_duration_ms, telemetry_success FROM tool_calls")
    assert calls == [("toolu_a1", "finished", 37.0, 1)]


def test_python_sdk_metrics_cumulative_counters_are_not_double_counted(hd: Daemon) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create(RESOURCE))
    meter = provider.get_meter("com.anthropic.claude_code", "2.1.197")
    cost = meter.create_counter("claude_code.cost.usage", unit="USD")
    tokens = meter.create_counter("claude_code.token.usage", unit="tokens")
    cost.add(0.125, {"session.id": A, "model": "claude-sonnet-4-5"})
    tokens.add(100, {"session.id": A, "type": "input"})
    tokens.add(7, {"session.id": A, "type": "output"})
    first = reader.get_metrics_data()  # cumulative: each collection holds the running total
    cost.add(0.25, {"session.id": A, "model": "claude-sonnet-4-5"})
    tokens.add(50, {"session.id": A, "type": "input"})
    second = reader.get_metrics_data()
    exporter = OTLPMetricExporter(endpoint=endpoint(hd, "metrics"))
    for data in (first, second, second):  # the last one a retry: no duplicate
        assert exporter.export(data).name == "SUCCESS"
    assert hd.wait_count(6, where="type = 'otel_metric'") == 6
    wait_until(lambda: daemon_status(hd)["since_start"]["duplicates"] == 3, what="the retry's duplicates")
    assert hd.count("type = 'otel_metric'") == 6
    totals = hd.query(
        "SELECT name, json_extract(attributes, '$.type'), value, points, temporality, session FROM metric_totals "
        "ORDER BY name, 2"
    )
    assert totals == [
        ("claude_code.cost.usage", None, 0.375, 2, "cumulative", A),
        ("claude_code.token.usage", "input", 150, 2, "cumulative", A),
        ("claude_code.token.usage", "output", 7, 2, "cumulative", A),
    ]
    (point,) = hd.query("SELECT data FROM events WHERE type = 'otel_metric' ORDER BY eid LIMIT 1")[0]
    point = json.loads(point)
    assert point["kind"] == "sum" and point["monotonic"] is True and point["unit"] == "USD"
    assert otlp_counts(hd)["metrics"] == {"points": 9, "rejected": 0, "requests": 3}
    assert "  otlp metrics: 3 requests ok, 9 points\n" in status_text(hd)


# -- raw requests: the answers the specification asks for -------------------------------------
def log_request(session: str, n: int, tag: str) -> logs_service_pb2.ExportLogsServiceRequest:
    """``n`` api_request records built with the official classes."""
    req = logs_service_pb2.ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in RESOURCE.items())
    sl = rl.scope_logs.add()
    sl.scope.name = SCOPE
    t0 = time.time_ns()
    for i in range(n):
        r = sl.log_records.add(time_unix_nano=t0 + i, trace_id=bytes(range(16)), span_id=bytes(range(8)))
        r.body.string_value = "claude_code.api_request"
        for k, v in (("session.id", session), ("request_id", f"{tag}-{i}"), ("model", "claude-sonnet-4-5")):
            r.attributes.add(key=k, value=AnyValue(string_value=v))
        r.attributes.add(key="cost_usd", value=AnyValue(double_value=0.5))
        r.attributes.add(key="input_tokens", value=AnyValue(int_value=10))
    return req


def otlp_json(req: logs_service_pb2.ExportLogsServiceRequest) -> bytes:
    """OTLP/JSON: protobuf's JSON mapping with hex trace and span ids."""
    data = json_format.MessageToDict(req)
    for rl in data["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for r in sl["logRecords"]:
                r["traceId"] = bytes(range(16)).hex().upper()  # case-insensitive hex
                r["spanId"] = bytes(range(8)).hex()
    return json.dumps(data).encode()


def send(c: http.client.HTTPConnection, body, ctype: str = PROTOBUF, path: str = "/v1/logs", **headers: str):
    c.request(
        "POST",
        path,
        body=body,
        headers={"Content-Type": ctype, **headers},
        encode_chunked="chunked" in headers.values(),
    )
    r = c.getresponse()
    return r.status, r.read(), r


def status_message(body: bytes, ctype: str) -> str:
    s = status_pb2.Status()
    if ctype == PROTOBUF:
        s.ParseFromString(body)
    else:
        json_format.Parse(body, s)
    return s.message


def test_bad_bodies_get_the_right_status_and_good_records_around_them_are_kept(hd: Daemon) -> None:
    c = http.client.HTTPConnection(*address(hd), timeout=30)
    try:
        _bad_bodies_between_good_ones(c)
    finally:
        c.close()
    assert hd.wait_count(9) == 9  # 3 + 2 + 4: every good record, none of the bad bodies
    trace = hd.query("SELECT json_extract(data, '$.trace_id') FROM events WHERE data LIKE '%chunked%' LIMIT 1")
    assert trace == [(bytes(range(16)).hex(),)]
    wait_until(lambda: rejected_by_reason(hd).get("too_long"), what="the rejections recorded")
    assert rejected_by_reason(hd) == {"bad_gzip": 1, "bad_protobuf": 1, "invalid_json": 1, "not_otlp": 3, "too_long": 1}
    by_reason = daemon_status(hd)["http"]["by_reason"]
    assert by_reason["unsupported_media_type"] == 1 and by_reason["unsupported_encoding"] == 1
    assert by_reason["not_otlp"] == 3 and by_reason["too_long"] == 1
    # hookd status: the OTLP counts under the http line (a line per signal that was used).
    text = status_text(hd)
    errors = "bad_gzip 1, bad_protobuf 1, invalid_json 1, not_otlp 3, too_long 1"
    otlp_line = f"  otlp logs: 3 requests ok, 9 records; {errors}\n"
    assert otlp_line in text and text.index("\nhttp: ") < text.index(otlp_line), text
    assert "otlp metrics" not in text


def status_text(d: Daemon) -> str:
    """``hookd status``'s text."""
    env = clean_env(d.home)
    return subprocess.run([sys.executable, "-m", "hookd", "status"], env=env, capture_output=True, text=True).stdout


def _bad_bodies_between_good_ones(c: http.client.HTTPConnection) -> None:
    """On one keep-alive connection: a good request, every kind of bad one, good ones again."""
    ok = logs_service_pb2.ExportLogsServiceResponse()
    status, body, r = send(c, log_request(A, 3, "first").SerializeToString())
    assert (status, r.getheader("Content-Type")) == (200, PROTOBUF)
    ok.ParseFromString(body)
    assert not ok.HasField("partial_success")
    cases = [  # (body, content type, extra headers, status, reason)
        (b"\x0a\xff\xff\xff\x0f\x01", PROTOBUF, {}, 400, "bad_protobuf"),  # a length past the end
        (b"\xfa\xff\xff\xff\x0f\x00", PROTOBUF, {}, 400, "not_otlp"),  # valid wire, unknown fields only
        (b'{"type":"deploy","service":"api"}', JSON, {}, 400, "not_otlp"),  # a hookd event, not OTLP
        (b'{"resourceLogs": [{"scopeLogs": 3}]}', JSON, {}, 400, "not_otlp"),
        (b"{not json", JSON, {}, 400, "invalid_json"),
        (b"plain text", "text/plain", {}, 415, "unsupported_media_type"),
        (gzip.compress(b"x"), PROTOBUF, {"Content-Encoding": "br"}, 415, "unsupported_encoding"),
        (b"\x1f\x8b not gzip", PROTOBUF, {"Content-Encoding": "gzip"}, 400, "bad_gzip"),
        (gzip.compress(bytes(otlp.MAX_INFLATED + 1)), PROTOBUF, {"Content-Encoding": "gzip"}, 413, "too_long"),
    ]
    for data, ctype, extra, want, reason in cases:
        status, body, r = send(c, data, ctype, **extra)
        assert status == want, (reason, body)
        answer_type = JSON if ctype != PROTOBUF else PROTOBUF
        assert r.getheader("Content-Type") == answer_type
        assert status_message(body, answer_type), reason  # a Status saying why
    # Chunked, as some Claude Code versions send, in OTLP/JSON with hex ids.
    whole = otlp_json(log_request(A, 2, "chunked"))
    chunks = iter([whole[:50], whole[50:]])
    status, body, r = send(c, chunks, JSON, **{"Transfer-Encoding": "chunked"})
    assert (status, body, r.getheader("Content-Type")) == (200, b"{}", JSON)
    status, _body, _r = send(c, gzip.compress(log_request(B, 4, "last").SerializeToString()), PROTOBUF,
                             **{"Content-Encoding": "gzip"})  # fmt: skip
    assert status == 200


def test_an_oversized_body_is_answered_413_at_once(hd: Daemon) -> None:
    """Content-Length over MAX_BODY: refused before the body is read, recorded, connection closed."""
    s = socket.create_connection(address(hd), timeout=30)
    with s:
        size = otlp.MAX_BODY + 1
        s.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Content-Length: %d\r\n\r\n" % size + b"\0" * 65536)  # fmt: skip
        head = s.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"Content-Type: application/x-protobuf" in head and b"Connection: close" in head
    wait_until(lambda: rejected_by_reason(hd).get("too_long") == 1, what="the rejection recorded")
    (detail,) = hd.query("SELECT detail FROM rejected")[0]
    assert str(otlp.MAX_BODY) in detail
    status, _body = _post_after(hd)
    assert status == 200  # the daemon goes on


def _post_after(hd: Daemon) -> tuple[int, bytes]:
    c = http.client.HTTPConnection(*address(hd), timeout=30)
    try:
        status, body, _r = send(c, log_request(A, 1, "after").SerializeToString())
        return status, body
    finally:
        c.close()


def test_a_record_too_large_to_store_is_a_partial_success(home: Path) -> None:
    """Records over max_line are cut to fit as on the socket; one that cannot be cut is
    rejected and the exporter told so (partial_success), the rest stored."""
    d = Daemon(home, "--http", "127.0.0.1:0", "--max-line", "4096").start()
    try:
        req = log_request(A, 3, "partial")
        records = req.resource_logs[0].scope_logs[0].log_records
        records[1].attributes.add(key="tool_parameters", value=AnyValue(string_value="x" * 20000))  # cut
        for k in range(600):  # hundreds of small numbers: nothing to cut
            records[2].attributes.add(key=f"n{k}", value=AnyValue(int_value=k))
        c = http.client.HTTPConnection(*address(d), timeout=30)
        status, body, _r = send(c, otlp_json(req), JSON)
        c.close()
        assert status == 200
        answer = json.loads(body)["partialSuccess"]
        assert answer["rejectedLogRecords"] == "1" and "too_long" in answer["errorMessage"]
        assert d.wait_count(2) == 2
        cut = d.query("SELECT json_extract(data, '$._hookd_truncated') FROM events WHERE data LIKE '%tool_parameters%'")
        assert cut and cut[0][0] is not None
        wait_until(lambda: rejected_by_reason(d) == {"too_long": 1}, what="the record's rejection")
        assert "  otlp logs: 1 request ok, 3 records (1 rejected)\n" in status_text(d)
    finally:
        d.kill()


@needs_curl
def test_another_user_is_refused_on_the_otlp_paths(hd: Daemon) -> None:
    body = log_request(A, 1, "nobody").SerializeToString()
    nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    curl = [CURL or "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Content-Type: {PROTOBUF}"]
    cmd = [*nobody, *curl, "--data-binary", "@-", endpoint(hd)]
    r = subprocess.run(cmd, input=body, capture_output=True, timeout=60)
    assert r.stdout == b"403", r
    assert daemon_status(hd)["http"]["by_reason"].get("refused_uid") == 1
    assert _post_after(hd)[0] == 200
    assert hd.wait_count(1) == 1 and hd.count(f"session = '{A}'") == 1


def test_status_lists_the_telemetry_kinds_and_tail_sums_up_an_api_request(hd: Daemon, home: Path) -> None:
    from hookd.ops.summary import summary

    c = http.client.HTTPConnection(*address(hd), timeout=30)
    try:
        assert send(c, log_request(A, 2, "status").SerializeToString())[0] == 200
    finally:
        c.close()
    assert hd.wait_count(2) == 2
    env = clean_env(home)
    out = subprocess.run(
        [sys.executable, "-m", "hookd", "status", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    types = json.loads(out.stdout)["types"]
    assert types["claude_code_api_request"]["count"] == 2 and types["claude_code_api_request"]["state"] == "live"
    (data,) = hd.query("SELECT data FROM events LIMIT 1")[0]
    assert summary("claude_code_api_request", json.loads(data)) == "claude-sonnet-4-5 $0.5000; 10 in / 0 out tokens"
    full = {"model": "m", "cost_usd": "0.0123", "input_tokens": 1200, "output_tokens": 310,
            "cache_read_tokens": 5000, "cache_creation_tokens": 40, "duration_ms": "912"}  # fmt: skip
    assert summary("claude_code_api_request", full) == (
        "m $0.0123; 1,200 in / 310 out tokens; cache 5,000 read / 40 written; 912 ms"
    )


def test_a_body_cut_short_gives_its_memory_back(hd: Daemon) -> None:
    """A client that sends half an export and goes away: the bytes it held return to the shared
    budget (else 64 MiB of abandoned uploads would refuse every export after them with 503)."""
    body = log_request(A, 50, "half").SerializeToString()
    s = socket.create_connection(address(hd), timeout=30)
    s.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])  # fmt: skip
    wait_until(lambda: otlp_counts(hd)["buffered_bytes"] == len(body) // 2, what="the half body held")
    s.close()
    wait_until(lambda: otlp_counts(hd)["buffered_bytes"] == 0, what="the half body given back")
    assert _post_after(hd)[0] == 200 and hd.wait_count(1) == 1


def test_a_killed_decoder_costs_only_its_request_which_a_retry_stores_once(hd: Daemon) -> None:
    """The decoding process is killed (SIGKILL) with an export in it: that export is answered
    503 with Retry-After and counted, the decoder starts again (a new pid), the exporter's retry
    is stored once, and hooks and exports around it lose nothing; the daemon lives on."""
    c = http.client.HTTPConnection(*address(hd), timeout=30)
    assert send(c, log_request(A, 5, "before").SerializeToString())[0] == 200
    old = otlp_counts(hd)["decoder"]["pid"]
    assert old is not None
    # Stopped first, so the export is certainly in it when it dies (not a race with the kill).
    os.kill(old, signal.SIGSTOP)
    doomed = log_request(A, 7, "doomed").SerializeToString()
    c.request("POST", "/v1/logs", body=doomed, headers={"Content-Type": PROTOBUF})
    wait_until(lambda: otlp_counts(hd)["decoder"]["in_decoding"] == 1, what="the export in the decoder")
    hook(hd, {"hook_event_name": "PreToolUse", "session_id": A, "tool_use_id": "t-during"})
    os.kill(old, signal.SIGKILL)
    r = c.getresponse()
    assert (r.status, r.getheader("Retry-After")) == (503, "1")
    assert "send it again" in status_message(r.read(), PROTOBUF)
    wait_until(lambda: otlp_counts(hd)["decoder"]["pid"] not in (None, old), what="a new decoding process")
    assert send(c, doomed)[0] == 200  # the exporter's retry
    assert send(c, doomed)[0] == 200  # and one more: the same ids, no second event
    assert send(c, log_request(B, 3, "after").SerializeToString())[0] == 200
    c.close()
    counts = otlp_counts(hd)
    assert counts["logs"]["decoder_restarting"] == 1
    assert (counts["decoder"]["restarts"], counts["decoder"]["requests_failed"]) == (1, 1)
    assert hd.stop() == 0  # everything framed is committed at stop
    assert hd.count() == 5 + 7 + 1 + 3
    assert hd.count("type = 'claude_code_api_request'") == 5 + 7 + 3
    assert "the OTLP decoding process exited with status -9" in hd.logtext


def test_the_decoder_stops_with_the_daemon(home: Path) -> None:
    """No decoding process outlives its daemon, whether the daemon stops or is killed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        d = Daemon(home, "--http", "127.0.0.1:0").start()
        pid = wait_until(lambda d=d: otlp_counts(d)["decoder"]["pid"], what="the decoder ready")
        d.stop(sig)
        wait_until(lambda pid=pid: not _alive(pid), what=f"the decoder gone after the daemon's {sig.name}")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_over_long_records_cross_the_pipe_as_they_were_made() -> None:
    """A record cut to fit and one refused, through the worker's real answer, msgpack and back:
    the daemon gets the same ``Cut`` and ``TooLong`` (size, what was cut, why) a thread gave."""
    req = log_request(A, 3, "long")
    req.resource_logs[0].scope_logs[0].log_records[1].attributes.add(key="big", value=AnyValue(string_value="x" * 6000))
    req.resource_logs[0].scope_logs[0].log_records[2].attributes.extend(
        KeyValue(key=f"k{i}", value=AnyValue(int_value=i)) for i in range(3000)
    )
    body = req.SerializeToString()
    max_line = 4096
    want = otlp.decode(otlp.LOGS, otlp.PROTOBUF, b"", body, max_line).lines
    assert [type(x) for x in want] == [bytes, oversize.Cut, oversize.TooLong]
    reply = worker.answer(otlp_wire.Decode(otlp.LOGS, otlp.PROTOBUF, b"", len(body), max_line), body)
    frame = otlp_wire.pack(reply)
    got = otlp_wire.lines_of(otlp_wire.decode_reply(frame[4:]))
    assert got == want and [type(x) for x in got] == [bytes, oversize.Cut, oversize.TooLong]
    assert (got[1].size, got[1].values) == (want[1].size, want[1].values)
    assert (got[2].size, got[2].detail) == (want[2].size, want[2].detail)
    failed = worker.answer(otlp_wire.Decode(otlp.LOGS, otlp.PROTOBUF, b"", 3, max_line), b"\xff\xff\xff")
    assert isinstance(failed, otlp_wire.Failed) and (failed.status, failed.reason) == (400, "bad_protobuf")
