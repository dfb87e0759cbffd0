# -*- test-case-name: tests.integration.test_cache_site -*-
"""
L{tlcache.CachedPage} on real loopback sockets with the real reactor:
concurrent clients of a slow page, gzip, conditional requests, two
processes' worth of sites sharing one real memcached, and a reactor left
clean (trial's dirty-reactor check).
"""

from __future__ import annotations

import zlib
from typing import Any, Dict, List, Optional, Tuple

import pytest
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import GzipEncoderFactory

from tests.integration._servers import startMemcached
from tests.integration._support import reactor, responseBody, waitUntil
from tlcache import CachedPage, RenderCache
from tlcache.memcachestore import MemcacheCacheStore
from tlcache.nevow import appserver, loaders, rend
from tlcache.nevow import tags as T

pytestmark = pytest.mark.integration


class SlowTable(CachedPage, rend.Page):
    """
    A table whose data takes 50 ms to arrive (a slow query), counted.
    """

    cacheStatusHeader = b"x-cache"
    docFactory = loaders.stan(
        T.table(data=T.directive("rows"), render=T.directive("sequence"))[
            T.tr(pattern="item", render=T.directive("row"))
        ]
    )

    def __init__(self, cache: RenderCache, renders: List[int]) -> None:
        super().__init__()
        self.renderCache = cache
        self.renders = renders

    def data_rows(self, ctx: Any, data: Any) -> Deferred:
        self.renders.append(1)
        return deferLater(reactor, 0.05, lambda: [(i, i * i) for i in range(100)])

    def render_row(self, ctx: Any, data: Tuple[int, int]) -> Any:
        return ctx.tag[T.td[str(data[0])], T.td[str(data[1])]]


class CacheSiteTests(TestCase):
    """
    One site, real clients.
    """

    async def serve(self, root: Any) -> str:
        site = appserver.NevowSite(root)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=pool)
        return f"http://127.0.0.1:{port.getHost().port}"

    async def fetch(
        self, url: str, headers: Optional[Dict[bytes, bytes]] = None
    ) -> Tuple[int, Headers, bytes]:
        response = await self.agent.request(
            b"GET",
            url.encode("ascii"),
            Headers({k: [v] for k, v in (headers or {}).items()}),
        )
        body = await responseBody(response)
        return response.code, response.headers, body

    async def test_concurrentClientsShareOneRender(self) -> None:
        """
        50 clients asking at once for a page that takes 50 ms cause one
        render; all get the same complete page.
        """
        renders: List[int] = []
        root = Resource()
        root.putChild(b"table", SlowTable(RenderCache(clock=reactor), renders))
        base = await self.serve(root)
        results = await DeferredList(
            [Deferred.fromCoroutine(self.fetch(base + "/table")) for _ in range(50)],
            consumeErrors=True,
        )
        bodies = set()
        for ok, result in results:
            self.assertTrue(ok, result)
            code, _, body = result
            self.assertEqual(code, 200)
            bodies.add(body)
        self.assertEqual(len(bodies), 1)
        self.assertIn(b"<td>99</td><td>9801</td>", bodies.pop())
        self.assertEqual(len(renders), 1)

    async def test_gzipAndConditional(self) -> None:
        """
        Behind gzip, a gzip client and a plain client get the same page
        from one render, and the ETag gives a 304.
        """
        renders: List[int] = []
        root = Resource()
        page = SlowTable(RenderCache(clock=reactor), renders)
        root.putChild(b"table", EncodingResourceWrapper(page, [GzipEncoderFactory()]))
        base = await self.serve(root)
        code, headers, plain = await self.fetch(base + "/table")
        self.assertEqual(code, 200)
        code, headers, zipped = await self.fetch(
            base + "/table", {b"Accept-Encoding": b"gzip"}
        )
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertEqual(zlib.decompress(zipped, 16 + zlib.MAX_WBITS), plain)
        etag = headers.getRawHeaders(b"etag")[0]
        code, headers, body = await self.fetch(
            base + "/table", {b"If-None-Match": etag}
        )
        self.assertEqual((code, body), (304, b""))
        self.assertEqual(len(renders), 1)


class SharedThroughMemcachedTests(TestCase):
    """
    Two sites (as two processes behind tlbalance) with their render caches
    in one real memcached render each page once between them.
    """

    async def test_renderedOnceBetweenTwoSites(self) -> None:
        """
        The second site answers from what the first rendered; after an
        invalidation from the second, the first renders again.
        """
        server = await startMemcached(self)
        renders: List[int] = []
        bases = []
        caches = []
        for _ in range(2):
            store = MemcacheCacheStore.fromEndpoint(
                reactor, server.endpoint(), nearTTL=0
            )
            store.startService()
            self.addCleanup(store.stopService)
            await waitUntil(store.isConnected, 15.0, "memcached connecting")
            cache = RenderCache(store, reactor)
            caches.append(cache)
            root = Resource()
            root.putChild(b"table", SlowTable(cache, renders))
            site = appserver.NevowSite(root)
            port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
                site
            )
            self.addCleanup(port.stopListening)
            bases.append(f"http://127.0.0.1:{port.getHost().port}/table")
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool)

        async def fetch(url: str) -> Tuple[bytes, bytes]:
            response = await agent.request(
                b"GET", url.encode("ascii"), Headers({b"host": [b"shop.example"]})
            )
            body = await responseBody(response)
            return response.headers.getRawHeaders(b"x-cache")[0], body

        status, first = await fetch(bases[0])
        self.assertEqual(status, b"MISS")
        # The first client is answered as the render ends; the copy reaches
        # memcached a round trip later.
        await waitUntil(lambda: caches[0].stats()["stored"] == 1, 15.0, "storing")
        status, second = await fetch(bases[1])
        self.assertEqual((status, second), (b"HIT", first))
        self.assertEqual(len(renders), 1)
        await caches[1].invalidatePath(b"shop.example", b"/table")
        status, _ = await fetch(bases[0])
        self.assertEqual(status, b"MISS")
        self.assertEqual(len(renders), 2)
