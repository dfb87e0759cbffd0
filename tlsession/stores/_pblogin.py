# -*- test-case-name: tests.unit.test_pbstore -*-
"""
How the session daemon's client (L{tlsession.stores.pb.PBSessionStore})
connects: an endpoint that connects and logs in (L{LoginEndpoint}), so
that L{ClientService} counts only a logged-in connection as connected; the
connection it then manages (L{DaemonConnection}); and the mind the daemon
pushes invalidations to. They work for one store, and report to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from tlsession._wire import SECRET_USERNAME, unpackChanges, wireSecurity
from tlsession.interfaces import StoreUnavailableError
from tlsession.stores._pbbatch import RequestBatcher

if TYPE_CHECKING:
    from tlsession.stores.pb import PBSessionStore

__all__ = [
    "LOST",
    "ConnectionFactory",
    "DaemonConnection",
    "LoginEndpoint",
    "isLoginRefusal",
]

log = Logger(namespace="tlsession.stores.pb")

#: Why calls fail when the connection is gone.
LOST = "lost the connection to the session daemon"


class _Mind(pb.Referenceable):
    """
    What the daemon calls back: one per connection.
    """

    def __init__(self, store: PBSessionStore) -> None:
        self.store = store
        self.connection: Optional[DaemonConnection] = None

    def remote_invalidate(self, changes: object) -> None:
        """
        Sessions changed: drop what the near cache holds of older versions.
        """
        if self.connection is None or self.store._connection is not self.connection:
            return
        try:
            unpacked = unpackChanges(changes)
        except ValueError:
            # Nothing can be trusted about this connection's cache now.
            log.error("tlsession: malformed invalidations; reconnecting")
            self.connection.abort()
            return
        self.store._invalidate(unpacked)


@implementer(IProtocol)
class DaemonConnection:
    """
    The protocol L{ClientService} manages: one logged-in connection to the
    daemon (the transport belongs to the PB broker underneath).

    @ivar avatar: the daemon's L{pb.RemoteReference} for our calls.
    @ivar limits: the daemon's limits, as sent at login.
    @ivar batcher: sends this connection's requests in batches.
    """

    transport: Any = None

    def __init__(self, store: PBSessionStore) -> None:
        self.store = store
        self.broker: Any = None
        self.avatar: Any = None
        self.limits: Dict[str, Any] = {}
        self.batcher = RequestBatcher(self._sendBatch, self.abort)

    def _sendBatch(self, requests: List[bytes]) -> Deferred[Any]:
        """
        Call the daemon's C{batch} with C{requests}.
        """
        try:
            sent = self.avatar.callRemote("batch", requests)
        except pb.DeadReferenceError:
            return fail(StoreUnavailableError(LOST))
        return self.store._guard(sent, self, "a batch of requests")

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        self.store._connected(self)

    def dataReceived(self, data: bytes) -> None:
        """
        Never called: the broker reads the connection.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.store._disconnected(self, reason)

    def abort(self) -> None:
        """
        Drop the connection now (the daemon stopped answering).
        """
        if self.transport is not None:
            self.transport.abortConnection()


@implementer(IProtocolFactory)
class ConnectionFactory:
    """
    Hands L{ClientService} the L{DaemonConnection} that L{LoginEndpoint} has
    just logged in.

    @ivar prepared: the connection to hand out next.
    """

    def __init__(self) -> None:
        self.prepared: Optional[DaemonConnection] = None

    def doStart(self) -> None:
        """
        Part of the factory interface; nothing to do.
        """

    def doStop(self) -> None:
        """
        Part of the factory interface; nothing to do.
        """

    def buildProtocol(self, addr: Any) -> Any:
        connection, self.prepared = self.prepared, None
        return connection


class _ClientBroker(pb.Broker):
    """
    A client broker that tells its factory when the connection is lost
    (endpoints do not), so a login waiting on it fails at once.
    """

    factory: Any

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.clientConnectionLost(None, reason)


class _ClientFactory(pb.PBClientFactory):
    """
    One per connection attempt, speaking only basic types.
    """

    protocol = _ClientBroker
    noisy = False

    def __init__(self) -> None:
        super().__init__(unsafeTracebacks=False, security=wireSecurity())


@implementer(IStreamClientEndpoint)
class LoginEndpoint:
    """
    Connects to the daemon and logs in, all within C{loginTimeout}; only a
    logged-in connection counts as connected for L{ClientService}, so a
    refused secret backs off like a refused connection.
    """

    def __init__(self, store: PBSessionStore, endpoint: IStreamClientEndpoint):
        self.store = store
        self.endpoint = endpoint

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        store = self.store
        clientFactory = _ClientFactory()
        mind = _Mind(store)
        brokers: List[Any] = []

        def loggingIn(broker: Any) -> Deferred[Any]:
            brokers.append(broker)
            credentials = UsernamePassword(SECRET_USERNAME, store._secret)
            return clientFactory.login(credentials, client=mind)

        def askLimits(avatar: Any) -> Deferred[Any]:
            return avatar.callRemote("limits").addCallback(lambda x: (avatar, x))

        def ready(result: tuple[Any, Any]) -> Any:
            avatar, limits = result
            broker = brokers[0]
            if broker.disconnected:
                raise ConnectionLost("the session daemon closed the connection")
            inner = DaemonConnection(store)
            inner.broker = broker
            inner.avatar = avatar
            inner.limits = limits if isinstance(limits, dict) else {}
            mind.connection = inner
            # ClientService builds the protocol it manages through our
            # factory (wrapped in its own); ours hands out this one.
            store._connectionFactory.prepared = inner
            connection = protocolFactory.buildProtocol(broker.transport.getPeer())
            connection.makeConnection(broker.transport)
            broker.notifyOnDisconnect(
                lambda: connection.connectionLost(
                    Failure(ConnectionLost("the session daemon connection closed"))
                )
            )
            return connection

        def failed(reason: Failure) -> Failure:
            for broker in brokers:
                if not broker.disconnected:
                    broker.transport.abortConnection()
            store._connectFailed(reason)
            if isLoginRefusal(reason):
                return Failure(
                    StoreUnavailableError(
                        f"the session daemon at {store.endpointDescription} "
                        "refused the secret (do the app and the daemon read the "
                        "same secret file?)"
                    )
                )
            return reason

        attempt: Deferred[Any] = self.endpoint.connect(clientFactory)
        attempt.addCallback(loggingIn)
        attempt.addCallback(askLimits)
        attempt.addCallback(ready)
        attempt.addErrback(failed)
        attempt.addTimeout(store.loginTimeout, store._reactor)
        return attempt


def isLoginRefusal(reason: Failure) -> bool:
    """
    Whether a failed connection attempt was the daemon refusing the secret.
    """
    return bool(
        reason.check("twisted.cred.error.UnauthorizedLogin")
        or reason.check(b"twisted.cred.error.UnauthorizedLogin")
    )
