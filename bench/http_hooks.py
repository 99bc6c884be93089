"""Claude Code's http hooks against its command hooks, and sustained HTTP ingest (issue 14).

    .venv/bin/python bench/http_hooks.py [--runs 5] [--quick]

Claude Code runs on Node; the clients here are Node's own (bench/node/):

1. Per hook, p50 and p99, one Node process: ``axios.post`` with the options Claude Code passes
   (Claude Code 2.1.197 posts its http hooks with its bundled axios 1.15.2, over node:http with
   keep-alive; bench/node/package.json pins the same axios), and ``fetch`` POST with keep-alive
   (Node's default agent), to hookd's HTTP listener, against the command hook Claude Code would
   run instead,
   ``hookd-emit -`` through ``child_process.execSync(cmd, {input, shell: "/bin/sh"})`` with the
   payload on stdin, and against the same ``fetch`` to a bare server that answers 204 to
   anything without storing it (uvloop + httptools: what each client itself costs here).
   All alternate in blocks. Targets: the http hook at least 10x faster at p50; p99 at
   most 2 ms.
2. Sustained: 4 Node client processes (axios, then fetch), each on one keep-alive connection,
   one event per request (as Claude Code sends them), from the first request to the last event stored;
   against the same clients and the bare server (so the ratio says how much of the limit is
   the clients'). Target: 20,000 events/s. The daemon's and writer's CPU per event come from
   /proc/PID/stat.
   The same with 4 Python clients on raw sockets (a few µs per request instead of fetch's
   hundreds): what the daemon itself takes, one event per request.
3. The same 4 fetch clients sending NDJSON bodies of 100 events, against the Unix socket path
   streaming the same events (bench/ingest.py's clients) in the same run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # noqa: E402
from conn_per_event import cpu_seconds  # noqa: E402

from common import ROOT, DaemonUnderTest, Result, bench_main, daemon, median_spread, percentile  # noqa: E402

SECTION = "http hooks"
NODE = shutil.which("node")
HOOKD_EMIT = ROOT / ".venv" / "bin" / "hookd-emit"
LATENCY_JS = ROOT / "bench" / "node" / "hook_latency.mjs"
LOAD_JS = ROOT / "bench" / "node" / "http_load.mjs"
CLIENTS = 4

BARE_SERVER = r"""
import asyncio, sys, httptools, uvloop
OK = b"HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=30\r\n\r\n"
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        self.p = httptools.HttpRequestParser(self)
    def data_received(self, data):
        self.p.feed_data(data)
    def on_message_complete(self):
        self.t.write(OK)
async def main():
    srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", 0, backlog=4096)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(1e9)
uvloop.run(main())
"""


class Bare:
    """The reference: a server that parses each request (httptools) and answers 204."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{self.proc.stdout.readline().strip()}/v1/events"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def http_url(dut: DaemonUnderTest) -> str:
    st = subprocess.run(
        [sys.executable, "-m", "hookd", "status", "--json"],
        env={**os.environ, "HOOKD_HOME": str(dut.home)},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(st.stdout)["daemon"]["http"]["url"]


# -- 1. per hook ---------------------------------------------------------------------------------
def latency_run(http_calls: int, cmd_calls: int) -> dict[str, list[float]]:
    with daemon("--http", "127.0.0.1:0") as dut:
        bare = Bare()
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
            env.update(HOOKD_HOME=str(dut.home), PATH=f"{HOOKD_EMIT.parent}:{env.get('PATH', '')}")
            argv = [NODE or "node", str(LATENCY_JS), http_url(dut), bare.url, "hookd-emit -"]
            argv += [str(http_calls), str(cmd_calls), "100", "300"]
            out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=900)
        finally:
            bare.close()
    return json.loads(out.stdout)


def _client_rows(p: dict[str, dict[float, list[float]]], key: str, bare: str, label: str) -> list[Result]:
    speedups = [c / h for c, h in zip(p["command"][0.5], p[key][0.5], strict=True)]
    sp, sp_spread = median_spread(speedups)
    h50, h50_spread = median_spread(p[key][0.5])
    h99, h99_spread = median_spread(p[key][0.99])
    c99, _ = median_spread(p["command"][0.99])
    r50 = [h / b for h, b in zip(p[key][0.5], p[bare][0.5], strict=True)]
    r99 = [h / b for h, b in zip(p[key][0.99], p[bare][0.99], strict=True)]
    (r50m, r50_spread), (r99m, r99_spread) = median_spread(r50), median_spread(r99)
    return [
        Result(SECTION, f"http hook ({label}) p50 vs command hook p50", h50 / 1000, "ms",
               "hookd-emit - through /bin/sh, payload on stdin, p50", median_spread(p["command"][0.5])[0] / 1000,
               sp, ">= 10x faster", sp >= 10, f"ms {h50_spread}; ratio {sp_spread}",
               "ratio = speed-up (reference / value)", runs=speedups),
        Result(SECTION, f"http hook ({label}) p99", h99 / 1000, "ms", "command hook p99", c99 / 1000, c99 / h99,
               "<= 2 ms", h99 <= 2000, f"us {h99_spread}", "ratio = speed-up (reference / value)"),
        Result(SECTION, f"http hook ({label}) p50 vs the same client to a bare 204 server", h50 / 1000, "ms",
               "bare server p50", median_spread(p[bare][0.5])[0] / 1000, r50m, "", None, f"ratio {r50_spread}",
               "bare: uvloop + httptools, answers 204, stores nothing: the client's own floor", runs=r50),
        Result(SECTION, f"http hook ({label}) p99 vs the same client to a bare 204 server", h99 / 1000, "ms",
               "bare server p99", median_spread(p[bare][0.99])[0] / 1000, r99m, "", None, f"ratio {r99_spread}",
               runs=r99),
    ]  # fmt: skip


def latency_results(runs: list[dict[str, list[float]]]) -> list[Result]:
    keys = ("axios", "axiosBare", "http", "bare", "command")
    p = {k: {q: [percentile(r[k], q) for r in runs] for q in (0.5, 0.99)} for k in keys}
    rows = _client_rows(p, "axios", "axiosBare", "axios, as Claude Code posts")
    rows += _client_rows(p, "http", "bare", "fetch")
    n = len(runs[0]["http"]), len(runs[0]["command"])
    rows[0].note += f"; {n[0]:,} axios, {n[0]:,} fetch and {n[1]} command hooks per run, alternating"
    return rows


# -- 2 and 3. sustained ------------------------------------------------------------------------------
# The same client contract as bench/node/http_load.mjs over a raw socket: what the server takes
# when the client costs little (Node's fetch costs far more CPU per request than hookd does).
PY_CLIENT = r"""
import json, socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
events = int(sys.argv[2])
s = socket.create_connection((u.hostname, u.port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
head = b"POST " + u.path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
def post(i):
    body = json.dumps({"hook_event_name": "PreToolUse", "session_id": "s-%d" % (i // 500), "tool_name": "Read",
                       "tool_use_id": "toolu_%d" % i, "tool_input": {"file_path": "/p/mod%d.py" % (i % 40)}}).encode()
    s.sendall(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    if not s.recv(4096).startswith(b"HTTP/1.1 204"):
        raise SystemExit("not 204")
for i in range(50):
    post(-1 - i)
print("ready", flush=True)
sys.stdin.readline()
for i in range(events):
    post(i)
print("done", flush=True)
"""


def start_clients(url: str, events: int, per_request: int, kind: str = "fetch") -> list[subprocess.Popen[str]]:
    if kind in ("fetch", "axios"):
        argv = [NODE or "node", str(LOAD_JS), url, str(events), str(per_request), kind]
    else:
        argv = [sys.executable, "-c", PY_CLIENT, url, str(events)]
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(CLIENTS)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return procs


def go(procs: list[subprocess.Popen[str]]) -> float:
    t0 = time.time()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    return t0


def finish(procs: list[subprocess.Popen[str]]) -> float:
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "done"
        p.wait(60)
    return time.time()


def sustained_hookd(events: int, per_request: int, kind: str = "fetch") -> dict[str, float]:
    """Events/s from the first request to the last event stored, and CPU per event."""
    with daemon("--http", "127.0.0.1:0") as dut:
        procs = start_clients(http_url(dut), events, per_request, kind)
        dut.wait_stored(CLIENTS * 50 * per_request)  # the warm-up
        time.sleep(0.2)
        pids = dut.pids()
        cpu0 = [cpu_seconds(p) for p in pids]
        t0 = go(procs)
        finish(procs)
        t1 = dut.wait_stored(CLIENTS * (50 * per_request + events))
        cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
        total = CLIENTS * events
        return {"eps": total / (t1 - t0), "daemon_us": cpu[0] / total * 1e6, "writer_us": cpu[1] / total * 1e6}


def sustained_bare(events: int, kind: str = "fetch") -> dict[str, float]:
    bare = Bare()
    try:
        procs = start_clients(bare.url, events, 1, kind)
        cpu0 = cpu_seconds(bare.proc.pid)
        t0 = go(procs)
        t1 = finish(procs)
        total = CLIENTS * events
        return {"eps": total / (t1 - t0), "cpu_us": (cpu_seconds(bare.proc.pid) - cpu0) / total * 1e6}
    finally:
        bare.close()


def _pair(hs: list[dict[str, float]], refs: list[float]) -> tuple[float, float, str, float, str]:
    eps = [h["eps"] for h in hs]
    ratios = [h / r for h, r in zip(eps, refs, strict=True)]
    v, spread = median_spread(eps)
    r, r_spread = median_spread(ratios)
    return v, r, r_spread, median_spread(refs)[0], spread


def sustained_results(runs: list[dict[str, Any]], events: int, py_events: int, batch: int) -> list[Result]:
    out = []
    kinds = (("axios", events, "keep-alive axios"), ("fetch", events, "keep-alive fetch"))
    for kind, n, label in (*kinds, ("python", py_events, "keep-alive raw-socket")):
        hs, bares = [r[kind] for r in runs], [r[f"bare_{kind}"] for r in runs]
        v, r, r_spread, ref, spread = _pair(hs, [b["eps"] for b in bares])
        d_us = median_spread([h["daemon_us"] for h in hs])[0]
        w_us = median_spread([h["writer_us"] for h in hs])[0]
        b_us = median_spread([b["cpu_us"] for b in bares])[0]
        out.append(Result(
            SECTION, f"sustained, {CLIENTS} {label} clients x {n:,} events, one per request", v, "events/s",
            "the same clients against the bare 204 server", ref, r, ">= 20,000 events/s", v >= 20_000,
            f"ratio {r_spread}; events/s {spread}",
            f"first request to last event stored; CPU per event: hookd daemon {d_us:.1f} us, writer {w_us:.1f} us, "
            f"bare server {b_us:.1f} us",
        ))  # fmt: skip
    nd = [r["ndjson"] for r in runs]
    v, r, r_spread, ref, _ = _pair(nd, [x["socket"] for x in runs])
    nd_d = median_spread([h["daemon_us"] for h in nd])[0]
    out.append(Result(
        SECTION, f"sustained, {CLIENTS} fetch clients, NDJSON bodies of {batch} events", v, "events/s",
        f"Unix socket, {CLIENTS} streaming clients (bench/ingest.py)", ref, r, ">= 20,000 events/s", v >= 20_000,
        f"ratio {r_spread}", f"hookd daemon CPU {nd_d:.1f} us/event",
    ))  # fmt: skip
    return out


def node_modules() -> None:
    """bench/node's one dependency, axios (the client Claude Code posts http hooks with), from its lock."""
    if not (LOAD_JS.parent / "node_modules" / "axios").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=LOAD_JS.parent, check=True)


def measure(runs: int = 5, quick: bool = False) -> list[Result]:
    if NODE is None:
        raise RuntimeError("node is not installed: the http hook benchmarks use Node's clients, as Claude Code does")
    node_modules()
    http_calls, cmd_calls = (600, 30) if quick else (3000, 150)
    events, py_events, batch = (2_000, 5_000, 100) if quick else (10_000, 25_000, 100)
    lat, sus = [], []
    for _ in range(2 if quick else runs):
        lat.append(latency_run(http_calls, cmd_calls))
        sus.append({
            "axios": sustained_hookd(events, 1, "axios"), "bare_axios": sustained_bare(events, "axios"),
            "fetch": sustained_hookd(events, 1), "bare_fetch": sustained_bare(events),
            "python": sustained_hookd(py_events, 1, "python"), "bare_python": sustained_bare(py_events, "python"),
            "ndjson": sustained_hookd(events * 10, batch), "socket": ingest.run_hookd(CLIENTS, events * 10),
        })  # fmt: skip
    return latency_results(lat) + sustained_results(sus, events, py_events, batch)


def main() -> None:
    bench_main(__doc__, measure, runs=5)


if __name__ == "__main__":
    main()
