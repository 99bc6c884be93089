"""OTLP (OpenTelemetry) logs and metrics to hookd events: pure functions, no I/O, no event loop.

A request body (``application/x-protobuf`` or ``application/json``, maybe gzip-compressed) is
inflated within a bound, decoded with the official generated classes (``opentelemetry-proto``;
JSON through protobuf's ``json_format`` with OTLP's deviations: hex trace and span ids, unknown
fields ignored), and turned into event lines that go through the usual framing
(docs/protocol.md, "OTLP/HTTP"):

- a log record: ``type`` from its event name (``claude_code.api_request`` ->
  ``claude_code_api_request``), else its body when that is a dotted name (Claude Code puts the
  name there), else its ``event.name`` attribute, else its scope's name, else ``otel_log``;
  ``ts`` from its time (or observed time); ``session`` from ``session.id``; its attributes as
  flat keys with their types kept, plus ``body``, ``resource``, ``scope`` and what else is set;
- a metric data point: one ``otel_metric`` event with name, value, unit, kind, temporality,
  attributes and a ``series`` key (metric, attributes, resource) for views to take the last
  point of a cumulative series instead of adding them up;
- every event's ``id`` is a hash of the record or point with its resource and scope, so an
  exporter that sends the same batch again creates no duplicates (``client_id`` idempotency).

The OTLP decoding process (``hookd.otlp_worker``) runs ``decode``: it is CPU work, about 1.5-2 ms
per hundred records, kept off the daemon's event loop and its GIL. The daemon uses the rest
(media types, limits, the answers' bodies).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from hookd import oversize
from hookd.framing import normalize_type

LOGS: Final = "logs"
METRICS: Final = "metrics"
PROTOBUF: Final = "protobuf"
JSON: Final = "json"
#: Content-Type -> body format.
MEDIA_TYPES: Final = {b"application/x-protobuf": PROTOBUF, b"application/json": JSON}
RESPONSE_TYPES: Final = {PROTOBUF: b"application/x-protobuf", JSON: b"application/json"}
#: Largest request body, as sent (compressed or not), in bytes; more is answered 413.
MAX_BODY: Final = 16 << 20
#: Largest body once inflated, in bytes: a small gzip bomb cannot take memory.
MAX_INFLATED: Final = 64 << 20
#: Type of a log record with no name, event name or scope name.
DEFAULT_LOG_TYPE: Final = "otel_log"
METRIC_TYPE: Final = "otel_metric"
#: Keys hookd sets on a record's event; an attribute of the same name is kept as ``attr.<name>``.
RESERVED: Final = frozenset(
    (
        "type",
        "ts",
        "session",
        "id",
        "body",
        "resource",
        "scope",
        "scope_version",
        "event_name",
        "severity_text",
        "severity_number",
        "trace_id",
        "span_id",
        "observed_ts",
    )
)
#: A body that names an event (Claude Code: ``claude_code.api_request``): a dotted identifier.
_DOTTED_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)+")
#: Log types worked out, by (event_name, body, event.name, scope); cleared when this full.
MAX_TYPES: Final = 4096
_TYPES: dict[tuple[str, str, str, str], str] = {}
_TEMPORALITY: Final = {0: None, 1: "delta", 2: "cumulative"}
#: AnyValue kinds read as they are.
_SCALARS: Final = frozenset(("string_value", "bool_value", "int_value", "double_value"))
_REQUESTS: Final = {
    LOGS: (logs_service_pb2.ExportLogsServiceRequest, "resourceLogs", "resource_logs"),
    METRICS: (metrics_service_pb2.ExportMetricsServiceRequest, "resourceMetrics", "resource_metrics"),
}
_encode = msgspec.json.Encoder().encode


class OtlpError(Exception):
    """A request hookd answers with an error: ``status`` (400, 413, 415), a stable ``reason``
    (recorded in ``rejected`` and the listener's counts) and a message for the sender."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass
class Decoded:
    """What a request became: ``lines`` to frame (``bytes``, or ``oversize.Cut``/``TooLong``
    for a record over ``max_line``: then ``marked``) and how many records or points it held."""

    lines: list[bytes] = field(default_factory=list)
    items: int = 0
    marked: bool = False


# -- bodies --------------------------------------------------------------------------------------
def media(content_type: bytes) -> str | None:
    """``protobuf``, ``json`` or None (unsupported) from a Content-Type header's value."""
    return MEDIA_TYPES.get(content_type.split(b";", 1)[0].strip().lower())


def check_encoding(value: bytes) -> None:
    """Raise 415 for a Content-Encoding other than gzip or identity (before reading the body)."""
    if value.strip().lower() not in (b"", b"identity", b"gzip", b"x-gzip"):
        shown = value[:40].decode("latin-1")
        raise OtlpError(415, "unsupported_encoding", f"Content-Encoding {shown!r} is not supported: send gzip or none")


def inflate(body: bytes, encoding: bytes, limit: int = MAX_INFLATED) -> bytes:
    """The body without its gzip encoding, never more than ``limit`` bytes held (a gzip bomb
    is stopped at the limit, not inflated first)."""
    if encoding.strip().lower() in (b"", b"identity"):
        return body
    z = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing only
    try:
        out = z.decompress(body, limit + 1)
    except zlib.error as e:
        raise OtlpError(400, "bad_gzip", f"the body is not valid gzip ({e})") from None
    if len(out) > limit:
        raise OtlpError(413, "too_long", f"the body inflates to over {limit} bytes, the limit (otlp.MAX_INFLATED)")
    if not z.eof:
        raise OtlpError(400, "bad_gzip", "the gzip body is truncated")
    return out


def parse(signal: str, fmt: str, body: bytes) -> Message:
    """The Export<signal>ServiceRequest in ``body``; OtlpError(400) for anything else."""
    cls, json_key, field_name = _REQUESTS[signal]
    request = cls()
    if fmt == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as e:
            raise OtlpError(400, "bad_protobuf", f"not a protobuf {cls.__name__}: {e}") from None
        if body and not len(getattr(request, field_name)):
            # Bytes that parsed into nothing known: unknown fields only, not OTLP.
            raise OtlpError(400, "not_otlp", f"the body holds no {cls.__name__} field: is this OTLP {signal}?")
        return request
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise OtlpError(400, "invalid_json", f"the body is not JSON ({str(e)[:200]})") from None
    if not isinstance(data, dict):
        raise OtlpError(400, "not_otlp", f"an OTLP JSON body is an object with {json_key!r}")
    if data and json_key not in data:
        keys = ", ".join(sorted(map(str, data))[:5])
        raise OtlpError(400, "not_otlp", f"no {json_key!r} in the JSON object (keys: {keys}): is this OTLP {signal}?")
    try:
        _hex_ids_to_base64(data)
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as e:
        raise OtlpError(400, "not_otlp", f"not an OTLP {cls.__name__} in JSON: {str(e)[:300]}") from None
    return request


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes ``traceId`` and ``spanId`` in hex where protobuf's JSON mapping expects
    base64: convert them in place (everywhere: log records, exemplars) before ``ParseDict``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId") and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise ValueError(f"{key} {value[:40]!r} is not hex") from None
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _hex_ids_to_base64(item)


# -- values --------------------------------------------------------------------------------------
def any_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` as JSON: numbers stay numbers, strings stay strings (Claude Code
    sends some numbers as strings: the views cast them), bytes in base64."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def attributes(kvs: Iterable[Any]) -> dict[str, Any]:
    """Key-values as a dict. Most values are scalars: read here, without a call to
    ``any_value`` each (the hot loop of a decoding: about 15 attributes a Claude Code record)."""
    out = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = getattr(v, kind) if kind in _SCALARS else any_value(v)
    return out


def _seconds(nanos: int) -> float | None:
    return nanos / 1e9 if nanos else None


def _session(*sources: dict[str, Any]) -> str | None:
    for attrs in sources:
        s = attrs.get("session.id")
        if isinstance(s, (str, int)) and not isinstance(s, bool) and s != "":
            return str(s)
    return None


class _Resource:
    """A resource and scope, decoded once for all their records, and the start of their ids."""

    __slots__ = ("attrs", "scope", "scope_version", "digest")

    def __init__(self, resource: Any, scope: Any) -> None:
        self.attrs = attributes(resource.attributes)
        self.scope = scope.name
        self.scope_version = scope.version
        h = hashlib.blake2b(digest_size=16)
        h.update(resource.SerializeToString(deterministic=True))
        h.update(b"\0")
        h.update(scope.SerializeToString(deterministic=True))
        self.digest = h

    def event_id(self, item: Any, *extra: bytes) -> str:
        h = self.digest.copy()
        for part in extra:
            h.update(part)
        h.update(item.SerializeToString(deterministic=True))
        return "otlp-" + h.hexdigest()


# -- logs ----------------------------------------------------------------------------------------
def log_type(record: Any, body: Any, attrs: dict[str, Any], scope: str) -> str:
    """The event type of a log record (see the module's docstring for the order). An export
    holds few distinct names: each is worked out once (``_TYPES``, bounded)."""
    name = attrs.get("event.name")
    key = (
        getattr(record, "event_name", ""),
        body if isinstance(body, str) and len(body) <= 120 else "",
        name if isinstance(name, str) else "",
        scope,
    )
    t = _TYPES.get(key)
    if t is None:
        t = _log_type(*key)
        if sum(map(len, key)) <= 512:  # names, not a long text
            if len(_TYPES) >= MAX_TYPES:
                _TYPES.clear()
            _TYPES[key] = t
    return t


def _log_type(event_name: str, body: str, name: str, scope: str) -> str:
    candidates = [event_name, body if _DOTTED_NAME.fullmatch(body) else "", name, scope]
    for c in candidates:
        if c:
            t = normalize_type(c)
            if t is not None:
                return t
    return DEFAULT_LOG_TYPE


def log_event(record: Any, res: _Resource) -> dict[str, Any]:
    """One log record as an event object (before encoding)."""
    attrs = attributes(record.attributes)
    body = any_value(record.body) if record.HasField("body") else None
    ev: dict[str, Any] = {"type": log_type(record, body, attrs, res.scope)}
    ts = _seconds(record.time_unix_nano) or _seconds(record.observed_time_unix_nano)
    if ts is not None:
        ev["ts"] = ts
    session = _session(attrs, res.attrs)
    if session is not None:
        ev["session"] = session
    ev["id"] = res.event_id(record)
    if RESERVED.isdisjoint(attrs):
        ev.update(attrs)
    else:
        for k, v in attrs.items():
            ev["attr." + k if k in RESERVED else k] = v
    if body is not None:
        ev["body"] = body
    name = getattr(record, "event_name", "")
    optional = (
        ("event_name", name),
        ("severity_text", record.severity_text),
        ("severity_number", record.severity_number),
        ("trace_id", record.trace_id.hex()),
        ("span_id", record.span_id.hex()),
        ("scope", res.scope),
        ("scope_version", res.scope_version),
    )
    ev.update((k, v) for k, v in optional if v)
    if record.time_unix_nano and record.observed_time_unix_nano not in (0, record.time_unix_nano):
        ev["observed_ts"] = record.observed_time_unix_nano / 1e9
    if res.attrs:
        ev["resource"] = res.attrs
    return ev


def _log_events(request: Any) -> Iterator[dict[str, Any]]:
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            res = _Resource(rl.resource, sl.scope)
            for record in sl.log_records:
                yield log_event(record, res)


# -- metrics -------------------------------------------------------------------------------------
def _number(point: Any) -> int | float | None:
    kind = point.WhichOneof("value")
    return getattr(point, kind) if kind else None


def _point_values(kind: str, point: Any) -> dict[str, Any]:
    """The value fields of one data point of a metric of ``kind``."""
    if kind in ("gauge", "sum"):
        return {"value": _number(point)}
    out: dict[str, Any] = {"count": point.count}
    if kind == "summary":
        out["value"] = point.sum
        out["quantiles"] = {str(q.quantile): q.value for q in point.quantile_values}
        return out
    out["value"] = point.sum if point.HasField("sum") else None
    for name in ("min", "max"):
        if point.HasField(name):
            out[name] = getattr(point, name)
    if kind == "histogram":
        out["bucket_counts"] = list(point.bucket_counts)
        out["explicit_bounds"] = list(point.explicit_bounds)
    else:
        out["scale"] = point.scale
        out["zero_count"] = point.zero_count
    return out


def metric_events(metric: Any, res: _Resource) -> Iterator[dict[str, Any]]:
    """One event per data point of ``metric``."""
    kind = metric.WhichOneof("data")
    if kind is None:
        return
    data = getattr(metric, kind)
    temporality = _TEMPORALITY.get(getattr(data, "aggregation_temporality", 0), "unspecified")
    name = metric.name.encode()
    for point in data.data_points:
        attrs = attributes(point.attributes)
        ev: dict[str, Any] = {"type": METRIC_TYPE}
        ts = _seconds(point.time_unix_nano)
        if ts is not None:
            ev["ts"] = ts
        session = _session(attrs, res.attrs)
        if session is not None:
            ev["session"] = session
        ev["id"] = res.event_id(point, name, b"\0")
        ev["name"] = metric.name
        ev["unit"] = metric.unit
        ev["kind"] = kind
        ev["temporality"] = temporality
        if kind == "sum":
            ev["monotonic"] = data.is_monotonic
        ev.update(_point_values(kind, point))
        ev["start_ts"] = _seconds(point.start_time_unix_nano)
        ev["series"] = _series(metric.name, attrs, res)
        ev["attributes"] = attrs
        if metric.description:
            ev["description"] = metric.description
        ev["scope"] = res.scope
        if res.attrs:
            ev["resource"] = res.attrs
        yield ev


def _series(name: str, attrs: dict[str, Any], res: _Resource) -> str:
    """A key for one time series: the metric's name, its point's attributes and its resource."""
    key = _encode([name, sorted(attrs.items()), sorted(res.attrs.items()), res.scope])
    return hashlib.blake2b(key, digest_size=8).hexdigest()


def _metric_events(request: Any) -> Iterator[dict[str, Any]]:
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            res = _Resource(rm.resource, sm.scope)
            for metric in sm.metrics:
                yield from metric_events(metric, res)


_EVENTS: Final[dict[str, Callable[[Any], Iterator[dict[str, Any]]]]] = {LOGS: _log_events, METRICS: _metric_events}


# -- the whole request ---------------------------------------------------------------------------
def decode(signal: str, fmt: str, encoding: bytes, body: bytes, max_line: int) -> Decoded:
    """A request body to event lines (CPU work: run by the decoding process, hookd.otlp_worker).
    Raises OtlpError."""
    request = parse(signal, fmt, inflate(body, encoding))
    out = Decoded()
    for ev in _EVENTS[signal](request):
        out.items += 1
        line = _encode(ev)
        if len(line) > max_line:
            line = oversize.fit(line, max_line)  # cut to fit, as on the socket, or TooLong
            out.marked = True
        out.lines.append(line)
    return out


def success(signal: str, fmt: str, rejected: int = 0, message: str = "") -> bytes:
    """The Export<signal>ServiceResponse, with ``partial_success`` only when something was
    rejected (the specification: unset on full success)."""
    if signal == LOGS:
        response: Message = logs_service_pb2.ExportLogsServiceResponse()
        if rejected:
            response.partial_success.rejected_log_records = rejected
    else:
        response = metrics_service_pb2.ExportMetricsServiceResponse()
        if rejected:
            response.partial_success.rejected_data_points = rejected
    if rejected:
        response.partial_success.error_message = message
    return _serialize(response, fmt)


def status(fmt: str, message: str) -> bytes:
    """The body of a 4xx/5xx answer: a ``google.rpc.Status`` in the request's encoding."""
    return _serialize(status_pb2.Status(message=message), fmt)


def _serialize(message: Message, fmt: str) -> bytes:
    if fmt == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()
