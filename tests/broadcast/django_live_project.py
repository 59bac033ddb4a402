"""A one-file Django project served by bridge that publishes new rows with the
docs/recipes/django-live.md recipe; run as ``python -m tests.broadcast.django_live_project
DATA_DIR REDIS_URL``. It prints one JSON object: what a subscriber heard at each step.
It runs in a subprocess because Django's settings are global to a process.
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


def configure(data_dir: Path) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="live-recipe-test-secret-key-long-enough-for-django-checks",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
        MIDDLEWARE=[],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": data_dir / "db.sqlite3"}
        },
        USE_TZ=True,
    )
    django.setup()


def create_view(request: Any) -> Any:
    """The legacy view: create a group in a transaction, or roll it back if asked."""
    from django.contrib.auth.models import Group
    from django.db import transaction
    from django.http import HttpResponse

    with transaction.atomic():
        group = Group.objects.create(name=request.POST["name"])
        if request.POST.get("rollback"):
            transaction.set_rollback(True)
            return HttpResponse("rolled back", status=409)
    return HttpResponse(str(group.pk), status=201)


urlpatterns: list[Any] = []


def prepare() -> None:
    from django.core.management import call_command
    from django.db import connection
    from django.views.decorators.csrf import csrf_exempt

    urlpatterns.append(path("groups", csrf_exempt(create_view)))
    call_command("migrate", verbosity=0)
    connection.close()


async def run(redis_url: str) -> dict[str, Any]:
    from django.contrib.auth.models import Group
    from django.core.wsgi import get_wsgi_application

    from bridge import Bridge
    from tests.migration.recipes import load_recipe

    recipe = load_recipe("django-live.md")
    application = Bridge(validator(get_wsgi_application()), broadcast=redis_url)
    recipe["publish_new_rows"](Group, application.broadcast, "groups")

    heard: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=application)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
            application.broadcast.subscribe("groups") as events,
        ):
            created = await http.post("/groups", data={"name": "ada"})
            heard["created"] = created.status_code
            heard["first"] = (await asyncio.wait_for(events.get(), 10)).data
            rolled = await http.post("/groups", data={"name": "bob", "rollback": "1"})
            heard["rolled_back"] = rolled.status_code
            again = await http.post("/groups", data={"name": "cy"})
            heard["again"] = again.status_code
            # The next event is cy's: bob's save was never published.
            heard["second"] = (await asyncio.wait_for(events.get(), 10)).data
            await asyncio.sleep(0.2)
            heard["more"] = not events.empty()
            heard["rows"] = sorted(await asyncio.to_thread(_names))
    finally:
        await application.broadcast.stop()
        application.pool.shutdown()
    return heard


def _names() -> list[str]:
    from django.contrib.auth.models import Group
    from django.db import connection

    try:
        return list(Group.objects.values_list("name", flat=True))
    finally:
        connection.close()


def main() -> None:
    data_dir, redis_url = Path(sys.argv[1]), sys.argv[2]
    configure(data_dir)
    prepare()
    print(json.dumps(asyncio.run(run(redis_url))))


if __name__ == "__main__":
    main()
