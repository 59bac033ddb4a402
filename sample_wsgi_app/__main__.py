"""Command line for the sample application.

``python -m sample_wsgi_app init-db`` creates the schema, the seed data and the
session key file (a random key, made once);
``python -m sample_wsgi_app serve`` runs it on werkzeug's threaded development
server, the way it ran before bridge.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m sample_wsgi_app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser(
        "init-db", help="create the schema, seed data and session key, then exit"
    )
    init.add_argument("--data-dir", help="default: $SAMPLE_DATA_DIR, else ./var")
    serve = commands.add_parser("serve", help="serve on werkzeug's development server")
    serve.add_argument("--data-dir", help="default: $SAMPLE_DATA_DIR, else ./var")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.data_dir is not None:
        # Set before the package import below builds its module-level app.
        os.environ["SAMPLE_DATA_DIR"] = args.data_dir
    from sample_wsgi_app import create_app, init_db

    if args.command == "init-db":
        database = init_db()
        print(f"Database ready at {database}; session key in {database.parent / 'secret_key'}")
        return 0
    from werkzeug.serving import run_simple

    run_simple(args.host, args.port, create_app(), threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
