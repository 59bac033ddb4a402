"""The exceptions bridge raises into application code.

    Exception
    └── ResponseError ........ the application broke the WSGI response contract
    OSError
    └── BodyError ............ the request body cannot be read in full
        ├── ClientDisconnected  the client went away before the body (or response) was done
        ├── BodyTooLarge ...... the body is larger than ``max_body_size``
        └── BodyTimeout ....... the body stalled for longer than ``body_timeout``

All are ``OSError`` subclasses because WSGI applications already treat a failing
``wsgi.input`` read as an I/O error; none ever looks like a short, complete body.
"""

from __future__ import annotations


class BodyError(OSError):
    """The request body could not be read in full."""


class ClientDisconnected(BodyError):
    """The client closed the connection before the exchange was complete."""


class BodyTooLarge(BodyError):
    """The request body is larger than the configured ``max_body_size``."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is larger than max_body_size ({limit} bytes); "
            "raise max_body_size if such bodies are expected."
        )
        self.limit = limit


class BodyTimeout(BodyError):
    """The client sent no body bytes for longer than the configured ``body_timeout``."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            f"The request body stalled for more than body_timeout ({timeout:g} s); "
            "raise body_timeout if clients on slow links must be able to upload."
        )
        self.timeout = timeout


class ResponseError(Exception):
    """The application broke the WSGI response contract (status, headers or body)."""
