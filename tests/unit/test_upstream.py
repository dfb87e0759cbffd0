"""
Tests for L{tlbalance.upstream}: the PROXY receiver a server puts behind a
balancer, and the C{tlproxy:} endpoint.
"""

from __future__ import annotations

import tempfile
from typing import Any, List, Optional

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocol,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactor,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from tests.certs import makeAuthority
from tlbalance._endpoints import describeAddress, quoteEndpointArgument
from tlbalance.proxyprotocol import (
    PP2_TYPE_AUTHORITY,
    encodeV1,
    encodeV2,
    encodeV2Local,
)
from tlbalance.upstream import (
    DEFAULT_TRUSTED,
    ProxyReceiverEndpoint,
    ProxyReceiverFactory,
    TrustedPeers,
    parseProxyEndpoint,
)

BALANCER = IPv4Address("TCP", "10.0.0.5", 40000)
LISTENER = IPv4Address("TCP", "10.0.0.9", 8081)
CLIENT = IPv4Address("TCP", "203.0.113.7", 51000)
FRONT = IPv4Address("TCP", "198.51.100.1", 443)
HEADER_V1 = encodeV1(CLIENT, FRONT)
HEADER_V2 = encodeV2(CLIENT, FRONT, tlvs=[(PP2_TYPE_AUTHORITY, b"example.com")])


def v4(host: str, port: int = 1) -> IPv4Address:
    """
    A TCP IPv4 address.
    """
    return IPv4Address("TCP", host, port)


def v6(host: str, port: int = 1) -> IPv6Address:
    """
    A TCP IPv6 address.
    """
    return IPv6Address("TCP", host, port)


class RecordingProtocol(Protocol):
    """
    An application protocol that remembers what it saw.
    """

    def __init__(self) -> None:
        self.peerAtConnect: Optional[IAddress] = None
        self.hostAtConnect: Optional[IAddress] = None
        self.chunks: List[bytes] = []
        self.lost: Optional[Failure] = None

    def connectionMade(self) -> None:
        """
        Remember the addresses the transport gives.
        """
        assert self.transport is not None
        self.peerAtConnect = self.transport.getPeer()
        self.hostAtConnect = self.transport.getHost()

    def dataReceived(self, data: bytes) -> None:
        """
        Remember the bytes.
        """
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Remember why.
        """
        self.lost = reason


@implementer(IHalfCloseableProtocol)
class HalfCloseProtocol(RecordingProtocol):
    """
    An application protocol that wants to hear about half-closes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.halfCloses: List[str] = []

    def readConnectionLost(self) -> None:
        """
        Record the peer's half-close.
        """
        self.halfCloses.append("read")

    def writeConnectionLost(self) -> None:
        """
        Record our own half-close.
        """
        self.halfCloses.append("write")


class RecordingFactory(Factory):
    """
    Builds L{RecordingProtocol}s and remembers them and the addresses it
    was given.
    """

    protocol = RecordingProtocol

    def __init__(self) -> None:
        self.built: List[RecordingProtocol] = []
        self.addresses: List[IAddress] = []

    def buildProtocol(self, addr: IAddress) -> Optional[Protocol]:
        """
        Build and remember a protocol and the address given.
        """
        self.addresses.append(addr)
        protocol = self.protocol()
        protocol.factory = self
        self.built.append(protocol)
        return protocol


class RefusingFactory(Factory):
    """
    A factory that refuses every connection, as Twisted allows.
    """

    def buildProtocol(self, addr: IAddress) -> Optional[Protocol]:
        """
        Refuse.
        """
        return None


class FullTransport(StringTransport):
    """
    A StringTransport with the half-close and handle methods real stream
    transports have.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writeClosed = False

    def loseWriteConnection(self) -> None:
        """
        Record the half-close.
        """
        self.writeClosed = True

    def getHandle(self) -> str:
        """
        A stand-in for the socket.
        """
        return "the socket"


class Connection:
    """
    One receiver connection over a StringTransport, with a Clock.
    """

    def __init__(
        self,
        peer: IAddress = BALANCER,
        trusted: str = "10.0.0.0/8",
        app: Optional[Factory] = None,
    ) -> None:
        self.clock = Clock()
        self.app = app if app is not None else RecordingFactory()
        self.factory = ProxyReceiverFactory(
            self.app, TrustedPeers.fromString(trusted), 5.0, self.clock
        )
        self.receiver = self.factory.buildProtocol(peer)
        self.transport = FullTransport(hostAddress=LISTENER, peerAddress=peer)
        self.receiver.makeConnection(self.transport)

    @property
    def appProtocol(self) -> RecordingProtocol:
        """
        The one application protocol built so far.
        """
        built = getattr(self.app, "built", [])
        assert len(built) == 1, built
        protocol: RecordingProtocol = built[0]
        return protocol

    def send(self, data: bytes) -> None:
        """
        Deliver bytes as the reactor would.
        """
        self.receiver.dataReceived(data)


class TrustedPeersTests(SynchronousTestCase):
    """
    L{TrustedPeers} decides who may send a PROXY header.
    """

    def test_table(self) -> None:
        """
        CIDRs, bare addresses and C{unix} trust exactly what they say.
        """
        cases = [
            ("127.0.0.1/32", v4("127.0.0.1"), True),
            ("127.0.0.1/32", v4("127.0.0.2"), False),
            ("10.0.0.0/8", v4("10.255.1.2"), True),
            ("10.0.0.0/8", v4("11.0.0.1"), False),
            ("10.0.0.1", v4("10.0.0.1"), True),
            ("10.0.0.1", v4("10.0.0.2"), False),
            ("::1", v6("::1"), True),
            ("::1", v6("::2"), False),
            ("2001:db8::/32", v6("2001:db8:1::5"), True),
            ("2001:db8::/32", v6("2001:db9::5"), False),
            ("10.0.0.0/8", v6("::ffff:10.1.2.3"), True),
            ("10.0.0.0/8", v6("::ffff:11.1.2.3"), False),
            ("::ffff:0:0/96", v4("10.1.2.3"), False),
            ("fe80::/10", v6("fe80::1%eth0"), True),
            ("0.0.0.0/0", v6("::1"), False),
            ("unix", UNIXAddress("/run/lb.sock"), True),
            ("unix", UNIXAddress(None), True),
            ("127.0.0.0/8", UNIXAddress("/run/lb.sock"), False),
            ("unix", v4("127.0.0.1"), False),
            ("0.0.0.0/0", v4("localhost"), False),
            (" 10.0.0.0/8 , UNIX ", UNIXAddress(None), True),
            (" 10.0.0.0/8 , UNIX ", v4("10.9.9.9"), True),
            ("127.0.0.1/32,10.0.0.0/8,::1,unix", v6("::1"), True),
        ]
        for text, address, expected in cases:
            self.assertEqual(
                TrustedPeers.fromString(text).trusts(address),
                expected,
                f"{text!r} trusts {address!r}",
            )

    def test_nothingElse(self) -> None:
        """
        A missing address or another kind of address is never trusted.
        """
        everything = TrustedPeers.fromString("0.0.0.0/0,::/0,unix")
        self.assertFalse(everything.trusts(None))
        self.assertTrue(everything.trusts(v4("192.0.2.1")))

    def test_fromList(self) -> None:
        """
        A list of entries means the same as the comma-separated string.
        """
        self.assertEqual(
            TrustedPeers.fromList(["10.0.0.0/8", "::1", "unix"]),
            TrustedPeers.fromString("10.0.0.0/8,::1,unix"),
        )
        self.assertRaises(TypeError, TrustedPeers.fromList, "10.0.0.0/8")

    def test_badEntries(self) -> None:
        """
        An entry that is not a network, an address or C{unix} is refused with
        a message naming it.
        """
        for entry in ["10.0.0.0/33", "10.0.0.1/8", "example.com", "unix:/x", "*"]:
            error = self.assertRaises(
                ValueError, TrustedPeers.fromString, f"127.0.0.1,{entry}"
            )
            self.assertIn(repr(entry), str(error))

    def test_default(self) -> None:
        """
        The C{tlproxy:} default trusts loopback and unix sockets only.
        """
        trusted = TrustedPeers.fromString(DEFAULT_TRUSTED)
        self.assertTrue(trusted.trusts(v4("127.0.0.1")))
        self.assertTrue(trusted.trusts(v4("127.8.9.10")))
        self.assertTrue(trusted.trusts(v6("::1")))
        self.assertTrue(trusted.trusts(UNIXAddress("/run/lb.sock")))
        self.assertFalse(trusted.trusts(v4("10.0.0.1")))
        self.assertFalse(trusted.trusts(v6("2001:db8::1")))


class ReceiverTests(SynchronousTestCase):
    """
    L{ProxyReceiverFactory} reads the header before the application starts.
    """

    def test_fragmentedHeader(self) -> None:
        """
        A header arriving one byte at a time is accepted (Twisted's wrapper
        drops such connections), and the application starts only when the
        last byte arrives.
        """
        for header in [HEADER_V1, HEADER_V2]:
            connection = Connection()
            for byte in header[:-1]:
                connection.send(bytes([byte]))
            self.assertEqual(connection.app.built, [])
            connection.send(header[-1:])
            self.assertEqual(connection.appProtocol.peerAtConnect, CLIENT)
            self.assertFalse(connection.transport.disconnecting)

    def test_addressesInConnectionMade(self) -> None:
        """
        Inside the application's connectionMade, and in its factory's
        buildProtocol, getPeer() is the client the header names and getHost()
        the address it connected to, not the balancer's.
        """
        connection = Connection()
        connection.send(HEADER_V2)
        protocol = connection.appProtocol
        self.assertEqual(protocol.peerAtConnect, CLIENT)
        self.assertEqual(protocol.hostAtConnect, FRONT)
        self.assertEqual(connection.app.addresses, [CLIENT])
        assert protocol.transport is not None
        self.assertEqual(protocol.transport.getPeer(), CLIENT)

    def test_restDelivered(self) -> None:
        """
        Bytes after the header in the same read reach the application right
        after connectionMade; later bytes follow unchanged.
        """
        connection = Connection()
        connection.send(HEADER_V1 + b"GET / HTTP/1.1\r\n")
        connection.send(b"Host: x\r\n")
        self.assertEqual(
            connection.appProtocol.chunks, [b"GET / HTTP/1.1\r\n", b"Host: x\r\n"]
        )

    def test_noEmptyData(self) -> None:
        """
        A header with nothing after it gives the application no empty
        dataReceived call.
        """
        connection = Connection()
        connection.send(HEADER_V1)
        self.assertEqual(connection.appProtocol.chunks, [])

    def test_proxyHeaderAttribute(self) -> None:
        """
        The application finds the whole header, TLVs included, as its
        transport's C{proxyHeader}.
        """
        connection = Connection()
        connection.send(HEADER_V2)
        transport: Any = connection.appProtocol.transport
        self.assertEqual(transport.proxyHeader.tlv(PP2_TYPE_AUTHORITY), b"example.com")
        self.assertEqual(transport.proxyHeader.version, 2)

    def test_dropWaiting(self) -> None:
        """
        When the server stops, connections still waiting for their header
        are closed at once (no application data came yet), and connections
        already handed to the application are left to finish.
        """
        clock = Clock()
        factory = ProxyReceiverFactory(
            RecordingFactory(), TrustedPeers.fromString("10.0.0.0/8"), 5.0, clock
        )
        transports = []
        for chunk in [HEADER_V1[:10], HEADER_V1]:
            receiver = factory.buildProtocol(BALANCER)
            transport = FullTransport(hostAddress=LISTENER, peerAddress=BALANCER)
            receiver.makeConnection(transport)
            receiver.dataReceived(chunk)
            transports.append(transport)
        waiting, started = transports
        self.assertEqual(factory.dropWaiting("stopping"), 1)
        self.assertTrue(waiting.disconnecting)
        self.assertFalse(started.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_untrustedPeer(self) -> None:
        """
        A peer outside the trusted networks is logged and disconnected at
        once, before it sends anything, and no application protocol is made.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        connection = Connection(peer=v4("192.0.2.66", 1234))
        self.assertTrue(connection.transport.disconnecting)
        self.assertEqual(connection.app.built, [])
        self.assertEqual(connection.clock.getDelayedCalls(), [])
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["peer"], "192.0.2.66:1234")
        self.assertIn("not trusted", events[0]["reason"])
        connection.send(HEADER_V1)
        self.assertEqual(connection.app.built, [])

    def test_trustedUnixPeer(self) -> None:
        """
        A balancer on a unix socket is trusted when C{unix} is listed.
        """
        connection = Connection(peer=UNIXAddress(None), trusted="unix")
        connection.send(HEADER_V1)
        self.assertEqual(connection.appProtocol.peerAtConnect, CLIENT)

    def test_invalidHeader(self) -> None:
        """
        A connection that does not start with a valid header is aborted as
        soon as that is certain, and the parser's reason is logged.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        connection = Connection()
        connection.send(b"GET / HTTP/1.1\r\n")
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(connection.app.built, [])
        self.assertEqual(connection.clock.getDelayedCalls(), [])
        self.assertEqual(events[0]["peer"], "10.0.0.5:40000")
        self.assertIn("not a PROXY protocol header", events[0]["reason"])
        connection.send(b"more")
        self.assertEqual(connection.app.built, [])

    def test_headerTimeout(self) -> None:
        """
        A trusted peer that has not finished its header within the timeout
        is logged and aborted.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        connection = Connection()
        connection.send(HEADER_V1[:10])
        connection.clock.advance(4.9)
        self.assertFalse(connection.transport.disconnecting)
        connection.clock.advance(0.2)
        self.assertTrue(connection.transport.disconnected)
        self.assertIn("within 5 seconds", events[0]["reason"])
        self.assertEqual(connection.app.built, [])

    def test_noTimerAfterHeader(self) -> None:
        """
        Once the header has arrived no timer is left behind, so a slow
        application conversation is not cut at the header timeout.
        """
        connection = Connection()
        connection.send(HEADER_V2)
        self.assertEqual(connection.clock.getDelayedCalls(), [])
        connection.clock.advance(60)
        self.assertFalse(connection.transport.disconnecting)

    def test_secondHeaderIsData(self) -> None:
        """
        Only the first header counts: a later PROXY line reaches the
        application as data and does not change the client address.
        """
        second = encodeV1(v4("6.6.6.6", 66), FRONT)
        connection = Connection()
        connection.send(HEADER_V1 + second)
        connection.send(second)
        protocol = connection.appProtocol
        self.assertEqual(protocol.chunks, [second, second])
        assert protocol.transport is not None
        self.assertEqual(protocol.transport.getPeer(), CLIENT)

    def test_localKeepsRealAddresses(self) -> None:
        """
        A v2 LOCAL header or a v1 UNKNOWN line leaves the real addresses in
        place.
        """
        for header in [encodeV2Local(), b"PROXY UNKNOWN\r\n"]:
            connection = Connection()
            connection.send(header)
            protocol = connection.appProtocol
            self.assertEqual(protocol.peerAtConnect, BALANCER)
            self.assertEqual(protocol.hostAtConnect, LISTENER)
            transport: Any = protocol.transport
            self.assertTrue(transport.proxyHeader.local)

    def test_lostBeforeHeader(self) -> None:
        """
        When the connection ends before the header is complete, the
        application never hears of it and no timer is left.
        """
        connection = Connection()
        connection.send(HEADER_V1[:5])
        connection.receiver.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(connection.app.built, [])
        self.assertEqual(connection.clock.getDelayedCalls(), [])
        self.assertEqual(connection.factory.protocols, {})

    def test_lostAfterHeader(self) -> None:
        """
        After the header, connectionLost reaches the application with its
        reason.
        """
        connection = Connection()
        connection.send(HEADER_V1)
        self.assertEqual(list(connection.factory.protocols), [connection.receiver])
        reason = Failure(ConnectionDone())
        connection.receiver.connectionLost(reason)
        self.assertIs(connection.appProtocol.lost, reason)
        self.assertEqual(connection.factory.protocols, {})

    def test_refusedByApplication(self) -> None:
        """
        When the application's factory refuses the connection, it is closed.
        """
        connection = Connection(app=RefusingFactory())
        connection.send(HEADER_V1)
        self.assertTrue(connection.transport.disconnecting)

    def test_passThrough(self) -> None:
        """
        The application's transport calls reach the real transport.
        """
        connection = Connection()
        connection.send(HEADER_V1)
        transport: Any = connection.appProtocol.transport
        self.assertTrue(ITransport.providedBy(transport))
        transport.write(b"a")
        transport.writeSequence([b"b", b"c"])
        self.assertEqual(connection.transport.value(), b"abc")
        producer = object()
        transport.registerProducer(producer, True)
        self.assertIs(connection.transport.producer, producer)
        transport.unregisterProducer()
        self.assertIsNone(connection.transport.producer)
        transport.pauseProducing()
        self.assertEqual(connection.transport.producerState, "paused")
        transport.resumeProducing()
        self.assertEqual(connection.transport.producerState, "producing")
        self.assertEqual(transport.getHandle(), "the socket")
        transport.loseWriteConnection()
        self.assertTrue(connection.transport.writeClosed)
        transport.loseConnection()
        self.assertTrue(connection.transport.disconnecting)
        self.assertFalse(connection.transport.disconnected)
        transport.abortConnection()
        self.assertTrue(connection.transport.disconnected)

    def test_stopProducing(self) -> None:
        """
        stopProducing reaches the real transport.
        """
        connection = Connection()
        connection.send(HEADER_V1)
        transport: Any = connection.appProtocol.transport
        transport.stopProducing()
        self.assertEqual(connection.transport.producerState, "stopped")

    def test_halfClose(self) -> None:
        """
        A half-close aware application gets readConnectionLost and
        writeConnectionLost; the receiver offers half-close to the reactor
        only then, so other applications are closed on EOF as usual.
        """
        app = RecordingFactory()
        app.protocol = HalfCloseProtocol
        connection = Connection(app=app)
        self.assertFalse(IHalfCloseableProtocol.providedBy(connection.receiver))
        connection.send(HEADER_V1)
        self.assertTrue(IHalfCloseableProtocol.providedBy(connection.receiver))
        receiver: Any = connection.receiver
        receiver.readConnectionLost()
        receiver.writeConnectionLost()
        protocol: Any = connection.appProtocol
        self.assertEqual(protocol.halfCloses, ["read", "write"])

        plain = Connection()
        plain.send(HEADER_V1)
        self.assertFalse(IHalfCloseableProtocol.providedBy(plain.receiver))

    def test_timeoutValidation(self) -> None:
        """
        The header timeout must be a positive, finite number of seconds.
        """
        for bad in [0, -1, float("inf"), float("nan")]:
            self.assertRaises(
                ValueError,
                ProxyReceiverFactory,
                RecordingFactory(),
                TrustedPeers(),
                bad,
                Clock(),
            )

    def test_logPrefix(self) -> None:
        """
        Log lines name the application's factory and the PROXY layer.
        """
        connection = Connection()
        self.assertEqual(connection.factory.logPrefix(), "RecordingFactory (PROXY)")
        self.assertEqual(connection.receiver.logPrefix(), "RecordingFactory (PROXY)")

    def test_describeAddress(self) -> None:
        """
        Addresses in log lines are short and unambiguous.
        """
        self.assertEqual(describeAddress(v4("1.2.3.4", 5)), "1.2.3.4:5")
        self.assertEqual(describeAddress(v6("::1", 5)), "[::1]:5")
        self.assertEqual(describeAddress(UNIXAddress("/a.sock")), "unix:/a.sock")
        self.assertEqual(describeAddress(UNIXAddress(None)), "unix socket")


class ClientAddressResource(Resource):
    """
    Answers with the client address as the web request sees it.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """
        Write the client's host.
        """
        address: Any = request.getClientAddress()
        return address.host.encode("ascii")


class WebSiteTests(SynchronousTestCase):
    """
    A twisted.web site behind the receiver sees the real client.
    """

    def test_clientAddress(self) -> None:
        """
        C{request.getClientAddress()} is the address from the PROXY header.
        """
        site = Site(ClientAddressResource(), reactor=MemoryReactorClock())
        factory = ProxyReceiverFactory(
            site, TrustedPeers.fromString("10.0.0.0/8"), clock=Clock()
        )
        receiver = factory.buildProtocol(BALANCER)
        transport = StringTransport(hostAddress=LISTENER, peerAddress=BALANCER)
        receiver.makeConnection(transport)
        receiver.dataReceived(
            HEADER_V1[:7]
        )  # the balancer's first segment may be short
        receiver.dataReceived(HEADER_V1[7:] + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response)
        self.assertTrue(response.endswith(b"\r\n\r\n203.0.113.7"), response)


def listenOn(testCase: SynchronousTestCase, description: str) -> Any:
    """
    Listen on C{description} with a L{MemoryReactorClock}; return the
    reactor, where the port and its real factory are recorded, and the
    application factory.
    """
    reactor = MemoryReactorClock()
    app = RecordingFactory()
    endpoint = serverFromString(reactor, description)
    testCase.assertIsInstance(endpoint, ProxyReceiverEndpoint)
    testCase.successResultOf(endpoint.listen(app))
    return reactor, app


class EndpointTests(SynchronousTestCase):
    """
    The C{tlproxy:} endpoint string, through Twisted's plugin system.
    """

    def test_tcp(self) -> None:
        """
        C{tlproxy:trusted=10.0.0.0/8:tcp:0:interface=127.0.0.1} listens on
        TCP with the inner endpoint's options and the receiver around the
        application factory.
        """
        reactor = MemoryReactor()
        endpoint = serverFromString(
            reactor, "tlproxy:trusted=10.0.0.0/8:tcp:0:interface=127.0.0.1"
        )
        app = RecordingFactory()
        self.successResultOf(endpoint.listen(app))
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        self.assertIsInstance(factory, ProxyReceiverFactory)
        self.assertIs(factory.wrappedFactory, app)
        self.assertTrue(factory.trusted.trusts(v4("10.1.1.1")))
        self.assertFalse(factory.trusted.trusts(v4("127.0.0.1")))

    def test_defaults(self) -> None:
        """
        Without options the endpoint trusts loopback and unix peers and
        waits 5 seconds for the header, on the reactor's clock.
        """
        reactor, app = listenOn(self, "tlproxy:tcp:8081")
        factory = reactor.tcpServers[0][1]
        self.assertEqual(factory.trusted, TrustedPeers.fromString(DEFAULT_TRUSTED))
        self.assertEqual(factory.headerTimeout, 5.0)
        self.assertIs(factory.clock, reactor)

    def test_options(self) -> None:
        """
        C{headertimeout} sets the timeout; escaped IPv6 networks are trusted.
        """
        reactor, app = listenOn(
            self, r"tlproxy:trusted=fd00\:\:/8,10.0.0.0/8:headertimeout=2.5:tcp:8081"
        )
        factory = reactor.tcpServers[0][1]
        self.assertEqual(factory.headerTimeout, 2.5)
        self.assertTrue(factory.trusted.trusts(v6("fd00::1")))
        self.assertTrue(factory.trusted.trusts(v4("10.2.3.4")))

    def test_unix(self) -> None:
        """
        A unix inner endpoint listens on the socket path with the receiver.
        """
        reactor, app = listenOn(self, "tlproxy:trusted=unix:unix:/run/a.sock:mode=600")
        [(path, factory, backlog, mode, wantPID)] = reactor.unixServers
        self.assertEqual((path, mode), ("/run/a.sock", 0o600))
        self.assertIsInstance(factory, ProxyReceiverFactory)
        self.assertIs(factory.wrappedFactory, app)

    def test_badOptions(self) -> None:
        """
        Wrong options are refused with a message saying which.
        """
        cases = [
            ("tlproxy:", "needs an endpoint"),
            ("tlproxy:trusted=bogus:tcp:1", "'bogus'"),
            ("tlproxy:trusted=:tcp:1", "empty"),
            ("tlproxy:headertimeout=soon:tcp:1", "'soon'"),
            ("tlproxy:headertimeout=0:tcp:1", "positive"),
        ]
        for description, words in cases:
            error = self.assertRaises(
                ValueError, serverFromString, MemoryReactor(), description
            )
            self.assertIn(words, str(error))

    def test_direct(self) -> None:
        """
        L{parseProxyEndpoint} takes the arguments as Twisted splits them.
        """
        reactor = MemoryReactorClock()
        endpoint = parseProxyEndpoint(
            reactor, "tcp", "8081", trusted="10.0.0.0/8", interface="::1"
        )
        self.successResultOf(endpoint.listen(RecordingFactory()))
        self.assertEqual(reactor.tcpServers[0][3], "::1")


class ParseErrorTests(SynchronousTestCase):
    """
    A bad C{tlproxy:} string fails with one L{ValueError} whose message is
    one line, starts with C{tlproxy:}, says what is wrong and what is
    expected, and chains no other exception (so a traceback shows it once).
    """

    def assertOneLine(self, description: str, *words: str) -> str:
        """
        Parsing C{description} fails with one clear line holding C{words}.
        """
        error = self.assertRaises(
            ValueError, serverFromString, MemoryReactor(), description
        )
        message = str(error)
        self.assertTrue(message.startswith("tlproxy: "), message)
        self.assertNotIn("\n", message)
        for word in words:
            self.assertIn(word, message)
        self.assertIsNone(error.__cause__)
        self.assertTrue(error.__context__ is None or error.__suppress_context__)
        return message

    def test_badTrustedEntry(self) -> None:
        """
        A C{trusted=} entry that is no network names the entry.
        """
        message = self.assertOneLine(
            "tlproxy:trusted=10.0.0.300/8:tcp:0", "'10.0.0.300/8'", "CIDR"
        )
        self.assertNotIn("escaped", message)

    def test_unescapedIPv6(self) -> None:
        """
        An IPv6 network written with bare colons, which the endpoint syntax
        cuts short, gets a hint to escape them.
        """
        self.assertOneLine("tlproxy:trusted=fd00::/8:tcp:0", "'fd00'", r"trusted=\:\:1")
        self.assertOneLine("tlproxy:trusted=::1:tcp:0", "empty", r"\:\:1")

    def test_badInnerEndpoint(self) -> None:
        """
        An inner endpoint Twisted cannot build is named, with Twisted's
        reason.
        """
        self.assertOneLine(
            "tlproxy:trusted=unix:tcp:https",
            "cannot listen on 'tcp:https'",
            "invalid literal for int()",
        )
        self.assertOneLine(
            "tlproxy:trusted=unix:nosuch:0", "Unknown endpoint type: 'nosuch'"
        )

    def test_misspelledOption(self) -> None:
        """
        A misspelled C{tlproxy} option lands in the inner endpoint, which
        refuses it; the message says which options are C{tlproxy}'s.
        """
        self.assertOneLine(
            "tlproxy:trust=10.0.0.0/8:tcp:0",
            "unexpected keyword argument 'trust'",
            "trusted= and headertimeout=",
        )

    def test_badInnerTLS(self) -> None:
        """
        A TLS problem of the inner endpoint is reported the same way.
        """
        self.assertOneLine("tlproxy:trusted=unix:tlsni:tcp:0", "certdir=DIRECTORY")
        missing = "/nonexistent-tlsuite-test/missing.pem"
        self.assertOneLine(
            f"tlproxy:trusted=unix:ssl:0:privateKey={missing}",
            "No such file or directory",
        )


class PreambleThenTLS(Protocol):
    """
    A client that writes a PROXY header on the raw connection and then
    runs TLS over it, as a balancer in front of a TLS server does.
    """

    def __init__(self, preamble: bytes, tlsFactory: TLSMemoryBIOFactory) -> None:
        self.preamble = preamble
        self.tlsFactory = tlsFactory
        self.tls: Optional[IProtocol] = None

    def connectionMade(self) -> None:
        """
        Write the preamble raw, then start TLS.
        """
        assert self.transport is not None
        self.transport.write(self.preamble)
        self.tls = self.tlsFactory.buildProtocol(self.transport.getPeer())
        assert self.tls is not None
        self.tls.makeConnection(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """
        Everything after the preamble is TLS.
        """
        assert self.tls is not None
        self.tls.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Pass the end on to TLS.
        """
        if self.tls is not None:
            self.tls.connectionLost(reason)


class GreetingProtocol(RecordingProtocol):
    """
    A client application that says hello once connected.
    """

    def connectionMade(self) -> None:
        """
        Say hello.
        """
        super().connectionMade()
        assert self.transport is not None
        self.transport.write(b"hello over TLS")


class TLSEndpointTests(SynchronousTestCase):
    """
    With a TLS inner endpoint the PROXY header is read below TLS, where
    balancers write it.
    """

    def setUp(self) -> None:
        """
        Make an authority and a server certificate for C{app.example}.
        """
        self.authority = makeAuthority()
        self.issued = self.authority.issue("app.example")
        self.directory = FilePath(tempfile.mkdtemp(prefix="tlsuite-test-"))
        self.addCleanup(self.directory.remove)

    def keyFile(self) -> str:
        """
        Write the server key and certificate to a file; return its path.
        """
        path = self.directory.child("app.example.key.pem")
        path.setContent(self.issued.combinedPEM())
        return path.path

    def test_layering(self) -> None:
        """
        C{tlproxy:...:ssl:...} listens on plain TCP with the receiver
        outside and TLS inside it.
        """
        reactor, app = listenOn(
            self,
            "tlproxy:trusted=10.0.0.0/8:ssl:0:privateKey="
            + quoteEndpointArgument(self.keyFile()),
        )
        factory = reactor.tcpServers[0][1]
        self.assertIsInstance(factory, ProxyReceiverFactory)
        self.assertIsInstance(factory.wrappedFactory, TLSMemoryBIOFactory)
        self.assertIs(factory.wrappedFactory.wrappedFactory, app)
        self.assertEqual(reactor.sslServers, [])

    def test_tlsni(self) -> None:
        """
        The project's C{tlsni:} endpoint is split the same way.
        """
        certdir = self.directory.child("certs")
        certdir.makedirs()
        certdir.child("app.example.pem").setContent(self.issued.combinedPEM())
        reactor, app = listenOn(
            self,
            "tlproxy:tlsni:certdir=" + quoteEndpointArgument(certdir.path) + ":tcp:0",
        )
        factory = reactor.tcpServers[0][1]
        self.assertIsInstance(factory.wrappedFactory, TLSMemoryBIOFactory)
        self.assertIs(factory.wrappedFactory.wrappedFactory, app)

    def test_handshakeAfterHeader(self) -> None:
        """
        A client that sends the PROXY header and then a TLS ClientHello
        completes the handshake, and the application inside TLS sees the
        header's client address.
        """
        reactor, app = listenOn(
            self,
            "tlproxy:trusted=10.0.0.0/8:ssl:0:privateKey="
            + quoteEndpointArgument(self.keyFile()),
        )
        serverFactory = reactor.tcpServers[0][1]
        server = serverFactory.buildProtocol(BALANCER)
        serverTransport = iosim.FakeTransport(
            server, isServer=True, hostAddress=LISTENER, peerAddress=BALANCER
        )
        clientApp = GreetingProtocol()
        clientOptions = optionsForClientTLS(
            "app.example", Certificate.loadPEM(self.authority.certPEM)
        )
        clientTLS = TLSMemoryBIOFactory(
            clientOptions, True, Factory.forProtocol(lambda: clientApp), clock=reactor
        )
        client = PreambleThenTLS(HEADER_V1, clientTLS)
        clientTransport = iosim.FakeTransport(
            client, isServer=False, hostAddress=BALANCER, peerAddress=LISTENER
        )
        pump = iosim.connect(
            server, serverTransport, client, clientTransport, clock=reactor
        )
        pump.flush()
        self.assertEqual(len(app.built), 1, "the TLS application never started")
        protocol = app.built[0]
        self.assertEqual(protocol.peerAtConnect, CLIENT)
        self.assertEqual(b"".join(protocol.chunks), b"hello over TLS")
        assert protocol.transport is not None
        protocol.transport.write(b"hello back")
        pump.flush()
        self.assertEqual(b"".join(clientApp.chunks), b"hello back")
        self.assertIsNone(clientApp.lost)
