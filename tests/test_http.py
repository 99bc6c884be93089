"""The HTTP listener (``--http``): real daemon processes, real clients (curl, Node's fetch,
Python's http.client and raw sockets), another real uid.

Cases that send events call ``record()`` (tests/test_hardening.py): every event sent is stored,
rejected with its reason, or refused before it reached the store; none is lost. They are rows of
docs/reliability.md (tests/reliability_table.py runs this file too).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hardening import NOBODY, record, rejected_by_reason, rss_kb, wait_for

from conftest import Daemon, clean_env

CURL = shutil.which("curl")
NODE = shutil.which("node")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is missing: `./dev test` installs it with apt-get as root")
needs_node = pytest.mark.skipif(NODE is None, reason="node (20+) is not installed: Claude Code's runtime, for fetch")
URL_IN_LOG = re.compile(r"HTTP: POST http://(\S+)/v1/events")
JSON = "application/json"
NDJSON = "application/x-ndjson"


def claude_payload(i: int, event: str = "PreToolUse") -> dict:
    """What Claude Code POSTs for a tool hook (docs: shared/claude-code.md)."""
    return {
        "session_id": "5e7c0c4e-1111-4b1e-9a53-000000000001",
        "transcript_path": "/home/dev/.claude/projects/x/5e7c0c4e.jsonl",
        "cwd": "/home/dev/projects/hookd",
        "permission_mode": "default",
        "hook_event_name": event,
        "tool_name": "Read",
        "tool_input": {"file_path": f"/home/dev/projects/hookd/f{i}.py"},
        "tool_use_id": f"toolu_01{i:08d}",
    }


def address(d: Daemon) -> tuple[str, int]:
    m = URL_IN_LOG.search(d.logtext)
    assert m, d.logtext
    host, _, port = m.group(1).rpartition(":")
    return host.strip("[]"), int(port)


def url(d: Daemon, query: str = "") -> str:
    host, port = address(d)
    return f"http://{host}:{port}/v1/events{query}"


def daemon_status(d: Daemon) -> dict:
    """The daemon's ``!status`` from its control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(d.socket) + ".ctl")
        s.sendall(b"!status\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def http_counts(d: Daemon) -> dict:
    return daemon_status(d)["http"]


def curl(target: str, body: bytes | None = None, ctype: str = JSON, *extra: str, user: int | None = None):
    """(status, body) of one curl request (POST when there is a body)."""
    cmd = [CURL or "curl", "-s", "-o", "-", "-w", "\n%{http_code}", *extra]
    if body is not None:
        cmd += ["-H", f"Content-Type: {ctype}", "--data-binary", "@-"]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    r = subprocess.run([*cmd, target], input=body, capture_output=True, timeout=60, env={**os.environ, "HOME": "/tmp"})
    out, _, code = r.stdout.rpartition(b"\n")
    return int(code or 0), out


@pytest.fixture
def hd(home: Path) -> Iterator[Daemon]:
    """A daemon with the HTTP listener on a free loopback port."""
    d = Daemon(home, "--http", "127.0.0.1:0").start()
    yield d
    d.kill()


_clients: list[http.client.HTTPConnection | socket.socket] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def conn(d: Daemon) -> http.client.HTTPConnection:
    """A keep-alive client (Python's http.client), closed after the test."""
    host, port = address(d)
    c = http.client.HTTPConnection(host, port, timeout=30)
    _clients.append(c)
    return c


def raw(d: Daemon, timeout: float = 30) -> socket.socket:
    s = socket.create_connection(address(d), timeout=timeout)
    _clients.append(s)
    return s


def post(c: http.client.HTTPConnection, body: bytes, ctype: str = JSON, path: str = "/v1/events", **kw: str):
    c.request(kw.pop("method", "POST"), path, body=body, headers={"Content-Type": ctype, **kw})
    r = c.getresponse()
    return r.status, r.read(), r


# -- the endpoint ------------------------------------------------------------------------------


@needs_curl
def test_curl_one_event_wait_ndjson_and_keep_alive(hd: Daemon) -> None:
    status, body = curl(url(hd), json.dumps(claude_payload(1)).encode())
    assert (status, body) == (204, b"")  # what Claude Code reads as success
    status, body = curl(url(hd, "?wait=1"), b'{"type":"deploy","service":"api","id":"d-1"}')
    assert status == 200
    reply = json.loads(body)
    assert reply["ok"] is True and hd.query("SELECT type FROM events WHERE eid = ?", (reply["eid"],)) == [("deploy",)]
    status, body = curl(url(hd, "?wait=1"), b'{"type":"deploy","service":"api","id":"d-1"}')
    assert json.loads(body) == {"ok": True, "eid": reply["eid"], "duplicate": True}
    lines = b"".join(json.dumps({"type": "batch", "i": i}).encode() + b"\n" for i in range(5))
    assert curl(url(hd), lines, NDJSON) == (204, b"")
    status, body = curl(url(hd, "?wait=1"), lines.replace(b"batch", b"batch_w"), NDJSON)
    assert status == 200 and json.loads(body) == {"ok": True, "committed": 5, "duplicates": 0, "rejected": 0}
    # A JSON body over several lines is stored as one event (compacted: the mirror is one a line).
    status, body = curl(url(hd, "?wait=1"), b'{"type": "pretty",\n  "n": [1,\n 2]}\n')
    assert status == 200
    assert hd.query("SELECT data FROM events WHERE type = 'pretty'") == [('{"type":"pretty","n":[1,2]}',)]
    # Keep-alive: curl's second transfer reuses the first's connection (0 new connects).
    hdr = ["-H", f"Content-Type: {JSON}"]
    r = subprocess.run(
        [CURL or "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n", *hdr, "-d", '{"type":"ka"}',
         url(hd), "--next", "-s", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n", *hdr, "-d",
         '{"type":"ka"}', url(hd)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.stdout.split("\n")[:2] == ["204 1", "204 0"], r.stdout + r.stderr
    assert hd.wait_count(15) == 15
    counts = http_counts(hd)
    assert counts["requests"] == 8 and counts["by_status"] == {"200": 4, "204": 4} and counts["by_reason"] == {}
    assert counts["url"] == url(hd) and counts["peer_uid_method"] == "netlink"
    assert hd.query("SELECT DISTINCT uid, pid FROM events") == [(os.getuid(), None)]


@needs_node
def test_node_fetch_keeps_one_connection_as_claude_code_does(hd: Daemon) -> None:
    script = """
    const [url, n] = [process.argv[1], +process.argv[2]];
    const payload = JSON.parse(process.argv[3]);
    const statuses = [];
    for (let i = 0; i < n; i++) {
      payload.tool_use_id = "toolu_" + i;
      const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                  body: JSON.stringify(payload)});
      statuses.push(r.status + ":" + (await r.text()));
    }
    const w = await fetch(url + "?wait=1", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify({type: "node_wait"})});
    console.log(JSON.stringify({statuses: [...new Set(statuses)], wait: await w.json()}));
    """
    r = subprocess.run(
        [NODE or "node", "--input-type=module", "-e", script, url(hd), "200", json.dumps(claude_payload(0))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["statuses"] == ["204:"] and out["wait"]["ok"] is True
    assert hd.wait_count(201) == 201
    counts = http_counts(hd)
    # Keep-alive, as undici does (it opens a second connection early on; so it does against a
    # bare server answering 204 too): not a connection per request.
    assert counts["connections"] <= 2 and counts["requests"] == 201


def test_every_error_status_between_good_events(hd: Daemon) -> None:
    """On one keep-alive connection: each mistake answered with its status and reason, the
    connection kept; then the mistakes that end a connection, each on its own. No good event lost."""
    c = conn(hd)
    cases = [
        ("/v1/events", "POST", JSON, b'{"type":"x","a":', 400, "invalid_json"),
        ("/v1/events", "POST", JSON, b"[1,2]", 400, "not_object"),
        ("/v1/events", "POST", JSON, b"   ", 400, "empty"),
        ("/v1/event", "POST", JSON, b'{"type":"x"}', 404, "not_found"),
        ("/v1/events", "GET", JSON, b"", 405, "method_not_allowed"),
        ("/v1/events", "POST", "text/plain", b'{"type":"x"}', 415, "unsupported_media_type"),
        ("/v1/events", "POST", NDJSON, b'{"type":"g"}\n{bad\n', 200, "invalid_json"),
    ]
    for i, (path, method, ctype, body, want, reason) in enumerate(cases):
        assert post(c, json.dumps({"type": "good", "i": i}).encode())[0] == 204
        status, answer, r = post(c, body, ctype, path, method=method)
        assert status == want, (path, method, body, answer)
        assert reason in answer.decode(), answer
        assert r.getheader("Connection") != "close"
    assert post(c, b'{"type":"good","i":"last"}')[0] == 204
    # Mistakes that close the connection, each between two good events (20 MB: over truncate_limit).
    host, port = address(hd)
    for request, want in (
        (b"NOT HTTP AT ALL\r\n\r\n", b"400 Bad Request"),
        (b"POST /v1/events HTTP/1.1\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", b"431 "),
        (b"POST /v1/events HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n{", b"413 "),
    ):
        assert post(conn(hd), b'{"type":"good","i":"around"}')[0] == 204
        with socket.create_connection((host, port), timeout=30) as s:
            s.sendall(request)
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 " + want), answer
            assert b"Connection: close" in answer
    assert post(conn(hd), b'{"type":"good","i":"end"}')[0] == 204
    good_events = hd.wait_count(13, where="type IN ('good', 'g')")
    assert good_events == 13
    rejected = rejected_by_reason(hd)
    assert rejected == {"invalid_json": 2, "not_object": 1, "too_long": 1}
    counts = http_counts(hd)
    assert counts["by_reason"] == {
        "bad_request": 1,
        "empty": 1,
        "headers_too_large": 1,
        "method_not_allowed": 1,
        "not_found": 1,
        "rejected_event": 3,
        "too_long": 1,
        "unsupported_media_type": 1,
    }
    assert hd.proc is not None and daemon_status(hd)["pid"] == hd.proc.pid  # the daemon lives on
    # Events sent: 13 good ones (7 + the NDJSON's + 1 + 3 + 1 around the fatal ones) and 4 bad
    # ones; the wrong requests (path, method, type, empty, malformed, headers) carried none.
    record("HTTP: every error status (400, 404, 405, 413, 415, 431) between good events", 17, 13, rejected)


def test_slowloris_is_closed_by_the_idle_timeout_and_others_are_served(home: Path) -> None:
    d = Daemon(home, "--http", "127.0.0.1:0", "--idle-timeout", "2").start()
    try:
        slow = raw(d)
        head = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"z" * 60
        closed_after: list[float] = []

        def drip() -> None:  # one header byte a second, never finishing
            t0 = time.monotonic()
            for byte in head:
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(1.0)
                slow.settimeout(0.01)
                try:
                    if slow.recv(1) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            closed_after.append(time.monotonic() - t0)

        t = threading.Thread(target=drip)
        t.start()
        c = conn(d)  # a regular keep-alive client, an event every 0.3 s
        for i in range(20):
            assert post(c, json.dumps({"type": "regular", "i": i}).encode())[0] == 204
            time.sleep(0.3)
        t.join(30)
        assert closed_after and closed_after[0] < 6, closed_after  # idle timeout 2 s, checked every 0.5 s
        assert d.wait_count(20) == 20
        counts = http_counts(d)
        assert counts["by_reason"].get("idle_timeout") == 1 and counts["open_connections"] == 1
        # An idle keep-alive connection is closed too, but that is no error: `idle_closed`.
        assert wait_for(lambda: http_counts(d)["by_reason"].get("idle_closed") == 1, 10)
        assert d.stop() == 0
        assert d.query("SELECT value FROM counters WHERE name = 'connections.idle_timeout'") == [(1,)]
        record("HTTP: a slowloris (a header byte a second) and a regular client (idle timeout 2 s)", 20, 20, {})
    finally:
        d.kill()


@needs_curl
def test_a_60mb_body_is_413_recorded_too_long_and_memory_stays_bounded(hd: Daemon, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.write(b'{"type":"huge","blob":"')
        f.write(b"a" * (60 << 20))
        f.write(b'"}')
    size = big.stat().st_size
    assert hd.proc is not None
    before = rss_kb(hd.proc.pid)
    for extra in (["-H", "Expect:"], ["-H", "Expect:", "-H", "Transfer-Encoding: chunked"], []):
        assert curl(url(hd), b'{"type":"small"}')[0] == 204
        r = subprocess.run(
            [CURL or "curl", "-s", "-w", "\n%{http_code}", "-H", f"Content-Type: {JSON}", *extra,
             "--data-binary", f"@{big}", url(hd)],
            capture_output=True, timeout=120,
        )  # fmt: skip
        body, _, code = r.stdout.rpartition(b"\n")
        assert code == b"413", (extra, r.stdout[-300:], r.stderr)
        assert json.loads(body)["reason"] == "too_long"
    assert curl(url(hd), b'{"type":"small"}')[0] == 204
    grown_mb = (rss_kb(hd.proc.pid) - before) / 1024
    assert grown_mb < 16, f"daemon RSS grew by {grown_mb:.1f} MB"
    assert hd.wait_count(4) == 4
    assert wait_for(lambda: rejected_by_reason(hd) == {"too_long": 3})
    sizes = sorted(r[0] for r in hd.query("SELECT size FROM rejected"))
    assert sizes[1:] == [size, size]  # from Content-Length; the chunked one as far as it was read
    # Read whole up to the cutting limit (truncate_limit, 16 MiB), to be cut to fit; refused beyond it.
    assert (16 << 20) < sizes[0] <= (16 << 20) + (256 << 10)
    record(f"HTTP: three 60 MiB bodies (length, chunked, 100-continue); daemon RSS +{grown_mb:.1f} MB", 7, 4,
           {"too_long": 3})  # fmt: skip


def test_a_json_body_over_max_line_is_cut_to_fit_as_on_the_socket(home: Path) -> None:
    """Claude Code posts a PostToolUse with all of a long tool output: over ``max_line`` (up to
    ``truncate_limit``) it is stored with its longest values cut, so its tool call stays paired;
    with a length, chunked, and with ``?wait=1`` (the reply lists what was cut). Over the
    cutting limit: 413 ``too_long``. The memory taken for cutting is given back each time."""
    env = clean_env(home, HOOKD_TRUNCATE_LIMIT="65536")
    d = Daemon(home, "--http", "127.0.0.1:0", "--max-line", "4096", env=env).start()
    try:
        big = {**claude_payload(1, "PostToolUse"), "tool_response": {"stdout": "x" * 20000, "stderr": ""}}
        body = json.dumps(big).encode()
        c = conn(d)
        for i in range(15):  # more than the budget (4 x 64 KiB) holds: it must be given back each time
            assert post(c, body)[0] == 204, i
        status, answer, _ = post(c, body, "application/json", "/v1/events?wait=1")
        reply = json.loads(answer)
        assert status == 200 and reply["ok"] and reply["truncated"][0]["path"] == "$.tool_response.stdout", answer
        chunked = subprocess.run(
            [CURL or "curl", "-s", "-w", "\n%{http_code}", "-H", f"Content-Type: {JSON}", "-H",
             "Transfer-Encoding: chunked", "--data-binary", "@-", url(d)],
            input=body, capture_output=True, timeout=60,
        ) if CURL else None  # fmt: skip
        n = 16
        if chunked is not None:
            assert chunked.stdout.endswith(b"\n204"), chunked.stdout
            n += 1
        status, answer, _ = post(c, json.dumps({"type": "huge", "blob": "y" * 70000}).encode())
        assert status == 413 and json.loads(answer)["reason"] == "too_long", answer
        status, answer, _ = post(c, json.dumps({"type": "numbers", "n": list(range(3000))}).encode())
        assert status == 413 and "too_long" in answer.decode(), answer  # over max_line with no string to cut
        assert post(conn(d), b'{"type":"after"}')[0] == 204
        assert d.wait_count(n + 1) == n + 1
        rows = [json.loads(r[0]) for r in d.query("SELECT data FROM events WHERE type = 'post_tool_use'")]
        assert len(rows) == n
        for row in rows:
            assert row["tool_use_id"] == "toolu_0100000001" and len(json.dumps(row)) <= 4096
            assert row["_hookd_truncated"]["values"] == [{"path": "$.tool_response.stdout", "length": 20000}]
        assert rejected_by_reason(d) == {"too_long": 2}
        assert daemon_status(d)["http"]["by_status"]["413"] == 2
        assert d.stop() == 0
    finally:
        d.kill()


def test_a_probe_that_closes_at_once_is_not_reported_as_another_user(hd: Daemon) -> None:
    """``hookd hooks install-claude`` checks that the port answers with a connect and close; so do
    health checks. Their owner is gone before it can be looked up: not another user (found by
    the real Claude Code tests: every install logged a warning naming "uid None")."""
    for _ in range(30):
        socket.create_connection(address(hd), timeout=5).close()
    assert post(conn(hd), b'{"type":"after_probes"}')[0] == 204
    assert hd.wait_count(1) == 1
    reasons = http_counts(hd)["by_reason"]
    assert "refused_uid" not in reasons and set(reasons) <= {"peer_gone"}, reasons
    assert "refused a connection" not in hd.logtext and "uid None" not in hd.logtext
    assert hd.stop() == 0
    assert hd.query("SELECT value FROM counters WHERE name = 'connections.refused_uid'") == []


@needs_curl
def test_another_user_is_refused_on_the_tcp_port(home: Path) -> None:
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user (a loopback port is open to everyone)")
    d = Daemon(home, "--http", "127.0.0.1:0").start()
    try:
        for _ in range(3):
            status, body = curl(url(d), b'{"type":"intruder"}', user=NOBODY)
            assert status == 403 and json.loads(body)["reason"] == "refused_uid"
        assert curl(url(d), b'{"type":"mine"}')[0] == 204
        assert d.wait_count(1) == 1
        assert http_counts(d)["by_reason"] == {"refused_uid": 3}
        assert daemon_status(d)["since_start"]["connections_closed"] == {"refused_uid": 3}
        assert d.logtext.count("refused a connection from uid 65534") == 1  # once a minute per uid
        assert d.stop() == 0
        assert d.query("SELECT value FROM counters WHERE name = 'connections.refused_uid'") == [(3,)]
        assert d.count("type = 'intruder'") == 0
    finally:
        d.kill()
    d = Daemon(home, "--http", "127.0.0.1:0", "--allow-uid", str(NOBODY)).start()
    try:
        status, body = curl(url(d, "?wait=1"), b'{"type":"allowed"}', user=NOBODY)
        assert status == 200, body
        assert d.query("SELECT uid FROM events WHERE type = 'allowed'") == [(NOBODY,)]
    finally:
        d.kill()
    record("HTTP: another user (setpriv --reuid 65534) on the loopback port, then allowed", 5, 2, {}, refused=3)


# -- the token ----------------------------------------------------------------------------------


def test_a_token_is_required_when_configured(home: Path) -> None:
    token_file = home / "token"
    token_file.write_text("s3cr3t-t0ken-0123456789abcdef\n")
    token_file.chmod(0o600)
    d = Daemon(home, "--http", "127.0.0.1:0", "--http-token-file", str(token_file)).start()
    try:
        c = conn(d)
        status, body, r = post(c, b'{"type":"t"}')
        assert status == 401 and r.getheader("WWW-Authenticate") == 'Bearer realm="hookd"'
        assert post(c, b'{"type":"t"}', Authorization="Bearer wrong-token-0123456789")[0] == 401
        assert post(c, b'{"type":"t"}', Authorization="Bearer s3cr3t-t0ken-0123456789abcdef")[0] == 204
        assert post(c, b'{"type":"t"}', Authorization="bearer s3cr3t-t0ken-0123456789abcdef")[0] == 204
        assert d.wait_count(2) == 2
        assert http_counts(d)["token_required"] is True and http_counts(d)["by_reason"] == {"unauthorized": 2}
    finally:
        d.kill()
    token_file.chmod(0o644)
    d = Daemon(home, "--http", "127.0.0.1:0", "--http-token-file", str(token_file))
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) == 2
    d._exited.wait(5)
    assert "has mode 0644: other users can read it; chmod 600 it" in d.logtext


def test_only_loopback_unless_allowed_and_then_with_a_token(home: Path) -> None:
    run = [sys.executable, "-m", "hookd", "run", "--http", "0.0.0.0:0"]
    r = subprocess.run(run, env=clean_env(home), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--http: 0.0.0.0 is not a loopback address" in r.stderr and "allow_remote = true" in r.stderr
    (home / "config.toml").write_text("[http]\nallow_remote = true\n")
    r = subprocess.run(run, env=clean_env(home), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "requires a token" in r.stderr
    token = home / "token"
    token.write_text("another-long-token-0123456789\n")
    token.chmod(0o600)
    (home / "config.toml").write_text(f'[http]\nallow_remote = true\ntoken_file = "{token}"\nlisten = "0.0.0.0:0"\n')
    d = Daemon(home).start()
    try:
        c = conn(d)  # from 127.0.0.1: a local peer, so its uid is checked too
        assert post(c, b'{"type":"t"}')[0] == 401
        assert post(c, b'{"type":"t"}', Authorization="Bearer another-long-token-0123456789")[0] == 204
    finally:
        d.kill()


# -- backpressure and stop -------------------------------------------------------------------------


def test_a_full_pipeline_pauses_http_reading_and_loses_nothing(home: Path) -> None:
    """A write-locked database fills the pipeline (max_inflight 1, batches of 1); the listener
    stops reading, status still answers, and every event is stored once the lock goes."""
    (home / "config.toml").write_text("[ingest]\nbatch_size = 1\nmax_inflight = 1\n")
    d = Daemon(home, "--http", "127.0.0.1:0").start()
    try:
        assert post(conn(d), b'{"type":"first"}')[0] == 204
        assert d.wait_count(1) == 1
        locker = (
            subprocess.Popen(["sqlite3", str(d.db_path)], stdin=subprocess.PIPE, text=True)
            if shutil.which("sqlite3")
            else None
        )
        if locker is None:
            pytest.skip("sqlite3 is missing: `./dev test` installs it")
        assert locker.stdin is not None
        locker.stdin.write("BEGIN IMMEDIATE;\n")
        locker.stdin.flush()
        time.sleep(0.5)
        results: list[int] = []

        def client(k: int) -> None:
            c = conn(d)
            for i in range(25):
                results.append(post(c, json.dumps({"type": "held", "k": k, "i": i}).encode())[0])

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        assert wait_for(lambda: daemon_status(d)["queue"]["reading_paused"], 30)
        time.sleep(0.5)
        assert len(results) < 100  # clients wait: their requests sit unread in the kernel
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(30)
        for t in threads:
            t.join(60)
        assert results == [204] * 100
        assert d.wait_count(101) == 101
        record("HTTP: 4 keep-alive clients while the database is write-locked (reading paused)", 101, 101, {})
    finally:
        d.kill()


def test_a_waiting_request_is_answered_before_the_daemon_stops(hd: Daemon) -> None:
    c = conn(hd)
    assert post(c, b'{"type":"before"}')[0] == 204
    idle = raw(hd, 10)  # an idle keep-alive connection
    s = raw(hd, 10)
    s.sendall(b"POST /v1/events?wait=1 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n")
    time.sleep(0.2)
    hd.send_signal(15)
    time.sleep(0.3)
    s.sendall(b'{"type":"stop_w"}')  # the rest of the request, during the stop
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer, answer
    assert hd.stop() == 0
    assert idle.recv(10) == b""  # closed, not left hanging
    assert hd.count() == 2


# -- the peer-uid lookup ------------------------------------------------------------------------


def test_peer_uid_netlink_and_proc_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from hookd import peer_uid

    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as srv:
            srv.bind((host, 0))
            srv.listen()
            c = socket.socket(family)
            c.connect(srv.getsockname()[:2])
            a, remote = srv.accept()
            uids = peer_uid.PeerUids()
            assert uids.method == "netlink"
            assert uids.owner(a.getsockname(), remote) == os.getuid()
            assert peer_uid.proc_owner(family, remote[:2], a.getsockname()[:2]) == os.getuid()
            c.close()  # an orphaned socket has no owner any more: unknown, never uid 0
            assert uids.owner(a.getsockname(), remote) is None
            assert peer_uid.proc_owner(family, remote[:2], a.getsockname()[:2]) is None
            a.close()
            uids.close()
    real = socket.socket

    def no_netlink(family: int = -1, *args: object, **kw: object) -> socket.socket:
        if family == socket.AF_NETLINK:  # as under RestrictAddressFamilies= without AF_NETLINK
            raise OSError(97, "Address family not supported by protocol")
        return real(family, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(peer_uid.socket, "socket", no_netlink)
    uids = peer_uid.PeerUids()
    assert uids.method == "proc"


def test_listen_values() -> None:
    from hookd.values import parse_listen

    assert parse_listen("localhost:8787") == "127.0.0.1:8787"
    assert parse_listen("[::1]:80") == "[::1]:80"
    assert parse_listen("127.0.0.2:0") == "127.0.0.2:0"
    assert parse_listen("off") is None and parse_listen("") is None
    for bad in ("8787", "::1:8787", "example.com:80", "127.0.0.1:99999", "127.0.0.1:"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_pipelined_requests_are_answered_in_order(hd: Daemon) -> None:
    """A waiting request first, then two that could be answered at once: answers keep the order."""
    one = b'{"type":"pipe","n":1}'
    requests = [
        b"POST /v1/events?wait=1 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(one), one),
        b"POST /v1/events HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(one), one),
        b"POST /nowhere HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"HEAD /v1/events HTTP/1.1\r\n\r\n",
    ]
    s = raw(hd)
    s.sendall(b"".join(requests))
    data = b""
    while data.count(b"HTTP/1.1 ") < 4:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"204", b"404", b"405"], data
    assert data.endswith(b"\r\n\r\n")  # the HEAD answer has no body
    assert hd.wait_count(2) == 2


def test_a_bug_in_request_handling_costs_that_connection_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: Ingest raising (a bug) gets a 500 and a closed connection, not a dead daemon."""
    from hookd.daemon import http_protocol
    from hookd.framing import Peer

    class Transport:
        def __init__(self) -> None:
            self.out = b""
            self.closed = False

        def write(self, data: bytes) -> None:
            self.out += data

        def is_closing(self) -> bool:
            return self.closed

        def can_write_eof(self) -> bool:
            return False

        def close(self) -> None:
            self.closed = True

        def pause_reading(self) -> None: ...
        def resume_reading(self) -> None: ...

    class Broken:
        capture = None

        def lines(self, *args: object) -> None:
            raise RuntimeError("boom")

    class Listener:
        max_line, keep_alive, stopping, requests = 1 << 20, 30, False, 0
        flow = type("Flow", (), {"paused": False})()
        ingest = Broken()
        counts: list[tuple[int, str]] = []

        def opened(self, proto: object) -> None: ...
        def closed(self, proto: object) -> None: ...
        def check_peer(self, transport: object) -> Peer:
            return Peer(None, os.getuid())

        def authorized(self, header: object) -> bool:
            return True

        def count(self, status: int, reason: str) -> None:
            self.counts.append((status, reason))

    async def run() -> None:
        lst, t = Listener(), Transport()
        proto = http_protocol.HttpProtocol(lst)  # type: ignore[arg-type]
        proto.connection_made(t)  # type: ignore[arg-type]
        body = b'{"type":"x"}'
        proto.data_received(b"POST /v1/events HTTP/1.1\r\nContent-Type: application/json\r\n")
        proto.data_received(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert t.out.startswith(b"HTTP/1.1 500 Internal Server Error") and b"Connection: close" in t.out
        assert lst.counts == [(500, "internal_error")]

    asyncio.run(run())
