"""
Bulk transfers through tlbalance over real sockets: every byte arrives, in
order, both ways, while the kernel's buffers fill and empty (the relay's
direct-send path takes partial sends and falls back to Twisted's queue).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.integration._support import LOOPBACK, startBalancerFromArguments

SIZE = 16 * 1024 * 1024


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Sends every byte back, and closes once the client has finished sending
    and everything is written back (a plain protocol would be closed at the
    client's end of stream, dropping what it had not sent yet).
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


def pushAndPull(host: str, port: int, payload: bytes, readDelay: float) -> bytes:
    """
    Send C{payload} from one thread while reading the echo in this one,
    pausing C{readDelay} seconds now and then so buffers fill up.
    """
    client = socket.create_connection((host, port), timeout=30)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)

    def send() -> None:
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    received = []
    reads = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        chunk = client.recv(65536)
        if not chunk:
            break
        received.append(chunk)
        reads += 1
        if readDelay and reads % 64 == 0:
            time.sleep(readDelay)
    sender.join(30)
    client.close()
    return b"".join(received)


class BulkTransferTests(TestCase):
    """
    Large transfers survive the relay intact.
    """

    timeout = 90

    async def assertEchoed(self, readDelay: float, *extra: str) -> None:
        """
        16 MiB sent through tlbalance to an echo server come back intact,
        and the backend's half-close ends the connection.
        """
        port = await serverFromString(reactor, f"tcp:0:interface={LOOPBACK}").listen(
            Factory.forProtocol(Echo)
        )
        self.addCleanup(port.stopListening)
        _, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"tcp:host={LOOPBACK}:port={port.getHost().port}",
            *extra,
        )
        payload = os.urandom(SIZE)
        echoed = await deferToThread(
            pushAndPull, address.host, address.port, payload, readDelay
        )
        self.assertEqual(len(echoed), SIZE)
        self.assertEqual(
            hashlib.sha256(echoed).hexdigest(), hashlib.sha256(payload).hexdigest()
        )

    async def test_fastReader(self) -> None:
        """
        A client reading as fast as it can gets every byte back in order.
        """
        await self.assertEchoed(0.0)

    async def test_slowReader(self) -> None:
        """
        A client that keeps stopping to read (so the balancer's writes are
        partial and queued, and the backend is paused) gets every byte back
        in order.
        """
        await self.assertEchoed(0.01)
