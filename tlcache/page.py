# -*- test-case-name: tests.unit.test_cachedpage -*-
"""
The render cache for whole pages: the L{CachedPage} mixin and the
L{RenderCache} its pages share.

Mix L{CachedPage} in front of a C{tlcache.nevow} page or a plain
twisted.web resource::

    class Home(CachedPage, rend.Page):
        cacheTimeout = 30
        docFactory = loaders.xmlfile("home.html")

A GET is answered from the cache when a fresh copy is there. On a miss, one
render runs for all the requests that want the same page (the first client
is streamed the response as it is rendered, the others get the stored copy
when it is done). After C{cacheTimeout} the stale copy is served for
C{cacheGrace} seconds while one refresh runs in the background; when a
render fails, a copy up to C{cacheStaleIfError} seconds stale is served in
its place; no copy is served more than C{cacheMaxStale} seconds stale.

What is never stored: anything but a complete 200 response to a GET; a
response that sets a cookie, says C{Cache-Control: private} or
C{no-store}, or varies on something the page did not declare; a render that
asked for the session. Requests carrying C{Authorization} or a session
cookie are not answered from the cache unless the page declares what it
varies on (C{cacheVary}). Pages are rendered for the cache into a copy of
the request that carries only what the key is made of (L{tlcache._shadow}),
so a cached page cannot pick up anything else about a client by accident,
and no client can plant anything in a copy served to others.

See docs/caching.md for the whole story.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from tlcache._headers import AUTHORIZATION, COOKIE, rawHeaders
from tlcache._shadow import SessionInCachedRenderError
from tlcache.rendercache import UNCACHED, RenderCache, defaultRenderCache

__all__ = [
    "CachedPage",
    "RenderCache",
    "SessionInCachedRenderError",
    "defaultRenderCache",
]


class CachedPage:
    """
    Mix in before a page or resource class to cache its GET renders.

    The knobs, as class (or instance) attributes:

    @ivar renderCache: the L{RenderCache}; L{defaultRenderCache} if C{None}.
    @ivar cacheTimeout: seconds a render is fresh.
    @ivar cacheGrace: seconds after that a stale copy is served while one
        background render replaces it (stale-while-revalidate).
    @ivar cacheStaleIfError: seconds after freshness a stale copy is served
        in place of a failed render (a 5xx, or an exception).
    @ivar cacheMaxStale: the hard limit: no copy is served more stale than
        this (defaults to the larger of the two above).
    @ivar cacheVary: what the page varies on besides its URL, as
        C{"header:Accept-Language"}, C{"cookie:lang"}, C{"arg:page"}. The
        values go into the key and a C{Vary} header goes on responses.
        Declaring anything here also says the page is the same for everyone
        with the same values, so requests with a session cookie or
        C{Authorization} are then answered from the cache too (they are
        not otherwise).
    @ivar cacheQueryArgs: if not C{None}, only these query arguments are
        part of the key; others are ignored (and not seen by the render).
    @ivar cacheVersion: part of the key; change it to drop every copy.
    @ivar cacheTags: tags stored with each render, for
        L{RenderCache.invalidateTag}; see also L{cacheTagsFor}.
    @ivar cacheSessionCookies: cookie names (prefixes) that mark a request
        as having a session.
    @ivar cacheHosts: if not C{None}, the Host values (C{host[:port]})
        served from the cache, compared normalised (case, trailing dot,
        default port: L{tlcache.keys.normaliseHost}); requests for others
        bypass it, so a flood of made-up Host headers cannot fill the cache.
    @ivar cacheUncacheableTime: after a render that may not be stored (it
        set a cookie, used the session...), requests for the same key
        render uncached, each on its own, for this many seconds.
    @ivar cacheStatusHeader: if set, a response header saying C{HIT},
        C{STALE}, C{MISS} or C{BYPASS} (off by default).
    """

    renderCache: Optional[RenderCache] = None
    cacheTimeout: float = 60.0
    cacheGrace: float = 10.0
    cacheStaleIfError: float = 60.0
    cacheMaxStale: Optional[float] = None
    cacheVary: Sequence[str] = ()
    cacheQueryArgs: Optional[Sequence[str]] = None
    cacheVersion: str = ""
    cacheTags: Sequence[str] = ()
    cacheSessionCookies: Sequence[bytes] = (
        b"TLSESSION",
        b"__Host-TLSESSION",
        b"TWISTED_SESSION",
        b"TWISTED_SECURE_SESSION",
    )
    cacheHosts: Optional[Sequence[bytes]] = None
    cacheUncacheableTime: float = 10.0
    cacheStatusHeader: Optional[bytes] = None

    # Is cacheKey the default one (the render cache may then take its
    # shortest path)? Kept up to date for subclasses by __init_subclass__.
    _cacheDefaultKey = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._cacheDefaultKey = cls.cacheKey is CachedPage.cacheKey

    def render(self, request: Any) -> Any:
        """
        twisted.web's C{render}, through the cache.
        """
        if getattr(request, UNCACHED, False):
            return super().render(request)  # type: ignore[misc]
        cache = self.renderCache
        if cache is None:
            cache = defaultRenderCache()
        return cache.serve(self, request)

    def _renderUncached(self, request: Any) -> Any:
        return super().render(request)  # type: ignore[misc]

    def cacheKey(self, request: Any) -> Optional[bytes]:
        """
        The key of C{request}'s copy of this page, or C{None} to render it
        uncached. Override to add to or narrow the key; the default is
        L{tlcache.keys.pageKey} over the URL, C{cacheVary},
        C{cacheQueryArgs}, the template digest and C{cacheVersion}.
        """
        return (self.renderCache or defaultRenderCache()).keyFor(self, request)

    def cacheTagsFor(self, request: Any) -> Iterable[str]:
        """
        The tags to store a render of C{request} with: C{cacheTags} unless
        overridden.
        """
        return self.cacheTags

    # -- derived from the knobs --------------------------------------------

    @property
    def _cacheMaxStale(self) -> float:
        if self.cacheMaxStale is not None:
            return max(self.cacheMaxStale, self.cacheGrace)
        return max(self.cacheGrace, self.cacheStaleIfError)

    @property
    def cacheVaryHeader(self) -> Optional[bytes]:
        """
        The C{Vary} header value for C{cacheVary}, or C{None}.
        """
        return _varyHeaderOf(tuple(self.cacheVary))

    @property
    def _cacheVaryNames(self) -> frozenset:
        header = self.cacheVaryHeader
        if header is None:
            return frozenset()
        return frozenset(n.strip().lower() for n in header.split(b","))

    def _cacheBypass(self, request: Any) -> bool:
        if self.cacheVary:
            return False
        raw = rawHeaders(request.requestHeaders)
        if raw is not None:
            # The usual request: neither header, found out in two lookups.
            if AUTHORIZATION in raw:
                return True
            if COOKIE not in raw:
                return False
        if request.getHeader(b"authorization") is not None:
            return True
        cookies = request.getHeader(b"cookie")
        if cookies:
            names = self.cacheSessionCookies
            for crumb in cookies.split(b";"):
                name = crumb.strip().partition(b"=")[0]
                for sessionName in names:
                    if name.startswith(sessionName):
                        return True
        return False

    def _cacheStatus(self, request: Any, status: bytes) -> None:
        header = self.cacheStatusHeader
        if header is not None:
            request.responseHeaders.setRawHeaders(header, [status])


_varyHeaders: Dict[Tuple[str, ...], Optional[bytes]] = {}


def _varyHeaderOf(vary: Tuple[str, ...]) -> Optional[bytes]:
    try:
        return _varyHeaders[vary]
    except KeyError:
        pass
    names = []
    for declaration in vary:
        kind, _, name = declaration.partition(":")
        if kind == "header":
            names.append(name.lower())
        elif kind == "cookie":
            names.append("cookie")
    unique = sorted(set(names))
    value = ", ".join(unique).encode("latin-1") if unique else None
    _varyHeaders[vary] = value
    return value
