# -*- test-case-name: tests.unit.test_cachedpage -*-
"""
The engine of the page cache: L{RenderCache}, what the pages of a site (or
process) share. It answers a request from the store, runs one render per
page into a L{tlcache._shadow.ShadowRequest} for all the requests that want
it, serves stale copies while one background render replaces them, decides
what may be stored, and invalidates. Pages take part through
L{tlcache.page.CachedPage}; see that module for the rules as a whole.
"""

from __future__ import annotations

import os
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
)

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

# Imported by name: twisted.web.http is a deprecation proxy, whose
# attribute lookups cost microseconds on the hot path.
from twisted.web.http import INTERNAL_SERVER_ERROR, NOT_MODIFIED, OK, datetimeToString
from twisted.web.server import NOT_DONE_YET

from tlcache._footprint import Deadlines, KeyMemo
from tlcache._headers import (
    AUTHORIZATION,
    COOKIE,
    HOST,
    isConditional,
    notModified,
    rawHeaders,
)
from tlcache._shadow import ShadowRequest
from tlcache.keys import (
    CacheInputs,
    UncacheableRequestError,
    cacheInputs,
    keyPrefix,
    normaliseHost,
    requestIsSecure,
    templateDigest,
)
from tlcache.nevow._web import copyRequestState, requestGone
from tlcache.store import CacheEntry, ICacheStore, MemoryCacheStore, strongETag
from tlsuite._loglimit import LogLimiter

__all__ = ["CacheablePage", "RenderCache", "defaultRenderCache"]

log = Logger()

# Set on a request that is to be rendered without the cache (a copy the
# cache renders into, a bypass, or a waiter that gave up on a shared render).
UNCACHED = "tlcacheUncached"

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


class CacheablePage(Protocol):
    """
    What the render cache needs of a page: L{tlcache.page.CachedPage}'s
    knobs and hooks. (A protocol rather than the class itself, which
    imports this module.)
    """

    cacheVary: Sequence[str]
    cacheQueryArgs: Optional[Sequence[str]]
    cacheHosts: Optional[Sequence[bytes]]
    cacheVersion: str
    cacheTimeout: float
    cacheGrace: float
    cacheStaleIfError: float
    cacheUncacheableTime: float
    _cacheDefaultKey: bool

    @property
    def cacheVaryHeader(self) -> Optional[bytes]: ...

    @property
    def _cacheVaryNames(self) -> FrozenSet[bytes]: ...

    @property
    def _cacheMaxStale(self) -> float: ...

    def cacheKey(self, request: Any) -> Optional[bytes]: ...

    def cacheTagsFor(self, request: Any) -> Iterable[str]: ...

    def _cacheBypass(self, request: Any) -> bool: ...

    def _cacheStatus(self, request: Any, status: bytes) -> None: ...

    def _renderUncached(self, request: Any) -> Any: ...


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
        page: CacheablePage,
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

    def __init__(self, request: Any, page: CacheablePage) -> None:
        self.request = request
        self.page = page
        self.timeout: Optional[IDelayedCall] = None
        self.done = False


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
        # Keys worked out before, keys found uncacheable and keys whose
        # refresh failed: bounded in memory as well as in number, since a
        # long URL makes a long key.
        keyBytes = _keyMapBytes(self.store)
        self._keys = KeyMemo(keyBytes, maxUncacheableKeys)
        self._uncacheable = Deadlines(clock, maxUncacheableKeys, keyBytes)
        self._retryAfter = Deadlines(clock, maxUncacheableKeys, keyBytes)
        self.refreshRetryDelay = refreshRetryDelay
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._generation = 0
        self._logLimits: Dict[Any, LogLimiter] = {}
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
        self,
        page: CacheablePage,
        request: Any,
        renderUncached: Optional[Callable] = None,
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
        key = None if page._cacheBypass(request) else self._keyOf(page, request)
        if key is None or self._uncacheable.active(key):
            self._counters["bypasses"] += 1
            page._cacheStatus(request, b"BYPASS")
            return renderUncached(request)
        getNow = self._getNow
        if getNow is not None:
            return self._found(getNow(key), page, request, key, True)
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

    def _freshHit(self, page: CacheablePage, request: Any) -> Optional[bytes]:
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
            or not page._cacheDefaultKey
        ):
            return None
        raw = rawHeaders(request.requestHeaders)
        if raw is None or AUTHORIZATION in raw or COOKIE in raw:
            return None
        memo = self._keyMemo(page, request)
        if memo is None:
            return None
        key = self._keys.get(memo)
        if key is None or self._uncacheable.holds(key):
            return None
        entry = getNow(key)
        if entry is None or self.clock.seconds() >= entry.freshUntil:
            return None
        self._counters["hits"] += 1
        return self._serveEntry(page, request, entry, b"HIT", True)

    def _found(
        self,
        entry: Optional[CacheEntry],
        page: CacheablePage,
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
                if key not in self._flights and not self._retryAfter.active(key):
                    self._startFlight(key, page, request, stale=entry)
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
            self._startFlight(key, page, request, stale=entry, live=request)
        else:
            # HEAD: rendered as a GET (kept), answered from it when done.
            self._startFlight(key, page, request, stale=entry, waiting=request)
        return NOT_DONE_YET

    def _storeFailed(self, reason: Failure) -> None:
        count = self._logDue("store")
        if count:
            log.failure(
                "The render cache's store failed ({count} times); serving uncached",
                failure=reason,
                count=count,
            )

    def _storeFailedThenRender(
        self, reason: Failure, page: CacheablePage, request: Any, key: bytes
    ) -> None:
        self._storeFailed(reason)
        self._renderPrivately(page, request)

    # -- answering from an entry ------------------------------------------

    def _serveEntry(
        self,
        page: CacheablePage,
        request: Any,
        entry: CacheEntry,
        status: bytes,
        sync: bool,
    ) -> Any:
        if not sync and requestGone(request):
            return NOT_DONE_YET
        now = self.clock.seconds()
        request.code = OK
        request.code_message = b"OK"
        headers = request.responseHeaders
        raw = rawHeaders(headers)
        if raw is not None:
            # The hot path: names already as twisted.web keeps them.
            for name, values in entry.replayHeaders:
                raw[name] = list(values)
        else:
            for name, values in entry.replayHeaders:
                headers.setRawHeaders(name, values)
        if now >= entry.freshUntil:
            # A stale copy says how stale. (A fresh one's age is already
            # plain from Date and Last-Modified, which is its render time.)
            headers.setRawHeaders(b"age", [b"%d" % (max(0, int(now - entry.created)),)])
        page._cacheStatus(request, status)
        if isConditional(request) and notModified(request, entry):
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
        page: CacheablePage,
        template: Any,
        *,
        stale: Optional[CacheEntry],
        live: Any = None,
        waiting: Any = None,
    ) -> _Flight:
        """
        Render C{page} for C{key} into a L{ShadowRequest} made from the
        inputs of C{template} (the request that wants it). C{stale}: the
        copy this render replaces, if any; C{live}: a client to stream the
        render to as it is written; C{waiting}: a client to answer from the
        stored copy when it is done.
        """
        shadow = ShadowRequest(
            template,
            self.inputsOf(page, template),
            self.clock,
            maxBytes=self.maxEntryBytes,
        )
        flight = _Flight(
            key, page, shadow, self.clock.seconds(), stale, self._generation
        )
        self._flights[key] = flight
        if live is not None:
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
            count = self._logDue(("failed", type(page)))
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
                self._retryAfter.hold(key, self.refreshRetryDelay)
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

    def _unstorable(self, page: CacheablePage, shadow: ShadowRequest) -> Optional[str]:
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

    def _refuse(self, page: CacheablePage, key: bytes, reason: str) -> None:
        # Hit-for-miss: requests for this key render uncached for a while,
        # without queueing behind each other's renders.
        self._uncacheable.hold(key, page.cacheUncacheableTime)
        if self._logDue(("refused", type(page), reason)):
            log.warn(
                "{page} pages are not cached: {reason}",
                page=type(page).__name__,
                reason=reason,
            )

    def _logDue(self, kind: Any) -> int:
        # How many events of this kind to report now, this one included (0:
        # stay quiet); one line per kind every 10 seconds.
        limiter = self._logLimits.get(kind)
        if limiter is None:
            limiter = self._logLimits[kind] = LogLimiter(self.clock, 10.0)
        suppressed = limiter.allow()
        return 0 if suppressed is None else suppressed + 1

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

    def _answer(self, request: Any, page: CacheablePage, outcome: _Outcome) -> None:
        if requestGone(request):
            return
        if outcome.entry is not None:
            self._serveEntry(page, request, outcome.entry, outcome.status, False)
        else:
            self._renderPrivately(page, request)

    def _wait(self, flight: _Flight, page: CacheablePage, request: Any) -> None:
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

    def _renderPrivately(self, page: CacheablePage, request: Any) -> None:
        if requestGone(request):
            return
        setattr(request, UNCACHED, True)
        page._cacheStatus(request, b"BYPASS")
        try:
            request.render(page)
        except BaseException:
            request.processingFailed(Failure())

    # -- keys -------------------------------------------------------------

    def _keyOf(self, page: CacheablePage, request: Any) -> Optional[bytes]:
        # The key, or None to answer uncached: a request that repeats its
        # Host (no single input to key on), or a host not in cacheHosts.
        hosts = request.requestHeaders.getRawHeaders(b"host")
        if hosts is not None and len(hosts) != 1:
            return None
        allowed = page.cacheHosts
        if allowed is not None:
            secure = requestIsSecure(request)
            host = normaliseHost(hosts[0], secure) if hosts else None
            if host not in {normaliseHost(h, secure) for h in allowed}:
                return None
        try:
            key: Optional[bytes] = page.cacheKey(request)
        except UncacheableRequestError:
            return None
        return key

    def inputsOf(self, page: CacheablePage, request: Any) -> CacheInputs:
        """
        What of C{request} a render of C{page} for the cache sees, and its
        default key is made from: see L{tlcache.keys.CacheInputs}.
        """
        return cacheInputs(request, page.cacheVary, page.cacheQueryArgs)

    def keyFor(self, page: CacheablePage, request: Any) -> bytes:
        """
        The default key of C{request}'s copy of C{page}: L{pageKey} over the
        URL, the page's C{cacheVary}, C{cacheQueryArgs}, template digest and
        C{cacheVersion}. For most pages (nothing declared) it depends on the
        URI, Host, scheme, digest and version alone, so it is worked out once
        for each distinct set of them.
        """
        if not page.cacheVary and page.cacheQueryArgs is None:
            memo = self._keyMemo(page, request)
            if memo is not None:
                keys = self._keys
                key = keys.get(memo)
                if key is None:
                    key = self.inputsOf(page, request).key(page.cacheVersion, memo[3])
                    keys.remember(memo, key)
                return key
        return self.inputsOf(page, request).key(
            page.cacheVersion,
            self.templateDigestOf(getattr(page, "docFactory", None)),
        )

    def _keyMemo(self, page: CacheablePage, request: Any) -> Optional[Tuple[Any, ...]]:
        # What the key of a page declaring no vary inputs depends on: URI,
        # Host, scheme, template digest (index 3), version. None without a
        # Host (the key then uses the address the request came in on).
        raw = rawHeaders(request.requestHeaders)
        if raw is not None:
            hosts = raw.get(HOST)
        else:
            hosts = request.requestHeaders.getRawHeaders(b"host")
        if not hosts or len(hosts) != 1:
            return None
        host = hosts[0]
        return (
            request.uri,
            host,
            requestIsSecure(request),
            self.templateDigestOf(getattr(page, "docFactory", None)),
            page.cacheVersion,
        )

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


def _keyMapBytes(store: ICacheStore) -> int:
    """
    The memory each of the render cache's maps of keys may take: a
    sixteenth of what the store keeps in the process (1 MiB if it does not
    say), and at least 16 KiB.
    """
    budget = getattr(store, "maxBytes", None)
    if not isinstance(budget, int):
        return 1024 * 1024
    return max(16 * 1024, budget // 16)


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
    live.responseHeaders.setRawHeaders(b"etag", [strongETag(body)])
    live.responseHeaders.setRawHeaders(
        b"last-modified", [datetimeToString(int(shadow.clock.seconds()))]
    )
