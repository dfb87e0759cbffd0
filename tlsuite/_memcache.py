# -*- test-case-name: tests.unit.test_memcacheconnection -*-
"""
One connection to memcached, kept up while its service runs: shared by the
memcached session store (L{tlsession.stores.memcache}) and the memcached
render-cache store (L{tlcache.memcachestore}).

The connect policy is the same for both: nothing happens until the service
starts; then a L{ClientService} connects, and after a loss or a failed
attempt tries again, 0.3 s later at first, backing off to 5 s (plus up to a
second of jitter, so that processes do not all come back at once); a call
that waits longer than
C{replyTimeout} for its answer drops the connection (its calls fail) and a
new one is made. While there is no connection, L{MemcacheConnection.protocol}
is C{None}, and the stores fail their calls at once instead of queueing them.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Optional

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.memcache import MemCacheProtocol
from twisted.python.failure import Failure

__all__ = ["RETRY_POLICY", "MemcacheConnection"]

_log = Logger(namespace="tlsuite.memcache")


def _jitter() -> float:
    return random.random()


#: Seconds before the n-th attempt in a row to connect (n from 1).
RETRY_POLICY = backoffPolicy(initialDelay=0.2, maxDelay=5.0, jitter=lambda: _jitter())


class _TrackedProtocol(MemCacheProtocol):
    """
    A memcached client protocol that tells its L{MemcacheConnection} when it
    is ready and when it is gone.
    """

    def __init__(self, owner: MemcacheConnection, timeOut: float) -> None:
        super().__init__(timeOut)
        self.owner = owner

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """
        Schedule the reply timeout on the connection's clock.
        """
        return self.owner.clock.callLater(period, func)

    def connectionMade(self) -> None:
        super().connectionMade()
        self.owner._connected(self)

    def timeoutConnection(self) -> None:
        """
        Fail the waiting calls and drop the connection without waiting to
        flush what a hung server is not reading.
        """
        super().timeoutConnection()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        # The calls still waiting fail first, then the owner sees no
        # connection and its users fail new calls at once.
        super().connectionLost(reason)
        self.setTimeout(None)
        self.owner._lost(self, reason)


class _ProtocolFactory(Factory):
    def __init__(self, owner: MemcacheConnection) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> _TrackedProtocol:
        return _TrackedProtocol(self.owner, self.owner.replyTimeout)


class MemcacheConnection(Service):
    """
    One connection to memcached, made when the service starts, made again
    after a loss, and closed when it stops.

    @ivar protocol: the connected L{MemCacheProtocol}, or C{None} while there
        is no connection.
    @ivar replyTimeout: seconds without an answer after which the connection
        is dropped and its calls fail.
    @ivar clock: schedules reconnections and reply timeouts.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        replyTimeout: float = 2.0,
        retryPolicy: Optional[Callable[[int], float]] = None,
    ) -> None:
        """
        Build the connection; nothing connects until L{startService}.

        @param endpoint: where memcached listens.
        @param clock: schedules reconnections and reply timeouts.
        @param replyTimeout: seconds an answer may take.
        @param retryPolicy: seconds to wait before the n-th reconnection
            attempt (L{RETRY_POLICY} by default).
        """
        self.clock = clock
        self.replyTimeout = replyTimeout
        self.protocol: Optional[MemCacheProtocol] = None
        self._service = ClientService(
            endpoint,
            _ProtocolFactory(self),
            retryPolicy=retryPolicy or RETRY_POLICY,
            clock=clock,
        )

    def startService(self) -> None:
        """
        Start connecting.
        """
        super().startService()
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        """
        Close the connection and stop reconnecting.

        @return: L{Deferred} firing when the connection is closed.
        """
        if not self.running:
            return succeed(None)
        super().stopService()
        stopped: Deferred[None] = self._service.stopService()
        return stopped

    def whenConnected(self) -> Deferred[MemCacheProtocol]:
        """
        The connected protocol, once there is one: on the turn of the clock
        after it connects (or after this call, if it is connected), so that
        code waiting on it never runs inside L{ClientService}'s bookkeeping
        (which cannot be stopped from there).
        """
        result: Deferred[MemCacheProtocol] = Deferred()

        def later(outcome: object) -> None:
            self.clock.callLater(0, result.callback, outcome)

        self._service.whenConnected().addBoth(later)
        return result

    def _connected(self, protocol: MemCacheProtocol) -> None:
        if self.protocol is None:
            _log.info("Connected to memcached")
        self.protocol = protocol

    def _lost(self, protocol: MemCacheProtocol, reason: Failure) -> None:
        if self.protocol is protocol:
            self.protocol = None
            if not self.running:
                return
            _log.warn(
                "Lost the memcached connection ({reason}); reconnecting",
                reason=reason.getErrorMessage(),
            )
