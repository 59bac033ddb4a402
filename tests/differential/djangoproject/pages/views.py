"""A few ordinary views: a CSRF-protected form, JSON, uploads, streaming, files, non-ASCII paths."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from django import forms
from django.conf import settings
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import condition, require_POST


class OrderForm(forms.Form):
    name = forms.CharField(max_length=50)
    quantity = forms.IntegerField(min_value=1, max_value=99)
    note = forms.CharField(required=False)


def order(request: HttpRequest) -> HttpResponse:
    form = OrderForm(request.POST) if request.method == "POST" else OrderForm()
    if request.method == "POST" and form.is_valid():
        return render(request, "pages/ordered.html", {"order": form.cleaned_data})
    return render(request, "pages/order.html", {"form": form})


@csrf_exempt
def echo_json(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"method": request.method, "query": dict(request.GET.lists())})
    try:
        data = json.loads(request.body)
    except ValueError as exc:
        return JsonResponse({"error": f"Invalid JSON: {exc}"}, status=400)
    return JsonResponse(
        {"method": request.method, "received": data}, json_dumps_params={"ensure_ascii": False}
    )


@csrf_exempt
@require_POST
def upload(request: HttpRequest) -> JsonResponse:
    files = {
        field: [
            {"name": f.name, "size": f.size, "sha256": hashlib.sha256(f.read()).hexdigest()}
            for f in request.FILES.getlist(field)
        ]
        for field in request.FILES
    }
    return JsonResponse({"fields": dict(request.POST.lists()), "files": files})


@csrf_exempt
@require_POST
def raw_body(request: HttpRequest) -> JsonResponse:
    body = request.body
    return JsonResponse({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("lines", "10"))

    def lines() -> Iterator[bytes]:
        for number in range(count):
            yield f"line {number:05d} {'ü' * 20}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain; charset=utf-8")


def _report() -> Path:
    return Path(settings.DATA_DIR) / "report.bin"


def _report_etag(request: HttpRequest) -> str:
    info = _report().stat()
    return f"{info.st_mtime_ns:x}-{info.st_size:x}"


def _report_modified(request: HttpRequest) -> datetime:
    return datetime.fromtimestamp(_report().stat().st_mtime, tz=timezone.utc)


@condition(etag_func=_report_etag, last_modified_func=_report_modified)
def report(request: HttpRequest) -> FileResponse:
    return FileResponse(_report().open("rb"), content_type="application/octet-stream")


def wiki(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse(
        {
            "name": name,
            "path": request.path,
            "full_path": request.get_full_path(),
            "query": dict(request.GET.lists()),
        },
        json_dumps_params={"ensure_ascii": False},
    )


def to_wiki(request: HttpRequest) -> HttpResponse:
    return redirect("wiki", name=request.GET.get("name", "Café"))
