"""App strings: parsing, importing, and telling WSGI from ASGI, with every error sentence."""

from __future__ import annotations

import pytest

from bridge import Bridge
from bridge.serve.importer import (
    AppImportError,
    ImportFromStringError,
    Target,
    classify,
    import_from_string,
    load_app,
    parse_app_string,
)
from tests.apps import cli_apps

APPS = "tests.apps.cli_apps"


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("pkg.mod:app", Target("pkg.mod", "app")),
        ("pkg.mod:obj.app", Target("pkg.mod", "obj.app")),
        ("pkg.mod", Target("pkg.mod", None)),
        ("m:create()", Target("m", "create", call=True)),
        (
            "m:f.create(1, 'a', [True, None], key={'x': 2.5})",
            Target("m", "f.create", (1, "a", [True, None]), (("key", {"x": 2.5}),), call=True),
        ),
    ],
)
def test_parse_app_string(text: str, target: Target) -> None:
    assert parse_app_string(text) == target


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [("legacy.py", "legacy:app"), ("src/legacy.py:application", "src.legacy:application")],
)
def test_a_file_name_gets_the_app_string_suggested(text: str, suggestion: str) -> None:
    with pytest.raises(ImportFromStringError) as info:
        parse_app_string(text)
    assert str(info.value) == (
        f'"{text}" names a file; an app string names a module and its attribute: '
        f'try "{suggestion}".'
    )


@pytest.mark.parametrize("text", ["", "x:", ":y", "a:b:c", "a b:c", "a:b c", "a/b:app", "m:1()"])
def test_malformed_app_string(text: str) -> None:
    with pytest.raises(ImportFromStringError) as info:
        parse_app_string(text)
    assert str(info.value) == f'Import string "{text}" must be in format "<module>:<attribute>".'


@pytest.mark.parametrize("text", ["m:f(x)", "m:f(key=os.environ)", "m:f(**opts)", "m:f(1 + y)"])
def test_factory_arguments_must_be_literals(text: str) -> None:
    with pytest.raises(ImportFromStringError) as info:
        parse_app_string(text)
    assert str(info.value) == (
        f'The arguments in "{text}" must be Python literals '
        "(strings, numbers, True, False, None, tuples, lists, dicts)."
    )


def test_factory_arguments_are_never_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImportFromStringError):
        parse_app_string("m:f(__import__('os').system('false'))")


def test_module_attribute() -> None:
    assert import_from_string(f"{APPS}:pid_app") is cli_apps.pid_app


def test_dotted_attribute() -> None:
    assert import_from_string(f"{APPS}:AsgiObject.__call__") is cli_apps.AsgiObject.__call__


def test_bare_module_finds_application_before_app() -> None:
    assert import_from_string(APPS) is cli_apps.application


def test_factory_is_called_with_its_arguments() -> None:
    app = import_from_string(f'{APPS}:create_app(4, name="where")')
    assert isinstance(app, Bridge)
    assert app.max_threads == 4
    assert app.wsgi_app is cli_apps.where_app


def test_missing_module() -> None:
    with pytest.raises(ImportFromStringError) as info:
        import_from_string("bridge_no_such_module:app")
    assert str(info.value) == 'Could not import module "bridge_no_such_module".'


def test_missing_submodule() -> None:
    with pytest.raises(ImportFromStringError) as info:
        import_from_string("tests.apps.no_such_module:app")
    assert str(info.value) == 'Could not import module "tests.apps.no_such_module".'


def test_import_error_inside_the_module_is_the_real_error() -> None:
    with pytest.raises(AppImportError) as info:
        import_from_string("tests.apps.cli_broken:app")
    assert str(info.value) == 'Importing module "tests.apps.cli_broken" raised an error.'
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert info.value.__cause__.name == "bridge_missing_dependency_xyz"


def test_missing_attribute() -> None:
    with pytest.raises(ImportFromStringError) as info:
        import_from_string(f"{APPS}:nothing.here")
    assert str(info.value) == f'Attribute "nothing.here" not found in module "{APPS}".'


def test_bare_module_without_application_or_app() -> None:
    with pytest.raises(ImportFromStringError) as info:
        import_from_string("tests.apps.cli_noapp")
    assert str(info.value) == (
        'Module "tests.apps.cli_noapp" has no attribute "application" or "app"; '
        'name the application as "tests.apps.cli_noapp:<attribute>".'
    )


def test_factory_that_is_not_callable() -> None:
    with pytest.raises(ImportFromStringError) as info:
        import_from_string(f"{APPS}:not_an_app()")
    assert str(info.value) == (
        f'Attribute "not_an_app" in module "{APPS}" is not callable, '
        f'so "{APPS}:not_an_app()" cannot call it; remove the parentheses.'
    )


def test_factory_that_raises() -> None:
    with pytest.raises(AppImportError) as info:
        import_from_string(f"{APPS}:broken_factory()")
    assert str(info.value) == f'Calling the factory "{APPS}:broken_factory()" raised an error.'
    assert str(info.value.__cause__) == "the factory is broken"


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        (cli_apps.bridged, "bridge"),
        (cli_apps.asgi_app, "asgi"),
        (cli_apps.asgi_object, "asgi"),
        (cli_apps.pid_app, "wsgi"),
        (cli_apps._pid, "wsgi"),
        (print, "wsgi"),  # a builtin's signature may be unknown; WSGI is the fallback
    ],
)
def test_classify(obj: object, kind: str) -> None:
    assert classify(obj, "m:a") == kind


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (42, "it is an int object, not a callable."),
        (None, "it is a NoneType object, not a callable."),
        (
            cli_apps.one_argument,
            "it is a callable taking 1 positional argument; "
            "a WSGI application takes (environ, start_response).",
        ),
        (
            cli_apps.async_two,
            "it is an async callable taking 2 positional arguments; "
            "an ASGI application takes (scope, receive, send).",
        ),
    ],
)
def test_neither_wsgi_nor_asgi(obj: object, reason: str) -> None:
    with pytest.raises(ImportFromStringError) as info:
        classify(obj, "m:a")
    assert str(info.value) == f'"m:a" is neither a WSGI nor an ASGI application: {reason}'


def test_load_wsgi_wraps_in_bridge_with_threads() -> None:
    loaded = load_app(f"{APPS}:pid_app", threads=8)
    assert loaded.kind == "wsgi"
    assert isinstance(loaded.app, Bridge)
    assert loaded.bridge is loaded.app
    assert loaded.app.wsgi_app is cli_apps.pid_app
    assert loaded.app.max_threads == 8


def test_load_wsgi_default_threads() -> None:
    assert load_app(f"{APPS}:pid_app").app.max_threads == 32  # type: ignore[attr-defined]


def test_load_bridge_is_served_as_is() -> None:
    loaded = load_app(f"{APPS}:bridged", threads=8)
    assert loaded.kind == "bridge"
    assert loaded.app is cli_apps.bridged
    assert cli_apps.bridged.max_threads == 4


def test_load_asgi_is_served_as_is() -> None:
    loaded = load_app(f"{APPS}:asgi_object")
    assert (loaded.kind, loaded.app, loaded.bridge) == ("asgi", cli_apps.asgi_object, None)


def test_a_bridge_inside_asgi_middleware_is_found() -> None:
    from bridge import Bridge
    from bridge.serve.importer import wrap_app

    bridge = Bridge(lambda environ, start_response: [])

    class Middleware:
        def __init__(self, app: object) -> None:
            self.app = app

        async def __call__(self, scope: object, receive: object, send: object) -> None:
            return None

    loaded = wrap_app(Middleware(Middleware(bridge)), "m:app")
    assert loaded.kind == "asgi" and loaded.bridge is bridge
