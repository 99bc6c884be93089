"""The package layout shows which process runs what, and the imports keep it true.

    hookd/          shared by every process: cli, errors, framing, records, wire, writer_client, config,
                    settings, paths, spool
    hookd/daemon/   the daemon process: the event loop (asyncio, uvloop, aiosqlite)
    hookd/writer/   the writer process, and the commands that write the store without a daemon
    hookd/ops/      operator commands that read, ask or install
    hookd/forwarder/ the forwarder process: committed events to PostgreSQL
    hookd/dashboard/ the dashboard process (``hookd dashboard``): an HTTP server reading the store
    hookd/otlp_worker/ the OTLP decoding process: request bodies to event lines, for the daemon

Rules, read from the source with ``ast`` (every import, also those inside functions):

1. nothing the writer reaches imports asyncio, uvloop or aiosqlite, or anything of hookd.daemon;
2. the daemon reaches the writer only through ``hookd.wire`` and the shared sender's side of
   the protocol, ``hookd.writer_client`` (no hookd.writer, no hookd.ops);
3. operator commands never import hookd.daemon;
4. the shared modules import only shared modules (``cli`` dispatches to all, lazily);
5. the forwarder imports only shared modules and its own, and nothing it reaches imports
   asyncio, uvloop or aiosqlite: it runs no event loop.
6. the dashboard imports only shared modules and the operator commands' readers (``hookd.ops``):
   never the daemon nor the writer (its queries must never run in their processes), and no
   event loop (it is a threaded ``http.server``).
7. the OTLP decoding process imports only shared modules and its own, and nothing it reaches
   imports asyncio, uvloop or aiosqlite; the daemon never imports it (it speaks to it through
   ``hookd.otlp_wire`` over pipes: the decoding must not run in the daemon's process).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "daemon" / "hookd"
EVENT_LOOP = ("asyncio", "uvloop", "aiosqlite")


def module_name(package: Path, path: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(package: Path) -> dict[str, set[str]]:
    """Every module of the package -> the modules it imports (absolute names)."""
    out: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        name = module_name(package, path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = name.split(".")
                    if path.name != "__init__.py":
                        base.pop()
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)  # `from hookd.writer import schema`
        out[name] = found
    return out


def top(name: str) -> str:
    return name.split(".")[0]


def area(name: str) -> str:
    """daemon, writer, ops, forwarder, dashboard, otlp_worker, or shared (hookd.cli and hookd.__main__
    are the entry: 'entry')."""
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in ("daemon", "writer", "ops", "forwarder", "dashboard", "otlp_worker"):
        return parts[1]
    return "entry" if name in ("hookd.cli", "hookd.__main__") else "shared"


#: (area, does it break the rule to import a module of this area, why): rules 2-7 above.
DIRECT_RULES: list[tuple[str, Callable[[str], bool], str]] = [
    ("forwarder", lambda a: a not in ("shared", "forwarder"), "the forwarder imports only shared modules and its own"),
    (
        "otlp_worker",
        lambda a: a not in ("shared", "otlp_worker"),
        "the OTLP decoding process imports only shared modules and its own",
    ),
    ("daemon", lambda a: a in ("writer", "ops"), "the daemon reaches the writer only through hookd.wire"),
    (
        "daemon",
        lambda a: a == "otlp_worker",
        "the daemon speaks to the OTLP decoding process only through hookd.otlp_wire",
    ),
    ("ops", lambda a: a == "daemon", "operator commands never import the daemon"),
    (
        "dashboard",
        lambda a: a in ("daemon", "writer"),
        "the dashboard reads the store itself, never through the daemon or the writer",
    ),
    ("shared", lambda a: a != "shared", "a shared module imports only shared modules"),
]
#: Processes that run no event loop: nothing their modules reach imports one; for the dashboard,
#: its own modules import none (what it reaches of hookd.ops is checked by ops's own rules).
NO_LOOP_REACHED = {"writer": "the writer", "forwarder": "the forwarder", "otlp_worker": "the OTLP decoder"}
NO_LOOP_DIRECT = {"dashboard": "the dashboard"}


def violations(package: Path) -> list[str]:
    graph = imports_of(package)
    own = set(graph)
    internal = {m: {i for i in deps if i in own} for m, deps in graph.items()}
    bad: list[str] = []

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(internal.get(m, ()))
        return seen

    for mod in sorted(own):
        where = area(mod)
        if where == "writer":
            bad += [f"{mod} reaches {m}: the writer must not import the daemon" for m in sorted(reach(mod))
                    if area(m) == "daemon"]  # fmt: skip
        for rule_area, breaks, why in DIRECT_RULES:
            if rule_area == where:
                bad += [f"{mod} imports {d}: {why}" for d in sorted(internal[mod]) if breaks(area(d))]
        if where in NO_LOOP_REACHED:
            for m in sorted(reach(mod)):
                for ext in sorted(e for e in graph[m] if top(e) in EVENT_LOOP):
                    bad.append(f"{mod} reaches {m}, which imports {ext}: {NO_LOOP_REACHED[where]} runs no event loop")
        if where in NO_LOOP_DIRECT:
            bad += [f"{mod} imports {e}: {NO_LOOP_DIRECT[where]} runs no event loop" for e in sorted(graph[mod])
                    if top(e) in EVENT_LOOP]  # fmt: skip
    return bad


def test_the_import_rules_hold() -> None:
    assert violations(PACKAGE) == []


def test_the_rules_catch_a_broken_layout(tmp_path: Path) -> None:
    """The checker is not vacuous: each rule, broken on purpose in a copy, is reported."""
    pkg = tmp_path / "hookd"
    for sub in ("", "daemon", "writer", "ops", "forwarder", "dashboard", "otlp_worker"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "wire.py").write_text("import struct\n")
    (pkg / "framing.py").write_text("def f():\n    import asyncio\n")  # shared, reached by the writer
    (pkg / "writer" / "writer.py").write_text("from hookd import wire, framing\n")
    (pkg / "writer" / "importer.py").write_text("from hookd.daemon.app import serve\n")
    (pkg / "daemon" / "app.py").write_text(
        "from hookd.writer import schema\nfrom hookd import wire\nfrom hookd.otlp_worker import worker\n"
    )
    (pkg / "otlp_worker" / "worker.py").write_text(
        "import asyncio\nfrom hookd.daemon import app\nfrom hookd import wire\n"
    )
    (pkg / "writer" / "schema.py").write_text("import sqlite3\n")
    (pkg / "ops" / "status.py").write_text("from ..daemon import app\n")
    (pkg / "paths.py").write_text("from hookd.ops import status\n")
    (pkg / "forwarder" / "forwarder.py").write_text("from hookd.writer import schema\nfrom hookd import wire\n")
    (pkg / "forwarder" / "pg.py").write_text("import asyncio\n")
    (pkg / "dashboard" / "server.py").write_text(
        "import asyncio\nfrom hookd.daemon import app\nfrom hookd.ops import status\n"
    )
    found = "\n".join(violations(pkg))
    assert "hookd.writer.writer reaches hookd.framing, which imports asyncio" in found
    assert "hookd.writer.importer reaches hookd.daemon.app: the writer must not import the daemon" in found
    assert "hookd.daemon.app imports hookd.writer.schema" in found
    assert "hookd.ops.status imports hookd.daemon.app" in found
    assert "hookd.paths imports hookd.ops.status" in found
    assert "hookd.daemon.app imports hookd.wire" not in found
    assert "hookd.daemon.app imports hookd.otlp_worker.worker: the daemon speaks to the OTLP decoding" in found
    assert "hookd.otlp_worker.worker imports hookd.daemon.app: the OTLP decoding process imports only" in found
    assert "which imports asyncio: the OTLP decoder runs no event loop" in found
    assert "hookd.otlp_worker.worker imports hookd.wire" not in found
    assert "hookd.forwarder.forwarder imports hookd.writer.schema: the forwarder imports only shared" in found
    assert "hookd.forwarder.pg reaches hookd.forwarder.pg, which imports asyncio: the forwarder runs no" in found
    assert "hookd.forwarder.forwarder imports hookd.wire" not in found
    assert "hookd.dashboard.server imports hookd.daemon.app: the dashboard reads the store itself" in found
    assert "hookd.dashboard.server imports asyncio: the dashboard runs no event loop" in found
    assert "hookd.dashboard.server imports hookd.ops.status" not in found


def test_the_writer_process_loads_no_event_loop() -> None:
    """What the rules promise, seen in a real interpreter: the writer's modules pull in none
    of the event loop's stack (imported, not just named)."""
    code = (
        "import sys, runpy\n"
        "import hookd.writer.writer, hookd.writer.importer, hookd.writer.rebuild, hookd.writer.vacuum\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncio', 'uvloop', 'aiosqlite')"
        " or m.startswith('hookd.daemon')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_forwarder_process_loads_no_event_loop() -> None:
    """The forwarder's modules, imported in a real interpreter, pull in nothing of the daemon or
    the writer, nor uvloop or aiosqlite. (psycopg itself imports asyncio for its async API,
    which the forwarder does not use: no loop runs there.)"""
    code = (
        "import sys\n"
        "import hookd.forwarder.forwarder, hookd.forwarder.pg, hookd.forwarder.source\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('uvloop', 'aiosqlite')"
        " or m.startswith(('hookd.daemon', 'hookd.writer'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_otlp_decoding_process_loads_no_event_loop() -> None:
    """The OTLP decoder's modules, imported in a real interpreter, pull in nothing of the daemon
    or the writer, nor any event loop."""
    code = (
        "import sys\n"
        "import hookd.otlp_worker.worker\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncio', 'uvloop', 'aiosqlite')"
        " or m.startswith(('hookd.daemon', 'hookd.writer'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_architecture_doc_lists_every_module() -> None:
    """docs/architecture.md's module map cannot drift from the package."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py" or rel == "__main__.py":
            continue
        if f"| `{rel}` |" not in doc:
            missing.append(rel)
    assert missing == [], f"not in the module map of docs/architecture.md: {missing}"
