# -*- test-case-name: tests.integration.test_nevow_site -*-
"""
A L{tlcache.nevow.appserver.NevowSite} on a real loopback socket, asked by
a real HTTP client (L{twisted.web.client.Agent}): shim pages, a
twisted.web resource among them, redirects, Deferreds and failures.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web import resource
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from tlcache.nevow import appserver, inevow, loaders, rend, url
from tlcache.nevow import tags as T

pytestmark = pytest.mark.integration

reactor: Any = _reactor

NS = 'xmlns:n="http://nevow.com/ns/nevow/0.1"'


class Table(rend.Page):
    """
    A table of rows from a data method that answers after a delay.
    """

    docFactory = loaders.xmlstr(
        f"""<html {NS}><body><h1 n:render="string" n:data="title"/>
<table n:render="sequence" n:data="rows">\
<tr n:pattern="header"><th>name</th><th>value</th></tr>
<tr n:pattern="item" n:render="row">\
<td><n:slot name="name"/></td><td><n:slot name="value"/></td></tr>
<tr n:pattern="empty"><td>none</td></tr></table>
<a><n:attr name="href"><n:invisible n:render="next"/></n:attr>next</a></body></html>"""
    )

    def data_title(self, ctx: Any, data: Any) -> str:
        return "Rows & <values>"

    def data_rows(self, ctx: Any, data: Any) -> Any:
        return deferLater(reactor, 0.01, lambda: [("a", "1"), ("b<", '"2"')])

    def render_row(self, ctx: Any, data: Any) -> Any:
        ctx.fillSlots("name", data[0])
        ctx.fillSlots("value", data[1])
        return ctx.tag

    def render_next(self, ctx: Any, data: Any) -> Any:
        return url.here.child("next").add("page", "2")


class Broken(rend.Page):
    """
    Fails after part of the page was rendered, once a Deferred fired.
    """

    docFactory = loaders.stan(T.html[T.p["PARTIAL"], T.p(render=T.directive("broken"))])

    def render_broken(self, ctx: Any, data: Any) -> Any:
        return deferLater(reactor, 0.01, lambda: 1 / 0)


class Leaf(resource.Resource):
    """
    A plain twisted.web resource below the shim root.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"plain " + b"/".join(request.postpath)


class Root(rend.Page):
    """
    The site's root.
    """

    docFactory = loaders.stan(T.p["root"])
    child_table = Table()
    child_broken = Broken()
    child_plain = Leaf()

    def child_dir(self, ctx: Any) -> Any:
        page = rend.Page(
            docFactory=loaders.stan(T.p["dir: ", T.invisible(render=self.segments)])
        )
        page.addSlash = True
        return page

    def segments(self, ctx: Any, data: Any) -> str:
        return "/".join(inevow.ICurrentSegments(ctx))


class NevowSiteTests(TestCase):
    """
    A live site.
    """

    timeout = 30

    async def setUp(self) -> None:
        self.site = appserver.NevowSite(Root())
        self.port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            self.site
        )
        self.addCleanup(self.port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=pool, connectTimeout=5)

    async def fetch(
        self, path: str, method: bytes = b"GET"
    ) -> Tuple[int, Dict[bytes, Optional[bytes]], bytes]:
        """
        Request C{path} and read the whole response.
        """
        address = f"http://127.0.0.1:{self.port.getHost().port}{path}"
        request = self.agent.request(method, address.encode(), Headers())
        request.addTimeout(10, reactor)
        response = await request
        collector = _BodyCollector()
        response.deliverBody(collector)
        body = await collector.done
        headers = {
            name: (response.headers.getRawHeaders(name) or [None])[0]
            for name in (b"content-type", b"location")
        }
        # The client keeps Content-Length for itself, as the length.
        if isinstance(response.length, int):
            headers[b"content-length"] = b"%d" % (response.length,)
        return response.code, headers, body

    async def test_page(self) -> None:
        """
        A page with a Deferred data method, a sequence and escaped values
        is served whole, as UTF-8 HTML with its length.
        """
        code, headers, body = await self.fetch("/table")
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"content-type"], b"text/html; charset=utf-8")
        self.assertEqual(headers[b"content-length"], b"%d" % len(body))
        port = self.port.getHost().port
        self.assertEqual(
            body,
            b"<html><body><h1>Rows &amp; &lt;values&gt;</h1>\n"
            b"<table><tr><th>name</th><th>value</th></tr>"
            b'<tr><td>a</td><td>1</td></tr><tr><td>b&lt;</td><td>"2"</td></tr></table>\n'
            b'<a href="http://127.0.0.1:%d/table/next?page=2">next</a></body></html>'
            % port,
        )

    async def test_rootAndTwistedChild(self) -> None:
        """
        The root renders at C{/}; a twisted.web leaf below it gets the rest
        of the path.
        """
        self.assertEqual((await self.fetch("/"))[2], b"<p>root</p>")
        code, headers, body = await self.fetch("/plain/a/b")
        self.assertEqual(
            (code, headers[b"content-type"], body), (200, b"text/plain", b"plain a/b")
        )

    async def test_addSlash(self) -> None:
        """
        A directory-like page redirects to its URL with a slash.
        """
        code, headers, _ = await self.fetch("/dir")
        self.assertEqual(code, 302)
        port = self.port.getHost().port
        self.assertEqual(headers[b"location"], b"http://127.0.0.1:%d/dir/" % port)
        code, _, body = await self.fetch("/dir/")
        self.assertEqual((code, body), (200, b"<p>dir: dir/</p>"))

    async def test_notFound(self) -> None:
        """
        A missing page is a 404.
        """
        code, _, body = await self.fetch("/missing")
        self.assertEqual(code, 404)
        self.assertIn(b"Page Not Found", body)

    async def test_failure(self) -> None:
        """
        A page that fails after a Deferred is a 500 with none of the page.
        """
        code, _, body = await self.fetch("/broken")
        self.assertEqual(code, 500)
        self.assertNotIn(b"PARTIAL", body)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_head(self) -> None:
        """
        HEAD gets the headers of the page, and no body.
        """
        code, headers, body = await self.fetch("/", method=b"HEAD")
        self.assertEqual(
            (code, headers[b"content-type"], body),
            (200, b"text/html; charset=utf-8", b""),
        )

    async def test_concurrent(self) -> None:
        """
        Requests waiting on Deferreds do not mix up their pages.
        """
        results = await _gather([self.fetch("/table") for _ in range(5)])
        self.assertEqual(len({body for _, _, body in results}), 1)


async def _gather(coroutines: Any) -> Any:
    result: Any = await gatherResults([Deferred.fromCoroutine(c) for c in coroutines])
    return result


class _BodyCollector(Protocol):
    """
    Reads a response body.
    """

    def __init__(self) -> None:
        self.chunks: List[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)
