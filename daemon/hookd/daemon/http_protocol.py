"""One connection of the HTTP listener: HTTP/1.1 parsed by httptools, events handed to Ingest.

``POST /v1/events`` takes one JSON object (``application/json``) or newline-delimited JSON
(``application/x-ndjson``), through the same framing, batching and rejection rules as the Unix
socket (the lines go to ``Ingest.lines`` like the socket's). Replies (docs/protocol.md):

- one event: ``204`` once it is framed into the batch, ``400`` with the rejection otherwise;
  with ``?wait=1``, ``200 {"ok":true,"eid":N}`` once committed;
- NDJSON: ``204`` when every line was accepted, else a summary with the first errors; with
  ``?wait=1``, the summary once every line is committed;
- ``POST /v1/logs``, ``/v1/metrics``: OpenTelemetry's OTLP/HTTP, handed to daemon/otlp_http.py
  (``Request.otlp``), which buffers, decodes and answers it;
- ``404`` another path, ``405`` another method, ``415`` another body type, ``401`` without the
  token (when one is configured): answered after the request's body, which is discarded, on a
  connection kept open;
- ``400`` an HTTP message httptools cannot parse, ``413`` a JSON body that cannot be stored
  (recorded as ``too_long``: over the cutting limit ``truncate_limit``, or over ``max_line``
  and not cuttable; a body over ``max_line`` up to that limit is stored with its longest values
  cut to fit, as a long line on the Unix socket: oversize.py), ``431`` headers over
  ``MAX_HEAD``, ``403`` another user: answered at once, then the connection is closed after
  ``LINGER`` seconds of discarding what the client still sends (closing at once would reset the
  connection under a client still uploading, which then never reads the answer).

Nothing is buffered beyond bounds: the request line and headers up to ``MAX_HEAD``, a JSON body
up to ``max_line`` (beyond it up to ``truncate_limit``, taken from the memory budget for cutting
that the Unix socket's connections share), an NDJSON body one line at a time (as on the
socket), at most ``MAX_PIPELINE`` unanswered requests per connection (then reading pauses).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Final

import httptools
import msgspec

from hookd import oversize
from hookd.daemon.otlp_http import PATHS as OTLP_PATHS
from hookd.daemon.otlp_http import OtlpRequest
from hookd.framing import PREVIEW_BYTES, LineSplitter, Peer

if TYPE_CHECKING:
    from hookd.daemon.http_listener import HttpListener

log = logging.getLogger("hookd.http")

#: Request line and headers, in bytes; more is answered 431.
MAX_HEAD: Final = 16 << 10
MAX_HEADERS: Final = 100
#: Requests received and not yet answered on one connection (pipelining); then reading pauses.
MAX_PIPELINE: Final = 16
#: After an answer that ends the connection: how long the rest of the upload is discarded.
LINGER: Final = 2.0
#: Errors listed in an NDJSON reply (the counts cover them all).
MAX_ERRORS: Final = 20
PATH: Final = b"/v1/events"
_PATH_QUERY: Final = PATH + b"?"
JSON_TYPES: Final = (b"application/json",)
NDJSON_TYPES: Final = (b"application/x-ndjson", b"application/ndjson", b"application/jsonl")
_WANTED = frozenset((b"content-type", b"content-length", b"authorization", b"expect", b"content-encoding"))
_WANTED_LENGTHS = frozenset(map(len, _WANTED))  # most headers are skipped without lower()
_TRUE = (b"1", b"true", b"yes")

_REASONS: Final = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    415: b"Unsupported Media Type",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_date: list[Any] = [0, b""]


def _http_date() -> bytes:
    """The Date header's value, formatted once a second."""
    now = int(time.time())
    if _date[0] != now:
        _date[0], _date[1] = now, formatdate(now, usegmt=True).encode()
    return _date[1]


def response(
    status: int, body: bytes = b"", *, keep_alive: int | None, extra: bytes = b"", ctype: bytes | None = None
) -> bytes:
    """A whole response. ``keep_alive``: seconds the connection stays open idle (told to the
    client, so that it closes first and never sends on a connection we are closing), or None
    for ``Connection: close``. ``ctype``: the body's type (JSON when not given; sent with an
    empty body too when given, as OTLP asks)."""
    out = b"HTTP/1.1 %d %s\r\nDate: %s\r\n" % (status, _REASONS[status], _http_date())
    if body:
        out += b"Content-Type: %s\r\nContent-Length: %d\r\n" % (ctype or b"application/json", len(body))
    elif status != 204:
        out += (b"Content-Type: %s\r\n" % ctype if ctype else b"") + b"Content-Length: 0\r\n"
    conn = b"Connection: close\r\n" if keep_alive is None else b"Keep-Alive: timeout=%d\r\n" % keep_alive
    return out + conn + extra + b"\r\n" + body


_no_content: list[Any] = [None, b""]  # (Date, keep_alive) and the answer built for them


def no_content(keep_alive: int | None) -> bytes:
    """The 204 answer: the one Claude Code's hooks get, so built once a second, not per request."""
    key = (_http_date(), keep_alive)
    if _no_content[0] != key:
        _no_content[0], _no_content[1] = key, response(204, keep_alive=keep_alive)
    return _no_content[1]


def error_body(reason: str, detail: str, **more: Any) -> bytes:
    return _encode({"ok": False, "reason": reason, "detail": detail, **more})


def one_line(body: bytes) -> bytes:
    """A JSON body written over several lines, as one line (the mirror is one event a line):
    compacted by msgspec without decoding values (numbers keep their digits). A body that is
    not JSON keeps its bytes with line breaks as spaces, to be rejected with its reason."""
    try:
        return msgspec.json.format(body, indent=-1)
    except msgspec.DecodeError:
        return body.replace(b"\r", b" ").replace(b"\n", b" ")


class _Stop(Exception):
    """Raised in a parser callback to stop parsing the rest of the input (an answer that ends
    the connection has been queued)."""


class Request:
    """One request: what was decided about it, its body, and its answer once known.

    With ``?wait=1`` it is the ``Replier`` that Ingest answers each line through (``new_slot``,
    ``reply``), after the commit or at once for a rejection.
    """

    __slots__ = (
        "status",
        "reason",
        "detail",
        "ndjson",
        "wait",
        "body",
        "splitter",
        "events",
        "accepted",
        "duplicates",
        "rejected",
        "errors",
        "pending",
        "complete",
        "answer",
        "close",
        "eid_reply",
        "keep",
        "head",
        "held",
        "otlp",
        "_proto",
    )

    def __init__(self, proto: HttpProtocol) -> None:
        self._proto = proto
        self.status = 0  # decided before the body (an error), else 0
        self.reason = ""
        self.detail = ""
        self.ndjson = False
        self.wait = False
        self.body = bytearray()
        self.splitter: LineSplitter | None = None
        self.events = 0  # non-blank lines seen
        self.accepted = 0  # framed into a batch (no wait) or committed (wait)
        self.duplicates = 0
        self.rejected = 0
        self.errors: list[dict[str, Any]] = []
        self.pending = 0  # lines waiting for their commit (wait)
        self.complete = False  # the whole body was read
        self.answer: bytes | None = None
        self.close = False
        self.eid_reply = b""
        self.keep = False  # the client keeps the connection (HTTP/1.1 default, or keep-alive)
        self.head = False  # a HEAD request: its answer has no body
        self.held = 0  # bytes of a JSON body over max_line taken from the listener's cut_budget
        self.otlp: OtlpRequest | None = None  # POST /v1/logs or /v1/metrics (daemon/otlp_http.py)

    def fail(self, status: int, reason: str, detail: str) -> None:
        """Answer ``status`` after the body (which is then discarded)."""
        if not self.status:
            self.status, self.reason, self.detail = status, reason, detail

    def note_rejected(self, line: int | None, reason: str, detail: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"line": line, "reason": reason, "detail": detail})

    # -- Replier (``?wait=1``) -------------------------------------------------------------
    def new_slot(self) -> int:
        self.pending += 1
        return self.events

    def reply(self, slot: int, data: bytes) -> None:
        self.pending -= 1
        if data.startswith(b'{"ok":true'):
            if b'"duplicate"' in data:
                self.duplicates += 1
            else:
                self.accepted += 1
            self.eid_reply = data.rstrip(b"\n")
        else:
            err = _decode(data)
            self.note_rejected(slot, err.get("reason", "?"), err.get("detail", ""))
        self._proto.finish(self)


class HttpProtocol(asyncio.Protocol):
    """One client connection. The listener owns the counters, the settings and the sweep."""

    def __init__(self, listener: HttpListener) -> None:
        self._lst = listener
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = Peer(None, None)
        self._queue: deque[Request] = deque()  # requests in arrival order, answered in order
        self._req: Request | None = None  # the request being received
        self._url = b""
        self._headers: dict[bytes, bytes] = {}  # only those in _WANTED
        self._nheaders = 0
        self._head = 0  # header bytes of the request being received
        self._in_head = False
        self._head_fed = 0  # bytes fed while its headers were incomplete (a slow or huge header)
        self._paused = False
        self._write_paused = False
        self._ending = False  # an answer that closes is queued: nothing more is parsed
        self._eof = False  # the client has finished sending
        self._linger: asyncio.TimerHandle | None = None
        self._capture: list[tuple[str, str]] = []
        #: Idle sweeps since this connection last completed a request or an NDJSON line.
        self.idle = 0

    # -- connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        lst = self._lst
        lst.opened(self)
        peer = lst.check_peer(transport)
        if not isinstance(peer, Peer):  # (status, reason, detail): refused
            self._refuse(*peer)
            return
        self._peer = peer
        self.update_reading()

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        req = Request(self)
        self._queue.append(req)
        self._end(req, status, reason, detail)
        self.finish(req)

    def data_received(self, data: bytes) -> None:
        if self._ending:
            return  # lingering: discard
        if self._lst.flow.paused and not self._paused:
            # uvloop starts reading after connection_made, undoing a pause made there.
            self.update_reading()
        in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if not self._ending:  # not a decision of ours (_Stop): a bug; this connection only
                log.error("HTTP request handling failed (a bug in hookd; please report it)", exc_info=e.__context__)
                self._fatal(500, "internal_error", "hookd failed on this request (logged); please report it")
        except httptools.HttpParserUpgrade:
            self._fatal(400, "bad_request", "protocol upgrades are not supported: send plain HTTP/1.1 requests")
        except httptools.HttpParserError as e:
            self._fatal(400, "bad_request", f"malformed HTTP request: {e}")
        if in_head and self._in_head and not self._ending:
            # Still inside the same headers: every byte of this chunk was header (httptools
            # holds an unfinished header line in memory, so bound it here).
            self._head_fed += len(data)
            if self._head_fed > MAX_HEAD:
                self._fatal(431, "headers_too_large", f"request line and headers over {MAX_HEAD} bytes")

    def eof_received(self) -> bool:
        """The client is done sending: answer what is owed, then close (writing stays open)."""
        self._eof = True
        if self._req is not None:  # a request cut short: nobody is left to answer
            self._release(self._req)
            if self._queue and self._queue[-1] is self._req:
                self._queue.pop()
            if self._req.otlp is not None:
                self._req.otlp.abandon()  # its body's bytes back to the shared budget
            self._req = None
        return bool(self._queue) and not self._ending

    def connection_lost(self, exc: Exception | None) -> None:
        self._release(self._req)
        if self._linger is not None:
            self._linger.cancel()
        if self._req is not None and self._req.otlp is not None:
            self._req.otlp.abandon()
        self._queue.clear()
        self._transport = None
        self._lst.closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.update_reading()

    def update_reading(self) -> None:
        """Read while the pipeline takes events, answers are few and the client reads them."""
        t = self._transport
        if t is None or t.is_closing():
            return
        want = self._ending or not (self._lst.flow.paused or self._write_paused or len(self._queue) >= MAX_PIPELINE)
        if want == self._paused:
            self._paused = not want
            if want:
                t.resume_reading()
            else:
                t.pause_reading()

    @property
    def waiting_on_us(self) -> bool:
        """We owe an answer (a commit to wait for): not idle. A request still being received
        is the client's to finish, and the only one queued then."""
        return bool(self._queue) and self._queue[0].complete

    @property
    def mid_request(self) -> bool:
        """Part of a request has arrived and not the rest."""
        return self._req is not None

    @property
    def ending(self) -> bool:
        """An answer that closes the connection is queued or written (lingering)."""
        return self._ending

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        req = Request(self)
        self._req = req
        self._queue.append(req)
        self._url = b""
        self._headers = {}
        self._nheaders = 0
        self._head = 0
        self._head_fed = 0
        self._in_head = True
        if len(self._queue) >= MAX_PIPELINE:
            self.update_reading()

    def on_url(self, url: bytes) -> None:
        self._url = self._url + url if self._url else url  # usually called once
        self._head += len(url)
        if self._head > MAX_HEAD:
            self._fatal(431, "headers_too_large", f"request line and headers over {MAX_HEAD} bytes")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        headers = self._headers
        if self._head > MAX_HEAD or self._nheaders >= MAX_HEADERS:
            self._fatal(431, "headers_too_large", f"request line and headers over {MAX_HEAD} bytes")
            raise _Stop
        self._nheaders += 1
        if len(name) in _WANTED_LENGTHS:
            name = name.lower()
            if name in _WANTED:
                headers[name] = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        req = self._req
        assert req is not None
        self._lst.requests += 1
        req.keep = self._parser.should_keep_alive()
        method = self._parser.get_method()
        req.head = method == b"HEAD"
        path, query = self._target()
        signal = OTLP_PATHS.get(path) if path != PATH else None
        if path != PATH and signal is None:
            req.fail(404, "not_found", f"no such path: POST events to {PATH.decode()}")
        elif method != b"POST":
            req.fail(405, "method_not_allowed", f"{path.decode()} takes POST only")
        elif not self._lst.authorized(self._headers.get(b"authorization")):
            req.fail(401, "unauthorized", "send `Authorization: Bearer TOKEN` (the token of http.token_file)")
        elif signal is not None:
            req.otlp = OtlpRequest(self._lst.otlp, signal, self._headers)
            too_long = req.otlp.begin(req, self._headers.get(b"content-length"), self._peer)
            if too_long:
                self._fatal(413, "too_long", too_long)
                raise _Stop
        else:
            self._accept_body(req, query)
        expect = self._headers.get(b"expect", b"").lower() == b"100-continue"
        if expect and not req.status and self._queue[0] is req and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # nothing else is owed before it

    def _target(self) -> tuple[bytes, bytes]:
        """(path, query) of the request target; the usual ``/v1/events[?...]`` without a parse."""
        url = self._url
        if url == PATH:
            return PATH, b""
        if url.startswith(_PATH_QUERY):
            return PATH, url[len(_PATH_QUERY) :]
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            self._fatal(400, "bad_request", "malformed request target")
            raise _Stop from None
        return parsed.path or b"", parsed.query or b""

    def _accept_body(self, req: Request, query: bytes) -> None:
        ctype = self._headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype in NDJSON_TYPES:
            req.ndjson = True
            req.splitter = LineSplitter(self._lst.max_line)
        elif ctype not in JSON_TYPES:
            req.fail(
                415,
                "unsupported_media_type",
                "send Content-Type: application/json (one event) or application/x-ndjson (one event a line)",
            )
            return
        if query:
            req.wait = any(p.partition(b"=")[::2] in ((b"wait", v) for v in _TRUE) for p in query.split(b"&"))
        size = self._headers.get(b"content-length")
        if not req.ndjson and size is not None and size.isdigit() and int(size) > self._lst.max_line:
            self._hold(req, int(size), b"")

    def on_body(self, body: bytes) -> None:
        req = self._req
        if req is None or req.status:
            return  # discarded: the answer is already decided
        if req.ndjson:
            assert req.splitter is not None
            self._frame_lines(req, req.splitter.feed(body))
            return
        if req.otlp is not None:
            too_long = req.otlp.feed(req, body, self._peer)
            if too_long:
                self._fatal(413, "too_long", too_long)
                raise _Stop
            return
        req.body += body
        if len(req.body) > self._lst.max_line and len(req.body) > req.held:
            self._hold(req, len(req.body), bytes(req.body[:PREVIEW_BYTES]))

    def _hold(self, req: Request, size: int, head: bytes) -> None:
        """A JSON body over ``max_line`` (``size``: announced, or read so far): held whole,
        taken from the memory budget for cutting, to be cut to fit once complete (Claude Code
        posts a PostToolUse with all of a long tool output); 413 ``too_long`` when over the
        cutting limit or with the budget spent (raises _Stop)."""
        lst = self._lst
        budget = lst.cut_budget
        if budget is None or lst.cut_limit <= lst.max_line:
            why = ""
        elif size > lst.cut_limit:
            why = f"; bodies over {lst.cut_limit} bytes (ingest.truncate_limit) are not cut to fit"
        elif budget.take(size - req.held):
            req.held = size
            return
        else:
            why = f"; not cut: other requests held the memory set aside for cutting ({budget.limit} bytes)"
        self._release(req)
        self._too_long(req, size, head, why)
        raise _Stop

    def _release(self, req: Request | None) -> None:
        """Give back what ``req``'s body took from the budget (cut, refused or abandoned)."""
        if req is not None and req.held:
            if self._lst.cut_budget is not None:
                self._lst.cut_budget.give(req.held)
            req.held = 0

    def on_message_complete(self) -> None:
        req = self._req
        assert req is not None
        req.complete = True
        self.idle = 0
        if req.status:
            pass
        elif req.ndjson:
            assert req.splitter is not None
            tail = req.splitter.finish()
            self._frame_lines(req, [tail] if tail is not None else [])
            if not req.events and not req.rejected:
                req.fail(400, "empty", "the body holds no event: send one JSON object a line")
        elif req.otlp is not None:
            req.otlp.complete(req, self._peer, self.finish)
        else:
            self._frame_one(req)
        self._req = None  # only now: a failure above is this request's (_fatal answers it)
        self.finish(req)

    # -- events --------------------------------------------------------------------------------
    def _frame_one(self, req: Request) -> None:
        line = bytes(req.body).strip()
        req.body = bytearray()
        if not line:
            req.fail(400, "empty", "the body holds no event: send one JSON object")
            return
        if b"\n" in line or b"\r" in line:
            line = one_line(line)
        req.events = 1
        if req.held:
            self._ingest_long(req, line)
        else:
            self._ingest(req, line, 1)

    def _ingest_long(self, req: Request, line: bytes) -> None:
        """A body over ``max_line``: its longest values cut to fit (or a TooLong saying why not),
        then framed as any line; the budget is given back. Bounded work in the loop, as for a
        long line on the Unix socket (oversize.fit)."""
        size = len(line)
        try:
            out = oversize.fit(b"?" + line if req.wait else line, self._lst.max_line)
        except Exception as e:  # a bug in hookd must cost this event only
            detail = f"line too long, and cutting it failed (a bug in hookd; please report it): {e!r}"[:300]
            out = oversize.too_long(line[: oversize.HEAD], size, detail)
        finally:
            self._release(req)
        self._ingest(req, out, 1, marked=True)

    def _frame_lines(self, req: Request, lines: list[bytes]) -> None:
        if lines:
            self.idle = 0
        for line in lines:
            if not line.strip():
                continue
            req.events += 1
            self._ingest(req, line, req.events)
        assert req.splitter is not None
        if req.splitter.oversized:
            for size, head in req.splitter.oversized:
                self._lst.ingest.oversized(size, head, self._peer)
                req.note_rejected(None, "too_long", f"line of {size} bytes exceeds the limit of {self._lst.max_line}")
            req.splitter.oversized.clear()

    def _ingest(self, req: Request, line: bytes, number: int, *, marked: bool = False) -> None:
        """``marked``: ``line`` came from oversize.fit (a Cut or TooLong, with its ``?`` when
        the client waits)."""
        ingest = self._lst.ingest
        if req.wait:
            # Answered through req.reply; a line from oversize.fit has its "?" already.
            ingest.lines([line if marked else b"?" + line], self._peer, req, marked=marked)
            return
        cap = self._capture
        ingest.capture = cap
        try:
            ingest.lines([line], self._peer, marked=marked)
        finally:
            ingest.capture = None
        if cap:
            reason, detail = cap[0]
            cap.clear()
            req.note_rejected(number, reason, detail)
        else:
            req.accepted += 1

    # -- answers -------------------------------------------------------------------------------
    def _too_long(self, req: Request, size: int, head: bytes, why: str = "") -> None:
        """A JSON body over the line limit: recorded as ``too_long`` like a long line on the
        socket (its size from Content-Length, or what arrived before the limit of a chunked one)."""
        limit = self._lst.max_line
        self._lst.ingest.oversized(size, head, self._peer)
        over = f"over {limit} bytes" if head else f"of {size} bytes"
        detail = f"a body {over} exceeds the limit of {limit} (ingest.max_line)"
        self._fatal(413, "too_long", detail + why + "; send big data as NDJSON lines, each under the limit")

    def _fatal(self, status: int, reason: str, detail: str) -> None:
        """Answer ``status`` (after earlier answers), then close: nothing more is parsed."""
        req = self._req
        self._release(req)
        if req is None or req.answer is not None:
            req = Request(self)
            self._queue.append(req)
        self._req = None
        self._in_head = False
        self._end(req, status, reason, detail)
        self.finish(req)

    def _end(self, req: Request, status: int, reason: str, detail: str) -> None:
        req.status, req.reason, req.detail, req.complete, req.close = status, reason, detail, True, True
        req.pending = 0
        self._ending = True

    def finish(self, req: Request) -> None:
        """Build ``req``'s answer once it is known, and write every answer that is due, in order."""
        if req.answer is None and req.complete and not req.pending:
            req.answer = self._answer(req)
        t = self._transport
        queue = self._queue
        while queue and queue[0].answer is not None:
            done = queue.popleft()
            if t is None or t.is_closing():
                continue
            t.write(done.answer)  # type: ignore[arg-type]
            if done.close:
                self._linger_then_close(t)
                queue.clear()
                return
        if self._eof and not queue and t is not None:
            t.close()
        elif self._paused and len(queue) < MAX_PIPELINE:
            self.update_reading()

    def _answer(self, req: Request) -> bytes:
        lst = self._lst
        keep = None if (req.close or not req.keep or lst.stopping) else lst.keep_alive
        req.close = keep is None
        if req.otlp is not None:
            status, body, extra = req.otlp.answer(req)
            lst.count(status, req.reason)
            return response(status, body, keep_alive=keep, extra=extra, ctype=req.otlp.ctype)
        if req.status:
            lst.count(req.status, req.reason)
            extra = b""
            if req.status == 405:
                extra = b"Allow: POST\r\n"
            elif req.status == 401:
                extra = b'WWW-Authenticate: Bearer realm="hookd"\r\n'
            body = b"" if req.head else error_body(req.reason, req.detail)
            return response(req.status, body, keep_alive=keep, extra=extra)
        if req.ndjson:
            return self._ndjson_answer(req, keep)
        if req.rejected:
            err = req.errors[0]
            status = 413 if err["reason"] == "too_long" else 400  # a body over max_line that could not be cut
            lst.count(status, "rejected_event")
            return response(status, error_body(err["reason"], err["detail"]), keep_alive=keep)
        if req.wait:
            lst.count(200, "")
            return response(200, req.eid_reply, keep_alive=keep)
        lst.count(204, "")
        return no_content(keep)

    def _ndjson_answer(self, req: Request, keep: int | None) -> bytes:
        lst = self._lst
        if not req.rejected:
            if not req.wait:
                lst.count(204, "")
                return no_content(keep)
            lst.count(200, "")
            body = {"ok": True, "committed": req.accepted, "duplicates": req.duplicates, "rejected": 0}
            return response(200, _encode(body), keep_alive=keep)
        status = 200 if (req.accepted or req.duplicates) else 400
        lst.count(status, "rejected_event")
        key = "committed" if req.wait else "accepted"
        body = {"ok": False, key: req.accepted, "duplicates": req.duplicates, "rejected": req.rejected}
        body["errors"] = req.errors
        return response(status, _encode(body), keep_alive=keep)

    def _linger_then_close(self, t: asyncio.Transport) -> None:
        """Half-close, discard what the client still sends, close at its end or after LINGER."""
        self._ending = True
        self._paused = False
        if t.can_write_eof():
            t.write_eof()
        t.resume_reading()
        self._linger = asyncio.get_running_loop().call_later(LINGER, t.close)
