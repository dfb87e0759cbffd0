"""
Tests for the render cache's memory under a flood of long unique URLs,
driven through a real twisted.web site over in-memory connections: the
store, the key memo and the maps of held keys stay within the store's
budget, on CPython (where tracemalloc counts what is allocated).
"""

from __future__ import annotations

from typing import Any, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server

from tests.httpdriver import SiteDriver
from tests.unit.test_cachememory import traced
from tlcache import CachedPage, RenderCache
from tlcache.store import MemoryCacheStore


class Item(CachedPage, resource.Resource):
    """
    A page per URL: small, every sixteenth mid-size, and every eighth one
    setting a cookie (so it is refused, and its key held as uncacheable).
    """

    isLeaf = True

    def __init__(self, cache: RenderCache) -> None:
        resource.Resource.__init__(self)
        self.renderCache = cache
        self.renders = 0

    def render_GET(self, request: Any) -> bytes:
        self.renders += 1
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        if self.renders % 8 == 0:
            request.addCookie(b"seen", b"1")
        size = 8 * 1024 if self.renders % 16 == 1 else 200
        return (b"<p>%d</p>" % self.renders).ljust(size, b"x")


def site(budget: int) -> Tuple[RenderCache, SiteDriver]:
    """
    A render cache with a memory store of C{budget} bytes, and a site of
    L{Item} pages on it.
    """
    clock = Clock()
    store = MemoryCacheStore(clock, maxBytes=budget, maxEntryBytes=budget)
    cache = RenderCache(store, clock)
    return cache, SiteDriver(server.Site(Item(cache), reactor=clock))


def url(index: int) -> bytes:
    """
    A distinct URL of 2 KB.
    """
    path = b"/item/%08d/" % index
    return path + b"a" * (2048 - len(path))


class LongURLFloodTests(SynchronousTestCase):
    """
    A flood of long unique URLs cannot take the render cache's memory past
    its store's budget.
    """

    def test_longURLFloodStaysWithinBudget(self) -> None:
        """
        Twenty times the store's budget of distinct 2 KB URLs, through the
        site, leave the render cache (its store, its key memo, the keys it
        holds as uncacheable) holding at most 1.5 times the budget and a
        small fixed baseline.
        """
        budget = 256 * 1024
        warm, driver = site(budget)
        driver.get(url(0))
        driver.close()

        def fill() -> RenderCache:
            cache, driver = site(budget)
            offered = index = 0
            while offered < 20 * budget:
                index += 1
                response = driver.get(url(index))
                self.assertEqual(response.code, 200)
                offered += 2048 + len(response.body)
                driver.close()
            return cache

        used, cache = traced(fill)
        stats = cache.stats()
        self.assertGreater(stats["evictions"], 0)
        self.assertGreater(stats["notStored"], 0)
        self.assertLessEqual(used, 1.5 * budget + 32 * 1024)
