"""An ordinary Flask app, served unchanged by gunicorn and by bridge in the differential tests.

gunicorn serves ``flask_app:app``; uvicorn serves ``flask_app:application``, the same
app wrapped in ``Bridge``, as a user migrating off gunicorn would write it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from flask import (
    Flask,
    Response,
    abort,
    jsonify,
    redirect,
    request,
    send_file,
    session,
    stream_with_context,
    url_for,
)
from werkzeug.wrappers.response import Response as BaseResponse

from bridge import Bridge

app = Flask(__name__)
# A fixed key: both servers must sign the session cookie alike. Test use only.
app.secret_key = "differential-tests-only"


def data_file(name: str) -> Path:
    """A file in the directory the test fixture prepared (its mtime must be the same for both)."""
    try:
        return Path(os.environ["DIFFERENTIAL_DATA_DIR"]) / name
    except KeyError:
        raise RuntimeError(
            "Set DIFFERENTIAL_DATA_DIR to the directory holding the files to serve."
        ) from None


@app.get("/")
def index() -> str:
    return "<!doctype html><title>Index</title><p>Hello from Flask.</p>"


@app.route("/form", methods=["GET", "POST"])
def form() -> str | Response:
    if request.method == "GET":
        return (
            '<!doctype html><form method="post"><input name="name">'
            '<input name="tag"><input name="tag"></form>'
        )
    return jsonify(form=request.form.to_dict(flat=False), args=request.args.to_dict(flat=False))


@app.post("/json")
def json_echo() -> Response:
    data = request.get_json()  # a malformed body is answered with Flask's own 400 page
    return jsonify(received=data, kind=type(data).__name__)


@app.post("/upload")
def upload() -> Response:
    files = {
        field: [
            {
                "filename": f.filename,
                "content_type": f.content_type,
                "sha256": hashlib.sha256(f.read()).hexdigest(),
            }
            for f in request.files.getlist(field)
        ]
        for field in request.files
    }
    return jsonify(form=request.form.to_dict(flat=False), files=files)


@app.post("/body")
def body() -> Response:
    """Length and hash of the raw body, read as a stream.

    A chunked upload reaches Flask only if the server sets ``wsgi.input_terminated``.
    """
    digest = hashlib.sha256()
    length = 0
    while chunk := request.stream.read(65536):
        digest.update(chunk)
        length += len(chunk)
    return jsonify(
        length=length,
        sha256=digest.hexdigest(),
        chunked="chunked" in request.headers.get("Transfer-Encoding", ""),
    )


@app.get("/headers")
def headers() -> Response:
    """The request as the application sees it: CGI variables and HTTP headers."""
    keys = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL")
    environ = {key: request.environ.get(key) for key in keys}
    environ["wsgi.url_scheme"] = request.environ["wsgi.url_scheme"]
    http = {k: v for k, v in request.environ.items() if k.startswith("HTTP_")}
    return jsonify(environ=environ, http=http, url=request.url, host_url=request.host_url)


@app.get("/cookies/set")
def set_cookies() -> Response:
    response = redirect(url_for("show_cookies"))
    for name, value in request.args.items():
        response.set_cookie(name, value, max_age=3600, httponly=True, samesite="Lax")
    response.set_cookie("plain", "1")
    return response


@app.get("/cookies")
def show_cookies() -> Response:
    return jsonify(cookies=request.cookies.to_dict())


@app.get("/cookies/delete")
def delete_cookies() -> Response:
    response = jsonify(deleted=sorted(request.cookies))
    for name in request.cookies:
        response.delete_cookie(name)
    return response


@app.post("/login")
def login() -> BaseResponse:
    user = request.form.get("user", "")
    if not user:
        abort(400)
    session["user"] = user
    session["visits"] = 0
    return redirect(url_for("me"))


@app.get("/me")
def me() -> str:
    if "user" not in session:
        abort(401)
    session["visits"] += 1
    return f"Hello, {session['user']}! Visit {session['visits']}."


@app.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("index"), code=303)


@app.get("/redirect/<int:code>")
def redirect_code(code: int) -> BaseResponse:
    if code not in (301, 302, 303, 307, 308):
        abort(404)
    external = request.args.get("external") == "1"
    return redirect(url_for("wiki", name="Zürich", _external=external), code=code)


@app.get("/redirect/chain/<int:hops>")
def redirect_chain(hops: int) -> BaseResponse:
    if hops <= 0:
        return redirect(url_for("index"))
    return redirect(url_for("redirect_chain", hops=hops - 1))


@app.get("/stream")
def stream() -> Response:
    """A generator that needs the request context while it runs, hence ``stream_with_context``."""
    count = int(request.args.get("lines", "10"))
    size = int(request.args.get("size", "16"))

    @stream_with_context
    def generate() -> Iterator[str]:
        yield f"streaming for {request.path}?{request.query_string.decode()}\n"
        for number in range(count):
            yield f"{number:06d} {'é' * size}\n"

    return Response(generate(), mimetype="text/plain")


@app.get("/download")
def download() -> Response:
    return send_file(data_file("report.bin"), mimetype="application/octet-stream")


@app.get("/download/attachment")
def download_attachment() -> Response:
    return send_file(data_file("notes.txt"), as_attachment=True, download_name="résumé notes.txt")


@app.get("/big")
def big() -> bytes:
    """A large body produced at once; Flask sets its Content-Length."""
    size = int(request.args.get("mib", "4")) * 1024 * 1024
    return bytes(range(256)) * (size // 256)


@app.get("/wiki/<name>")
def wiki(name: str) -> Response:
    return jsonify(
        name=name,
        path=request.path,
        full_path=request.full_path,
        args=request.args.to_dict(flat=False),
        query_string=request.query_string.decode("latin-1"),
        url=request.url,
    )


@app.route("/empty", methods=["GET", "DELETE"])
def empty() -> tuple[str, int]:
    return "", 204


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("A deliberate failure, to compare the 500 page.")


@app.get("/custom-status")
def custom_status() -> tuple[str, str]:
    return "teapot-ish\n", "299 Custom Thing"


application = Bridge(app)
