# -*- test-case-name: tests.unit.test_nevow_site -*-
"""
Helpers for testing pages without sockets: a real twisted.web site, fed
an HTTP request over an in-memory transport::

    exchange = sendRequest(NevowSite(MyPage()), b"/child?x=1")
    response = exchange.response()
    assert response.code == 200 and response.body == b"<html>..."
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.server import Site

__all__ = ["Exchange", "Response", "makeSite", "sendRequest"]


class Response:
    """
    A parsed HTTP response.

    @ivar code: the status code.
    @ivar headers: header values by lower-case name (C{bytes}).
    @ivar body: the body, de-chunked.
    """

    def __init__(
        self, code: int, headers: Dict[bytes, List[bytes]], body: bytes
    ) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> Optional[bytes]:
        """
        The first value of the header C{name}, or C{None}.
        """
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def __repr__(self) -> str:
        return f"Response({self.code}, {self.headers!r}, {self.body!r})"


class IncompleteResponseError(AssertionError):
    """
    The response has not been completely written (yet).
    """


class Exchange:
    """
    One request sent to a site, and what the site wrote back.

    @ivar transport: the in-memory transport.
    @ivar channel: the site's protocol for this connection.
    """

    def __init__(self, transport: StringTransport, channel: Any) -> None:
        self.transport = transport
        self.channel = channel

    def raw(self) -> bytes:
        """
        Everything the site wrote so far.
        """
        return self.transport.value()

    def response(self) -> Response:
        """
        The complete response.

        @raise IncompleteResponseError: it is not complete yet.
        """
        return parseResponse(self.raw())


def parseResponse(data: bytes) -> Response:
    """
    Parse one complete HTTP/1.1 response.

    @raise IncompleteResponseError: C{data} does not hold a complete response.
    """
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        raise IncompleteResponseError(f"no complete response head in {data!r}")
    lines = head.split(b"\r\n")
    code = int(lines[0].split(b" ", 2)[1])
    headers: Dict[bytes, List[bytes]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if b"content-length" in headers:
        length = int(headers[b"content-length"][0])
        if len(rest) < length:
            raise IncompleteResponseError(f"body shorter than {length} bytes: {rest!r}")
        return Response(code, headers, rest[:length])
    if headers.get(b"transfer-encoding") == [b"chunked"]:
        return Response(code, headers, _dechunk(rest))
    return Response(code, headers, rest)


def _dechunk(data: bytes) -> bytes:
    body: List[bytes] = []
    while True:
        sizeLine, separator, data = data.partition(b"\r\n")
        if not separator:
            raise IncompleteResponseError("chunked body cut short")
        size = int(sizeLine.split(b";")[0], 16)
        if size == 0:
            return b"".join(body)
        if len(data) < size + 2:
            raise IncompleteResponseError("chunked body cut short")
        body.append(data[:size])
        data = data[size + 2 :]


def makeSite(site: Site) -> Site:
    """
    Make C{site} use a fake clock (no timeouts on the global reactor).
    """
    site.reactor = MemoryReactorClock()
    return site


def sendRequest(
    site: Site,
    path: bytes,
    method: bytes = b"GET",
    headers: Iterable[Tuple[bytes, bytes]] = (),
    body: bytes = b"",
    host: bytes = b"example.com",
) -> Exchange:
    """
    Send one HTTP/1.1 request to C{site} over an in-memory transport.
    """
    if not isinstance(getattr(site, "reactor", None), MemoryReactorClock):
        makeSite(site)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 80),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
    )
    channel.makeConnection(transport)
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: " + host]
    lines.extend(name + b": " + value for name, value in headers)
    if body:
        lines.append(b"Content-Length: %d" % (len(body),))
    channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    return Exchange(transport, channel)
