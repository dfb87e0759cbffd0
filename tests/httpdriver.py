"""
Drive a real twisted.web site over in-memory connections: real HTTP/1.1
parsing, real requests, gzip and HEAD handling, with a L{Clock} for time
and no sockets.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure


class Response:
    """
    What came back on one connection, parsed when asked.
    """

    def __init__(self, transport: StringTransport, protocol: object) -> None:
        self.transport = transport
        self.protocol = protocol

    def _parse(self) -> Optional[Tuple[int, Dict[bytes, List[bytes]], bytes]]:
        data = self.transport.value()
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            return None
        lines = head.split(b"\r\n")
        code = int(lines[0].split(b" ")[1])
        headers: Dict[bytes, List[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        if b"chunked" in headers.get(b"transfer-encoding", []):
            body = b""
            while True:
                size, sep, rest = rest.partition(b"\r\n")
                if not sep:
                    return None
                length = int(size, 16)
                if length == 0:
                    return code, headers, body
                if len(rest) < length + 2:
                    return None
                body += rest[:length]
                rest = rest[length + 2 :]
        return code, headers, rest

    @property
    def complete(self) -> bool:
        """
        Has a whole response arrived (its length known, or the connection
        closed)?
        """
        parsed = self._parse()
        if parsed is None:
            return False
        code, headers, body = parsed
        if b"transfer-encoding" in headers:
            return True
        length = headers.get(b"content-length")
        if length is not None:
            return len(body) >= int(length[0]) or self.head
        return code in (204, 304) or self.transport.disconnecting

    head = False

    @property
    def code(self) -> int:
        parsed = self._parse()
        assert parsed is not None, "no response yet"
        return parsed[0]

    @property
    def body(self) -> bytes:
        parsed = self._parse()
        assert parsed is not None, "no response yet"
        return parsed[2]

    def header(self, name: bytes) -> Optional[bytes]:
        parsed = self._parse()
        assert parsed is not None, "no response yet"
        values = parsed[1].get(name.lower())
        return values[0] if values else None

    def headers(self, name: bytes) -> List[bytes]:
        parsed = self._parse()
        assert parsed is not None, "no response yet"
        return parsed[1].get(name.lower(), [])

    def disconnect(self) -> None:
        """
        The client goes away.
        """
        self.protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]


class SiteDriver:
    """
    Send requests to C{site}, one connection each.
    """

    def __init__(self, site: object) -> None:
        self.site = site
        self._port = 40000
        self.responses: List[Response] = []

    def request(
        self,
        path: bytes = b"/",
        method: bytes = b"GET",
        headers: Optional[Dict[bytes, bytes]] = None,
        host: Optional[bytes] = b"example.com",
        headerLines: Sequence[Tuple[bytes, bytes]] = (),
    ) -> Response:
        """
        Send one request; the L{Response} fills in as the site answers.
        C{headerLines} are sent after C{headers}, as given: a name may
        repeat.
        """
        self._port += 1
        peer = IPv4Address("TCP", "127.0.0.1", self._port)
        protocol = self.site.buildProtocol(peer)  # type: ignore[attr-defined]
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080), peerAddress=peer
        )
        protocol.makeConnection(transport)
        lines = [method + b" " + path + b" HTTP/1.1"]
        if host is not None:
            lines.append(b"Host: " + host)
        for name, value in (headers or {}).items():
            lines.append(name + b": " + value)
        for name, value in headerLines:
            lines.append(name + b": " + value)
        protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n")
        response = Response(transport, protocol)
        response.head = method == b"HEAD"
        self.responses.append(response)
        return response

    def get(self, path: bytes = b"/", **kwargs: object) -> Response:
        """
        A request that must be answered at once.
        """
        response = self.request(path, **kwargs)  # type: ignore[arg-type]
        assert response.complete, (
            f"no complete response: {response.transport.value()!r}"
        )
        return response

    def close(self) -> None:
        """
        Close every connection (so that the site's timeouts are cancelled).
        """
        for response in self.responses:
            response.disconnect()
        self.responses = []
