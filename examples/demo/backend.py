"""
A small twisted.web application for the demo: it says which backend
answered and which client address it was told about.

It listens through the C{tlproxy:} endpoint, so C{request.getClientAddress()}
is the real client even though every connection comes from the balancer.
Run it with C{twistd -n web --listen tlproxy:tcp:8081 --class
examples.demo.backend.resource} or through C{examples/demo/run.py}.
"""

from __future__ import annotations

import html
import os

from twisted.web.resource import Resource
from twisted.web.server import Request

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>tlsuite demo</title></head>
<body>
<h1>Answered by backend {name}</h1>
<p>Client address as this backend sees it: <b>{client}</b></p>
<p>Balancer connection: {balancer}</p>
<p>TLS server name (from the PROXY v2 AUTHORITY TLV): {authority}</p>
<p>Reload to see the balancer take turns.</p>
</body></html>
"""


def _describe(address: object) -> str:
    host = getattr(address, "host", None)
    if host is not None:
        return f"{host}:{getattr(address, 'port', '')}"
    return str(getattr(address, "name", address))


class WhoAnswered(Resource):
    """
    Shows the backend's name and the client address it received.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Request) -> bytes:
        """
        Render the page; C{?format=text} gives one line for scripts.
        """
        transport = request.channel.transport
        header = getattr(transport, "proxyHeader", None)
        authority = None
        if header is not None:
            from tlbalance.proxyprotocol import PP2_TYPE_AUTHORITY

            value = header.tlv(PP2_TYPE_AUTHORITY)
            authority = value.decode("utf-8", "replace") if value else None
        # The receiver wraps the real connection: its own transport is the
        # socket from the balancer.
        inner = getattr(transport, "transport", None)
        realPeer = inner.getPeer() if header is not None and inner else None
        client = _describe(request.getClientAddress())
        if request.args.get(b"format") == [b"text"]:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"backend={self.name} client={client}\n".encode()
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE.format(
            name=html.escape(self.name),
            client=html.escape(client),
            balancer=html.escape(_describe(realPeer) if realPeer else "unknown"),
            authority=html.escape(authority or "(none: plain HTTP)"),
        ).encode("utf-8")


def resource() -> Resource:
    """
    The demo backend's root resource, named by C{TLSUITE_DEMO_NAME}.
    """
    return WhoAnswered(os.environ.get("TLSUITE_DEMO_NAME", "?"))
