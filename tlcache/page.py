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

import os
from collections import OrderedDict
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

# Imported by name: twisted.web.http is a deprecation proxy, whose
# attribute lookups cost microseconds on the hot path.
from twisted.web.http import INTERNAL_SERVER_ERROR, NOT_MODIFIED, OK, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from tlcache._shadow import SessionInCachedRenderError, ShadowRequest
from tlcache.keys import keyPrefix, pageKey, requestIsSecure, templateDigest
from tlcache.nevow._web import copyRequestState
from tlcache.store import CacheEntry, ICacheStore, MemoryCacheStore

__all__ = [
    "CachedPage",
    "RenderCache",
    "SessionInCachedRenderError",
    "defaultRenderCache",
]

log = Logger()

# Set on a request that is to be rendered without the cache (a copy the
# cache renders into, a bypass, or a waiter that gave up on a shared render).
_UNCACHED = "tlcacheUncached"

# Response headers that describe one transfer, not the page: never stored.
_UNSTORED_HEADERS = frozenset(
    (
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"date",
        b"server",
        b"etag",
        b"last-modified",
        b"age",
        b"content-encoding",
        b"expires",
    )
)

_SERVER_ERRORS = (500, 502, 503, 504)

_FOREVER = float("inf")

# What a response may say in Vary without the page declaring it: the
# encoding is negotiated outside the captured bytes (gzip wraps the cache).
_HARMLESS_VARY = frozenset((b"accept-encoding",))

_COUNTERS = (
    "hits",
    "staleHits",
    "misses",
    "bypasses",
    "renders",
    "stored",
    "notStored",
    "refreshes",
    "refreshFailures",
    "renderFailures",
    "staleIfError",
    "lockWaits",
    "lockTimeouts",
    "notModified",
    "raced",
)


class _Outcome:
    """
    How a shared render ended, for the requests that waited for it: the
    entry to serve them (new, or stale in place of an error), or C{None}
    when each must render for itself.
    """

    __slots__ = ("entry", "status")

    def __init__(self, entry: Optional[CacheEntry], status: bytes) -> None:
        self.entry = entry
        self.status = status


class _Flight:
    """
    One render into a L{ShadowRequest} and the requests waiting for it.
    """

    __slots__ = ("key", "page", "shadow", "started", "waiters", "stale", "generation")

    def __init__(
        self,
        key: bytes,
        page: Any,
        shadow: ShadowRequest,
        started: float,
        stale: Optional[CacheEntry],
        generation: int,
    ) -> None:
        self.key = key
        self.page = page
        self.shadow = shadow
        self.started = started
        self.waiters: List[_Waiter] = []
        self.stale = stale
        self.generation = generation


class _Waiter:
    """
    A request waiting for a shared render, with its lock timeout.
    """

    __slots__ = ("request", "page", "timeout", "done")

    def __init__(self, request: Any, page: Any) -> None:
        self.request = request
        self.page = page
        self.timeout: Optional[IDelayedCall] = None
        self.done = False


class _Throttle:
    """
    At most one log line per C{interval} seconds for one kind of event,
    saying how many happened since the last line.
    """

    def __init__(self, clock: IReactorTime, interval: float = 10.0) -> None:
        self.clock = clock
        self.interval = interval
        self._last: Dict[Any, float] = {}
        self._counts: Dict[Any, int] = {}

    def due(self, kind: Any) -> int:
        """
        How many of C{kind} to report now (0: stay quiet this time).
        """
        now = self.clock.seconds()
        count = self._counts.get(kind, 0) + 1
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._counts[kind] = count
            return 0
        self._last[kind] = now
        self._counts[kind] = 0
        return count


class RenderCache:
    """
    What the pages of one site (or process) share: the store, the clock,
    the renders in flight, the counters; and the invalidation API.

    @ivar store: the L{ICacheStore} (in-process LRU unless told otherwise).
    @ivar clock: the reactor's time.
    @ivar lockTimeout: how long a request waits for another's render of
        the same page before rendering for itself (not stored).
    @ivar lockAge: after this long a render in flight no longer holds
        back a new one for the same key (a hung render cannot block a page).
    @ivar maxEntryBytes: a response larger than this is not kept.
    @ivar templateCheckInterval: how often a template file is looked at
        for changes (its digest is part of the key).
    @ivar refreshRetryDelay: after a background refresh fails, the stale
        copy is served this long before the next refresh is tried.
    """

    def __init__(
        self,
        store: Optional[ICacheStore] = None,
        clock: Optional[IReactorTime] = None,
        lockTimeout: float = 5.0,
        lockAge: float = 10.0,
        maxEntryBytes: int = 1024 * 1024,
        templateCheckInterval: float = 1.0,
        maxUncacheableKeys: int = 10000,
        refreshRetryDelay: float = 1.0,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        assert clock is not None
        self.clock = clock
        self.store: ICacheStore = (
            store if store is not None else MemoryCacheStore(clock)
        )
        # A store that can answer without a Deferred (the in-process one).
        self._getNow = getattr(self.store, "getNow", None)
        self.lockTimeout = lockTimeout
        self.lockAge = lockAge
        self.maxEntryBytes = maxEntryBytes
        self.templateCheckInterval = templateCheckInterval
        self.maxUncacheableKeys = maxUncacheableKeys
        self._flights: Dict[bytes, _Flight] = {}
        self._keys: Dict[Tuple[Any, ...], bytes] = {}
        self._uncacheable: OrderedDict[bytes, float] = OrderedDict()
        self._retryAfter: OrderedDict[bytes, float] = OrderedDict()
        self.refreshRetryDelay = refreshRetryDelay
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._generation = 0
        self._throttle = _Throttle(clock)
        # Per loader (there are few, and they live as long as their pages).
        self._digests: Dict[Any, Tuple[float, Any, bytes]] = {}

    # -- the public API ---------------------------------------------------

    def invalidate(self, key: bytes) -> Deferred[bool]:
        """
        Drop the page stored under C{key} (see L{CachedPage.cacheKey}).
        """
        self._generation += 1
        return self.store.delete(key)

    def invalidatePrefix(self, prefix: bytes) -> Deferred[int]:
        """
        Drop every page whose key starts with C{prefix}
        (see L{tlcache.keys.keyPrefix}).
        """
        self._generation += 1
        return self.store.invalidatePrefix(prefix)

    def invalidatePath(
        self, host: bytes, path: bytes = b"", secure: bool = False
    ) -> Deferred[int]:
        """
        Drop the pages of a virtual host C{host}, or of its C{path}: a path
        ending in C{/} drops the subtree, any other path that path's
        variants (all query strings and vary values).
        """
        prefix = keyPrefix(host, path, secure)
        if path and not path.endswith(b"/"):
            prefix += b"|"
        return self.invalidatePrefix(prefix)

    def invalidateTag(self, tag: str) -> Deferred[int]:
        """
        Drop every page stored with C{tag} (see L{CachedPage.cacheTags}).
        """
        self._generation += 1
        return self.store.invalidateTag(tag)

    def stats(self) -> Dict[str, int]:
        """
        The counters: C{hits}, C{staleHits}, C{misses}, C{bypasses},
        C{renders}, C{stored}, C{notStored}, C{refreshes} (background),
        C{refreshFailures}, C{renderFailures}, C{staleIfError} (a stale
        copy served in place of an error), C{lockWaits}, C{lockTimeouts},
        C{notModified} (304s), C{raced} (renders not stored because an
        invalidation happened meanwhile); and the store's C{evictions},
        C{bytes} and C{entries}.
        """
        result = dict(self._counters)
        storeStats = self.store.stats()
        for name in ("evictions", "bytes", "entries"):
            result[name] = storeStats.get(name, 0)
        result["inFlight"] = len(self._flights)
        return result

    # -- serving ----------------------------------------------------------

    def serve(
        self, page: Any, request: Any, renderUncached: Optional[Callable] = None
    ) -> Any:
        """
        Answer C{request} for C{page}: from the cache, or through a shared
        render, or (when the request may not be cached) by
        C{renderUncached(request)} (by default the page's own render).
        Returns what C{IResource.render} returns.
        """
        if renderUncached is None:
            renderUncached = page._renderUncached
        method = request.method
        if method != b"GET" and method != b"HEAD":
            return renderUncached(request)
        hit = self._freshHit(page, request)
        if hit is not None:
            return hit
        if page.cacheVary:
            vary = page.cacheVaryHeader
            if vary is not None:
                request.responseHeaders.addRawHeader(b"vary", vary)
        key = None if page._cacheBypass(request) else page.cacheKey(request)
        if key is None or self._isUncacheable(key):
            self._counters["bypasses"] += 1
            page._cacheStatus(request, b"BYPASS")
            return renderUncached(request)
        getNow = self._getNow
        if getNow is not None:
            entry = getNow(key)
            if entry is not None and self.clock.seconds() < entry.freshUntil:
                self._counters["hits"] += 1
                return self._serveEntry(page, request, entry, b"HIT", True)
            return self._found(entry, page, request, key, True)
        lookup = self.store.get(key)
        found: List[Any] = []
        # Taken out of the Deferred (so that a failure is not left in it
        # unhandled) and handed on when the store answers later.
        lookup.addBoth(found.append)
        if found:
            result = found[0]
            if isinstance(result, Failure):
                self._storeFailed(result)
                result = None
            return self._found(result, page, request, key, sync=True)
        lookup.addCallback(lambda _: found[0])
        lookup.addCallback(self._found, page, request, key, False)
        lookup.addErrback(self._storeFailedThenRender, page, request, key)
        return NOT_DONE_YET

    def _freshHit(self, page: Any, request: Any) -> Optional[bytes]:
        """
        The common case, taken in one step: a page that declares nothing
        special, a request with no credentials or cookies, a key worked out
        before, a fresh copy in an in-process store. The copy's bytes, with
        the response's headers set, or C{None} to take the general path
        (which decides the same for the cases this one covers).
        """
        getNow = self._getNow
        if (
            getNow is None
            or page.cacheVary
            or page.cacheQueryArgs is not None
            or page.cacheHosts is not None
            or type(page).cacheKey is not _DEFAULT_CACHE_KEY
        ):
            return None
        raw = _rawHeaders(request.requestHeaders)
        if raw is None or _AUTHORIZATION in raw or _COOKIE in raw:
            return None
        hosts = raw.get(_HOST)
        if not hosts:
            return None
        key = self._keys.get(
            (
                request.uri,
                hosts[-1],
                requestIsSecure(request),
                self.templateDigestOf(getattr(page, "docFactory", None)),
                page.cacheVersion,
            )
        )
        if key is None or key in self._uncacheable:
            return None
        entry = getNow(key)
        if entry is None or self.clock.seconds() >= entry.freshUntil:
            return None
        self._counters["hits"] += 1
        return self._serveEntry(page, request, entry, b"HIT", True)

    def _found(
        self,
        entry: Optional[CacheEntry],
        page: Any,
        request: Any,
        key: bytes,
        sync: bool,
    ) -> Any:
        now = self.clock.seconds()
        if entry is not None:
            if entry.isFresh(now):
                self._counters["hits"] += 1
                return self._serveEntry(page, request, entry, b"HIT", sync)
            if entry.isServableStale(now):
                self._counters["staleHits"] += 1
                if key not in self._flights and not self._backingOff(key, now):
                    self._startFlight(key, page, request, None, entry, False)
                    self._counters["refreshes"] += 1
                return self._serveEntry(page, request, entry, b"STALE", sync)
            if now >= entry.freshUntil + page.cacheStaleIfError:
                entry = None
        self._counters["misses"] += 1
        flight = self._flights.get(key)
        if flight is not None and now - flight.started < self.lockAge:
            self._wait(flight, page, request)
            return NOT_DONE_YET
        if request.method == b"GET":
            self._startFlight(key, page, request, request, entry, True)
        else:
            # HEAD: rendered as a GET (kept), answered from it when done.
            self._startFlight(key, page, request, None, entry, False, request)
        return NOT_DONE_YET

    def _storeFailed(self, reason: Failure) -> None:
        count = self._throttle.due("store")
        if count:
            log.failure(
                "The render cache's store failed ({count} times); serving uncached",
                failure=reason,
                count=count,
            )

    def _storeFailedThenRender(
        self, reason: Failure, page: Any, request: Any, key: bytes
    ) -> None:
        self._storeFailed(reason)
        self._renderPrivately(page, request)

    # -- answering from an entry ------------------------------------------

    def _serveEntry(
        self, page: Any, request: Any, entry: CacheEntry, status: bytes, sync: bool
    ) -> Any:
        if not sync and _gone(request):
            return NOT_DONE_YET
        now = self.clock.seconds()
        request.code = OK
        request.code_message = b"OK"
        headers = request.responseHeaders
        age = b"%d" % (max(0, int(now - entry.created)),)
        raw = _rawHeaders(headers)
        if raw is not None:
            # The hot path: names already as twisted.web keeps them.
            for name, values in entry.replayHeaders:
                raw[name] = list(values)
            raw[_AGE] = [age]
        else:
            for name, values in entry.replayHeaders:
                headers.setRawHeaders(name, values)
            headers.setRawHeaders(b"age", [age])
        page._cacheStatus(request, status)
        if _isConditional(request) and _notModified(request, entry):
            self._counters["notModified"] += 1
            request.setResponseCode(NOT_MODIFIED)
            headers.removeHeader(b"content-type")
            request.write(b"")
            request.finish()
            return NOT_DONE_YET
        if sync:
            # twisted.web writes it, with its length, and no body for HEAD.
            return entry.body
        request.setHeader(b"content-length", b"%d" % (len(entry.body),))
        if request.method != b"HEAD":
            request.write(entry.body)
        else:
            request.write(b"")
        request.finish()
        return NOT_DONE_YET

    # -- shared renders ---------------------------------------------------

    def _startFlight(
        self,
        key: bytes,
        page: Any,
        template: Any,
        live: Any,
        stale: Optional[CacheEntry],
        isLive: bool,
        waiting: Any = None,
    ) -> _Flight:
        shadow = ShadowRequest(
            template,
            self.clock,
            keepHeaders=_declaredNames(tuple(page.cacheVary), "header"),
            keepCookies=page._cacheCookieNames,
            queryArgs=page.cacheQueryArgs,
            maxBytes=self.maxEntryBytes,
        )
        flight = _Flight(
            key, page, shadow, self.clock.seconds(), stale, self._generation
        )
        self._flights[key] = flight
        if isLive:
            shadow.attach(live, lambda s: self._mayStream(flight, s), _validators)
            page._cacheStatus(live, b"MISS")
        if waiting is not None:
            self._wait(flight, page, waiting)
        shadow.done.addCallback(self._rendered, flight)
        self._counters["renders"] += 1
        copyRequestState(template, shadow)
        try:
            shadow.render(page)
        except BaseException:
            if shadow.sessionUsed:
                # Expected, not a bug: the page is served uncached instead.
                shadow.setResponseCode(INTERNAL_SERVER_ERROR)
                shadow.finish()
            else:
                shadow.processingFailed(Failure())
        return flight

    def _mayStream(self, flight: _Flight, shadow: ShadowRequest) -> bool:
        # Stream the render to its first client unless it is a response the
        # cache will replace for it: an error when a stale copy may stand in,
        # or a render that wanted the session (the client gets its own).
        if shadow.sessionUsed:
            return False
        if shadow.code in _SERVER_ERRORS and self._staleUsable(flight):
            return False
        return True

    def _staleUsable(self, flight: _Flight) -> bool:
        stale = flight.stale
        if stale is None:
            return False
        return self.clock.seconds() < min(
            stale.freshUntil + flight.page.cacheStaleIfError, stale.expiresAt
        )

    def _rendered(self, shadow: ShadowRequest, flight: _Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        live = shadow.detach()
        outcome = self._settle(flight, shadow)
        if isinstance(outcome, Deferred):
            outcome.addCallback(self._release, flight, live)
        else:
            self._release(outcome, flight, live)

    def _settle(self, flight: _Flight, shadow: ShadowRequest) -> Any:
        page = flight.page
        key = flight.key
        code = shadow.code
        background = flight.stale is not None
        if shadow.sessionUsed:
            self._refuse(page, key, "it asked for the session")
            return _Outcome(None, b"BYPASS")
        if shadow.failed or code in _SERVER_ERRORS:
            self._counters["renderFailures"] += 1
            if background:
                self._counters["refreshFailures"] += 1
            count = self._throttle.due(("failed", type(page)))
            if count:
                log.warn(
                    "Rendering {uri} for the cache failed with {code}"
                    " ({count} failures of {page} pages lately)",
                    uri=shadow.uri.decode("latin-1"),
                    code=code if not shadow.failed else "a broken-off response",
                    count=count,
                    page=type(page).__name__,
                )
            if background:
                # Not one more refresh per request while the page is failing.
                self._retryAfter[key] = self.clock.seconds() + self.refreshRetryDelay
                self._retryAfter.move_to_end(key)
                while len(self._retryAfter) > self.maxUncacheableKeys:
                    self._retryAfter.popitem(last=False)
            if self._staleUsable(flight):
                self._counters["staleIfError"] += 1
                return _Outcome(flight.stale, b"STALE")
            self._evict(key)
            return _Outcome(None, b"MISS")
        reason = self._unstorable(page, shadow)
        if reason is not None:
            self._counters["notStored"] += 1
            self._evict(key)
            if reason != "status":
                self._refuse(page, key, reason)
            return _Outcome(None, b"MISS")
        if flight.generation != self._generation:
            # Invalidated while rendering: this render may predate the change.
            self._counters["raced"] += 1
            return _Outcome(None, b"MISS")
        entry = CacheEntry.build(
            shadow.body(),
            _storedHeaders(shadow),
            self.clock.seconds(),
            page.cacheTimeout,
            page.cacheGrace,
            page._cacheMaxStale,
            page.cacheTagsFor(shadow),
        )
        stored = self.store.set(key, entry)
        result: Deferred[_Outcome] = Deferred()

        def counted(accepted: Any) -> _Outcome:
            if accepted is True:
                self._counters["stored"] += 1
            else:
                self._counters["notStored"] += 1
            return _Outcome(entry, b"MISS")

        def storeFailed(reason: Failure) -> _Outcome:
            self._storeFailed(reason)
            return _Outcome(entry, b"MISS")

        stored.addCallbacks(counted, storeFailed).chainDeferred(result)
        return result

    def _unstorable(self, page: Any, shadow: ShadowRequest) -> Optional[str]:
        if shadow.code != OK:
            return "status"
        if shadow.overflowed:
            return f"it is larger than {self.maxEntryBytes} bytes"
        if shadow.setsCookie():
            return "it sets a cookie"
        headers = shadow.responseHeaders
        for value in headers.getRawHeaders(b"cache-control", ()):
            directives = {d.strip().split(b"=")[0].lower() for d in value.split(b",")}
            if directives & {b"private", b"no-store"}:
                return "it is marked Cache-Control: private or no-store"
        declared = page._cacheVaryNames
        for value in headers.getRawHeaders(b"vary", ()):
            for name in value.split(b","):
                name = name.strip().lower()
                if name and name not in declared and name not in _HARMLESS_VARY:
                    return f"it varies on {name.decode('latin-1')}, not declared"
        return None

    def _refuse(self, page: Any, key: bytes, reason: str) -> None:
        # Hit-for-miss: requests for this key render uncached for a while,
        # without queueing behind each other's renders.
        until = self.clock.seconds() + page.cacheUncacheableTime
        self._uncacheable[key] = until
        self._uncacheable.move_to_end(key)
        while len(self._uncacheable) > self.maxUncacheableKeys:
            self._uncacheable.popitem(last=False)
        if self._throttle.due(("refused", type(page), reason)):
            log.warn(
                "{page} pages are not cached: {reason}",
                page=type(page).__name__,
                reason=reason,
            )

    def _backingOff(self, key: bytes, now: float) -> bool:
        until = self._retryAfter.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self._retryAfter[key]
        return False

    def _isUncacheable(self, key: bytes) -> bool:
        until = self._uncacheable.get(key)
        if until is None:
            return False
        if self.clock.seconds() < until:
            return True
        del self._uncacheable[key]
        return False

    def _evict(self, key: bytes) -> None:
        self.store.delete(key).addErrback(self._storeFailed)

    def _release(self, outcome: _Outcome, flight: _Flight, live: Any) -> None:
        if live is not None:
            # The first client, not streamed to (its render is being replaced).
            self._answer(live, flight.page, outcome)
        waiters, flight.waiters = flight.waiters, []
        for waiter in waiters:
            if waiter.done:
                continue
            waiter.done = True
            if waiter.timeout is not None and waiter.timeout.active():
                waiter.timeout.cancel()
            self._answer(waiter.request, waiter.page, outcome)

    def _answer(self, request: Any, page: Any, outcome: _Outcome) -> None:
        if _gone(request):
            return
        if outcome.entry is not None:
            self._serveEntry(page, request, outcome.entry, outcome.status, False)
        else:
            self._renderPrivately(page, request)

    def _wait(self, flight: _Flight, page: Any, request: Any) -> None:
        self._counters["lockWaits"] += 1
        waiter = _Waiter(request, page)
        flight.waiters.append(waiter)
        waiter.timeout = self.clock.callLater(
            self.lockTimeout, self._gaveUp, flight, waiter
        )
        notify = getattr(request, "notifyFinish", None)
        if notify is not None:
            notify().addErrback(self._waiterLeft, flight, waiter)

    def _gaveUp(self, flight: _Flight, waiter: _Waiter) -> None:
        if waiter.done:
            return
        waiter.done = True
        self._counters["lockTimeouts"] += 1
        self._renderPrivately(waiter.page, waiter.request)

    def _waiterLeft(self, reason: Failure, flight: _Flight, waiter: _Waiter) -> None:
        # The client went away; the shared render goes on for the others.
        waiter.done = True
        if waiter.timeout is not None and waiter.timeout.active():
            waiter.timeout.cancel()

    def _renderPrivately(self, page: Any, request: Any) -> None:
        if _gone(request):
            return
        setattr(request, _UNCACHED, True)
        page._cacheStatus(request, b"BYPASS")
        try:
            request.render(page)
        except BaseException:
            request.processingFailed(Failure())

    # -- keys -------------------------------------------------------------

    def templateDigestOf(self, docFactory: Any) -> bytes:
        """
        The digest of C{docFactory}'s template: of the file's bytes for an
        C{xmlfile} loader (looked at again every C{templateCheckInterval}
        seconds, re-read when its size or modification time changes), of
        the string for C{xmlstr}, nothing for others.
        """
        if docFactory is None:
            return b""
        try:
            known = self._digests.get(docFactory)
        except TypeError:
            return b""
        if known is not None:
            until = known[0]
            if until == _FOREVER:
                return known[2]
            now = self.clock.seconds()
            if now < until:
                return known[2]
        else:
            now = self.clock.seconds()
        path = getattr(docFactory, "path", None)
        if isinstance(path, str) and hasattr(docFactory, "templateDir"):
            try:
                info = os.stat(path)
            except OSError:
                return b""
            stamp: Any = (info.st_mtime_ns, info.st_size)
            if known is not None and known[1] == stamp:
                digest = known[2]
            else:
                with open(path, "rb") as source:
                    digest = templateDigest(source.read())
        else:
            template = getattr(docFactory, "template", None)
            if isinstance(template, (str, bytes)):
                stamp, digest = None, templateDigest(template)
                now = _FOREVER
            else:
                stamp, digest = None, b""
                now = _FOREVER
        self._digests[docFactory] = (now + self.templateCheckInterval, stamp, digest)
        return digest


_defaultCache: Optional[RenderCache] = None


def defaultRenderCache() -> RenderCache:
    """
    The process's L{RenderCache} for pages that name none: an in-process
    store of 64 MiB on the global reactor, made on first use.
    """
    global _defaultCache
    if _defaultCache is None:
        _defaultCache = RenderCache()
    return _defaultCache


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
    @ivar cacheHosts: if not C{None}, the Host values (C{host[:port]},
        lower case) served from the cache; requests for others bypass it,
        so a flood of made-up Host headers cannot fill the cache.
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

    def render(self, request: Any) -> Any:
        """
        twisted.web's C{render}, through the cache.
        """
        if getattr(request, _UNCACHED, False):
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
        cache = self.renderCache or defaultRenderCache()
        digest = cache.templateDigestOf(getattr(self, "docFactory", None))
        if not self.cacheVary and self.cacheQueryArgs is None:
            # Most pages: the key is a function of these few values alone,
            # so it is worked out once per distinct set.
            raw = _rawHeaders(request.requestHeaders)
            if raw is not None:
                hosts = raw.get(_HOST)
                host = hosts[-1] if hosts else None
            else:
                host = request.getHeader(b"host")
            if host is not None:
                memo: Tuple[Any, ...] = (
                    request.uri,
                    host,
                    requestIsSecure(request),
                    digest,
                    self.cacheVersion,
                )
                keys = cache._keys
                key = keys.get(memo)
                if key is None:
                    key = pageKey(
                        request, version=self.cacheVersion, templateDigest=digest
                    )
                    if len(keys) >= cache.maxUncacheableKeys:
                        keys.clear()
                    keys[memo] = key
                return key
        return pageKey(
            request,
            vary=self.cacheVary,
            version=self.cacheVersion,
            templateDigest=digest,
            queryArgs=self.cacheQueryArgs,
        )

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

    @property
    def _cacheCookieNames(self) -> Tuple[bytes, ...]:
        return _declaredNames(tuple(self.cacheVary), "cookie")

    def _cacheBypass(self, request: Any) -> bool:
        hosts = self.cacheHosts
        if hosts is not None:
            host = (request.getHeader(b"host") or b"").lower()
            if host not in hosts:
                return True
        if self.cacheVary:
            return False
        raw = _rawHeaders(request.requestHeaders)
        if raw is not None:
            # The usual request: neither header, found out in two lookups.
            if _AUTHORIZATION in raw:
                return True
            if _COOKIE not in raw:
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


_DEFAULT_CACHE_KEY = CachedPage.cacheKey

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


def _declaredNames(vary: Tuple[str, ...], kind: str) -> Tuple[bytes, ...]:
    found = []
    for declaration in vary:
        declaredKind, _, name = declaration.partition(":")
        if declaredKind == kind:
            raw = name.encode("latin-1")
            found.append(raw.lower() if kind == "header" else raw)
    return tuple(found)


def _storedHeaders(shadow: ShadowRequest) -> List[Tuple[bytes, bytes]]:
    stored = []
    for name, values in shadow.responseHeaders.getAllRawHeaders():
        lowered = name.lower()
        if lowered in _UNSTORED_HEADERS or lowered == b"vary":
            continue
        for value in values:
            stored.append((lowered, value))
    return stored


def _validators(live: Any, shadow: ShadowRequest, body: bytes) -> None:
    # The first client of a render gets the validators a copy will have when
    # its whole body is known before it is sent (a buffered page; twisted.web
    # sets the length of a body a resource returns).
    length = shadow.responseHeaders.getRawHeaders(b"content-length")
    if shadow.code != OK or not length or length[0] != b"%d" % (len(body),):
        return
    entry = CacheEntry.build(body, (), shadow.clock.seconds(), 0, 0, 0)
    live.responseHeaders.setRawHeaders(b"etag", [entry.etag])
    live.responseHeaders.setRawHeaders(
        b"last-modified", [datetimeToString(int(entry.created))]
    )


def _canonicalName(name: bytes) -> Optional[bytes]:
    # The key twisted.web's Headers keeps C{name} under (its spelling has
    # changed between Twisted versions), or None if it keeps no dict.
    headers = Headers()
    headers.setRawHeaders(name, [b"x"])
    raw = getattr(headers, "_rawHeaders", None)
    if not isinstance(raw, dict) or len(raw) != 1:
        return None
    (canonical,) = raw
    return canonical if isinstance(canonical, bytes) else None


_CANONICAL = [
    _canonicalName(name)
    for name in (
        b"age",
        b"if-none-match",
        b"if-modified-since",
        b"authorization",
        b"cookie",
        b"host",
    )
]
_FAST_HEADERS = None not in _CANONICAL
_AGE, _IF_NONE_MATCH, _IF_MODIFIED_SINCE, _AUTHORIZATION, _COOKIE, _HOST = (
    name or b"" for name in _CANONICAL
)


def _rawHeaders(headers: Headers) -> Optional[Dict[bytes, List[bytes]]]:
    """
    The dict behind C{headers}, when this Twisted keeps one we can use: a
    hit sets five headers, and doing it through the public methods costs as
    much again as the rest of the hit.
    """
    if not _FAST_HEADERS:
        return None
    raw = getattr(headers, "_rawHeaders", None)
    return raw if type(raw) is dict else None


def _isConditional(request: Any) -> bool:
    raw = _rawHeaders(request.requestHeaders)
    if raw is None:
        return True
    return _IF_NONE_MATCH in raw or _IF_MODIFIED_SINCE in raw


def _gone(request: Any) -> bool:
    return bool(
        getattr(request, "finished", False) or getattr(request, "_disconnected", False)
    )


def _notModified(request: Any, entry: CacheEntry) -> bool:
    """
    Does C{request}'s conditional header say it already holds C{entry}?
    If-None-Match wins over If-Modified-Since (RFC 9110, 13.2.2).
    """
    match = request.getHeader(b"if-none-match")
    if match is not None:
        if match.strip() == b"*":
            return True
        for tag in match.split(b","):
            tag = tag.strip()
            if tag.startswith(b"W/"):
                tag = tag[2:]
            if tag == entry.etag:
                return True
        return False
    since = request.getHeader(b"if-modified-since")
    if since is None:
        return False
    try:
        when = parsedate_to_datetime(since.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(entry.created) <= when
