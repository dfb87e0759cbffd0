# -*- test-case-name: tests.unit.test_upstream -*-
"""
The light object behind the C{tlproxy:} endpoint plugin.

Twisted imports every dropin when it scans C{twisted/plugins}; this object
defers importing L{tlbalance.upstream} (and with it OpenSSL) until a
C{tlproxy:} endpoint string is actually parsed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ProxyEndpointStringParser:
    """
    Parses C{tlproxy:[trusted=CIDR,...:][headertimeout=S:]INNER-ENDPOINT}.

    See L{tlbalance.upstream.parseProxyEndpoint} for the syntax.
    """

    prefix = "tlproxy"

    def parseStreamServer(  # type: ignore[override]
        self, reactor: Any, *args: str, **kwargs: str
    ) -> IStreamServerEndpoint:
        """
        Build the endpoint; the real work lives in L{tlbalance.upstream}.
        """
        from tlbalance.upstream import parseProxyEndpoint

        return parseProxyEndpoint(reactor, *args, **kwargs)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class SNIEndpointStringParser:
    """
    Parses C{tlsni:certdir=DIR[:strict=yes]:INNER-ENDPOINT}: TLS with the
    certificate chosen by server name from a directory of PEM files.

    See L{tlbalance._sni.SNIOptions} for the syntax.
    """

    prefix = "tlsni"

    def parseStreamServer(  # type: ignore[override]
        self, reactor: Any, *args: str, **kwargs: str
    ) -> IStreamServerEndpoint:
        """
        Build the endpoint; the real work lives in L{tlbalance._sni}.
        """
        from tlbalance._sni import parseSNIEndpoint

        return parseSNIEndpoint(reactor, *args, **kwargs)
