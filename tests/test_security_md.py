"""SECURITY.md: every claim names the test that holds it, and every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECURITY = ROOT / "SECURITY.md"
# `tests/x.py::test_name`, `tests/x.py (every test)`, or `::test_name` (the file named
# in the section's opening paragraph).
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?::(test_\w+)`|`(tests/[\w/]+\.py)` \(every test\)")
SECTIONS_WITH_CLAIMS = (
    "## What bridge guarantees",
    "## bridge's own pages",
    "## The sample application",
)


def text() -> str:
    # Comments hold notes still to be reconciled; they claim nothing.
    return re.sub(r"<!--.*?-->", "", SECURITY.read_text(encoding="utf-8"), flags=re.DOTALL)


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    }


def sections() -> dict[str, str]:
    parts = re.split(r"(?m)^(## .*)$", text())
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_every_named_test_exists() -> None:
    named = 0
    for heading, body in sections().items():
        default = re.search(r"`(tests/[\w/]+\.py)` unless named otherwise", body)
        for match in REFERENCE.finditer(body):
            file, name, whole = match.groups()
            path = ROOT / (whole or file or (default.group(1) if default else ""))
            assert path.is_file(), f"{heading}: {match.group(0)} names no file"
            if name is not None:
                assert name in defined_tests(path), f"{heading}: {match.group(0)} is no test"
            named += 1
    assert named > 40


def test_every_claim_names_a_test() -> None:
    for heading, body in sections().items():
        if not heading.startswith(SECTIONS_WITH_CLAIMS):
            continue
        bullets = re.findall(r"(?ms)^- (.*?)(?=^- |^\S|\Z)", body)
        assert bullets, heading
        for bullet in bullets:
            assert REFERENCE.search(bullet), f"{heading}: this claim names no test:\n{bullet}"
