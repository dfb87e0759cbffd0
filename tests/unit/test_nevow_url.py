"""
Tests for L{tlcache.nevow.url}: URL parsing, derivation and rendering, the
lazy C{here}/C{gethere}/C{root} URLs and redirects.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tlcache.nevow import appserver, flat, loaders, rend, url
from tlcache.nevow import tags as T
from tlcache.nevow.testutil import sendRequest

URL = url.URL


class URLTests(SynchronousTestCase):
    """
    L{url.URL}.
    """

    def test_roundTrip(self) -> None:
        """
        Parsing and turning back into text gives the same URL.
        """
        for text in (
            "http://example.com/",
            "http://example.com/a/b?x=1&y=2#frag",
            "https://example.com:8443/a%20b/c?flag&q=a%26b",
            "http://example.com",
        ):
            self.assertEqual(
                str(URL.fromString(text)), text if text.count("/") > 2 else text + "/"
            )

    def test_parts(self) -> None:
        """
        Path segments and query arguments are held decoded.
        """
        u = URL.fromString("http://h:1/a%20b/c?x=1+2&flag#f%20g")
        self.assertEqual((u.scheme, u.netloc), ("http", "h:1"))
        self.assertEqual(u.pathList(), ["a b", "c"])
        self.assertEqual(u.queryList(), [("x", "1 2"), ("flag", None)])
        self.assertEqual(u.fragment, "f g")
        self.assertEqual(u.path, "a%20b/c")
        self.assertEqual(u.query, ["x=1 2", "flag"])

    def test_equality(self) -> None:
        """
        URLs compare by their parts.
        """
        self.assertEqual(URL.fromString("http://a/b"), URL.fromString("http://a/b"))
        self.assertNotEqual(URL.fromString("http://a/b"), URL.fromString("http://a/c"))
        self.assertEqual(
            len({URL.fromString("http://a/b"), URL.fromString("http://a/b")}), 1
        )

    def test_pathOperations(self) -> None:
        """
        C{child}, C{sibling}, C{curdir}, C{up} and C{parentdir}.
        """
        u = URL.fromString("http://h/a/b")
        self.assertEqual(str(u.child("c d")), "http://h/a/b/c%20d")
        self.assertEqual(str(URL.fromString("http://h/a/").child("c")), "http://h/a/c")
        self.assertEqual(str(u.sibling("z")), "http://h/a/z")
        self.assertEqual(str(u.curdir()), "http://h/a/")
        self.assertEqual(str(u.up()), "http://h/a")
        self.assertEqual(str(u.parentdir()), "http://h/")
        self.assertEqual(
            str(URL.fromString("http://h/a/b/").parentdir()), "http://h/a/"
        )

    def test_queryOperations(self) -> None:
        """
        C{add}, C{replace}, C{remove} and C{clear}.
        """
        u = URL.fromString("http://h/?a=1&b=2&a=3")
        self.assertEqual(str(u.add("c", 4)), "http://h/?a=1&b=2&a=3&c=4")
        self.assertEqual(str(u.add("flag")), "http://h/?a=1&b=2&a=3&flag")
        self.assertEqual(str(u.replace("a", "x")), "http://h/?a=x&b=2")
        self.assertEqual(str(u.replace("z", "new")), "http://h/?a=1&b=2&a=3&z=new")
        self.assertEqual(str(u.remove("a")), "http://h/?b=2")
        self.assertEqual(str(u.clear("b")), "http://h/?a=1&a=3")
        self.assertEqual(str(u.clear()), "http://h/")
        self.assertEqual(str(u.add("q", "a b&c")), "http://h/?a=1&b=2&a=3&q=a%20b%26c")

    def test_schemeAndAnchor(self) -> None:
        """
        C{secure} and C{anchor}.
        """
        u = URL.fromString("http://h:80/p")
        self.assertEqual(str(u.secure()), "https://h/p")
        self.assertEqual(str(u.secure(port=8443)), "https://h:8443/p")
        self.assertEqual(str(u.secure(False, 8080)), "http://h:8080/p")
        self.assertEqual(str(u.anchor("top")), "http://h:80/p#top")
        self.assertEqual(str(u.anchor("top").anchor()), "http://h:80/p")

    def test_click(self) -> None:
        """
        C{click} resolves links like a browser.
        """
        base = URL.fromString("http://h/a/b?q=1#f")
        self.assertIs(base.click(""), base)
        self.assertEqual(str(base.click("c")), "http://h/a/c")
        self.assertEqual(str(base.click("/c")), "http://h/c")
        self.assertEqual(str(base.click("../c")), "http://h/c")
        self.assertEqual(str(base.click("./")), "http://h/a/")
        self.assertEqual(str(base.click("?z=2")), "http://h/a/b?z=2")
        self.assertEqual(str(base.click("#g")), "http://h/a/b?q=1#g")
        self.assertEqual(str(base.click("//other/x")), "http://other/x")
        self.assertEqual(str(base.click("https://s/y?k")), "https://s/y?k")

    def test_normURLPath(self) -> None:
        """
        L{url.normURLPath} resolves dot segments.
        """
        self.assertEqual(url.normURLPath("a/./b/../c"), "a/c")
        self.assertEqual(url.normURLPath("a/b/.."), "a/")

    def test_flattenEscapes(self) -> None:
        """
        A URL in a tree is escaped like text (so C{&} becomes C{&amp;}).
        """
        u = URL.fromString("http://h/?a=1&b=<2>")
        self.assertEqual(
            flat.flatten(T.a(href=u)[u]),
            b'<a href="http://h/?a=1&amp;b=%3C2%3E">http://h/?a=1&amp;b=%3C2%3E</a>',
        )


class Recorder(rend.Page):
    """
    Renders the lazy URLs.
    """

    docFactory = loaders.stan(
        T.div[
            T.a(href=url.here)["here"],
            T.a(href=url.gethere)["gethere"],
            T.a(href=url.here.child("x").add("k", "v"))["child"],
            T.a(href=url.root.child("top"))["root"],
            T.a(href=url.here.keep("keep"))["keep"],
        ]
    )


class RequestURLTests(SynchronousTestCase):
    """
    URLs from requests.
    """

    def test_overlays(self) -> None:
        """
        C{here}, C{gethere} and C{root} become the request's URLs when the
        page renders.
        """
        root = rend.Page()
        root.putChild("sub", Recorder())
        response = sendRequest(
            appserver.NevowSite(root), b"/sub?keep=1&other=2"
        ).response()
        self.assertEqual(
            response.body,
            b'<div><a href="http://example.com/sub">here</a>'
            b'<a href="http://example.com/sub?keep=1&amp;other=2">gethere</a>'
            b'<a href="http://example.com/sub/x?k=v">child</a>'
            b'<a href="http://example.com/top">root</a>'
            b'<a href="http://example.com/sub?keep=1">keep</a></div>',
        )

    def test_fromContext(self) -> None:
        """
        C{URL.fromContext} is the URL traversed so far, with the query.
        """
        seen = []

        class Page(rend.Page):
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                seen.append(str(URL.fromContext(ctx)))
                return rend.NotFound

        sendRequest(
            appserver.NevowSite(Page()), b"/a/b?q=1", host=b"h.example:8080"
        ).response()
        # twisted.web takes the host name from the Host header and the port
        # from the connection.
        self.assertEqual(seen, ["http://h.example/a?q=1"])

    def test_redirectChild(self) -> None:
        """
        A URL returned as a child redirects there; a relative one is
        resolved against the request's URL.
        """

        class Page(rend.Page):
            child_away = URL.fromString("http://example.org/elsewhere?a=1")
            child_near = url.here.sibling("other")

        site = appserver.NevowSite(Page())
        away = sendRequest(site, b"/away").response()
        self.assertEqual(away.code, 302)
        self.assertEqual(away.header(b"location"), b"http://example.org/elsewhere?a=1")
        near = sendRequest(site, b"/near").response()
        self.assertEqual(near.header(b"location"), b"http://example.com/other")

    def test_redirectFromLocateChild(self) -> None:
        """
        C{locateChild} may return a URL to redirect to, quoted properly.
        """

        class Page(rend.Page):
            def locateChild(self, ctx: Any, segments: Any) -> Any:
                return URL.fromString("http://example.com/foo!%40%24bar?b!%40z=123"), ()

        response = sendRequest(appserver.NevowSite(Page()), b"/url").response()
        self.assertEqual(
            response.header(b"location"), b"http://example.com/foo!%40%24bar?b!%40z=123"
        )
