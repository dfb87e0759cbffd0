"""
The demo's application: a page that counts your visits in a session kept by
the tlsession daemon, so the count goes on whichever backend answers, and
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

import html
import os
from typing import Any, Mapping, Optional

from twisted.application import strports
from twisted.application.service import Application, MultiService
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tlbalance.proxyprotocol import (
    PP2_CLIENT_SSL,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_SSL,
    ProxyHeader,
    parseSSLTLV,
)
from tlsession import ISession, SessionManager, SessionResource
from tlsession.stores.pb import PBSessionStore
from tlsession.tap import readSecretFile

#: How much of the session identifier the page shows: enough to tell two
#: sessions apart, far too little to use (the identifier is a credential).
SHOWN_ID_CHARACTERS = 6

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>tlsuite demo</title></head>
<body>
<h1>Visit {visits}, answered by backend {name}</h1>
<p>Backend {name} listens on {where}; both backends keep their sessions in
the tlsession daemon, so the count goes on whichever of them answers.</p>
<p>Your session: <code>{session}</code> (the first characters of its
identifier; the whole identifier is in your cookie only)</p>
<p>Client address as this backend sees it: <b>{client}</b></p>
<p>Balancer connection: {balancer}</p>
<p>{connection}</p>
<p>Reload to see the balancer take turns and the count go on.</p>
</body></html>
"""


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


class VisitCounter(Resource):
    """
    Counts the visits of the session and says who answered.
    """

    isLeaf = True

    def __init__(self, name: str, where: str) -> None:
        """
        @param name: the backend's name (one word: C{A}, C{B}).
        @param where: where it listens, for the page.
        """
        super().__init__()
        self.name = name
        self.where = where

    def render_GET(self, request: Request) -> bytes:
        """
        Count the visit and render the page; C{?format=text} gives one line
        of C{key=value} fields for scripts.
        """
        session = ISession(request)
        previous = session.get("visits", 0)
        visits = (previous if isinstance(previous, int) else 0) + 1
        session["visits"] = visits
        # A new session gets its identifier when it is stored, after this
        # render; its cookie comes with this response.
        sessionID = session.sessionID
        shown = "new" if sessionID is None else sessionID[:SHOWN_ID_CHARACTERS]
        client = _describe(request.getClientAddress())
        if request.args.get(b"format") == [b"text"]:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return (
                f"backend={self.name} visits={visits} session={shown} client={client}\n"
            ).encode()
        header = proxyHeaderOf(request)
        # The receiver wraps the real connection: its own transport is the
        # socket from the balancer.
        inner = getattr(request.channel.transport, "transport", None)
        balancer = "unknown"
        if header is not None and inner is not None:
            balancer = _describe(inner.getPeer())
        if request.isSecure():
            authority = header.tlv(PP2_TYPE_AUTHORITY) if header is not None else None
            name = authority.decode("utf-8", "replace") if authority else "(none)"
            connection = (
                f"TLS to the balancer (server name {name}): the session cookie "
                "is __Host-TLSESSION, Secure, a session apart from plain HTTP's"
            )
        else:
            connection = (
                "Plain HTTP: the session cookie is TLSESSION (HttpOnly, "
                "SameSite=Lax); over HTTPS you get a separate, Secure one"
            )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE.format(
            visits=visits,
            name=html.escape(self.name),
            where=html.escape(self.where),
            session=html.escape(shown),
            client=html.escape(client),
            balancer=html.escape(balancer),
            connection=html.escape(connection),
        ).encode("utf-8")


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
    root.putChild(b"", SessionResource(VisitCounter(name, where), manager))
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
