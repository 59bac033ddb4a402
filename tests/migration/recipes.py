"""The code blocks of docs/recipes/, put together as the reader would paste them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def recipe_source(name: str) -> str:
    """Every Python block of ``docs/recipes/<name>``, in order, as one module's source."""
    path = RECIPES / name
    blocks = CODE_BLOCK.findall(path.read_text(encoding="utf-8"))
    assert blocks, f"{path} has no python code block."
    return "\n\n".join(blocks)


def load_recipe(name: str, module_name: str | None = None) -> dict[str, Any]:
    """Run the recipe's blocks as one module and return its names."""
    path = RECIPES / name
    namespace: dict[str, Any] = {"__name__": module_name or f"recipe_{path.stem.replace('-', '_')}"}
    exec(compile(recipe_source(name), str(path), "exec"), namespace)
    return namespace
