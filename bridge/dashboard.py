"""bridge's own pages: the Prometheus text at ``metrics_path``, the dashboard at ``dashboard_path``.

Both are off until a path is given, and are answered before routing, so they never
reach the legacy app. The dashboard (one self-contained HTML page and the JSON it
polls) shows request counts, route names and latencies, and the metrics the same;
who may read either is decided by one policy, ``access.AccessPolicy``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from ._types import Receive, Scope, Send
from .access import AccessPolicy
from .metrics import Metrics
from .routing import route_path

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

_NO_STORE = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
# The page loads nothing from elsewhere: inline script and style, JSON from itself.
_CSP = (
    b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    b"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)


class Endpoints:
    """The paths bridge answers itself, each mapped to its handler."""

    def __init__(self, metrics: Metrics, access: AccessPolicy) -> None:
        self.metrics = metrics
        self.access = access
        self.paths: dict[str, Handler] = {}
        self.data_path = ""
        self.base = ""

    @classmethod
    def configure(
        cls,
        metrics: Metrics | None,
        metrics_path: str | None,
        dashboard_path: str | None,
        access: AccessPolicy,
    ) -> Endpoints | None:
        """The endpoints for these options, or None when neither path is set."""
        if metrics_path is None and dashboard_path is None:
            return None
        if metrics is None:
            raise ValueError(
                "metrics_path and dashboard_path need the counters: drop metrics=False, "
                "or drop the paths."
            )
        endpoints = cls(metrics, access)
        if metrics_path is not None:
            _check_path("metrics_path", metrics_path)
            endpoints.paths[metrics_path] = endpoints.prometheus
        if dashboard_path is not None:
            _check_path("dashboard_path", dashboard_path)
            base = dashboard_path.rstrip("/")
            if not base:
                raise ValueError(
                    'dashboard_path "/" would hide the legacy app\'s home page; '
                    'use a path of its own, such as "/_bridge/".'
                )
            endpoints.paths[base] = endpoints.page
            endpoints.paths[base + "/"] = endpoints.page
            endpoints.base = base
            endpoints.data_path = base + "/data.json"
            endpoints.paths[endpoints.data_path] = endpoints.data
        return endpoints

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer ``scope`` if it asks for one of bridge's own paths; True if it did."""
        handler = self.paths.get(route_path(scope))
        if handler is None:
            return False
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, scope, 405, b"text/plain; charset=utf-8", b"Use GET.\n",
                        [(b"allow", b"GET, HEAD")])  # fmt: skip
        else:
            await handler(scope, receive, send)
        return True

    # -- the handlers -----------------------------------------------------------------

    async def prometheus(self, scope: Scope, receive: Receive, send: Send) -> None:
        verdict = self.access.metrics(scope)
        if not verdict.allowed:
            await _refuse(send, scope, verdict.reason)
            return
        body = self.metrics.prometheus().encode("utf-8")
        await _send(send, scope, 200, b"text/plain; version=0.0.4; charset=utf-8", body)

    async def page(self, scope: Scope, receive: Receive, send: Send) -> None:
        root = scope.get("root_path", "").rstrip("/")
        verdict = self.access.dashboard(scope, exchange=root + self.base)
        if not verdict.allowed:
            await _refuse(send, scope, verdict.reason)
            return
        if verdict.redirect is not None and verdict.cookie is not None:
            # The Jupyter pattern: the token leaves the URL (history, logs, Referer)
            # at once; from here on the HttpOnly cookie proves it.
            headers = [(b"location", verdict.redirect.encode("latin-1")),
                       (b"set-cookie", verdict.cookie.encode("latin-1"))]  # fmt: skip
            await _send(send, scope, 303, b"text/plain; charset=utf-8", b"See the page.\n", headers)
            return
        # json.dumps makes a JS string; "<" escaped so no "</script>" can end the block.
        url = json.dumps(root + self.data_path).replace("<", "\\u003c")
        body = PAGE.replace("__DATA_URL__", url).encode("utf-8")
        extra = [(b"content-security-policy", _CSP), (b"referrer-policy", b"no-referrer")]
        await _send(send, scope, 200, b"text/html; charset=utf-8", body, extra)

    async def data(self, scope: Scope, receive: Receive, send: Send) -> None:
        verdict = self.access.dashboard(scope)
        if not verdict.allowed:
            await _refuse(send, scope, verdict.reason)
            return
        body = json.dumps(self.metrics.snapshot()).encode("utf-8")
        await _send(send, scope, 200, b"application/json", body)


def _check_path(option: str, path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f'{option} "{path}" must start with "/", such as "/_bridge/".')


async def _refuse(send: Send, scope: Scope, reason: str) -> None:
    body = (reason + "\n").encode("utf-8")
    await _send(send, scope, 403, b"text/plain; charset=utf-8", body)


async def _send(
    send: Send,
    scope: Scope,
    status: int,
    content_type: bytes,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode("ascii")),
        *_NO_STORE,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bridge: migration</title>
<style>
:root { --new: #1f9d8b; --old: #e0913b; --ink: #1d2330; --mute: #6b7385; --line: #e3e6ec;
        --bad: #c8413b; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
body { margin: 0; background: #f6f7f9; color: var(--ink); }
header { padding: 18px 28px 6px; display: flex; align-items: baseline; gap: 16px; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 14px; margin: 0 0 10px; color: var(--mute); font-weight: 600; }
.mute { color: var(--mute); font-size: 13px; }
main { padding: 8px 28px 28px; display: grid; gap: 16px;
       grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px; }
.wide { grid-column: 1 / -1; }
.tiles { display: flex; gap: 16px; flex-wrap: wrap; }
.tile { flex: 1 1 150px; }
.tile b { display: block; font-size: 28px; font-variant-numeric: tabular-nums; }
.bar { height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; }
.bar i { display: block; height: 100%; background: var(--new); }
table { border-collapse: collapse; width: 100%; font-size: 13px;
        font-variant-numeric: tabular-nums; }
th, td { text-align: right; padding: 5px 8px; border-bottom: 1px solid var(--line); }
th:first-child, td:first-child { text-align: left; font-family: ui-monospace, monospace; }
th { color: var(--mute); font-weight: 600; }
.tag { font-size: 11px; padding: 1px 6px; border-radius: 9px; color: #fff; }
.tag.new { background: var(--new); } .tag.old { background: var(--old); }
.lat { display: inline-block; height: 8px; border-radius: 2px; vertical-align: middle; }
.err { color: var(--bad); font-weight: 600; }
svg text { font-size: 11px; fill: var(--mute); }
.legend span { margin-right: 14px; font-size: 13px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 5px;
            border-radius: 2px; }
</style>
</head>
<body>
<header><h1>bridge &middot; migration</h1>
  <span class="mute" id="status">loading&hellip;</span></header>
<main>
  <section class="card wide"><div class="tiles">
    <div class="tile"><h2>Migrated share of requests</h2><b id="share">&ndash;</b>
      <div class="bar"><i id="share-bar" style="width:0"></i></div></div>
    <div class="tile"><h2>Requests</h2><b id="total">&ndash;</b>
      <span class="mute" id="split"></span></div>
    <div class="tile"><h2>Busy threads</h2><b id="busy">&ndash;</b>
      <div class="bar"><i id="busy-bar" style="width:0"></i></div></div>
    <div class="tile"><h2>Waiting for a thread</h2><b id="queue">&ndash;</b></div>
    <div class="tile"><h2>Event-loop lag</h2><b id="lag">&ndash;</b>
      <span class="mute" id="blocks"></span></div>
  </div></section>
  <section class="card"><h2>Share of traffic over time</h2>
    <div class="legend"><span><i style="background:var(--new)"></i>migrated</span>
      <span><i style="background:var(--old)"></i>legacy</span></div>
    <svg id="share-chart" viewBox="0 0 600 200" width="100%" role="img"
         aria-label="migrated and legacy share of requests over time"></svg></section>
  <section class="card"><h2>Pool saturation and loop lag</h2>
    <div class="legend"><span><i style="background:var(--ink)"></i>busy / size</span>
      <span><i style="background:var(--old)"></i>queue / size</span>
      <span><i style="background:var(--bad)"></i>loop lag (right, ms)</span></div>
    <svg id="pool-chart" viewBox="0 0 600 200" width="100%" role="img"
         aria-label="busy threads, queue depth and event-loop lag over time"></svg></section>
  <section class="card wide"><h2>Routes, side by side</h2>
    <table><thead><tr><th>route</th><th>code</th><th>requests</th><th>errors</th>
      <th>p50</th><th>p90</th><th>p99</th><th>p99, to scale</th><th>thread wait p99</th>
      <th>loop blocks</th></tr></thead><tbody id="routes"></tbody></table></section>
  <!-- Shadow routes (bridge.shadow): the panel, its style and its script, in one block. -->
  <style>
  .tag.bad { background: var(--bad); }
  #shadow-mismatches details { margin-top: 10px; font-size: 13px; }
  #shadow-mismatches summary { cursor: pointer; font-family: ui-monospace, monospace; }
  #shadow-mismatches th, #shadow-mismatches td { text-align: left; }
  #shadow-mismatches td { font-family: ui-monospace, monospace; white-space: pre-wrap;
                          word-break: break-all; }
  </style>
  <section class="card wide" id="shadow-panel" hidden>
    <h2>Shadow routes: the migrated view on the same requests, compared with legacy</h2>
    <table><thead><tr><th>route</th><th>verdict</th><th>matched</th><th>mismatched</th>
      <th>failed</th><th>skipped</th><th>matches in a row</th></tr></thead>
      <tbody id="shadow-routes"></tbody></table>
    <div id="shadow-mismatches"></div></section>
  <script>
  "use strict";
  function shadowPanel(data) {
    const routes = data.shadow || [];
    const panel = document.getElementById("shadow-panel");
    panel.hidden = routes.length === 0;
    const rows = document.getElementById("shadow-routes");
    const reports = document.getElementById("shadow-mismatches");
    rows.replaceChildren();
    reports.replaceChildren();
    const add = (parent, name, value, cls) => {
      const node = document.createElement(name);
      if (cls) node.className = cls;
      if (value !== undefined) node.textContent = value;
      parent.appendChild(node);
      return node;
    };
    for (const r of routes) {
      const tr = add(rows, "tr");
      tr.dataset.route = r.route;
      const methods = r.methods ? r.methods.join(", ") : "every method";
      const rate = r.rate < 1 ? ", " + Math.round(r.rate * 100) + " % sampled" : "";
      add(tr, "td", r.route + "  (" + methods + rate + ")");
      const verdict = add(tr, "td");
      const bad = r.streak === 0 && r.mismatched + r.failed > 0;
      add(verdict, "span", r.ready ? "ready to switch" : bad ? "differs" : "not yet",
          "tag verdict " + (r.ready ? "new" : bad ? "bad" : "old"));
      add(tr, "td", r.matched.toLocaleString(), "matched");
      add(tr, "td", r.mismatched.toLocaleString(), "mismatched" + (r.mismatched ? " err" : ""));
      add(tr, "td", r.failed.toLocaleString(), "failed" + (r.failed ? " err" : ""));
      const skipped = add(tr, "td", r.skipped.toLocaleString(), "skipped");
      skipped.title = Object.entries(r.skips).map(([why, n]) => n + ": " + why).join("\\n");
      add(tr, "td", r.streak.toLocaleString() + " / " + r.ready_after.toLocaleString(), "streak");
      for (const m of r.mismatches) {
        const details = add(reports, "details", undefined, "mismatch");
        details.dataset.route = r.route;
        add(details, "summary", m.method + " " + m.path + ": " + m.differences.length +
            (m.differences.length === 1 ? " difference" : " differences"));
        const table = add(details, "table");
        const head = add(add(table, "thead"), "tr");
        for (const title of ["where", "legacy", "shadow"]) add(head, "th", title);
        const body = add(table, "tbody");
        for (const d of m.differences) {
          const row = add(body, "tr", undefined, "difference");
          add(row, "td", d.where); add(row, "td", d.legacy); add(row, "td", d.shadow);
        }
      }
      for (const f of r.failures) {
        const details = add(reports, "details", undefined, "failure");
        details.dataset.route = r.route;
        add(details, "summary", f.method + " " + f.path + ": the shadow view failed");
        add(details, "p", f.error, "err");
      }
    }
  }
  </script>
</main>
<script>
"use strict";
// The URL carries no token (the page redirected it into a cookie), so polls log none.
const DATA_URL = __DATA_URL__;
const NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
function ms(s) {
  if (s === null || s === undefined) return "\\u2013";
  const v = s * 1000;
  return (v < 1 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)) + " ms";
}
function pct(x) { return (100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0) + " %"; }
function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const k in attrs) node.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(node);
  return node;
}
function text(parent, x, y, value, anchor) {
  el("text", {x: x, y: y, "text-anchor": anchor || "start"}, parent).textContent = value;
}
const W = 600, H = 200, L = 40, R = 44, T = 8, B = 22;
function frame(svg, points) {
  svg.replaceChildren();
  for (const f of [0, 0.5, 1]) {
    const y = T + (H - T - B) * (1 - f);
    el("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#e3e6ec"}, svg);
    text(svg, L - 6, y + 4, (f * 100) + "%", "end");
  }
  if (points.length) {
    const span = points[points.length - 1].time - points[0].time;
    text(svg, L, H - 6, "-" + Math.round(span) + " s");
    text(svg, W - R, H - 6, "now", "end");
  }
}
function xAt(i, n) { return n < 2 ? W - R : L + (W - R - L) * i / (n - 1); }
function yAt(f) { return T + (H - T - B) * (1 - Math.min(Math.max(f, 0), 1)); }
function waiting(svg, data) {
  text(svg, W / 2, H / 2, "collecting: one point every " + data.history_interval + " s",
       "middle");
}
function shareChart(data) {
  const svg = $("share-chart"), pts = data.history.filter(p => p.legacy + p.migrated > 0);
  frame(svg, pts);
  if (!pts.length) { waiting(svg, data); return; }
  const n = pts.length;
  const share = pts.map(p => p.migrated / (p.legacy + p.migrated));
  const top = share.map((s, i) => xAt(i, n) + "," + yAt(s));
  if (n === 1) top.unshift(L + "," + yAt(share[0]));
  const first = n === 1 ? L : xAt(0, n);
  el("polygon", {points: [first + "," + yAt(1), ...top, xAt(n - 1, n) + "," + yAt(1)].join(" "),
                 fill: "var(--old)", opacity: 0.85}, svg);
  el("polygon", {points: [first + "," + yAt(0), ...top, xAt(n - 1, n) + "," + yAt(0)].join(" "),
                 fill: "var(--new)", opacity: 0.9}, svg);
  text(svg, W - R + 4, yAt(share[n - 1]) + 4, pct(share[n - 1]));
}
function poolChart(data) {
  const svg = $("pool-chart"), pts = data.history;
  frame(svg, pts);
  if (!pts.length) { waiting(svg, data); return; }
  const n = pts.length, maxLag = Math.max(0.1, ...pts.map(p => p.lag));
  const line = (values, colour) => el("polyline", {
    points: values.map((v, i) => xAt(i, n) + "," + yAt(v)).join(" "),
    fill: "none", stroke: colour, "stroke-width": 2}, svg);
  line(pts.map(p => p.busy / Math.max(p.size, 1)), "var(--ink)");
  line(pts.map(p => p.queue / Math.max(p.size, 1)), "var(--old)");
  line(pts.map(p => p.lag / maxLag), "var(--bad)");
  text(svg, W - R + 4, yAt(1) + 4, Math.round(maxLag * 1000));
  text(svg, W - R + 4, yAt(0) + 4, "0");
}
function table(data) {
  const rows = data.routes.slice().sort((a, b) => b.requests - a.requests);
  const slowest = Math.max(1e-6, ...rows.map(r => r.p99 || 0));
  const body = $("routes");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    const cell = (value, cls) => {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      if (value instanceof Node) td.appendChild(value); else td.textContent = value;
      tr.appendChild(td);
    };
    cell(r.route);
    const tag = document.createElement("span");
    tag.className = "tag " + (r.migrated ? "new" : "old");
    tag.textContent = r.migrated ? r.kind : "legacy";
    cell(tag);
    cell(r.requests.toLocaleString());
    cell(r.errors ? r.errors.toLocaleString() : "0", r.errors ? "err" : "");
    cell(ms(r.p50)); cell(ms(r.p90)); cell(ms(r.p99));
    const bar = document.createElement("span");
    bar.className = "lat";
    bar.style.width = Math.max(2, 140 * (r.p99 || 0) / slowest) + "px";
    bar.style.background = r.migrated ? "var(--new)" : "var(--old)";
    cell(bar);
    cell(r.waits ? ms(r.wait_p99) : "\\u2013");
    cell(r.blocks ? r.blocks.toLocaleString() : "0", r.blocks ? "err" : "");
    body.appendChild(tr);
  }
}
function tiles(data) {
  const t = data.totals, all = t.legacy + t.migrated, share = all ? t.migrated / all : 0;
  $("share").textContent = all ? pct(share) : "\\u2013";
  $("share-bar").style.width = (100 * share) + "%";
  $("total").textContent = all.toLocaleString();
  $("split").textContent = t.migrated.toLocaleString() + " migrated, " +
                           t.legacy.toLocaleString() + " legacy";
  const p = data.pool;
  $("busy").textContent = p.busy + " / " + p.size;
  $("busy-bar").style.width = (100 * p.busy / Math.max(p.size, 1)) + "%";
  $("queue").textContent = p.queue;
  $("lag").textContent = ms(data.loop.lag);
  const blocks = data.routes.reduce((sum, r) => sum + r.blocks, 0);
  $("blocks").textContent = blocks ? blocks + " blocking steps seen" : "no blocking steps";
}
async function refresh() {
  try {
    const response = await fetch(DATA_URL, {cache: "no-store", credentials: "same-origin"});
    if (!response.ok) throw new Error(response.status + " " + (await response.text()));
    const data = await response.json();
    tiles(data); shareChart(data); poolChart(data); table(data); shadowPanel(data);
    $("status").textContent = "updated " + new Date(data.time * 1000).toLocaleTimeString();
    document.body.dataset.loaded = "1";
  } catch (error) {
    $("status").textContent = "cannot refresh: " + error.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
