"""
Tests for L{tlbalance.relay}: the client/backend protocols, without sockets.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import (
    IProtocolFactory,
    ISSLTransport,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides, implementer

from tlbalance import proxyprotocol
from tlbalance.backends import Backend, BackendPool
from tlbalance.endings import Ending, Phase
from tlbalance.relay import (
    BackendConnector,
    Balancer,
    FrontendFactory,
    FrontendProtocol,
    RelaySettings,
    clientKeyFor,
)
from tlbalance.schedulers import schedulerFor

CLIENT = IPv4Address("TCP", "192.0.2.1", 56324)
LISTENER = IPv4Address("TCP", "198.51.100.7", 443)


class RelayTransport(StringTransport):
    """
    A L{StringTransport} that records half-closes and delivers
    C{connectionLost} to its protocol when closed, like a real transport.

    @ivar holdClose: C{loseConnection} waits (as for a peer that does not
        read its last bytes) until L{reset} or C{abortConnection}.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.writeClosed = False
        self.aborted = False
        self.lost = False
        self.holdClose = False

    def reset(self, why: str = "Connection reset by peer") -> None:
        """
        Lose the connection with an error, as a peer's RST does.
        """
        self._lose(error.ConnectionLost(why))

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def unregisterProducer(self) -> None:
        # Real transports accept this with no producer registered.
        self.producer = None
        self.streaming = None

    def loseConnection(self) -> None:
        super().loseConnection()
        if not self.holdClose:
            self._lose(error.ConnectionDone())

    def abortConnection(self) -> None:
        self.aborted = True
        self._lose(error.ConnectionAborted())

    def _lose(self, why: Exception) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(why))


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    A client endpoint whose connection attempts the test completes or fails
    by hand.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.attempts: list[tuple[IProtocolFactory, Deferred[Protocol]]] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Protocol]:
        d: Deferred[Protocol] = Deferred(
            lambda d: d.errback(error.ConnectingCancelledError(None))
        )
        self.attempts.append((factory, d))
        return d

    def succeed(self, index: int = -1) -> tuple[Protocol, RelayTransport]:
        """
        Complete attempt C{index}: build the backend protocol on a transport.
        """
        factory, d = self.attempts[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 8080))
        transport = RelayTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.100", 40000),
            peerAddress=IPv4Address("TCP", "10.0.0.1", 8080),
        )
        transport.protocol = protocol
        protocol.makeConnection(transport)
        d.callback(protocol)
        return protocol, transport

    def fail(self, index: int = -1, why: Optional[Exception] = None) -> None:
        """
        Fail attempt C{index} with C{why} (connection refused by default).
        """
        self.attempts[index][1].errback(why or error.ConnectionRefusedError())


class RelayTestMixin:
    """
    Builds a balancer over fake backends, and client connections to it.
    """

    def setUpBalancer(
        self,
        names: tuple[str, ...] = ("a", "b"),
        sendProxy: Optional[str] = None,
        **settings: object,
    ) -> None:
        self.clock = Clock()
        self.backends = [
            Backend(
                name=name,
                endpoint=f"fake:{name}",
                clock=self.clock,
                sendProxy=sendProxy,
            )
            for name in names
        ]
        self.endpoints = {name: FakeEndpoint(name) for name in names}
        connectors = {
            name: BackendConnector(plain=ep) for name, ep in self.endpoints.items()
        }
        self.pool = BackendPool(self.backends, schedulerFor("roundrobin"))
        self.balancer = Balancer(
            self.pool,
            connectors,
            RelaySettings(**settings),
            self.clock,  # type: ignore[arg-type]
        )
        self.factory = FrontendFactory(self.balancer)

    def connectClient(
        self, peer: object = CLIENT, host: object = LISTENER, tls: bool = False
    ) -> tuple[FrontendProtocol, RelayTransport]:
        protocol = self.factory.buildProtocol(peer)  # type: ignore[arg-type]
        transport = RelayTransport(hostAddress=host, peerAddress=peer)  # type: ignore[arg-type]
        if tls:
            alsoProvides(transport, ISSLTransport)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def attemptsOn(self, name: str) -> int:
        return len(self.endpoints[name].attempts)


class HeaderFirstTests(RelayTestMixin, SynchronousTestCase):
    """
    The PROXY header is the very first thing a backend receives.
    """

    def test_v2HeaderBeforeClientBytes(self) -> None:
        """
        With send-proxy v2 the backend sees the v2 header for the client's
        own addresses, then the bytes the client sent while it connected.
        """
        self.setUpBalancer(sendProxy="v2")
        client, clientTransport = self.connectClient()
        client.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        _, backendTransport = self.endpoints["a"].succeed()
        expected = proxyprotocol.encodeV2(CLIENT, LISTENER)
        self.assertEqual(backendTransport.value(), expected + b"GET / HTTP/1.0\r\n\r\n")
        header, rest = proxyprotocol.parseHeader(backendTransport.value())
        self.assertEqual(header.source, CLIENT)
        self.assertEqual(header.destination, LISTENER)

    def test_v1HeaderWithoutClientBytes(self) -> None:
        """
        With send-proxy v1 the header is written as soon as the backend
        connection is made, even when the client has said nothing (protocols
        where the server speaks first).
        """
        self.setUpBalancer(sendProxy="v1")
        self.connectClient()
        _, backendTransport = self.endpoints["a"].succeed()
        self.assertEqual(
            backendTransport.value(),
            b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n",
        )

    def test_noHeaderWhenNotConfigured(self) -> None:
        """
        Without send-proxy the backend gets exactly the client's bytes.
        """
        self.setUpBalancer()
        client, _ = self.connectClient()
        _, backendTransport = self.endpoints["a"].succeed()
        client.dataReceived(b"hello")
        self.assertEqual(backendTransport.value(), b"hello")

    def test_unixClientV1IsUnknown(self) -> None:
        """
        A client that came in on a unix listener is sent as v1 UNKNOWN.
        """
        self.setUpBalancer(sendProxy="v1")
        self.connectClient(peer=UNIXAddress(None), host=UNIXAddress(b"/run/lb.sock"))
        _, backendTransport = self.endpoints["a"].succeed()
        self.assertEqual(backendTransport.value(), b"PROXY UNKNOWN\r\n")

    def test_crc32c(self) -> None:
        """
        With the CRC32C option the v2 header carries a checksum TLV that the
        parser verifies.
        """
        self.setUpBalancer(sendProxy="v2", proxyCRC32C=True)
        self.connectClient()
        _, backendTransport = self.endpoints["a"].succeed()
        header, _ = proxyprotocol.parseHeader(backendTransport.value())
        self.assertIsNotNone(header.tlv(proxyprotocol.PP2_TYPE_CRC32C))


class RelayTests(RelayTestMixin, SynchronousTestCase):
    """
    Bytes flow both ways, with back-pressure, half-close and counters.
    """

    def test_bothWays(self) -> None:
        """
        Client bytes reach the backend and backend bytes reach the client.
        """
        self.setUpBalancer()
        client, clientTransport = self.connectClient()
        backend, backendTransport = self.endpoints["a"].succeed()
        client.dataReceived(b"ping")
        backend.dataReceived(b"pong")
        self.assertEqual(backendTransport.value(), b"ping")
        self.assertEqual(clientTransport.value(), b"pong")

    def test_producersPaired(self) -> None:
        """
        Once connected, each transport is registered as the other's
        streaming producer, so a full write buffer on one side stops reading
        on the other.
        """
        self.setUpBalancer()
        _, clientTransport = self.connectClient()
        _, backendTransport = self.endpoints["a"].succeed()
        self.assertIs(clientTransport.producer, backendTransport)
        self.assertIs(backendTransport.producer, clientTransport)
        self.assertTrue(clientTransport.streaming)
        self.assertTrue(backendTransport.streaming)

    def test_clientPausedUntilBackendConnects(self) -> None:
        """
        A client that sends more than the pending buffer allows before the
        backend connects is paused; it resumes on connect and every byte
        arrives in order.
        """
        self.setUpBalancer(pendingBufferBytes=1024)
        client, clientTransport = self.connectClient()
        client.dataReceived(b"x" * 1000)
        self.assertEqual(clientTransport.producerState, "producing")
        client.dataReceived(b"y" * 100)
        self.assertEqual(clientTransport.producerState, "paused")
        _, backendTransport = self.endpoints["a"].succeed()
        self.assertEqual(clientTransport.producerState, "producing")
        self.assertEqual(backendTransport.value(), b"x" * 1000 + b"y" * 100)

    def test_halfClose(self) -> None:
        """
        A client's end of stream half-closes the backend connection; the
        backend's answer still reaches the client, and when the backend ends
        too, both connections close.
        """
        self.setUpBalancer()
        client, clientTransport = self.connectClient()
        backend, backendTransport = self.endpoints["a"].succeed()
        client.dataReceived(b"request")
        client.readConnectionLost()
        self.assertTrue(backendTransport.writeClosed)
        self.assertFalse(clientTransport.lost)
        backend.dataReceived(b"response")
        backend.readConnectionLost()  # type: ignore[attr-defined]
        self.assertEqual(clientTransport.value(), b"response")
        self.assertTrue(clientTransport.lost)
        self.assertTrue(backendTransport.lost)

    def test_halfCloseBeforeConnect(self) -> None:
        """
        A client that sends its request and half-closes before the backend
        is connected still has the request delivered, then the half-close.
        """
        self.setUpBalancer()
        client, _ = self.connectClient()
        client.dataReceived(b"request")
        client.readConnectionLost()
        _, backendTransport = self.endpoints["a"].succeed()
        self.assertEqual(backendTransport.value(), b"request")
        self.assertTrue(backendTransport.writeClosed)

    def test_backendCloseClosesClient(self) -> None:
        """
        When the backend closes, the client connection is closed after its
        pending bytes, and the backend's connection count returns to zero.
        """
        self.setUpBalancer()
        _, clientTransport = self.connectClient()
        backend, backendTransport = self.endpoints["a"].succeed()
        self.assertEqual(self.backends[0].active, 1)
        backend.dataReceived(b"bye")
        backendTransport.loseConnection()
        self.assertTrue(clientTransport.lost)
        self.assertEqual(clientTransport.value(), b"bye")
        self.assertEqual(self.backends[0].active, 0)
        self.assertEqual(self.balancer.connections, set())

    def test_clientCloseClosesBackend(self) -> None:
        """
        When the client closes, the backend connection is closed too, and the
        bytes are added to the backend's counters.
        """
        self.setUpBalancer()
        client, clientTransport = self.connectClient()
        backend, backendTransport = self.endpoints["a"].succeed()
        client.dataReceived(b"12345")
        backend.dataReceived(b"123")
        clientTransport.loseConnection()
        self.assertTrue(backendTransport.lost)
        self.assertEqual(self.backends[0].active, 0)
        self.assertEqual(self.backends[0].bytesIn, 5)
        self.assertEqual(self.backends[0].bytesOut, 3)

    def test_roundRobinAcrossConnections(self) -> None:
        """
        Successive clients go to the backends in turn.
        """
        self.setUpBalancer()
        for _ in range(4):
            self.connectClient()
        self.assertEqual((self.attemptsOn("a"), self.attemptsOn("b")), (2, 2))

    def test_logLine(self) -> None:
        """
        Each finished connection logs one line naming the client, the
        backend, the bytes each way and how it ended.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.setUpBalancer()
        client, clientTransport = self.connectClient()
        backend, _ = self.endpoints["a"].succeed()
        client.dataReceived(b"abc")
        backend.dataReceived(b"defgh")
        clientTransport.loseConnection()
        finished = [e for e in observer if e.get("bytesIn") is not None]
        self.assertEqual(len(finished), 1)
        event = finished[0]
        self.assertEqual(event["client"], "192.0.2.1:56324")
        self.assertEqual(event["backend"], "a")
        self.assertEqual((event["bytesIn"], event["bytesOut"]), (3, 5))
        self.assertEqual(event["ending"], "client-closed/established")
        self.assertEqual(
            formatEvent(event),
            "192.0.2.1:56324 -> a: 3 bytes in, 5 bytes out, connect 0.000s, "
            "0.000s total, closed by client",
        )


class DontlogNormalTests(RelayTestMixin, SynchronousTestCase):
    """
    With C{logNormal} off only connections that ended in an error are
    logged.
    """

    def finishedLines(self, observer: EventLoggingObserver) -> list[str]:
        return [e["ending"] for e in observer if "ending" in e]

    def test_normalNotLogged(self) -> None:
        """
        A connection closed normally by either side leaves no line.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.setUpBalancer(logNormal=False)
        client, clientTransport = self.connectClient()
        self.endpoints["a"].succeed()
        clientTransport.loseConnection()
        _, clientTransport = self.connectClient()
        _, backendTransport = self.endpoints["b"].succeed()
        backendTransport.loseConnection()
        self.assertEqual(self.finishedLines(observer), [])

    def test_errorsLogged(self) -> None:
        """
        Timeouts and refusals are still logged.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.setUpBalancer(logNormal=False, clientTimeout=10, serverTimeout=10)
        self.connectClient()
        self.endpoints["a"].succeed()
        self.clock.advance(10)
        for backend in self.backends:
            backend.markDown("test")
        self.connectClient()
        self.assertEqual(
            self.finishedLines(observer),
            ["client-timeout/established", "no-backend/connect"],
        )


class EndingTests(RelayTestMixin, SynchronousTestCase):
    """
    Every way a client connection ends gives its event an C{ending} from
    the fixed vocabulary of L{Ending}, its HAProxy-style code, a detail
    only when there is an error message to give, and readable words on the
    log line.
    """

    def finishedEvent(self, scenario: Callable[[], None]) -> dict[str, Any]:
        """
        Run C{scenario} and return the one per-connection event it logged.
        """
        observer = EventLoggingObserver()
        globalLogPublisher.addObserver(observer)
        try:
            scenario()
        finally:
            globalLogPublisher.removeObserver(observer)
        [event] = [e for e in observer if "ending" in e]
        return event

    # The scenarios, one per ending; each builds its own balancer.

    def tlsClientCloses(self) -> None:
        self.setUpBalancer()
        self.connectClient(tls=True)[1].loseConnection()

    def tlsClientResets(self) -> None:
        self.setUpBalancer()
        self.connectClient(tls=True)[1].reset()

    def tlsHandshakeFails(self) -> None:
        self.setUpBalancer()
        _, transport = self.connectClient(tls=True)
        transport._lose(SSL.Error([("SSL routines", "", "wrong version number")]))

    def tlsHandshakeTimesOut(self) -> None:
        self.setUpBalancer(connectTimeout=5.0)
        self.connectClient(tls=True)
        self.clock.advance(5.0)

    def drainedInHandshake(self) -> None:
        self.setUpBalancer()
        self.connectClient(tls=True)
        self.balancer.drain(1.0)
        self.clock.advance(1.0)

    def clientClosesWhileConnecting(self) -> None:
        self.setUpBalancer()
        self.connectClient()[1].loseConnection()

    def clientResetsWhileConnecting(self) -> None:
        self.setUpBalancer()
        self.connectClient()[1].reset()

    def noBackend(self) -> None:
        self.setUpBalancer()
        for backend in self.backends:
            backend.markDown("test")
        self.connectClient()

    def connectRefused(self) -> None:
        self.setUpBalancer(names=("a",), retries=0)
        self.connectClient()
        self.endpoints["a"].fail()

    def connectTimesOut(self) -> None:
        self.setUpBalancer(names=("a",), retries=0, connectTimeout=3.0)
        self.connectClient()
        self.clock.advance(3.0)

    def outOfDescriptors(self) -> None:
        self.setUpBalancer()
        self.connectClient()
        self.endpoints["a"].fail(why=error.ConnectBindError(24, "Too many open files"))
        self.balancer.localErrors.stop()

    def drainedWhileConnecting(self) -> None:
        self.setUpBalancer()
        self.connectClient()
        self.balancer.drain(1.0)
        self.clock.advance(1.0)

    def clientCloses(self) -> None:
        self.setUpBalancer()
        _, transport = self.connectClient()
        self.endpoints["a"].succeed()
        transport.loseConnection()

    def serverCloses(self) -> None:
        self.setUpBalancer()
        self.connectClient()
        self.endpoints["a"].succeed()[1].loseConnection()

    def bothClose(self) -> None:
        self.setUpBalancer()
        client, _ = self.connectClient()
        backend, _ = self.endpoints["a"].succeed()
        client.readConnectionLost()
        backend.readConnectionLost()  # type: ignore[attr-defined]

    def clientResets(self) -> None:
        self.setUpBalancer()
        _, transport = self.connectClient()
        self.endpoints["a"].succeed()
        transport.reset()

    def serverResets(self) -> None:
        self.setUpBalancer()
        self.connectClient()
        self.endpoints["a"].succeed()[1].reset()

    def clientTimeoutFires(self) -> None:
        self.setUpBalancer(clientTimeout=10.0, serverTimeout=20.0)
        self.connectClient()
        self.endpoints["a"].succeed()
        self.clock.advance(10.0)

    def serverTimeoutFires(self) -> None:
        self.setUpBalancer(clientTimeout=0, serverTimeout=20.0)
        self.connectClient()
        self.endpoints["a"].succeed()
        self.clock.advance(20.0)

    def firstByteTimeoutFires(self) -> None:
        self.setUpBalancer(firstByteTimeout=5.0)
        client, _ = self.connectClient()
        self.endpoints["a"].succeed()
        client.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.clock.advance(5.0)

    def drainedWhileRelaying(self) -> None:
        self.setUpBalancer(clientTimeout=0, serverTimeout=0)
        self.connectClient()
        self.endpoints["a"].succeed()
        self.balancer.drain(1.0)
        self.clock.advance(1.0)

    def test_everyEnding(self) -> None:
        """
        Each scenario ends with its own L{Ending}, code, words and detail,
        and together they cover the whole vocabulary.
        """
        lost = "Connection to the other side was lost in a non-clean fashion"
        reset = f"{lost}: Connection reset by peer."
        tlsError = "[('SSL routines', '', 'wrong version number')]"
        refused = "Connection was refused by other side."
        emfile = "EMFILE (Too many open files)"
        expected = [
            (
                self.tlsClientCloses,
                Ending.CLIENT_CLOSED_HANDSHAKE,
                "CR",
                "closed by client during the TLS handshake",
                None,
            ),
            (
                self.tlsClientResets,
                Ending.CLIENT_RESET_HANDSHAKE,
                "CR",
                f"client connection lost during the TLS handshake: {reset}",
                reset,
            ),
            (
                self.tlsHandshakeFails,
                Ending.TLS_FAILED,
                "CR",
                f"TLS handshake failed: {tlsError}",
                tlsError,
            ),
            (
                self.tlsHandshakeTimesOut,
                Ending.HANDSHAKE_TIMEOUT,
                "cR",
                "TLS handshake timeout",
                None,
            ),
            (
                self.drainedInHandshake,
                Ending.DRAINED_HANDSHAKE,
                "KR",
                "drain timeout",
                None,
            ),
            (
                self.clientClosesWhileConnecting,
                Ending.CLIENT_CLOSED_CONNECT,
                "CC",
                "closed by client before the backend connected",
                None,
            ),
            (
                self.clientResetsWhileConnecting,
                Ending.CLIENT_RESET_CONNECT,
                "CC",
                f"client connection lost before the backend connected: {reset}",
                reset,
            ),
            (self.noBackend, Ending.NO_BACKEND, "SC", "no backend available", None),
            (
                self.connectRefused,
                Ending.CONNECT_FAILED,
                "SC",
                f"backend connect failed: {refused}",
                refused,
            ),
            (
                self.connectTimesOut,
                Ending.CONNECT_TIMEOUT,
                "sC",
                "backend connect failed: connect timeout after 3.0s",
                None,
            ),
            (
                self.outOfDescriptors,
                Ending.LOCAL_RESOURCE,
                "RC",
                f"local error: {emfile}",
                emfile,
            ),
            (
                self.drainedWhileConnecting,
                Ending.DRAINED_CONNECT,
                "KC",
                "drain timeout",
                None,
            ),
            (self.clientCloses, Ending.CLIENT_CLOSED, "--", "closed by client", None),
            (self.serverCloses, Ending.SERVER_CLOSED, "--", "closed by server", None),
            (self.bothClose, Ending.BOTH_CLOSED, "--", "closed by both sides", None),
            (
                self.clientResets,
                Ending.CLIENT_RESET,
                "CD",
                f"client connection lost: {reset}",
                reset,
            ),
            (
                self.serverResets,
                Ending.SERVER_RESET,
                "SD",
                f"server connection lost: {reset}",
                reset,
            ),
            (
                self.clientTimeoutFires,
                Ending.CLIENT_TIMEOUT,
                "cD",
                "idle timeout after 10s",
                None,
            ),
            (
                self.serverTimeoutFires,
                Ending.SERVER_TIMEOUT,
                "sD",
                "idle timeout after 20s",
                None,
            ),
            (
                self.firstByteTimeoutFires,
                Ending.FIRST_BYTE_TIMEOUT,
                "sD",
                "no response from the backend within 5s",
                None,
            ),
            (self.drainedWhileRelaying, Ending.DRAINED, "KD", "drain timeout", None),
        ]
        self.assertEqual({row[1] for row in expected}, set(Ending))
        seen = []
        for scenario, *_ in expected:
            event = self.finishedEvent(scenario)
            seen.append(
                (
                    event["ending"],
                    event["endingCode"],
                    formatEvent(event).rsplit(" total, ", 1)[1],
                    event["endingDetail"],
                )
            )
        self.assertEqual(seen, [(e.value, code, w, d) for _, e, code, w, d in expected])

    def test_phases(self) -> None:
        """
        A connection is in its handshake until a TLS client finishes it, then
        connecting until a backend is connected, then established.
        """
        self.setUpBalancer()
        client, _ = self.connectClient(tls=True)
        self.assertIs(client.phase, Phase.HANDSHAKE)
        client.handshakeCompleted()
        self.assertIs(client.phase, Phase.CONNECT)
        self.endpoints["a"].succeed()
        self.assertIs(client.phase, Phase.ESTABLISHED)
        plain, _ = self.connectClient()
        self.assertIs(plain.phase, Phase.CONNECT)

    def test_abortAfterCleanClose(self) -> None:
        """
        A connection the server closed cleanly, whose client then does not
        take the last bytes within the idle timeout, did not end normally:
        the timeout is its ending.
        """
        self.setUpBalancer(clientTimeout=10.0, serverTimeout=10.0)
        _, clientTransport = self.connectClient()
        clientTransport.holdClose = True
        _, backendTransport = self.endpoints["a"].succeed()

        def scenario() -> None:
            backendTransport.loseConnection()
            self.assertFalse(clientTransport.lost)
            self.clock.advance(10.0)

        event = self.finishedEvent(scenario)
        self.assertTrue(clientTransport.aborted)
        self.assertEqual(event["ending"], "client-timeout/established")

    def test_relayedFieldsTyped(self) -> None:
        """
        A relayed connection's event holds its byte counts and attempts as
        integers, its connect time and duration as float seconds, and the
        backend's name.
        """
        self.setUpBalancer()

        def scenario() -> None:
            client, clientTransport = self.connectClient()
            self.clock.advance(0.25)
            backend, _ = self.endpoints["a"].succeed()
            client.dataReceived(b"abc")
            backend.dataReceived(b"defgh")
            self.clock.advance(1.5)
            clientTransport.loseConnection()

        event = self.finishedEvent(scenario)
        self.assertEqual(
            {k: event[k] for k in FIELDS},
            {
                "client": "192.0.2.1:56324",
                "backend": "a",
                "bytesIn": 3,
                "bytesOut": 5,
                "connectTime": 0.25,
                "duration": 1.75,
                "attempts": 1,
                "ending": "client-closed/established",
                "endingCode": "--",
                "endingDetail": None,
            },
        )
        self.assertEqual(
            [type(event[k]) for k in ("connectTime", "duration", "attempts")],
            [float, float, int],
        )
        self.assertEqual(
            formatEvent(event),
            "192.0.2.1:56324 -> a: 3 bytes in, 5 bytes out, connect 0.250s, "
            "1.750s total, closed by client",
        )

    def test_nothingConnectedIsNull(self) -> None:
        """
        A connection that never reached a backend has no backend and no
        connect time: both are C{None} in the event (null in JSON), and
        C{-} on the log line.
        """
        self.setUpBalancer()
        for backend in self.backends:
            backend.markDown("test")
        event = self.finishedEvent(self.connectClient)
        self.assertEqual(
            (event["backend"], event["connectTime"], event["attempts"]),
            (None, None, 0),
        )
        self.assertIs(type(event["duration"]), float)
        self.assertEqual(
            formatEvent(event),
            "192.0.2.1:56324 -> -: 0 bytes in, 0 bytes out, connect -, "
            "0.000s total, no backend available",
        )

    def test_retriedConnectCountsAttempts(self) -> None:
        """
        A connection that got through on a later attempt counts them all, and
        its connect time includes the retries.
        """
        self.setUpBalancer(names=("a",), retries=2, connectTimeout=5.0)

        def scenario() -> None:
            _, clientTransport = self.connectClient()
            self.endpoints["a"].fail()
            self.clock.advance(1.0)
            self.endpoints["a"].succeed()
            clientTransport.loseConnection()

        event = self.finishedEvent(scenario)
        self.assertEqual((event["attempts"], event["connectTime"]), (2, 1.0))


#: The typed fields of the per-connection event, as docs/balancer.md lists
#: them.
FIELDS = (
    "client",
    "backend",
    "bytesIn",
    "bytesOut",
    "connectTime",
    "duration",
    "attempts",
    "ending",
    "endingCode",
    "endingDetail",
)


class ConnectFailureTests(RelayTestMixin, SynchronousTestCase):
    """
    Failed connects are retried elsewhere, never replaying sent bytes.
    """

    def test_redispatchOnRefused(self) -> None:
        """
        A refused connect marks the backend down and the same client is
        sent to the other backend at once, with its buffered bytes.
        """
        self.setUpBalancer()
        client, clientTransport = self.connectClient()
        client.dataReceived(b"hello")
        self.endpoints["a"].fail()
        self.assertFalse(self.backends[0].healthy)
        self.assertEqual(self.backends[0].active, 0)
        _, backendTransport = self.endpoints["b"].succeed()
        self.assertEqual(backendTransport.value(), b"hello")
        self.assertFalse(clientTransport.lost)

    def test_connectTimeout(self) -> None:
        """
        A connect that does not complete within the connect timeout is
        cancelled and the client goes to another backend.
        """
        self.setUpBalancer(connectTimeout=3.0)
        self.connectClient()
        self.clock.advance(2.9)
        self.assertEqual(self.attemptsOn("b"), 0)
        self.clock.advance(0.2)
        self.assertEqual(self.attemptsOn("b"), 1)
        self.assertFalse(self.backends[0].healthy)

    def test_allDownClosesClient(self) -> None:
        """
        When no backend is available the client is closed at once and the
        refusal is counted.
        """
        self.setUpBalancer()
        for backend in self.backends:
            backend.markDown("test")
        _, clientTransport = self.connectClient()
        self.assertTrue(clientTransport.lost)
        self.assertEqual(self.balancer.refused, 1)

    def test_singleBackendRetriedWithTurnaround(self) -> None:
        """
        With nothing else up, the same backend is tried again after a short
        turnaround, up to C{retries} times, then the client is closed.
        """
        self.setUpBalancer(names=("a",), retries=2, connectTimeout=5.0)
        _, clientTransport = self.connectClient()
        self.endpoints["a"].fail()
        self.assertEqual(self.attemptsOn("a"), 1)
        self.clock.advance(1.0)
        self.assertEqual(self.attemptsOn("a"), 2)
        self.endpoints["a"].fail()
        self.clock.advance(1.0)
        self.assertEqual(self.attemptsOn("a"), 3)
        self.assertFalse(clientTransport.lost)
        self.endpoints["a"].fail()
        self.assertTrue(clientTransport.lost)
        self.pool.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backendRestartsDuringRetries(self) -> None:
        """
        A backend that comes back between retries serves the client.
        """
        self.setUpBalancer(names=("a",), retries=3)
        client, clientTransport = self.connectClient()
        client.dataReceived(b"data")
        self.endpoints["a"].fail()
        self.clock.advance(1.0)
        _, backendTransport = self.endpoints["a"].succeed()
        self.assertEqual(backendTransport.value(), b"data")
        self.assertFalse(clientTransport.lost)

    def test_lastRetryAvoidsTriedBackends(self) -> None:
        """
        The last retry goes to a backend not tried yet, even when a tried
        one is available again.
        """
        self.setUpBalancer(names=("a", "b", "c"), retries=1)
        self.connectClient()
        self.endpoints["a"].fail()
        self.backends[0].markUp("back already")
        self.assertEqual(self.attemptsOn("b"), 1)

    def test_clientLeavesWhileConnecting(self) -> None:
        """
        A client that disconnects while the backend connect is in progress
        cancels the attempt; no connection is left counted.
        """
        self.setUpBalancer()
        _, clientTransport = self.connectClient()
        clientTransport.loseConnection()
        self.assertTrue(self.endpoints["a"].attempts[0][1].called)
        self.assertEqual(self.backends[0].active, 0)
        self.assertEqual(self.balancer.connections, set())
        self.pool.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TimeoutTests(RelayTestMixin, SynchronousTestCase):
    """
    Idle connections are closed; traffic keeps them open.
    """

    def test_idleTimeout(self) -> None:
        """
        A connection with no traffic for the idle timeout is closed on both
        sides.
        """
        self.setUpBalancer(clientTimeout=30.0, serverTimeout=60.0)
        _, clientTransport = self.connectClient()
        _, backendTransport = self.endpoints["a"].succeed()
        self.clock.advance(29)
        self.assertFalse(clientTransport.lost)
        self.clock.advance(1)
        self.assertTrue(clientTransport.aborted)
        self.assertTrue(backendTransport.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_trafficKeepsOpen(self) -> None:
        """
        Traffic in either direction restarts the idle clock.
        """
        self.setUpBalancer(clientTimeout=30.0, serverTimeout=30.0)
        client, clientTransport = self.connectClient()
        backend, _ = self.endpoints["a"].succeed()
        for _ in range(5):
            self.clock.advance(20)
            client.dataReceived(b".")
            self.clock.advance(20)
            backend.dataReceived(b".")
        self.assertFalse(clientTransport.lost)
        self.clock.advance(30)
        self.assertTrue(clientTransport.lost)

    def test_disabledTimeouts(self) -> None:
        """
        Timeouts of 0 leave an idle connection open and no timer behind.
        """
        self.setUpBalancer(clientTimeout=0, serverTimeout=0)
        _, clientTransport = self.connectClient()
        self.endpoints["a"].succeed()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**6)
        self.assertFalse(clientTransport.lost)


class LocalConnectErrorTests(RelayTestMixin, SynchronousTestCase):
    """
    A connect that fails because the balancer itself is out of a resource
    (descriptors, memory, buffers, local ports) says nothing about the
    backend: the backend stays up, the client is closed at once, and the
    event is counted and logged at most once per interval.
    """

    def assertLocalError(self, why: Exception, detail: str) -> None:
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.setUpBalancer()
        client, clientTransport = self.connectClient()
        client.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.endpoints["a"].fail(why=why)
        self.assertTrue(self.backends[0].healthy)
        self.assertEqual(self.backends[0].connectFailures, 0)
        self.assertEqual(self.backends[0].active, 0)
        self.assertTrue(clientTransport.aborted)
        self.assertEqual(self.attemptsOn("b"), 0)
        self.assertEqual(self.balancer.localErrors.connectErrors, 1)
        [event] = [e for e in observer if "ending" in e]
        self.assertEqual(
            (event["ending"], event["endingCode"], event["endingDetail"]),
            ("resource/connect", "RC", detail),
        )
        self.assertTrue(formatEvent(event).endswith(f", local error: {detail}"))
        warnings = [formatEvent(e) for e in observer if e.get("errno") is not None]
        self.assertEqual(len(warnings), 1)
        self.assertIn("the client is closed and the backend stays up", warnings[0])
        # A new client is served by the same backend: nothing held it down.
        self.balancer.localErrors.stop()
        self.connectClient()
        self.assertEqual(self.attemptsOn("a") + self.attemptsOn("b"), 2)

    def test_outOfDescriptors(self) -> None:
        """
        C{EMFILE} when creating the backend socket, which Twisted reports as
        C{Couldn't bind: 24: Too many open files}, does not mark the backend
        down and is not retried elsewhere.
        """
        self.assertLocalError(
            error.ConnectBindError(24, "Too many open files"),
            "EMFILE (Too many open files)",
        )

    def test_noLocalPort(self) -> None:
        """
        C{EADDRNOTAVAIL} (no free local port) is the balancer's problem too.
        """
        self.assertLocalError(
            error.ConnectError(99, "Cannot assign requested address"),
            "EADDRNOTAVAIL (Cannot assign requested address)",
        )

    def test_raisedWhileConnecting(self) -> None:
        """
        C{connectUNIX} raises L{OSError} at once instead of failing the
        attempt; that is classified the same way.
        """
        self.setUpBalancer()
        attempts: list[object] = []

        def refuse(backend: Backend, frontend: object, header: object) -> object:
            attempts.append(backend)
            raise OSError(23, "Too many open files in system")

        self.balancer.connectBackend = refuse  # type: ignore[assignment,method-assign]
        _, clientTransport = self.connectClient()
        self.assertEqual(len(attempts), 1)
        self.assertTrue(clientTransport.aborted)
        self.assertTrue(all(b.healthy for b in self.backends))
        self.assertEqual(self.balancer.localErrors.connectErrors, 1)

    def failWaitingAttempts(self, why: Exception) -> None:
        for endpoint in self.endpoints.values():
            for _, attempt in endpoint.attempts:
                if not attempt.called:
                    attempt.errback(why)

    def test_logRateLimited(self) -> None:
        """
        A flood of local errors logs one warning per interval, the next one
        saying how many were left out; every one is counted.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.setUpBalancer()
        emfile = error.ConnectBindError(24, "Too many open files")
        for _ in range(50):
            self.connectClient()
            self.failWaitingAttempts(emfile)
            self.clock.advance(0.1)
        self.clock.advance(10)
        self.connectClient()
        self.failWaitingAttempts(emfile)
        warnings = [formatEvent(e) for e in observer if e.get("errno") is not None]
        self.assertEqual(len(warnings), 2)
        self.assertIn("ulimit -n", warnings[0])
        self.assertIn("49 more local error(s) since the last message", warnings[1])
        self.assertEqual(self.balancer.localErrors.connectErrors, 51)
        self.assertTrue(all(b.healthy for b in self.backends))

    def test_backendFailureStillMarksDown(self) -> None:
        """
        An error from the backend's side (refused, unreachable, timed out)
        still marks it down and sends the client elsewhere.
        """
        self.setUpBalancer()
        self.connectClient()
        self.endpoints["a"].fail(why=error.ConnectError(113, "No route to host"))
        self.assertFalse(self.backends[0].healthy)
        self.assertEqual(self.attemptsOn("b"), 1)
        self.assertEqual(self.balancer.localErrors.connectErrors, 0)


class FirstByteTimeoutTests(RelayTestMixin, SynchronousTestCase):
    """
    With C{firstByteTimeout}, a backend that takes the connection and the
    client's request but sends nothing back (hung, or stopped while its
    kernel still completes handshakes) frees the client after that many
    seconds instead of the idle timeout.
    """

    def test_defaultIdleTimeout(self) -> None:
        """
        Without it, such a client waits for the idle timeout, now 30
        seconds by default, not 300.
        """
        self.setUpBalancer()
        client, clientTransport = self.connectClient()
        self.endpoints["a"].succeed()
        client.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.clock.advance(29.9)
        self.assertFalse(clientTransport.lost)
        self.clock.advance(0.1)
        self.assertTrue(clientTransport.aborted)

    def test_silentBackend(self) -> None:
        """
        No byte from the backend within the timeout of the client's request
        closes both sides; the log line and the backend's counter say why.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.setUpBalancer(firstByteTimeout=5.0)
        client, clientTransport = self.connectClient()
        _, backendTransport = self.endpoints["a"].succeed()
        self.clock.advance(10)
        client.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.clock.advance(4.9)
        self.assertFalse(clientTransport.lost)
        self.clock.advance(0.1)
        self.assertTrue(clientTransport.aborted)
        self.assertTrue(backendTransport.aborted)
        self.assertEqual(self.backends[0].firstByteTimeouts, 1)
        self.assertTrue(self.backends[0].healthy)
        [event] = [e for e in observer if "ending" in e]
        self.assertEqual(event["ending"], "first-byte-timeout/established")
        self.assertTrue(
            formatEvent(event).endswith(", no response from the backend within 5s")
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_requestSentWhileConnecting(self) -> None:
        """
        A request that arrived before the backend connected is timed from
        the moment it is sent on.
        """
        self.setUpBalancer(firstByteTimeout=2.0)
        client, clientTransport = self.connectClient()
        client.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.clock.advance(1)
        self.endpoints["a"].succeed()
        self.clock.advance(1.9)
        self.assertFalse(clientTransport.lost)
        self.clock.advance(0.1)
        self.assertTrue(clientTransport.aborted)

    def test_answerInTime(self) -> None:
        """
        Once the backend has sent a byte, only the idle timeout applies.
        """
        self.setUpBalancer(firstByteTimeout=5.0, clientTimeout=30, serverTimeout=30)
        client, clientTransport = self.connectClient()
        backend, _ = self.endpoints["a"].succeed()
        client.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.clock.advance(4)
        backend.dataReceived(b"HTTP/1.0 200 OK\r\n")
        self.clock.advance(25)
        self.assertFalse(clientTransport.lost)
        client.dataReceived(b"more")
        self.clock.advance(29)
        self.assertFalse(clientTransport.lost)
        self.clock.advance(1)
        self.assertEqual(
            (clientTransport.aborted, self.backends[0].firstByteTimeouts), (True, 0)
        )

    def test_backendSpeaksFirst(self) -> None:
        """
        A backend that greets first (SMTP, MySQL) has sent its first byte:
        the client's later bytes start no first-byte clock.
        """
        self.setUpBalancer(firstByteTimeout=1.0)
        client, clientTransport = self.connectClient()
        backend, _ = self.endpoints["a"].succeed()
        backend.dataReceived(b"220 ready\r\n")
        client.dataReceived(b"EHLO me\r\n")
        self.clock.advance(20)
        self.assertFalse(clientTransport.lost)

    def test_quietClient(self) -> None:
        """
        A client that has sent nothing is not waiting for an answer: the
        idle timeout applies.
        """
        self.setUpBalancer(firstByteTimeout=1.0)
        _, clientTransport = self.connectClient()
        self.endpoints["a"].succeed()
        self.clock.advance(29)
        self.assertFalse(clientTransport.lost)
        self.clock.advance(1)
        self.assertTrue(clientTransport.aborted)

    def test_longUpload(self) -> None:
        """
        The clock runs from the client's last byte: an upload that takes
        longer than the timeout is not cut off while bytes still flow.
        """
        self.setUpBalancer(firstByteTimeout=2.0)
        client, clientTransport = self.connectClient()
        self.endpoints["a"].succeed()
        for _ in range(10):
            client.dataReceived(b"x" * 1000)
            self.clock.advance(1.5)
        self.assertFalse(clientTransport.lost)
        self.clock.advance(0.5)
        self.assertTrue(clientTransport.aborted)

    def test_withoutIdleTimeouts(self) -> None:
        """
        It works with the idle timeouts turned off, and leaves no timer
        once the backend has answered.
        """
        self.setUpBalancer(firstByteTimeout=3.0, clientTimeout=0, serverTimeout=0)
        client, clientTransport = self.connectClient()
        backend, _ = self.endpoints["a"].succeed()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        client.dataReceived(b"ping")
        backend.dataReceived(b"pong")
        self.clock.advance(3)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(clientTransport.lost)
        client2, clientTransport2 = self.connectClient()
        self.endpoints["b"].succeed()
        client2.dataReceived(b"ping")
        self.clock.advance(3)
        self.assertTrue(clientTransport2.aborted)


class TLSFrontendTests(RelayTestMixin, SynchronousTestCase):
    """
    On a TLS listener the backend is chosen after the handshake.
    """

    def test_waitsForHandshake(self) -> None:
        """
        No backend connection is opened before the TLS handshake completes.
        """
        self.setUpBalancer()
        client, _ = self.connectClient(tls=True)
        self.assertEqual(self.attemptsOn("a"), 0)
        client.handshakeCompleted()
        self.assertEqual(self.attemptsOn("a"), 1)

    def test_handshakeTimeout(self) -> None:
        """
        A client that never finishes the handshake is closed after the
        connect timeout without costing a backend connection.
        """
        self.setUpBalancer(connectTimeout=5.0)
        _, clientTransport = self.connectClient(tls=True)
        self.clock.advance(5.0)
        self.assertTrue(clientTransport.lost)
        self.assertEqual(self.attemptsOn("a") + self.attemptsOn("b"), 0)


class DrainTests(RelayTestMixin, SynchronousTestCase):
    """
    A drain waits for open connections, up to a limit.
    """

    def test_nothingOpen(self) -> None:
        """
        With no connection open the drain is over at once.
        """
        self.setUpBalancer()
        self.successResultOf(self.balancer.drain(30))

    def test_waitsForConnections(self) -> None:
        """
        The drain ends when the last open connection finishes.
        """
        self.setUpBalancer()
        _, clientTransport = self.connectClient()
        self.endpoints["a"].succeed()
        drained = self.balancer.drain(30)
        self.clock.advance(10)
        self.assertNoResult(drained)
        clientTransport.loseConnection()
        self.successResultOf(drained)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeoutClosesTheRest(self) -> None:
        """
        Connections still open at the drain timeout are closed.
        """
        self.setUpBalancer(clientTimeout=0, serverTimeout=0)
        _, clientTransport = self.connectClient()
        _, backendTransport = self.endpoints["a"].succeed()
        drained = self.balancer.drain(30)
        self.clock.advance(30)
        self.successResultOf(drained)
        self.assertTrue(clientTransport.aborted)
        self.assertTrue(backendTransport.aborted)


class ClientKeyTests(SynchronousTestCase):
    """
    L{clientKeyFor} gives schedulers a stable key per client IP.
    """

    def test_keys(self) -> None:
        """
        IPv4 gives 4 bytes, IPv6 16, an IPv4-mapped IPv6 address the same key
        as its IPv4 form, a unix client none.
        """
        v4 = clientKeyFor(IPv4Address("TCP", "192.0.2.1", 1))
        self.assertEqual(v4, bytes([192, 0, 2, 1]))
        self.assertEqual(
            len(clientKeyFor(IPv6Address("TCP", "2001:db8::1", 1)) or b""), 16
        )
        self.assertEqual(clientKeyFor(IPv6Address("TCP", "::ffff:192.0.2.1", 1)), v4)
        self.assertIsNone(clientKeyFor(UNIXAddress(None)))


class DirectConnectTests(SynchronousTestCase):
    """
    Plain TCP and unix backends are connected straight through the reactor,
    with the endpoint's own settings.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.backend = Backend(name="a", endpoint="x", clock=self.reactor)
        self.pool = BackendPool([self.backend], schedulerFor("roundrobin"))

    def frontendFor(
        self, description: str, connectTimeout: Optional[float] = None
    ) -> tuple[FrontendProtocol, BackendConnector]:
        connector = BackendConnector.fromString(
            self.reactor, description, connectTimeout
        )
        settings = RelaySettings(connectTimeout=connectTimeout or 5.0)
        balancer = Balancer(self.pool, {"a": connector}, settings, self.reactor)
        frontend = FrontendFactory(balancer).buildProtocol(CLIENT)
        return frontend, connector

    def test_tcpSettings(self) -> None:
        """
        A C{tcp:} backend is connected with C{connectTCP} and the host, port,
        timeout and bind address its endpoint string gives.
        """
        frontend, connector = self.frontendFor(
            "tcp:host=10.0.0.1:port=8080:timeout=7:bindAddress=10.0.0.9"
        )
        self.assertIsNotNone(connector.direct)
        connector.connect(frontend, None)
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[0]
        self.assertEqual(
            (host, port, timeout, bindAddress), ("10.0.0.1", 8080, 7, ("10.0.0.9", 0))
        )

    def test_connectTimeoutGivenToReactor(self) -> None:
        """
        The balancer's connect timeout becomes the reactor's own connect
        timeout, and the relay arms no timer of its own for the attempt; a
        timed-out attempt is reported as a connect timeout.
        """
        frontend, connector = self.frontendFor(
            "tcp:host=10.0.0.1:port=8080:timeout=30", connectTimeout=2.5
        )
        frontend.makeConnection(StringTransport(peerAddress=CLIENT))
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[0]
        self.assertEqual(timeout, 2.5)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        factory.clientConnectionFailed(
            self.reactor.connectors[0], Failure(error.TimeoutError())
        )
        reasons = [e["why"] for e in observer if "why" in e]
        self.assertEqual(reasons, ["connect timeout after 2.5s"])

    def test_unixSettings(self) -> None:
        """
        A C{unix:} backend is connected with C{connectUNIX}.
        """
        frontend, connector = self.frontendFor("unix:path=/run/app.sock:timeout=4")
        connector.connect(frontend, None)
        path, factory, timeout, checkPID = self.reactor.unixClients[0]
        self.assertEqual((path, timeout), ("/run/app.sock", 4))

    def test_connectedWithHeader(self) -> None:
        """
        When the connection is made the header is written first and the
        attempt's L{Deferred} fires with the backend protocol.
        """
        frontend, connector = self.frontendFor("tcp:host=10.0.0.1:port=8080")
        connected = connector.connect(frontend, b"HEADER")
        factory = self.reactor.tcpClients[0][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIs(self.successResultOf(connected), protocol)
        self.assertEqual(transport.value(), b"HEADER")

    def test_failed(self) -> None:
        """
        A refused connection fails the attempt's L{Deferred}.
        """
        frontend, connector = self.frontendFor("tcp:host=10.0.0.1:port=8080")
        connected = connector.connect(frontend, None)
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(
            self.reactor.connectors[0], Failure(error.ConnectionRefusedError())
        )
        self.failureResultOf(connected, error.ConnectionRefusedError)

    def test_cancelStopsConnecting(self) -> None:
        """
        Cancelling the attempt stops the reactor's connector, and the
        failure the reactor reports afterwards is ignored.
        """
        frontend, connector = self.frontendFor("tcp:host=10.0.0.1:port=8080")
        connected = connector.connect(frontend, None)
        connected.cancel()
        self.failureResultOf(connected)
        reactorConnector = self.reactor.connectors[0]
        self.assertTrue(reactorConnector.stoppedConnecting)
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(reactorConnector, Failure(error.UserError()))

    def test_sameAsTwisted(self) -> None:
        """
        Whatever the form of a C{tcp:} or C{unix:} string, the direct
        connection goes where, and with the settings, Twisted's own endpoint
        for it would connect.
        """
        for description in [
            "tcp:host=10.0.0.1:port=8080",
            "tcp:10.0.0.1:8080",
            "tcp:10.0.0.1:port=8080",
            "tcp:host=10.0.0.1:8080",
            "tcp:host=10.0.0.1:port=8080:timeout=7:bindAddress=10.0.0.9",
            r"tcp:host=\:\:1:port=8080",
            "TCP:host=10.0.0.1:port=8080",
            "unix:path=/run/app.sock",
            "unix:/run/app.sock:timeout=4:lockfile=1",
            r"unix:path=/run/app\:1.sock:lockfile=0",
        ]:
            ours, theirs = MemoryReactorClock(), MemoryReactorClock()
            connector = BackendConnector.fromString(ours, description)
            assert connector.direct is not None, description
            connector.direct(ClientFactory())
            clientFromString(theirs, description).connect(Factory.forProtocol(Protocol))
            if theirs.tcpClients:
                host, port, _, timeout, bindAddress = ours.tcpClients[0]
                expected = theirs.tcpClients[0]
                self.assertEqual(
                    (host, port, timeout, bindAddress),
                    (expected[0], expected[1], expected[3], expected[4]),
                    description,
                )
            else:
                path, _, timeout, checkPID = ours.unixClients[0]
                expected = theirs.unixClients[0]
                self.assertEqual(
                    (path, timeout, checkPID),
                    (expected[0], expected[2], expected[3]),
                    description,
                )

    def test_tlsThroughEndpoint(self) -> None:
        """
        A TLS backend is not connected directly: the header must go below
        TLS, before the ClientHello.
        """
        frontend, connector = self.frontendFor("ssl:host=10.0.0.1:port=8443")
        self.assertIsNone(connector.direct)
        self.assertIsNotNone(connector.tlsCreator)
        connector.connect(frontend, b"HEADER")
        factory = self.reactor.tcpClients[0][2]
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 8443))
        transport = StringTransport()
        protocol.makeConnection(transport)
        sent = transport.value()
        self.assertTrue(sent.startswith(b"HEADER"))
        # A TLS handshake record (0x16) carrying a ClientHello (0x01).
        self.assertEqual((sent[6], sent[11]), (0x16, 0x01))

    def test_healthCheckConnect(self) -> None:
        """
        L{BackendConnector.connectWithPreamble}, which health checks use,
        goes through the endpoint even for a plain backend, and writes the
        preamble built from the raw transport first.
        """
        frontend, connector = self.frontendFor("tcp:host=10.0.0.1:port=8080")
        app = Protocol()
        connected = connector.connectWithPreamble(
            Factory.forProtocol(lambda: app), lambda transport: b"CHECK "
        )
        factory = self.reactor.tcpClients[0][2]
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 8080))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertIs(self.successResultOf(connected), app)
        app.transport.write(b"GET /")
        self.assertEqual(transport.value(), b"CHECK GET /")


class ForwardingTLSTransport:
    """
    Stands for Twisted's TLS transport: no half-close of its own, and
    unknown attributes forwarded to the TCP transport below, as
    L{twisted.protocols.policies.ProtocolWrapper} does.
    """

    def __init__(self, below: RelayTransport) -> None:
        self.below = below
        self.closed = False

    def loseConnection(self) -> None:
        self.closed = True

    def unregisterProducer(self) -> None:
        self.below.unregisterProducer()

    def __getattr__(self, name: str) -> object:
        return getattr(self.below, name)


class HalfCloseUnderTLSTests(RelayTestMixin, SynchronousTestCase):
    """
    A half-close is never passed around TLS to the TCP connection below it.
    """

    def test_backendEndsTLSClient(self) -> None:
        """
        When the backend finishes sending to a TLS client, the TLS
        connection is closed (sending close_notify), not the TCP write side
        under it.
        """
        self.setUpBalancer()
        client, clientTransport = self.connectClient()
        backend, _ = self.endpoints["a"].succeed()
        tls = ForwardingTLSTransport(clientTransport)
        client.transport = tls
        backend.dataReceived(b"response")
        backend.readConnectionLost()  # type: ignore[attr-defined]
        self.assertTrue(tls.closed)
        self.assertFalse(clientTransport.writeClosed)
        # A TLS transport only closes once its producer is gone.
        self.assertIsNone(clientTransport.producer)
