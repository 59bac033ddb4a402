"""A one-file Django project served by the docs/recipes/django-live.md recipe, pasted
whole: ``python -m tests.broadcast.django_live_project DATA_DIR REDIS_URL``. It prints
one JSON object of what a subscriber and an event stream heard at each step. It runs
in a subprocess because Django's settings are global to a process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

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
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.db import connection
    from django.views.decorators.csrf import csrf_exempt

    urlpatterns.append(path("groups", csrf_exempt(create_view)))
    call_command("migrate", verbosity=0)
    connection.close()
    # The recipe imports the reader's model as myapp.models.Item: here, Django's Group.
    package, models = types.ModuleType("myapp"), types.ModuleType("myapp.models")
    models.Item = Group  # type: ignore[attr-defined]
    sys.modules.update({"myapp": package, "myapp.models": models})


async def first_chunk(application: Any, last_id: str) -> str:
    """The first body chunk of GET /events/items with ``Last-Event-ID``, then leave."""
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    leave = asyncio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.put_nowait(message["body"])

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/events/items", "raw_path": b"/events/items",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"last-event-id", last_id.encode())],
    }  # fmt: skip
    serving = asyncio.ensure_future(application(scope, receive, send))
    chunk = await asyncio.wait_for(chunks.get(), 10)
    leave.set()
    await asyncio.wait_for(serving, 10)
    return chunk.decode()


async def run() -> dict[str, Any]:
    from tests.migration.recipes import load_recipe

    recipe = load_recipe("django-live.md")
    application = recipe["application"]
    heard: dict[str, Any] = {"url": application.broadcast.url}
    transport = httpx.ASGITransport(app=application)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
            application.broadcast.subscribe("items") as events,
        ):
            heard["created"] = (await http.post("/groups", data={"name": "ada"})).status_code
            first = await asyncio.wait_for(events.get(), 10)
            heard["first"] = first.data
            rolled = await http.post("/groups", data={"name": "bob", "rollback": "1"})
            heard["rolled_back"] = rolled.status_code
            heard["again"] = (await http.post("/groups", data={"name": "cy"})).status_code
            # The next event is cy's: bob's save was never published.
            second = await asyncio.wait_for(events.get(), 10)
            heard["second"] = second.data
            await asyncio.sleep(0.2)
            heard["more"] = not events.empty()
            # A stream that saw ada's event resumes with cy's, from Redis.
            heard["resumed"] = await first_chunk(application, first.id)
            heard["second_id"] = second.id
    finally:
        await application.broadcast.stop()
        application.pool.shutdown()
    return heard


def main() -> None:
    data_dir, redis_url = Path(sys.argv[1]), sys.argv[2]
    os.environ["BRIDGE_BROADCAST_URL"] = redis_url  # as bridge serve --broadcast does
    configure(data_dir)
    prepare()
    print(json.dumps(asyncio.run(run())))


if __name__ == "__main__":
    main()
