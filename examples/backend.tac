"""
A twisted.web backend for tlbalance, built in Python: the application's
L{Site} wrapped in L{ProxyReceiverFactory}, so every request sees the real
client address that the balancer's PROXY header (v1 or v2) carries.

Run it in the foreground with::

    twistd -n --pidfile= -y examples/backend.tac

It listens on 127.0.0.1:8081 and trusts PROXY headers from loopback only.
The environment can change that: C{BACKEND_PORT=8082}, C{BACKEND_NAME=b},
C{BACKEND_TRUSTED=10.0.0.5/32,127.0.0.0/8}. Every page is one line of text
saying which client the backend was told about.
"""

from __future__ import annotations

import os

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Application
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IAddress
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tlbalance.proxyprotocol import PP2_TYPE_AUTHORITY
from tlbalance.upstream import DEFAULT_TRUSTED, ProxyReceiverFactory, TrustedPeers

PORT = int(os.environ.get("BACKEND_PORT", "8081"))
NAME = os.environ.get("BACKEND_NAME", f"backend-{PORT}")
TRUSTED = os.environ.get("BACKEND_TRUSTED", DEFAULT_TRUSTED)


def describe(address: IAddress) -> str:
    """
    C{host:port} for IP addresses, the socket path for unix ones.
    """
    host = getattr(address, "host", None)
    if host is not None:
        return f"{host}:{getattr(address, 'port', '')}"
    return f"unix:{getattr(address, 'name', None) or '(unnamed)'}"


class WhoIsAsking(Resource):
    """
    Answers every GET with the backend's name, the client address and, for
    clients that came in over TLS, the server name they asked for.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """
        One line: C{backend=NAME client=ADDRESS [sni=NAME]}.
        """
        line = f"backend={NAME} client={describe(request.getClientAddress())}"
        # The receiver is the request's transport; PROXY v2 headers from a
        # TLS listener of tlbalance carry the SNI as the AUTHORITY TLV.
        header = getattr(request.transport, "proxyHeader", None)
        authority = header.tlv(PP2_TYPE_AUTHORITY) if header is not None else None
        if authority:
            line += f" sni={authority.decode('utf-8', 'replace')}"
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return line.encode("utf-8") + b"\n"


application = Application("tlbalance example backend")
factory = ProxyReceiverFactory(
    Site(WhoIsAsking()),
    TrustedPeers.fromString(TRUSTED),
    headerTimeout=5.0,
    clock=reactor,
)
endpoint = TCP4ServerEndpoint(reactor, PORT, interface="127.0.0.1")
StreamServerEndpointService(endpoint, factory).setServiceParent(application)
