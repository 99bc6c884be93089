"""No function much over 60 lines: long ones hide their steps. Lines inside string literals (SQL
text, help tables) do not count; argument and key tables belong in data, not in functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = [ROOT / "daemon" / "hookd", ROOT / "clients" / "python"]
LIMIT = 60


def code_lines(node: ast.AST) -> int:
    """Lines of ``node`` that are not inside a multi-line string constant."""
    lines = set(range(node.lineno, node.end_lineno + 1))  # type: ignore[attr-defined]
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.end_lineno > sub.lineno:  # type: ignore[operator]
            lines -= set(range(sub.lineno, sub.end_lineno + 1))  # type: ignore[arg-type]
    return len(lines)


def long_functions(trees: list[Path], limit: int = LIMIT) -> dict[str, int]:
    out: dict[str, int] = {}
    for tree in trees:
        for path in sorted(tree.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = code_lines(node)
                    if n > limit:
                        out[f"{path.relative_to(tree.parent)}:{node.name}"] = n
    return out


def test_no_function_over_the_limit() -> None:
    assert long_functions(TREES) == {}


def test_the_count_skips_string_literals_only(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT + 1))
    sql = '    q = """\n' + "\n".join("    SELECT 1" for _ in range(100)) + '\n    """'
    (tmp_path / "m.py").write_text(f"def long():\n{body}\n\n\ndef sql():\n{sql}\n")
    assert long_functions([tmp_path]) == {f"{tmp_path.name}/m.py:long": LIMIT + 2}  # def line + body
