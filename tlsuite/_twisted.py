# -*- test-case-name: tests.unit.test_twisted_internals -*-
"""
Every reach into Twisted's private names, in one place.

Twisted promises nothing about a name that starts with an underscore: any
release may rename or remove it. tlsuite uses a few, each for a reason
given beside it, and only through this module, so that an upgrade that
breaks one fails in one place and by name: tests/unit/test_twisted_internals.py
pins each reach against the installed Twisted.

Checked against Twisted 25.5 (the floor in pyproject.toml) to 26.10.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.web.http import Request
from twisted.web.http_headers import Headers

__all__ = [
    "releaseSharedPort",
    "forcedSecure",
    "headersDict",
    "parseEndpointString",
    "raiseListenErrorsAtStart",
]


def parseEndpointString(description: str) -> Tuple[List[str], Dict[str, str]]:
    """
    Split an endpoint string into its positional and keyword parts
    (C{"tcp:80:interface=::1"} is C{(["tcp", "80"], {"interface": "::1"})}),
    unescaping backslashes exactly as C{serverFromString} and
    C{clientFromString} do, so that what tlsuite checks is what Twisted
    then builds.

    Reaches: C{twisted.internet.endpoints._parse}, the parser both public
    functions use. No public API returns the parts; a replacement would be
    our own parser of the same grammar, kept in step with Twisted's.
    """
    args, kwargs = endpoints._parse(description)
    return list(args), dict(kwargs)


def headersDict(headers: Headers) -> Optional[Dict[bytes, List[bytes]]]:
    """
    The dict behind a L{Headers}, when this Twisted keeps one: name (in
    Twisted's own spelling) to a list of raw values. C{None} when it does
    not, and callers then use the public methods.

    Reaches: C{Headers._rawHeaders}. Used on the render cache's hot path,
    where a hit sets five headers and the public C{setRawHeaders} costs as
    much again as the rest of the hit. The public replacement is
    C{getRawHeaders}/C{setRawHeaders}, which every caller falls back to.
    """
    raw = getattr(headers, "_rawHeaders", None)
    return raw if type(raw) is dict else None


def forcedSecure(request: Request) -> bool:
    """
    Was the request marked secure by C{request.setHost(..., ssl=True)} (as
    a proxy in front would)?

    Reaches: C{Request._forceSSL}, the flag C{isSecure()} reads first. The
    public replacement is C{request.isSecure()}, which also adapts the
    transport to C{ISSLTransport}: microseconds on every cache lookup. Read
    with a default, so a Twisted without the flag says C{False} and the
    caller asks C{isSecure()}.
    """
    return bool(getattr(request, "_forceSSL", False))


def raiseListenErrorsAtStart(service: StreamServerEndpointService) -> None:
    """
    Make C{service.privilegedStartService()} raise the error of a listen
    that fails at once (an address in use, a permission refused), so that
    the process stops there, instead of logging it and running on without
    the listener.

    Reaches: C{StreamServerEndpointService._raiseSynchronously}, the flag
    the public C{twisted.application.strports.service} sets on the services
    it builds for C{twistd web} and friends. That function is the public
    replacement, but it builds its endpoint from a string, and the suite's
    listeners wrap their endpoint first. Only set here: a Twisted without
    the flag would log the failure and not stop, which the tests pinning
    this reach catch.
    """
    service._raiseSynchronously = True


def encodingResourceEncoder(resource: object, request: object) -> object:
    """
    What C{twisted.web.server.Request.process} does before it renders a
    resource, for code that renders a child itself (tlsession's
    C{SessionResource}, a leaf that renders what it wraps): if C{resource}
    offers a response encoder (gzip, as L{EncodingResourceWrapper} does) and
    the request has none yet, give the request that encoder.

    @return: the encoder now in use, or C{None}.

    Reaches: C{twisted.web.resource._IEncodingResource} and
    C{twisted.web.server.Request._encoder}, the only way to have
    C{Request.write} encode. The public replacement would be a public
    encoder hook on C{Request}; without one, rendering the child through
    C{Site.getResourceFor} is not possible below a leaf.
    """
    from twisted.web import resource as _resource

    interface = getattr(_resource, "_IEncodingResource", None)
    if interface is None or getattr(request, "_encoder", None) is not None:
        return getattr(request, "_encoder", None)
    if not interface.providedBy(resource):
        return None
    encoder = resource.getEncoder(request)  # type: ignore[attr-defined]
    if encoder is not None:
        request._encoder = encoder  # type: ignore[attr-defined]
    return encoder


def releaseSharedPort(port: IListeningPort) -> None:
    """
    Let C{port} stop listening without harming the listening socket that
    another process now holds too (a takeover handed it over): no
    C{shutdown()}, which on Linux stops the listening socket itself and
    drops its accept queue in every process that holds it, and, for a unix
    socket, no removal of its file, which the new process serves.

    Reaches: C{twisted.internet.tcp.Port._shouldShutdown} (the flag that
    makes C{connectionLost} call C{shutdown()}), and replaces the unix
    port's C{connectionLost} with C{twisted.internet.unix.Port}'s less the
    unlink of the path. The public replacement would be a port method to
    close without shutdown or unlink; Twisted has none.
    """
    from twisted.internet import tcp, unix

    port._shouldShutdown = False  # type: ignore[attr-defined]
    if isinstance(port, unix.Port):
        unixPort = port

        def connectionLost(reason: object) -> None:
            if unixPort.lockFile is not None:
                unixPort.lockFile.unlock()
            tcp.Port.connectionLost(unixPort, reason)

        unixPort.connectionLost = connectionLost  # type: ignore[method-assign]
