"""docs/reliability.md names the test behind each row: every name it gives must be a test that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
# `test_file.py::test_name`, `::test_name` (same file as the reference before), a trailing … for a prefix
REFERENCE = re.compile(r"`(?:(?P<file>[\w/]+\.py))?::(?P<name>test_\w+)(?P<prefix>…)?`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_test_the_reliability_matrix_names_exists() -> None:
    current: Path | None = None
    checked = 0
    for match in REFERENCE.finditer(DOC.read_text()):
        if match["file"]:
            given = Path(match["file"])
            current = ROOT / given if given.parts[0] == "tests" else ROOT / "tests" / "faults" / given
        assert current is not None and current.is_file(), match.group()
        names = _tests_in(current)
        wanted = match["name"]
        found = any(name.startswith(wanted) for name in names) if match["prefix"] else wanted in names
        assert found, f"{match.group()} names no test in {current.relative_to(ROOT)}"
        checked += 1
    assert checked >= 15
