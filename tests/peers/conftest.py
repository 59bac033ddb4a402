"""Collect the peers' WSGI-adapter tests from their released sdists and point them at bridge.

``suites.py`` stands for the peer suites in this directory: when pytest reaches it,
each suite's test file is fetched (``fetch.py``), imported under a name of its own
(the peers' ``tests`` packages would collide with ours), its adapter names replaced
by bridge's (``adapters.py``), and collected like any test module. Its async tests
run under anyio's pytest plugin on asyncio (the peers use pytest-asyncio's
``asyncio`` mark for the same thing). A case listed in ``Suite.differences`` is
skipped with its reason; a listed case that no longer exists fails the collection,
so the list cannot go stale.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from .fetch import fetch
from .suites import SUITES, Suite


def pytest_configure(config: pytest.Config) -> None:
    for mark in ("asyncio", "trio"):
        config.addinivalue_line("markers", f"{mark}: a peer suite's async test (run under anyio)")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> PeerSuites | None:
    if file_path.name != "suites.py" or file_path.parent != Path(__file__).parent:
        return None
    return PeerSuites.from_parent(parent, path=file_path)


class PeerSuites(pytest.File):
    """``suites.py``: its children are the peers' test modules."""

    def collect(self) -> list[pytest.Module]:
        return [PeerModule.for_suite(self, suite) for suite in SUITES]


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: bridge refuses trio at startup (docs/compatibility.md)."""
    return "asyncio"


@pytest.fixture
def test_client_factory() -> Any:
    """starlette's fixture of that name (its conftest is not loaded): a TestClient maker."""

    def factory(app: Any, **kwargs: Any) -> TestClient:
        return TestClient(app, backend="asyncio", **kwargs)

    return factory


# A module a peer's test file imports that is no concern of bridge's: starlette's
# typing helper, from its own tests package (whose name ours shadows).
def _shims() -> dict[str, types.ModuleType]:
    starlette_types = types.ModuleType("tests.types")
    # Only an annotation there; not a class, so pytest does not take it for a test class.
    starlette_types.TestClientFactory = Callable[..., TestClient]  # type: ignore[attr-defined]
    return {"tests.types": starlette_types}


@contextlib.contextmanager
def _shimmed() -> Iterator[None]:
    added = [name for name in _shims() if name not in sys.modules]
    sys.modules.update({name: module for name, module in _shims().items() if name in added})
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


class PeerModule(pytest.Module):
    suite: Suite

    @classmethod
    def for_suite(cls, parent: pytest.Collector, suite: Suite) -> PeerModule:
        path = fetch(suite.name, suite.version) / suite.path
        module = cls.from_parent(parent, path=path)
        module.suite = suite
        return module

    def _getobj(self) -> types.ModuleType:
        suite = self.suite
        name = f"peer_{suite.name}_{Path(suite.path).stem}"
        spec = importlib.util.spec_from_file_location(name, self.path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        with _shimmed(), warnings.catch_warnings():
            # The peer's own adapter may warn on import (starlette's is deprecated);
            # it is replaced below and never runs.
            warnings.simplefilter("ignore")
            spec.loader.exec_module(module)
        for attribute, replacement in suite.replace.items():
            if not hasattr(module, attribute):
                raise RuntimeError(
                    f"{suite.name} {suite.version}'s {suite.path} has no {attribute!r} to "
                    "replace with bridge; update tests/peers/suites.py for this release."
                )
            setattr(module, attribute, replacement)
        for value in vars(module).values():
            marks = getattr(value, "pytestmark", [])
            if any(mark.name in ("asyncio", "trio") for mark in marks):
                pytest.mark.anyio(value)
        return module

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        items = list(super().collect())
        differences = dict(self.suite.differences)
        for item in items:
            reason = differences.pop(item.name, None)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=f"deliberate difference: {reason}"))
        if differences:
            raise RuntimeError(
                f"tests/peers/suites.py lists {sorted(differences)} for {self.suite.name} "
                f"{self.suite.version}, which has no such tests; remove them from the list."
            )
        return items
