"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

One daemon, one ``hookd dashboard`` process and one browser for the module: every tab loads with
no console error; the figures on the page are the same SQL run on the database; a new event
appears on the open page within 2 s; another uid gets nothing; a screenshot of every tab is
written to tests/artifacts/dashboard/ (git-ignored; the path is printed) and none is blank.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, Daemon, clean_env, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts" / "dashboard"
TABS = ("overview", "activity", "tools", "sessions", "git", "kinds", "health")
NOW = time.time()

webdriver = pytest.importorskip("selenium.webdriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "chromium and chromium-driver are not installed: `./dev test` installs them with apt-get when run as root",
        allow_module_level=True,
    )


# -- data -----------------------------------------------------------------------------------
def claude_session(n: int, start: float) -> list[dict]:
    """A Claude Code session as its hooks report it: prompts, tool calls (one failing, one
    never closed), and its end."""
    s = f"sess-{n}"
    out = [
        {"hook_event_name": "SessionStart", "session_id": s, "cwd": f"/work/p{n}", "ts": start},
        {"hook_event_name": "UserPromptSubmit", "session_id": s, "prompt": f"fix bug {n}", "ts": start + 1},
    ]
    tools = ("Read", "Bash", "Edit", "Read", "Grep")
    for i, tool in enumerate(tools):
        t = start + 2 + i * 10
        call = {"session_id": s, "tool_name": tool, "tool_use_id": f"tu-{n}-{i}", "tool_input": {"command": f"c{i}"}}
        out.append({"hook_event_name": "PreToolUse", **call, "ts": t})
        if i == 4 and n == 1:
            continue  # never closed
        closing = "PostToolUseFailure" if i == 1 else "PostToolUse"
        out.append({"hook_event_name": closing, **call, "duration_ms": 100 * (i + 1) + n, "ts": t + 0.5})
    out.append({"hook_event_name": "SessionEnd", "session_id": s, "reason": "exit", "ts": start + 70})
    return out


def git_events() -> list[dict]:
    out = []
    for day in range(4):
        for k in range(day + 1):
            repo = "/src/hookd" if k % 2 == 0 else "/src/other"
            out.append(
                {
                    "type": "git_commit",
                    "repo": repo,
                    "branch": "main",
                    "sha": f"{day}{k}abcdef",
                    "subject": f"c{k}",
                    "ts": NOW - day * 86400 - k * 60,
                }  # fmt: skip
            )
    out.append({"type": "git_merge", "repo": "/src/hookd", "branch": "main", "sha": "m1", "message": "merge topic",
                "ts": NOW - 3600})  # fmt: skip
    out.append({"type": "git_rewrite", "repo": "/src/hookd", "branch": "topic", "kind": "rebase", "sha": "r1",
                "rewritten_count": 3, "ts": NOW - 7200})  # fmt: skip
    return out


def seed(d: Daemon) -> int:
    events = [e for n in range(3) for e in claude_session(n, NOW - 3600 * (n + 1))]
    events += git_events()
    # Kinds nobody planned: the seed user's routing and self-heal events.
    events += [{"type": "routing_metrics", "route": "fast", "latency_ms": i, "ts": NOW - i * 300} for i in range(6)]
    events += [{"type": "self_heal", "action": "restart", "ts": NOW - 5000}]
    lines = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    d.send(lines + b"not json\n" + b'{"no_type": 1}\n')
    assert d.wait_count(len(events)) == len(events)
    wait_until(lambda: d.query("SELECT count(*) FROM rejected")[0][0] == 2, what="2 rejected lines")
    summarized = "SELECT (SELECT eid FROM summary_mark) >= (SELECT max(eid) FROM events)"
    wait_until(lambda: d.query(summarized)[0][0] == 1, what="the summaries caught up (the writer's idle time)")
    return len(events)


# -- processes ------------------------------------------------------------------------------
class Dashboard:
    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hookd", "dashboard", "--listen", "127.0.0.1:0"],
            env=clean_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.proc.stderr.read() if self.proc.stderr else ""

    def api(self, panel: str) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.url + "api/" + panel, timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> str:
        """Stop it; its log."""
        self.proc.terminate()
        _out, err = self.proc.communicate(timeout=10)
        return err


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Daemon, Dashboard]]:
    home = Path(os.environ.get("HOOKD_TEST_TMP", "/tmp")) / f"hk-dash-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    home.mkdir(mode=0o700)
    d = Daemon(home).start()
    dash = None
    try:
        seed(d)
        dash = Dashboard(home)
        yield d, dash
    finally:
        if dash is not None:
            dash.stop()
        d.kill()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_tab(driver, url: str, tab: str) -> None:
    """Show ``tab`` (``kinds/self_heal`` for an argument) and wait until it rendered afresh."""
    if not driver.current_url.startswith(url):
        driver.get(url)
    before = driver.execute_script("return document.body.dataset.refreshed || ''")
    driver.execute_script("location.hash = arguments[0]", tab)
    name = tab.split("/")[0]
    wait_until(
        lambda: driver.execute_script(
            "const b = document.body.dataset; return b.rendered === arguments[0] && b.refreshed !== arguments[1]",
            name,
            before,
        ),
        timeout=15,
        what=f"the {tab} tab",
    )


def rows(driver, table: str, key: str) -> dict[str, list[str]]:
    """A table's rows by their ``data-KEY``: each cell's ``data-n`` (numbers) or text."""
    return driver.execute_script(
        """
        const out = {};
        for (const tr of document.querySelectorAll(arguments[0] + ' tbody tr')) {
          const cell = c => c.dataset.n !== undefined ? c.dataset.n : c.textContent;
          out[tr.dataset[arguments[1]]] = [...tr.cells].map(cell);
        }
        return out;""",
        "#" + table,
        key,
    )


def severe(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# -- PNG check without an image library -----------------------------------------------------
def png_gray(data: bytes) -> list[int]:
    """The gray levels of an 8-bit RGB(A) PNG, as Chromium writes its screenshots."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 4 if color == 6 else 3
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, prev, out = zlib.decompress(idat), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            line[i] = (line[i] + pred) & 0xFF
        out.extend(line[i] for i in range(0, stride, bpp * 7))  # a sample: the red of every 7th pixel
        prev = line
    return out


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def variance(values: list[int]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


# -- tests ----------------------------------------------------------------------------------
def test_every_tab_loads_without_console_errors_and_is_not_blank(setup, browser) -> None:
    _d, dash = setup
    browser.get(dash.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for tab in TABS:
        open_tab(browser, dash.url, tab)
        assert severe(browser) == [], tab
        assert not browser.find_elements("css selector", "#results .error"), tab
        shot = ARTIFACTS / f"{tab}.png"
        browser.save_screenshot(str(shot))
        assert variance(png_gray(shot.read_bytes())) > 100, f"{shot} looks blank"
    print(f"\nscreenshots of every tab: {ARTIFACTS}/")
    assert variance([0] * 10) == 0  # the check can fail: a blank image has none


def test_overview_numbers_are_the_databases(setup, browser) -> None:
    d, dash = setup
    open_tab(browser, dash.url, "overview")
    text = browser.execute_script("return document.querySelector('#total-events .n').textContent")
    assert int(text.replace(",", "")) == d.query("SELECT sum(count) FROM event_types")[0][0]
    kinds = rows(browser, "kinds-table", "type")
    assert {t: int(r[2]) for t, r in kinds.items()} == dict(d.query("SELECT type, count FROM event_types"))
    assert all(r[1] == "live" for r in kinds.values())
    rejected = browser.execute_script("return document.querySelector('#total-rejected .n').textContent")
    assert int(rejected) == 2
    assert browser.find_elements("css selector", ".uplot"), "the hourly chart is drawn"


TOOL_TYPES = "('pre_tool_use', 'post_tool_use', 'post_tool_use_failure')"


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def test_tools_numbers_are_the_databases_and_percentiles_within_a_bucket(setup, browser) -> None:
    d, dash = setup
    since = (int((time.time() - 86400) // 3600) + 1) * 3600  # whole hours, as the panel counts
    want = d.query(
        "SELECT json_extract(data, '$.tool_name'), sum(type = 'pre_tool_use'), sum(type <> 'pre_tool_use'), "
        f"sum(type = 'post_tool_use_failure') FROM events WHERE type IN {TOOL_TYPES} AND ts >= ? GROUP BY 1",
        (since,),
    )
    open_tab(browser, dash.url, "tools")
    page = rows(browser, "tools-table", "tool")
    assert {t: (int(r[1]), int(r[2]), int(r[3])) for t, r in page.items()} == {w[0]: w[1:] for w in want}
    durations: dict[str, list[float]] = {}
    for tool, ms in d.query(
        "SELECT json_extract(data, '$.tool_name'), json_extract(data, '$.duration_ms') FROM events "
        "WHERE type IN ('post_tool_use', 'post_tool_use_failure') AND ts >= ?",
        (since,),
    ):
        durations.setdefault(tool, []).append(ms)
    api = {t["tool"]: t for t in dash.api("tools?range=24h")["tools"]}
    ratio = 2 ** (1 / 4)
    for tool, values in durations.items():
        for p in (50, 95):
            exact, got = nearest_rank(values, p), api[tool][f"p{p}_bucket"]
            assert got["lo"] <= exact < got["hi"], (tool, p, exact, got)  # the bucket holds the exact value
            assert exact / ratio < got["ms"] < exact * ratio  # and the figure shown is within its width
        assert page[tool][6].startswith("≈ ") and page[tool][6].endswith(" ms")
    every = sorted((ms for v in durations.values() for ms in v), reverse=True)
    slowest = browser.execute_script(
        "return [...document.querySelectorAll('#slowest-table tbody tr')].map(tr => tr.cells[4].textContent)"
    )
    assert slowest == [f"{round(ms)} ms" for ms in every[:20]]
    lost = d.query("SELECT tool_use_id FROM lost_tool_calls WHERE started >= ?", (since,))
    unclosed = browser.execute_script(
        "return [...document.querySelectorAll('#unclosed-table tbody tr')].map(tr => tr.cells[3].textContent)"
    )
    assert lost == [("tu-1-4",)] and unclosed == ["lost"]


def test_sessions_numbers_are_the_views(setup, browser) -> None:
    d, dash = setup
    open_tab(browser, dash.url, "sessions")
    got = rows(browser, "sessions-table", "session")
    view = d.query("SELECT session, prompts, tool_calls, tool_failures, events FROM sessions")
    assert {s: tuple(int(r[i]) for i in (3, 4, 5, 6)) for s, r in got.items()} == {v[0]: v[1:] for v in view}
    open_tab(browser, dash.url, "sessions/sess-1")
    timeline = browser.execute_script("return document.querySelectorAll('#session-timeline tr.event').length")
    assert timeline == d.query("SELECT count(*) FROM events WHERE session = 'sess-1'")[0][0]


def test_git_kinds_and_health_numbers_are_the_databases(setup, browser) -> None:
    d, dash = setup
    open_tab(browser, dash.url, "git")
    branches = browser.execute_script(
        "return [...document.querySelectorAll('#branches-table tbody tr')].map(tr => "
        "[tr.cells[0].textContent, tr.cells[1].textContent, +tr.cells[2].dataset.n])"
    )
    want = d.query(
        "SELECT json_extract(data, '$.repo'), json_extract(data, '$.branch'), sum(type = 'git_commit') FROM events "
        "WHERE type LIKE 'git_%' GROUP BY 1, 2"
    )
    assert sorted(map(tuple, branches)) == sorted(want)
    open_tab(browser, dash.url, "kinds/self_heal")  # a kind nobody planned, with zero code
    fields = browser.execute_script("return document.querySelector('#kind-events-table tr.event td.text').textContent")
    assert fields == "action=restart"
    open_tab(browser, dash.url, "health")
    reasons = rows(browser, "rejected-reasons table", "key")
    counters = d.query("SELECT substr(name, 10), value FROM counters WHERE name LIKE 'rejected.%'")
    assert {k: int(v[1]) for k, v in reasons.items()} == dict(counters)
    assert browser.execute_script("return document.querySelector('#writer-state .n').textContent") == "ok"


def test_a_new_event_appears_within_2_seconds(setup, browser) -> None:
    d, dash = setup
    open_tab(browser, dash.url, "activity")
    marker = f"live-{time.monotonic_ns()}"
    d.send(json.dumps({"type": "deploy", "marker": marker}).encode() + b"\n")
    wait_until(lambda: d.query("SELECT count(*) FROM events WHERE instr(data, ?)", (marker,))[0][0], what="commit")
    committed = time.monotonic()
    wait_until(
        lambda: marker in browser.execute_script("return document.querySelector('#activity-table').textContent"),
        timeout=10,
        what="the new event on the page",
    )
    assert time.monotonic() - committed < 2.0
    assert severe(browser) == []


def test_it_runs_niced_and_an_unchanged_database_costs_no_query(setup) -> None:
    """A viewer yields the CPU to ingest (nice 10), and a panel asked again while the database's
    newest eid is the same is answered from memory; a new event makes it ask SQLite again."""
    d, dash = setup
    nice = int(Path(f"/proc/{dash.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    assert nice >= 10

    def cached() -> int:
        return dash.api("health")["dashboard"]["counts"].get("cached", 0)

    first = dash.api("overview?range=7d")
    before = cached()
    assert dash.api("overview?range=7d") == first and cached() == before + 1
    d.send(json.dumps({"type": "deploy", "ts": NOW}).encode() + b"\n")
    total = first["totals"]["events"] + 1
    wait_until(lambda: dash.api("overview?range=7d")["totals"]["events"] == total, what="a fresh answer")


def test_another_uid_gets_nothing_and_is_counted(setup) -> None:
    _d, dash = setup
    if shutil.which("setpriv") is None or shutil.which("curl") is None or os.getuid() == 65534:
        pytest.skip("needs setpriv and curl, and a uid other than 65534")
    before = dash.api("health")["dashboard"]["counts"].get("refused_uid", 0)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    for path in ("", "api/overview", "api/activity"):
        r = subprocess.run([*nobody, "curl", "-sS", "-m", "5", dash.url + path], capture_output=True)
        assert r.stdout == b"" and r.returncode != 0, r  # closed unanswered: "Empty reply from server"
    code = "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=5)"
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable  # one that nobody may run
    r = subprocess.run([*nobody, python, "-I", "-c", code, dash.url + "api/head"], capture_output=True, text=True)
    assert r.returncode != 0 and "RemoteDisconnected" in r.stderr
    assert dash.api("health")["dashboard"]["counts"]["refused_uid"] == before + 4
    mine = subprocess.run(["curl", "-sS", "-m", "5", dash.url + "api/head"], capture_output=True)
    assert json.loads(mine.stdout)["eid"] > 0  # this user is served
    other_site = subprocess.run(["curl", "-sS", "-m", "5", "-H", "Host: evil.example", dash.url], capture_output=True)
    assert b"own address only" in other_site.stdout  # DNS rebinding refused


def test_cost_and_tokens_show_from_the_telemetry_view(setup, browser) -> None:
    """Migration 6's session_usage, fed by api_request records as the OTLP receiver stores them."""
    d, dash = setup
    assert dash.api("sessions")["usage"] is True
    for cost, tokens in ((0.1, 600), (0.025, 400)):
        rec = {
            "type": "claude_code_api_request",
            "session": "sess-0",
            "model": "claude",
            "cost_usd": cost,
            "input_tokens": tokens,
            "output_tokens": 100,
            "cache_read_tokens": 2500,
            "cache_creation_tokens": 5,
        }
        d.send(json.dumps(rec).encode() + b"\n")
    wait_until(
        lambda: d.query("SELECT api_requests FROM session_usage WHERE session = 'sess-0'") == [(2,)],
        what="the api_request records committed",
    )
    open_tab(browser, dash.url, "sessions")
    got = rows(browser, "sessions-table", "session")
    assert got["sess-0"][8] == "$0.1250" and got["sess-0"][9] == "1000"
    assert got["sess-1"][8] == "–"
