# -*- test-case-name: tests.unit.test_endpoints -*-
"""
Helpers for endpoint strings and addresses.

C{tlproxy:trusted=...:tcp:8081} and C{tlsni:certdir=...:tcp:8443} take their
own options and pass everything else on to the endpoint they wrap. Twisted
hands a parser plugin the string already split into positional and keyword
arguments, so the inner string has to be put back together, escaping again
the characters Twisted's grammar treats specially. Log lines describe
addresses the same way everywhere.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress


def quoteEndpointArgument(value: str) -> str:
    """
    Escape C{value} so that Twisted's endpoint-string parser reads it back
    unchanged (C{:} and C{=} separate arguments, C{\\} escapes).
    """
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def unparseEndpoint(args: Sequence[str], kwargs: Mapping[str, str]) -> str:
    """
    Rebuild an endpoint description from parsed positional and keyword
    arguments: the inverse of Twisted's own splitting.

    @param args: positional arguments, the first one naming the endpoint type
        (C{"tcp"}, C{"unix"}, C{"ssl"}, ...).
    @param kwargs: keyword arguments of the wrapped endpoint.
    @return: a string for L{twisted.internet.endpoints.serverFromString} or
        L{twisted.internet.endpoints.clientFromString}.
    """
    parts = [quoteEndpointArgument(a) for a in args]
    parts += [
        f"{quoteEndpointArgument(k)}={quoteEndpointArgument(v)}"
        for k, v in kwargs.items()
    ]
    return ":".join(parts)


def describeAddress(address: Optional[IAddress]) -> str:
    """
    A short text for an address in log lines: C{1.2.3.4:5}, C{[::1]:5},
    C{unix:/path}.
    """
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name}" if name else "unix socket"
    return repr(address)
