"""A stand-in for Anthropic's Messages API, for the real Claude Code CLI offline (tests and bench).

Standard library only: a threaded ``http.server`` on loopback answering ``POST /v1/messages``
with the server-sent-event stream the real API sends (``message_start``, ``content_block_start``
/ ``_delta`` / ``_stop``, ``message_delta`` with the ``stop_reason``, ``message_stop``), or with
one JSON message when the request does not ask for a stream.

What the model "says" is scripted, and the script is chosen by the request's content, so one
server serves any number of sessions at once and needs no state of its own:

- A session's prompt names its script: ``[script:NAME] ...`` (``SCRIPTS``). The first user
  message of the request holds the prompt; a subagent's requests hold the prompt its Task call
  gave it, which names the subagent's script the same way.
- A script is a list of turns; the answer to a request is the turn numbered by how many
  assistant messages the request already holds (the first request gets turn 0, the request
  carrying turn 0's ``tool_result`` gets turn 1...). A retried request gets the same answer.
- A turn is a list of blocks: ``Tool(name, input)`` blocks become ``tool_use`` blocks (their
  input streamed as ``input_json_delta`` chunks) and stop with ``tool_use``; otherwise the
  turn's text ends the conversation with ``end_turn``.
- ``on_turn[(script, turn)]``, when set, runs before that turn is answered: a test's way to act
  between a tool call and its closing hooks' aftermath (restart a daemon, say). Claude Code runs
  a turn's PostToolUse hooks before it sends the request carrying the tool's result.

Anything else Claude Code asks (a request without a script: a title, a quota check,
``count_tokens``...) gets a short plain answer and is logged in ``extra``; an unknown path is
answered 404 and logged in ``unknown`` (tests print both).

Usage per answer is fixed (``USAGE``), so a session's tokens are predictable; Claude Code computes
the cost itself from the model's price.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Input, output, cache-read and cache-creation tokens reported for every answer.
USAGE = {"input_tokens": 120, "output_tokens": 30, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
_SCRIPT = re.compile(r"\[script:([a-z_]+)\]")


@dataclass(frozen=True)
class Tool:
    """A ``tool_use`` block the model sends."""

    name: str
    input: dict[str, Any]


Turn = list["Tool | str"]


def scripts(big_file: str = "big.txt") -> dict[str, list[Turn]]:
    """The scripts, by name. Paths are relative to the session's working directory."""
    return {
        "one_tool": [[Tool("Read", {"file_path": "hello.txt"})], ["hello.txt says hello."]],
        "failing_tool": [[Tool("Read", {"file_path": "missing.txt"})], ["That file does not exist."]],
        "parallel": [
            [Tool("Read", {"file_path": "hello.txt"}), Tool("Read", {"file_path": "other.txt"})],
            ["Both files read."],
        ],
        "bash": [[Tool("Bash", {"command": "echo bash-ran", "description": "Print a word"})], ["The command ran."]],
        "subagent": [
            [
                Tool(
                    "Agent",  # "Task" before Claude Code 2.1.x; 2.1.197 accepts both, hooks say "Agent"
                    {
                        "description": "Read hello",
                        "prompt": "[script:one_tool] Read hello.txt and report.",
                        "subagent_type": "general-purpose",
                    },
                )
            ],
            ["The subagent reported."],
        ],
        "long_output": [[Tool("Read", {"file_path": big_file})], ["A long file."]],
        "text_only": [["Hello from the stand-in."]],
    }


@dataclass
class Log:
    """What the stand-in saw: requests by script, extra requests, unknown ones."""

    scripted: list[tuple[str, int]] = field(default_factory=list)  # (script, turn)
    extra: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, where: list, item: Any) -> None:
        with self.lock:
            where.append(item)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]


def script_of(body: dict[str, Any]) -> str | None:
    """The script named by the request's first user message (its prompt), if any."""
    for msg in body.get("messages") or []:
        if msg.get("role") == "user":
            for text in _texts(msg.get("content")):
                m = _SCRIPT.search(text)
                if m:
                    return m.group(1)
            return None
    return None


def turn_of(body: dict[str, Any]) -> int:
    return sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")


def blocks_for(turn: Turn) -> tuple[list[dict[str, Any]], str]:
    """The content blocks of an answer and its stop reason."""
    blocks: list[dict[str, Any]] = []
    for item in turn:
        if isinstance(item, Tool):
            blocks.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": item.name,
                           "input": item.input})  # fmt: skip
        else:
            blocks.append({"type": "text", "text": item})
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return blocks, stop


def sse(model: str, blocks: list[dict[str, Any]], stop: str) -> bytes:
    """The event stream of one answer, as the Messages API sends it."""
    out: list[tuple[str, dict[str, Any]]] = []
    msg = _message(model, [], None, {**USAGE, "output_tokens": 1})
    out.append(("message_start", {"type": "message_start", "message": msg}))
    for i, b in enumerate(blocks):
        if b["type"] == "tool_use":
            start = {**b, "input": {}}
            raw = json.dumps(b["input"])
            cut = max(1, len(raw) // 2)  # two chunks: the client must join them
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in (raw[:cut], raw[cut:])]
        else:
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": b["text"]}]
        out.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}))
        out += [("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas]
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    delta = {"stop_reason": stop, "stop_sequence": None}
    usage = {"output_tokens": USAGE["output_tokens"]}
    out.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    out.append(("message_stop", {"type": "message_stop"}))
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in out)


def message(model: str, blocks: list[dict[str, Any]], stop: str) -> bytes:
    """The same answer as one JSON message (a request without ``"stream": true``)."""
    return json.dumps(_message(model, blocks, stop, USAGE)).encode()


def _message(model: str, blocks: list[dict[str, Any]], stop: str | None, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


class _Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass

    def _body(self) -> dict[str, Any]:
        size = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(size) if size else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        body = self._body()
        if path == "/v1/messages/count_tokens":
            self.server.log.add(self.server.log.extra, "count_tokens")
            self._send(200, json.dumps({"input_tokens": USAGE["input_tokens"]}).encode())
            return
        if path != "/v1/messages":
            self.server.log.add(self.server.log.unknown, f"POST {self.path}")
            self._send(404, b'{"type":"error","error":{"type":"not_found_error","message":"stand-in"}}')
            return
        self._answer(body)

    def do_GET(self) -> None:  # noqa: N802
        self.server.log.add(self.server.log.unknown, f"GET {self.path}")
        self._send(404, b'{"type":"error","error":{"type":"not_found_error","message":"stand-in"}}')

    do_HEAD = do_GET  # noqa: N815

    def _answer(self, body: dict[str, Any]) -> None:
        model = str(body.get("model") or "claude-sonnet-4-5")
        name, turn = script_of(body), turn_of(body)
        script = self.server.scripts.get(name or "")
        if script is None or turn >= len(script):
            self.server.log.add(self.server.log.extra, self._describe(body, name, turn))
            blocks, stop = [{"type": "text", "text": "OK"}], "end_turn"
        else:
            self.server.log.add(self.server.log.scripted, (name, turn))
            action = self.server.on_turn.get((name, turn))
            if action is not None:
                action()
            blocks, stop = blocks_for(script[turn])
        if body.get("stream"):
            self._send(200, sse(model, blocks, stop), "text/event-stream")
        else:
            self._send(200, message(model, blocks, stop))

    @staticmethod
    def _describe(body: dict[str, Any], name: str | None, turn: int) -> str:
        system = body.get("system")
        system_text = " ".join(_texts(system)) if not isinstance(system, str) else system
        first = next((" ".join(_texts(m.get("content"))) for m in body.get("messages") or []), "")
        return (f"model={body.get('model')} max_tokens={body.get('max_tokens')} stream={bool(body.get('stream'))} "
                f"script={name} turn={turn} system={system_text[:80]!r} first={first[:80]!r}")  # fmt: skip


class StandIn(ThreadingHTTPServer):
    """The stand-in on ``127.0.0.1:port`` (0: any free port), served from a thread of its own."""

    daemon_threads = True

    def __init__(self, port: int = 0, script_set: dict[str, list[Turn]] | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.scripts = script_set if script_set is not None else scripts()
        self.on_turn: dict[tuple[str, int], Any] = {}
        self.log = Log()
        self._thread = threading.Thread(target=self.serve_forever, name="claude-api-stand-in", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Claude Code resets idle keep-alive connections when it exits: not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
