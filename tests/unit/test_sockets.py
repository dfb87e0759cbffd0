"""
Tests for L{tlbalance._sockets}: sending at once when nothing is queued.
"""

from __future__ import annotations

from typing import Any, Union

from twisted.internet import abstract, main, tcp, unix
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tlbalance._sockets import _sendNow, setNoDelay, writerFor


class FakeSocketTransport:
    """
    The parts of L{abstract.FileDescriptor} that L{_sendNow} reads, with a
    socket that accepts C{capacity} bytes per send.
    """

    def __init__(self, capacity: Union[int, Exception] = 1 << 20) -> None:
        self.capacity = capacity
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0
        self.disconnecting = False
        self.connected = True
        self._writeDisconnected = False
        self.sent: list[bytes] = []
        self.queued: list[bytes] = []

    def writeSomeData(self, data: bytes) -> Union[int, Exception]:
        if isinstance(self.capacity, Exception):
            return self.capacity
        self.sent.append(data[: self.capacity])
        return min(len(data), self.capacity)

    def write(self, data: bytes) -> None:
        self.queued.append(data)
        self._tempDataLen += len(data)


class SendNowTests(SynchronousTestCase):
    """
    L{_sendNow} sends at once only when that keeps the bytes in order.
    """

    def test_nothingQueued(self) -> None:
        """
        With nothing queued the bytes go straight to the socket.
        """
        transport = FakeSocketTransport()
        _sendNow(transport, b"hello")
        self.assertEqual((transport.sent, transport.queued), ([b"hello"], []))

    def test_partialSend(self) -> None:
        """
        What the socket does not take is queued for the reactor.
        """
        transport = FakeSocketTransport(capacity=3)
        _sendNow(transport, b"hello")
        self.assertEqual((transport.sent, transport.queued), ([b"hel"], [b"lo"]))

    def test_queuedKeepsOrder(self) -> None:
        """
        When bytes are already queued, new ones queue behind them.
        """
        transport = FakeSocketTransport(capacity=3)
        _sendNow(transport, b"hello")
        _sendNow(transport, b"world")
        self.assertEqual(transport.queued, [b"lo", b"world"])
        self.assertEqual(transport.sent, [b"hel"])

    def test_unsentBuffer(self) -> None:
        """
        Bytes left in the reactor's own buffer also make new ones queue.
        """
        transport = FakeSocketTransport()
        transport.dataBuffer = b"abcdef"
        transport.offset = 2
        _sendNow(transport, b"x")
        self.assertEqual((transport.sent, transport.queued), ([], [b"x"]))

    def test_closing(self) -> None:
        """
        A closing or half-closed transport is left to Twisted.
        """
        for attribute, value in [
            ("disconnecting", True),
            ("connected", False),
            ("_writeDisconnected", True),
        ]:
            transport = FakeSocketTransport()
            setattr(transport, attribute, value)
            _sendNow(transport, b"x")
            self.assertEqual((transport.sent, transport.queued), ([], [b"x"]))

    def test_error(self) -> None:
        """
        A send error queues the bytes, so the reactor's own write meets the
        error and closes the connection the usual way.
        """
        transport = FakeSocketTransport(capacity=main.CONNECTION_LOST)
        _sendNow(transport, b"x")
        self.assertEqual(transport.queued, [b"x"])


class TwistedInternalsTests(SynchronousTestCase):
    """
    The Twisted internals L{_sendNow} relies on are still there.
    """

    def test_fileDescriptorState(self) -> None:
        """
        A file descriptor has the buffer state L{_sendNow} reads.
        """
        descriptor = abstract.FileDescriptor()
        state: Any = descriptor
        self.assertEqual(state.dataBuffer, b"")
        self.assertEqual(state.offset, 0)
        self.assertEqual(state._tempDataLen, 0)
        self.assertFalse(state._writeDisconnected)

    def test_writeSomeData(self) -> None:
        """
        TCP and unix connections send through C{writeSomeData}.
        """
        for cls in (tcp.Server, tcp.Client, unix.Server, unix.Client):
            self.assertTrue(callable(getattr(cls, "writeSomeData", None)), cls)


class WriterForTests(SynchronousTestCase):
    """
    L{writerFor} picks the direct path only for plain sockets.
    """

    def test_otherTransports(self) -> None:
        """
        Anything but a plain TCP or unix socket gets its own C{write}.
        """
        transport = StringTransport()
        self.assertEqual(writerFor(transport), transport.write)


class RecordingNoDelay(StringTransport):
    """
    Records C{setTcpNoDelay} calls.
    """

    noDelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled


class SetNoDelayTests(SynchronousTestCase):
    """
    L{setNoDelay} turns Nagle off on TCP connections only.
    """

    def test_tcp(self) -> None:
        """
        A TCP transport gets TCP_NODELAY.
        """
        transport = RecordingNoDelay(hostAddress=IPv4Address("TCP", "127.0.0.1", 80))
        setNoDelay(transport)
        self.assertTrue(transport.noDelay)

    def test_unix(self) -> None:
        """
        A unix socket, which has no Nagle, is left alone.
        """
        transport = RecordingNoDelay(hostAddress=UNIXAddress(b"/s"))
        setNoDelay(transport)
        self.assertFalse(transport.noDelay)
