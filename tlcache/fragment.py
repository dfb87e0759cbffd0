# -*- test-case-name: tests.unit.test_fragments -*-
"""
Cached fragments: parts of a page rendered once and spliced into every
page as bytes, optionally re-rendered in the background every N seconds.

Mark a fragment in stan (C{tags.cached(key="news", refresh=60)[...]}), in
an XML template (C{<nevow:cached key="news" refresh="60">...</nevow:cached>})
or on a render method (L{cachedFragment}); keep the bytes in a
L{FragmentCache}, a service remembered on the site::

    fragments = FragmentCache(reactor, maxBytes=16 * 1024 * 1024)
    fragments.setServiceParent(application)
    site = appserver.NevowSite(root)
    site.remember(fragments, IFragmentCache)

Only the first render of a fragment is waited for (by the requests that need
it, all sharing that one render). After it, a refreshing fragment is served
from memory and re-rendered by a timer: requests get the bytes at hand, a
refresh replaces them when it completes, and a failed refresh keeps them.

A cached fragment is shared by every request, so it always renders apart
from the request: with the page (its C{render_*} and C{data_*} methods,
what it remembers) but no request, no session and none of the data or
slots of the enclosing tags. A renderer that asks for the request or the
session fails with L{FragmentRequestError} naming the fragment, at its first
render. Request-dependent variants are chosen explicitly with C{vary=}.
"""

from __future__ import annotations

import functools
import random
from collections import OrderedDict
from types import MethodType
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple, Union

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tlcache.nevow._flatten import FragmentRequestError, flattenToBytes
from tlcache.nevow.context import SiteContext, WebContext, WovenContext
from tlcache.nevow.inevow import (
    ICurrentSegments,
    IFragmentCache,
    IRemainingSegments,
    IRendererFactory,
    IRequest,
    ISession,
)
from tlcache.nevow.stan import Tag, cached
from tlsession.interfaces import ISession as SharedSession
from tlsuite._loglimit import LogLimiter

__all__ = [
    "FragmentCache",
    "FragmentRequestError",
    "IFragmentCache",
    "cached",
    "cachedFragment",
    "defaultFragmentCache",
]

log = Logger()

# What a kept fragment costs beyond its bytes (the record, its context, the
# dict slot), counted so that many tiny fragments are bounded too.
RECORD_OVERHEAD = 1024

_COUNTERS = (
    "hits",
    "misses",
    "renders",
    "renderFailures",
    "refreshes",
    "refreshFailures",
    "skippedOverlaps",
    "evictions",
    "refusals",
    "idleDrops",
    "invalidations",
)

FullKey = Tuple[str, str, str, Tuple[str, ...]]


_REQUEST_BOUND: FrozenSet[Any] = frozenset(
    (IRequest, ISession, SharedSession, ICurrentSegments, IRemainingSegments)
)


class _FragmentContext(WovenContext):
    """
    The root of the context a cached fragment renders in: below the site's
    context, holding what the page remembers, refusing the request.
    """

    def __init__(
        self, key: str, refreshed: bool, parent: Optional[WebContext], tag: Tag
    ) -> None:
        WovenContext.__init__(self, parent, tag)
        self.fragmentKey = key
        self.refreshed = refreshed

    def _locateHook(self, interface: Any) -> Any:
        if interface in _REQUEST_BOUND:
            if self.refreshed:
                what = "is refreshed in the background"
            else:
                what = "is cached for every request"
            raise FragmentRequestError(
                f"fragment {self.fragmentKey!r} {what} and cannot use the request"
                f" (it asked for {getattr(interface, '__name__', interface)}):"
                " pass what it depends on in vary=, or render that part outside"
                " the cached fragment"
            )
        return None


def _fragmentContext(node: cached, ctx: WebContext, cache: Any) -> _FragmentContext:
    """
    The context C{node} renders in, every time: the site's context, then
    what the page (the renderer factory where C{node} appears) remembers.
    """
    site: Optional[WebContext] = ctx
    while site is not None and not isinstance(site, SiteContext):
        site = site.parent
    root = _FragmentContext(
        node.key, node.refresh is not None, site, Tag("", children=node.children)
    )
    try:
        owner = ctx.locate(IRendererFactory)
    except KeyError:
        owner = None
    if owner is not None:
        for obj, interface in getattr(owner, "toremember", ()):
            root.remember(obj, interface)
        rememberStuff = getattr(owner, "rememberStuff", None)
        if rememberStuff is not None:
            rememberStuff(root)
        else:
            root.remember(owner, IRendererFactory)
    # Fragments inside this one use the same cache.
    root.remember(cache, IFragmentCache)
    return root


class _Fragment:
    """
    One cached fragment: what renders it, its bytes and its refresh state.

    @ivar generation: bumped by invalidation, so that a render started
        before it is not stored.
    @ivar armed: a refreshing fragment that rendered once (its timer runs
        while the cache does).
    """

    __slots__ = (
        "fullKey",
        "key",
        "refresh",
        "timeout",
        "children",
        "context",
        "body",
        "size",
        "expiresAt",
        "lastServed",
        "rendering",
        "waiters",
        "generation",
        "armed",
        "timer",
        "dropped",
        "failureLog",
    )

    def __init__(
        self, node: cached, context: _FragmentContext, now: float, failureLog: Any
    ) -> None:
        self.fullKey: FullKey = node.fullKey
        self.key = node.key
        self.refresh = node.refresh
        self.timeout = node.timeout
        self.children = node.children
        self.context = context
        self.body: Optional[bytes] = None
        self.size = 0
        self.expiresAt: Optional[float] = None
        self.lastServed = now
        self.rendering: Optional[Deferred] = None
        self.waiters: List[Deferred] = []
        self.generation = 0
        self.armed = False
        self.timer: Optional[IDelayedCall] = None
        self.dropped = False
        # Failed refreshes are logged through this, one line an interval.
        self.failureLog = failureLog


@implementer(IFragmentCache)
class FragmentCache(Service):
    """
    Keeps cached fragments' bytes in this process and refreshes the
    refreshing ones; a service, whose refresh timers run only while it
    runs.

    Bounded: the bytes (plus L{RECORD_OVERHEAD} per fragment) stay within
    C{maxBytes}, least recently served first out; a fragment over
    C{maxEntryBytes} is rendered but not kept; at most C{maxRefreshing}
    fragments are refreshed (the least recently served one is dropped to
    make room); a refreshing fragment not served for C{idleTimeout} seconds
    is dropped, so keys that are no longer asked for stop costing renders.

    @ivar clock: the reactor's clock, for timers and ages.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        maxBytes: int = 16 * 1024 * 1024,
        jitter: float = 0.1,
        idleTimeout: Optional[float] = None,
        maxEntryBytes: Optional[int] = None,
        maxRefreshing: int = 1000,
        renderTimeout: Optional[float] = 60.0,
        failureLogInterval: float = 60.0,
        randomSource: Callable[[], float] = random.random,
    ) -> None:
        """
        @param reactor: provides the clock (C{seconds}, C{callLater}).
        @param maxBytes: the budget for kept bytes.
        @param jitter: each refresh interval is C{refresh} seconds plus or
            minus up to this fraction of it, so that fragments (and
            processes) do not refresh in step. At least 0, below 1.
        @param idleTimeout: seconds without being served after which a
            refreshing fragment is dropped; C{None}: C{max(10 * refresh,
            3600)} for each fragment.
        @param maxEntryBytes: the largest fragment kept (default: C{min(1
            MiB, maxBytes)}).
        @param maxRefreshing: how many fragments may be refreshed.
        @param renderTimeout: a render still waiting after this many seconds
            is cancelled (and fails); C{None}: never.
        @param failureLogInterval: failed refreshes of one fragment are
            logged at most once per this many seconds (the others counted).
        @param randomSource: returns floats in C{[0, 1)}, for the jitter.
        """
        if maxBytes < 1:
            raise ValueError("maxBytes must be positive")
        if maxEntryBytes is None:
            maxEntryBytes = min(1024 * 1024, maxBytes)
        if not 0 < maxEntryBytes <= maxBytes:
            raise ValueError("maxEntryBytes must be positive and at most maxBytes")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be at least 0 and below 1")
        if idleTimeout is not None and not idleTimeout > 0:
            raise ValueError("idleTimeout must be positive, or None")
        if maxRefreshing < 1:
            raise ValueError("maxRefreshing must be at least 1")
        if renderTimeout is not None and not renderTimeout > 0:
            raise ValueError("renderTimeout must be positive, or None")
        self.clock = reactor
        self.maxBytes = maxBytes
        self.maxEntryBytes = maxEntryBytes
        self.jitter = jitter
        self.idleTimeout = idleTimeout
        self.maxRefreshing = maxRefreshing
        self.renderTimeout = renderTimeout
        self.failureLogInterval = failureLogInterval
        self._random = randomSource
        # Least recently served first.
        self._fragments: OrderedDict[FullKey, _Fragment] = OrderedDict()
        self._inFlight: Dict[Deferred, None] = {}
        self._bytes = 0
        self._armedCount = 0
        self._warnedNotRunning = False
        self._counters = dict.fromkeys(_COUNTERS, 0)

    # -- the service ----------------------------------------------------------

    def startService(self) -> None:
        """
        Start refreshing: arm the timers of the refreshing fragments.
        """
        Service.startService(self)
        for fragment in list(self._fragments.values()):
            if fragment.armed and fragment.timer is None:
                self._schedule(fragment)

    def stopService(self) -> None:
        """
        Stop refreshing: cancel every timer and abandon every render still
        running (requests waiting for one get a L{CancelledError}). Kept
        bytes are still served; they are refreshed again once the service
        restarts.
        """
        Service.stopService(self)
        for fragment in self._fragments.values():
            if fragment.timer is not None:
                fragment.timer.cancel()
                fragment.timer = None
        for rendering in list(self._inFlight):
            rendering.cancel()
        return None

    # -- IFragmentCache ---------------------------------------------------------

    def bytesFor(self, node: cached, ctx: WebContext) -> Union[bytes, Deferred]:
        """
        See L{IFragmentCache.bytesFor}: the kept bytes when there are any,
        otherwise a L{Deferred} on the one render of this fragment in
        progress (started now if there is none).
        """
        now = self.clock.seconds()
        fullKey = node.fullKey
        fragment = self._fragments.get(fullKey)
        if fragment is not None:
            fragment.lastServed = now
            self._fragments.move_to_end(fullKey)
            body = fragment.body
            if body is not None:
                expiresAt = fragment.expiresAt
                if expiresAt is None or now < expiresAt:
                    self._counters["hits"] += 1
                    return body
                self._forgetBody(fragment)
        else:
            fragment = _Fragment(
                node,
                _fragmentContext(node, ctx, self),
                now,
                LogLimiter(self.clock, self.failureLogInterval),
            )
            self._fragments[fullKey] = fragment
        self._counters["misses"] += 1
        waiter = self._waiter(fragment)
        if fragment.rendering is None:
            self._render(fragment, background=False)
        return waiter

    def invalidate(self, key: str) -> int:
        """
        Forget the bytes of every fragment named C{key} (all its versions,
        templates and variants). The next request renders it again and
        waits for that render; a refreshing fragment stays registered, so
        its next tick re-renders it if no request came first. A render
        that was running is not stored: it read what may be out of date.

        @return: how many fragments were invalidated.
        """
        return self._invalidate(lambda name: name == key)

    def invalidatePrefix(self, prefix: str) -> int:
        """
        Like L{invalidate}, for every fragment whose key starts with
        C{prefix}.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {prefix!r}")
        return self._invalidate(lambda name: name.startswith(prefix))

    def stats(self) -> Dict[str, int]:
        """
        The counters (hits, misses, renders, renderFailures, refreshes,
        refreshFailures, skippedOverlaps, evictions, refusals, idleDrops,
        invalidations) and gauges: C{bytes} kept, C{fragments} known,
        C{refreshing} armed for refresh.
        """
        result = dict(self._counters)
        result["bytes"] = self._bytes
        result["fragments"] = len(self._fragments)
        result["refreshing"] = self._armedCount
        return result

    # -- rendering ------------------------------------------------------------

    def _waiter(self, fragment: _Fragment) -> Deferred:
        def cancel(waiter: Deferred) -> None:
            # One request gave up: the shared render goes on for the others.
            if waiter in fragment.waiters:
                fragment.waiters.remove(waiter)

        waiter: Deferred = Deferred(cancel)
        fragment.waiters.append(waiter)
        return waiter

    def _render(self, fragment: _Fragment, background: bool) -> None:
        self._counters["refreshes" if background else "renders"] += 1
        generation = fragment.generation
        try:
            result = flattenToBytes(fragment.children, fragment.context)
        except BaseException:
            self._settled(Failure(), fragment, generation, background)
            return
        if isinstance(result, Deferred):
            if self.renderTimeout is not None and self.running:
                result.addTimeout(self.renderTimeout, self.clock)
            fragment.rendering = result
            self._inFlight[result] = None
            result.addBoth(
                self._deferredSettled, result, fragment, generation, background
            )
            if background and not self.running:
                # The service stopped while this refresh began: abandon it.
                result.cancel()
            return
        self._settled(result, fragment, generation, background)

    def _deferredSettled(
        self,
        result: Any,
        rendering: Deferred,
        fragment: _Fragment,
        generation: int,
        background: bool,
    ) -> None:
        self._inFlight.pop(rendering, None)
        if fragment.rendering is rendering:
            fragment.rendering = None
        self._settled(result, fragment, generation, background)

    def _settled(
        self, result: Any, fragment: _Fragment, generation: int, background: bool
    ) -> None:
        if isinstance(result, Failure):
            self._failed(result, fragment, background)
            return
        if generation != fragment.generation and not fragment.dropped:
            # Invalidated while rendering: what it read may be out of date.
            self._render(fragment, background=not fragment.waiters)
            return
        if not fragment.dropped:
            self._store(fragment, result)
        self._fire(fragment, result)

    def _failed(self, reason: Failure, fragment: _Fragment, background: bool) -> None:
        abandoned = not self.running and reason.check(CancelledError) is not None
        if not abandoned:
            if background:
                self._counters["refreshFailures"] += 1
                self._logRefreshFailure(fragment, reason)
            else:
                self._counters["renderFailures"] += 1
        if fragment.body is None and not fragment.armed and not fragment.dropped:
            # Never rendered: forget it, so that the next request tries anew.
            self._drop(fragment)
        self._fire(fragment, reason)

    def _fire(self, fragment: _Fragment, result: Any) -> None:
        waiters, fragment.waiters = fragment.waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _logRefreshFailure(self, fragment: _Fragment, reason: Failure) -> None:
        unlogged = fragment.failureLog.allow()
        if unlogged is None:
            return
        log.failure(
            "Refreshing the cached fragment {key!r} failed; its last bytes are"
            " still served ({unlogged} more failures since the last report)",
            failure=reason,
            key=fragment.key,
            unlogged=unlogged,
        )

    # -- keeping bytes --------------------------------------------------------

    def _store(self, fragment: _Fragment, body: bytes) -> None:
        size = len(body) + RECORD_OVERHEAD
        if size > self.maxEntryBytes:
            self._counters["refusals"] += 1
            self._drop(fragment)
            return
        self._forgetBody(fragment)
        fragment.body = body
        fragment.size = size
        self._bytes += size
        if fragment.timeout is not None:
            fragment.expiresAt = self.clock.seconds() + fragment.timeout
        while self._bytes > self.maxBytes:
            for victim in self._fragments.values():
                if victim is not fragment and victim.body is not None:
                    break
            else:  # pragma: no cover - size <= maxEntryBytes <= maxBytes
                break
            self._counters["evictions"] += 1
            self._drop(victim)
        if fragment.refresh is not None and not fragment.armed:
            self._arm(fragment)

    def _forgetBody(self, fragment: _Fragment) -> None:
        if fragment.body is not None:
            self._bytes -= fragment.size
            fragment.body = None
            fragment.size = 0
            fragment.expiresAt = None

    def _drop(self, fragment: _Fragment) -> None:
        if fragment.dropped:
            return
        fragment.dropped = True
        fragment.generation += 1
        self._fragments.pop(fragment.fullKey, None)
        self._forgetBody(fragment)
        if fragment.armed:
            fragment.armed = False
            self._armedCount -= 1
        if fragment.timer is not None:
            fragment.timer.cancel()
            fragment.timer = None

    def _invalidate(self, matches: Callable[[str], bool]) -> int:
        count = 0
        for fragment in list(self._fragments.values()):
            if not matches(fragment.key):
                continue
            count += 1
            if not fragment.armed:
                self._drop(fragment)
                continue
            # Kept, with its timer: the next request or tick renders it.
            fragment.generation += 1
            self._forgetBody(fragment)
        self._counters["invalidations"] += count
        return count

    # -- refreshing -----------------------------------------------------------

    def _arm(self, fragment: _Fragment) -> None:
        while self._armedCount >= self.maxRefreshing:
            victim = next(f for f in self._fragments.values() if f.armed)
            self._counters["evictions"] += 1
            self._drop(victim)
        fragment.armed = True
        self._armedCount += 1
        if self.running:
            self._schedule(fragment)
        elif not self._warnedNotRunning:
            self._warnedNotRunning = True
            log.warn(
                "The fragment cache is not running: fragment {key!r} and the"
                " other refreshing fragments are not refreshed until it starts",
                key=fragment.key,
            )

    def _schedule(self, fragment: _Fragment) -> None:
        assert fragment.refresh is not None
        spread = self.jitter * (2 * self._random() - 1)
        fragment.timer = self.clock.callLater(
            fragment.refresh * (1 + spread), self._tick, fragment
        )

    def _idleLimit(self, fragment: _Fragment) -> float:
        if self.idleTimeout is not None:
            return self.idleTimeout
        assert fragment.refresh is not None
        return max(10 * fragment.refresh, 3600.0)

    def _tick(self, fragment: _Fragment) -> None:
        fragment.timer = None
        if fragment.dropped or not self.running:
            return
        if self.clock.seconds() - fragment.lastServed >= self._idleLimit(fragment):
            self._counters["idleDrops"] += 1
            self._drop(fragment)
            return
        self._schedule(fragment)
        if fragment.rendering is not None:
            self._counters["skippedOverlaps"] += 1
            return
        self._render(fragment, background=True)


def cachedFragment(
    key: Optional[str] = None,
    refresh: Optional[float] = None,
    timeout: Optional[float] = None,
    vary: Any = (),
    version: str = "",
    cache: Optional[FragmentCache] = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """
    Cache what a render method renders, as C{tags.cached} would::

        @cachedFragment(refresh=60)
        def render_news(self, ctx, data):
            return ctx.tag[...]

    The method runs in the fragment's own context (see the module
    docstring): C{ctx.tag} is its tag, C{data} is the page's data (not that
    of the enclosing tags), and the request and the session are refused.

    @param key: the fragment's name; default C{module.Class.render_name}.
    @param vary: values selecting one copy of the fragment, or a callable
        given the request's context that returns them (the place for
        request-dependent choices such as the language).
    @param refresh: see L{cached}; also C{timeout}, C{version} and
        C{cache}.
    """

    def decorate(renderer: Callable[..., Any]) -> Callable[..., Any]:
        name = key or f"{renderer.__module__}.{renderer.__qualname__}"
        varyOf = vary if callable(vary) else None
        # Built now, so that bad arguments fail at import, not per request.
        prototype = cached(
            name,
            refresh=refresh,
            timeout=timeout,
            vary=() if varyOf is not None else vary,
            version=version,
            cache=cache,
        )

        @functools.wraps(renderer)
        def render(*args: Any) -> cached:
            # (self, ctx, data) as a method, (ctx, data) as a function.
            ctx = args[-2]
            tag = ctx.tag
            # The tag is this render's own copy: render it with the real
            # renderer, in the fragment's context.
            if len(args) == 3:
                tag.render = MethodType(renderer, args[0])
            else:
                tag.render = renderer
            if varyOf is None:
                return prototype.withChildren([tag])
            return cached(
                name,
                refresh=refresh,
                timeout=timeout,
                vary=varyOf(ctx),
                version=version,
                cache=cache,
            )[tag]

        return render

    return decorate


_default: Optional[FragmentCache] = None


def _globalReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def defaultFragmentCache() -> FragmentCache:
    """
    The process's own L{FragmentCache}, for fragments rendered where no
    cache was given or remembered: made on first use with the global
    reactor and default limits, started at once, and stopped when the
    reactor shuts down. Sites should rather make their own and remember it
    (C{site.remember(cache, IFragmentCache)}); tests must.
    """
    global _default
    if _default is None:
        reactor = _globalReactor()
        fragments = FragmentCache(reactor)
        fragments.startService()
        reactor.addSystemEventTrigger("before", "shutdown", fragments.stopService)
        _default = fragments
    return _default
