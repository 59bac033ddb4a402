"""The code blocks of docs/recipes/, loaded as the reader would paste them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def load_recipe(name: str) -> dict[str, Any]:
    """Run the first Python block of ``docs/recipes/<name>`` and return its names."""
    path = RECIPES / name
    match = CODE_BLOCK.search(path.read_text(encoding="utf-8"))
    assert match is not None, f"{path} has no python code block."
    namespace: dict[str, Any] = {"__name__": f"recipe_{path.stem.replace('-', '_')}"}
    exec(compile(match.group(1), str(path), "exec"), namespace)
    return namespace
