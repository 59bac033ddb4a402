"""Find the application an app string names, and tell a WSGI callable from an ASGI app.

An app string is ``module:attr`` (``attr`` may be dotted), ``module:factory(args)`` with
literal arguments, or a bare ``module`` that holds ``application`` or ``app``, the names
Django and Flask projects use.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._types import ASGIApp, WSGIApp
from ..app import Bridge
from ..threads.pool import DEFAULT_MAX_THREADS

AppKind = Literal["bridge", "asgi", "wsgi"]

# Tried in this order on a bare module path: Django's wsgi.py names ``application``,
# Flask's examples name ``app``.
DEFAULT_ATTRIBUTES = ("application", "app")


class ImportFromStringError(Exception):
    """The app string is malformed or names nothing; the message says which and how to fix it."""


class AppImportError(Exception):
    """Importing the module or calling the factory raised; ``__cause__`` is the real error."""


@dataclass(frozen=True)
class Target:
    """An app string in parts: module, attribute path and, for a factory, its arguments."""

    module: str
    attribute: str | None
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    call: bool = False


def parse_app_string(text: str) -> Target:
    """Split ``text`` into a ``Target`` without importing anything."""
    module, sep, rest = text.partition(":")
    if module.endswith(".py"):
        dotted = module[: -len(".py")].strip("./").replace("/", ".")
        raise ImportFromStringError(
            f'"{text}" names a file; an app string names a module and its attribute: '
            f'try "{dotted}:{rest or "app"}".'
        )
    if not _is_dotted_name(module) or (sep and not rest) or ":" in rest.partition("(")[0]:
        raise ImportFromStringError(
            f'Import string "{text}" must be in format "<module>:<attribute>".'
        )
    if not sep:
        return Target(module, None)
    if _is_dotted_name(rest):
        return Target(module, rest)
    try:
        node = ast.parse(rest, mode="eval").body
    except SyntaxError:
        node = None
    if not isinstance(node, ast.Call) or not _is_dotted_name(ast.unparse(node.func)):
        raise ImportFromStringError(
            f'Import string "{text}" must be in format "<module>:<attribute>".'
        )
    try:
        if any(kw.arg is None for kw in node.keywords):
            raise ValueError("**kwargs is not a literal")
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        kwargs = tuple((str(kw.arg), ast.literal_eval(kw.value)) for kw in node.keywords)
    except ValueError:
        raise ImportFromStringError(
            f'The arguments in "{text}" must be Python literals '
            "(strings, numbers, True, False, None, tuples, lists, dicts)."
        ) from None
    return Target(module, ast.unparse(node.func), args, kwargs, call=True)


def import_from_string(text: str) -> object:
    """Import the object ``text`` names, calling it first when it is written as a factory call."""
    target = parse_app_string(text)
    module = _import_module(target.module)
    names = [target.attribute] if target.attribute else list(DEFAULT_ATTRIBUTES)
    for name in names:
        obj: object = module
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        break
    else:
        if target.attribute:
            raise ImportFromStringError(
                f'Attribute "{target.attribute}" not found in module "{target.module}".'
            )
        raise ImportFromStringError(
            f'Module "{target.module}" has no attribute "application" or "app"; '
            f'name the application as "{target.module}:<attribute>".'
        )
    if not target.call:
        return obj
    if not callable(obj):
        raise ImportFromStringError(
            f'Attribute "{target.attribute}" in module "{target.module}" is not callable, '
            f'so "{text}" cannot call it; remove the parentheses.'
        )
    try:
        return obj(*target.args, **dict(target.kwargs))
    except Exception as exc:
        raise AppImportError(f'Calling the factory "{text}" raised an error.') from exc


def classify(obj: object, text: str) -> AppKind:
    """Say whether ``obj`` is a ``Bridge``, another ASGI app, or a WSGI callable."""
    if isinstance(obj, Bridge):
        return "bridge"
    prefix = f'"{text}" is neither a WSGI nor an ASGI application: '
    if not callable(obj):
        raise ImportFromStringError(
            f"{prefix}it is {_a(type(obj).__name__)} object, not a callable."
        )
    is_async = inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 - the bound method tells async from sync
    )
    arity = _positional_arity(obj)
    if is_async:
        if arity is None or arity[0] <= 3 <= arity[1]:
            return "asgi"
        raise ImportFromStringError(
            f"{prefix}it is an async callable taking {_count(arity)}; "
            "an ASGI application takes (scope, receive, send)."
        )
    if arity is None or arity[0] <= 2 <= arity[1]:
        return "wsgi"
    raise ImportFromStringError(
        f"{prefix}it is a callable taking {_count(arity)}; "
        "a WSGI application takes (environ, start_response)."
    )


@dataclass(frozen=True)
class Loaded:
    """An app string resolved to the ASGI app to serve, with what it was found to be."""

    text: str
    kind: AppKind
    app: ASGIApp
    bridge: Bridge | None


def load_app(text: str, *, threads: int | None = None) -> Loaded:
    """Import ``text`` and make it servable: a WSGI callable is wrapped in ``Bridge``."""
    return wrap_app(import_from_string(text), text, threads=threads)


def wrap_app(
    obj: object,
    text: str,
    *,
    threads: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Loaded:
    """Make ``obj`` servable; ``text`` names it in messages.

    ``options`` are more ``Bridge`` keyword options, used only when ``obj`` is WSGI.
    """
    kind = classify(obj, text)
    if kind == "wsgi":
        bridge = Bridge(
            _as_wsgi(obj), max_threads=threads or DEFAULT_MAX_THREADS, **dict(options or {})
        )
        return Loaded(text, kind, bridge, bridge)
    if kind == "bridge":
        assert isinstance(obj, Bridge)
        return Loaded(text, kind, obj, obj)
    return Loaded(text, kind, _as_asgi(obj), _inner_bridge(obj))


def _inner_bridge(obj: object, depth: int = 8) -> Bridge | None:
    """The ``Bridge`` inside ASGI middleware that keeps its app as ``.app``, if any."""
    for _ in range(depth):
        obj = getattr(obj, "app", None)
        if obj is None:
            return None
        if isinstance(obj, Bridge):
            return obj
    return None


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only the named module (or a package on its path) missing is a bad app string;
        # a missing import inside the module is the module's own error.
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise ImportFromStringError(
                f'Could not import module "{name}".' + _folder_hint(name)
            ) from None
        raise AppImportError(f'Importing module "{name}" raised an error.') from exc
    except Exception as exc:
        raise AppImportError(f'Importing module "{name}" raised an error.') from exc


def _folder_hint(name: str) -> str:
    """Where ``name`` is, when it is one folder down: a Django project run from above it.

    ``django-admin startproject mysite`` makes ``mysite/manage.py`` beside the package
    ``mysite/mysite/``; ``mysite.wsgi`` imports from the outer folder only.
    """
    parts = name.split(".")
    for base in dict.fromkeys([sys.path[0] or os.curdir, os.curdir]):
        try:
            folders = sorted(entry.name for entry in os.scandir(base) if entry.is_dir())
        except OSError:
            continue
        for folder in folders[:_MOST_FOLDERS]:
            inner = os.path.join(base, folder, *parts)
            if os.path.isfile(inner + ".py") or os.path.isfile(os.path.join(inner, "__init__.py")):
                where = os.path.relpath(os.path.join(base, folder))
                django = os.path.isfile(os.path.join(base, folder, "manage.py"))
                return (
                    f" It is in the folder {where}"
                    + (" (a Django project, beside manage.py)" if django else "")
                    + f": run bridge from there, or pass --app-dir {where}"
                    " (as gunicorn's --chdir)."
                )
    return ""


# Folders looked into for a misplaced app module: a project's, not a home directory's.
_MOST_FOLDERS = 200


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _positional_arity(obj: object) -> tuple[int, float] | None:
    """The fewest and most positional arguments ``obj`` accepts, or None when unknown."""
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    low, high = 0, 0.0
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            high = float("inf")
        elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            high += 1
            if param.default is param.empty:
                low += 1
    return low, high


def _count(arity: tuple[int, float] | None) -> str:
    assert arity is not None
    low, high = arity
    n = low if high == float("inf") else int(high)
    return f"{n} positional argument" + ("" if n == 1 else "s")


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _as_wsgi(obj: object) -> WSGIApp:
    return obj  # type: ignore[return-value]


def _as_asgi(obj: object) -> ASGIApp:
    return obj  # type: ignore[return-value]
