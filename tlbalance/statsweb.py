# -*- test-case-name: tests.unit.test_statsweb -*-
"""
The balancer's read-only stats listener (C{--stats}): the status page at
C{/}, the snapshot at C{/stats.json} and Prometheus metrics at C{/metrics}.

The page is one HTML document with inline CSS and a small inline script,
no external assets. The server renders every value, so it works without
JavaScript (a C{<noscript>} meta refresh reloads it); with JavaScript it
fetches C{/stats.json} every two seconds and updates the cells in place.
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tlbalance.metrics import metricsRegistry
from tlbalance.service import BalancerService
from tlbalance.stats import balancerStats
from tlbalance.tls import splitServerTLS
from tlsuite._listen import ListenService

__all__ = ["StatsResource", "renderPage", "statsListenerService"]

#: Seconds between the page's updates (script) and reloads (no script).
REFRESH = 2
NOSCRIPT_REFRESH = 5

Snapshot = Callable[[], Dict[str, Any]]


def formatDuration(seconds: Optional[float]) -> str:
    """
    C{"3d 4h"}, C{"2h 5m"}, C{"4m 10s"}, C{"12.5s"} or C{"-"}.
    """
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def formatBytes(count: Optional[float]) -> str:
    """
    C{"512 B"}, C{"1.5 KiB"}, C{"3.2 MiB"}, ...
    """
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def formatTime(epoch: Optional[float]) -> str:
    """
    A time of day in UTC, C{"14:03:07"}, or C{"-"}.
    """
    if epoch is None:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(epoch))


def _checkText(check: Dict[str, Any]) -> Tuple[str, str, str, str]:
    if check["status"] == "none":
        return "no check", "", "-", "-"
    reason = check["reason"] or ""
    duration = check["duration"]
    return (
        check["status"],
        reason,
        "-" if duration is None else f"{duration * 1000:.1f} ms",
        formatTime(check["time"]),
    )


# The columns of each table: (heading, key). The values come from
# _listenerCells / _backendCells here and listenerCells / backendCells in
# the page's script, which must agree.
LISTENER_COLUMNS = ["listener", "cur", "total", "conn/s"]
BACKEND_COLUMNS = [
    "backend",
    "state",
    "since",
    "check",
    "detail",
    "took",
    "at (UTC)",
    "weight",
    "cur",
    "max",
    "limit",
    "total",
    "conn/s",
    "errors",
    "retries",
    "redisp",
    "bytes in",
    "bytes out",
]


def _listenerCells(listener: Dict[str, Any]) -> List[str]:
    return [
        listener["name"],
        str(listener["current"]),
        str(listener["total"]),
        f"{listener['rate']:.1f}",
    ]


def _stateText(backend: Dict[str, Any]) -> str:
    # Health and what the operator allows: "UP", "DOWN", "UP, drain".
    health = "UP" if backend["healthy"] else "DOWN"
    return health if backend["admin"] == "ready" else f"{health}, {backend['admin']}"


def _backendCells(backend: Dict[str, Any]) -> List[str]:
    status, reason, duration, at = _checkText(backend["check"])
    name = backend["name"] + (" (backup)" if backend["backup"] else "")
    return [
        name,
        _stateText(backend),
        formatDuration(backend["sinceStateChange"]),
        status,
        reason,
        duration,
        at,
        str(backend["weight"]),
        str(backend["active"]),
        str(backend["peak"]),
        str(backend["maxconn"] or "-"),
        str(backend["total"]),
        f"{backend['rate']:.1f}",
        str(backend["connectFailures"]),
        str(backend["retries"]),
        str(backend["redispatches"]),
        formatBytes(backend["bytesIn"]),
        formatBytes(backend["bytesOut"]),
    ]


def _summary(stats: Dict[str, Any]) -> List[Tuple[str, str]]:
    process = stats["process"]
    balancer = stats["balancer"]
    return [
        ("version", process["version"]),
        ("uptime", formatDuration(process["uptime"])),
        ("CPU", f"{process['cpuSeconds']:.1f}s"),
        ("RSS", formatBytes(process["rssBytes"])),
        ("algorithm", balancer["algorithm"]),
        ("connections", str(balancer["current"])),
        ("total", str(balancer["total"])),
        ("conn/s", f"{balancer['rate']:.1f}"),
        ("refused (no backend)", str(balancer["refused"])),
    ]


def _table(
    tableId: str, columns: Sequence[str], rows: List[List[str]], states: List[str]
) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for cells, state in zip(rows, states):
        tds = "".join(f"<td>{escape(c)}</td>" for c in cells)
        body.append(f'<tr class="{escape(state)}">{tds}</tr>')
    return (
        f'<div class="scroll"><table id="{tableId}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


_STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:1em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .5em}h2{font-size:1.1em;margin:1.2em 0 .4em}
dl{display:flex;flex-wrap:wrap;gap:.3em 1.2em;margin:0}dl div{display:flex;gap:.3em}
dt{color:#666}dd{margin:0;font-weight:600}
.scroll{overflow-x:auto}table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:.2em .4em;text-align:right;white-space:nowrap}
th{background:#eee;font-weight:600}
#backends td:nth-child(-n+5),#backends th:nth-child(-n+5),
#listeners td:first-child,#listeners th:first-child{text-align:left}
.note{color:#666;font-size:.9em}
tr.UP td:nth-child(2){background:#d8f5d8}tr.DOWN td:nth-child(2){background:#f8c8c8}
tr.DRAIN td:nth-child(2),tr.MAINT td:nth-child(2){background:#f5e6b8}
tr.DOWN td:first-child{color:#a00;font-weight:600}
#updated{color:#666;font-size:.9em}
"""

# The page's script: one fetch every REFRESH seconds, cells changed only
# where their text differs. textContent is used throughout, so nothing
# from the snapshot is ever parsed as HTML.
_SCRIPT = """
(function () {
  var every = %(refresh)d * 1000;
  function dur(s) {
    if (s === null) return "-";
    if (s < 60) return s < 10 ? s.toFixed(1) + "s" : s.toFixed(0) + "s";
    var m = Math.floor(s / 60), sec = Math.floor(s) %% 60, h = Math.floor(m / 60);
    var d = Math.floor(h / 24);
    m %%= 60;
    h %%= 24;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    return m + "m " + sec + "s";
  }
  function bytes(n) {
    if (n === null) return "-";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < 4) { n /= 1024; i++; }
    return i ? n.toFixed(1) + " " + units[i] : n.toFixed(0) + " B";
  }
  function two(n) { return (n < 10 ? "0" : "") + n; }
  function at(t) {
    if (t === null) return "-";
    var d = new Date(t * 1000);
    return two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" +
      two(d.getUTCSeconds());
  }
  function listenerCells(l) {
    return [l.name, "" + l.current, "" + l.total, l.rate.toFixed(1)];
  }
  function backendCells(b) {
    var c = b.check, check = ["no check", "", "-", "-"];
    if (c.status !== "none") {
      check = [c.status, c.reason || "",
        c.duration === null ? "-" : (c.duration * 1000).toFixed(1) + " ms",
        at(c.time)];
    }
    var health = b.healthy ? "UP" : "DOWN";
    return [b.name + (b.backup ? " (backup)" : ""),
      b.admin === "ready" ? health : health + ", " + b.admin,
      dur(b.sinceStateChange)].concat(check, ["" + b.weight, "" + b.active,
      "" + b.peak, b.maxconn ? "" + b.maxconn : "-", "" + b.total,
      b.rate.toFixed(1), "" + b.connectFailures, "" + b.retries,
      "" + b.redispatches, bytes(b.bytesIn), bytes(b.bytesOut)]);
  }
  function summary(s) {
    var p = s.process, b = s.balancer;
    return [p.version, dur(p.uptime), p.cpuSeconds.toFixed(1) + "s",
      bytes(p.rssBytes), b.algorithm, "" + b.current, "" + b.total,
      b.rate.toFixed(1), "" + b.refused];
  }
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }
  function fill(id, items, cells, state) {
    var body = document.querySelector("#" + id + " tbody");
    while (body.rows.length > items.length) body.deleteRow(-1);
    items.forEach(function (item, i) {
      var row = body.rows[i] || body.insertRow(-1);
      var cls = state ? state(item) : "";
      if (row.className !== cls) row.className = cls;
      cells(item).forEach(function (text, j) {
        setText(row.cells[j] || row.insertCell(-1), text);
      });
    });
  }
  function update() {
    var note = document.getElementById("updated");
    fetch("stats.json", {cache: "no-store"})
      .then(function (r) { return r.json(); })
      .then(function (s) {
        fill("listeners", s.listeners, listenerCells, null);
        fill("backends", s.backends, backendCells, function (b) { return b.state; });
        var dd = document.querySelectorAll("#summary dd");
        summary(s).forEach(function (t, i) { if (dd[i]) setText(dd[i], t); });
        setText(note, "updated " + at(s.time) + " UTC");
      })
      .catch(function (e) { setText(note, "update failed: " + e); })
      .then(function () { setTimeout(update, every); });
  }
  setTimeout(update, every);
})();
"""


def renderPage(stats: Dict[str, Any]) -> str:
    """
    The status page for one snapshot, every value escaped.
    """
    summary = "".join(
        f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>"
        for k, v in _summary(stats)
    )
    listeners = _table(
        "listeners",
        LISTENER_COLUMNS,
        [_listenerCells(item) for item in stats["listeners"]],
        ["" for _ in stats["listeners"]],
    )
    backends = _table(
        "backends",
        BACKEND_COLUMNS,
        [_backendCells(item) for item in stats["backends"]],
        [item["state"] for item in stats["backends"]],
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>tlbalance status</title>"
        f'<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH}">'
        "</noscript>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>tlbalance status</h1>"
        f'<dl id="summary">{summary}</dl>'
        f'<p><span id="updated">rendered {escape(formatTime(stats["time"]))} UTC'
        '</span> <a href="">reload</a></p>'
        f"<h2>Listeners</h2>{listeners}"
        f"<h2>Backends</h2>{backends}"
        '<p class="note">conn/s: new connections per second over the last 10 s; '
        "max: the most open at once; errors, retries, redisp: failed "
        "connects, and those tried again (redispatched: on another backend)</p>"
        '<p>Also: <a href="stats.json">stats.json</a> · '
        '<a href="metrics">metrics</a></p>'
        f"<script>{_SCRIPT % {'refresh': REFRESH}}</script>"
        "</body></html>\n"
    )


class StatsResource(Resource):
    """
    C{/}, C{/stats.json} and C{/metrics}; anything else is a 404. GET and
    HEAD only: nothing here changes the balancer.
    """

    isLeaf = True

    def __init__(self, snapshot: Snapshot) -> None:
        """
        @param snapshot: returns a fresh L{balancerStats} snapshot.
        """
        super().__init__()
        self.snapshot = snapshot
        self.registry = metricsRegistry(snapshot)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        path = request.path.rstrip(b"/") or b"/"
        if path == b"/":
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(
                b"content-security-policy",
                b"default-src 'none'; style-src 'unsafe-inline'; "
                b"script-src 'unsafe-inline'; connect-src 'self'",
            )
            return renderPage(self.snapshot()).encode("utf-8")
        if path == b"/stats.json":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(self.snapshot(), indent=1).encode("utf-8") + b"\n"
        if path == b"/metrics":
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
            return generate_latest(self.registry)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"not found: try /, /stats.json or /metrics\n"

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)


def statsListenerService(
    service: BalancerService, reactor: Any, description: str
) -> ListenService:
    """
    The listen service of one C{--stats} endpoint string, serving the
    balancer C{service}'s stats (C{ssl:} and C{tlsni:} strings serve them
    over TLS).
    """
    resource = StatsResource(lambda: balancerStats(service, reactor.seconds()))
    site = Site(resource)
    site.noisy = False
    # No access log line per scrape.
    site.log = lambda request: None  # type: ignore[method-assign]
    plain, contextFactory = splitServerTLS(reactor, description)
    factory: IProtocolFactory = site
    if contextFactory is not None:
        factory = TLSMemoryBIOFactory(contextFactory, False, site, clock=reactor)
    return ListenService(description, plain, factory, who="the stats listener ")
