"""Every ``Bridge`` option is checked when the Bridge is built, with a sentence that says why."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bridge import Bridge, Request


def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return []


@pytest.mark.parametrize(
    ("options", "error", "quoted"),
    [
        ({"max_header_count": None}, TypeError, "max_header_count=None"),
        ({"max_header_count": 0}, ValueError, "max_header_count=0"),
        ({"max_header_count": "100"}, TypeError, "max_header_count='100'"),
        ({"max_threads": 0}, ValueError, "max_threads=0"),
        ({"max_threads": 2.5}, TypeError, "max_threads=2.5"),
        ({"max_threads": True}, TypeError, "max_threads=True"),
        ({"max_pending": -1}, ValueError, "max_pending=-1"),
        ({"max_body_size": -1}, ValueError, "max_body_size=-1"),
        ({"max_body_size": "1G"}, TypeError, "max_body_size='1G'"),
        ({"request_buffer_size": -5}, ValueError, "request_buffer_size=-5"),
        ({"response_buffer_size": -5}, ValueError, "response_buffer_size=-5"),
        ({"response_buffer_size": None}, TypeError, "response_buffer_size=None"),
        ({"retry_after": "soon"}, TypeError, "retry_after='soon'"),
        ({"retry_after": -1}, ValueError, "retry_after=-1"),
        ({"on_startup": print}, TypeError, "on_startup=<built-in function print>"),
        ({"on_startup": "open_pool"}, TypeError, "on_startup='open_pool'"),
        ({"on_shutdown": [1]}, TypeError, "1 is not a function"),
        ({"on_startup": (h for h in [print])}, TypeError, "on_startup=<generator"),
        ({"request_class": dict}, TypeError, "request_class=<class 'dict'>"),
        ({"request_class": "Request"}, TypeError, "request_class='Request'"),
        ({"metrics": "yes"}, TypeError, "metrics='yes'"),
        ({"metrics_path": 5}, TypeError, "metrics_path=5"),
        ({"dashboard_path": b"/_bridge/"}, TypeError, "dashboard_path=b'/_bridge/'"),
        ({"dashboard_token": 1234}, TypeError, "dashboard_token=1234"),
        ({"metrics_token": b"t"}, TypeError, "metrics_token=b't'"),
        ({"allowed_hosts": "example.com"}, TypeError, "allowed_hosts='example.com'"),
        ({"allowed_hosts": [5]}, TypeError, "allowed_hosts=[5]"),
        ({"trusted_proxies": None}, TypeError, "trusted_proxies=None"),
        ({"trusted_proxies": {"10.0.0.2": 1}}, TypeError, "trusted_proxies={'10.0.0.2': 1}"),
        ({"body_deadline": 0}, ValueError, "body_deadline=0"),
        ({"body_deadline": "5m"}, TypeError, "body_deadline='5m'"),
        ({"max_uploads": 0}, ValueError, "max_uploads=0"),
        ({"max_upload_memory": -1}, ValueError, "max_upload_memory=-1"),
        ({"max_shadows": "4"}, TypeError, "max_shadows='4'"),
        ({"max_shadows": -1}, ValueError, "max_shadows=-1"),
    ],
)
def test_a_bad_option_is_refused_with_a_sentence(
    options: dict[str, Any], error: type[Exception], quoted: str
) -> None:
    with pytest.raises(error) as raised:
        Bridge(legacy, **options)
    message = str(raised.value)
    assert quoted in message
    assert message.endswith(".")
    assert re.search(r"must be|is not", message)  # says what it should be


def test_good_options_are_accepted() -> None:
    class MyRequest(Request):
        pass

    app = Bridge(
        legacy,
        max_threads=4,
        max_pending=0,
        max_body_size=None,
        max_header_count=300,
        request_buffer_size=0,
        response_buffer_size=0,
        retry_after=0,
        on_startup=(lambda: None,),
        on_shutdown=[lambda state: None],
        request_class=MyRequest,
        metrics=False,
    )
    assert app.limits.max_header_count == 300
