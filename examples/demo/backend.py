"""
The demo's application: a page (written with C{tlcache.nevow}, Nevow's page
API on Python 3) that counts your visits in a session kept by the tlsession
daemon, so the count goes on whichever backend answers, and
says which backend answered and which client address it was told about;
and, at C{/cached}, a page kept in the backend's render cache, with a
fragment that is re-rendered in the background.

Each demo backend runs this file as a .tac (C{examples/demo/run.py} starts
them), configured by the environment::

    TLSUITE_DEMO_NAME=A TLSUITE_DEMO_WHERE="tcp 127.0.0.1:8081" \\
    TLSUITE_DEMO_LISTEN=tlproxy:tcp:8081:interface=127.0.0.1 \\
    TLSUITE_DEMO_SESSIONS=unix:path=run/sessions.sock \\
    TLSUITE_DEMO_SECRET_FILE=run/session-secret \\
    twistd -n --pidfile= -y examples/demo/backend.py

The service tree is the one of any site with shared sessions: a
L{PBSessionStore} (the daemon's client, which reconnects on its own) as a
child service, a L{SessionManager} over it, and the page wrapped in a
L{SessionResource}, all served through the C{tlproxy:} endpoint so that
C{request.getClientAddress()} is the real client.

The cached page (L{CacheDemoPage}) sits beside the session wrapper, not
inside it: a page shared by every client cannot use the session. Each
backend keeps it in a L{RenderCache} of its own (in this process) and keeps
its fragment in a L{FragmentCache}, a child service whose timers stop with
the backend. Two optional variables tune them: C{TLSUITE_DEMO_REFRESH},
the fragment's refresh interval (seconds, default 10), and
C{TLSUITE_DEMO_CACHE_TIMEOUT}, how long a render of the page is fresh
(seconds, default 5).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Mapping, Optional

from twisted.application import strports
from twisted.application.service import Application, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import Interface

from tlbalance.proxyprotocol import (
    PP2_CLIENT_SSL,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_SSL,
    ProxyHeader,
    parseSSLTLV,
)
from tlcache import CachedPage, RenderCache
from tlcache.fragment import FragmentCache
from tlcache.nevow import inevow, loaders, rend
from tlcache.nevow import tags as T
from tlsession import ISession, SessionManager, SessionResource
from tlsession.daemonconfig import readSecretFile
from tlsession.stores.pb import PBSessionStore

#: How much of the session identifier the page shows: enough to tell two
#: sessions apart, far too little to use (the identifier is a credential).
SHOWN_ID_CHARACTERS = 6

#: Seconds a render of the cached page is fresh (served as it is).
CACHE_TIMEOUT = 5.0

#: Seconds after that a stale copy is still served, while one background
#: render replaces it.
CACHE_GRACE = 10.0

#: Seconds between background renders of the cached page's fragment.
FRAGMENT_REFRESH = 10.0

#: Seconds the fragment's renderer takes, on purpose: a slow query, say.
FRAGMENT_RENDER_TIME = 0.5


def proxyHeaderOf(request: Any) -> Optional[ProxyHeader]:
    """
    The PROXY header the balancer sent on the request's connection, if any.
    """
    transport = getattr(request.channel, "transport", None)
    return getattr(transport, "proxyHeader", None)


def _describe(address: object) -> str:
    host = getattr(address, "host", None)
    if host is not None:
        return f"{host}:{getattr(address, 'port', '')}"
    return str(getattr(address, "name", address))


class BalancedRequest(Request):
    """
    A request that counts as TLS when the client's connection to the
    balancer was: the balancer ends TLS and says so in the PROXY v2 header
    (a C{PP2_TYPE_SSL} TLV), which this backend trusts. The session cookie
    of such requests gets C{Secure} and the C{__Host-} name.
    """

    def isSecure(self) -> bool:
        """
        Whether this backend's connection or the client's was TLS.
        """
        if super().isSecure():
            return True
        header = proxyHeaderOf(self)
        value = header.tlv(PP2_TYPE_SSL) if header is not None else None
        if value is None:
            return False
        try:
            return bool(parseSSLTLV(value).client & PP2_CLIENT_SSL)
        except ValueError:
            return False


class Health(Resource):
    """
    The balancer's health check: it answers without touching the session,
    so that checks do not create sessions.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """
        C{ok}.
        """
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"ok\n"


class VisitPage(rend.Page):
    """
    Counts the visits of the session and says who answered: a
    L{tlcache.nevow} page (Nevow's API, on Python 3), whose template is
    precompiled once and filled through slots.
    """

    docFactory = loaders.stan(
        T.html[
            T.head[T.meta(charset="utf-8"), T.title["tlsuite demo"]],
            T.body(render=T.directive("facts"))[
                T.h1[
                    "Visit ", T.slot("visits"), ", answered by backend ", T.slot("name")
                ],
                T.p[
                    "Backend ",
                    T.slot("name"),
                    " listens on ",
                    T.slot("where"),
                    "; both backends keep their sessions in the tlsession daemon, "
                    "so the count goes on whichever of them answers.",
                ],
                T.p[
                    "Your session: ",
                    T.code[T.slot("session")],
                    " (the first characters of its identifier; the whole "
                    "identifier is in your cookie only)",
                ],
                T.p["Client address as this backend sees it: ", T.b[T.slot("client")]],
                T.p["Balancer connection: ", T.slot("balancer")],
                T.p[T.slot("connection")],
                T.p["Reload to see the balancer take turns and the count go on."],
                T.p[
                    T.a(href="/cached")["A cached page"],
                    ": rendered once, then served from the backend's render cache.",
                ],
            ],
        ]
    )

    def __init__(self, name: str, where: str) -> None:
        """
        @param name: the backend's name (one word: C{A}, C{B}).
        @param where: where it listens, for the page.
        """
        super().__init__()
        self.name = name
        self.where = where

    def renderHTTP(self, ctx: Any) -> Any:
        """
        Count the visit, then render the page; C{?format=text} gives one
        line of C{key=value} fields for scripts.
        """
        request = inevow.IRequest(ctx)
        facts = self._countVisit(request)
        if request.args.get(b"format") == [b"text"]:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return (
                f"backend={self.name} visits={facts['visits']} "
                f"session={facts['session']} client={facts['client']}\n"
            ).encode()
        ctx.remember(facts, IVisitFacts)
        return super().renderHTTP(ctx)

    def render_facts(self, ctx: Any, data: Any) -> Any:
        """
        Fill the page's slots with what this request found.
        """
        for key, value in ctx.locate(IVisitFacts).items():
            ctx.fillSlots(key, value)
        return ctx.tag

    def _countVisit(self, request: Request) -> dict[str, str]:
        session = ISession(request)
        if not isinstance(session.get("visits", 0), int):
            del session["visits"]
        # An atomic increment: re-applied if another request of this
        # session (another tab, another backend) saved first.
        visits = session.increment("visits")
        # A new session gets its identifier when it is stored, after this
        # render; its cookie comes with this response.
        sessionID = session.sessionID
        header = proxyHeaderOf(request)
        # The receiver wraps the real connection: its own transport is the
        # socket from the balancer.
        inner = getattr(request.channel.transport, "transport", None)
        balancer = "unknown"
        if header is not None and inner is not None:
            balancer = _describe(inner.getPeer())
        if request.isSecure():
            authority = header.tlv(PP2_TYPE_AUTHORITY) if header is not None else None
            server = authority.decode("utf-8", "replace") if authority else "(none)"
            connection = (
                f"TLS to the balancer (server name {server}): the session cookie "
                "is __Host-TLSESSION, Secure, a session apart from plain HTTP's"
            )
        else:
            connection = (
                "Plain HTTP: the session cookie is TLSESSION (HttpOnly, "
                "SameSite=Lax); over HTTPS you get a separate, Secure one"
            )
        return {
            "visits": str(visits),
            "name": self.name,
            "where": self.where,
            "session": (
                "new" if sessionID is None else sessionID[:SHOWN_ID_CHARACTERS]
            ),
            "client": _describe(request.getClientAddress()),
            "balancer": balancer,
            "connection": connection,
        }


class IVisitFacts(Interface):
    """
    What one request's visit found, remembered in the page's context for
    its renderer.
    """


class IRenderFacts(Interface):
    """
    What one render of the cached page knows about itself (a C{dict}),
    remembered in the page's context for its renderers.
    """


# Shows how old the page and its fragment are, counting from the render
# times the page carries: a cached copy's bytes never change, so its age
# can only be worked out where it is read.
_AGE_SCRIPT = """
(function () {
  var names = ["data-rendered-at", "data-fragment-rendered-at"];
  function show() {
    var now = Date.now() / 1000;
    names.forEach(function (name) {
      document.querySelectorAll("[" + name + "] .age").forEach(function (age) {
        var since = parseFloat(age.closest("[" + name + "]").getAttribute(name));
        var seconds = Math.max(0, now - since);
        age.textContent = seconds.toFixed(1) + " s";
      });
    });
  }
  show();
  setInterval(show, 500);
})();
"""


def _clockTime(seconds: float) -> str:
    """
    C{seconds} since the epoch as a local wall-clock time, to the
    millisecond.
    """
    milliseconds = round(seconds * 1000)
    whole = time.strftime("%H:%M:%S", time.localtime(milliseconds // 1000))
    return f"{whole}.{milliseconds % 1000:03d}"


class CacheDemoPage(CachedPage, rend.Page):
    """
    A page kept in the backend's render cache, saying which backend
    rendered it, when, and how long that took; and holding a fragment that a
    L{FragmentCache} re-renders in the background, slowly.

    It reads nothing of the request but the URL, and never the session: a
    cached copy is served to every client.

    @ivar fragmentRenders: how many renders of the fragment have finished.
    @ivar fragmentRendering: the number of the fragment render in progress,
        or C{None}.
    """

    cacheStatusHeader = b"X-Cache"
    cacheGrace = CACHE_GRACE
    # The page is the same for everyone, so a request carrying the visit
    # page's session cookie is answered from the cache too (by default it
    # would bypass it, in case the page depended on the session). The
    # cache's copy of the request has no cookies, so no render can use one.
    cacheSessionCookies = ()

    def __init__(
        self,
        name: str,
        reactor: Any,
        renderCache: RenderCache,
        fragments: FragmentCache,
        refresh: float = FRAGMENT_REFRESH,
        cacheTimeout: float = CACHE_TIMEOUT,
    ) -> None:
        """
        @param name: the backend's name, shown on the page.
        @param reactor: the clock of the page's render times and of the
            fragment's slow render.
        @param renderCache: where the page is kept.
        @param fragments: where the fragment is kept, and what refreshes it.
        @param refresh: seconds between background renders of the fragment.
        @param cacheTimeout: seconds a render of the page is fresh.
        """
        super().__init__()
        self.name = name
        self.reactor = reactor
        self.renderCache = renderCache
        self.cacheTimeout = cacheTimeout
        self.refresh = refresh
        self.fragmentRenders = 0
        self.fragmentRendering: Optional[int] = None
        self.docFactory = loaders.stan(
            T.html[
                T.head[
                    T.meta(charset="utf-8"),
                    T.title["tlsuite demo: a cached page"],
                ],
                T.body(render=T.directive("facts"))[
                    T.h1["A cached page, rendered by backend ", T.slot("name")],
                    T.p(**{"data-backend": T.slot("name")})[
                        "Backend ",
                        T.slot("name"),
                        " rendered this copy of the page at ",
                        T.b[T.slot("renderedAt")],
                        " (its clock). ",
                        T.span(**{"data-rendered-at": T.slot("epoch")})[
                            "Its age: ",
                            T.b(class_="age")["worked out by the page's script"],
                            ".",
                        ],
                    ],
                    T.p[
                        "Each backend keeps the page in its render cache: for ",
                        T.slot("timeout"),
                        " s every request gets the same bytes, without a render; for ",
                        T.slot("grace"),
                        " s more a request gets them while one render in the "
                        "background replaces them. Reload: the balancer takes "
                        "turns, and each backend shows its own copy. ",
                        T.code["curl -i"],
                        " shows it in the headers: ",
                        T.code["X-Cache"],
                        " says HIT, STALE or MISS (rendered for this request), ",
                        T.code["Last-Modified"],
                        " when this copy was rendered, and on a stale copy ",
                        T.code["Age"],
                        " how many seconds ago (the age above is worked out "
                        "by your browser from the render time the page "
                        "carries, as the cached bytes cannot change).",
                    ],
                    T.h2["A fragment refreshed in the background"],
                    T.div(id="fragment")[
                        T.cached(
                            key="demo-cache-counters", refresh=refresh, cache=fragments
                        )[T.div(render=T.directive("counters"))]
                    ],
                    T.p(render=T.directive("renderTime")),
                    T.p[T.a(href="/")["Back to the visit counter"]],
                    T.script[T.xml(_AGE_SCRIPT)],
                ],
            ]
        )

    def renderHTTP(self, ctx: Any) -> Any:
        """
        Note when this render starts, then render the page.
        """
        now = self.reactor.seconds()
        facts = {
            "started": now,
            "fragmentReady": self.fragmentRenders > 0,
        }
        ctx.remember(facts, IRenderFacts)
        return super().renderHTTP(ctx)

    def render_facts(self, ctx: Any, data: Any) -> Any:
        """
        Fill the page's slots.
        """
        facts = ctx.locate(IRenderFacts)
        ctx.fillSlots("name", self.name)
        ctx.fillSlots("renderedAt", _clockTime(facts["started"]))
        ctx.fillSlots("epoch", f"{facts['started']:.3f}")
        ctx.fillSlots("timeout", f"{self.cacheTimeout:g}")
        ctx.fillSlots("grace", f"{self.cacheGrace:g}")
        return ctx.tag

    def render_counters(self, ctx: Any, data: Any) -> Deferred[Any]:
        """
        The fragment: the backend's cache counters, and when they were
        rendered. It takes L{FRAGMENT_RENDER_TIME} seconds, like a slow
        query would; only the first request of the page waits for it, and
        background renders replace it every C{refresh} seconds.

        It renders with no request (the fragment cache refuses one): what it
        shows comes from the page, here the caches' counters.
        """
        number = self.fragmentRenders + 1
        self.fragmentRendering = number
        tag = ctx.tag

        def rendered() -> Any:
            now = self.reactor.seconds()
            page = self.renderCache.stats() if self.renderCache else {}
            return tag(
                **{
                    "data-fragment-rendered-at": f"{now:.3f}",
                    "data-fragment-render": str(number),
                }
            )[
                T.p[
                    "Render ",
                    T.b[str(number)],
                    " of this fragment on backend ",
                    self.name,
                    ", finished at ",
                    T.b[_clockTime(now)],
                    " after ",
                    f"{FRAGMENT_RENDER_TIME:g}",
                    " s (slow on purpose); its age: ",
                    T.b(class_="age")["shown by the page's script"],
                    ". A timer renders it again about every ",
                    f"{self.refresh:g}",
                    " s; pages rendered meanwhile use the bytes at hand.",
                ],
                T.p[
                    "Backend ",
                    self.name,
                    "'s render cache then: ",
                    _counters(page),
                    ".",
                ],
            ]

        def settled(result: Any) -> Any:
            if self.fragmentRendering == number:
                self.fragmentRendering = None
            if not isinstance(result, Failure):
                self.fragmentRenders = number
            return result

        return deferLater(self.reactor, FRAGMENT_RENDER_TIME, rendered).addBoth(settled)

    def render_renderTime(self, ctx: Any, data: Any) -> Any:
        """
        How long this render took: rendered last, after the fragment.
        """
        facts = ctx.locate(IRenderFacts)
        elapsed = (self.reactor.seconds() - facts["started"]) * 1000
        running = self.fragmentRendering
        if facts["fragmentReady"]:
            waited = (
                "the fragment's bytes were at hand, so it did not wait for "
                "its slow renderer"
            )
        else:
            waited = (
                "it waited for the fragment's first render: only the first request does"
            )
        if running is not None and facts["fragmentReady"]:
            refreshing = (
                f" Render {running} of the fragment was running in the "
                "background meanwhile; this page has the one before."
            )
        else:
            refreshing = ""
        return ctx.tag(
            **{
                "data-render-ms": f"{elapsed:.1f}",
                "data-fragment-waited": "no" if facts["fragmentReady"] else "yes",
                "data-refreshing": "none" if running is None else str(running),
            }
        )[
            "This copy took ",
            T.b[f"{elapsed:.1f} ms"],
            " to render: ",
            waited,
            ".",
            refreshing,
        ]


def _counters(stats: Mapping[str, int]) -> str:
    shown = (
        ("hits", "hits"),
        ("staleHits", "stale hits"),
        ("misses", "misses"),
        ("renders", "renders"),
        ("entries", "pages kept"),
    )
    return ", ".join(f"{label} {stats.get(name, 0)}" for name, label in shown)


def makeService(
    reactor: Any,
    name: str,
    where: str,
    listen: str,
    sessions: str,
    secretFile: str,
    refresh: float = FRAGMENT_REFRESH,
    cacheTimeout: float = CACHE_TIMEOUT,
) -> MultiService:
    """
    One demo backend: the daemon's client store, the caches, and the site
    using them.

    @param reactor: connects, listens and keeps the sessions' and the
        caches' time.
    @param name: the backend's name, shown on the pages.
    @param where: where it listens, shown on the page.
    @param listen: the server endpoint string to serve on (C{tlproxy:...}).
    @param sessions: the daemon's client endpoint string.
    @param secretFile: the file holding the daemon's shared secret.
    @param refresh: seconds between background renders of the cached page's
        fragment.
    @param cacheTimeout: seconds a render of the cached page is fresh.
    """
    service = MultiService()
    store = PBSessionStore(sessions, readSecretFile(secretFile), reactor)
    store.setServiceParent(service)
    manager = SessionManager(store, reactor)
    fragments = FragmentCache(reactor)
    fragments.setServiceParent(service)
    cached = CacheDemoPage(
        name,
        reactor,
        RenderCache(clock=reactor),
        fragments,
        refresh=refresh,
        cacheTimeout=cacheTimeout,
    )
    root = Resource()
    root.putChild(b"", SessionResource(VisitPage(name, where), manager))
    root.putChild(b"health", Health())
    # Outside the session wrapper: the cached page has no use for a session.
    root.putChild(b"cached", cached)
    site = Site(root, requestFactory=BalancedRequest)
    strports.service(listen, site).setServiceParent(service)
    return service


def _setting(environment: Mapping[str, str], name: str) -> str:
    value = environment.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: run the demo with `make demo` "
            "(examples/demo/run.py sets it)"
        )
    return value


def _seconds(environment: Mapping[str, str], name: str, default: float) -> float:
    value = environment.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise RuntimeError(
            f"{name} must be a positive number of seconds, not {value!r}"
        )
    return seconds


def makeApplication(environment: Mapping[str, str]) -> Any:
    """
    The twistd application of one backend, configured by C{environment}
    (the C{TLSUITE_DEMO_*} variables in the module's documentation).
    """
    from twisted.internet import reactor

    application = Application("tlsuite demo backend")
    makeService(
        reactor,
        name=_setting(environment, "TLSUITE_DEMO_NAME"),
        where=_setting(environment, "TLSUITE_DEMO_WHERE"),
        listen=_setting(environment, "TLSUITE_DEMO_LISTEN"),
        sessions=_setting(environment, "TLSUITE_DEMO_SESSIONS"),
        secretFile=_setting(environment, "TLSUITE_DEMO_SECRET_FILE"),
        refresh=_seconds(environment, "TLSUITE_DEMO_REFRESH", FRAGMENT_REFRESH),
        cacheTimeout=_seconds(environment, "TLSUITE_DEMO_CACHE_TIMEOUT", CACHE_TIMEOUT),
    ).setServiceParent(application)
    return application


# twistd -y runs this file's code with no module name: that is when it is a
# .tac and builds the application. Imported as a module, it only defines.
if "__name__" not in globals():
    application = makeApplication(os.environ)
