"""
Twisted plugins of tlsuite: C{twistd tlbalance}, C{twistd tlsession}, and
the C{tlproxy:} and C{tlsni:} endpoints.

Each entry is lazy: the modules behind it are imported only when the plugin
is used, not each time Twisted scans this directory.
"""

from twisted.application.service import ServiceMaker

from tlbalance._plugin import ProxyEndpointStringParser, SNIEndpointStringParser

tlbalance = ServiceMaker(
    "tlbalance",
    "tlbalance.tap",
    "A TCP/TLS/unix load balancer that passes the client address upstream "
    "(PROXY protocol v1/v2).",
    "tlbalance",
)

tlproxy = ProxyEndpointStringParser()
tlsni = SNIEndpointStringParser()

tlsession = ServiceMaker(
    "tlsession",
    "tlsession.tap",
    "The tlsession daemon: sessions shared by every app process, over "
    "Perspective Broker.",
    "tlsession",
)
