# -*- test-case-name: tests.unit.test_daemon -*-
"""
The session daemon's side of its connections: L{SessionServerFactory}
serves Perspective Broker to a bounded number of clients, gives each a few
seconds to log in, and caps the connections still logging in, overall and
per client address, so that idle connections cannot keep an app out.

L{tlsession.daemon} builds the daemon around it and re-exports its public
names.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional

from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb

from tlsession._wire import wireSecurity
from tlsuite._loglimit import LogLimiter

__all__ = [
    "DEFAULT_LOGIN_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS",
    "LOGIN_GRACE",
    "MAX_BYTES_BEFORE_LOGIN",
    "TURNED_AWAY_COUNTERS",
    "SessionServerFactory",
    "defaultMaxUnauthenticated",
]

# The daemon's log lines keep its namespace.
log = Logger(namespace="tlsession.daemon")

#: Bytes a connection may send before it has logged in (a login is a few
#: hundred); more is a peer without the secret trying its luck.
MAX_BYTES_BEFORE_LOGIN = 16 * 1024

#: Seconds a new connection has to log in: a login takes a few round trips.
DEFAULT_LOGIN_TIMEOUT = 5.0

#: Connections served at once, logged in or not.
DEFAULT_MAX_CONNECTIONS = 1000

#: Connections from one client address (an IPv6 /64) that may be waiting to
#: log in at once, on TCP and TLS listeners.
DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS = 16

#: Seconds a connection waiting to log in is safe from being closed to make
#: room for a newer one from its own address: meanwhile newer ones from that
#: address are refused, which costs the daemon far less than letting them
#: in (a client that reconnects as fast as it can gets nowhere cheaply).
LOGIN_GRACE = 0.5

#: Seconds between two log lines about connections turned away for the same
#: reason; the lines in between are counted in the next one.
TURNED_AWAY_LOG_INTERVAL = 10.0


def defaultMaxUnauthenticated(maxConnections: int) -> int:
    """
    Connections that may be waiting to log in at once, by default: a tenth
    of C{maxConnections}, at least one.
    """
    return max(1, maxConnections // 10)


class _ServerBroker(pb.Broker):
    """
    A broker that drops peers which send much, or wait long, without
    logging in.

    @ivar addressKey: the client address its factory counts it under, or
        C{None} (unix sockets).
    @ivar peer: the client, for log lines.
    @ivar acceptedAt: when the connection was accepted.
    """

    isLoggedIn = False
    factory: Any
    addressKey: Optional[str] = None
    peer = "a peer"
    acceptedAt = 0.0
    _received = 0
    _loginTimer: Optional[IDelayedCall] = None
    _closedWaiters: Optional[list[Deferred[None]]] = None

    def whenClosed(self) -> Deferred[None]:
        """
        @return: a L{Deferred} firing once the connection is closed.
        """
        if self.disconnected:
            return succeed(None)
        if self._closedWaiters is None:
            self._closedWaiters = []
        waiting: Deferred[None] = Deferred()
        self._closedWaiters.append(waiting)
        return waiting

    def loggedIn(self) -> None:
        """
        The peer logged in: it is trusted from now on.
        """
        self.isLoggedIn = True
        self.cancelLoginTimer()
        self.factory.loggedIn(self)

    def cancelLoginTimer(self) -> None:
        """
        Stop the login deadline.
        """
        if self._loginTimer is not None and self._loginTimer.active():
            self._loginTimer.cancel()
        self._loginTimer = None

    def dataReceived(self, data: bytes) -> None:
        if not self.isLoggedIn:
            if not self._received and data:
                self.factory.heard(self)
            self._received += len(data)
            if self._received > MAX_BYTES_BEFORE_LOGIN:
                self.factory.sentTooMuch(self)
                return
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.cancelLoginTimer()
        self.factory.connectionEnded(self)
        super().connectionLost(reason)
        waiters, self._closedWaiters = self._closedWaiters or [], None
        for waiting in waiters:
            waiting.callback(None)


def _addressKey(address: object) -> Optional[str]:
    """
    What a client's connections are counted under: its IPv4 address, or the
    /64 network of its IPv6 address (a client has a whole /64 to pick
    from); C{None} for anything else, such as a unix socket.
    """
    if isinstance(address, IPv4Address):
        return address.host
    if isinstance(address, IPv6Address):
        host = address.host.split("%", 1)[0]
        try:
            ip = ipaddress.IPv6Address(host)
        except ValueError:
            return address.host
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return None


def _describe(address: object) -> str:
    """
    A client address for a log line.
    """
    if isinstance(address, UNIXAddress):
        return "a unix socket client"
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else str(address)


def _connections(count: int) -> str:
    return f"{count} connection" if count == 1 else f"{count} connections"


class _Waiting:
    """
    The connections of one client address that have not logged in, oldest
    first: those that have not sent a byte, and those that have (a client
    starts its login as soon as it connects, so it soon moves over).
    """

    def __init__(self) -> None:
        self.silent: OrderedDict[_ServerBroker, None] = OrderedDict()
        self.started: OrderedDict[_ServerBroker, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.silent) + len(self.started)

    def add(self, broker: _ServerBroker) -> None:
        self.silent[broker] = None

    def heard(self, broker: _ServerBroker) -> None:
        if broker in self.silent:
            del self.silent[broker]
            self.started[broker] = None

    def discard(self, broker: _ServerBroker) -> bool:
        """
        Forget C{broker}; whether it was here.
        """
        if broker in self.silent:
            del self.silent[broker]
            return True
        if broker in self.started:
            del self.started[broker]
            return True
        return False

    def victim(self) -> _ServerBroker:
        """
        The connection to close to make room: the oldest silent one, else
        the oldest.
        """
        for broker in self.silent:
            return broker
        return next(iter(self.started))


TURNED_AWAY_COUNTERS = (
    "connectionsRefused",
    "connectionsDropped",
    "loginTimeouts",
    "loginOverflows",
)

# What connections are turned away for, each with a log line of its own.
_REASONS = ("allLoggedIn", "addressWaiting") + TURNED_AWAY_COUNTERS[1:]


class SessionServerFactory(pb.PBServerFactory):
    """
    The daemon's PB factory: the portal's root, a bounded number of
    connections, and a deadline to log in.

    Connections count as I{waiting} from their accept until they log in.
    At most C{maxUnauthenticated} may be waiting at once, and at most
    C{maxUnauthenticatedPerAddress} from one client address on TCP and TLS
    listeners. A connection past either limit, or past C{maxConnections},
    is let in and a waiting one closed to make room for it: of its own
    address for the per-address limit, else of the address with the most
    waiting; one that has sent nothing if there is one, else the oldest.
    Past the per-address limit, while that connection has waited less
    than L{LOGIN_GRACE}, the newcomer is refused instead. Logged-in
    connections are never closed to make room: past C{maxConnections} with
    none waiting, a new connection is refused. The slots waiting
    connections cannot take are thus kept for logged-in ones, and idle
    connections cannot keep an app from logging in.

    @ivar connections: the brokers of the open connections (including
        those being closed).
    @ivar counters: connections turned away: C{connectionsRefused} (at
        once: every slot held by logged-in clients, or the client's address
        has its fill of fresh waiting connections), C{connectionsDropped}
        (closed to make room), C{loginTimeouts}, C{loginOverflows} (too many
        bytes before logging in).
    """

    protocol = _ServerBroker
    noisy = False

    def __init__(
        self,
        portal: Portal,
        clock: IReactorTime,
        loginTimeout: float = DEFAULT_LOGIN_TIMEOUT,
        maxConnections: int = DEFAULT_MAX_CONNECTIONS,
        maxUnauthenticated: Optional[int] = None,
        maxUnauthenticatedPerAddress: int = DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
    ) -> None:
        """
        @param loginTimeout: seconds a connection has to log in.
        @param maxConnections: connections served at once.
        @param maxUnauthenticated: connections that may be waiting to log
            in at once (L{defaultMaxUnauthenticated} if C{None}).
        @param maxUnauthenticatedPerAddress: connections from one client
            address (an IPv6 /64) that may be waiting to log in at once.
        """
        super().__init__(portal, unsafeTracebacks=False, security=wireSecurity())
        self.clock = clock
        self.loginTimeout = loginTimeout
        self.maxConnections = maxConnections
        if maxUnauthenticated is None:
            maxUnauthenticated = defaultMaxUnauthenticated(maxConnections)
        self.maxUnauthenticated = maxUnauthenticated
        self.maxUnauthenticatedPerAddress = maxUnauthenticatedPerAddress
        self.connections: set[Any] = set()
        self._closing: set[Any] = set()
        self._waiting: Dict[Optional[str], _Waiting] = {}
        self._waitingCount = 0
        self.counters = dict.fromkeys(TURNED_AWAY_COUNTERS, 0)
        self._logLimits = {
            name: LogLimiter(clock, TURNED_AWAY_LOG_INTERVAL) for name in _REASONS
        }

    def buildProtocol(self, addr: Any) -> Any:
        now = self.clock.seconds()
        key = _addressKey(addr)
        group = self._waiting.get(key)
        if (
            key is not None
            and group is not None
            and len(group) >= self.maxUnauthenticatedPerAddress
        ):
            victim = group.victim()
            if now - victim.acceptedAt < LOGIN_GRACE:
                self.counters["connectionsRefused"] += 1
                self._turnedAway(
                    "addressWaiting",
                    "tlsession: refused {connections} (the latest from {peer}): "
                    "{limit} connections from that address are waiting to log in",
                    peer=_describe(addr),
                    limit=self.maxUnauthenticatedPerAddress,
                )
                return None
            self._makeRoom(victim)
        if self._waitingCount >= self.maxUnauthenticated:
            self._makeRoom(self._largestGroup().victim())
        if len(self.connections) - len(self._closing) >= self.maxConnections:
            if not self._waitingCount:
                self.counters["connectionsRefused"] += 1
                self._turnedAway(
                    "allLoggedIn",
                    "tlsession: refused {connections} (the latest from {peer}): "
                    "every one of its {limit} connections is logged in",
                    peer=_describe(addr),
                    limit=self.maxConnections,
                )
                return None
            self._makeRoom(self._largestGroup().victim())
        broker = super().buildProtocol(addr)
        broker.addressKey = key
        broker.peer = _describe(addr)
        broker.acceptedAt = now
        self.connections.add(broker)
        group = self._waiting.get(key)
        if group is None:
            group = self._waiting[key] = _Waiting()
        group.add(broker)
        self._waitingCount += 1
        broker._loginTimer = self.clock.callLater(
            self.loginTimeout, self._loginTimedOut, broker
        )
        return broker

    def _largestGroup(self) -> _Waiting:
        return max(self._waiting.values(), key=len)

    def _makeRoom(self, victim: _ServerBroker) -> None:
        self._close(victim, "connectionsDropped")
        self._turnedAway(
            "connectionsDropped",
            "tlsession: closed {connections} that had not logged in, to make "
            "room for newer ones (the latest from {peer}); at most {limit} may "
            "wait to log in, {perAddress} per address",
            peer=victim.peer,
            limit=self.maxUnauthenticated,
            perAddress=self.maxUnauthenticatedPerAddress,
        )

    def _forget(self, broker: Any) -> None:
        """
        C{broker} is no longer waiting to log in.
        """
        group = self._waiting.get(broker.addressKey)
        if group is not None and group.discard(broker):
            self._waitingCount -= 1
            if not group:
                del self._waiting[broker.addressKey]

    def _close(self, broker: Any, reason: str) -> None:
        """
        Abort a connection that has not logged in, and count it.
        """
        broker.cancelLoginTimer()
        self._forget(broker)
        self._closing.add(broker)
        self.counters[reason] += 1
        transport = broker.transport
        if transport is not None:
            transport.abortConnection()

    def _turnedAway(self, reason: str, format: str, **fields: Any) -> None:
        """
        Log a connection turned away, one line per interval and reason (one
        of L{_REASONS}).
        """
        suppressed = self._logLimits[reason].allow()
        if suppressed is not None:
            log.warn(format, connections=_connections(suppressed + 1), **fields)

    def _loginTimedOut(self, broker: Any) -> None:
        broker._loginTimer = None
        self._close(broker, "loginTimeouts")
        self._turnedAway(
            "loginTimeouts",
            "tlsession: closed {connections} that did not log in within "
            "{timeout:g} s (the latest from {peer})",
            timeout=self.loginTimeout,
            peer=broker.peer,
        )

    def heard(self, broker: Any) -> None:
        """
        C{broker} received its first bytes before logging in.
        """
        group = self._waiting.get(broker.addressKey)
        if group is not None:
            group.heard(broker)

    def sentTooMuch(self, broker: Any) -> None:
        """
        C{broker} received more than L{MAX_BYTES_BEFORE_LOGIN} without
        logging in.
        """
        self._close(broker, "loginOverflows")
        self._turnedAway(
            "loginOverflows",
            "tlsession: closed {connections} that sent over {limit} bytes "
            "without logging in (the latest from {peer})",
            limit=MAX_BYTES_BEFORE_LOGIN,
            peer=broker.peer,
        )

    def loggedIn(self, broker: Any) -> None:
        """
        C{broker} logged in: it no longer counts as waiting.
        """
        self._forget(broker)

    def connectionEnded(self, broker: Any) -> None:
        """
        A connection closed.
        """
        self._forget(broker)
        self.connections.discard(broker)
        self._closing.discard(broker)

    def stats(self) -> Dict[str, int]:
        """
        C{connections} open (logged in or waiting to), C{loggingIn} (those
        waiting), and the L{counters}.
        """
        numbers = {
            "connections": len(self.connections) - len(self._closing),
            "loggingIn": self._waitingCount,
        }
        numbers.update(self.counters)
        return numbers

    def disconnectAll(self, timeout: float = 5.0) -> Deferred[None]:
        """
        Close every connection (the daemon is stopping): clients drop their
        near caches at once instead of serving from them.

        @param timeout: seconds a connection gets to close cleanly before it
            is aborted.
        @return: a L{Deferred} firing once every connection is closed.
        """
        closing = []
        for broker in list(self.connections):
            closed = broker.whenClosed()
            broker.transport.loseConnection()
            if not closed.called:
                timer = self.clock.callLater(timeout, broker.transport.abortConnection)
                closed.addBoth(_cancelling(timer))
            closing.append(closed)
        return DeferredList(closing).addCallback(lambda _: None)


def _cancelling(timer: IDelayedCall) -> Callable[[Any], Any]:
    """
    A callback that cancels C{timer} and passes its result on.
    """

    def cancel(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    return cancel
