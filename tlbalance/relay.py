# -*- test-case-name: tests.unit.test_relay -*-
"""
The layer-4 relay: one L{FrontendProtocol} per client connection, one
L{BackendProtocol} per backend connection, and the L{Balancer} they share.

A client connection picks a backend once its address is known (after the
PROXY header, when one is accepted, and after the TLS handshake on TLS
listeners), connects with bounded retries, writes the PROXY header as the
very first bytes to the backend, then relays bytes both ways with the two
transports paired as producers so that neither side can make the balancer
buffer without bound.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Callable, Optional

import attrs
from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ISSLTransport,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tlbalance import proxyprotocol
from tlbalance._clientendpoints import directConnect
from tlbalance._endpoints import describeAddress
from tlbalance._loglevel import balancerLogger
from tlbalance._sockets import setNoDelay, writerFor
from tlbalance.backends import Backend, BackendPool
from tlbalance.endings import Ending, Phase
from tlbalance.localerrors import LocalErrors, describeErrno, localErrno
from tlbalance.tls import Preamble, connectWithPreamble, splitClientTLS, tlsFacts

if TYPE_CHECKING:
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

log = balancerLogger("tlbalance.relay")

_CONNECTION_DONE = Failure(error.ConnectionDone())

# Retrying the same backend waits a little, as HAProxy does: min(connect
# timeout, 1 s), so a backend that is restarting gets a moment.
MAX_TURNAROUND = 1.0


@attrs.frozen
class RelaySettings:
    """
    The knobs of the relay, taken from the balancer configuration.

    @ivar connectTimeout: seconds allowed for one backend connect attempt.
    @ivar clientTimeout: seconds the client side may stay idle; 0 disables.
    @ivar serverTimeout: seconds the backend side may stay idle; 0 disables.
    @ivar firstByteTimeout: seconds the backend has to send its first byte
        once the client has sent some and gone quiet; 0 disables.
    @ivar retries: connect attempts after the first; the last one goes to
        another backend.
    @ivar pendingBufferBytes: client bytes held while the backend connects;
        past this the client is paused.
    @ivar proxyCRC32C: add a CRC32C TLV to PROXY v2 headers.
    @ivar logNormal: log connections that ended normally too, not only the
        ones that ended in an error.
    """

    connectTimeout: float = 5.0
    clientTimeout: float = 30.0
    serverTimeout: float = 30.0
    firstByteTimeout: float = 0.0
    retries: int = 3
    pendingBufferBytes: int = 262144
    proxyCRC32C: bool = False
    logNormal: bool = True


def clientKeyFor(address: IAddress) -> Optional[bytes]:
    """
    The key schedulers hash for a client: its packed IP address, or C{None}
    for clients without one (unix sockets).

    IPv4-mapped IPv6 addresses are reduced to IPv4, so a client keeps its
    key whichever way a dual-stack listener reports it.
    """
    if isinstance(address, IPv4Address):
        return socket.inet_pton(socket.AF_INET, address.host)
    if isinstance(address, IPv6Address):
        host = address.host.split("%", 1)[0]
        packed = socket.inet_pton(socket.AF_INET6, host)
        if packed[:12] == b"\x00" * 10 + b"\xff\xff":
            return packed[12:]
        return packed
    return None


@attrs.define
class BackendConnector:
    """
    How to reach one backend: its endpoint string taken apart into the plain
    transport and the TLS connection creator, so the PROXY header goes out
    below TLS.

    Plain TCP and unix backends are connected straight through the reactor
    (C{connectTCP}/C{connectUNIX}): the endpoint API would put one more
    protocol object between the backend socket and the relay, and every
    chunk of a response would pay a method call for it.

    @ivar plain: the plain transport's endpoint.
    @ivar tlsCreator: the TLS to run over it; C{None} for none.
    @ivar direct: connects a factory straight through the reactor, for plain
        TCP and unix backends.
    @ivar clock: schedules TLS write batching; C{None} for the global
        reactor.
    """

    plain: IStreamClientEndpoint
    tlsCreator: Optional[IOpenSSLClientConnectionCreator] = None
    direct: Optional[Callable[[ClientFactory], IConnector]] = None
    clock: Optional[IReactorTime] = None

    @classmethod
    def fromString(
        cls, reactor: Any, description: str, connectTimeout: Optional[float] = None
    ) -> BackendConnector:
        """
        Take the backend's client endpoint string apart once, at start-up,
        rather than on every connection.

        @param reactor: what connections are made with.
        @param connectTimeout: for direct connections, the reactor's own
            connect timeout, so no second timer is needed; C{None} keeps the
            endpoint string's.
        """
        plain, creator = splitClientTLS(reactor, description)
        return cls(
            plain=plain,
            tlsCreator=creator,
            direct=(
                directConnect(reactor, description, connectTimeout)
                if creator is None
                else None
            ),
            clock=reactor if IReactorTime.providedBy(reactor) else None,
        )

    def connect(
        self, frontend: FrontendProtocol, header: Optional[bytes]
    ) -> Deferred[IProtocol]:
        """
        Connect on behalf of C{frontend}, making C{header} the first bytes on
        the wire.

        Plain backends get the header from L{BackendProtocol.connectionMade};
        TLS backends get it from L{connectWithPreamble}, below the TLS layer.
        """
        if self.direct is not None:
            factory = _DirectBackendFactory(frontend, header)
            factory.connector = self.direct(factory)
            return factory.connected
        if self.tlsCreator is None:
            return self.plain.connect(_BackendFactory(frontend, header))
        preamble = None if header is None else (lambda transport: header)
        return self.connectWithPreamble(_BackendFactory(frontend, None), preamble)

    def connectWithPreamble(
        self, factory: IProtocolFactory, preamble: Optional[Preamble]
    ) -> Deferred[IProtocol]:
        """
        Connect C{factory}'s protocol through the endpoint (never directly),
        with C{preamble} below TLS: what health checks use.
        """
        return connectWithPreamble(
            self.plain, factory, preamble, self.tlsCreator, self.clock
        )


class Balancer:
    """
    What every client connection of one balancer shares: the backend pool,
    the ways to reach each backend, the settings, the clock, and the set of
    open connections (for graceful drain).

    @ivar localErrors: where the balancer's own resource errors (out of
        file descriptors, ...) are counted and logged, and what pauses
        accepting while they last.
    """

    def __init__(
        self,
        pool: BackendPool,
        connectors: dict[str, BackendConnector],
        settings: RelaySettings,
        clock: IReactorTime,
        localErrors: Optional[LocalErrors] = None,
    ) -> None:
        self.pool = pool
        self.connectors = connectors
        self.settings = settings
        self.clock = clock
        if localErrors is None:
            localErrors = LocalErrors(clock)
        self.localErrors = localErrors
        self.connections: set[FrontendProtocol] = set()
        self.accepted = 0
        self.refused = 0
        self._drained: Optional[Deferred[None]] = None

    def connectBackend(
        self, backend: Backend, frontend: FrontendProtocol, header: Optional[bytes]
    ) -> Deferred[IProtocol]:
        """
        Open a connection to C{backend} on behalf of C{frontend}.
        """
        return self.connectors[backend.name].connect(frontend, header)

    def connectionOpened(self, frontend: FrontendProtocol) -> None:
        """
        Track a new client connection.
        """
        self.connections.add(frontend)
        self.accepted += 1

    def connectionClosed(self, frontend: FrontendProtocol) -> None:
        """
        Forget a finished client connection; finish a drain if it was the
        last one.
        """
        self.connections.discard(frontend)
        if self._drained is not None and not self.connections:
            drained, self._drained = self._drained, None
            drained.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Wait for the open connections to finish, for at most C{timeout}
        seconds, then close whatever is left.

        Call it after the listeners have stopped accepting.

        @return: a L{Deferred} that fires once no connection is left.
        """
        if not self.connections:
            return succeed(None)
        log.info(
            "Draining {count} open connection(s) for up to {timeout} s",
            count=len(self.connections),
            timeout=timeout,
        )
        drained: Deferred[None] = Deferred()
        self._drained = drained
        deadline = self.clock.callLater(timeout, self._forceClose)

        def cancelDeadline(result: None) -> None:
            if deadline.active():
                deadline.cancel()

        drained.addCallback(cancelDeadline)
        return drained

    def _forceClose(self) -> None:
        log.warn(
            "Drain timeout: closing {count} connection(s) still open",
            count=len(self.connections),
        )
        for frontend in list(self.connections):
            frontend.abort(Ending.drained(frontend.phase), "drain timeout")


class _BackendFactory(Factory):
    """
    Builds the one L{BackendProtocol} of a client connection's attempt
    through an endpoint.
    """

    noisy = False

    def __init__(self, frontend: FrontendProtocol, header: Optional[bytes]) -> None:
        self.frontend = frontend
        self.header = header

    def buildProtocol(self, addr: Optional[IAddress]) -> BackendProtocol:
        return BackendProtocol(self.frontend, self.header)


class _DirectBackendFactory(ClientFactory):
    """
    Builds the L{BackendProtocol} of an attempt made straight through the
    reactor, and turns the outcome into the same cancellable L{Deferred} an
    endpoint gives.
    """

    noisy = False
    connector: Optional[IConnector] = None

    def __init__(self, frontend: FrontendProtocol, header: Optional[bytes]) -> None:
        self.frontend = frontend
        self.header = header
        self.connected: Deferred[IProtocol] = Deferred(self._cancel)

    def _cancel(self, connected: Deferred[IProtocol]) -> None:
        if self.connector is not None:
            self.connector.stopConnecting()

    def buildProtocol(self, addr: Optional[IAddress]) -> BackendProtocol:
        return BackendProtocol(self.frontend, self.header, self.connected)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.connected.called:
            self.connected.errback(reason)


@implementer(IHalfCloseableProtocol)
class BackendProtocol(Protocol):
    """
    The balancer's side of one backend connection: writes the PROXY header
    first (plain backends) and relays the backend's bytes to the client.
    """

    # Set by makeConnection before any callback runs: a TCP, unix or TLS
    # transport, which all produce and half-close.
    transport: Any

    def __init__(
        self,
        frontend: FrontendProtocol,
        header: Optional[bytes],
        connected: Optional[Deferred[IProtocol]] = None,
    ) -> None:
        self.frontend = frontend
        self.header = header
        self._connected = connected

    def connectionMade(self) -> None:
        if self.header is not None:
            self.transport.write(self.header)
        if self._connected is not None:
            connected, self._connected = self._connected, None
            connected.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.frontend.backendDataReceived(data)

    def readConnectionLost(self) -> None:
        self.frontend.backendReadClosed()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self.frontend.backendConnectionLost(reason)


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class FrontendProtocol(Protocol):
    """
    One client connection: picks a backend, connects with retries, relays.

    @ivar backend: the L{Backend} currently tried or connected.
    @ivar peer: the connected L{BackendProtocol}, once there is one.
    @ivar ending: how the connection ended, once it has.
    @ivar endingText: the same in words, for the log line: C{"idle timeout
        after 30s"}.
    @ivar endingDetail: what went wrong, when there is more to say than
        C{ending} does (an error message), else C{None}.
    """

    transport: Any

    def __init__(
        self, balancer: Balancer, listener: Optional[FrontendFactory] = None
    ) -> None:
        self.balancer = balancer
        self.listener = listener
        self.backend: Optional[Backend] = None
        self.peer: Optional[BackendProtocol] = None
        self.pending: list[bytes] = []
        self.pendingBytes = 0
        self.bytesIn = 0
        self.bytesOut = 0
        self.attempts = 0
        self.tried: list[Backend] = []
        self.ending: Optional[Ending] = None
        self.endingText = ""
        self.endingDetail: Optional[str] = None
        self.clientReadClosed = False
        self.serverReadClosed = False
        self.paused = False
        self.closed = False
        self._aborting = False
        self._connecting: Optional[Deferred[IProtocol]] = None
        self._timer: Optional[IDelayedCall] = None
        self._lastActivity = 0.0
        self._toClient: Callable[[bytes], None] = _unconnected
        self._toBackend: Callable[[bytes], None] = _unconnected
        self._started = 0.0
        self._connectedAt: Optional[float] = None
        self._clientAddress: Optional[IAddress] = None
        self._awaitingRequest = False
        self._dispatched = False

    # -- the client side ---------------------------------------------------

    def connectionMade(self) -> None:
        clock = self.balancer.clock
        self._started = self._lastActivity = clock.seconds()
        self._clientAddress = self.transport.getPeer()
        self.balancer.connectionOpened(self)
        listener = self.listener
        if listener is not None:
            listener.current += 1
            listener.total += 1
        if self._isTLS():
            # Wait for the handshake: the server name and cipher go into the
            # PROXY v2 header, and a client that fails the handshake never
            # costs a backend connection.
            self._armConnectTimer()
        else:
            self._dispatch()

    def handshakeCompleted(self) -> None:
        if self.backend is None and not self.closed:
            self._dispatch()

    def dataReceived(self, data: bytes) -> None:
        self.bytesIn += len(data)
        self._lastActivity = self.balancer.clock.seconds()
        if self.peer is not None:
            self._toBackend(data)
            if self._awaitingRequest:
                self._requestSent()
            return
        self.pending.append(data)
        self.pendingBytes += len(data)
        if self.pendingBytes >= self.balancer.settings.pendingBufferBytes:
            # The backend is not there yet: stop reading rather than buffer.
            self.transport.pauseProducing()
            self.paused = True

    def readConnectionLost(self) -> None:
        self.clientReadClosed = True
        if self.peer is not None:
            _halfClose(self.peer.transport)
            self._closeIfBothDone()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        if self.ending is None:
            self._clientEnded(reason)
        self.closed = True
        self._stopTimer()
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        if self.peer is not None:
            _close(self.peer.transport, self._aborting)
        else:
            self._finish()

    # -- choosing and connecting a backend ---------------------------------

    def _isTLS(self) -> bool:
        return isinstance(self.transport, TLSMemoryBIOProtocol) or (
            ISSLTransport.providedBy(self.transport)
        )

    def _dispatch(self) -> None:
        self._dispatched = True
        backend = self.balancer.pool.pick(
            clientKeyFor(self._clientAddress),  # type: ignore[arg-type]
            (),
        )
        if backend is None:
            self.balancer.refused += 1
            self.abort(Ending.NO_BACKEND, "no backend available")
            return
        self._connectTo(backend)

    def _connectTo(self, backend: Backend) -> None:
        self.backend = backend
        self.tried.append(backend)
        backend.connectionStarted()
        header = self._proxyHeader(backend)
        if self.balancer.connectors[backend.name].direct is None:
            self._armConnectTimer()
        else:
            # connectTCP/connectUNIX time the attempt themselves (given the
            # connect timeout at start-up): one timer per connection fewer.
            self._stopTimer()
        try:
            connecting = self.balancer.connectBackend(backend, self, header)
        except Exception:
            connecting = _failed(Failure())
        self._connecting = connecting
        connecting.addCallbacks(
            self._connected,
            self._connectFailed,
            callbackArgs=(backend,),
            errbackArgs=(backend,),
        )

    def _proxyHeader(self, backend: Backend) -> Optional[bytes]:
        version = backend.sendProxy
        if version is None:
            return None
        source = self.transport.getPeer()
        destination = self.transport.getHost()
        if version == "v1":
            return proxyprotocol.encodeV1(source, destination)
        tlvs: list[tuple[int, bytes]] = []
        facts = tlsFacts(self.transport)
        if facts is not None:
            if facts.serverName:
                tlvs.append(
                    (proxyprotocol.PP2_TYPE_AUTHORITY, facts.serverName.encode("utf-8"))
                )
            tlvs.append(
                (
                    proxyprotocol.PP2_TYPE_SSL,
                    proxyprotocol.sslTLV(version=facts.version, cipher=facts.cipher),
                )
            )
        return proxyprotocol.encodeV2(
            source,
            destination,
            tlvs=tlvs,
            crc32c=self.balancer.settings.proxyCRC32C,
        )

    def _connected(self, protocol: IProtocol, backend: Backend) -> None:
        self._connecting = None
        if self.closed:
            # The client left while the connect was completing.
            backend.connectionEnded()
            protocol.transport.loseConnection()  # type: ignore[attr-defined]
            return
        assert isinstance(protocol, BackendProtocol)
        self.peer = protocol
        now = self.balancer.clock.seconds()
        self._connectedAt = now
        self._lastActivity = now
        self._rearmIdleTimer()
        if self.balancer.settings.firstByteTimeout and not self.bytesIn:
            self._awaitingRequest = True
        peerTransport = protocol.transport
        setNoDelay(self.transport)
        setNoDelay(peerTransport)
        self._toClient = writerFor(self.transport)
        self._toBackend = writerFor(peerTransport)
        # Pair the transports as producers (as twisted.protocols.portforward
        # does): when one side's write buffer fills, the other stops reading.
        peerTransport.registerProducer(self.transport, True)
        self.transport.registerProducer(peerTransport, True)
        if self.pending:
            peerTransport.writeSequence(self.pending)
            self.pending = []
            self.pendingBytes = 0
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()
        if self.clientReadClosed:
            _halfClose(peerTransport)

    def _connectFailed(self, reason: Failure, backend: Backend) -> None:
        self._connecting = None
        backend.connectionEnded()
        if self.closed:
            # connectionLost cancelled this attempt and finishes the log.
            return
        number = localErrno(reason)
        if number is not None:
            # The balancer is out of descriptors, memory or local ports: the
            # backend is not at fault, and any other backend would fail the
            # same way now.
            self.balancer.localErrors.connectFailed(
                number, backend.name, describeAddress(self._clientAddress)
            )
            described = describeErrno(number)
            self.abort(Ending.LOCAL_RESOURCE, f"local error: {described}", described)
            return
        timedOut = reason.check(
            error.ConnectingCancelledError, CancelledError, error.TimeoutError
        )
        if timedOut:
            why = f"connect timeout after {self.balancer.settings.connectTimeout}s"
        else:
            why = reason.getErrorMessage()
        backend.connectFailed(why)
        log.info(
            "Connect to {backend} failed for {client}: {why}",
            backend=backend.name,
            client=describeAddress(self._clientAddress),
            why=why,
        )
        self.attempts += 1
        settings = self.balancer.settings
        if self.attempts > settings.retries:
            if timedOut:
                self.abort(Ending.CONNECT_TIMEOUT, f"backend connect failed: {why}")
            else:
                self.abort(Ending.CONNECT_FAILED, f"backend connect failed: {why}", why)
            return
        self._stopTimer()
        # The failed backend is marked down now (passive check), so the next
        # pick goes elsewhere; the last retry also avoids every backend
        # tried so far (HAProxy's redispatch).
        key = clientKeyFor(self._clientAddress)  # type: ignore[arg-type]
        lastRetry = self.attempts == settings.retries
        candidate = self.balancer.pool.pick(key, self.tried if lastRetry else ())
        if candidate is None and lastRetry:
            candidate = self.balancer.pool.pick(key, ())
        # Counted on the failure path only: what the stats show as retries
        # and redispatches (HAProxy's wretr and wredis).
        backend.retries += 1
        if candidate is not None:
            if candidate is not backend:
                backend.redispatches += 1
            self._connectTo(candidate)
        else:
            # Nothing else is up: try the same backend again after a short
            # turnaround, in case it is only restarting.
            delay = min(settings.connectTimeout, MAX_TURNAROUND)
            self._timer = self.balancer.clock.callLater(delay, self._retrySame, backend)

    def _retrySame(self, backend: Backend) -> None:
        self._timer = None
        if not self.closed:
            self._connectTo(backend)

    # -- the backend side --------------------------------------------------

    def backendDataReceived(self, data: bytes) -> None:
        """
        Relay bytes from the backend to the client.
        """
        self.bytesOut += len(data)
        self._lastActivity = self.balancer.clock.seconds()
        self._toClient(data)

    def backendReadClosed(self) -> None:
        """
        The backend finished sending: pass the half-close on to the client.
        """
        self.serverReadClosed = True
        _halfClose(self.transport)
        self._closeIfBothDone()

    def backendConnectionLost(self, reason: Failure) -> None:
        """
        The backend connection is gone: close the client once its pending
        writes are flushed.
        """
        if self.peer is None:
            # A connection the client no longer wanted (it left while the
            # connect completed): the client's ending stands.
            return
        if self.ending is None:
            if reason.check(error.ConnectionDone):
                self._end(Ending.SERVER_CLOSED, "closed by server")
            else:
                why = reason.getErrorMessage()
                self._end(Ending.SERVER_RESET, f"server connection lost: {why}", why)
        self.peer = None
        if not self.closed:
            _close(self.transport, self._aborting)
        else:
            self._finish()

    def _closeIfBothDone(self) -> None:
        if self.clientReadClosed and self.serverReadClosed:
            if self.ending is None:
                self._end(Ending.BOTH_CLOSED, "closed by both sides")
            self.transport.loseConnection()

    # -- ending ------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """
        Where this connection stands: in its TLS handshake, connecting to a
        backend, or relaying.
        """
        if self._connectedAt is not None:
            return Phase.ESTABLISHED
        if self._dispatched:
            return Phase.CONNECT
        return Phase.HANDSHAKE

    def abort(self, ending: Ending, text: str, detail: Optional[str] = None) -> None:
        """
        Close both sides at once, recording how it ended for the log line.

        An abort after a clean close by one side (while the other was still
        sending, say) is what ended the connection: it replaces that
        ending.

        @param ending: how the connection ended.
        @param text: the same in words, e.g. C{"idle timeout after 30s"}.
        @param detail: an error message, or C{None}.
        """
        if self.ending is None or self.ending.normal:
            self.ending, self.endingText, self.endingDetail = ending, text, detail
        self._aborting = True
        if self.peer is not None:
            _close(self.peer.transport, True)
        if not self.closed:
            _close(self.transport, True)

    def _end(self, ending: Ending, text: str, detail: Optional[str] = None) -> None:
        self.ending, self.endingText, self.endingDetail = ending, text, detail

    def _clientEnded(self, reason: Failure) -> None:
        phase = self.phase
        if reason.check(error.ConnectionDone):
            self._end(Ending.clientClosed(phase), "closed by client" + _WHILE[phase])
            return
        why = reason.getErrorMessage()
        if phase is Phase.HANDSHAKE and reason.check(SSL.Error):
            self._end(Ending.TLS_FAILED, f"TLS handshake failed: {why}", why)
            return
        self._end(
            Ending.clientReset(phase),
            f"client connection lost{_WHILE[phase]}: {why}",
            why,
        )

    def _finish(self) -> None:
        if self.backend is not None and self.peer is None and self._counted():
            self.backend.connectionEnded()
            self.backend.bytesIn += self.bytesIn
            self.backend.bytesOut += self.bytesOut
        self.balancer.connectionClosed(self)
        if self.listener is not None:
            self.listener.current -= 1
        ending = self.ending
        if ending is None:
            # connectionLost records an ending before anything finishes.
            ending = Ending.clientClosed(self.phase)
        if ending.normal and not self.balancer.settings.logNormal:
            return
        duration = round(self.balancer.clock.seconds() - self._started, 6)
        connectTime = (
            None
            if self._connectedAt is None
            else round(self._connectedAt - self._started, 6)
        )
        client = describeAddress(self._clientAddress)
        backend = self.backend.name if self.backend is not None else None
        # One field in the format string: observers format it with
        # string.Formatter, which costs per field, once per connection. The
        # typed parts stay in the event for structured (JSON) observers;
        # docs/balancer.md lists them.
        log.info(
            "{connection}",
            connection=(
                f"{client} -> {'-' if backend is None else backend}: "
                f"{self.bytesIn} bytes in, {self.bytesOut} bytes out, connect "
                f"{'-' if connectTime is None else f'{connectTime:.3f}s'}, "
                f"{duration:.3f}s total, {self.endingText or ending.value}"
            ),
            client=client,
            backend=backend,
            bytesIn=self.bytesIn,
            bytesOut=self.bytesOut,
            connectTime=connectTime,
            duration=duration,
            ending=ending.value,
            endingCode=ending.code,
            endingDetail=self.endingDetail,
            attempts=self.attempts + (1 if self.backend is not None else 0),
        )

    def _counted(self) -> bool:
        # A backend's connection count covers the connected phase; failed
        # attempts were already uncounted in _connectFailed.
        return self._connectedAt is not None

    # -- timers ------------------------------------------------------------

    def _armConnectTimer(self) -> None:
        self._stopTimer()
        self._timer = self.balancer.clock.callLater(
            self.balancer.settings.connectTimeout, self._connectTimedOut
        )

    def _connectTimedOut(self) -> None:
        self._timer = None
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        elif self.backend is None:
            self.abort(Ending.HANDSHAKE_TIMEOUT, "TLS handshake timeout")

    def _idleLimit(self) -> float:
        settings = self.balancer.settings
        limits = [t for t in (settings.clientTimeout, settings.serverTimeout) if t > 0]
        return min(limits) if limits else 0.0

    def _awaitingFirstByte(self) -> bool:
        # The client has said something and the backend nothing yet.
        return self.bytesOut == 0 and self.bytesIn > 0

    def _limit(self) -> tuple[float, bool]:
        """
        The seconds of silence allowed now (0: no limit), and whether they
        are the first-byte timeout: it applies while the backend owes its
        first byte, when it is shorter than the idle timeout.
        """
        limit = self._idleLimit()
        firstByte = self.balancer.settings.firstByteTimeout
        if firstByte and (not limit or firstByte < limit) and self._awaitingFirstByte():
            return firstByte, True
        return limit, False

    def _requestSent(self) -> None:
        # The first client bytes went to a connected backend: its first-byte
        # clock starts, sooner than the idle timer would look.
        self._awaitingRequest = False
        if self.bytesOut == 0:
            self._rearmIdleTimer()

    def _rearmIdleTimer(self) -> None:
        self._stopTimer()
        limit, _ = self._limit()
        if limit:
            self._timer = self.balancer.clock.callLater(limit, self._idleCheck)

    def _idleCheck(self) -> None:
        # A lazy timer: traffic only records a time, and the timer looks at
        # it when it fires and sleeps again for whatever is left. Every byte
        # read from one side is written to the other, so a relayed
        # connection has a single idleness; until the backend's first byte,
        # all of it is the client's.
        self._timer = None
        limit, firstByte = self._limit()
        if not limit:
            return
        now = self.balancer.clock.seconds()
        idle = now - self._lastActivity
        if idle >= limit:
            if not firstByte:
                self.abort(self._idleEnding(), f"idle timeout after {limit:g}s")
                return
            if self.backend is not None:
                self.backend.firstByteTimeouts += 1
            self.abort(
                Ending.FIRST_BYTE_TIMEOUT,
                f"no response from the backend within {limit:g}s",
            )
            return
        self._timer = self.balancer.clock.callLater(limit - idle, self._idleCheck)

    def _idleEnding(self) -> Ending:
        # The idle limit is the smaller non-zero of the two timeouts: name
        # the setting that fired.
        settings = self.balancer.settings
        client, server = settings.clientTimeout, settings.serverTimeout
        if client and (not server or client <= server):
            return Ending.CLIENT_TIMEOUT
        return Ending.SERVER_TIMEOUT

    def _stopTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None


class FrontendFactory(Factory):
    """
    Builds a L{FrontendProtocol} for each client connection of a listener,
    and counts that listener's connections.

    @ivar name: the listener's endpoint string, for stats.
    @ivar current: its client connections open now.
    @ivar total: its client connections since the balancer started.
    """

    noisy = False

    def __init__(self, balancer: Balancer, name: str = "") -> None:
        self.balancer = balancer
        self.name = name
        self.current = 0
        self.total = 0

    def buildProtocol(self, addr: Optional[IAddress]) -> FrontendProtocol:
        protocol = FrontendProtocol(self.balancer, self)
        protocol.factory = self
        return protocol


def _unconnected(data: bytes) -> None:
    raise RuntimeError("the relay is not connected yet")


def _halfClose(transport: ITransport) -> None:
    """
    Tell C{transport}'s peer we have nothing more to send.

    Called once the other side of the relay has finished, so its transport,
    registered here as the producer, has nothing more to give: unregister it
    first, or a TLS transport would wait for it before closing.
    """
    transport.unregisterProducer()  # type: ignore[attr-defined]
    # Looked up on the type, not the instance: Twisted's protocol wrappers
    # (TLS among them) forward unknown attributes to the transport below,
    # and shutting the TCP write side under TLS would skip close_notify and
    # could cut off bytes TLS still holds. TLS has no half-close: close it.
    loseWrite = getattr(type(transport), "loseWriteConnection", None)
    if loseWrite is not None:
        loseWrite(transport)
    else:
        transport.loseConnection()


def _close(transport: ITransport, abort: bool) -> None:
    """
    Close C{transport}: at once when C{abort}, else after its pending
    writes (unregistering the finished peer as its producer first, as in
    L{_halfClose}).
    """
    abortConnection: Optional[Callable[[], None]] = getattr(
        transport, "abortConnection", None
    )
    if abort and abortConnection is not None:
        abortConnection()
    else:
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()


def _failed(reason: Failure) -> Deferred[IProtocol]:
    d: Deferred[IProtocol] = Deferred()
    d.errback(reason)
    return d


# How the log line says where a client connection stood when it ended.
_WHILE = {
    Phase.HANDSHAKE: " during the TLS handshake",
    Phase.CONNECT: " before the backend connected",
    Phase.ESTABLISHED: "",
}
