"""docs/recipes/: the Flask and Django session recipes, run as written, beside legacy apps
served by bridge, must see the legacy login from async code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest
from flask import Flask, session

from bridge import Bridge, Request
from tests.migration.conftest import client
from tests.migration.recipes import load_recipe
from tests.servers import ROOT


def make_flask_app(secret: str) -> Flask:
    app = Flask("legacy")
    app.secret_key = secret

    @app.post("/login")
    def login() -> str:
        session["user"] = "ada"
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        return "bye"

    return app


def test_flask_session_recipe() -> None:
    flask_session = load_recipe("flask-session.md")["flask_session"]
    flask_app = make_flask_app("flask-secret")
    served = Bridge(validator(flask_app))

    @served.route("/api/me", methods=["GET"])
    async def me(request: Request) -> dict[str, Any]:
        return {"user": flask_session(flask_app, request).get("user")}

    async def main() -> None:
        try:
            async with client(served) as http:
                assert (await http.get("/api/me")).json() == {"user": None}
                assert (await http.post("/login")).text == "ok"  # the legacy Flask view
                assert (await http.get("/api/me")).json() == {"user": "ada"}
                await http.post("/logout")
                assert (await http.get("/api/me")).json() == {"user": None}
            # A cookie signed by another Flask app (another key) is not believed.
            other = Bridge(validator(make_flask_app("another-secret")))
            try:
                async with client(other) as elsewhere:
                    await elsewhere.post("/login")
                    forged = elsewhere.cookies["session"]
            finally:
                other.pool.shutdown()
            async with client(served) as http:
                cookie = {"Cookie": f"session={forged}"}
                assert (await http.get("/api/me", headers=cookie)).json() == {"user": None}
        finally:
            served.pool.shutdown()

    asyncio.run(main())


def test_flask_session_recipe_refuses_other_session_stores() -> None:
    flask_session = load_recipe("flask-session.md")["flask_session"]
    flask_app = make_flask_app("flask-secret")
    flask_app.session_interface = object()  # type: ignore[assignment]
    with pytest.raises(TypeError, match="signed-cookie sessions"):
        flask_session(flask_app, Request.from_values("/"))


@pytest.mark.parametrize("engine", ["db", "signed_cookies"])
def test_django_session_recipe(engine: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.migration.django_recipe_project", str(tmp_path), engine],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "anonymous": {"user": None},
        "wrong_password": 403,
        "login": 200,
        "logged_in": {"user": "ada"},
        "after_password_change": {"user": None},
    }
