"""
The site bench/cache.py loads: one twisted.web process serving the same
100-row table page five ways, plus its counters.

  /static            twisted.web's static.Data holding the page's bytes
                     (the ceiling for a twisted.web response)
  /cached            the table as a tlcache.nevow page with CachedPage
  /uncached          the same tlcache.nevow page, rendered for every request
  /uncached-twisted  the same table by twisted.web.template's renderElement,
                     rendered for every request
  /fragment          the table with a fragment whose render takes 100 ms
                     before it; the page is fresh for 1 s and refreshed in
                     the background, the fragment refreshed every 10 s
  /stats             the render caches' and the fragment cache's counters,
                     as JSON

Run: python bench/_cachesite.py --port PORT [--logfile PATH] [--access-log]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator, List, Sequence, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.web import resource, static
from twisted.web.template import Element, XMLString, renderElement, renderer

from tlcache import CachedPage, RenderCache
from tlcache.fragment import FragmentCache, IFragmentCache
from tlcache.nevow import appserver, loaders, rend
from tlcache.nevow import tags as _tags

__all__ = [
    "FRAGMENT_DELAY",
    "FRAGMENT_REFRESH",
    "ROWS",
    "fragmentPageBytes",
    "headlinesBytes",
    "main",
    "makeRows",
]

ROWS = 100
HEADLINES = 10
# How long the fragment takes to render, and how often it is refreshed.
FRAGMENT_DELAY = 0.1
FRAGMENT_REFRESH = 10
CONTENT_TYPE = "text/html; charset=utf-8"

Row = Tuple[str, str]

# The element names are made when tags is imported, which mypy cannot see.
T: Any = _tags


def makeRows(count: int = ROWS) -> List[Row]:
    """
    The table's data (the same as bench/render.py's): every name needs
    escaping.
    """
    return [(f"item <{i}> & co", f"{i * 37 % 1000}") for i in range(count)]


def headlinesBytes() -> bytes:
    """
    What the slow fragment renders to.
    """
    items = "".join(f"<li>headline {i}</li>" for i in range(HEADLINES))
    return f"<ul>{items}</ul>".encode()


def fragmentPageBytes(tablePage: bytes) -> bytes:
    """
    What C{/fragment} serves, given what C{/cached} serves: the same page
    with the fragment's bytes first in the body.
    """
    head, marker, rest = tablePage.partition(b"<body>")
    if not marker:
        raise ValueError("the table page has no <body>")
    return head + marker + headlinesBytes() + rest


# tlcache.nevow: the table as an XML template.

TABLE = (
    '<html xmlns:n="http://nevow.com/ns/nevow/0.1"><head><title>table</title>'
    '</head><body><table n:data="rows" n:render="sequence">'
    '<tr n:pattern="header"><th>name</th><th>value</th></tr>'
    '<tr n:pattern="item" n:render="row"><td><n:slot name="name"/></td>'
    '<td><n:slot name="value"/></td></tr></table></body></html>'
)


class Table(rend.Page):
    """
    The 100-row table, rendered on every request.
    """

    docFactory = loaders.xmlstr(TABLE)

    def __init__(self, rows: Sequence[Row]) -> None:
        super().__init__()
        self.rows = rows

    def data_rows(self, ctx: Any, data: Any) -> Sequence[Row]:
        return self.rows

    def render_row(self, ctx: Any, data: Row) -> Any:
        ctx.fillSlots("name", data[0])
        ctx.fillSlots("value", data[1])
        return ctx.tag


class CachedTable(CachedPage, Table):
    """
    The same table through the render cache, fresh for an hour (longer than
    any run), so every measured request is a hit.
    """

    cacheTimeout = 3600.0


# twisted.web.template: the same markup, for the uncached baseline.


class TwistedTable(Element):
    """
    The table as a twisted.web.template element: one renderer clones the
    row and fills its two slots per row.
    """

    loader = XMLString(
        '<html xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1">'
        "<head><title>table</title></head><body><table>"
        "<tr><th>name</th><th>value</th></tr>"
        '<tr t:render="rows"><td><t:slot name="name"/></td>'
        '<td><t:slot name="value"/></td></tr></table></body></html>'
    )

    def __init__(self, rows: Sequence[Row]) -> None:
        super().__init__()
        self.tableRows = rows

    @renderer
    def rows(self, request: Any, tag: Any) -> Iterator[Any]:
        for name, value in self.tableRows:
            yield tag.clone().fillSlots(name=name, value=value)


class TwistedTablePage(resource.Resource):
    """
    L{TwistedTable} rendered for every request, as twisted.web.template
    pages are: C{renderElement}, no doctype (so the bytes are the same as
    the other pages').
    """

    isLeaf = True

    def __init__(self, rows: Sequence[Row]) -> None:
        super().__init__()
        self.rows = rows

    def render_GET(self, request: Any) -> Any:
        return renderElement(request, TwistedTable(self.rows), doctype=None)


# The page with a slow fragment.


class SlowFragmentPage(CachedPage, Table):
    """
    The table with a fragment before it whose render takes
    L{FRAGMENT_DELAY} seconds (a slow query, say), refreshed every
    L{FRAGMENT_REFRESH} seconds in the background by the site's
    L{FragmentCache}.

    The page itself is fresh for one second and then served stale for up to
    a minute while one background render replaces it, a render that takes
    the fragment's bytes from the fragment cache. So after the first render
    no request waits for the fragment, nor for the page.
    """

    cacheTimeout = 1.0
    cacheGrace = 60.0
    docFactory = loaders.stan(
        T.html[
            T.head[T.title["table"]],
            T.body[
                T.cached(key="headlines", refresh=FRAGMENT_REFRESH)[
                    T.invisible(render=T.directive("headlines"))
                ],
                T.table(data=T.directive("rows"), render=T.directive("sequence"))[
                    T.tr(pattern="header")[T.th["name"], T.th["value"]],
                    T.tr(pattern="item", render=T.directive("row"))[
                        T.td[T.slot("name")], T.td[T.slot("value")]
                    ],
                ],
            ],
        ]
    )

    def __init__(self, rows: Sequence[Row], clock: IReactorTime) -> None:
        super().__init__(rows)
        self.clock = clock

    def render_headlines(self, ctx: Any, data: Any) -> Deferred:
        return deferLater(
            self.clock,
            FRAGMENT_DELAY,
            lambda: T.ul[[T.li[f"headline {i}"] for i in range(HEADLINES)]],
        )


class Stats(resource.Resource):
    """
    The counters of the site's caches, as JSON, for the benchmark to check
    what the load did (hits, renders, refreshes).
    """

    isLeaf = True

    def __init__(self, **sources: Any) -> None:
        super().__init__()
        self.sources = sources

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        result = {name: source.stats() for name, source in self.sources.items()}
        return json.dumps(result).encode()


class QuietSite(appserver.NevowSite):
    """
    A site without an access log, as the nginx of bench/balancer.py runs:
    what is measured is the response, not a log line per request.
    """

    def log(self, request: Any) -> None:
        pass


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(description="The site bench/cache.py loads.")
    parser.add_argument("--port", type=int, required=True, help="TCP port")
    parser.add_argument(
        "--interface", default="127.0.0.1", help="address to listen on (127.0.0.1)"
    )
    parser.add_argument("--logfile", help="write the log here (default: stdout)")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log a line per request, as twisted.web does by default",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
    """
    Serve the pages until killed.
    """
    options = parseArguments(argv)
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    output = open(options.logfile, "a") if options.logfile else sys.stdout
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(output)], redirectStandardIO=False
    )

    rows = makeRows()
    fragments = FragmentCache(reactor)
    fragments.startService()
    reactor.addSystemEventTrigger("before", "shutdown", fragments.stopService)
    cached = CachedTable(rows)
    cached.renderCache = RenderCache(clock=reactor)
    slow = SlowFragmentPage(rows, reactor)
    slow.renderCache = RenderCache(clock=reactor)

    root = resource.Resource()
    body = Table(rows).renderSynchronously()
    root.putChild(b"static", static.Data(body, CONTENT_TYPE))
    root.putChild(b"cached", cached)
    root.putChild(b"uncached", Table(rows))
    root.putChild(b"uncached-twisted", TwistedTablePage(rows))
    root.putChild(b"fragment", slow)
    root.putChild(
        b"stats",
        Stats(
            cached=cached.renderCache,
            fragmentPage=slow.renderCache,
            fragments=fragments,
        ),
    )
    site: Any = (appserver.NevowSite if options.access_log else QuietSite)(root)
    site.remember(fragments, IFragmentCache)
    site.displayTracebacks = False
    reactor.listenTCP(options.port, site, interface=options.interface)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
