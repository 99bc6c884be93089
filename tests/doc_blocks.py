"""Fenced code blocks of the Markdown docs, with the doc-test directives written before them.

The convention (docs/architecture.md, "Examples in the docs are tests"): a block's language says
how tests/test_docs.py runs it; an HTML comment on the line before the fence,
``<!-- doc-test: ... -->``, adjusts that (``skip: REASON``, ``setup: COMMANDS``,
``daemon-stopped``); ``<!-- doc-test: no-daemon -->`` anywhere in a file means its blocks start
their own daemon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(.*?)\s*-->", re.S)
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)[^\n]*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    directives: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def directive(self, name: str) -> str | None:
        """The value of ``name: VALUE`` (or "" for a bare ``name``), None when absent."""
        for d in self.directives:
            key, _, value = d.partition(":")
            if key.strip() == name:
                return value.strip()
        return None


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        # Directives: an HTML comment ending on the line above the fence (a blank line between is fine).
        directives, end = [], start - 1
        if end >= 0 and not lines[end].strip():
            end -= 1
        j = end
        while j >= 0 and lines[j].rstrip().endswith("-->"):  # one or more comments, stacked
            while j > 0 and "<!--" not in lines[j]:
                j -= 1
            j -= 1
        if j < end:
            directives = DIRECTIVE.findall("\n".join(lines[j + 1 : end + 1]))
        out.append(Block(path.resolve(), start + 1, lang, "\n".join(body) + "\n", directives))
        i += 1
    return out


def file_directives(path: Path) -> list[str]:
    return DIRECTIVE.findall(path.read_text(encoding="utf-8"))
