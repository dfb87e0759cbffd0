"""
Tests for L{tlsuite._listen}: the listen service both twistd plugins use.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from tlsuite._listen import ListenService
from tlsuite._startup import StartupError


class _Refusing:
    def listen(self, factory: object) -> Deferred[IListeningPort]:
        return fail(CannotListenError("127.0.0.1", 7100, OSError(98, "in use")))


class ListenServiceTests(SynchronousTestCase):
    """
    L{ListenService}.
    """

    def test_listens(self) -> None:
        """
        Once bound, C{port} is the listening port, C{whenListening} fires
        with it (before and after), and C{listened} is told.
        """
        reactor = MemoryReactor()
        told: List[Any] = []

        class Watching(ListenService):
            def listened(self, port: IListeningPort) -> None:
                told.append(port)

        service = Watching(
            "tcp:7100",
            TCP4ServerEndpoint(reactor, 7100),
            Factory.forProtocol(Protocol),
        )
        early = service.whenListening()
        service.privilegedStartService()
        port = self.successResultOf(early)
        self.assertIs(service.port, port)
        self.assertEqual(told, [port])
        self.assertIs(self.successResultOf(service.whenListening()), port)
        self.assertEqual(reactor.tcpServers[0][0], 7100)

    def test_inUseIsOneLine(self) -> None:
        """
        An address in use stops the start with a L{StartupError} of one
        line naming who listens and the endpoint.
        """
        service = ListenService(
            "tcp:7100", _Refusing(), Factory.forProtocol(Protocol), who="the daemon "
        )
        error = self.assertRaises(StartupError, service.privilegedStartService)
        message = str(error)
        self.assertTrue(message.startswith("the daemon "), message)
        self.assertIn("tcp:7100", message)
        self.assertNotIn("\n", message)

    def test_stopWithoutStart(self) -> None:
        """
        Stopping a service that was never started (its parent's start
        failed before reaching it) does nothing and fires at once.
        """
        service = ListenService("tcp:7100", _Refusing(), Factory.forProtocol(Protocol))
        self.assertIsNone(self.successResultOf(service.stopService()))
        self.assertFalse(service.running)
