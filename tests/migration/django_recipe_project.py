"""Drive the Django recipe, pasted into a project made by ``django-admin startproject``:
``python -m tests.migration.django_recipe_project ENGINE``, run from the project's
directory with ``DJANGO_SETTINGS_MODULE`` unset, as a server would import the file.

It prints one JSON object of what the recipe's async route answered at each step. It
runs in a subprocess because Django's settings are global to a process.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import sys
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
from asgiref.sync import sync_to_async

CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


async def log_in(http: httpx.AsyncClient, password: str = "lovelace") -> int:
    """Log in through Django's own admin login view, CSRF token and all."""
    page = await http.get("/admin/login/")
    match = CSRF_FIELD.search(page.text)
    assert match is not None, page.text[:500]
    form = {"username": "ada", "password": password, "csrfmiddlewaretoken": match.group(1)}
    response = await http.post("/admin/login/?next=/admin/", data=form)
    return response.status_code


async def log_out(http: httpx.AsyncClient) -> int:
    """Log out through Django's admin logout view (a POST, since Django 5)."""
    page = await http.get("/admin/")
    match = CSRF_FIELD.search(page.text)
    assert match is not None, page.text[:500]
    response = await http.post("/admin/logout/", data={"csrfmiddlewaretoken": match.group(1)})
    return response.status_code


async def me(application: Any, cookies: dict[str, str] | None = None) -> Any:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", cookies=cookies
    ) as http:
        return (await http.get("/api/me")).json()["user"]


async def run(application: Any, engine: str) -> dict[str, Any]:
    from django.conf import settings
    from django.contrib.auth.models import User

    seen: dict[str, Any] = {}
    name = settings.SESSION_COOKIE_NAME
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        seen["anonymous"] = (await http.get("/api/me")).json()["user"]
        seen["wrong_password"] = await log_in(http, "wrong")  # 200: the form again
        seen["login"] = await log_in(http)
        seen["logged_in"] = (await http.get("/api/me")).json()["user"]
        saved = http.cookies[name]
        seen["forged"] = await me(application, {name: saved[:-4] + "AAAA"})
        seen["logout"] = await log_out(http)
        seen["after_logout"] = (await http.get("/api/me")).json()["user"]
        seen["saved_before_logout"] = await me(application, {name: saved})

        await log_in(http)
        cookie = http.cookies[name]
        if engine == "db":
            from django.contrib.sessions.models import Session
            from django.utils import timezone

            def expire() -> None:
                Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))

            await sync_to_async(expire)()
        else:
            from django.core import signing

            later = time.time() + settings.SESSION_COOKIE_AGE + 60
            signing.time = SimpleNamespace(time=lambda: later)  # type: ignore[attr-defined]
        seen["expired"] = await me(application, {name: cookie})
        if engine != "db":
            signing.time = time  # type: ignore[attr-defined]

        http.cookies.clear()
        await log_in(http)

        def change_password() -> None:
            user = User.objects.get(username="ada")
            user.set_password("changed")
            user.save()

        await sync_to_async(change_password)()
        seen["after_password_change"] = (await http.get("/api/me")).json()["user"]
    application.pool.shutdown()
    return seen


def main() -> None:
    engine = sys.argv[1]
    recipe = importlib.import_module("myproject.asgi_bridge")  # as uvicorn would import it
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    User.objects.create_superuser("ada", password="lovelace")
    print(json.dumps(asyncio.run(run(recipe.application, engine))))


if __name__ == "__main__":
    main()
