"""
Tests for L{tlcache.nevow.context}: remembering and locating along the
context chain, slots, request arguments and C{ISession(ctx)}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import Interface, implementer

from tlcache.nevow import appserver, context, inevow, loaders, rend
from tlcache.nevow import tags as T
from tlcache.nevow.testutil import sendRequest


class IThing(Interface):
    """
    An interface to remember things under.
    """


class IOther(Interface):
    """
    Another one.
    """


@implementer(IThing, IOther)
class Thing:
    """
    Provides both interfaces.
    """


class RememberLocateTests(SynchronousTestCase):
    """
    C{remember} and C{locate}.
    """

    def test_nearestFirst(self) -> None:
        """
        C{locate} finds the nearest remembered object; C{depth} goes further
        up; a negative depth counts from the top.
        """
        top = context.WovenContext()
        top.remember("top", IThing)
        middle = context.WovenContext(parent=top)
        middle.remember("middle", IThing)
        bottom = context.WovenContext(parent=middle)
        self.assertEqual(bottom.locate(IThing), "middle")
        self.assertEqual(bottom.locate(IThing, depth=2), "top")
        self.assertEqual(bottom.locate(IThing, depth=-1), "top")
        self.assertEqual(bottom.locate(IThing, depth=-2), "middle")
        self.assertRaises(KeyError, bottom.locate, IThing, 3)

    def test_notRemembered(self) -> None:
        """
        C{locate} raises L{KeyError}; adapting gives the default.
        """
        ctx = context.WovenContext()
        self.assertRaises(KeyError, ctx.locate, IThing)
        self.assertIsNone(IThing(ctx, None))

    def test_adaptation(self) -> None:
        """
        C{IFoo(ctx)} is C{ctx.locate(IFoo)}.
        """
        ctx = context.WovenContext(parent=context.WovenContext().remember(3, IThing))
        self.assertEqual(IThing(ctx), 3)

    def test_rememberAllInterfaces(self) -> None:
        """
        Without an interface, an object is remembered for all it provides;
        an object that provides none is remembered as the data.
        """
        thing = Thing()
        ctx = context.WovenContext().remember(thing)
        self.assertIs(ctx.locate(IThing), thing)
        self.assertIs(ctx.locate(IOther), thing)
        ctx.remember("plain")
        self.assertEqual(ctx.locate(inevow.IData), "plain")

    def test_rememberedSpecial(self) -> None:
        """
        A tag's C{remember} special is remembered in its context.
        """
        thing = Thing()
        seen = []

        def render(ctx: Any, data: Any) -> str:
            seen.append(IOther(ctx))
            return ""

        from tlcache.nevow.flat import flatten

        flatten(T.div(remember=thing)[T.p[render]])
        self.assertEqual(seen, [thing])

    def test_remembrancesArgument(self) -> None:
        """
        Contexts can be made with remembrances (the data included).
        """
        ctx = context.WovenContext(remembrances={IThing: 1, inevow.IData: 2})
        self.assertEqual((ctx.locate(IThing), ctx.locate(inevow.IData)), (1, 2))

    def test_clone(self) -> None:
        """
        A clone has its own remembrances and slots.
        """
        ctx = context.WovenContext(tag=T.p["x"]).remember(1, IThing)
        ctx.fillSlots("s", 1)
        clone = ctx.clone()
        clone.remember(2, IThing)
        clone.fillSlots("s", 2)
        self.assertEqual((ctx.locate(IThing), ctx.locateSlotData("s")), (1, 1))
        self.assertIsNot(clone.tag, ctx.tag)

    def test_key(self) -> None:
        """
        C{key} specials nest with dots.
        """
        outer = context.WovenContext(tag=T.div(key="a"))
        inner = context.WovenContext(parent=outer, tag=T.div(key="b"))
        below = context.WovenContext(parent=inner, tag=T.p)
        self.assertEqual((outer.key, inner.key, below.key), ("a", "a.b", "a.b"))


class SlotTests(SynchronousTestCase):
    """
    C{fillSlots} and C{locateSlotData}.
    """

    def test_visibleBelow(self) -> None:
        """
        Slots filled on a context are visible from the contexts below it;
        nearer fillings win.
        """
        top = context.WovenContext()
        top.fillSlots("a", 1)
        top.fillSlots("b", 2)
        below = context.WovenContext(parent=top)
        below.fillSlots("a", 3)
        self.assertEqual((below.locateSlotData("a"), below.locateSlotData("b")), (3, 2))
        self.assertRaises(KeyError, below.locateSlotData, "c")

    def test_tagSlotsNotChanged(self) -> None:
        """
        Filling a slot on a context does not change the slots of its tag
        (which may be part of a template).
        """
        tag = T.div.fillSlots("a", 1)
        ctx = context.WovenContext(tag=tag)
        self.assertEqual(ctx.locateSlotData("a"), 1)
        ctx.fillSlots("a", 2)
        self.assertEqual(ctx.locateSlotData("a"), 2)
        self.assertEqual(tag.slotData, {"a": 1})


class RequestContextTests(SynchronousTestCase):
    """
    What a L{context.RequestContext} offers below it.
    """

    def test_request(self) -> None:
        """
        C{IRequest(ctx)} is the request.
        """
        request = DummyRequest([b"a"])
        ctx = context.WovenContext(parent=context.RequestContext(tag=request))
        self.assertIs(inevow.IRequest(ctx), request)

    def test_arg(self) -> None:
        """
        C{ctx.arg(name)} is the first value of the request argument, as
        text, or the default.
        """
        request = DummyRequest([])
        request.args = {b"q": [b"caf\xc3\xa9", b"second"]}
        ctx = context.WovenContext(parent=context.RequestContext(tag=request))
        self.assertEqual(ctx.arg("q"), "caf\u00e9")
        self.assertEqual(ctx.arg(b"q"), "caf\u00e9")
        self.assertIsNone(ctx.arg("missing"))
        self.assertEqual(ctx.arg("missing", "d"), "d")

    def test_segments(self) -> None:
        """
        The request context knows the traversed and remaining segments.
        """
        request = DummyRequest([b"b", b"c"])
        request.prepath = [b"a"]
        ctx = context.RequestContext(tag=request)
        self.assertEqual(inevow.ICurrentSegments(ctx), ("a",))
        self.assertEqual(inevow.IRemainingSegments(ctx), ("b", "c"))

    def test_twistedSessionFallback(self) -> None:
        """
        Without a tlsession session, C{ISession(ctx)} is twisted.web's own.
        """
        request = DummyRequest([])
        ctx = context.WovenContext(parent=context.RequestContext(tag=request))
        self.assertIs(inevow.ISession(ctx), request.protoSession)

    def test_iq(self) -> None:
        """
        C{IQ(ctx)} queries the context's tag.
        """
        ctx = context.WovenContext(tag=T.div[T.p(pattern="x")["found"]])
        self.assertEqual(inevow.IQ(ctx).onePattern("x").children, ["found"])
        self.assertEqual(len(inevow.IQ(ctx).allPatterns("x")), 1)
        self.assertEqual(inevow.IQ(ctx).patternGenerator("x")().children, ["found"])


class SharedSessionTests(SynchronousTestCase):
    """
    C{ISession(ctx)} gives the tlsession session when the page is below a
    C{tlsession.SessionResource}.
    """

    def test_sessionFromTlsession(self) -> None:
        """
        A counter kept in the tlsession session through C{ISession(ctx)}
        survives across requests carrying the session cookie.
        """
        from tlsession import ISession, MemorySessionStore, SessionManager, sessionSite

        class Counter(rend.Page):
            addSlash = True

            def render_count(self, ctx: Any, data: Any) -> Any:
                session = inevow.ISession(ctx)
                self.sessions.append(session)
                session["count"] = session.get("count", 0) + 1
                return ctx.tag[str(session["count"])]

            docFactory = loaders.stan(T.p(render=T.directive("count")))

        page = Counter()
        page.sessions = []
        clock = Clock()
        store = MemorySessionStore(clock)
        store.startService()
        self.addCleanup(store.stopService)
        site = sessionSite(page, SessionManager(store, clock))
        first = sendRequest(site, b"/").response()
        self.assertEqual(first.body, b"<p>1</p>")
        self.assertTrue(ISession.providedBy(page.sessions[0]))
        cookie = first.header(b"set-cookie").split(b";")[0]
        second = sendRequest(site, b"/", headers=[(b"Cookie", cookie)]).response()
        self.assertEqual(second.body, b"<p>2</p>")

    def test_outsideTheWrapper(self) -> None:
        """
        Outside a C{SessionResource}, C{ISession(ctx)} falls back to
        twisted.web's session even though tlsession is loaded.
        """
        import tlsession.web  # noqa: F401 - registers tlsession's adapter

        seen = []

        class Page(rend.Page):
            def render_session(self, ctx: Any, data: Any) -> Any:
                seen.append(inevow.ISession(ctx))
                return ""

            docFactory = loaders.stan(T.invisible(render=T.directive("session")))

        response = sendRequest(appserver.NevowSite(Page()), b"/").response()
        self.assertEqual(response.code, 200)
        self.assertEqual(type(seen[0]).__name__, "Session")
        self.assertIn(b"TWISTED_SESSION", response.header(b"set-cookie"))
