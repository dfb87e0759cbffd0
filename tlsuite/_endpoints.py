# -*- test-case-name: tests.unit.test_endpointstrings -*-
"""
Endpoint strings checked before anything listens or connects, and the
one-line explanation of a listener that could not start: shared by the
balancer's and the session daemon's configuration.
"""

from __future__ import annotations

import errno
from typing import Optional

from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IReactorPluggableNameResolver,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from zope.interface import implementer

from tlsuite._twisted import parseEndpointString

__all__ = [
    "PARSE_ONLY",
    "EndpointStringError",
    "checkClientEndpoint",
    "checkServerEndpoint",
    "endpointKind",
    "listenErrorMessage",
    "portProblem",
    "refusalReason",
]


class EndpointStringError(ValueError):
    """
    An endpoint string Twisted cannot use; the message says why, in one
    line, naming the string.
    """


@implementer(IReactorPluggableNameResolver)
class _ParseOnlyReactor:
    """
    Stands in for the reactor while endpoint strings are parsed: endpoints
    only store it, and anything that tried to listen or connect through it
    would fail loudly.
    """

    nameResolver = None

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """
        Never called while parsing; present for the interface.
        """
        raise RuntimeError("endpoint strings are only parsed here")


#: The stand-in reactor endpoint strings are parsed with.
PARSE_ONLY = _ParseOnlyReactor()

# Where the port sits among an endpoint string's positional arguments
# (counting the type): Twisted's parsers take any integer, so 70000 would
# otherwise only fail when listening or, worse, on every connection attempt.
_SERVER_PORT_POSITION = {"tcp": 1, "tcp6": 1, "ssl": 1}
_CLIENT_PORT_POSITION = {"tcp": 2, "ssl": 2, "tls": 2}


def endpointKind(description: str) -> str:
    """
    The type of an endpoint string (C{"tcp"}, C{"unix"}, C{"ssl"}...), in
    lower case; C{""} when it has none.
    """
    args, _ = parseEndpointString(description)
    return str(args[0]).lower() if args else ""


def refusalReason(error: Exception, kind: str = "") -> str:
    """
    Say why Twisted refused an endpoint string, in one line.

    @param error: what C{serverFromString} or C{clientFromString} raised.
    @param kind: the string's type (L{endpointKind}), for a hint where
        Twisted's own words do not help (a C{systemd:} socket not passed).
    """
    if kind == "systemd" and isinstance(error, LookupError):
        return (
            "systemd passed no such socket (is the .socket unit active, "
            "and does its FileDescriptorName match?)"
        )
    original = getattr(error, "originalException", None)
    if isinstance(original, Exception):
        error = original
    text = " ".join(str(error).split())
    if isinstance(error, LookupError) or not text:
        return f"{type(error).__name__} {text}".strip()
    return text


def portProblem(
    description: str, client: bool = False, example: str = ""
) -> Optional[str]:
    """
    Why the port of an endpoint string cannot work, or C{None} when it can
    (or its type has no port): C{"no port given"}, or C{"the port must be
    from 0 to 65535, got 70000"}.

    @param client: C{description} is a client endpoint string, whose port
        cannot be 0.
    @param example: a string with a port, shown after C{"no port given, as
        in"}.
    """
    positions = _CLIENT_PORT_POSITION if client else _SERVER_PORT_POSITION
    lowest = 1 if client else 0
    args, kwargs = parseEndpointString(description)
    position = positions.get(args[0].lower()) if args else None
    if position is None:
        return None
    port = kwargs.get("port", args[position] if len(args) > position else None)
    if port is None:
        return f"no port given, as in {example}" if example else "no port given"
    if port.isdigit() and not lowest <= int(port) <= 65535:
        return f"the port must be from {lowest} to 65535, got {port}"
    return None


def checkServerEndpoint(description: str) -> IStreamServerEndpoint:
    """
    Check that C{description} is a server endpoint string Twisted can
    listen on, without listening: it parses (C{ssl:} reads its key and
    certificate files here), and its port is in range.

    @return: the endpoint, built with L{PARSE_ONLY} for a reactor: for
        looking at, never for listening.
    @raise EndpointStringError: saying why not.
    """
    problem = portProblem(description)
    if problem is not None:
        raise EndpointStringError(f"{description!r}: {problem}")
    try:
        endpoint: IStreamServerEndpoint = serverFromString(PARSE_ONLY, description)
    except Exception as e:
        reason = refusalReason(e, endpointKind(description))
        raise EndpointStringError(
            f"{description!r} is not a valid server endpoint: {reason}"
        ) from None
    return endpoint


def checkClientEndpoint(description: str) -> IStreamClientEndpoint:
    """
    Check that C{description} is a client endpoint string Twisted can
    connect with, without connecting: it parses, and its port is in range.

    @return: the endpoint, built with L{PARSE_ONLY} for a reactor: for
        looking at, never for connecting.
    @raise EndpointStringError: saying why not.
    """
    problem = portProblem(description, client=True)
    if problem is not None:
        raise EndpointStringError(f"{description!r}: {problem}")
    try:
        endpoint: IStreamClientEndpoint = clientFromString(PARSE_ONLY, description)
    except Exception as e:
        raise EndpointStringError(
            f"{description!r} is not a valid client endpoint: {refusalReason(e)}"
        ) from None
    return endpoint


def listenErrorMessage(description: str, error: CannotListenError) -> str:
    """
    Why listening on C{description} failed, in one line, with what to do.

    @param error: what the endpoint's C{listen} failed with.
    """
    socketError = error.socketError
    code = getattr(socketError, "errno", None)
    where = f"cannot listen on {description}"
    if code == errno.EADDRINUSE:
        return (
            f"{where}: the address is already in use: another process holds "
            "it (stop that process, or choose another address)"
        )
    if code == errno.EACCES:
        return (
            f"{where}: permission denied (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE; a unix socket needs a directory this user "
            "can write)"
        )
    if code == errno.EADDRNOTAVAIL:
        return (
            f"{where}: no local interface has that address (check the interface= part)"
        )
    reason = getattr(socketError, "strerror", None) or str(socketError)
    return f"{where}: {' '.join(str(reason).split())}"
