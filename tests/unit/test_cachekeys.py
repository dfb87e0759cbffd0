"""
Tests for L{tlcache.keys}: which requests share a cache key, and how keys
are laid out for prefix invalidation.
"""

from __future__ import annotations

from typing import Dict, Optional

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import parse_qs
from twisted.web.test.requesthelper import DummyRequest

from tlcache.keys import (
    UncacheableRequestError,
    cacheInputs,
    familyOfKey,
    keyPrefix,
    normaliseHost,
    pageKey,
    parseQuery,
    sortedQuery,
    templateDigest,
    variantFamily,
)


def request(
    uri: bytes = b"/page",
    host: Optional[bytes] = b"example.com",
    headers: Optional[Dict[bytes, bytes]] = None,
    secure: bool = False,
) -> DummyRequest:
    path, _, query = uri.partition(b"?")
    req = DummyRequest(path.lstrip(b"/").split(b"/"))
    req.uri = uri
    for pair in query.split(b"&") if query else ():
        name, _, value = pair.partition(b"=")
        req.args.setdefault(name, []).append(value)
    if host is not None:
        req.requestHeaders.setRawHeaders(b"host", [host])
    for name, value in (headers or {}).items():
        req.requestHeaders.setRawHeaders(name, [value])
    req.isSecure = lambda: secure  # type: ignore[attr-defined]
    return req


class PageKeyTests(SynchronousTestCase):
    """
    What makes two requests the same cached page.
    """

    def test_reorderedQuerySameKey(self) -> None:
        """
        Reordered query arguments give one key; a different value does not.
        """
        self.assertEqual(
            pageKey(request(b"/p?b=2&a=1&c=")), pageKey(request(b"/p?c=&a=1&b=2"))
        )
        self.assertNotEqual(
            pageKey(request(b"/p?a=1&b=2")), pageKey(request(b"/p?a=1&b=3"))
        )

    def test_repeatedArgumentOrderKept(self) -> None:
        """
        The values of a repeated argument keep their order: a list reordered
        is a different request.
        """
        self.assertEqual(sortedQuery(b"b=1&a=2&a=1"), b"a=2&a=1&b=1")
        self.assertNotEqual(
            pageKey(request(b"/p?a=1&a=2")), pageKey(request(b"/p?a=2&a=1"))
        )

    def test_blankAndMissingQueryDiffer(self) -> None:
        """
        C{?a=} is not C{?} and not no query.
        """
        self.assertNotEqual(pageKey(request(b"/p?a=")), pageKey(request(b"/p")))
        self.assertEqual(pageKey(request(b"/p?")), pageKey(request(b"/p")))

    def test_nonAsciiQueryRoundTrips(self) -> None:
        """
        Any bytes in the query are kept distinct.
        """
        self.assertNotEqual(
            pageKey(request(b"/p?q=%E9")), pageKey(request(b"/p?q=%C3%A9"))
        )
        self.assertNotEqual(pageKey(request(b"/p?q=\xe9")), pageKey(request(b"/p?q=e")))

    def test_queryAllowlist(self) -> None:
        """
        With C{queryArgs}, other arguments do not change the key.
        """
        self.assertEqual(
            pageKey(request(b"/p?page=2&utm=x"), queryArgs=["page"]),
            pageKey(request(b"/p?page=2&utm=y"), queryArgs=["page"]),
        )

    def test_twoVhostsTwoKeys(self) -> None:
        """
        The same path on two virtual hosts gives two keys.
        """
        self.assertNotEqual(
            pageKey(request(host=b"a.example")), pageKey(request(host=b"b.example"))
        )

    def test_hostNormalised(self) -> None:
        """
        The host is lower-cased and the scheme's default port dropped; other
        ports are kept.
        """
        self.assertEqual(normaliseHost(b"Example.COM:80", False), b"example.com")
        self.assertEqual(normaliseHost(b"example.com:443", True), b"example.com")
        self.assertEqual(normaliseHost(b"example.com:443", False), b"example.com:443")
        self.assertEqual(normaliseHost(b"[::1]:8080", False), b"[::1]:8080")
        self.assertEqual(normaliseHost(b"[::1]:80", False), b"[::1]")
        self.assertEqual(
            pageKey(request(host=b"EXAMPLE.com:80")),
            pageKey(request(host=b"example.com")),
        )
        self.assertEqual(
            pageKey(request(host=b"example.com:443", secure=True)),
            pageKey(request(host=b"example.com", secure=True)),
        )
        self.assertNotEqual(
            pageKey(request(host=b"example.com:8080")),
            pageKey(request(host=b"example.com")),
        )

    def test_schemeInKey(self) -> None:
        """
        http and https copies are different keys of one family.
        """
        plain, secure = request(), request(secure=True)
        self.assertNotEqual(pageKey(plain), pageKey(secure))
        self.assertEqual(familyOfKey(pageKey(plain)), familyOfKey(pageKey(secure)))

    def test_missingHostUsesSite(self) -> None:
        """
        Without a Host header, the given site host, or else the address the
        request arrived on, names the host.
        """
        self.assertEqual(
            pageKey(request(host=None), defaultHost=b"example.com"),
            pageKey(request(host=b"example.com")),
        )
        self.assertTrue(pageKey(request(host=None)).startswith(b"127.0.0.1|/page|"))

    def test_declaredVaryChangesKey(self) -> None:
        """
        Declared headers, cookies and arguments change the key.
        """
        vary = ("header:Accept-Language", "cookie:lang", "arg:page")
        base = pageKey(request(b"/p?page=1"), vary=vary)
        self.assertNotEqual(
            base,
            pageKey(
                request(b"/p?page=1", headers={b"accept-language": b"fr"}), vary=vary
            ),
        )
        self.assertNotEqual(
            base,
            pageKey(request(b"/p?page=1", headers={b"cookie": b"lang=fr"}), vary=vary),
        )
        self.assertNotEqual(
            pageKey(request(headers={b"cookie": b"x=1; lang=fr"}), vary=vary),
            pageKey(request(headers={b"cookie": b"x=1; lang=de"}), vary=vary),
        )
        self.assertNotEqual(
            pageKey(request(b"/p?page=1&x=1"), vary=vary, queryArgs=["x"]),
            pageKey(request(b"/p?page=2&x=1"), vary=vary, queryArgs=["x"]),
        )

    def test_undeclaredInputsIgnored(self) -> None:
        """
        Headers and cookies the page did not declare leave the key alone.
        """
        vary = ("header:accept-language",)
        self.assertEqual(
            pageKey(request(), vary=vary),
            pageKey(
                request(
                    headers={b"user-agent": b"x", b"cookie": b"TWISTED_SESSION=abc"}
                ),
                vary=vary,
            ),
        )

    def test_emptyHeaderDiffersFromMissing(self) -> None:
        """
        A declared header sent empty is not the same as one not sent.
        """
        vary = ("header:X-Mode",)
        self.assertNotEqual(
            pageKey(request(), vary=vary),
            pageKey(request(headers={b"x-mode": b""}), vary=vary),
        )

    def test_badVaryRejected(self) -> None:
        """
        A vary declaration of an unknown kind is an error, not ignored.
        """
        self.assertRaises(ValueError, pageKey, request(), vary=("session:x",))
        self.assertRaises(ValueError, pageKey, request(), vary=("Accept-Language",))

    def test_templateDigestAndVersionChangeKey(self) -> None:
        """
        A template edit or a version bump gives new keys.
        """
        before = templateDigest("<html>one</html>")
        after = templateDigest(b"<html>two</html>")
        self.assertEqual(before, templateDigest(b"<html>one</html>"))
        self.assertEqual(len(before), 32)
        self.assertNotEqual(
            pageKey(request(), templateDigest=before),
            pageKey(request(), templateDigest=after),
        )
        self.assertNotEqual(
            pageKey(request(), version="1"), pageKey(request(), version="2")
        )

    def test_pathAsSent(self) -> None:
        """
        The path is not percent-decoded nor dot-folded: these name different
        resources to twisted.web.
        """
        self.assertNotEqual(pageKey(request(b"/a%2Fb")), pageKey(request(b"/a/b")))
        self.assertNotEqual(pageKey(request(b"/a/../b")), pageKey(request(b"/b")))


class KeyLayoutTests(SynchronousTestCase):
    """
    Keys are laid out so a path or a subtree can be invalidated by prefix.
    """

    def test_layout(self) -> None:
        """
        A key is its family, a bar, and 32 hex digits; the family is host and
        path.
        """
        req = request(b"/news/today?x=1", host=b"Example.com")
        key = pageKey(req)
        family = variantFamily(req)
        self.assertEqual(family, b"example.com|/news/today")
        self.assertEqual(familyOfKey(key), family)
        self.assertTrue(key.startswith(keyPrefix(b"example.com:80", b"/news/")))
        digest = key[len(family) + 1 :]
        self.assertEqual(len(digest), 32)
        int(digest, 16)

    def test_barEscaped(self) -> None:
        """
        A bar in the path cannot make one path's key look like another
        family's.
        """
        key = pageKey(request(b"/a|b"))
        self.assertEqual(familyOfKey(key), b"example.com|/a%7Cb")
        self.assertFalse(key.startswith(b"example.com|/a|"))

    def test_fixedLengthDigest(self) -> None:
        """
        A huge query does not make the key longer.
        """
        short, long_ = (
            pageKey(request(b"/p?a=1")),
            pageKey(request(b"/p?a=" + b"x" * 10000)),
        )
        self.assertEqual(len(short), len(long_))


_QUERY_BYTES = st.binary(max_size=40).map(
    lambda raw: raw.replace(b"\x00", b"")
) | st.text(alphabet="ab=&;+%2F3Bx <>", max_size=30).map(str.encode)


class CacheInputsTests(SynchronousTestCase):
    """
    L{cacheInputs}: a request's inputs in the one form that both the key
    and the cached render are made from.
    """

    @given(_QUERY_BYTES)
    def test_queryParsedAsTwistedWebParsesIt(self, query: bytes) -> None:
        """
        L{parseQuery} reads any query as twisted.web's C{request.args}
        does (C{;} separates arguments too, items without C{=} dropped).
        """
        grouped: Dict[bytes, list] = {}
        for name, value in parseQuery(query):
            grouped.setdefault(name, []).append(value)
        self.assertEqual(grouped, parse_qs(query, 1))

    @given(_QUERY_BYTES)
    def test_canonicalQueryReadsBackTheSame(self, query: bytes) -> None:
        """
        The canonical query the render is given parses back to the very
        arguments the key was made from, and is its own canonical form.
        """
        inputs = cacheInputs(request(b"/p?" + query))
        again = cacheInputs(request(inputs.uri()))
        self.assertEqual(again.query, inputs.query)
        self.assertEqual(again.uri(), inputs.uri())
        self.assertEqual(again.key(), inputs.key())

    def test_semicolonSeparates(self) -> None:
        """
        C{?a=1;b=2} is two arguments, and not the page C{?a=1%3Bb%3D2}.
        """
        self.assertEqual(
            cacheInputs(request(b"/p?a=1;b=2")).query, ((b"a", b"1"), (b"b", b"2"))
        )
        self.assertNotEqual(
            pageKey(request(b"/p?a=1;b=2")), pageKey(request(b"/p?a=1%3Bb%3D2"))
        )

    def test_repeatedCookieTakesTheFirst(self) -> None:
        """
        A declared cookie sent twice is the first value, and the render's
        Cookie header holds that one only.
        """
        req = request()
        req.requestHeaders.setRawHeaders(
            b"cookie", [b"theme=blue; x=1; theme=red", b"theme=green"]
        )
        inputs = cacheInputs(req, vary=("cookie:theme",))
        self.assertEqual(inputs.cookies, ((b"theme", b"blue"),))
        self.assertEqual(inputs.cookieHeader(), b"theme=blue")

    def test_repeatedHeaderIsOneValue(self) -> None:
        """
        A declared header on two lines is one value, joined with a comma.
        """
        req = request()
        req.requestHeaders.setRawHeaders(b"accept-language", [b"fr", b"de"])
        inputs = cacheInputs(req, vary=("header:Accept-Language",))
        self.assertEqual(inputs.headers, ((b"accept-language", b"fr, de"),))

    def test_repeatedHostHasNoKey(self) -> None:
        """
        Two Host headers: no single host to key on.
        """
        req = request()
        req.requestHeaders.setRawHeaders(b"host", [b"a.example", b"b.example"])
        self.assertRaises(UncacheableRequestError, pageKey, req)

    def test_hostNormalisedForTheRender(self) -> None:
        """
        The Host the render sees is the key's: lower case, no trailing dot,
        no default port; the port asked for is known.
        """
        inputs = cacheInputs(request(host=b"GOOD.Example.:80"))
        self.assertEqual(inputs.hostHeader, b"good.example")
        self.assertEqual(inputs.port, 80)
        self.assertEqual(cacheInputs(request(host=b"[::1]:8443")).port, 8443)
        self.assertEqual(cacheInputs(request(host=b"x", secure=True)).port, 443)
