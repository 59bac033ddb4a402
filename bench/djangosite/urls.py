"""The three benchmarked views, as a project's ``urls.py`` would list them."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

HELLO = b"Hello, world!"
ROWS = 20


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(HELLO, content_type="text/plain")


def orm(request: HttpRequest) -> HttpResponse:
    user = User.objects.get(username="bench")
    return HttpResponse(user.email.encode(), content_type="text/plain")


def page(request: HttpRequest) -> HttpResponse:
    rows = [{"number": n, "name": f"item {n}"} for n in range(ROWS)]
    return render(request, "page.html", {"rows": rows, "title": "Items"})


urlpatterns = [path("hello", hello), path("orm", orm), path("page", page)]
