"""
The counters the relay keeps for the stats (L{tlbalance.stats}): each
listener's open and total connections, each backend's peak, retries and
redispatches.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_relay import RelayTestMixin


class ListenerCounterTests(RelayTestMixin, SynchronousTestCase):
    """
    A listener's L{FrontendFactory} counts its client connections.
    """

    def test_openAndTotal(self) -> None:
        """
        Two clients are two open and two in total; when one leaves, one is
        open and the total stays.
        """
        self.setUpBalancer()
        _, first = self.connectClient()
        self.connectClient()
        self.assertEqual((self.factory.current, self.factory.total), (2, 2))
        first.loseConnection()
        self.assertEqual((self.factory.current, self.factory.total), (1, 2))

    def test_refused(self) -> None:
        """
        A client closed at once for want of a backend is counted, and is
        not left open.
        """
        self.setUpBalancer()
        for backend in self.backends:
            backend.markDown("test")
        self.connectClient()
        self.assertEqual((self.factory.current, self.factory.total), (0, 1))


class BackendCounterTests(RelayTestMixin, SynchronousTestCase):
    """
    The backends count their peak connections, and the failed connects
    tried again, here or elsewhere.
    """

    def test_peak(self) -> None:
        """
        The peak is the most connections a backend had at once.
        """
        self.setUpBalancer(names=("a",))
        clients = [self.connectClient()[1] for _ in range(3)]
        for index in range(3):
            self.endpoints["a"].succeed(index)
        clients[0].loseConnection()
        self.assertEqual((self.backends[0].active, self.backends[0].peak), (2, 3))

    def test_redispatch(self) -> None:
        """
        A refused connect sent to the other backend is a retry and a
        redispatch of the refusing backend.
        """
        self.setUpBalancer()
        self.connectClient()
        self.endpoints["a"].fail()
        a, b = self.backends
        self.assertEqual((a.retries, a.redispatches), (1, 1))
        self.assertEqual((b.retries, b.redispatches), (0, 0))

    def test_retrySame(self) -> None:
        """
        With nothing else up, trying the same backend again is a retry, not
        a redispatch; the attempt that gives up is neither.
        """
        self.setUpBalancer(names=("a",), retries=1)
        self.connectClient()
        self.endpoints["a"].fail()
        self.clock.advance(1.0)
        self.endpoints["a"].fail()
        a = self.backends[0]
        self.assertEqual((a.retries, a.redispatches, a.connectFailures), (1, 0, 2))
        self.pool.stop()
