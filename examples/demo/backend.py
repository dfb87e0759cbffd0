"""
The demo's application: a page (written with C{tlcache.nevow}, Nevow's page
API on Python 3) that counts your visits in a session kept by the tlsession
daemon, so the count goes on whichever backend answers, and
says which backend answered and which client address it was told about.

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
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from twisted.application import strports
from twisted.application.service import Application, MultiService
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
from tlcache.nevow import inevow, loaders, rend
from tlcache.nevow import tags as T
from tlsession import ISession, SessionManager, SessionResource
from tlsession.stores.pb import PBSessionStore
from tlsession.tap import readSecretFile

#: How much of the session identifier the page shows: enough to tell two
#: sessions apart, far too little to use (the identifier is a credential).
SHOWN_ID_CHARACTERS = 6


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
        previous = session.get("visits", 0)
        visits = (previous if isinstance(previous, int) else 0) + 1
        session["visits"] = visits
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


def makeService(
    reactor: Any, name: str, where: str, listen: str, sessions: str, secretFile: str
) -> MultiService:
    """
    One demo backend: the daemon's client store and the site using it.

    @param reactor: connects, listens and keeps the sessions' time.
    @param name: the backend's name, shown on the page.
    @param where: where it listens, shown on the page.
    @param listen: the server endpoint string to serve on (C{tlproxy:...}).
    @param sessions: the daemon's client endpoint string.
    @param secretFile: the file holding the daemon's shared secret.
    """
    service = MultiService()
    store = PBSessionStore(sessions, readSecretFile(secretFile), reactor)
    store.setServiceParent(service)
    manager = SessionManager(store, reactor)
    root = Resource()
    root.putChild(b"", SessionResource(VisitPage(name, where), manager))
    root.putChild(b"health", Health())
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
    ).setServiceParent(application)
    return application


# twistd -y runs this file's code with no module name: that is when it is a
# .tac and builds the application. Imported as a module, it only defines.
if "__name__" not in globals():
    application = makeApplication(os.environ)
