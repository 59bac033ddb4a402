"""The migrated sample app as ``scripts/serve`` runs it, with the sample's own request log
(``sample_wsgi_app`` at INFO) written to stderr beside the server's access log."""

from __future__ import annotations

import logging
import sys

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="sample: %(message)s")

from sample_wsgi_app.modern import application  # noqa: E402  (logging first)

__all__ = ["application"]
