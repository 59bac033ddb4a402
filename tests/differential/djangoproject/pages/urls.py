from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("order/", views.order, name="order"),
    path("api/echo/", views.echo_json, name="echo"),
    path("upload/", views.upload, name="upload"),
    path("raw/", views.raw_body, name="raw"),
    path("stream/", views.stream, name="stream"),
    path("report/", views.report, name="report"),
    path("wiki/<str:name>/", views.wiki, name="wiki"),
    path("to-wiki/", views.to_wiki, name="to-wiki"),
]
