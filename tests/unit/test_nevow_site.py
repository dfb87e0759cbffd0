"""
Tests for L{tlcache.nevow.appserver} and the twisted.web bridge: child
lookup, redirects, mixing with twisted.web resources, and responses to
failed renders, through a real twisted.web site over an in-memory
transport.
"""

from __future__ import annotations

import sys
from typing import Any, List

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource
from twisted.web import template as twtemplate
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import Interface, implementer

import tlcache.nevow
from tlcache.nevow import appserver, inevow, loaders, rend, url
from tlcache.nevow import tags as T
from tlcache.nevow.testutil import (
    IncompleteResponseError,
    Response,
    parseResponse,
    sendRequest,
)


def get(root: Any, path: bytes, **kwargs: Any) -> Response:
    """
    GET C{path} from a L{appserver.NevowSite} (or a site) for C{root}.
    """
    site = root if isinstance(root, Site) else appserver.NevowSite(root)
    return sendRequest(site, path, **kwargs).response()


def textPage(text: str) -> rend.Page:
    """
    A page showing C{text}.
    """
    return rend.Page(docFactory=loaders.stan(T.p[text]))


class Segments(rend.Page):
    """
    Shows the segments it was reached and rendered with.
    """

    def render_segments(self, ctx: Any, data: Any) -> Any:
        return ctx.tag[
            "/".join(inevow.ICurrentSegments(ctx)),
            "|",
            "/".join(inevow.IRemainingSegments(ctx)),
        ]

    docFactory = loaders.stan(T.p(render=T.directive("segments")))


class Data(resource.Resource):
    """
    A plain twisted.web leaf resource.
    """

    isLeaf = True

    def __init__(self, body: bytes, contentType: bytes) -> None:
        super().__init__()
        self.body = body
        self.contentType = contentType

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", self.contentType)
        return self.body


class ChildLookupTests(SynchronousTestCase):
    """
    How pages find their children.
    """

    def test_childrenDict(self) -> None:
        """
        C{putChild} (with C{str} or C{bytes} names) adds to C{children}.
        """
        root = rend.Page()
        root.putChild("a", textPage("A"))
        root.putChild(b"b", textPage("B"))
        self.assertEqual(get(root, b"/a").body, b"<p>A</p>")
        self.assertEqual(get(root, b"/b").body, b"<p>B</p>")
        self.assertEqual(sorted(root.children), ["a", "b"])

    def test_childAttributeAndMethod(self) -> None:
        """
        C{child_*} attributes are children; C{child_*} methods make them
        (also in Deferreds).
        """

        class Root(rend.Page):
            child_attr = textPage("attr")

            def child_method(self, ctx: Any) -> Any:
                return textPage("method")

            def child_later(self, ctx: Any) -> Any:
                return succeed(None).addCallback(lambda _: textPage("later"))

        for name in (b"attr", b"method", b"later"):
            response = get(Root(), b"/" + name)
            self.assertEqual(
                (response.code, response.body), (200, b"<p>" + name + b"</p>")
            )

    def test_childFactory(self) -> None:
        """
        C{childFactory} is asked last.
        """

        class Root(rend.Page):
            def childFactory(self, ctx: Any, name: str) -> Any:
                if name.startswith("item"):
                    return textPage(name[4:])
                return None

        self.assertEqual(get(Root(), b"/item42").body, b"<p>42</p>")
        self.assertEqual(get(Root(), b"/other").code, 404)

    def test_order(self) -> None:
        """
        C{children} wins over C{child_*}, which wins over C{childFactory}.
        """

        class Root(rend.Page):
            child_x = textPage("attribute")

            def childFactory(self, ctx: Any, name: str) -> Any:
                return textPage("factory")

        root = Root()
        self.assertEqual(get(root, b"/x").body, b"<p>attribute</p>")
        self.assertEqual(get(root, b"/y").body, b"<p>factory</p>")
        root.putChild("x", textPage("dict"))
        self.assertEqual(get(root, b"/x").body, b"<p>dict</p>")

    def test_noneChild(self) -> None:
        """
        A C{child_*} method that returns C{None} means not found.
        """

        class Root(rend.Page):
            def child_gone(self, ctx: Any) -> Any:
                return None

        response = get(Root(), b"/gone")
        self.assertEqual(response.code, 404)
        self.assertIn(b"Page Not Found", response.body)

    def test_nested(self) -> None:
        """
        Lookup continues below each child, with the segments traversed.
        """
        root = rend.Page()
        middle = rend.Page()
        root.putChild("a", middle)
        middle.putChild("b", Segments())
        self.assertEqual(get(root, b"/a/b").body, b"<p>a/b|</p>")

    def test_multipleSegments(self) -> None:
        """
        C{locateChild} may consume several segments at once.
        """

        class Root(rend.Page):
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                if segments[:2] == ("a", "b"):
                    return Segments(), segments[2:]
                return rend.NotFound

        self.assertEqual(get(Root(), b"/a/b").body, b"<p>a/b|</p>")
        self.assertEqual(get(Root(), b"/a/c").code, 404)

    def test_deferredLocateChild(self) -> None:
        """
        C{locateChild} may return a Deferred; traversal continues when it
        fires.
        """
        pending: Deferred[Any] = Deferred()

        class Root(rend.Page):
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                return pending

        child = rend.Page()
        child.putChild("leaf", Segments())
        exchange = sendRequest(appserver.NevowSite(Root()), b"/x/leaf")
        self.assertRaises(IncompleteResponseError, exchange.response)
        pending.callback((child, ("leaf",)))
        self.assertEqual(exchange.response().body, b"<p>x/leaf|</p>")

    def test_deferredLocateChildFails(self) -> None:
        """
        A failed Deferred from C{locateChild} gives a 500.
        """

        class Root(rend.Page):
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                return fail(KeyError("no"))

        root = Root()
        self.assertEqual(get(root, b"/x").code, 500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_passSegmentsOn(self) -> None:
        """
        A child returned with all the segments gets them all.
        """

        seen = []

        class Catcher(rend.Page):
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                seen.append(segments)
                return Segments(), ()

        class Root(rend.Page):
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                return Catcher(), segments

        self.assertEqual(get(Root(), b"/a/b").body, b"<p>a/b|</p>")
        self.assertEqual(seen, [("a", "b")])

    def test_rewrittenSegments(self) -> None:
        """
        C{locateChild} may give different remaining segments.
        """
        target = rend.Page()
        target.putChild("real", Segments())

        class Root(rend.Page):
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                return target, ("real",)

        self.assertEqual(get(Root(), b"/alias/x").body, b"<p>alias/real|</p>")

    def test_selfWithoutConsuming(self) -> None:
        """
        Returning itself without consuming a segment is an error, not a
        loop.
        """

        class Root(rend.Page):
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                return self, segments

        self.assertEqual(get(Root(), b"/a").code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_remembrancesReachTheChild(self) -> None:
        """
        What a parent remembers on its context while locating a child is
        visible to the child's render methods.
        """

        class IThing(Interface):
            pass

        class Child(rend.Page):
            def render_it(self, ctx: Any, data: Any) -> Any:
                return ctx.locate(IThing)

            docFactory = loaders.stan(T.p[T.directive("it")])

        class Root(rend.Page):
            def child_child(self, ctx: Any) -> Any:
                ctx.remember("Thing", IThing)
                return succeed(Child())

        self.assertEqual(get(Root(), b"/child").body, b"<p>Thing</p>")

    def test_textChild(self) -> None:
        """
        A text child is served as an HTML page.
        """

        class Root(rend.Page):
            def child_foo(self, ctx: Any) -> Any:
                return "<html>Hello, world</html>"

        response = get(Root(), b"/foo")
        self.assertEqual(response.body, b"<html>Hello, world</html>")
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")

    def test_bareNevowResource(self) -> None:
        """
        Any object providing L{inevow.IResource} can be a resource.
        """

        @implementer(inevow.IResource)
        class Hello:
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                return Hello(), segments[1:]

            def renderHTTP(self, ctx: Any) -> Any:
                inevow.IRequest(ctx).setHeader(b"content-type", b"text/plain")
                return "Hello " + "/".join(inevow.ICurrentSegments(ctx))

        response = get(Hello(), b"/a/b")
        self.assertEqual(response.body, b"Hello a/b")
        self.assertEqual(response.header(b"content-type"), b"text/plain")

    def test_renderHTTPReturnsResource(self) -> None:
        """
        C{renderHTTP} may return another resource to render instead.
        """

        class Root(rend.Page):
            def renderHTTP(self, ctx: Any) -> Any:
                return textPage("instead")

        self.assertEqual(get(Root(), b"/").body, b"<p>instead</p>")


class TwistedWebMixTests(SynchronousTestCase):
    """
    Shim pages and twisted.web resources as children of each other.
    """

    def test_twistedChildOfPage(self) -> None:
        """
        A twisted.web resource can be a page's child, with its own children.
        """
        directory = resource.Resource()
        directory.putChild(b"file", Data(b"plain data", b"text/plain"))

        class Root(rend.Page):
            child_dir = directory
            child_data = Data(b"<b>data</b>", b"text/html")

        root = Root()
        self.assertEqual(get(root, b"/data").body, b"<b>data</b>")
        response = get(root, b"/dir/file")
        self.assertEqual(
            (response.body, response.header(b"content-type")),
            (b"plain data", b"text/plain"),
        )

    def test_pageChildOfTwisted(self) -> None:
        """
        A page can be the child of a twisted.web resource under a plain
        twisted.web site, and have twisted.web children in turn.
        """
        root = resource.Resource()
        page = Segments()
        root.putChild(b"page", page)
        deeper = resource.Resource()
        page.putChild("deeper", deeper)
        deeper.putChild(b"again", Segments())
        site = Site(root)
        self.assertEqual(get(site, b"/page").body, b"<p>page|</p>")
        self.assertEqual(
            get(site, b"/page/deeper/again").body, b"<p>page/deeper/again|</p>"
        )

    def test_templateElementInPage(self) -> None:
        """
        A twisted.web.template Element can sit in a page's tree.
        """

        class Box(twtemplate.Element):
            loader = twtemplate.TagLoader(
                twtemplate.tags.div(twtemplate.tags.span(render="inner"))
            )

            @twtemplate.renderer
            def inner(self, request: Any, tag: Any) -> Any:
                return tag(request.uri.decode())

        page = rend.Page(docFactory=loaders.stan(T.section[Box()]))
        self.assertEqual(
            get(page, b"/").body, b"<section><div><span>/</span></div></section>"
        )


class SlashAndNotFoundTests(SynchronousTestCase):
    """
    C{addSlash} and 404 pages.
    """

    def test_addSlashRedirects(self) -> None:
        """
        A page with C{addSlash} redirects to the URL with a trailing slash,
        keeping the query, and renders there.
        """
        root = rend.Page()
        page = Segments()
        page.addSlash = True
        root.putChild("dir", page)
        redirect = get(root, b"/dir?a=1")
        self.assertEqual(redirect.code, 302)
        self.assertEqual(redirect.header(b"location"), b"http://example.com/dir/?a=1")
        self.assertEqual(get(root, b"/dir/").body, b"<p>dir/|</p>")

    def test_withoutAddSlash(self) -> None:
        """
        Without C{addSlash}, the trailing slash is a missing child.
        """
        root = rend.Page()
        root.putChild("file", textPage("f"))
        self.assertEqual(get(root, b"/file").code, 200)
        self.assertEqual(get(root, b"/file/").code, 404)

    def test_siteRootGetsAddSlash(self) -> None:
        """
        The site's root page gets C{addSlash}, so C{/} renders it.
        """
        response = get(textPage("root"), b"/")
        self.assertEqual((response.code, response.body), (200, b"<p>root</p>"))

    def test_notFound(self) -> None:
        """
        A missing child gives the standard 404 page.
        """
        response = get(rend.Page(), b"/missing/deeper")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.body, rend.FourOhFour.notFound.encode())

    def test_siteNotFoundPage(self) -> None:
        """
        A site remembers its own not-found page.
        """

        @implementer(inevow.ICanHandleNotFound)
        class NotFoundPage:
            def renderHTTP_notFound(self, ctx: Any) -> str:
                return (
                    "<p>nothing at " + "/".join(inevow.ICurrentSegments(ctx)) + "</p>"
                )

        site = appserver.NevowSite(rend.Page())
        site.remember(NotFoundPage(), inevow.ICanHandleNotFound)
        response = get(site, b"/nope")
        self.assertEqual(
            (response.code, response.body), (404, b"<p>nothing at nope</p>")
        )

    def test_siteRemembers(self) -> None:
        """
        What the site remembers can be located from every page.
        """

        class IConfig(Interface):
            pass

        site = appserver.NevowSite(
            rend.Page(
                docFactory=loaders.stan(T.p(render=lambda ctx, data: IConfig(ctx)))
            )
        )
        site.remember("configured", IConfig)
        self.assertEqual(get(site, b"/").body, b"configured")


class ResponseTests(SynchronousTestCase):
    """
    Headers and bodies of rendered pages.
    """

    def test_headers(self) -> None:
        """
        Pages are UTF-8 HTML with a Content-Length.
        """
        response = get(textPage("\u00e9"), b"/")
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")
        self.assertEqual(response.header(b"content-length"), b"%d" % len(response.body))
        self.assertEqual(response.body, "<p>\u00e9</p>".encode())

    def test_renderMethodSetsHeaders(self) -> None:
        """
        A render method can still set headers and the status: the page is
        written only once complete.
        """

        class Page(rend.Page):
            def render_late(self, ctx: Any, data: Any) -> Any:
                request = inevow.IRequest(ctx)
                request.setHeader(b"content-type", b"application/xhtml+xml")
                request.setResponseCode(201)
                return ctx.tag["x"]

            docFactory = loaders.stan(
                T.div[T.p["before"], T.p(render=T.directive("late"))]
            )

        response = get(Page(), b"/")
        self.assertEqual(response.code, 201)
        self.assertEqual(response.header(b"content-type"), b"application/xhtml+xml")

    def test_head(self) -> None:
        """
        A HEAD request gets the headers without the body.
        """
        exchange = sendRequest(
            appserver.NevowSite(textPage("body")), b"/", method=b"HEAD"
        )
        raw = exchange.raw()
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "))
        self.assertIn(b"Content-Length: 11", raw)
        self.assertTrue(raw.endswith(b"\r\n\r\n"))

    def test_deferredPage(self) -> None:
        """
        A page that waits is written when it is complete.
        """
        d: Deferred[Any] = Deferred()
        page = rend.Page(docFactory=loaders.stan(T.p["a", d, "c"]))
        exchange = sendRequest(appserver.NevowSite(page), b"/")
        self.assertEqual(exchange.raw(), b"")
        d.callback("b")
        self.assertEqual(exchange.response().body, b"<p>abc</p>")

    def test_disconnectCancels(self) -> None:
        """
        When the client goes away, the render stops waiting.
        """
        cancelled: List[bool] = []
        d: Deferred[Any] = Deferred(lambda _: cancelled.append(True))
        page = rend.Page(docFactory=loaders.stan(T.p[d]))
        exchange = sendRequest(appserver.NevowSite(page), b"/")
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        channel = exchange.channel
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(cancelled, [True])
        self.assertEqual(exchange.raw(), b"")


class FailureTests(SynchronousTestCase):
    """
    A failed render is a 500 with none of the page in it, and is logged.
    """

    def assertFailed(self, response: Response, secret: bytes = b"SECRET") -> None:
        """
        C{response} is the generic 500 page, without C{secret}.
        """
        self.assertEqual(response.code, 500)
        self.assertIn(b"Internal Server Error", response.body)
        self.assertNotIn(secret, response.body)
        self.assertEqual(response.header(b"content-type"), b"text/html; charset=utf-8")

    def test_renderMethodRaises(self) -> None:
        """
        A render method that raises fails the response.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(
                T.div[T.p["SECRET"], T.p(render=T.directive("broken"))]
            )

            def render_broken(self, ctx: Any, data: Any) -> Any:
                raise ValueError("broken")

        self.assertFailed(get(Page(), b"/"))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_dataMethodFailsLater(self) -> None:
        """
        A data method whose Deferred fails fails the response.
        """
        d: Deferred[Any] = Deferred()

        class Page(rend.Page):
            docFactory = loaders.stan(
                T.div[
                    T.p["SECRET"],
                    T.p(data=T.directive("x"), render=T.directive("string")),
                ]
            )

            def data_x(self, ctx: Any, data: Any) -> Any:
                return d

        exchange = sendRequest(appserver.NevowSite(Page()), b"/")
        d.errback(ZeroDivisionError())
        self.assertFailed(exchange.response())
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_failureAfterHeadersAreSet(self) -> None:
        """
        Headers set by the page before it failed (a cookie, a redirect) are
        not sent with the error.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(T.p(render=T.directive("broken")))

            def render_broken(self, ctx: Any, data: Any) -> Any:
                request = inevow.IRequest(ctx)
                request.addCookie(b"k", b"v")
                request.setHeader(b"location", b"/elsewhere")
                raise ValueError()

        response = get(Page(), b"/")
        self.assertFailed(response)
        self.assertIsNone(response.header(b"set-cookie"))
        self.assertIsNone(response.header(b"location"))
        self.flushLoggedErrors(ValueError)

    def test_tracebacksWhenAsked(self) -> None:
        """
        A site with C{displayTracebacks} shows the traceback.
        """

        class Page(rend.Page):
            docFactory = loaders.stan(T.p(render=T.directive("broken")))

            def render_broken(self, ctx: Any, data: Any) -> Any:
                raise ValueError("visible problem")

        site = appserver.NevowSite(Page())
        site.displayTracebacks = True
        response = get(site, b"/")
        self.assertEqual(response.code, 500)
        self.assertIn(b"visible problem", response.body)
        self.flushLoggedErrors(ValueError)

    def test_failureAfterWriting(self) -> None:
        """
        A resource that wrote part of its response before failing gets its
        connection dropped rather than a complete-looking response.
        """

        @implementer(inevow.IResource)
        class Partial:
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                return self, ()

            def renderHTTP(self, ctx: Any) -> Any:
                inevow.IRequest(ctx).write(b"partial")
                raise ValueError()

        exchange = sendRequest(appserver.NevowSite(Partial()), b"/")
        self.assertTrue(exchange.transport.disconnecting)
        self.assertRaises(IncompleteResponseError, parseResponse, exchange.raw())
        self.flushLoggedErrors(ValueError)

    def test_locateChildRaises(self) -> None:
        """
        An exception while finding a child is a 500 too.
        """

        class Page(rend.Page):
            def childFactory(self, ctx: Any, name: str) -> Any:
                raise KeyError(name)

        self.assertEqual(get(Page(), b"/x").code, 500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)


class NotDoneYetTests(SynchronousTestCase):
    """
    Nevow-style resources that finish the request themselves.
    """

    def test_notDoneYet(self) -> None:
        """
        C{renderHTTP} may return C{NOT_DONE_YET} and finish later.
        """
        requests: List[Any] = []

        @implementer(inevow.IResource)
        class Later:
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                return self, ()

            def renderHTTP(self, ctx: Any) -> Any:
                requests.append(inevow.IRequest(ctx))
                return NOT_DONE_YET

        exchange = sendRequest(appserver.NevowSite(Later()), b"/")
        requests[0].write(b"done")
        requests[0].finish()
        self.assertEqual(exchange.response().body, b"done")


class AliasTests(SynchronousTestCase):
    """
    L{tlcache.nevow.installAlias}.
    """

    def test_importNevow(self) -> None:
        """
        After C{installAlias}, C{nevow} imports this package's modules;
        C{uninstallAlias} undoes it.
        """
        self.assertNotIn("nevow", sys.modules)
        tlcache.nevow.installAlias()
        self.addCleanup(tlcache.nevow.uninstallAlias)
        import nevow.url  # type: ignore[import-not-found]
        from nevow import loaders as aliasedLoaders  # type: ignore[import-not-found]
        from nevow import rend as aliasedRend  # type: ignore[import-not-found]
        from nevow import tags as aliasedTags  # type: ignore[import-not-found]

        self.assertIs(aliasedRend, rend)
        self.assertIs(aliasedLoaders, loaders)
        self.assertIs(aliasedTags, T)
        self.assertIs(nevow.url, url)
        self.assertEqual(url.__spec__.name, "tlcache.nevow.url")
        tlcache.nevow.uninstallAlias()
        self.assertNotIn("nevow", sys.modules)
        self.assertNotIn("nevow.url", sys.modules)
        with self.assertRaises(ImportError):
            import nevow  # type: ignore[import-not-found] # noqa: F401

    def test_installTwice(self) -> None:
        """
        Installing twice installs once.
        """
        tlcache.nevow.installAlias()
        tlcache.nevow.installAlias()
        self.addCleanup(tlcache.nevow.uninstallAlias)
        finders = [f for f in sys.meta_path if type(f).__name__ == "_AliasFinder"]
        self.assertEqual(len(finders), 1)
