"""The README's five-line example runs as written and prints what the README says."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx

README = Path(__file__).resolve().parents[1] / "README.md"


def test_five_line_example() -> None:
    text = README.read_text()
    section = text.split("## Five lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    console = re.search(r"```console\n(.*?)```", section, re.DOTALL)
    assert code and console
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    app = namespace["app"]
    lines = console.group(1).splitlines()
    # "$ curl localhost:8000/anything" followed by the body it prints.
    expected = {
        line.split("localhost:8000", 1)[1]: lines[index + 1]
        for index, line in enumerate(lines)
        if line.startswith("$ curl ")
    }

    async def fetch(path: str) -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get(path)).text

    for path, body in expected.items():
        assert asyncio.run(fetch(path)) == body + "\n"
    assert len(app.routes) == 1 and "1 route migrated" in console.group(1)
