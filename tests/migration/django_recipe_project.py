"""A one-file Django project served by bridge, with an async route that uses the Django
session recipe; run as ``python -m tests.migration.django_recipe_project DATA_DIR ENGINE``.

It prints one JSON object of what the async route answered at each step. It runs in a
subprocess because Django's settings are global to a process.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import django
import httpx
from django.conf import settings
from django.urls import path


def configure(data_dir: Path, engine: str) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="recipe-test-secret-key-long-enough-for-django-checks",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": data_dir / "db.sqlite3"}
        },
        SESSION_ENGINE=f"django.contrib.sessions.backends.{engine}",
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],  # fast tests
        USE_TZ=True,
    )
    django.setup()


def login_view(request: Any) -> Any:
    from django.contrib.auth import authenticate, login
    from django.http import HttpResponse

    user = authenticate(request, username=request.POST["username"], password=request.POST["pw"])
    if user is None:
        return HttpResponse("no", status=403)
    login(request, user)
    return HttpResponse("ok")


def change_password_view(request: Any) -> Any:
    from django.http import HttpResponse

    user = request.user
    user.set_password("changed")
    user.save()
    return HttpResponse("changed")


def exempt(view: Any) -> Any:
    from django.views.decorators.csrf import csrf_exempt

    return csrf_exempt(view)


urlpatterns: list[Any] = []


def prepare() -> None:
    from django.contrib.auth.models import User
    from django.core.management import call_command

    urlpatterns.extend(
        [path("login", exempt(login_view)), path("password", exempt(change_password_view))]
    )
    call_command("migrate", verbosity=0)
    User.objects.create_user("ada", password="lovelace")


async def run() -> dict[str, Any]:
    from django.core.wsgi import get_wsgi_application

    from bridge import Bridge
    from tests.migration.recipes import load_recipe

    recipe = load_recipe("django-session.md")
    application = Bridge(validator(get_wsgi_application()))

    @application.route("/api/me", methods=["GET"])
    async def me(request: Any) -> dict[str, Any]:
        user = await recipe["django_user"](request)
        return {"user": user.get_username() if user.is_authenticated else None}

    seen: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=application)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            seen["anonymous"] = (await http.get("/api/me")).json()
            wrong = await http.post("/login", data={"username": "ada", "pw": "wrong"})
            seen["wrong_password"] = wrong.status_code
            login = await http.post("/login", data={"username": "ada", "pw": "lovelace"})
            seen["login"] = login.status_code
            seen["logged_in"] = (await http.get("/api/me")).json()
            await http.post("/password")  # invalidates the session hash
            seen["after_password_change"] = (await http.get("/api/me")).json()
    finally:
        application.pool.shutdown()
    return seen


def main() -> None:
    data_dir, engine = Path(sys.argv[1]), sys.argv[2]
    configure(data_dir, engine)
    prepare()
    print(json.dumps(asyncio.run(run())))


if __name__ == "__main__":
    main()
