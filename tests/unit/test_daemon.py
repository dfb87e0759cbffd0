"""
Tests for L{tlsession.daemon}: the session daemon's login, its operations
and invalidation pushes over Perspective Broker (connected in memory), and
its statistics. (Its configuration: L{tests.unit.test_daemonconfig}; its
command line: L{tests.unit.test_sessiontap}.)

L{MemoryNetwork} is shared with L{tests.unit.test_pbstore}.
"""

from __future__ import annotations

from typing import Any, List

from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.spread.banana import int2b128
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tlsession import daemon as daemonModule
from tlsession._wire import (
    BAD,
    CONFLICT,
    CREATE,
    DELETE,
    GONE,
    LOAD,
    MAX_BATCH,
    OK,
    ROTATE,
    SAVE,
    SECRET_USERNAME,
    TOO_LARGE,
    TOUCH,
    packChanges,
    packCreate,
    packRecord,
    packRefusal,
    packSave,
    packSaved,
    packSeen,
    packSession,
    unpackAnswer,
    unpackChanges,
    unpackRecord,
    unpackRequest,
    unpackSaved,
    unpackSeen,
    wireSecurity,
)
from tlsession.daemon import (
    MAX_BYTES_BEFORE_LOGIN,
    PUSH_BATCH,
    SecretChecker,
    SessionDaemonService,
)
from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    SessionRecord,
    ValueTooLargeError,
)
from tlsession.stores.memory import MemorySessionStore

SECRET = b"correct horse battery staple"
START = 1_000_000.0


# An in-memory network for PB connections.


class _Transport(iosim.FakeTransport):
    """
    An iosim transport that, in automatic mode, delivers what is written as
    soon as no other delivery is running (as a real transport would, after
    the current callback returns).
    """

    def __init__(self, protocol: Any, isServer: bool, network: MemoryNetwork):
        super().__init__(protocol, isServer)
        self.network = network

    def write(self, data: bytes) -> None:
        super().write(data)
        self.network.deliver()

    def loseConnection(self) -> None:
        super().loseConnection()
        self.network.deliver()

    def abortConnection(self) -> None:
        super().abortConnection()
        self.network.deliver()


@implementer(IStreamClientEndpoint)
class _Endpoint:
    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network

    def connect(self, factory: Any) -> Deferred[Any]:
        return self.network.connect(factory)


class MemoryNetwork:
    """
    Client connections to one server factory, with no sockets.

    In automatic mode (the default) bytes are delivered at once; in manual
    mode a test moves them with L{deliverTo}/L{flush}, to order replies and
    pushes as it likes.

    @ivar refusing: connection attempts fail, as if the daemon were down.
    @ivar connections: the C{(client, server, pump)} of each connection.
    """

    def __init__(self, serverFactory: Any, autoDeliver: bool = True) -> None:
        self.serverFactory = serverFactory
        self.autoDeliver = autoDeliver
        self.refusing = False
        self.attempts = 0
        self.connections: List[Any] = []
        self._busy = False

    def endpoint(self) -> IStreamClientEndpoint:
        """
        A client endpoint connecting through this network.
        """
        return _Endpoint(self)

    def connect(self, factory: Any, address: Any = None) -> Deferred[Any]:
        """
        Connect a client built by C{factory} to a new server protocol, which
        sees the client at C{address} (an L{iosim.FakeAddress} if C{None}).
        """
        self.attempts += 1
        if self.refusing:
            return fail(ConnectionRefusedError("the test network refuses"))
        client = factory.buildProtocol(iosim.FakeAddress())
        server = self.serverFactory.buildProtocol(address or iosim.FakeAddress())
        if server is None:
            return fail(ConnectionRefusedError("the server refused"))
        serverTransport = _Transport(server, True, self)
        clientTransport = _Transport(client, False, self)
        pump = iosim.connect(
            server, serverTransport, client, clientTransport, greet=False
        )
        self.connections.append((client, server, pump))
        self.deliver()
        return succeed(client)

    def deliver(self) -> None:
        """
        In automatic mode, move bytes until every connection is quiet.
        """
        if self.autoDeliver:
            self.flush()

    def flush(self) -> None:
        """
        Move bytes both ways on every connection until all are quiet.
        """
        if self._busy:
            return
        self._busy = True
        try:
            moved = True
            while moved:
                moved = False
                for _, _, pump in list(self.connections):
                    if pump.pump(advanceClock=False):
                        moved = True
        finally:
            self._busy = False

    def deliverTo(self, client: Any) -> None:
        """
        Deliver to C{client} what its server wrote so far, and nothing else.
        """
        for candidate, _server, pump in self.connections:
            if candidate is client:
                data = pump.serverIO.getOutBuffer()
                if data:
                    pump.clientIO.bufferReceived(data)

    def deliverToServer(self, client: Any) -> None:
        """
        Deliver to C{client}'s server what the client wrote so far.
        """
        for candidate, _server, pump in self.connections:
            if candidate is client:
                data = pump.clientIO.getOutBuffer()
                if data:
                    pump.serverIO.bufferReceived(data)

    def dropAll(self) -> None:
        """
        Break every connection, as when the daemon dies.
        """
        for _client, _server, pump in self.connections:
            pump.clientIO.disconnecting = True
            pump.serverIO.disconnecting = True
            pump.clientIO.disconnected = True
            pump.serverIO.disconnected = True
            pump.clientIO.reportDisconnect()
            pump.serverIO.reportDisconnect()
        self.connections = []


def makeDaemon(
    clock: Clock, secret: bytes = SECRET, **storeSettings: Any
) -> SessionDaemonService:
    """
    A started daemon service on a memory store using C{clock}, listening
    nowhere (tests connect to its factory in memory).
    """
    storeSettings.setdefault("idleTimeout", 60.0)
    storeSettings.setdefault("absoluteTimeout", 3600.0)
    storeSettings.setdefault("maxValueBytes", 4096)
    store = MemorySessionStore(clock, **storeSettings)
    daemon = SessionDaemonService(store, secret, [], clock, clock, statsInterval=0)
    daemon.startService()
    return daemon


class RecordingMind(pb.Referenceable):
    """
    A client's mind that keeps every invalidation it is sent.
    """

    def __init__(self, answer: bool = True) -> None:
        self.received: List[Any] = []
        self.answer = answer
        self.held: List[Deferred[None]] = []

    def remote_invalidate(self, changes: Any) -> Any:
        self.received.append(unpackChanges(changes))
        if self.answer:
            return None
        held: Deferred[None] = Deferred()
        self.held.append(held)
        return held

    def flat(self) -> List[Any]:
        """
        Every change received, in order.
        """
        return [tuple(change) for batch in self.received for change in batch]


class RawClient:
    """
    A plain PB client of the daemon, logged in (or not) by the test.
    """

    def __init__(self, network: MemoryNetwork, address: Any = None) -> None:
        self.factory = pb.PBClientFactory(security=wireSecurity())
        self.broker: Any = None
        self.refused: Any = None
        connected = network.connect(self.factory, address)
        connected.addCallbacks(self._connected, self._refused)

    def _refused(self, reason: Any) -> None:
        self.refused = reason

    def _connected(self, broker: Any) -> Any:
        self.broker = broker
        return broker

    def login(
        self,
        secret: bytes = SECRET,
        mind: Any = None,
        username: bytes = SECRET_USERNAME,
    ) -> Deferred[Any]:
        """
        Log in with a user name and secret.
        """
        return self.factory.login(UsernamePassword(username, secret), client=mind)


def capturedLog(testCase: SynchronousTestCase) -> List[str]:
    """
    The text of every log event emitted during the test.
    """
    texts: List[str] = []

    def observer(event: LogEvent) -> None:
        texts.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    testCase.addCleanup(globalLogPublisher.removeObserver, observer)
    return texts


# Authentication.


class _Challenged:
    """
    PB-style challenge/response credentials.
    """

    def __init__(self, username: bytes, secret: bytes) -> None:
        self.username = username
        self.challenge = pb.challenge()
        self.response = pb.respond(self.challenge, secret)


class _OtherMD5:
    """
    MD5 credentials that do their own comparison.
    """

    def __init__(self, username: bytes, matches: bool) -> None:
        self.username = username
        self.matches = matches
        self.checked: List[bytes] = []

    def checkMD5Password(self, hashed: bytes) -> bool:
        self.checked.append(hashed)
        return self.matches


class SecretCheckerTests(SynchronousTestCase):
    """
    L{SecretChecker} lets in exactly the clients that know the secret.
    """

    def test_plainPassword(self) -> None:
        """
        The right user name and secret are accepted; a wrong secret, an
        empty one or another user name are not.
        """
        checker = SecretChecker(SECRET)
        self.assertEqual(
            self.successResultOf(
                checker.requestAvatarId(UsernamePassword(SECRET_USERNAME, SECRET))
            ),
            SECRET_USERNAME,
        )
        for credentials in [
            UsernamePassword(SECRET_USERNAME, SECRET + b"x"),
            UsernamePassword(SECRET_USERNAME, b""),
            UsernamePassword(b"admin", SECRET),
        ]:
            self.failureResultOf(
                checker.requestAvatarId(credentials), UnauthorizedLogin
            )

    def test_challengeResponse(self) -> None:
        """
        PB's challenge response is checked against the secret.
        """
        checker = SecretChecker(SECRET)
        self.successResultOf(
            checker.requestAvatarId(_Challenged(SECRET_USERNAME, SECRET))
        )
        self.failureResultOf(
            checker.requestAvatarId(_Challenged(SECRET_USERNAME, b"guess")),
            UnauthorizedLogin,
        )

    def test_otherMD5Credentials(self) -> None:
        """
        MD5 credentials without a visible challenge compare the secret's
        digest themselves.
        """
        checker = SecretChecker(SECRET)
        accepted = _OtherMD5(SECRET_USERNAME, True)
        self.successResultOf(checker.requestAvatarId(accepted))
        self.assertEqual(len(accepted.checked[0]), 16)
        self.failureResultOf(
            checker.requestAvatarId(_OtherMD5(SECRET_USERNAME, False)),
            UnauthorizedLogin,
        )

    def test_constantTime(self) -> None:
        """
        Secrets and responses are compared with L{hmac.compare_digest}.
        """
        compared: List[Any] = []
        original = daemonModule.hmac.compare_digest

        def recording(a: Any, b: Any) -> bool:
            compared.append((a, b))
            return original(a, b)

        self.patch(daemonModule.hmac, "compare_digest", recording)
        checker = SecretChecker(SECRET)
        for credentials in [
            UsernamePassword(SECRET_USERNAME, b"wrong"),
            _Challenged(SECRET_USERNAME, b"wrong"),
        ]:
            self.failureResultOf(
                checker.requestAvatarId(credentials), UnauthorizedLogin
            )
        self.assertIn((b"wrong", SECRET), compared)
        self.assertEqual(len(compared), 4)

    def test_emptySecretRefused(self) -> None:
        """
        A checker cannot be made with an empty secret.
        """
        self.assertRaises(ValueError, SecretChecker, b"")


class LoginTests(SynchronousTestCase):
    """
    Over PB, a peer without the secret gets nothing.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.daemon = makeDaemon(self.clock)
        self.network = MemoryNetwork(self.daemon.factory)

    def test_rightSecret(self) -> None:
        """
        A client with the secret gets an avatar that answers.
        """
        client = RawClient(self.network)
        avatar = self.successResultOf(client.login())
        limits = self.successResultOf(avatar.callRemote("limits"))
        self.assertEqual(
            limits,
            {"idleTimeout": 60.0, "absoluteTimeout": 3600.0, "maxValueBytes": 4096},
        )

    def test_wrongSecret(self) -> None:
        """
        A wrong secret is refused, and the daemon closes the connection.
        """
        client = RawClient(self.network)
        failure = self.failureResultOf(client.login(SECRET[:-1] + b"!"))
        self.assertTrue(failure.check(UnauthorizedLogin))
        self.assertFalse(client.broker.disconnected)
        self.clock.advance(0)
        self.assertTrue(client.broker.disconnected)
        self.assertEqual(self.daemon.realm.avatars, [])

    def test_noSecret(self) -> None:
        """
        An anonymous login, an empty secret and another user name are all
        refused.
        """
        anonymous = RawClient(self.network)
        self.failureResultOf(anonymous.factory.login(Anonymous()))
        empty = RawClient(self.network)
        self.assertTrue(self.failureResultOf(empty.login(b"")).check(UnauthorizedLogin))
        other = RawClient(self.network)
        self.assertTrue(
            self.failureResultOf(other.login(username=b"root")).check(UnauthorizedLogin)
        )
        self.assertEqual(self.daemon.realm.avatars, [])

    def test_loginTimeout(self) -> None:
        """
        A peer that does not log in within the login timeout is
        disconnected; one that logged in stays.
        """
        idle = RawClient(self.network)
        loggedIn = RawClient(self.network)
        self.successResultOf(loggedIn.login())
        self.clock.advance(4.9)
        self.assertFalse(idle.broker.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(idle.broker.disconnected)
        self.assertFalse(loggedIn.broker.disconnected)
        self.assertEqual(self.daemon.stats()["loginTimeouts"], 1)

    def test_chattyPeer(self) -> None:
        """
        A peer sending more than a login's worth of bytes before logging in
        is disconnected.
        """
        chatty = RawClient(self.network)
        server = self.network.connections[-1][1]
        # The start of a long string: banana waits for the rest.
        header: List[bytes] = []
        int2b128(500_000, header.append)
        server.dataReceived(b"".join(header) + b"\x82" + b"x" * 100)
        self.network.flush()
        self.assertFalse(chatty.broker.disconnected)
        server.dataReceived(b"x" * MAX_BYTES_BEFORE_LOGIN)
        self.network.flush()
        self.assertTrue(chatty.broker.disconnected)
        self.assertEqual(self.daemon.stats()["loginOverflows"], 1)

    def test_loginWindowDefault(self) -> None:
        """
        The daemon's default login window is a few seconds, not the ten it
        was: an idle connection holds its slot no longer than that.
        """
        self.assertEqual(self.daemon.factory.loginTimeout, 5.0)


class SilentPeer(Protocol):
    """
    A peer that connects and never sends a byte.

    @ivar closed: the daemon closed the connection.
    """

    greeting = b""
    closed = False

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True


class StartedPeer(SilentPeer):
    """
    A peer that sends the first byte of a message, as a client starting to
    log in does, and then nothing more.
    """

    greeting = b"\x01"


def tcpAddress(host: str) -> IPv4Address | IPv6Address:
    """
    The address of a TCP client on C{host}.
    """
    if ":" in host:
        return IPv6Address("TCP", host, 40000)
    return IPv4Address("TCP", host, 40000)


class ConnectionLimitTests(SynchronousTestCase):
    """
    Connections that have not logged in are capped, overall and per client
    address, and make way for newer ones; so a flood of idle connections
    neither fills the daemon nor keeps an app from logging in.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.log = capturedLog(self)

    def daemon(self, **limits: Any) -> SessionDaemonService:
        """
        A daemon with these connection limits, and its network.
        """
        store = MemorySessionStore(self.clock, idleTimeout=60.0)
        limits.setdefault("statsInterval", 0)
        daemon = SessionDaemonService(
            store, SECRET, [], self.clock, self.clock, **limits
        )
        daemon.startService()
        self.addCleanup(daemon.stopService)
        self.network = MemoryNetwork(daemon.factory)
        return daemon

    def open(
        self, kind: type[SilentPeer] = SilentPeer, host: str | None = None
    ) -> SilentPeer | None:
        """
        Connect a peer of C{kind} from C{host}: C{None} if the daemon
        refused the connection.
        """
        address = tcpAddress(host) if host is not None else None
        connected = self.network.connect(Factory.forProtocol(kind), address)
        peers: List[SilentPeer] = []
        connected.addCallbacks(peers.append, lambda f: f.trap(ConnectionRefusedError))
        return peers[0] if peers else None

    def flood(
        self, count: int, kind: type[SilentPeer] = SilentPeer, host: str | None = None
    ) -> List[SilentPeer]:
        """
        Open C{count} connections that never log in.
        """
        peers = [self.open(kind, host) for _ in range(count)]
        return [peer for peer in peers if peer is not None]

    def stillOpen(self, peers: List[SilentPeer]) -> int:
        """
        How many of C{peers} are still connected.
        """
        return sum(not peer.closed for peer in peers)

    def lines(self, text: str) -> List[str]:
        """
        The log lines containing C{text}.
        """
        return [line for line in self.log if text in line]

    def test_idleFloodDoesNotStopALogin(self) -> None:
        """
        Idle connections as many as the connection limit do not fill it: at
        most a tenth of it may wait to log in, older ones making way for
        newer ones, and an app logs in at once.
        """
        daemon = self.daemon(maxConnections=40)
        peers = self.flood(40)
        self.assertEqual(self.stillOpen(peers), 4)
        app = RawClient(self.network)
        avatar = self.successResultOf(app.login())
        self.assertEqual(len(self.successResultOf(avatar.callRemote("batch", []))), 0)
        self.assertEqual(self.stillOpen(peers), 3)
        stats = daemon.stats()
        self.assertEqual(
            (
                stats["clients"],
                stats["loggingIn"],
                stats["connections"],
                stats["connectionsDropped"],
                stats["connectionsRefused"],
            ),
            (1, 3, 4, 37, 0),
        )

    def test_perAddressLimit(self) -> None:
        """
        One client address may have only a few connections waiting to log
        in. Newer ones from it are refused at once (cheaply) while its
        waiting connections are fresh; once they have waited half a second,
        a newer one replaces the oldest. Other addresses are unaffected, and
        an app on the flooding address logs in.
        """
        daemon = self.daemon(maxUnauthenticatedPerAddress=16)
        neighbour = self.open(host="10.0.0.2")
        peers = self.flood(60, host="10.0.0.1")
        self.assertEqual((len(peers), self.stillOpen(peers)), (16, 16))
        self.assertIsNone(RawClient(self.network, tcpAddress("10.0.0.1")).broker)
        self.clock.advance(0.5)
        app = RawClient(self.network, tcpAddress("10.0.0.1"))
        self.successResultOf(app.login())
        self.assertEqual(self.stillOpen(peers), 15)
        assert neighbour is not None
        self.assertFalse(neighbour.closed)
        stats = daemon.stats()
        self.assertEqual(
            (stats["connectionsRefused"], stats["connectionsDropped"]), (45, 1)
        )
        self.assertEqual(
            len(self.lines("16 connections from that address are waiting")), 1
        )

    def test_ipv6AddressesByNetwork(self) -> None:
        """
        IPv6 clients are counted per /64 network, as a client can pick any
        address in its own; an IPv4 address mapped into IPv6 counts as the
        IPv4 address.
        """
        self.daemon(maxUnauthenticatedPerAddress=2)
        self.assertIsNotNone(self.open(host="2001:db8::1"))
        self.assertIsNotNone(self.open(host="2001:db8::ffff:2"))
        self.assertIsNone(self.open(host="2001:db8::3"))
        self.assertIsNotNone(self.open(host="2001:db8:0:1::1"))
        self.assertIsNotNone(self.open(host="10.0.0.1"))
        self.assertIsNotNone(self.open(host="::ffff:10.0.0.1"))
        self.assertIsNone(self.open(host="10.0.0.1"))

    def test_largestAddressMakesWay(self) -> None:
        """
        When the overall cap is reached, the address with the most
        connections waiting gives one up: an app's connection from another
        address is not dropped by floods from a few addresses.
        """
        daemon = self.daemon(maxUnauthenticated=8, maxUnauthenticatedPerAddress=4)
        app = self.open(host="10.9.9.9")
        for _ in range(25):
            for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
                self.open(host=host)
        assert app is not None
        self.assertFalse(app.closed)
        self.assertEqual(daemon.stats()["loggingIn"], 8)

    def test_silentConnectionsGoFirst(self) -> None:
        """
        Among connections waiting to log in, those that never sent a byte
        make way first (a client starts its login at once); then the
        oldest.
        """
        self.daemon(maxUnauthenticated=3)
        started = self.open(StartedPeer)
        silent = self.flood(10)
        assert started is not None
        self.assertFalse(started.closed)
        self.assertEqual(self.stillOpen(silent), 2)
        later = self.flood(2, StartedPeer)
        self.assertEqual(self.stillOpen(silent), 0)
        self.assertFalse(started.closed)
        self.open(StartedPeer)
        self.assertTrue(started.closed)
        self.assertEqual(self.stillOpen(later), 2)

    def test_loggedInKeepTheirSlots(self) -> None:
        """
        Logged-in clients are never dropped for newcomers, and can use every
        slot the waiting connections may not: once all of them are logged
        in, a new connection is refused at once, and counted.
        """
        daemon = self.daemon(maxConnections=6, maxUnauthenticated=2)
        apps: List[RawClient] = []
        # The avatars are kept: a client that lets go of its avatar logs out.
        avatars: List[Any] = []

        def logIn() -> None:
            app = RawClient(self.network)
            avatars.append(self.successResultOf(app.login()))
            apps.append(app)

        for _ in range(4):
            logIn()
        peers = self.flood(20)
        self.assertEqual(self.stillOpen(peers), 2)
        for _ in range(2):
            logIn()
        self.assertEqual(self.stillOpen(peers), 0)
        self.assertIsNone(self.open())
        self.assertEqual([app.broker.disconnected for app in apps], [False] * 6)
        stats = daemon.stats()
        self.assertEqual(
            (
                stats["clients"],
                stats["connectionsRefused"],
                stats["connectionsDropped"],
            ),
            (6, 1, 20),
        )
        self.assertEqual(
            len(self.lines("every one of its 6 connections is logged in")), 1
        )

    def test_logsAreRateLimited(self) -> None:
        """
        Dropped connections and login timeouts are logged one line per
        ten seconds at most, each saying how many there were.
        """
        self.daemon(maxConnections=40)
        self.flood(40)
        dropped = self.lines("to make room")
        self.assertEqual(len(dropped), 1)
        self.assertIn("closed 1 connection", dropped[0])
        self.clock.advance(5)
        timeouts = self.lines("did not log in within 5 s")
        self.assertEqual(len(timeouts), 1)
        self.clock.advance(5)
        self.flood(5)
        dropped = self.lines("to make room")
        self.assertEqual(len(dropped), 2)
        self.assertIn("closed 36 connections", dropped[1])

    def test_summaryAndStats(self) -> None:
        """
        The stats and the summary line count the connections waiting to log
        in and those turned away.
        """
        self.daemon(maxConnections=10, statsInterval=10)
        self.flood(5)
        avatar = self.successResultOf(RawClient(self.network).login())
        self.clock.advance(10)
        self.assertIn(
            "tlsession: 0 sessions, 0 bytes, 0 evictions (0 returning), 0 expired, "
            "0.0 ops/s, 1 clients, 0 logging in, 5 connections turned away",
            self.log,
        )
        self.assertTrue(avatar)


# Operations and pushes.


class WireTests(SynchronousTestCase):
    """
    Records, answers and invalidations travel as byte strings.
    """

    def test_record(self) -> None:
        """
        A record survives packing; anything else is refused.
        """
        record = SessionRecord("a" * 43, 3, b"\x00\xff", 1.5, 2.5, 60.0)
        packed = packRecord(record)
        self.assertEqual(unpackRecord(packed), record)
        nan = packRecord(SessionRecord("a" * 43, 3, b"", float("nan"), 2.0, 60.0))
        for bad in [None, "text", packed[:20], packed[:40], nan]:
            self.assertRaises(ValueError, unpackRecord, bad)

    def test_answers(self) -> None:
        """
        Each answer gives its payload, or raises the error it stands for.
        """
        self.assertEqual(unpackAnswer(OK + b"payload", "s"), b"payload")
        self.assertEqual(
            unpackSaved(unpackAnswer(OK + packSaved(4, 9.5), "s")), (4, 9.5)
        )
        self.assertEqual(unpackSeen(unpackAnswer(OK + packSeen(9.5), "s")), 9.5)
        conflict = self.assertRaises(
            ConflictError,
            unpackAnswer,
            packRefusal(Failure(ConflictError("s", 1, 3))),
            "s",
            1,
        )
        self.assertEqual(
            (conflict.sessionID, conflict.expected, conflict.current), ("s", 1, 3)
        )
        unknown = self.assertRaises(
            ConflictError,
            unpackAnswer,
            packRefusal(Failure(ConflictError("s", 1))),
            "s",
        )
        self.assertIsNone(unknown.current)
        self.assertRaises(
            SessionGoneError,
            unpackAnswer,
            packRefusal(Failure(SessionGoneError("s"))),
            "s",
        )
        large = self.assertRaises(
            ValueTooLargeError,
            unpackAnswer,
            packRefusal(Failure(ValueTooLargeError(10, 5))),
            "s",
        )
        self.assertEqual((large.size, large.limit), (10, 5))
        other = Failure(RuntimeError("bug"))
        self.assertIs(packRefusal(other), other)
        for bad in [None, b"", ("ok",), b"x", CONFLICT, GONE + b"x", TOO_LARGE + b"12"]:
            self.assertRaises(ValueError, unpackAnswer, bad, "s")
        self.assertRaises(ValueError, unpackSaved, b"short")
        self.assertRaises(ValueError, unpackSeen, b"short")

    def test_requests(self) -> None:
        """
        Requests survive packing; an idle timeout of C{None} stays C{None}.
        """
        sessionID = "a" * 43
        for request, expected in [
            (packCreate(b"data", None), (CREATE, "", 0, b"data", None)),
            (packCreate(b"", 30.0), (CREATE, "", 0, b"", 30.0)),
            (packSave(sessionID, 7, b"x", None), (SAVE, sessionID, 7, b"x", None)),
            (packSave(sessionID, 7, b"", 5.0), (SAVE, sessionID, 7, b"", 5.0)),
            (packSession(LOAD, sessionID), (LOAD, sessionID, 0, b"", None)),
            (packSession(TOUCH, sessionID), (TOUCH, sessionID, 0, b"", None)),
            (packSession(ROTATE, sessionID), (ROTATE, sessionID, 0, b"", None)),
            (packSession(DELETE, sessionID), (DELETE, sessionID, 0, b"", None)),
        ]:
            self.assertEqual(unpackRequest(request), expected)

    def test_changes(self) -> None:
        """
        Invalidations survive packing; truncated ones are refused.
        """
        changes = [("a" * 43, 2), ("b" * 43, None), ("", 0)]
        packed = packChanges(changes)
        self.assertEqual(unpackChanges(packed), changes)
        self.assertEqual(unpackChanges(b""), [])
        for bad in [None, packed[:5], packed[:20]]:
            self.assertRaises(ValueError, unpackChanges, bad)


class AvatarTests(SynchronousTestCase):
    """
    The avatar runs batches of requests and answers each with a byte
    string: a status and its payload.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.daemon = makeDaemon(self.clock)
        self.network = MemoryNetwork(self.daemon.factory)
        self.avatar = self.successResultOf(RawClient(self.network).login())

    def call(self, name: str, *args: Any) -> Any:
        """
        Call the avatar and return its answer.
        """
        return self.successResultOf(self.avatar.callRemote(name, *args))

    def request(self, request: bytes) -> bytes:
        """
        Send one request in a batch of its own and return its answer.
        """
        [answer] = self.call("batch", [request])
        return bytes(answer)

    def test_operations(self) -> None:
        """
        Create, load, save, touch, rotate and delete answer L{OK} and what
        each gives back.
        """
        answer = self.request(packCreate(b"data", None))
        self.assertEqual(answer[:1], OK)
        record = unpackRecord(answer[1:])
        self.assertEqual(
            (record.version, record.data, record.idleTimeout), (1, b"data", 60.0)
        )
        sessionID = record.sessionID
        self.assertEqual(
            self.request(packSession(LOAD, sessionID)), OK + packRecord(record)
        )
        self.clock.advance(5)
        self.assertEqual(
            self.request(packSave(sessionID, 1, b"new", 120.0)),
            OK + packSaved(2, START + 5),
        )
        self.clock.advance(5)
        self.assertEqual(
            self.request(packSession(TOUCH, sessionID)), OK + packSeen(START + 10)
        )
        rotated = unpackRecord(self.request(packSession(ROTATE, sessionID))[1:])
        self.assertEqual(
            (rotated.version, rotated.data, rotated.idleTimeout), (2, b"new", 120.0)
        )
        self.assertEqual(self.request(packSession(LOAD, sessionID)), OK)
        self.assertEqual(self.request(packSession(DELETE, rotated.sessionID)), OK)
        self.assertEqual(self.request(packSession(LOAD, rotated.sessionID)), OK)

    def test_batchInOrder(self) -> None:
        """
        A batch runs its requests in order and answers them in the same
        order.
        """
        sessionID = unpackRecord(self.request(packCreate(b"0", None))[1:]).sessionID
        answers = self.call(
            "batch",
            [
                packSave(sessionID, 1, b"1", None),
                packSave(sessionID, 2, b"2", None),
                packSession(LOAD, sessionID),
                packSave(sessionID, 2, b"late", None),
                packSession(DELETE, sessionID),
                packSession(LOAD, sessionID),
            ],
        )
        self.assertEqual(unpackSaved(unpackAnswer(answers[0], sessionID))[0], 2)
        self.assertEqual(unpackSaved(unpackAnswer(answers[1], sessionID))[0], 3)
        self.assertEqual(unpackRecord(answers[2][1:]).data, b"2")
        self.assertEqual(answers[3][:1], CONFLICT)
        self.assertEqual(answers[4:], [OK, OK])

    def test_refusals(self) -> None:
        """
        A stale version, a missing session and oversized data come back as
        the errors the store raised, with what the client needs to raise
        them again.
        """
        sessionID = unpackRecord(self.request(packCreate(b"", None))[1:]).sessionID
        self.request(packSave(sessionID, 1, b"x", None))
        conflict = self.assertRaises(
            ConflictError,
            unpackAnswer,
            self.request(packSave(sessionID, 1, b"y", None)),
            sessionID,
            1,
        )
        self.assertEqual(conflict.current, 2)
        unknown = "z" * 43
        for request in [
            packSave(unknown, 1, b"y", None),
            packSession(TOUCH, unknown),
            packSession(ROTATE, unknown),
        ]:
            self.assertEqual(self.request(request), GONE)
        for request, size in [
            (packCreate(b"x" * 4097, None), 4097),
            (packSave(sessionID, 2, b"x" * 5000, None), 5000),
        ]:
            large = self.assertRaises(
                ValueTooLargeError, unpackAnswer, self.request(request), sessionID
            )
            self.assertEqual((large.size, large.limit), (size, 4096))

    def test_badRequests(self) -> None:
        """
        Requests that cannot be read are answered L{BAD} without reaching
        the store; a batch that is not a list of at most L{MAX_BATCH}
        requests is refused whole.
        """
        for request in [
            b"",
            b"X" + b"a" * 43,
            CREATE + b"\x00",
            packCreate(b"", -1.0),
            packCreate(b"", float("nan")),
            packSave("a" * 43, 1, b"", None)[:5],
            SAVE + packSave("a" * 43, 1, b"", None)[1:18] + b"\xff",
            LOAD + b"\xff\xfe",
        ]:
            answer = self.call("batch", [request])[0]
            self.assertEqual(answer[:1], BAD, request)
        self.assertEqual(self.call("batch", ["text", 12, None])[0][:1], BAD)
        for batch in ["not a list", [packSession(LOAD, "a" * 43)] * (MAX_BATCH + 1)]:
            failure = self.failureResultOf(self.avatar.callRemote("batch", batch))
            self.assertIn("bad request", failure.getErrorMessage())
        self.assertEqual(self.daemon.store.stats()["creates"], 0)

    def test_heldAnswers(self) -> None:
        """
        When the store answers later, the batch's answer waits for it.
        """
        held: Deferred[Any] = Deferred()
        self.patch(self.daemon.store, "load", lambda sessionID: held)
        answering = self.avatar.callRemote("batch", [packSession(LOAD, "a" * 43)])
        self.assertNoResult(answering)
        held.callback(None)
        self.assertEqual(self.successResultOf(answering), [OK])

    def test_storeFailure(self) -> None:
        """
        A store call failing unexpectedly is logged and answered L{BAD}.
        """
        self.patch(
            self.daemon.store, "touch", lambda sessionID: fail(RuntimeError("bug"))
        )
        self.assertEqual(
            self.request(packSession(TOUCH, "a" * 43)), BAD + b"internal error"
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stats(self) -> None:
        """
        The stats call gives sessions, bytes, evictions, operations per
        second and clients.
        """
        self.request(packCreate(b"abc", None))
        self.request(packCreate(b"de", None))
        self.clock.advance(2)
        stats = self.call("stats")
        self.assertEqual(
            (stats["sessions"], stats["bytes"], stats["evictions"], stats["clients"]),
            (2, 5, 0, 1),
        )
        self.assertEqual(stats["operations"], 2)
        self.assertEqual(stats["opsPerSecond"], 1.0)


class PushTests(SynchronousTestCase):
    """
    Every change reaches the other clients' minds.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.daemon = makeDaemon(self.clock, maxSessions=3)
        self.network = MemoryNetwork(self.daemon.factory)
        self.mindA = RecordingMind()
        self.mindB = RecordingMind()
        self.a = self.successResultOf(RawClient(self.network).login(mind=self.mindA))
        self.b = self.successResultOf(RawClient(self.network).login(mind=self.mindB))

    def request(self, avatar: Any, request: bytes) -> bytes:
        """
        Send one request through C{avatar} and return its answer.
        """
        [answer] = self.successResultOf(avatar.callRemote("batch", [request]))
        return bytes(answer)

    def create(self, avatar: Any) -> str:
        """
        Create a session through C{avatar}.
        """
        return unpackRecord(self.request(avatar, packCreate(b"", None))[1:]).sessionID

    def test_othersAreTold(self) -> None:
        """
        A save, a rotation and a deletion by one client reach the other, and
        not the client that made them (its answer says it all).
        """
        sessionID = self.create(self.a)
        self.assertEqual((self.mindA.flat(), self.mindB.flat()), ([], []))
        self.request(self.a, packSave(sessionID, 1, b"x", None))
        self.assertEqual(self.mindB.flat(), [(sessionID, 2)])
        rotated = unpackRecord(
            self.request(self.b, packSession(ROTATE, sessionID))[1:]
        ).sessionID
        self.assertEqual(self.mindA.flat(), [(sessionID, None)])
        self.request(self.a, packSession(DELETE, rotated))
        self.assertEqual(self.mindB.flat(), [(sessionID, 2), (rotated, None)])
        self.assertEqual(self.mindA.flat(), [(sessionID, None)])

    def test_oneMessagePerBatch(self) -> None:
        """
        The changes a batch makes reach each other client in one message.
        """
        sessionID = self.create(self.a)
        self.successResultOf(
            self.a.callRemote(
                "batch",
                [packSave(sessionID, version, b"", None) for version in (1, 2, 3)],
            )
        )
        self.assertEqual(
            self.mindB.received, [[(sessionID, 2), (sessionID, 3), (sessionID, 4)]]
        )

    def test_evictionsReachEveryone(self) -> None:
        """
        Sessions evicted to make room for a new one are pushed to every
        client, the one whose create evicted them included.
        """
        first = self.create(self.a)
        for _ in range(3):
            self.create(self.a)
        self.assertEqual(self.mindA.flat(), [(first, None)])
        self.assertEqual(self.mindB.flat(), [(first, None)])
        self.assertEqual(self.daemon.store.stats()["evictions"], 1)

    def test_sweepBatched(self) -> None:
        """
        Sessions expired by the sweep are pushed together, in one message
        per client.
        """
        ids = {self.create(self.a) for _ in range(3)}
        self.clock.advance(120)
        self.assertEqual(len(self.mindA.received), 1)
        self.assertEqual(set(self.mindA.flat()), {(i, None) for i in ids})
        self.assertEqual(self.mindB.received, self.mindA.received)

    def test_largeBatchesSplit(self) -> None:
        """
        More changes than fit one message go in several.
        """
        realm = self.daemon.realm
        for n in range(PUSH_BATCH + 5):
            realm._changed(f"{n:043d}", None)
        self.clock.advance(0)
        self.assertEqual([len(batch) for batch in self.mindA.received], [PUSH_BATCH, 5])

    def test_slowClientDropped(self) -> None:
        """
        A client that leaves too many pushes unanswered is disconnected,
        and pushes stop going to it.
        """
        slowMind = RecordingMind(answer=False)
        slowClient = RawClient(self.network)
        # PB logs an avatar out when the client drops its last reference.
        slowAvatar = self.successResultOf(slowClient.login(mind=slowMind))
        self.addCleanup(lambda: slowAvatar)
        self.daemon.realm.maxOutstandingPushes = 3
        sessionID = self.create(self.a)
        for version in range(1, 6):
            self.request(self.a, packSave(sessionID, version, b"", None))
        self.assertEqual(len(slowMind.received), 3)
        self.assertTrue(slowClient.broker.disconnected)
        self.assertEqual(len(self.mindB.received), 5)
        self.assertEqual(self.daemon.realm.counters["slowClientsDropped"], 1)

    def test_answeredPushesDoNotCount(self) -> None:
        """
        A client that answers its pushes may receive any number of them.
        """
        self.daemon.realm.maxOutstandingPushes = 2
        sessionID = self.create(self.a)
        for version in range(1, 10):
            self.request(self.a, packSave(sessionID, version, b"", None))
        self.assertEqual(len(self.mindB.received), 9)

    def test_loggedOutClientsForgotten(self) -> None:
        """
        When a client disconnects, pushes stop going to it.
        """
        self.assertEqual(len(self.daemon.realm.avatars), 2)
        self.network.connections[1][0].transport.loseConnection()
        self.network.flush()
        self.assertEqual(len(self.daemon.realm.avatars), 1)
        sessionID = self.create(self.a)
        self.request(self.a, packSave(sessionID, 1, b"", None))
        self.assertEqual(self.mindB.received, [])


class ServiceTests(SynchronousTestCase):
    """
    L{SessionDaemonService} sweeps, logs a summary and lets go of its
    clients when stopped.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        store = MemorySessionStore(self.clock, idleTimeout=60.0)
        self.service = SessionDaemonService(
            store, SECRET, [], self.clock, self.clock, statsInterval=10
        )
        self.network = MemoryNetwork(self.service.factory)

    def test_summaryLine(self) -> None:
        """
        Every C{statsInterval} seconds one line gives sessions, bytes,
        evictions, expiries, operations per second and clients.
        """
        texts = capturedLog(self)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        avatar = self.successResultOf(RawClient(self.network).login())
        for _ in range(20):
            self.successResultOf(
                avatar.callRemote("batch", [packCreate(b"12345", None)])
            )
        self.clock.advance(10)
        self.assertIn(
            "tlsession: 20 sessions, 100 bytes, 0 evictions (0 returning), 0 "
            "expired, 2.0 ops/s, 1 clients, 0 logging in, 0 connections turned away",
            texts,
        )
        self.clock.advance(10)
        self.assertIn(
            "tlsession: 20 sessions, 100 bytes, 0 evictions (0 returning), 0 "
            "expired, 0.0 ops/s, 1 clients, 0 logging in, 0 connections turned away",
            texts,
        )

    def test_sweeps(self) -> None:
        """
        While running, expired sessions are reclaimed without being read.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        avatar = self.successResultOf(RawClient(self.network).login())
        self.successResultOf(avatar.callRemote("batch", [packCreate(b"x", None)]))
        # The store files expiry times in buckets and reclaims a bucket late.
        for _ in range(130):
            self.clock.advance(1)
        self.assertEqual(self.service.stats()["sessions"], 0)
        self.assertEqual(self.service.stats()["expired"], 1)

    def test_stop(self) -> None:
        """
        Stopping closes every client connection, logs a last summary and
        leaves no timer behind.
        """
        texts = capturedLog(self)
        self.service.startService()
        client = RawClient(self.network)
        self.successResultOf(client.login())
        self.successResultOf(self.service.stopService())
        self.assertTrue(client.broker.disconnected)
        self.assertTrue(any(text.startswith("tlsession: 0 sessions") for text in texts))
        self.assertEqual(self.clock.getDelayedCalls(), [])
