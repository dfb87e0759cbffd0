# -*- test-case-name: tests.integration.test_fragments_site -*-
"""
A L{tlcache.nevow.appserver.NevowSite} on a real loopback socket serving a
page with a refreshing cached fragment whose renderer takes 0.1 s: after
the first request, requests are answered from the kept bytes, even while a
refresh is running.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from tests.integration._support import responseBody
from tlcache.fragment import FragmentCache, FragmentRequestError, IFragmentCache
from tlcache.nevow import appserver, inevow, loaders, rend
from tlcache.nevow import tags as T

pytestmark = pytest.mark.integration

reactor: Any = _reactor


class SlowNews(rend.Page):
    """
    A page whose cached fragment renders through a 0.1 s Deferred. The
    second render (the first refresh) also waits for C{gate}, which the test
    opens.
    """

    docFactory = loaders.stan(
        T.html[
            T.body[
                T.cached(key="news", refresh=0.05)[T.p(render=T.directive("news"))],
                T.p["static part"],
            ]
        ]
    )

    def __init__(self) -> None:
        super().__init__()
        self.renders = 0
        self.refreshStarted: Deferred[None] = Deferred()
        self.gate: Deferred[None] = Deferred()
        self.secondProduced: Deferred[None] = Deferred()

    def render_news(self, ctx: Any, data: Any) -> Any:
        self.renders += 1
        number = self.renders
        tag = ctx.tag

        def produce(_: Any = None) -> Any:
            if number == 2:
                self.secondProduced.callback(None)
            return tag[f"render {number}"]

        if number == 2:
            self.refreshStarted.callback(None)
            return self.gate.addCallback(
                lambda _: deferLater(reactor, 0.1, lambda: None)
            ).addCallback(produce)
        if number == 1:
            return deferLater(reactor, 0.1, produce)
        return produce()


class RequestHungry(rend.Page):
    """
    A page whose cached fragment wants the request: refused.
    """

    docFactory = loaders.stan(
        T.html[T.cached(key="hungry", refresh=1)[T.p(render=T.directive("uri"))]]
    )

    def render_uri(self, ctx: Any, data: Any) -> Any:
        return inevow.IRequest(ctx).uri


class Root(rend.Page):
    """
    The site's root.
    """

    docFactory = loaders.stan(T.p["root"])

    def __init__(self) -> None:
        super().__init__()
        self.news = SlowNews()
        self.putChild("news", self.news)
        self.putChild("hungry", RequestHungry())


class FragmentSiteTests(TestCase):
    """
    A live site with a fragment cache remembered on it.
    """

    timeout = 30

    async def setUp(self) -> None:
        self.fragments = FragmentCache(reactor)
        self.fragments.startService()
        self.addCleanup(self.fragments.stopService)
        self.root = Root()
        site = appserver.NevowSite(self.root)
        site.remember(self.fragments, IFragmentCache)
        self.port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            site
        )
        self.addCleanup(self.port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=pool, connectTimeout=5)

    async def fetch(self, path: str) -> Tuple[int, bytes]:
        """
        GET C{path}: the status code and the body.
        """
        address = f"http://127.0.0.1:{self.port.getHost().port}{path}"
        request = self.agent.request(b"GET", address.encode(), Headers())
        request.addTimeout(10, reactor)
        response = await request
        body = await responseBody(response)
        return response.code, body

    async def fetchMany(self, path: str, count: int) -> List[Tuple[int, bytes]]:
        """
        GET C{path} C{count} times at once.
        """
        results: List[Tuple[int, bytes]] = await gatherResults(
            [Deferred.fromCoroutine(self.fetch(path)) for _ in range(count)]
        )
        return results

    async def test_requestsDoNotWaitForRefresh(self) -> None:
        """
        The first requests wait for the one first render; later requests,
        made while a refresh is held up, get the bytes of the first render
        and start no render of their own; once the refresh completes, its
        bytes are served.
        """
        news = self.root.news
        first = await self.fetchMany("/news", 3)
        expected = b"<html><body><p>render 1</p><p>static part</p></body></html>"
        self.assertEqual(first, [(200, expected)] * 3)
        self.assertEqual(news.renders, 1)

        # The timer starts the first refresh, which stays blocked on the gate.
        await news.refreshStarted
        await deferLater(reactor, 0, lambda: None)
        during = await self.fetchMany("/news", 5)
        self.assertEqual(during, [(200, expected)] * 5)
        self.assertEqual(news.renders, 2)
        stats = self.fragments.stats()
        self.assertEqual((stats["renders"], stats["misses"], stats["hits"]), (1, 3, 5))

        news.gate.callback(None)
        await news.secondProduced
        # The bytes are stored as the render completes, before the reactor
        # runs anything else.
        await deferLater(reactor, 0, lambda: None)
        code, body = await self.fetch("/news")
        self.assertEqual(code, 200)
        self.assertNotIn(b"render 1", body)
        self.assertRegex(body, rb"<p>render ([2-9]|\d\d+)</p>")
        self.assertEqual(self.fragments.stats()["renders"], 1)

    async def test_requestRefused(self) -> None:
        """
        A fragment whose renderer wants the request makes its page a 500,
        with an error naming the fragment.
        """
        code, body = await self.fetch("/hungry")
        self.assertEqual(code, 500)
        self.assertNotIn(b"/hungry", body)
        (error,) = self.flushLoggedErrors(FragmentRequestError)
        self.assertIn("fragment 'hungry' is refreshed in the background", str(error))

    async def test_stopLeavesNothingBehind(self) -> None:
        """
        Stopping the cache while a refresh is running abandons it; the
        reactor is left clean (trial checks), and the bytes are still
        served.
        """
        news = self.root.news
        await self.fetch("/news")
        await news.refreshStarted
        await deferLater(reactor, 0, lambda: None)
        self.fragments.stopService()
        self.assertTrue(news.gate.called)
        code, body = await self.fetch("/news")
        self.assertEqual((code, news.renders), (200, 2))
        self.assertIn(b"render 1", body)
