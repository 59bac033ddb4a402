"""Which peer suites run against bridge: the pinned release, the file, the names replaced.

This file is read by ``tests/peers/conftest.py``, which collects each suite's test
file from the peer's released sdist (see ``fetch.py``) and, once the file is
imported, replaces the peer's adapter with bridge (``adapters.py``). ``DIFFERENCES``
names each case that asserts a peer's own habit rather than PEP 3333 or ASGI, with
the reason; docs/compatibility.md lists them with the sentence of the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import adapters


@dataclass(frozen=True)
class Suite:
    name: str  # the PyPI name
    version: str  # pinned: a new release is a deliberate update, with its differences
    path: str  # the test file inside the sdist
    replace: dict[str, Any]  # module-level names in that file -> bridge's adapters
    # Test name -> reason, for a case where bridge deliberately differs (listed with
    # the spec's sentence in docs/compatibility.md), or that tests the peer's own
    # internals rather than its adapter. test_equivalents.py holds bridge's own test
    # of each behaviour such a case checks.
    differences: dict[str, str] = field(default_factory=dict)


# The reasons, each shared by several suites.
SHAPE = (
    "asserts the peer's split of the body into ASGI messages; bridge sends a body the "
    "application returned whole in memory (a list) as one message, with a Content-Length"
)
RAISES = (
    "expects the app's exception to escape to the server; bridge answers the 500 itself "
    "and logs the error (PEP 3333: servers should trap and log it)"
)
EXC_INFO = (
    "expects start_response(..., exc_info) to re-raise before any header was sent; "
    "bridge replaces the headers, as PEP 3333 says it should"
)
ERRORS_AND_PROCESSES = (
    "asserts the peer's wsgi.errors (sys.stdout) and wsgi.multiprocess=True; bridge "
    "logs to the bridge.wsgi logger and says whether other processes serve the app"
)


SUITES = [
    Suite(
        "a2wsgi",
        "1.10.10",
        "tests/test_wsgi.py",
        {"WSGIMiddleware": adapters.middleware, "build_environ": adapters.environ_of},
        {
            "test_body": "tests a2wsgi's own Body class (bridge's wsgi.input: test_body.py)",
            "test_wsgi_exception": RAISES,
            "test_wsgi_exc_info": EXC_INFO,
            "test_build_environ": ERRORS_AND_PROCESSES,
            "test_build_environ_with_env": (
                "takes SCRIPT_NAME from the process environment; bridge takes it from the "
                "scope's root_path, as ASGI defines it"
            ),
        },
    ),
    Suite(
        "asgiref",
        "3.13.0",
        "tests/test_wsgi.py",
        {"WsgiToAsgi": adapters.middleware, "WsgiToAsgiInstance": adapters.AsgirefInstance},
        {
            "test_basic_wsgi": SHAPE,
            "test_wsgi_path_encoding": SHAPE,
            "test_wsgi_empty_body": SHAPE,
            "test_wsgi_clamped_body": SHAPE,
            "test_wsgi_stops_iterating_after_content_length_bytes": SHAPE,
            "test_wsgi_multiple_start_response": SHAPE,
            "test_wsgi_multi_body": SHAPE,
            "test_duplicate_header_limit": (
                "asgiref's own duplicate_header_limit option (400); bridge limits all "
                "header fields with max_header_count (431, RFC 6585)"
            ),
            "test_duplicate_header_limit_disabled": (
                "asgiref's own duplicate_header_limit=None; bridge's max_header_count "
                "is always a number"
            ),
            "test_build_environ_server_unix_socket": (
                'asserts SERVER_PORT "0" on a unix socket; bridge gives the scheme\'s '
                "default port, so PEP 3333's URL reconstruction gives a working URL"
            ),
        },
    ),
    Suite(
        "starlette",
        "1.10.0",
        "tests/middleware/test_wsgi.py",
        {"WSGIMiddleware": adapters.middleware, "build_environ": adapters.environ_of},
        {
            "test_wsgi_exception": RAISES,
            "test_wsgi_exc_info": EXC_INFO,
            "test_build_environ": ERRORS_AND_PROCESSES
            + "; it also asserts SERVER_PORT as an int, where PEP 3333 asks for a str",
            "test_build_environ_root_path[/app/-/app/users-users]": (
                'asserts PATH_INFO "users" under root_path "/app/"; bridge keeps the '
                'leading "/", so SCRIPT_NAME + PATH_INFO is still the path'
            ),
        },
    ),
    Suite(
        "uvicorn",
        "0.54.0",
        "tests/middleware/test_wsgi.py",
        {"wsgi_middleware": adapters.uvicorn_wsgi_middleware, "wsgi": adapters.UvicornWSGI},
        {"test_wsgi_exception": RAISES},
    ),
    Suite(
        "hypercorn",
        "0.18.0",
        "tests/test_app_wrappers.py",
        {"WSGIWrapper": adapters.HypercornWrapper, "_build_environ": adapters.environ_of},
        {
            "test_wsgi_trio": "runs under trio, which bridge refuses at startup",
            "test_wsgi_asyncio": SHAPE,
            "test_max_body_size": (
                "expects 400 for a body over the limit; bridge answers 413 Content Too "
                "Large (RFC 9110 15.5.14)"
            ),
            "test_no_start_response": RAISES,
            "test_build_environ_root_path": (
                "refuses a path outside root_path; bridge serves it (servers disagree on "
                "whether path includes root_path)"
            ),
        },
    ),
]
