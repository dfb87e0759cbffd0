"""
Tests for L{tlsuite._memcache}: the memcached connection both memcached
stores use, and its connect policy.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.memcache import MemCacheProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tlsuite import _memcache
from tlsuite._memcache import MemcacheConnection


@implementer(IStreamClientEndpoint)
class _Endpoint:
    """
    Connects protocols to L{StringTransport}s, or refuses while C{down};
    remembers when each attempt was made.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.down = False
        self.attempts: List[float] = []
        self.protocols: List[Any] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.attempts.append(self.clock.seconds())
        if self.down:
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(StringTransport())
        self.protocols.append(protocol)
        return succeed(protocol)


class MemcacheConnectionTests(SynchronousTestCase):
    """
    L{MemcacheConnection} connects when started, reconnects with backoff,
    and closes when stopped.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = _Endpoint(self.clock)

    def test_connectsOnlyWhenStarted(self) -> None:
        """
        Building the connection connects nothing; starting it connects, and
        C{protocol} is the connected protocol.
        """
        connection = MemcacheConnection(self.endpoint, self.clock)
        self.assertEqual(self.endpoint.attempts, [])
        self.assertIsNone(connection.protocol)
        connection.startService()
        self.addCleanup(connection.stopService)
        self.assertEqual(self.endpoint.attempts, [0.0])
        self.assertIsInstance(connection.protocol, MemCacheProtocol)
        waiting = connection.whenConnected()
        # Never inside ClientService's bookkeeping: on the next turn.
        self.assertNoResult(waiting)
        self.clock.advance(0)
        self.assertIs(self.successResultOf(waiting), connection.protocol)

    def test_backoff(self) -> None:
        """
        A refused connection is tried again 0.3 s later, then less and less
        often, never more than 5 s apart; plus up to a second of jitter, so
        that many processes do not come back at once.
        """
        self.patch(_memcache, "_jitter", lambda: 0.0)
        self.endpoint.down = True
        connection = MemcacheConnection(self.endpoint, self.clock)
        connection.startService()
        self.addCleanup(connection.stopService)
        gaps = []
        for _ in range(12):
            [retry] = self.clock.getDelayedCalls()
            gap = retry.getTime() - self.clock.seconds()
            gaps.append(round(gap, 2))
            self.clock.advance(gap)
        self.assertEqual(
            gaps,
            [0.3, 0.45, 0.68, 1.01, 1.52, 2.28, 3.42, 5.0, 5.0, 5.0, 5.0, 5.0],
        )
        self.assertEqual(len(self.endpoint.attempts), 13)
        self.patch(_memcache, "_jitter", lambda: 0.999)
        self.assertAlmostEqual(_memcache.RETRY_POLICY(1), 1.299)

    def test_lostAndRemade(self) -> None:
        """
        A lost connection leaves C{protocol} C{None} until the next one is
        made.
        """
        connection = MemcacheConnection(self.endpoint, self.clock)
        connection.startService()
        self.addCleanup(connection.stopService)
        self.endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(connection.protocol)
        self.clock.advance(2)
        self.assertEqual(len(self.endpoint.protocols), 2)
        self.assertIsNotNone(connection.protocol)

    def test_replyTimeout(self) -> None:
        """
        A call unanswered for C{replyTimeout} seconds fails and drops the
        connection at once.
        """
        connection = MemcacheConnection(self.endpoint, self.clock, replyTimeout=0.5)
        connection.startService()
        self.addCleanup(connection.stopService)
        protocol = connection.protocol
        assert protocol is not None
        d = protocol.get(b"key")
        self.clock.advance(0.6)
        self.failureResultOf(d)
        self.assertTrue(protocol.transport.disconnecting)  # type: ignore[attr-defined]

    def test_stop(self) -> None:
        """
        Stopping closes the connection; the L{Deferred} fires once it is
        closed, and nothing is scheduled any more. Stopping a connection
        that is not running does nothing.
        """
        connection = MemcacheConnection(self.endpoint, self.clock)
        self.successResultOf(connection.stopService())
        connection.startService()
        stopped = connection.stopService()
        self.assertNoResult(stopped)
        self.endpoint.protocols[0].connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(connection.running)
