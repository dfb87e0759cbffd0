"""
Tests for L{tlcache.fragment}: cached fragments in stan, on render methods
and in XML templates; background refresh on a L{Clock}; single flight;
request independence; invalidation; bounds; the service's timers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, List, Optional

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import template as twtemplate
from zope.interface import Interface
from zope.interface.verify import verifyObject

from tlcache import fragment
from tlcache.fragment import (
    FragmentCache,
    FragmentRequestError,
    IFragmentCache,
    cachedFragment,
    defaultFragmentCache,
)
from tlcache.nevow import appserver, context, flat, inevow, loaders, rend
from tlcache.nevow import tags as T
from tlcache.nevow._xml import TemplateError
from tlcache.nevow.testutil import sendRequest

NS = 'xmlns:n="http://nevow.com/ns/nevow/0.1"'


class IColour(Interface):
    """
    Something a page remembers for its renderers.
    """


class NewsPage(rend.Page):
    """
    A page with one cached fragment, whose renderer counts its calls and
    returns queued results (values, L{Deferred}s, exceptions) when there
    are any, C{"news <n>"} otherwise.
    """

    def __init__(self, fragment: Any = None, original: Any = None) -> None:
        super().__init__(original)
        self.calls = 0
        self.queued: List[Any] = []
        if fragment is None:
            fragment = T.cached(key="news", refresh=10)
        self.docFactory = loaders.stan(
            T.html[T.h1["News"], fragment[T.invisible(render=T.directive("news"))]]
        )

    def render_news(self, ctx: Any, data: Any) -> Any:
        self.calls += 1
        if self.queued:
            result = self.queued.pop(0)
            if isinstance(result, Exception):
                raise result
            return result
        return f"news {self.calls}"


def renderWith(lookup: Any) -> Any:
    """
    A render function answering C{lookup(ctx)}.
    """

    def render(ctx: Any, data: Any) -> Any:
        return lookup(ctx)

    return render


def page(body: str) -> bytes:
    """
    What L{NewsPage} renders with C{body} as the fragment's text.
    """
    return b"<html><h1>News</h1>" + body.encode() + b"</html>"


class FragmentTestCase(SynchronousTestCase):
    """
    A started L{FragmentCache} on a L{Clock}, with no jitter (the random
    source answers 0.5, the middle of the range).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = self.makeCache()

    def makeCache(self, start: bool = True, **kwargs: Any) -> FragmentCache:
        kwargs.setdefault("randomSource", lambda: 0.5)
        cache = FragmentCache(self.clock, **kwargs)
        if start:
            cache.startService()
        self.addCleanup(cache.stopService)
        return cache

    def context(self, cache: Optional[FragmentCache] = None) -> context.WebContext:
        ctx = context.WebContext()
        ctx.remember(cache or self.cache, IFragmentCache)
        return ctx

    def start(self, page: rend.Page, cache: Optional[FragmentCache] = None) -> Deferred:
        return page.renderString(self.context(cache))

    def render(self, page: rend.Page, cache: Optional[FragmentCache] = None) -> bytes:
        result = self.successResultOf(self.start(page, cache))
        assert isinstance(result, bytes)
        return result


class StanTests(FragmentTestCase):
    """
    C{tags.cached(key=...)[...]} renders its children once and splices the
    bytes into every page.
    """

    def test_interface(self) -> None:
        """
        L{FragmentCache} provides L{IFragmentCache}.
        """
        self.assertTrue(verifyObject(IFragmentCache, self.cache))

    def test_cachedAndSpliced(self) -> None:
        """
        The fragment is rendered for the first page only; every page has its
        bytes.
        """
        news = NewsPage()
        self.assertEqual(self.render(news), page("news 1"))
        self.assertEqual(self.render(news), page("news 1"))
        self.assertEqual(self.render(NewsPage()), page("news 1"))
        self.assertEqual(news.calls, 1)
        stats = self.cache.stats()
        self.assertEqual((stats["hits"], stats["misses"], stats["renders"]), (2, 1, 1))
        self.assertEqual(stats["fragments"], 1)

    def test_notEscapedAgain(self) -> None:
        """
        The fragment's markup is spliced as it is: its tags stay tags and
        its text is escaped exactly once.
        """
        news = NewsPage()
        news.queued.append(T.b(title='"q"')["a < b & c"])
        expected = page('<b title="&quot;q&quot;">a &lt; b &amp; c</b>')
        self.assertEqual(self.render(news), expected)
        self.assertEqual(self.render(news), expected)

    def test_unforgeable(self) -> None:
        """
        Page content equal to the cached bytes, as text or as bytes, is
        escaped like any other: only the cache's own bytes pass through.
        """
        news = NewsPage()
        news.queued.append(T.b["bold"])
        self.render(news)

        class Forger(rend.Page):
            docFactory = loaders.stan(
                T.html[
                    T.cached(key="news", refresh=10)["unused"],
                    T.p(render=T.directive("text")),
                    T.p(render=T.directive("bytes")),
                ]
            )

            def render_text(self, ctx: Any, data: Any) -> Any:
                return ctx.tag["<b>bold</b>"]

            def render_bytes(self, ctx: Any, data: Any) -> Any:
                return ctx.tag[b"<b>bold</b>"]

        self.assertEqual(
            self.render(Forger()),
            b"<html><b>bold</b>"
            b"<p>&lt;b&gt;bold&lt;/b&gt;</p><p>&lt;b&gt;bold&lt;/b&gt;</p></html>",
        )

    def test_keyHasVersionAndVary(self) -> None:
        """
        Fragments of one name with different versions or vary values are
        kept apart; the same ones share their bytes.
        """
        pages = [
            NewsPage(T.cached(key="news")),
            NewsPage(T.cached(key="news", version="2")),
            NewsPage(T.cached(key="news", vary=("en",))),
            NewsPage(T.cached(key="news", vary=("fr",))),
            NewsPage(T.cached(key="news", vary="fr")),
        ]
        self.assertEqual(
            [self.render(p) for p in pages],
            [page("news 1")] * 5,
        )
        self.assertEqual([p.calls for p in pages], [1, 1, 1, 1, 0])
        self.assertEqual(self.cache.stats()["fragments"], 4)

    def test_explicitCache(self) -> None:
        """
        C{cache=} picks the cache, whatever the context remembers.
        """
        other = self.makeCache()
        news = NewsPage(T.cached(key="news", cache=other))
        self.render(news)
        self.render(news)
        self.assertEqual(other.stats()["hits"], 1)
        self.assertEqual(self.cache.stats()["misses"], 0)

    def test_onDemandTimeout(self) -> None:
        """
        Without C{refresh}, the bytes are kept C{timeout} seconds, then the
        next page renders the fragment again; no timer is involved.
        """
        news = NewsPage(T.cached(key="news", timeout=5))
        self.assertEqual(self.render(news), page("news 1"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(4.9)
        self.assertEqual(self.render(news), page("news 1"))
        self.clock.advance(0.1)
        self.assertEqual(self.render(news), page("news 2"))

    def test_onDemandWithoutTimeoutKept(self) -> None:
        """
        Without C{refresh} and C{timeout}, the bytes are kept until they are
        invalidated.
        """
        news = NewsPage(T.cached(key="news"))
        self.render(news)
        self.clock.advance(10**6)
        self.assertEqual(self.render(news), page("news 1"))
        self.assertEqual(self.cache.invalidate("news"), 1)
        self.assertEqual(self.render(news), page("news 2"))

    def test_pageThingsVisible(self) -> None:
        """
        The fragment renders with the page: its data (C{original}), its
        C{data_*} methods and what it remembers are there.
        """

        class Shop(rend.Page):
            docFactory = loaders.stan(
                T.cached(key="shop")[
                    T.p(render=T.directive("colour")),
                    T.p(data=T.directive("price"), render=T.directive("string")),
                    T.p(render=T.directive("original")),
                ]
            )

            def rememberStuff(self, ctx: Any) -> None:
                rend.Page.rememberStuff(self, ctx)
                ctx.remember("green", IColour)

            def render_colour(self, ctx: Any, data: Any) -> Any:
                return ctx.tag[ctx.locate(IColour)]

            def render_original(self, ctx: Any, data: Any) -> Any:
                return ctx.tag[data]

            def data_price(self, ctx: Any, data: Any) -> Any:
                return 3

        self.assertEqual(
            self.render(Shop("the shop")), b"<p>green</p><p>3</p><p>the shop</p>"
        )

    def test_enclosingDataAndSlotsNotVisible(self) -> None:
        """
        The data and slots of the tags around the fragment are not seen
        inside it, so its bytes cannot depend on where it was first used.
        """
        seen: List[Any] = []

        class Around(rend.Page):
            docFactory = loaders.stan(
                T.div(data="outer data", render=T.directive("fill"))[
                    T.cached(key="inside")[T.p(render=T.directive("look"))]
                ]
            )

            def render_fill(self, ctx: Any, data: Any) -> Any:
                ctx.fillSlots("s", "filled")
                return ctx.tag

            def render_look(self, ctx: Any, data: Any) -> Any:
                seen.append(data)
                return ctx.tag[T.slot("s", default="unfilled")]

        self.assertEqual(
            self.render(Around("page data")), b"<div><p>unfilled</p></div>"
        )
        self.assertEqual(seen, ["page data"])

    def test_nested(self) -> None:
        """
        A fragment inside a fragment is cached on its own: refreshing the
        outer one splices the inner one's bytes as they are.
        """
        inner: List[int] = []
        outer: List[int] = []

        class Nested(rend.Page):
            docFactory = loaders.stan(
                T.cached(key="outer", refresh=10)[
                    T.invisible(render=T.directive("outer")),
                    T.cached(key="inner", refresh=100)[
                        T.invisible(render=T.directive("inner"))
                    ],
                ]
            )

            def render_outer(self, ctx: Any, data: Any) -> Any:
                outer.append(1)
                return f"outer {len(outer)} "

            def render_inner(self, ctx: Any, data: Any) -> Any:
                inner.append(1)
                return f"inner {len(inner)}"

        nested = Nested()
        self.assertEqual(self.render(nested), b"outer 1 inner 1")
        self.clock.advance(10)
        self.assertEqual(self.render(nested), b"outer 2 inner 1")
        self.assertEqual(self.cache.stats()["fragments"], 2)

    def test_twistedTemplateInside(self) -> None:
        """
        twisted.web.template markup inside a fragment renders (without a
        request, as it would outside of one).
        """
        news = NewsPage()
        news.queued.append(twtemplate.tags.em("t.w.t"))
        self.assertEqual(self.render(news), page("<em>t.w.t</em>"))

    def test_inAttributeRefused(self) -> None:
        """
        A fragment cannot be an attribute value.
        """
        tree = T.a(href=T.cached(key="href")["x"])
        self.assertRaises(TypeError, flat.precompile, tree)
        self.assertRaises(TypeError, flat.flatten, tree, self.context())

    def test_precompiledChildren(self) -> None:
        """
        A template's fragment is precompiled with it: its static children
        become one chunk.
        """
        compiled = flat.precompile(T.div[T.cached(key="k")[T.p["a"], T.p["b"]]])
        self.assertEqual(compiled[0], b"<div>")
        node = compiled[1]
        self.assertIsInstance(node, T.cached)
        self.assertEqual(node.children, [b"<p>a</p><p>b</p>"])

    def test_badArguments(self) -> None:
        """
        Bad arguments are refused when the node is made.
        """
        self.assertRaises(TypeError, T.cached, key=1)
        self.assertRaises(ValueError, T.cached, key="")
        self.assertRaises(ValueError, T.cached, key="k", refresh=0)
        self.assertRaises(ValueError, T.cached, key="k", refresh=float("inf"))
        self.assertRaises(TypeError, T.cached, key="k", refresh="10")
        self.assertRaises(TypeError, T.cached, key="k", refresh=True)
        self.assertRaises(ValueError, T.cached, key="k", timeout=-1)
        self.assertRaises(TypeError, T.cached, key="k", vary=(object(),))
        self.assertRaises(TypeError, T.cached, key="k", version=None)

    def test_cloneAndRepr(self) -> None:
        """
        A deep clone copies the children; the repr shows the key and options.
        """
        node = T.cached(key="k", refresh=5)[T.p["x"]]
        copy = node.clone()
        self.assertEqual(copy.fullKey, node.fullKey)
        self.assertIsNot(copy.children[0], node.children[0])
        self.assertIn("key='k', refresh=5.0", repr(node))


class DecoratorTests(FragmentTestCase):
    """
    L{cachedFragment} caches what a render method renders.
    """

    def test_cachesRenderMethod(self) -> None:
        """
        The method runs for the first page only, with its tag.
        """

        class Decorated(rend.Page):
            calls = 0
            docFactory = loaders.stan(
                T.html[T.div(class_="news", render=T.directive("news"))]
            )

            @cachedFragment(refresh=10)
            def render_news(self, ctx: Any, data: Any) -> Any:
                Decorated.calls += 1
                return ctx.tag[f"news {Decorated.calls}"]

        self.assertEqual(
            self.render(Decorated()), b'<html><div class="news">news 1</div></html>'
        )
        self.assertEqual(
            self.render(Decorated()), b'<html><div class="news">news 1</div></html>'
        )
        self.assertEqual(Decorated.calls, 1)
        self.clock.advance(10)
        self.assertEqual(Decorated.calls, 2)

    def test_defaultKey(self) -> None:
        """
        The default key is the method's module and qualified name.
        """

        class Keyed(rend.Page):
            docFactory = loaders.stan(T.p(render=T.directive("it")))

            @cachedFragment()
            def render_it(self, ctx: Any, data: Any) -> Any:
                return ctx.tag["it"]

        self.render(Keyed())
        key = f"{__name__}.DecoratorTests.test_defaultKey.<locals>.Keyed.render_it"
        self.assertEqual(self.cache.invalidate(key), 1)

    def test_varyFromRequest(self) -> None:
        """
        A callable C{vary} is given the request's context: each value gets
        its own copy, rendered once.
        """
        calls: List[int] = []

        class Localised(rend.Page):
            docFactory = loaders.stan(T.p(render=T.directive("greeting")))

            @cachedFragment(key="greeting", vary=lambda ctx: (ctx.arg("lang"),))
            def render_greeting(self, ctx: Any, data: Any) -> Any:
                calls.append(1)
                return ctx.tag[f"hello {len(calls)}"]

        site = appserver.NevowSite(Localised())
        site.remember(self.cache, IFragmentCache)
        bodies = [
            sendRequest(site, b"/?lang=" + lang).response().body
            for lang in (b"en", b"fr", b"en")
        ]
        self.assertEqual(
            bodies, [b"<p>hello 1</p>", b"<p>hello 2</p>", b"<p>hello 1</p>"]
        )

    def test_plainFunction(self) -> None:
        """
        A render function (not a method) can be decorated too.
        """

        @cachedFragment(key="function")
        def render(ctx: Any, data: Any) -> Any:
            return ctx.tag["function"]

        tree = T.p(render=render)
        self.assertEqual(flat.flatten(tree, self.context()), b"<p>function</p>")
        self.assertEqual(self.cache.stats()["fragments"], 1)

    def test_badArguments(self) -> None:
        """
        Bad arguments fail when the method is decorated.
        """
        self.assertRaises(ValueError, cachedFragment(refresh=-1), lambda c, d: None)


class XMLTests(FragmentTestCase):
    """
    C{<nevow:cached>} in XML templates.
    """

    template = f"""<html {NS}><h1>News</h1><n:cached key="news" refresh="10">\
<n:invisible n:render="news"/></n:cached></html>"""

    def xmlPage(self, template: str) -> NewsPage:
        news = NewsPage()
        news.docFactory = loaders.xmlstr(template)
        return news

    def test_cached(self) -> None:
        """
        The element makes a refreshing cached fragment.
        """
        news = self.xmlPage(self.template)
        self.assertEqual(self.render(news), page("news 1"))
        self.assertEqual(self.render(news), page("news 1"))
        self.clock.advance(10)
        self.assertEqual(self.render(news), page("news 2"))

    def test_options(self) -> None:
        """
        C{timeout}, C{version} and C{vary} are read from the element.
        """
        (node,) = [
            n
            for n in loaders.xmlstr(
                f'<a {NS}><n:cached key="k" timeout="2.5" version="3" vary="a, b"/></a>'
            ).load()
            if isinstance(n, T.cached)
        ]
        self.assertEqual(
            (node.key, node.refresh, node.timeout, node.version, node.vary),
            ("k", None, 2.5, "3", ("a", "b")),
        )

    def test_templateDigestInKey(self) -> None:
        """
        Editing the template gives its fragments new keys; the same template
        text loaded twice shares them.
        """
        first = self.xmlPage(self.template)
        same = self.xmlPage(self.template)
        edited = self.xmlPage(self.template.replace("<h1>News</h1>", "<h1>News!</h1>"))
        self.render(first)
        self.render(same)
        self.render(edited)
        self.assertEqual((first.calls, same.calls, edited.calls), (1, 0, 1))

    def test_editedFileGivesNewKeys(self) -> None:
        """
        An XML file template that changes on disk is reloaded with new keys
        for its fragments: the edited template renders its own.
        """
        directory = tempfile.mkdtemp(prefix="tlcache-fragments-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "news.html")
        with open(path, "w") as template:
            template.write(self.template)
        news = NewsPage()
        news.docFactory = loaders.xmlfile(path)
        self.assertEqual(self.render(news), page("news 1"))
        with open(path, "w") as template:
            template.write(self.template.replace("News", "Latest news"))
        self.assertEqual(
            self.render(news), page("news 2").replace(b"News", b"Latest news")
        )
        self.assertEqual(self.cache.stats()["fragments"], 2)

    def test_badElements(self) -> None:
        """
        A missing key, an unknown attribute, a bad number or a nevow:
        attribute is a L{TemplateError}.
        """
        for element in [
            "<n:cached/>",
            '<n:cached key="k" refersh="10"/>',
            '<n:cached key="k" refresh="soon"/>',
            '<n:cached key="k" refresh="-1"/>',
            '<n:cached key="k" n:render="x"/>',
        ]:
            with self.assertRaises(TemplateError, msg=element):
                loaders.xmlstr(f"<a {NS}>{element}</a>").load()


class RefreshTests(FragmentTestCase):
    """
    A refreshing fragment is re-rendered by a timer; requests never wait
    for a refresh.
    """

    def test_refreshEveryInterval(self) -> None:
        """
        The fragment is re-rendered every C{refresh} seconds without a
        request, and pages have the new bytes at once.
        """
        news = NewsPage()
        self.render(news)
        self.clock.advance(9.99)
        self.assertEqual(news.calls, 1)
        self.clock.advance(0.01)
        self.assertEqual(news.calls, 2)
        self.clock.advance(10)
        self.assertEqual(news.calls, 3)
        self.assertEqual(self.render(news), page("news 3"))
        self.assertEqual(news.calls, 3)
        self.assertEqual(self.cache.stats()["refreshes"], 2)

    def test_jitter(self) -> None:
        """
        Each interval is C{refresh} plus or minus at most C{jitter} of it,
        as the random source says.
        """
        answers = iter([0.25, 0.999999, 0.0, 0.5])
        cache = self.makeCache(jitter=0.2, randomSource=lambda: next(answers))
        news = NewsPage()
        self.render(news, cache)
        delays = []
        for _ in range(3):
            (call,) = self.clock.getDelayedCalls()
            delays.append(call.getTime() - self.clock.seconds())
            self.clock.advance(delays[-1])
        self.assertAlmostEqual(delays[0], 10 * (1 + 0.2 * -0.5))
        self.assertAlmostEqual(delays[1], 12.0, places=4)
        self.assertAlmostEqual(delays[2], 8.0)
        for delay in delays:
            self.assertTrue(8.0 <= delay <= 12.0, delay)

    def test_slowRefreshServesOldBytes(self) -> None:
        """
        While a refresh waits for its data, pages get the old bytes without
        waiting; the new bytes replace them when the refresh completes.
        """
        news = NewsPage()
        self.render(news)
        slow: Deferred = Deferred()
        news.queued.append(slow)
        self.clock.advance(10)
        self.assertEqual(news.calls, 2)
        self.assertEqual(self.render(news), page("news 1"))
        self.assertEqual(self.render(news), page("news 1"))
        slow.callback("fresh news")
        self.assertEqual(self.render(news), page("fresh news"))
        self.assertEqual(news.calls, 2)

    def test_noOverlappingRefreshes(self) -> None:
        """
        A tick that comes while the previous refresh still runs is skipped.
        """
        cache = self.makeCache(renderTimeout=None)
        news = NewsPage()
        self.render(news, cache)
        slow: Deferred = Deferred()
        news.queued.append(slow)
        self.clock.advance(10)
        self.clock.advance(10)
        self.clock.advance(10)
        self.assertEqual(news.calls, 2)
        self.assertEqual(cache.stats()["skippedOverlaps"], 2)
        slow.callback("done")
        self.clock.advance(10)
        self.assertEqual(news.calls, 3)
        self.assertEqual(self.render(news, cache), page("news 3"))

    def test_failedRefreshKeepsOldBytes(self) -> None:
        """
        A refresh that fails leaves the old bytes in place; it is counted
        and logged, and the next tick tries again.
        """
        news = NewsPage()
        self.render(news)
        news.queued.append(ZeroDivisionError("boom"))
        self.clock.advance(10)
        self.assertEqual(self.render(news), page("news 1"))
        self.assertEqual(self.cache.stats()["refreshFailures"], 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.clock.advance(10)
        self.assertEqual(self.render(news), page("news 3"))

    def test_failureLogRateLimited(self) -> None:
        """
        A fragment whose refreshes keep failing is logged once per
        C{failureLogInterval}, every failure counted.
        """
        news = NewsPage()
        self.render(news)
        news.queued.extend(ZeroDivisionError(str(i)) for i in range(7))
        for _ in range(6):
            self.clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.clock.advance(10)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.cache.stats()["refreshFailures"], 7)
        self.assertEqual(self.render(news), page("news 1"))

    def test_stuckRefreshTimesOut(self) -> None:
        """
        A refresh still waiting after C{renderTimeout} is cancelled and
        counted as failed; the old bytes stay and refreshing goes on.
        """
        cache = self.makeCache(renderTimeout=25)
        news = NewsPage()
        self.render(news, cache)
        cancelled: List[Deferred] = []
        news.queued.append(Deferred(cancelled.append))
        self.clock.advance(10)
        self.clock.advance(24)
        self.assertEqual(cancelled, [])
        self.clock.advance(1)
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(cache.stats()["refreshFailures"], 1)
        self.assertEqual(len(self.flushLoggedErrors(TimeoutError)), 1)
        self.clock.advance(10)
        self.assertEqual(self.render(news, cache), page("news 3"))

    def test_timeoutCapsStalenessWhenFailing(self) -> None:
        """
        With C{timeout}, bytes that refreshes failed to replace for that
        long are no longer served: the next page renders the fragment (and
        fails if it still fails).
        """
        news = NewsPage(T.cached(key="news", refresh=10, timeout=25))
        self.render(news)
        news.queued.extend([ZeroDivisionError("1"), ZeroDivisionError("2")])
        self.clock.pump([10, 10])
        self.assertEqual(news.calls, 3)
        self.assertEqual(self.render(news), page("news 1"))
        self.clock.advance(5)
        news.queued.append(ZeroDivisionError("3"))
        self.failureResultOf(self.start(news), ZeroDivisionError)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.render(news), page("news 5"))

    def test_idleFragmentStopsRefreshing(self) -> None:
        """
        A fragment not served for C{idleTimeout} seconds is dropped: no more
        refreshes, no timer.
        """
        cache = self.makeCache(idleTimeout=30)
        news = NewsPage()
        self.render(news, cache)
        self.clock.pump([1] * 25)
        self.render(news, cache)
        self.clock.pump([1] * 29)
        self.assertEqual(news.calls, 6)
        self.assertEqual(cache.stats()["fragments"], 1)
        self.clock.pump([1] * 10)
        self.assertEqual(cache.stats()["fragments"], 0)
        self.assertEqual(cache.stats()["idleDrops"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        calls = news.calls
        self.clock.pump([1] * 100)
        self.assertEqual(news.calls, calls)
        self.assertEqual(self.render(news, cache), page(f"news {calls + 1}"))

    def test_defaultIdleTimeout(self) -> None:
        """
        By default a fragment is dropped after C{max(10 * refresh, 3600)}
        seconds without being served.
        """
        news = NewsPage()
        self.render(news)
        self.clock.pump([10] * 359)
        self.assertEqual(self.cache.stats()["fragments"], 1)
        self.clock.pump([10] * 2)
        self.assertEqual(self.cache.stats()["fragments"], 0)

    def test_notRunning(self) -> None:
        """
        A cache that is not running serves and keeps fragments, but arms no
        timer until it starts.
        """
        cache = self.makeCache(start=False)
        news = NewsPage()
        self.render(news, cache)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        cache.startService()
        self.clock.advance(10)
        self.assertEqual(news.calls, 2)

    def test_stopServiceCancelsEverything(self) -> None:
        """
        Stopping the service cancels every timer and abandons the refreshes
        in flight (not counted as failures); the bytes are still served.
        """
        news = NewsPage()
        other = NewsPage(T.cached(key="other", refresh=3))
        self.render(news)
        self.render(other)
        cancelled: List[Deferred] = []
        other.queued.append(Deferred(cancelled.append))
        self.clock.advance(3)
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        self.cache.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(self.cache.stats()["refreshFailures"], 0)
        self.assertEqual(self.render(news), page("news 1"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopDuringRefreshRender(self) -> None:
        """
        A refresh whose renderer stops the service (a shutdown starting
        while it ran) is abandoned as soon as it returns.
        """
        news = NewsPage()
        self.render(news)
        cancelled: List[Deferred] = []

        def stopping(ctx: Any, data: Any) -> Deferred:
            self.cache.stopService()
            return Deferred(cancelled.append)

        news.render_news = stopping  # type: ignore[method-assign]
        self.clock.advance(10)
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.cache.stats()["refreshFailures"], 0)


class RequestIndependenceTests(FragmentTestCase):
    """
    Cached fragments render without the request, in the foreground as in
    the background, and say so clearly when a renderer wants it.
    """

    def test_requestRefused(self) -> None:
        """
        A renderer asking for the request fails the first render with an
        error naming the fragment; nothing is kept.
        """
        news = NewsPage()
        news.queued.append(None)
        news.render_news = lambda ctx, data: inevow.IRequest(ctx)  # type: ignore
        failure = self.failureResultOf(self.start(news), FragmentRequestError)
        self.assertIn(
            "fragment 'news' is refreshed in the background and cannot use the request",
            str(failure.value),
        )
        self.assertEqual(self.cache.stats()["fragments"], 0)
        self.assertEqual(self.cache.stats()["renderFailures"], 1)

    def test_sessionAndSegmentsRefused(self) -> None:
        """
        So are the session, the URL segments and C{ctx.arg}, even through a
        real request; the page then answers 500.
        """
        lookups = {
            "session": lambda ctx: inevow.ISession(ctx),
            "segments": lambda ctx: inevow.ICurrentSegments(ctx),
            "optional": lambda ctx: inevow.IRequest(ctx, None),
            "arg": lambda ctx: ctx.arg("x"),
        }
        for name, lookup in lookups.items():
            news = NewsPage(T.cached(key=name))
            news.render_news = renderWith(lookup)  # type: ignore
            site = appserver.NevowSite(news)
            site.remember(self.cache, IFragmentCache)
            response = sendRequest(site, b"/").response()
            self.assertEqual(response.code, 500, name)
            errors = self.flushLoggedErrors(FragmentRequestError)
            self.assertEqual(len(errors), 1, name)
            self.assertIn(
                f"fragment {name!r} is cached for every request", str(errors[0].value)
            )

    def test_sameContextForegroundAndBackground(self) -> None:
        """
        The first render (for a request) and a refresh (for none) see the
        same data and the same remembered objects.
        """
        seen: List[Any] = []

        class Same(rend.Page):
            docFactory = loaders.stan(
                T.div(data="enclosing")[
                    T.cached(key="same", refresh=10)[T.p(render=T.directive("look"))]
                ]
            )

            def rememberStuff(self, ctx: Any) -> None:
                rend.Page.rememberStuff(self, ctx)
                ctx.remember("blue", IColour)

            def render_look(self, ctx: Any, data: Any) -> Any:
                seen.append((data, IColour(ctx), IFragmentCache(ctx)))
                return ctx.tag

        site = appserver.NevowSite(Same("original"))
        site.remember(self.cache, IFragmentCache)
        self.assertEqual(sendRequest(site, b"/").response().body, b"<div><p></p></div>")
        self.clock.advance(10)
        self.assertEqual(seen, [("original", "blue", self.cache)] * 2)

    def test_siteRememberedVisible(self) -> None:
        """
        What the site remembers is visible inside fragments.
        """
        news = NewsPage()
        news.render_news = lambda ctx, data: IColour(ctx)  # type: ignore
        site = appserver.NevowSite(news)
        site.remember(self.cache, IFragmentCache)
        site.remember("red", IColour)
        self.assertEqual(sendRequest(site, b"/").response().body, page("red"))


class SingleFlightTests(FragmentTestCase):
    """
    One render per fragment at a time, shared by the requests waiting.
    """

    def test_concurrentFirstRenders(self) -> None:
        """
        A hundred pages wanting a fragment not rendered yet cause one
        render; all get its bytes.
        """
        news = NewsPage()
        slow: Deferred = Deferred()
        news.queued.append(slow)
        pages = [self.start(news) for _ in range(100)]
        self.assertEqual(news.calls, 1)
        self.assertNoResult(pages[0])
        slow.callback("first")
        self.assertEqual({self.successResultOf(d) for d in pages}, {page("first")})
        stats = self.cache.stats()
        self.assertEqual((stats["renders"], stats["misses"]), (1, 100))

    def test_failedFirstRenderNotKept(self) -> None:
        """
        When the first render fails, every page waiting for it fails, and
        the next page tries again.
        """
        news = NewsPage()
        slow: Deferred = Deferred()
        news.queued.append(slow)
        pages = [self.start(news) for _ in range(3)]
        slow.errback(ZeroDivisionError("first"))
        for d in pages:
            self.failureResultOf(d, ZeroDivisionError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.render(news), page("news 2"))

    def test_waiterGivingUp(self) -> None:
        """
        A page that stops waiting (its client left) does not stop the
        render the others wait for.
        """
        news = NewsPage()
        slow: Deferred = Deferred()
        news.queued.append(slow)
        leaving = self.start(news)
        staying = self.start(news)
        leaving.cancel()
        self.failureResultOf(leaving, CancelledError)
        self.assertNoResult(slow)
        slow.callback("done")
        self.assertEqual(self.successResultOf(staying), page("done"))
        self.assertEqual(self.render(news), page("done"))


class InvalidationTests(FragmentTestCase):
    """
    C{invalidate} and C{invalidatePrefix}.
    """

    def test_refreshingRerendersOnNextRequest(self) -> None:
        """
        An invalidated refreshing fragment is rendered again for the next
        page, which waits for it.
        """
        news = NewsPage()
        self.render(news)
        self.assertEqual(self.cache.invalidate("news"), 1)
        self.assertEqual(news.calls, 1)
        self.assertEqual(self.render(news), page("news 2"))
        self.assertEqual(self.cache.stats()["invalidations"], 1)

    def test_refreshingRerendersOnNextTick(self) -> None:
        """
        ... or by its next tick, if that comes first.
        """
        news = NewsPage()
        self.render(news)
        self.cache.invalidate("news")
        self.clock.advance(10)
        self.assertEqual(news.calls, 2)
        self.assertEqual(self.render(news), page("news 2"))

    def test_renderInFlightNotStored(self) -> None:
        """
        A refresh that was running when the fragment was invalidated is not
        stored: a new render starts, and pages wait for that one.
        """
        news = NewsPage()
        self.render(news)
        stale: Deferred = Deferred()
        news.queued.append(stale)
        self.clock.advance(10)
        self.cache.invalidate("news")
        waiting = self.start(news)
        self.assertNoResult(waiting)
        stale.callback("stale")
        self.assertEqual(self.successResultOf(waiting), page("news 3"))
        self.assertEqual(self.render(news), page("news 3"))

    def test_prefix(self) -> None:
        """
        C{invalidatePrefix} drops every fragment whose key starts with the
        prefix.
        """
        for key in ("news.local", "news.world", "weather"):
            self.render(NewsPage(T.cached(key=key)))
        self.assertEqual(self.cache.invalidatePrefix("news."), 2)
        self.assertEqual(self.cache.stats()["fragments"], 1)
        self.assertEqual(self.cache.invalidate("nothing"), 0)
        self.assertRaises(TypeError, self.cache.invalidatePrefix, b"news")


class BoundsTests(FragmentTestCase):
    """
    Memory and refresh work stay bounded.
    """

    def test_byteBudget(self) -> None:
        """
        The kept bytes stay within C{maxBytes}; the least recently served
        fragments go first.
        """
        budget = 10 * (fragment.RECORD_OVERHEAD + 100)
        cache = self.makeCache(maxBytes=budget)
        pages = [NewsPage(T.cached(key=f"k{i}")) for i in range(30)]
        for i, p in enumerate(pages):
            p.queued.append("x" * 100)
            self.render(p, cache)
            self.render(pages[0], cache)
            self.assertLessEqual(cache.stats()["bytes"], budget, i)
        self.assertEqual(cache.stats()["fragments"], 10)
        self.assertEqual(cache.stats()["evictions"], 20)
        self.assertEqual(pages[0].calls, 1)
        self.render(pages[1], cache)
        self.assertEqual(pages[1].calls, 2)

    def test_oversizedNotKept(self) -> None:
        """
        A fragment larger than C{maxEntryBytes} is rendered for each page,
        not kept.
        """
        cache = self.makeCache(maxEntryBytes=fragment.RECORD_OVERHEAD + 10)
        news = NewsPage()
        news.queued.extend(["x" * 11, "y" * 11])
        self.assertEqual(self.render(news, cache), page("x" * 11))
        self.assertEqual(self.render(news, cache), page("y" * 11))
        self.assertEqual(cache.stats()["refusals"], 2)
        self.assertEqual(cache.stats()["fragments"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.render(news, cache), page("news 3"))
        self.assertEqual(self.render(news, cache), page("news 3"))

    def test_maxRefreshing(self) -> None:
        """
        At most C{maxRefreshing} fragments are refreshed: the least recently
        served one is dropped for a new one.
        """
        cache = self.makeCache(maxRefreshing=2)
        pages = [NewsPage(T.cached(key=f"k{i}", refresh=10)) for i in range(3)]
        for p in pages:
            self.render(p, cache)
        self.assertEqual(cache.stats()["refreshing"], 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.clock.advance(10)
        self.assertEqual([p.calls for p in pages], [1, 2, 2])

    def test_badLimits(self) -> None:
        """
        Nonsensical limits are refused.
        """
        for kwargs in [
            {"maxBytes": 0},
            {"maxBytes": 10, "maxEntryBytes": 11},
            {"jitter": 1},
            {"jitter": -0.1},
            {"idleTimeout": 0},
            {"maxRefreshing": 0},
            {"renderTimeout": 0},
        ]:
            self.assertRaises(ValueError, FragmentCache, self.clock, **kwargs)


class DefaultCacheTests(SynchronousTestCase):
    """
    L{defaultFragmentCache}, for fragments rendered where no cache is known.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.patch(fragment, "_globalReactor", lambda: self.reactor)
        self.patch(fragment, "_default", None)

    def test_startedAndStoppedWithReactor(self) -> None:
        """
        It is made once, started, and stopped before the reactor shuts down.
        """
        cache = defaultFragmentCache()
        self.addCleanup(cache.stopService)
        self.assertIs(defaultFragmentCache(), cache)
        self.assertTrue(cache.running)
        self.assertIs(cache.clock, self.reactor)
        (trigger,) = self.reactor.triggers["before"]["shutdown"]
        trigger[0](*trigger[1], **trigger[2])
        self.assertFalse(cache.running)

    def test_usedByFlattener(self) -> None:
        """
        A fragment rendered where no cache is remembered uses it.
        """
        news = NewsPage()
        self.assertEqual(news.renderSynchronously(), page("news 1"))
        cache = defaultFragmentCache()
        self.addCleanup(cache.stopService)
        self.assertEqual(cache.stats()["fragments"], 1)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
