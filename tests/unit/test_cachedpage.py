"""
Tests for L{tlcache.page}: the whole-page render cache, driven through a
real twisted.web site over in-memory connections, one test (at least) per
row of the footgun table in shared/reference/nevow_cache.md §8.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import zlib
from typing import Any, Dict, List, Optional

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPullProducer, IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, server
from twisted.web.resource import EncodingResourceWrapper
from twisted.web.server import NOT_DONE_YET, GzipEncoderFactory
from twisted.web.util import Redirect
from zope.interface import Interface, implementer

from tests.httpdriver import SiteDriver
from tlcache import CachedPage, RenderCache
from tlcache.keys import familyOfKey, pageKey
from tlcache.nevow import appserver, inevow, loaders, rend
from tlcache.nevow import tags as T
from tlcache.store import ICacheStore, MemoryCacheStore


class Counter:
    """
    Counts renders.
    """

    def __init__(self) -> None:
        self.renders = 0


class Plain(CachedPage, resource.Resource):
    """
    A plain twisted.web resource, cached; its body names the render.
    """

    isLeaf = True
    cacheStatusHeader = b"x-cache"

    def __init__(self, cache: RenderCache, counter: Counter, **knobs: Any) -> None:
        resource.Resource.__init__(self)
        self.renderCache = cache
        self.counter = counter
        for name, value in knobs.items():
            setattr(self, name, value)

    def render_GET(self, request: Any) -> Any:
        self.counter.renders += 1
        return self.body(request)

    def body(self, request: Any) -> bytes:
        return b"<p>render %d of %s</p>" % (self.counter.renders, request.uri)


class Held(Plain):
    """
    Renders when told to: C{release()} finishes every render waiting.
    """

    def __init__(self, cache: RenderCache, counter: Counter, **knobs: Any) -> None:
        super().__init__(cache, counter, **knobs)
        self.pending: List[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.counter.renders += 1
        self.pending.append(request)
        return NOT_DONE_YET

    def release(self, code: int = 200, body: Optional[bytes] = None) -> None:
        pending, self.pending = self.pending, []
        for request in pending:
            request.setResponseCode(code)
            request.write(body if body is not None else self.body(request))
            request.finish()


class CacheTestCase(SynchronousTestCase):
    """
    A clock, a render cache on it, and a way to make sites.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryCacheStore(self.clock)
        self.cache = RenderCache(self.store, self.clock)
        self.counter = Counter()
        self.drivers: List[SiteDriver] = []

    def tearDown(self) -> None:
        for driver in self.drivers:
            driver.close()
        # Footgun 16: nothing of the cache's is left on the clock.
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def driver(self, root: Any, nevow: bool = False) -> SiteDriver:
        if nevow:
            site: Any = appserver.NevowSite(root, reactor=self.clock)
        else:
            site = server.Site(root, reactor=self.clock)
        driver = SiteDriver(site)
        self.drivers.append(driver)
        return driver

    def plain(self, **knobs: Any) -> SiteDriver:
        return self.driver(Plain(self.cache, self.counter, **knobs))


class HitTests(CacheTestCase):
    """
    The basic contract: one render, then copies.
    """

    def test_secondRequestIsServedFromTheCache(self) -> None:
        """
        The first GET renders; the next ones get the same bytes without a
        render, with the same headers.
        """
        site = self.plain()
        first = site.get(b"/a")
        second = site.get(b"/a")
        self.assertEqual(first.code, 200)
        self.assertEqual(first.body, b"<p>render 1 of /a</p>")
        self.assertEqual(second.body, first.body)
        self.assertEqual(second.header(b"content-type"), first.header(b"content-type"))
        self.assertEqual(second.header(b"x-cache"), b"HIT")
        self.assertEqual(first.header(b"x-cache"), b"MISS")
        self.assertEqual(self.counter.renders, 1)
        self.assertEqual(self.cache.stats()["hits"], 1)

    def test_hitCarriesValidatorsAndAge(self) -> None:
        """
        A copy says its ETag and when it was rendered; a stale copy also
        says how old it is.
        """
        site = self.plain(cacheTimeout=10, cacheGrace=30)
        site.get(b"/a")
        self.clock.advance(7)
        hit = site.get(b"/a")
        self.assertTrue(hit.header(b"etag").startswith(b'"'))
        self.assertEqual(hit.header(b"last-modified"), b"Thu, 01 Jan 1970 00:00:00 GMT")
        self.assertIsNone(hit.header(b"age"))
        self.clock.advance(5)
        stale = site.get(b"/a")
        self.assertEqual(stale.header(b"x-cache"), b"STALE")
        self.assertEqual(stale.header(b"age"), b"12")
        self.assertEqual(stale.header(b"etag"), hit.header(b"etag"))

    def test_expiredAfterTimeoutAndHardLimit(self) -> None:
        """
        Past C{cacheTimeout} plus the stale windows, the page renders again.
        """
        site = self.plain(cacheTimeout=10, cacheGrace=0, cacheStaleIfError=0)
        site.get(b"/a")
        self.clock.advance(10)
        again = site.get(b"/a")
        self.assertEqual(again.body, b"<p>render 2 of /a</p>")

    def test_postIsNeverCached(self) -> None:
        """
        Only GET and HEAD go through the cache.
        """

        class Form(Plain):
            def render_POST(self, request: Any) -> bytes:
                self.counter.renders += 1
                return b"posted"

        site = self.driver(Form(self.cache, self.counter))
        site.get(b"/f", method=b"POST")
        site.get(b"/f", method=b"POST")
        self.assertEqual(self.counter.renders, 2)
        self.assertEqual(self.cache.stats()["entries"], 0)


class PersonalisationTests(CacheTestCase):
    """
    Footgun 1: one user's page never reaches another.
    """

    def test_sessionUsingPageIsNeverStored(self) -> None:
        """
        A page that counts visits in the session (Nevow's simple.py) shows
        each client its own count and its own cookie; nothing is stored.
        """

        class Visits(Plain):
            def render_GET(self, request: Any) -> bytes:
                self.counter.renders += 1
                session = request.getSession()
                visits = getattr(session, "visits", 0) + 1
                session.visits = visits
                return b"visit %d" % (visits,)

        site = self.driver(Visits(self.cache, self.counter))
        alice = site.get(b"/v")
        bob = site.get(b"/v")
        self.assertEqual(alice.body, b"visit 1")
        self.assertEqual(bob.body, b"visit 1")
        aliceCookie = alice.header(b"set-cookie").split(b";")[0]
        bobCookie = bob.header(b"set-cookie").split(b";")[0]
        self.assertNotEqual(aliceCookie, bobCookie)
        again = site.get(b"/v", headers={b"Cookie": aliceCookie})
        self.assertEqual(again.body, b"visit 2")
        self.assertEqual(site.get(b"/v").body, b"visit 1")
        self.assertEqual(self.cache.stats()["entries"], 0)
        for response in site.responses:
            response.disconnect()
        for session in list(site.site.sessions.values()):
            session.expire()

    def test_tlsessionPageIsNeverStored(self) -> None:
        """
        Below tlsession's SessionResource too: a page reading
        C{ISession(request)} is rendered for each client, never stored.
        """
        from tlsession import MemorySessionStore, SessionManager, sessionSite
        from tlsession.interfaces import ISession

        class Greeting(Plain):
            def render_GET(self, request: Any) -> bytes:
                self.counter.renders += 1
                session = ISession(request)
                name = session.get("name", "stranger")
                session["name"] = "known"
                return ("hello " + name).encode()

        store = MemorySessionStore(self.clock)
        store.startService()
        self.addCleanup(store.stopService)
        manager = SessionManager(store, self.clock)
        site = sessionSite(Greeting(self.cache, self.counter), manager)
        site._reactor = self.clock
        driver = SiteDriver(site)
        self.drivers.append(driver)
        first = driver.get(b"/g")
        self.assertEqual(first.body, b"hello stranger")
        cookie = first.header(b"set-cookie").split(b";")[0]
        self.assertEqual(
            driver.get(b"/g", headers={b"Cookie": cookie}).body, b"hello known"
        )
        self.assertEqual(driver.get(b"/g").body, b"hello stranger")
        self.assertEqual(self.cache.stats()["entries"], 0)

    def test_undeclaredCookieIsInvisibleToTheCachedRender(self) -> None:
        """
        A page that reads a cookie it did not declare renders, for the
        cache, as if there were none: Alice's name never lands in the copy
        Bob gets.
        """

        class Hello(Plain):
            def render_GET(self, request: Any) -> bytes:
                self.counter.renders += 1
                return b"hello " + (request.getCookie(b"user") or b"anonymous")

        site = self.driver(Hello(self.cache, self.counter))
        alice = site.get(b"/h", headers={b"Cookie": b"user=alice"})
        bob = site.get(b"/h", headers={b"Cookie": b"user=bob"})
        self.assertEqual(alice.body, b"hello anonymous")
        self.assertEqual(bob.body, b"hello anonymous")

    def test_declaredCookieVariesTheCopy(self) -> None:
        """
        A page that declares C{cookie:lang} gets a copy per value, and says
        C{Vary: Cookie}.
        """

        class Lang(Plain):
            cacheVary = ("cookie:lang",)

            def render_GET(self, request: Any) -> bytes:
                self.counter.renders += 1
                return b"lang " + (request.getCookie(b"lang") or b"-")

        site = self.driver(Lang(self.cache, self.counter))
        fr = site.get(b"/l", headers={b"Cookie": b"lang=fr; user=alice"})
        de = site.get(b"/l", headers={b"Cookie": b"lang=de"})
        fr2 = site.get(b"/l", headers={b"Cookie": b"user=bob; lang=fr"})
        self.assertEqual(
            (fr.body, de.body, fr2.body), (b"lang fr", b"lang de", b"lang fr")
        )
        self.assertEqual(self.counter.renders, 2)
        self.assertEqual(fr.header(b"vary"), b"cookie")
        self.assertEqual(fr2.header(b"vary"), b"cookie")

    def test_authorizationBypasses(self) -> None:
        """
        A request with credentials is rendered for itself, not answered
        from (or stored in) the cache.
        """
        site = self.plain()
        site.get(b"/a")
        private = site.get(b"/a", headers={b"Authorization": b"Basic YTpi"})
        self.assertEqual(private.body, b"<p>render 2 of /a</p>")
        self.assertEqual(private.header(b"x-cache"), b"BYPASS")
        self.assertEqual(site.get(b"/a").body, b"<p>render 1 of /a</p>")

    def test_sessionCookieBypasses(self) -> None:
        """
        A request with a session cookie (twisted.web's or tlsession's) is
        rendered for itself unless the page declares how it varies.
        """
        site = self.plain()
        site.get(b"/a")
        for cookie in (b"TWISTED_SESSION=abc", b"x=1; TLSESSION=abc"):
            response = site.get(b"/a", headers={b"Cookie": cookie})
            self.assertEqual(response.header(b"x-cache"), b"BYPASS")
        other = site.get(b"/a", headers={b"Cookie": b"theme=dark"})
        self.assertEqual(other.header(b"x-cache"), b"HIT")
        self.assertEqual(self.counter.renders, 3)

    def test_hostIsPartOfTheKey(self) -> None:
        """
        Footgun 9: the same path on two virtual hosts is two pages.
        """
        site = self.plain()
        one = site.get(b"/a", host=b"one.example")
        two = site.get(b"/a", host=b"two.example")
        self.assertEqual(self.counter.renders, 2)
        self.assertNotEqual(one.body + b"", b"")
        self.assertEqual(site.get(b"/a", host=b"ONE.example:80").body, one.body)
        self.assertEqual(two.header(b"x-cache"), b"MISS")

    def test_reorderedQueryIsOnePage(self) -> None:
        """
        Footgun 9: C{?a=1&b=2} and C{?b=2&a=1} share a copy.
        """
        site = self.plain()
        site.get(b"/q?a=1&b=2")
        again = site.get(b"/q?b=2&a=1")
        self.assertEqual(again.header(b"x-cache"), b"HIT")
        self.assertEqual(self.counter.renders, 1)

    def test_hostAllowList(self) -> None:
        """
        With C{cacheHosts}, made-up Host headers render uncached and fill
        nothing.
        """
        site = self.plain(cacheHosts=(b"example.com",))
        for index in range(20):
            site.get(b"/a", host=b"h%d.evil" % (index,))
        self.assertEqual(self.cache.stats()["entries"], 0)
        site.get(b"/a")
        self.assertEqual(self.cache.stats()["entries"], 1)


class CookieTests(CacheTestCase):
    """
    Footgun 2: Set-Cookie is never replayed.
    """

    def test_renderThatSetsACookieIsNotStored(self) -> None:
        """
        Each client gets its own render and its own cookie.
        """

        class Tracker(Plain):
            def render_GET(self, request: Any) -> bytes:
                self.counter.renders += 1
                request.addCookie(b"id", b"%d" % (self.counter.renders,))
                return b"tracked"

        site = self.driver(Tracker(self.cache, self.counter))
        first = site.get(b"/t")
        second = site.get(b"/t")
        self.assertEqual(first.header(b"set-cookie"), b"id=1")
        self.assertEqual(second.header(b"set-cookie"), b"id=2")
        self.assertEqual(self.cache.stats()["entries"], 0)

    def test_privateResponseIsNotStored(self) -> None:
        """
        C{Cache-Control: private} or C{no-store} from the page keeps it out.
        """
        for value in (b"private", b"no-store, max-age=0"):

            class Private(Plain):
                cacheControl = value

                def render_GET(self, request: Any) -> bytes:
                    self.counter.renders += 1
                    request.setHeader(b"cache-control", self.cacheControl)
                    return b"mine"

            self.counter.renders = 0
            site = self.driver(Private(self.cache, self.counter))
            site.get(b"/p" + value[:2])
            site.get(b"/p" + value[:2])
            self.assertEqual(self.counter.renders, 2)

    def test_undeclaredVaryIsNotStored(self) -> None:
        """
        A response that says it varies on a header the page did not declare
        is not stored (the key could not tell its variants apart).
        """

        class Sniffer(Plain):
            def render_GET(self, request: Any) -> bytes:
                self.counter.renders += 1
                request.setHeader(b"vary", b"User-Agent")
                return b"for your browser"

        site = self.driver(Sniffer(self.cache, self.counter))
        site.get(b"/s")
        site.get(b"/s")
        self.assertEqual(self.counter.renders, 2)


class SingleFlightTests(CacheTestCase):
    """
    Footgun 3: concurrent misses run one render.
    """

    def test_hundredConcurrentMissesRenderOnce(self) -> None:
        """
        100 requests for a page being rendered wait for that one render and
        all get it.
        """
        page = Held(self.cache, self.counter)
        site = self.driver(page)
        responses = [site.request(b"/slow") for _ in range(100)]
        self.assertEqual(self.counter.renders, 1)
        page.release()
        self.assertEqual({r.code for r in responses}, {200})
        self.assertEqual({r.body for r in responses}, {b"<p>render 1 of /slow</p>"})
        self.assertEqual(self.cache.stats()["lockWaits"], 99)

    def test_disconnectingClientsDoNotCancelTheRender(self) -> None:
        """
        The first client and a waiter go away; the render carries on and the
        others get it.
        """
        page = Held(self.cache, self.counter)
        site = self.driver(page)
        first = site.request(b"/slow")
        waiter = site.request(b"/slow")
        stays = site.request(b"/slow")
        first.disconnect()
        waiter.disconnect()
        page.release()
        self.assertEqual(stays.body, b"<p>render 1 of /slow</p>")
        self.assertEqual(site.get(b"/slow").header(b"x-cache"), b"HIT")
        self.assertEqual(self.counter.renders, 1)

    def test_firstClientIsStreamed(self) -> None:
        """
        Footgun 13: the first client gets each chunk as the page writes it,
        and the whole response is kept.
        """

        class Streaming(Plain):
            def render_GET(self, request: Any) -> Any:
                self.counter.renders += 1
                self.request = request
                request.write(b"<p>first</p>")
                return NOT_DONE_YET

        page = Streaming(self.cache, self.counter)
        site = self.driver(page)
        first = site.request(b"/s")
        self.assertIn(b"<p>first</p>", first.transport.value())
        self.assertFalse(first.complete)
        page.request.write(b"<p>second</p>")
        page.request.finish()
        self.assertEqual(first.body, b"<p>first</p><p>second</p>")
        hit = site.get(b"/s")
        self.assertEqual(hit.body, b"<p>first</p><p>second</p>")
        self.assertEqual(hit.header(b"content-length"), b"25")

    def test_waiterTimesOutAndRendersItself(self) -> None:
        """
        A waiter that waits longer than C{lockTimeout} renders for itself;
        its render is not stored.
        """
        page = Held(self.cache, self.counter)
        site = self.driver(page)
        site.request(b"/slow")
        waiter = site.request(b"/slow")
        self.clock.advance(self.cache.lockTimeout)
        self.assertEqual(self.counter.renders, 2)
        self.assertEqual(self.cache.stats()["lockTimeouts"], 1)
        page.release()
        self.assertEqual(waiter.code, 200)

    def test_hungRenderDoesNotBlockForever(self) -> None:
        """
        After C{lockAge} a new request starts a new render instead of
        waiting behind a render that never ends.
        """
        page = Held(self.cache, self.counter)
        site = self.driver(page)
        site.request(b"/slow")
        self.clock.advance(self.cache.lockAge)
        site.request(b"/slow")
        self.assertEqual(self.counter.renders, 2)
        page.release()

    def test_uncacheableLeaderReleasesWaitersToRenderThemselves(self) -> None:
        """
        When the shared render may not be stored, each waiter renders for
        itself; for a while after, requests do not queue at all.
        """

        class HeldTracker(Held):
            def release(self, code: int = 200, body: Optional[bytes] = None) -> None:
                for request in self.pending:
                    request.addCookie(b"id", b"1")
                super().release(code, body)

        page = HeldTracker(self.cache, self.counter)
        site = self.driver(page)
        first = site.request(b"/t")
        others = [site.request(b"/t") for _ in range(3)]
        page.release()
        self.assertEqual(self.counter.renders, 4)
        page.release()
        self.assertTrue(first.complete)
        self.assertTrue(all(o.complete for o in others))
        site.request(b"/t")
        site.request(b"/t")
        self.assertEqual(self.cache.stats()["lockWaits"], 3)
        page.release()


class StaleTests(CacheTestCase):
    """
    Footguns 4, 5 and 12: stale while revalidate, failures, the hard limit.
    """

    def test_staleServedWhileOneRefreshRuns(self) -> None:
        """
        After C{cacheTimeout}, requests get the old copy at once while a
        single background render replaces it.
        """
        page = Held(self.cache, self.counter, cacheTimeout=10, cacheGrace=30)
        site = self.driver(page)
        site.request(b"/p")
        page.release()
        self.clock.advance(11)
        stale = [site.get(b"/p") for _ in range(5)]
        self.assertEqual({s.body for s in stale}, {b"<p>render 1 of /p</p>"})
        self.assertEqual({s.header(b"x-cache") for s in stale}, {b"STALE"})
        self.assertEqual(self.counter.renders, 2)
        page.release()
        fresh = site.get(b"/p")
        self.assertEqual(fresh.body, b"<p>render 2 of /p</p>")
        self.assertEqual(fresh.header(b"x-cache"), b"HIT")
        self.assertEqual(self.cache.stats()["refreshes"], 1)

    def test_failedRefreshKeepsTheOldCopy(self) -> None:
        """
        A refresh that fails leaves the old copy in place; it is counted;
        after the grace window the old copy stands in for the error until
        the stale-if-error limit.
        """
        page = Held(
            self.cache,
            self.counter,
            cacheTimeout=10,
            cacheGrace=5,
            cacheStaleIfError=60,
        )
        site = self.driver(page)
        site.request(b"/p")
        page.release()
        self.clock.advance(11)
        site.get(b"/p")
        page.release(500, b"oops")
        self.assertEqual(self.cache.stats()["refreshFailures"], 1)
        self.assertEqual(site.get(b"/p").body, b"<p>render 1 of /p</p>")
        self.clock.advance(10)
        standIn = site.request(b"/p")
        page.release(503, b"down")
        self.assertEqual(standIn.code, 200)
        self.assertEqual(standIn.body, b"<p>render 1 of /p</p>")
        self.assertEqual(self.cache.stats()["staleIfError"], 2)

    def test_noStaleCopyPastTheHardLimit(self) -> None:
        """
        Footgun 12: past C{cacheMaxStale}, a failing page gives its error,
        not an ever older copy.
        """
        page = Held(
            self.cache,
            self.counter,
            cacheTimeout=10,
            cacheGrace=5,
            cacheStaleIfError=20,
        )
        site = self.driver(page)
        site.request(b"/p")
        page.release()
        self.clock.advance(31)
        error = site.request(b"/p")
        page.release(500, b"broken")
        self.assertEqual(error.code, 500)
        self.assertEqual(error.body, b"broken")

    def test_exceptionInRefreshKeepsTheOldCopy(self) -> None:
        """
        A render that raises counts as a failure like a 500.
        """
        calls = []

        class Flaky(Plain):
            def render_GET(self, request: Any) -> bytes:
                calls.append(request)
                if len(calls) > 1:
                    raise RuntimeError("database gone")
                return b"good"

        site = self.driver(Flaky(self.cache, self.counter, cacheTimeout=10))
        site.get(b"/f")
        self.clock.advance(11)
        self.assertEqual(site.get(b"/f").body, b"good")
        self.assertEqual(len(calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(site.get(b"/f").body, b"good")


class ErrorTests(CacheTestCase):
    """
    Footgun 5: errors and redirects are never stored, and evict.
    """

    def test_errorsAreNotStored(self) -> None:
        """
        A 500 and a render that raises are not kept.
        """
        page = Held(self.cache, self.counter)
        site = self.driver(page)
        first = site.request(b"/e")
        page.release(500, b"no")
        self.assertEqual(first.code, 500)
        second = site.request(b"/e")
        page.release()
        self.assertEqual(second.code, 200)
        self.assertEqual(self.counter.renders, 2)

    def test_notFoundEvictsTheOldCopy(self) -> None:
        """
        The nginx lesson: a page that now answers 404 (or redirects) drops
        the copy it replaces instead of leaving it to be served.
        """
        page = Held(self.cache, self.counter, cacheTimeout=10, cacheGrace=30)
        site = self.driver(page)
        site.request(b"/gone")
        page.release()
        self.clock.advance(11)
        site.get(b"/gone")
        page.release(404, b"not here")
        after = site.request(b"/gone")
        self.assertEqual(self.counter.renders, 3)
        page.release(404, b"not here")
        self.assertEqual(after.code, 404)

    def test_redirectIsNotStored(self) -> None:
        """
        A redirect is passed on and not kept.
        """

        class Moved(CachedPage, Redirect):
            renderCache = self.cache

            def render(self, request: Any) -> Any:
                self.calls = getattr(self, "calls", 0) + 1
                return super().render(request)

        moved = Moved(b"/elsewhere")
        site = self.driver(moved)
        self.assertEqual(site.get(b"/").code, 302)
        self.assertEqual(site.get(b"/").code, 302)
        self.assertEqual(self.cache.stats()["entries"], 0)


class BoundsTests(CacheTestCase):
    """
    Footgun 6: memory stays bounded.
    """

    def test_tenThousandRandomQueriesStayUnderBudget(self) -> None:
        """
        A flood of distinct query strings evicts, it does not grow.
        """
        self.store = MemoryCacheStore(
            self.clock, maxBytes=256 * 1024, maxEntryBytes=64 * 1024
        )
        self.cache = RenderCache(self.store, self.clock)
        site = self.plain()
        rng = random.Random(5)
        for _ in range(10000):
            response = site.get(b"/search?x=%d" % (rng.getrandbits(64),))
            self.assertEqual(response.code, 200)
            response.disconnect()
        site.responses = []
        stats = self.cache.stats()
        self.assertLessEqual(stats["bytes"], 256 * 1024)
        self.assertLessEqual(stats["entries"], 256)
        self.assertGreater(stats["evictions"], 9000)

    def test_oversizedResponseIsServedNotStored(self) -> None:
        """
        A response over C{maxEntryBytes} reaches its client whole and is
        not kept.
        """
        self.cache.maxEntryBytes = 1000

        class Big(Plain):
            def render_GET(self, request: Any) -> bytes:
                self.counter.renders += 1
                return b"x" * 5000

        site = self.driver(Big(self.cache, self.counter))
        self.assertEqual(len(site.get(b"/big").body), 5000)
        self.assertEqual(len(site.get(b"/big").body), 5000)
        self.assertEqual(self.counter.renders, 2)


class HeadTests(CacheTestCase):
    """
    Footgun 7: HEAD is answered from the GET copy and never fills it alone.
    """

    def test_headFirstThenGet(self) -> None:
        """
        A HEAD on a miss is answered from a GET render, which is kept: the
        GET after it is a hit with the whole body.
        """
        site = self.plain()
        head = site.get(b"/h", method=b"HEAD")
        self.assertEqual(head.code, 200)
        self.assertEqual(head.header(b"content-length"), b"21")
        self.assertEqual(head.transport.value().split(b"\r\n\r\n", 1)[1], b"")
        get = site.get(b"/h")
        self.assertEqual(get.body, b"<p>render 1 of /h</p>")
        self.assertEqual(get.header(b"x-cache"), b"HIT")
        self.assertEqual(self.counter.renders, 1)

    def test_headOnAHit(self) -> None:
        """
        A HEAD on a hit has the copy's length and no body.
        """
        site = self.plain()
        site.get(b"/h")
        head = site.get(b"/h", method=b"HEAD")
        self.assertEqual(head.header(b"content-length"), b"21")
        self.assertEqual(head.transport.value().split(b"\r\n\r\n", 1)[1], b"")


class EncodingTests(CacheTestCase):
    """
    Footgun 8: the bytes are kept before gzip.
    """

    def test_gzipWrappedPage(self) -> None:
        """
        Behind twisted.web's gzip wrapper, a gzip client gets gzip and a
        plain client the plain page, from one render.
        """
        page = Plain(self.cache, self.counter)
        root = resource.Resource()
        root.putChild(b"g", EncodingResourceWrapper(page, [GzipEncoderFactory()]))
        site = self.driver(root)
        zipped = site.get(b"/g", headers={b"Accept-Encoding": b"gzip"})
        plain = site.get(b"/g")
        zipped2 = site.get(b"/g", headers={b"Accept-Encoding": b"gzip"})
        self.assertEqual(plain.body, b"<p>render 1 of /g</p>")
        self.assertIsNone(plain.header(b"content-encoding"))
        for response in (zipped, zipped2):
            self.assertEqual(response.header(b"content-encoding"), b"gzip")
            self.assertEqual(
                zlib.decompress(response.body, 16 + zlib.MAX_WBITS), plain.body
            )
        self.assertEqual(self.counter.renders, 1)


class ConditionalTests(CacheTestCase):
    """
    Footgun 15: 304s.
    """

    def test_ifNoneMatch(self) -> None:
        """
        The copy's ETag, alone, in a list, or weak, gives a 304 without a
        body; another ETag the page.
        """
        site = self.plain()
        etag = site.get(b"/c").header(b"etag")
        for value in (etag, b'"x", ' + etag, b"W/" + etag, b"*"):
            response = site.get(b"/c", headers={b"If-None-Match": value})
            self.assertEqual(response.code, 304)
            self.assertEqual(response.header(b"etag"), etag)
            self.assertEqual(response.transport.value().split(b"\r\n\r\n", 1)[1], b"")
        other = site.get(b"/c", headers={b"If-None-Match": b'"other"'})
        self.assertEqual(other.code, 200)
        self.assertEqual(self.cache.stats()["notModified"], 4)

    def test_ifModifiedSince(self) -> None:
        """
        A date at or after the render gives a 304; before it, or junk, the
        page.
        """
        self.clock.advance(1000)
        site = self.plain()
        modified = site.get(b"/c").header(b"last-modified")
        self.assertEqual(
            site.get(b"/c", headers={b"If-Modified-Since": modified}).code, 304
        )
        for value in (b"Thu, 01 Jan 1970 00:00:00 GMT", b"not a date", b"\xff" * 40):
            response = site.get(b"/c", headers={b"If-Modified-Since": value})
            self.assertEqual(response.code, 200)


class TemplateTests(CacheTestCase):
    """
    Footgun 10: editing a template gives its pages new keys.
    """

    def test_templateEditInvalidates(self) -> None:
        """
        After the template file changes, the next request (once the change
        has been looked for) renders the new template.
        """
        directory = tempfile.mkdtemp(prefix="tlcache-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "page.html")
        with open(path, "w") as template:
            template.write("<html><p>version one</p></html>")
        cache = self.cache

        class Templated(CachedPage, rend.Page):
            renderCache = cache
            docFactory = loaders.xmlfile(path)

        site = self.driver(Templated(), nevow=True)
        self.assertIn(b"version one", site.get(b"/").body)
        with open(path, "w") as template:
            template.write("<html><p>version two, longer</p></html>")
        self.assertIn(b"version one", site.get(b"/").body)
        self.clock.advance(cache.templateCheckInterval)
        self.assertIn(b"version two", site.get(b"/").body)


class InvalidationTests(CacheTestCase):
    """
    Footgun 11: explicit invalidation.
    """

    def test_byKeyPathPrefixAndTag(self) -> None:
        """
        Pages dropped by key, by path (all variants), by subtree and by tag
        render again; others stay.
        """
        site = self.plain(cacheTags=("news",))
        for path in (b"/news/a", b"/news/a?page=2", b"/news/b", b"/about"):
            site.get(path)
        self.assertEqual(self.counter.renders, 4)
        self.successResultOf(self.cache.invalidatePath(b"example.com", b"/news/a"))
        site.get(b"/news/a")
        site.get(b"/news/a?page=2")
        site.get(b"/news/b")
        self.assertEqual(self.counter.renders, 6)
        self.successResultOf(self.cache.invalidatePath(b"example.com", b"/news/"))
        site.get(b"/news/b")
        site.get(b"/about")
        self.assertEqual(self.counter.renders, 7)
        self.assertEqual(self.successResultOf(self.cache.invalidateTag("news")), 2)
        site.get(b"/about")
        self.assertEqual(self.counter.renders, 8)

    def test_invalidateByKey(self) -> None:
        """
        L{RenderCache.invalidate} takes a page's own key.
        """
        page = Plain(self.cache, self.counter)
        site = self.driver(page)
        site.get(b"/k")
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b"k"])
        request.uri = b"/k"
        request.requestHeaders.setRawHeaders(b"host", [b"example.com"])
        self.assertTrue(
            self.successResultOf(self.cache.invalidate(page.cacheKey(request)))
        )
        site.get(b"/k")
        self.assertEqual(self.counter.renders, 2)

    def test_renderDuringInvalidationIsNotStored(self) -> None:
        """
        A render that was running when the data changed may show the old
        data: it is served to its waiters but not stored.
        """
        page = Held(self.cache, self.counter)
        site = self.driver(page)
        site.request(b"/r")
        self.successResultOf(self.cache.invalidateTag("anything"))
        page.release()
        site.request(b"/r")
        self.assertEqual(self.counter.renders, 2)
        self.assertEqual(self.cache.stats()["raced"], 1)
        page.release()


class IRemembered(Interface):
    """
    Something a parent page remembers while traversing.
    """


@implementer(IRemembered)
class Shop:
    name = "corner shop"


class NevowPageTests(CacheTestCase):
    """
    tlcache.nevow pages: traversal context survives into the cached render.
    """

    def test_rememberedDuringTraversal(self) -> None:
        """
        What a parent remembered in C{locateChild} is there when the child
        renders for the cache; C{IRequest(ctx)} is the cache's copy.
        """
        cache = self.cache
        counter = self.counter

        class Child(CachedPage, rend.Page):
            renderCache = cache
            docFactory = loaders.stan(
                [T.p(render=T.directive("shop")), T.p(render=T.directive("path"))]
            )

            def render_shop(self, ctx: Any, data: Any) -> str:
                counter.renders += 1
                return IRemembered(ctx).name

            def render_path(self, ctx: Any, data: Any) -> str:
                return inevow.IRequest(ctx).uri.decode()

        class Root(rend.Page):
            docFactory = loaders.stan(T.p["root"])

            def locateChild(self, ctx: Any, segments: Any) -> Any:
                ctx.remember(Shop(), IRemembered)
                return Child(), segments[1:]

        site = self.driver(Root(), nevow=True)
        first = site.get(b"/child?q=1")
        self.assertEqual(first.body, b"corner shop/child?q=1")
        self.assertEqual(site.get(b"/child?q=1").body, first.body)
        self.assertEqual(counter.renders, 1)

    def test_nevowSessionIsRefused(self) -> None:
        """
        A shim page asking for C{ISession(ctx)} is rendered per client and
        not stored.
        """
        cache = self.cache

        class Counted(CachedPage, rend.Page):
            renderCache = cache
            docFactory = loaders.stan(T.p(render=T.directive("count")))

            def render_count(self, ctx: Any, data: Any) -> str:
                session = inevow.ISession(ctx)
                session.count = getattr(session, "count", 0) + 1
                return str(session.count)

        site = self.driver(Counted(), nevow=True)
        first = site.get(b"/")
        cookie = first.header(b"set-cookie").split(b";")[0]
        self.assertEqual(site.get(b"/", headers={b"Cookie": cookie}).body, b"2")
        self.assertEqual(site.get(b"/").body, b"1")
        self.assertEqual(self.cache.stats()["entries"], 0)
        for session in list(site.site.sessions.values()):
            session.expire()


@implementer(ICacheStore)
class BrokenStore:
    """
    A store whose every call fails, like an unreachable memcached.
    """

    def get(self, key: bytes) -> Deferred:
        return fail(ConnectionError("store down"))

    def set(self, key: bytes, entry: Any) -> Deferred:
        return fail(ConnectionError("store down"))

    def delete(self, key: bytes) -> Deferred:
        return fail(ConnectionError("store down"))

    def invalidatePrefix(self, prefix: bytes) -> Deferred:
        return fail(ConnectionError("store down"))

    def invalidateTag(self, tag: str) -> Deferred:
        return fail(ConnectionError("store down"))

    def stats(self) -> Dict[str, int]:
        return {}


class StoreFailureTests(CacheTestCase):
    """
    A failing store never breaks the site.
    """

    def test_brokenStoreServesUncached(self) -> None:
        """
        Every request is rendered and answered; the failure is logged.
        """
        self.cache = RenderCache(BrokenStore(), self.clock)
        site = self.plain()
        self.assertEqual(site.get(b"/a").body, b"<p>render 1 of /a</p>")
        self.assertEqual(site.get(b"/a").body, b"<p>render 2 of /a</p>")
        self.assertTrue(self.flushLoggedErrors(ConnectionError))

    def test_asynchronousStore(self) -> None:
        """
        A store answering later (memcached) is waited for, then served.
        """
        pending: List[Deferred] = []
        inner = self.store

        @implementer(ICacheStore)
        class Slow:
            def get(self, key: bytes) -> Deferred:
                d: Deferred = Deferred()
                pending.append((d, self.getNowFrom(key)))
                return d

            def getNowFrom(self, key: bytes) -> Any:
                return inner.getNow(key)

            def set(self, key: bytes, entry: Any) -> Deferred:
                return inner.set(key, entry)

            def delete(self, key: bytes) -> Deferred:
                return inner.delete(key)

            def invalidatePrefix(self, prefix: bytes) -> Deferred:
                return succeed(0)

            def invalidateTag(self, tag: str) -> Deferred:
                return succeed(0)

            def stats(self) -> Dict[str, int]:
                return inner.stats()

        self.cache = RenderCache(Slow(), self.clock)
        site = self.plain()

        def answer() -> None:
            while pending:
                d, found = pending.pop(0)
                d.callback(found)

        first = site.request(b"/a")
        self.assertFalse(first.complete)
        answer()
        self.assertEqual(first.body, b"<p>render 1 of /a</p>")
        hit = site.request(b"/a")
        self.assertFalse(hit.complete)
        answer()
        self.assertEqual(hit.header(b"x-cache"), b"HIT")
        self.assertEqual(hit.body, first.body)
        head = site.request(b"/a", method=b"HEAD")
        answer()
        self.assertEqual(head.header(b"content-length"), b"21")
        self.assertEqual(head.transport.value().split(b"\r\n\r\n", 1)[1], b"")
        self.assertEqual(self.counter.renders, 1)


class KeyTests(SynchronousTestCase):
    """
    The page's key is L{pageKey}'s, with the template digest.
    """

    def test_keyFamilyIsHostAndPath(self) -> None:
        """
        Keys group by host and path, for prefix invalidation.
        """
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b"x"])
        request.uri = b"/x?b=1"
        request.requestHeaders.setRawHeaders(b"host", [b"Example.com"])
        page = Plain(RenderCache(clock=Clock()), Counter())
        key = page.cacheKey(request)
        self.assertEqual(familyOfKey(key), b"example.com|/x")
        self.assertEqual(key, pageKey(request))


class TemplateElementTests(CacheTestCase):
    """
    A twisted.web.template element, which twisted.web streams as it
    flattens: the first client gets the part before a slow data source at
    once, and the whole page is kept.
    """

    def test_renderElementStreams(self) -> None:
        from twisted.web.template import Element, XMLString, renderElement, renderer

        gate: Deferred = Deferred()

        class Slow(Element):
            loader = XMLString(
                '<div xmlns:t="http://twistedmatrix.com/ns/twisted.web.template/0.1">'
                '<p>head</p><p t:render="late" /></div>'
            )

            @renderer
            def late(self, request: Any, tag: Any) -> Deferred:
                return gate.addCallback(lambda _: tag("late part"))

        counter = self.counter

        class Page(CachedPage, resource.Resource):
            isLeaf = True
            renderCache = self.cache

            def render_GET(self, request: Any) -> Any:
                counter.renders += 1
                return renderElement(request, Slow())

        site = self.driver(Page())
        first = site.request(b"/e")
        self.assertIn(b"<p>head</p>", first.transport.value())
        self.assertFalse(first.complete)
        waiter = site.request(b"/e")
        gate.callback(None)
        self.assertIn(b"<p>late part</p>", first.body)
        self.assertEqual(waiter.body, first.body)
        self.assertEqual(site.get(b"/e").body, first.body)
        self.assertEqual(counter.renders, 1)


class HostileInputTests(CacheTestCase):
    """
    Odd and hostile requests get an answer, and nothing of them can make
    two pages share a key.
    """

    def test_oddHostsAndHeaders(self) -> None:
        """
        A Host with the key separator, a huge Host, bytes that are not
        ASCII, a junk cookie header, junk conditionals: each is answered
        200 and the service keeps serving the normal page from the cache.
        """
        site = self.plain()
        normal = site.get(b"/a")
        odd = [
            dict(host=b"example.com|/a"),
            dict(host=b"h" * 8000),
            dict(host=b"\xff\xfe.example"),
            dict(headers={b"Cookie": b";;;=;" * 200}),
            dict(headers={b"If-None-Match": b'W/"x, "y" , ,, junk"' * 20}),
            dict(headers={b"If-Modified-Since": b"Sun, 99 Foo 99999 99:99:99 GMT"}),
        ]
        for options in odd:
            response = site.get(b"/a", **options)
            self.assertEqual(response.code, 200, options)
        again = site.get(b"/a")
        self.assertEqual(again.body, normal.body)
        self.assertEqual(again.header(b"x-cache"), b"HIT")

    def test_separatorInHostDoesNotCollide(self) -> None:
        """
        C{example.com|/a} as a Host, asking for C{/b}, is not the page C{/a}
        of C{example.com} asking for something else.
        """
        site = self.plain()
        site.get(b"/a|/b", host=b"example.com")
        other = site.get(b"/b", host=b"example.com|/a")
        self.assertEqual(other.header(b"x-cache"), b"MISS")


class StreamingEdgeTests(CacheTestCase):
    """
    Streamed renders that use producers, break off, or grow too large.
    """

    def test_pullProducer(self) -> None:
        """
        A resource writing through a pull producer (as static.File does) is
        kept whole.
        """
        counter = self.counter

        @implementer(IPullProducer)
        class Chunks:
            def __init__(self, request: Any) -> None:
                self.request = request
                self.left = [b"<p>one</p>", b"<p>two</p>"]

            def resumeProducing(self) -> None:
                if self.left:
                    self.request.write(self.left.pop(0))
                else:
                    self.request.unregisterProducer()
                    self.request.finish()

            def stopProducing(self) -> None:
                self.left = []

        class Produced(Plain):
            def render_GET(self, request: Any) -> Any:
                counter.renders += 1
                request.registerProducer(Chunks(request), False)
                return NOT_DONE_YET

        site = self.driver(Produced(self.cache, counter))
        first = site.request(b"/p")
        self.clock.advance(0)
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(first.body, b"<p>one</p><p>two</p>")
        self.assertEqual(site.get(b"/p").body, b"<p>one</p><p>two</p>")
        self.assertEqual(counter.renders, 1)

    def test_pushProducer(self) -> None:
        """
        A streaming (push) producer is started and its writes kept.
        """
        counter = self.counter

        @implementer(IPushProducer)
        class Push:
            def __init__(self, request: Any) -> None:
                self.request = request

            def resumeProducing(self) -> None:
                self.request.write(b"<p>pushed</p>")
                self.request.unregisterProducer()
                self.request.finish()

            def pauseProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        class Pushed(Plain):
            def render_GET(self, request: Any) -> Any:
                counter.renders += 1
                request.registerProducer(Push(request), True)
                return NOT_DONE_YET

        site = self.driver(Pushed(self.cache, counter))
        self.assertEqual(site.get(b"/p").body, b"<p>pushed</p>")
        self.assertEqual(site.get(b"/p").body, b"<p>pushed</p>")
        self.assertEqual(counter.renders, 1)

    def test_brokenOffStreamDropsTheClient(self) -> None:
        """
        A nevow page whose render fails after writing starts cannot happen
        (it is buffered), but a streaming resource can: its client's
        connection is dropped so it cannot take the part for the whole, and
        nothing is stored.
        """
        counter = self.counter

        class Breaks(Plain):
            def render_GET(self, request: Any) -> Any:
                counter.renders += 1
                self.request = request
                request.write(b"<p>start</p>")
                return NOT_DONE_YET

        page = Breaks(self.cache, counter)
        site = self.driver(page)
        first = site.request(b"/b")
        waiter = site.request(b"/b")
        self.assertIn(b"<p>start</p>", first.transport.value())
        page.request.loseConnection()
        self.assertTrue(first.transport.disconnecting)
        self.assertEqual(self.cache.stats()["entries"], 0)
        self.assertEqual(self.cache.stats()["renderFailures"], 1)
        self.assertEqual(counter.renders, 2)
        page.request.write(b"<p>whole</p>")
        page.request.finish()
        self.assertEqual(waiter.body, b"<p>start</p><p>whole</p>")

    def test_growsTooLargeWhileStreaming(self) -> None:
        """
        A streamed response that passes C{maxEntryBytes} part way reaches
        its client whole and is not kept.
        """
        self.cache.maxEntryBytes = 100
        counter = self.counter

        class Grows(Plain):
            def render_GET(self, request: Any) -> Any:
                counter.renders += 1
                self.request = request
                request.write(b"a" * 60)
                return NOT_DONE_YET

        page = Grows(self.cache, counter)
        site = self.driver(page)
        first = site.request(b"/g")
        page.request.write(b"b" * 60)
        page.request.finish()
        self.assertEqual(first.body, b"a" * 60 + b"b" * 60)
        self.assertEqual(self.cache.stats()["entries"], 0)
        self.assertEqual(self.cache.stats()["notStored"], 1)

    def test_declaredAuthorizationIsPartOfTheKey(self) -> None:
        """
        A page that declares C{header:Authorization} is cached per
        credential, and its render sees the header.
        """
        counter = self.counter

        class PerUser(Plain):
            cacheVary = ("header:Authorization",)

            def render_GET(self, request: Any) -> bytes:
                counter.renders += 1
                return b"for " + (request.getHeader(b"authorization") or b"-")

        site = self.driver(PerUser(self.cache, counter))
        alice = site.get(b"/u", headers={b"Authorization": b"Basic YWxpY2U6eA=="})
        bob = site.get(b"/u", headers={b"Authorization": b"Basic Ym9iOng="})
        alice2 = site.get(b"/u", headers={b"Authorization": b"Basic YWxpY2U6eA=="})
        self.assertEqual(alice.body, b"for Basic YWxpY2U6eA==")
        self.assertEqual(bob.body, b"for Basic Ym9iOng=")
        self.assertEqual(alice2.body, alice.body)
        self.assertEqual(alice2.header(b"x-cache"), b"HIT")
        self.assertEqual(alice.header(b"vary"), b"authorization")


class UnkeyedInputTests(CacheTestCase):
    """
    What is not part of the key is not seen by the render, so a request
    cannot plant something in a copy others are served (web cache
    poisoning).
    """

    def test_undeclaredHeaderIsNotSeen(self) -> None:
        """
        A page that reflects a header it did not declare renders, for the
        cache, as if the header were absent.
        """
        counter = self.counter

        class Reflects(Plain):
            def render_GET(self, request: Any) -> bytes:
                counter.renders += 1
                forwarded = request.getHeader(b"x-forwarded-host") or b"none"
                agent = request.getHeader(b"user-agent") or b"none"
                return b"links to " + forwarded + b", for " + agent

        site = self.driver(Reflects(self.cache, counter))
        planted = site.get(
            b"/r",
            headers={b"X-Forwarded-Host": b"evil.example", b"User-Agent": b"<script>"},
        )
        self.assertEqual(planted.body, b"links to none, for none")
        self.assertEqual(site.get(b"/r").body, b"links to none, for none")

    def test_clientAddressIsNotSeen(self) -> None:
        """
        A page that shows the client's address shows nobody's in a cached
        copy.
        """
        counter = self.counter

        class ShowsAddress(Plain):
            def render_GET(self, request: Any) -> bytes:
                counter.renders += 1
                return request.getClientAddress().host.encode()

        site = self.driver(ShowsAddress(self.cache, counter))
        self.assertEqual(site.get(b"/a").body, b"0.0.0.0")

    def test_ignoredQueryArgumentsAreNotSeen(self) -> None:
        """
        With C{cacheQueryArgs}, the other arguments are neither in the key
        nor in the render, so C{?page=2&q=<script>} cannot plant its C{q}.
        """
        counter = self.counter

        class Search(Plain):
            cacheQueryArgs = ("page",)

            def render_GET(self, request: Any) -> bytes:
                counter.renders += 1
                args = sorted(request.args.items())
                return repr((request.uri, args)).encode()

        site = self.driver(Search(self.cache, counter))
        planted = site.get(b"/s?q=%3Cscript%3E&page=2")
        self.assertEqual(
            planted.body, repr((b"/s?page=2", [(b"page", [b"2"])])).encode()
        )
        clean = site.get(b"/s?page=2")
        self.assertEqual(clean.body, planted.body)
        self.assertEqual(clean.header(b"x-cache"), b"HIT")
        self.assertEqual(counter.renders, 1)


class KeyRenderAgreementTests(CacheTestCase):
    """
    A cached render sees exactly the input its key was made from, however
    the client spells it: repeated cookies, repeated headers, repeated or
    oddly split query arguments, Host variants. Otherwise one request could
    store a page rendered from one input under the key of another, and
    everyone asking for that other is served it (cache poisoning).
    """

    def reflecting(self, **knobs: Any) -> SiteDriver:
        counter = self.counter

        class Reflects(Plain):
            def render_GET(self, request: Any) -> bytes:
                counter.renders += 1
                cookies = [
                    request.received_cookies.get(name) for name in (b"theme", b"lang")
                ]
                return repr(
                    (
                        cookies,
                        request.getHeader(b"x-mode"),
                        request.requestHeaders.getRawHeaders(b"x-mode"),
                        sorted(request.args.items()),
                        request.uri,
                        request.getHeader(b"host"),
                        request.prePathURL(),
                    )
                ).encode()

        return self.driver(Reflects(self.cache, counter, **knobs))

    def test_repeatedCookieInOneHeader(self) -> None:
        """
        C{Cookie: theme=blue; theme=PWNED} cannot store a page rendered
        with C{PWNED} under the key of C{theme=blue}: the render sees the
        value the key took, and only that one.
        """
        site = self.reflecting(cacheVary=("cookie:theme",))
        attack = site.get(b"/t", headers={b"Cookie": b"theme=blue; theme=PWNED"})
        victim = site.get(b"/t", headers={b"Cookie": b"theme=blue"})
        self.assertNotIn(b"PWNED", attack.body)
        self.assertNotIn(b"PWNED", victim.body)
        self.assertIn(b"b'blue'", victim.body)

    def test_repeatedCookieAcrossHeaders(self) -> None:
        """
        The same with the cookie repeated in two C{Cookie} headers.
        """
        site = self.reflecting(cacheVary=("cookie:theme",))
        site.get(
            b"/t", headerLines=[(b"Cookie", b"theme=blue"), (b"Cookie", b"theme=PWNED")]
        )
        victim = site.get(b"/t", headers={b"Cookie": b"theme=blue"})
        self.assertNotIn(b"PWNED", victim.body)
        self.assertIn(b"b'blue'", victim.body)

    def test_repeatedDeclaredHeader(self) -> None:
        """
        A declared header sent twice is keyed and rendered as one value:
        no copy made from a second line is served to those who sent only
        the first.
        """
        site = self.reflecting(cacheVary=("header:X-Mode",))
        site.get(b"/m", headerLines=[(b"X-Mode", b"dark"), (b"X-Mode", b"PWNED")])
        victim = site.get(b"/m", headers={b"X-Mode": b"dark"})
        self.assertNotIn(b"PWNED", victim.body)
        twice = site.get(
            b"/m", headerLines=[(b"X-Mode", b"dark"), (b"X-Mode", b"PWNED")]
        )
        # One value, whichever way the render reads it.
        self.assertIn(b"b'dark, PWNED', [b'dark, PWNED']", twice.body)

    def test_queryIsSplitAsTheRenderSplitsIt(self) -> None:
        """
        C{?a=1;b=<x>} and C{?a=1%3Bb%3D%3Cx%3E} are different requests to
        twisted.web (it splits arguments on C{;} too), so they are
        different pages: neither is served the other's render.
        """
        site = self.reflecting()
        split = site.get(b"/q?a=1;b=%3Cx%3E")
        whole = site.get(b"/q?a=1%3Bb%3D%3Cx%3E")
        self.assertEqual(whole.header(b"x-cache"), b"MISS")
        self.assertIn(b"(b'b', [b'<x>'])", split.body)
        self.assertIn(b"(b'a', [b'1;b=<x>'])", whole.body)
        self.assertEqual(self.counter.renders, 2)

    def test_reorderedQueryRendersItsCanonicalForm(self) -> None:
        """
        Two spellings of one query share a key, so the render sees one
        canonical spelling of it, whichever came first.
        """
        site = self.reflecting()
        first = site.get(b"/q?b=2&a=1&a=0")
        second = site.get(b"/q?a=1;a=0&b=2")
        self.assertEqual(second.header(b"x-cache"), b"HIT")
        self.assertIn(b"b'/q?a=1&a=0&b=2'", first.body)

    def test_declaredArgumentIsSeenWithQueryArgs(self) -> None:
        """
        An argument declared with C{arg:} is part of the key and seen by
        the render, even when C{cacheQueryArgs} names others only.
        """
        site = self.reflecting(cacheQueryArgs=("q",), cacheVary=("arg:page",))
        two = site.get(b"/s?page=2&junk=1")
        three = site.get(b"/s?page=3")
        self.assertIn(b"(b'page', [b'2'])", two.body)
        self.assertNotIn(b"junk", two.body)
        self.assertIn(b"(b'page', [b'3'])", three.body)

    def test_hostSpellingIsNormalisedForTheRender(self) -> None:
        """
        C{GOOD.EXAMPLE.:80} shares the key of C{good.example}, so the
        render sees C{good.example}: its spelling cannot reach the links
        others are served.
        """
        site = self.reflecting()
        odd = site.get(b"/h", host=b"GOOD.EXAMPLE.:80")
        plain = site.get(b"/h", host=b"good.example")
        self.assertEqual(plain.header(b"x-cache"), b"HIT")
        self.assertNotIn(b"GOOD", odd.body)
        self.assertNotIn(b"good.example.", odd.body)
        self.assertIn(b"b'good.example', b'http://good.example/'", odd.body)

    def test_hostPortIsTheOneAskedFor(self) -> None:
        """
        The render's links name the port the client asked for (in Host),
        not the socket it came in on, which is not part of the key.
        """
        site = self.reflecting()
        response = site.get(b"/h", host=b"good.example:8443")
        self.assertIn(b"b'http://good.example:8443/'", response.body)

    def test_repeatedHostIsNotCached(self) -> None:
        """
        A request with two Host headers is answered uncached.
        """
        site = self.reflecting()
        response = site.get(
            b"/h",
            host=None,
            headerLines=[(b"Host", b"a.example"), (b"Host", b"b.example")],
        )
        self.assertEqual(response.header(b"x-cache"), b"BYPASS")
        self.assertEqual(self.cache.stats()["entries"], 0)

    def test_cacheHostsMatchNormalisedSpellings(self) -> None:
        """
        With C{cacheHosts}, a variant spelling of a listed host is that
        host; an unlisted host bypasses the cache.
        """
        site = self.reflecting(cacheHosts=(b"good.example",))
        odd = site.get(b"/h", host=b"Good.Example.:80")
        plain = site.get(b"/h", host=b"good.example")
        other = site.get(b"/h", host=b"evil.example")
        self.assertEqual(odd.header(b"x-cache"), b"MISS")
        self.assertEqual(plain.header(b"x-cache"), b"HIT")
        self.assertEqual(other.header(b"x-cache"), b"BYPASS")
