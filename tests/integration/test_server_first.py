# -*- test-case-name: tests.integration.test_server_first -*-
"""
Protocols where the server speaks first (SMTP, FTP, SSH banners) behind the
balancer: the PROXY header must go out as soon as the backend connection is
made, not with the client's first bytes, and the backend must know the real
client from its very first line of code.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.endpoints import connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.integration._support import (
    LOOPBACK,
    clientEndpoint,
    reactor,
    startBalancerFromArguments,
    waitUntil,
)

pytestmark = pytest.mark.integration


class _Greeter(Protocol):
    """
    Greets each client, in C{connectionMade}, with the address its
    transport gives for it.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        peer: Any = self.transport.getPeer()
        self.transport.write(f"220 hello {peer.host} {peer.port}\r\n".encode())


class _Listener(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.local: Any

    def connectionMade(self) -> None:
        self.local = self.transport.getHost()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class ServerSpeaksFirstTests(TestCase):
    """
    A C{tlproxy:} server that writes a banner naming C{getPeer()} in
    C{connectionMade}, behind a balancer that sends PROXY.
    """

    timeout = 30

    async def assertGreetedByName(self, version: str) -> None:
        """
        A client that sends nothing gets the banner, naming its own socket,
        through a balancer sending PROXY C{version}.
        """
        backend = await serverFromString(
            reactor, f"tlproxy:trusted=127.0.0.1/32:tcp:0:interface={LOOPBACK}"
        ).listen(Factory.forProtocol(_Greeter))
        self.addCleanup(backend.stopListening)
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"tcp:host={LOOPBACK}:port={backend.getHost().port}",
            "--send-proxy",
            version,
        )
        client = _Listener()
        await connectProtocol(clientEndpoint(address, bindHost=LOOPBACK), client)
        self.addCleanup(client.transport.loseConnection)  # type: ignore[union-attr]
        await waitUntil(lambda: client.received.endswith(b"\r\n"), 5, "the banner")
        local = client.local
        self.assertEqual(
            client.received,
            f"220 hello {local.host} {local.port}\r\n".encode(),
        )

    async def test_v1(self) -> None:
        """
        With v1, the banner comes without the client saying anything, and
        names the client rather than the balancer.
        """
        await self.assertGreetedByName("v1")

    async def test_v2(self) -> None:
        """
        With v2, the banner comes without the client saying anything, and
        names the client rather than the balancer.
        """
        await self.assertGreetedByName("v2")
