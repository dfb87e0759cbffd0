# -*- test-case-name: tests.unit.test_upstream -*-
"""
The receiving side of the PROXY protocol, for servers behind a balancer.

L{ProxyReceiverFactory} wraps any protocol factory: it reads the PROXY header
a trusted balancer sends first, and only then starts the wrapped protocol,
whose C{transport.getPeer()} is the real client from its very first line of
code.  The C{tlproxy:} endpoint (L{parseProxyEndpoint}) puts it in front of
any server endpoint string, below TLS when the endpoint does TLS.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any, Iterable, Optional, Tuple, Union

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import alsoProvides, directlyProvides, implementer, providedBy

from tlbalance._endpoints import describeAddress, unparseEndpoint
from tlbalance._loglevel import balancerLogger
from tlbalance.proxyprotocol import (
    DEFAULT_MAX_V2_LENGTH,
    HeaderParser,
    InvalidProxyHeader,
    ProxyHeader,
)
from tlbalance.tls import splitServerTLS

__all__ = [
    "DEFAULT_TRUSTED",
    "ProxyReceiverEndpoint",
    "ProxyReceiverFactory",
    "ProxyReceiverProtocol",
    "TrustedPeers",
    "parseProxyEndpoint",
]

_log = balancerLogger("tlbalance.upstream")

#: What C{tlproxy:} trusts when no C{trusted=} is given: a balancer on the
#: same host, over loopback or a unix socket.  Anything wider must be said
#: out loud, because whoever may send a header may claim any client address.
DEFAULT_TRUSTED = "127.0.0.0/8,::1,unix"

_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# What is left of an IPv6 address whose colons were not escaped: the
# endpoint-string parser cut it at the first one.
_IPV6_PIECE = re.compile(r"[0-9A-Fa-f]{1,4}")


@frozen
class TrustedPeers:
    """
    The peers allowed to send a PROXY header: IP networks, and unix-socket
    peers if C{unix} is set.

    @ivar networks: the trusted networks.
    @ivar unix: whether peers on a unix socket are trusted.
    """

    networks: Tuple[_Network, ...] = ()
    unix: bool = False

    @classmethod
    def fromString(cls, text: str) -> TrustedPeers:
        """
        Parse a comma-separated list such as
        C{"127.0.0.1/32,10.0.0.0/8,::1,unix"}; see L{fromList}.
        """
        return cls.fromList(text.split(","))

    @classmethod
    def fromList(cls, entries: Iterable[str]) -> TrustedPeers:
        """
        Build from entries that are each an IP network in CIDR form, a bare
        IP address (a /32 or /128), or C{"unix"}.  Blank entries are ignored.

        @raise ValueError: an entry is none of these; the message names it.
        """
        if isinstance(entries, str):
            raise TypeError("TrustedPeers.fromList takes a list; use fromString")
        networks = []
        unix = False
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry.lower() == "unix":
                unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=True))
            except ValueError as e:
                raise ValueError(
                    f"trusted peer {entry!r} is not an IP address, a CIDR "
                    f"network or 'unix': {e}"
                ) from None
        return cls(tuple(networks), unix)

    def trusts(self, address: Optional[IAddress]) -> bool:
        """
        Whether a connection from C{address} may send a PROXY header.  An
        IPv4-mapped IPv6 peer (C{::ffff:10.0.0.1}) matches IPv4 networks.
        """
        if isinstance(address, UNIXAddress):
            return self.unix
        if not isinstance(address, (IPv4Address, IPv6Address)):
            return False
        try:
            ip = ipaddress.ip_address(address.host.split("%", 1)[0])
        except ValueError:
            return False
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c in network for c in candidates for network in self.networks)


class ProxyReceiverProtocol(ProtocolWrapper):
    """
    Reads the PROXY header, then runs the wrapped protocol with this object
    as its transport.

    @ivar proxyHeader: the parsed header once it has arrived, else C{None}.
    """

    factory: ProxyReceiverFactory
    wrappedProtocol: Optional[IProtocol]  # type: ignore[assignment]
    # Whatever stream transport the reactor gives: TCP, unix, TLS, ...
    transport: Any

    def __init__(self, factory: ProxyReceiverFactory) -> None:
        self.factory = factory
        self.wrappedProtocol = None
        self.proxyHeader: Optional[ProxyHeader] = None
        self._parser = HeaderParser(factory.maxV2Length)
        self._timer: Optional[IDelayedCall] = None
        self._refused = False
        self._registered = False

    def logPrefix(self) -> str:
        """
        Name the connection after the wrapped factory, before and after the
        wrapped protocol exists.
        """
        return self.factory.logPrefix()

    def makeConnection(self, transport: Any) -> None:
        """
        Take the transport, but keep the wrapped protocol waiting for the
        header.
        """
        # Offer the wrapped protocol whatever the real transport offers
        # (ITCPTransport, ...), as Twisted's own wrappers do.
        directlyProvides(self, providedBy(transport))
        self.factory.registerProtocol(self)
        self._registered = True
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        """
        Refuse an untrusted peer at once; otherwise start the header timer.
        """
        peer = self.transport.getPeer()
        if not self.factory.trusted.trusts(peer):
            # An orderly close: nothing was read or written, and a reset
            # during the handshake would look to the client like a refused
            # connect rather than a refusal by this server.
            self._refuse("peer is not trusted to send a PROXY header", abort=False)
            return
        self._timer = self.factory.clock.callLater(
            self.factory.headerTimeout, self._headerTimedOut
        )

    def _refuse(self, reason: str, abort: bool = True) -> None:
        self._refused = True
        self._cancelTimer()
        _log.warn(
            "Dropped connection from {peer}: {reason}",
            peer=describeAddress(self.transport.getPeer()),
            reason=reason,
        )
        self.disconnecting = True
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _headerTimedOut(self) -> None:
        self._timer = None
        self._refuse(
            f"no complete PROXY header within {self.factory.headerTimeout:g} seconds"
        )

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def dataReceived(self, data: bytes) -> None:
        """
        Feed the header parser until the header is complete; pass everything
        after it, untouched, to the wrapped protocol.
        """
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._refused or self.proxyHeader is not None:
            return
        try:
            result = self._parser.feed(data)
        except InvalidProxyHeader as e:
            self._refuse(f"invalid PROXY header: {e}")
            return
        if result is None:
            return
        self._cancelTimer()
        self.proxyHeader, rest = result
        self._startWrapped(rest)

    def _startWrapped(self, rest: bytes) -> None:
        wrapped = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if wrapped is None:
            _log.info(
                "Dropped connection from {peer}: {reason}",
                peer=describeAddress(self.getPeer()),
                reason="the wrapped factory refused it",
            )
            self.loseConnection()
            return
        self.wrappedProtocol = wrapped
        if IHalfCloseableProtocol.providedBy(wrapped):
            alsoProvides(self, IHalfCloseableProtocol)
        wrapped.makeConnection(self)
        if rest and self.wrappedProtocol is not None and not self.disconnecting:
            self.wrappedProtocol.dataReceived(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Tell the wrapped protocol, if it ever started.
        """
        self._cancelTimer()
        if self._registered:
            self._registered = False
            self.factory.unregisterProtocol(self)
        wrapped, self.wrappedProtocol = self.wrappedProtocol, None
        if wrapped is not None:
            wrapped.connectionLost(reason)

    def readConnectionLost(self) -> None:
        """
        The peer closed its side; only called when the wrapped protocol is
        half-close aware.
        """
        wrapped = IHalfCloseableProtocol(self.wrappedProtocol)
        wrapped.readConnectionLost()

    def writeConnectionLost(self) -> None:
        """
        Our side was closed with L{loseWriteConnection}.
        """
        wrapped = IHalfCloseableProtocol(self.wrappedProtocol)
        wrapped.writeConnectionLost()

    # What the wrapped protocol sees: the header's addresses, and the real
    # transport for everything else.

    def getPeer(self) -> IAddress:
        """
        The client as the header describes it, or the real peer when the
        header is LOCAL/UNKNOWN or has not arrived.
        """
        if self.proxyHeader is not None and self.proxyHeader.source is not None:
            return self.proxyHeader.source
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        """
        The address the client connected to, as the header describes it, or
        the real local address.
        """
        if self.proxyHeader is not None and self.proxyHeader.destination is not None:
            return self.proxyHeader.destination
        return self.transport.getHost()

    def write(self, data: bytes) -> None:
        """
        Write to the real transport.
        """
        self.transport.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """
        Write to the real transport.
        """
        self.transport.writeSequence(data)

    def loseConnection(self) -> None:
        """
        Close the real transport after pending writes.
        """
        self.disconnecting = True
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        """
        Close the real transport at once.
        """
        self.disconnecting = True
        self.transport.abortConnection()

    def loseWriteConnection(self) -> None:
        """
        Half-close: stop writing, keep reading.
        """
        self.transport.loseWriteConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register a producer with the real transport.
        """
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """
        Unregister the producer from the real transport.
        """
        self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        """
        Stop reading from the real transport.
        """
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Resume reading from the real transport.
        """
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        Stop the real transport for good.
        """
        self.transport.stopProducing()

    def getHandle(self) -> Any:
        """
        The real transport's system handle (the socket).
        """
        return self.transport.getHandle()


class ProxyReceiverFactory(WrappingFactory):
    """
    Wraps a protocol factory so that its connections start with a PROXY
    header from a trusted peer.

    The wrapped factory's C{buildProtocol} is called only once the header
    has arrived, with the client address it names.

    @ivar trusted: who may connect and send a header.
    @ivar headerTimeout: seconds a connection has to deliver the whole header.
    @ivar clock: the timer source.
    @ivar maxV2Length: the largest v2 header accepted.
    """

    protocol = ProxyReceiverProtocol

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        trusted: TrustedPeers,
        headerTimeout: float = 5.0,
        clock: Optional[IReactorTime] = None,
        maxV2Length: int = DEFAULT_MAX_V2_LENGTH,
    ) -> None:
        """
        @param wrappedFactory: the application's factory.
        @param trusted: see L{ProxyReceiverFactory.trusted}.
        @param headerTimeout: see L{ProxyReceiverFactory.headerTimeout}; must
            be positive, since a missing timeout lets idle sockets pile up.
        @param clock: see L{ProxyReceiverFactory.clock}; the global reactor
            when C{None}.
        @param maxV2Length: see L{tlbalance.proxyprotocol.HeaderParser}.
        """
        if not (headerTimeout > 0 and math.isfinite(headerTimeout)):
            raise ValueError(
                f"the PROXY header timeout must be a positive number of seconds, "
                f"not {headerTimeout!r}"
            )
        super().__init__(wrappedFactory)
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.trusted = trusted
        self.headerTimeout = headerTimeout
        self.clock: IReactorTime = clock
        self.maxV2Length = maxV2Length

    def buildProtocol(self, addr: Optional[IAddress]) -> ProxyReceiverProtocol:
        """
        A receiver for one connection; the application's protocol comes
        later.
        """
        return self.protocol(self)

    def dropWaiting(self, why: str) -> int:
        """
        Close the connections still waiting for their PROXY header (the
        server is stopping: they have sent no application data yet).

        @param why: the reason, for the log.
        @return: how many were closed.
        """
        waiting = [
            p
            for p in list(self.protocols)
            if isinstance(p, ProxyReceiverProtocol)
            and p.wrappedProtocol is None
            and not p._refused
        ]
        for receiver in waiting:
            receiver._refuse(why)
        return len(waiting)

    def logPrefix(self) -> str:
        """
        The wrapped factory's log prefix, marked as behind PROXY.
        """
        if ILoggingContext.providedBy(self.wrappedFactory):
            prefix = self.wrappedFactory.logPrefix()
        else:
            prefix = self.wrappedFactory.__class__.__name__
        return f"{prefix} (PROXY)"


@implementer(IStreamServerEndpoint)
@frozen
class ProxyReceiverEndpoint:
    """
    A server endpoint whose connections start with a PROXY header.

    @ivar wrapped: the plain endpoint that accepts connections.
    @ivar trusted: who may send a header.
    @ivar headerTimeout: seconds to wait for it.
    @ivar clock: for the header timer and TLS write batching; the global
        reactor when C{None}.
    @ivar tls: a server TLS connection creator when TLS runs above the
        header, else C{None}.
    """

    wrapped: IStreamServerEndpoint
    trusted: TrustedPeers
    headerTimeout: float = 5.0
    clock: Optional[IReactorTime] = None
    tls: Optional[Any] = None

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen on the wrapped endpoint: PROXY header first, then TLS if any,
        then C{protocolFactory}.
        """
        factory = protocolFactory
        if self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls, False, factory, clock=self.clock)
        return self.wrapped.listen(
            ProxyReceiverFactory(factory, self.trusted, self.headerTimeout, self.clock)
        )


def _oneLine(error: Exception) -> str:
    """
    Why building an endpoint failed, in one line.
    """
    text = " ".join(str(error).split())
    if isinstance(error, LookupError) or not text:
        return f"{type(error).__name__} {text}".strip()
    return text


def parseProxyEndpoint(
    reactor: Any, *args: str, **kwargs: str
) -> ProxyReceiverEndpoint:
    """
    Build the endpoint for
    C{tlproxy:[trusted=CIDR,...:][headertimeout=SECONDS:]INNER}.

    C{INNER} is any server endpoint string: C{tcp:8081},
    C{unix:/run/app.sock}, C{ssl:8443:privateKey=key.pem},
    C{tlsni:certdir=/etc/certs:tcp:8443}.  When it does TLS, the PROXY header
    is read from the plain connection before the TLS handshake, which is
    what balancers send (unlike Twisted's C{haproxy:ssl:}, which expects the
    header inside TLS).

    C{trusted} lists the peers allowed to connect, comma-separated: CIDR
    networks, bare IPs and C{unix}; others are disconnected at once.  It
    defaults to C{127.0.0.0/8,::1,unix}, loopback only: anyone allowed to
    send a header can claim any client address, so trusting more must be
    asked for.  Colons in IPv6 entries must be escaped as Twisted's endpoint
    syntax requires: C{tlproxy:trusted=10.0.0.0/8,fd00\\:\\:/8:tcp:8081}.

    C{headertimeout} is how long a connection may take to send its header,
    5 seconds by default.

    @raise ValueError: an option is wrong, or the inner endpoint is missing
        or cannot be built; the message is one line starting with
        C{tlproxy:}, saying what is wrong and what is expected.
    """
    trustedText = kwargs.pop("trusted", DEFAULT_TRUSTED)
    timeoutText = kwargs.pop("headertimeout", "5")
    try:
        trusted = TrustedPeers.fromString(trustedText)
    except ValueError as e:
        hint = ""
        if any(_IPV6_PIECE.fullmatch(p.strip()) for p in trustedText.split(",")):
            hint = " (IPv6 colons must be escaped, as in trusted=\\:\\:1)"
        raise ValueError(f"tlproxy: {e}{hint}") from None
    if not trusted.networks and not trusted.unix:
        raise ValueError(
            "tlproxy: trusted= is empty, so every connection would be refused; "
            "give CIDR networks, IPs or unix, with IPv6 colons escaped "
            "(trusted=10.0.0.0/8,\\:\\:1)"
        )
    try:
        headerTimeout = float(timeoutText)
    except ValueError:
        raise ValueError(
            f"tlproxy: headertimeout must be a number of seconds, not {timeoutText!r}"
        ) from None
    if not (headerTimeout > 0 and math.isfinite(headerTimeout)):
        raise ValueError(
            f"tlproxy: headertimeout must be positive, not {timeoutText!r}"
        )
    if not args or not args[0]:
        raise ValueError(
            "tlproxy: needs an endpoint to listen on after its options, "
            "e.g. tlproxy:trusted=10.0.0.0/8:tcp:8081"
        )
    inner = unparseEndpoint(args, kwargs)
    try:
        plain, creator = splitServerTLS(reactor, inner)
    except Exception as e:
        hint = ""
        if isinstance(e, TypeError):
            hint = (
                " (tlproxy's own options are trusted= and headertimeout=; "
                "the others belong to the endpoint it wraps)"
            )
        raise ValueError(
            f"tlproxy: cannot listen on {inner!r}: {_oneLine(e)}{hint}"
        ) from None
    clock = reactor if IReactorTime.providedBy(reactor) else None
    return ProxyReceiverEndpoint(plain, trusted, headerTimeout, clock, creator)
