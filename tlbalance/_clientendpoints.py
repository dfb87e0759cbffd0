# -*- test-case-name: tests.unit.test_tls -*-
"""
Client endpoint strings taken apart for the balancer's backend connections:
their plain transport and their TLS, the reactor call that connects a plain
TCP or unix one directly, and connecting with a preamble (a PROXY header)
written on the raw connection before TLS starts, which is where HAProxy,
nginx and the PROXY specification expect it.

The TLS comes from the endpoint string's own options (C{ssl:}'s
C{caCertsDir} and C{hostname}, C{tls:}'s C{trustRoots}, ...), built with
Twisted's public TLS API as Twisted's parsers build it, so nothing is read
back out of an endpoint Twisted built.

L{tlbalance.tls} re-exports the TLS names; import them from there.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import idna
from attrs import frozen
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import directlyProvides, implementer

from tlbalance._endpoints import unparseEndpoint
from tlbalance._serverendpoints import bindArguments
from tlsuite._twisted import parseEndpointString

Preamble = Callable[[ITransport], bytes]

# The TLS options of an ssl: client string; the rest are TCP's.
_SSL_CLIENT_TLS_OPTIONS = ("hostname", "certKey", "privateKey", "caCertsDir")

# The arguments of a tls: client string, in the order Twisted's parser takes
# them positionally (tls:example.com:443).
_TLS_CLIENT_ARGUMENTS = (
    "host",
    "port",
    "timeout",
    "bindAddress",
    "certificate",
    "privateKey",
    "trustRoots",
    "endpoint",
)


@implementer(IOpenSSLClientConnectionCreator)
@frozen
class _ContextFactoryCreator:
    """
    Present a L{CertificateOptions} (what C{ssl:} without C{hostname=}
    makes) as a connection creator.
    """

    contextFactory: CertificateOptions

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.contextFactory.getContext(), None)


def _trustRootFrom(directory: Optional[str]) -> Any:
    """
    The authorities of a C{caCertsDir=} or C{trustRoots=} directory: every
    readable C{*.pem} file in it; C{None} (the platform's) when none is
    named.
    """
    if directory is None:
        return None
    authorities: Dict[bytes, Certificate] = {}
    parent = FilePath(directory)
    # listdir, not children(): its OSError names the directory.
    for name in sorted(parent.listdir()):
        child = parent.child(name)
        if child.splitext()[1].lower() != ".pem":
            continue
        try:
            data = child.getContent()
        except OSError:
            continue
        authority = Certificate.loadPEM(data)
        authorities[authority.digest()] = authority
    return trustRootFromCertificates(list(authorities.values()))


def _clientCertificate(
    certificatePath: Optional[str], keyPath: Optional[str]
) -> Optional[PrivateCertificate]:
    """
    The client certificate of C{certKey=}/C{certificate=} and its
    C{privateKey=} (or the same file, when that is not given).
    """
    if certificatePath is None:
        return None
    data = FilePath(certificatePath).getContent()
    if keyPath is None:
        return PrivateCertificate.loadPEM(data)
    return PrivateCertificate.fromCertificateAndKeyPair(
        Certificate.loadPEM(data),
        KeyPair.load(FilePath(keyPath).getContent(), FILETYPE_PEM),
    )


def _splitSSL(
    reactor: Any, args: Sequence[str], kwargs: Dict[str, str]
) -> Tuple[IStreamClientEndpoint, IOpenSSLClientConnectionCreator]:
    """
    Take C{ssl:host=...:port=...[:hostname=...][:caCertsDir=...]...} apart:
    a TCP endpoint with the same host, port, timeout and bind address, and
    the TLS Twisted's parser makes of the rest: verifying C{hostname} when
    it is given, not verifying at all when it is not.
    """
    tcpOptions = {k: v for k, v in kwargs.items() if k not in _SSL_CLIENT_TLS_OPTIONS}
    plain = clientFromString(reactor, unparseEndpoint(["tcp", *args], tcpOptions))
    clientCertificate = _clientCertificate(
        kwargs.get("certKey"), kwargs.get("privateKey")
    )
    trustRoot = _trustRootFrom(kwargs.get("caCertsDir"))
    hostname = kwargs.get("hostname")
    if hostname is not None:
        return plain, optionsForClientTLS(
            idna.decode(hostname),
            trustRoot=trustRoot,
            clientCertificate=clientCertificate,
        )
    return plain, _ContextFactoryCreator(
        CertificateOptions(
            trustRoot=trustRoot,
            privateKey=(
                clientCertificate.privateKey.original if clientCertificate else None
            ),
            certificate=clientCertificate.original if clientCertificate else None,
        )
    )


def _splitTLS(
    reactor: Any, args: Sequence[str], kwargs: Dict[str, str]
) -> Tuple[IStreamClientEndpoint, IOpenSSLClientConnectionCreator]:
    """
    Take C{tls:HOST:PORT[:trustRoots=...][:endpoint=...]...} apart: the
    endpoint it names (a L{HostnameEndpoint} to C{HOST:PORT} unless
    C{endpoint=} names another), and TLS verifying C{HOST}.
    """
    values = bindArguments("tls", _TLS_CLIENT_ARGUMENTS, 2, args, kwargs)
    host = values["host"]
    port = int(values["port"])
    timeout = int(values.get("timeout", "30"))
    inner = values.get("endpoint")
    plain: IStreamClientEndpoint
    if inner is not None:
        plain = clientFromString(reactor, inner)
    else:
        bindAddress = values.get("bindAddress")
        plain = HostnameEndpoint(
            reactor,
            idna.encode(host),
            port,
            timeout,
            None if bindAddress is None else (bindAddress, 0),
        )
    creator = optionsForClientTLS(
        host,
        trustRoot=_trustRootFrom(values.get("trustRoots")),
        clientCertificate=_clientCertificate(
            values.get("certificate"), values.get("privateKey")
        ),
    )
    return plain, creator


def splitClientTLS(
    reactor: Any, description: str
) -> Tuple[IStreamClientEndpoint, Optional[IOpenSSLClientConnectionCreator]]:
    """
    Build the client endpoint a string describes in two parts, its plain
    transport and its TLS, so that a PROXY header can be written on the raw
    connection before TLS starts (L{connectWithPreamble}).

    C{ssl:} becomes a C{tcp:} endpoint to the same host and port; C{tls:}
    becomes the endpoint it connects through. Their TLS is what Twisted's
    own parsers would make of the same options. Any other string is built by
    L{clientFromString<twisted.internet.endpoints.clientFromString>} as it is, with no
    TLS.

    @param reactor: what the endpoint connects with.
    @return: C{(plainEndpoint, connectionCreator)}; the creator is C{None}
        for an endpoint without TLS.
    @raise ValueError: the string is not a valid client endpoint (as
        L{clientFromString<twisted.internet.endpoints.clientFromString>} raises it);
        reading a file can raise
        C{OSError}.
    """
    if not isinstance(description, str):
        raise TypeError(
            "splitClientTLS takes (reactor, description): the endpoint "
            f"string, not {description!r}"
        )
    args, kwargs = parseEndpointString(description)
    kind = args[0].lower() if args else ""
    if kind == "ssl":
        return _splitSSL(reactor, args[1:], kwargs)
    if kind == "tls":
        return _splitTLS(reactor, args[1:], kwargs)
    return clientFromString(reactor, description), None


def directConnect(
    reactor: Any, description: str, timeout: Optional[float] = None
) -> Optional[Callable[[ClientFactory], IConnector]]:
    """
    The reactor call that makes the connection a C{tcp:} or C{unix:} client
    endpoint string describes, with the same arguments as Twisted's
    endpoint would use.

    @param timeout: the connect timeout; C{None} keeps the string's (or the
        endpoint's default, 30 seconds).
    @return: C{None} for other endpoint types, and for strings Twisted
        would refuse (building the endpoint says why).
    """
    args, kwargs = parseEndpointString(description)
    kind = args[0].lower() if args else ""
    try:
        if kind == "tcp":
            host, port, ownTimeout, bindAddress = _tcpClientArguments(args[1:], kwargs)
            return partial(
                reactor.connectTCP,
                host,
                port,
                timeout=ownTimeout if timeout is None else timeout,
                bindAddress=bindAddress,
            )
        if kind == "unix":
            path, ownTimeout, checkPID = _unixClientArguments(args[1:], kwargs)
            return partial(
                reactor.connectUNIX,
                path,
                timeout=ownTimeout if timeout is None else timeout,
                checkPID=checkPID,
            )
    except (TypeError, ValueError):
        return None
    return None


def _tcpClientArguments(
    args: Sequence[str], kwargs: Mapping[str, str]
) -> tuple[str, int, float, Optional[tuple[str, int]]]:
    """
    Host, port, timeout and bind address of a C{tcp:} client string's
    arguments (after C{tcp}), as L{TCP4ClientEndpoint} gets them: the host
    and port positional or named, the bind address on any port.

    @raise TypeError: an argument is missing or unknown.
    @raise ValueError: a number is not one.
    """
    values = dict(kwargs)
    if len(args) == 2:
        values["host"], values["port"] = args
    elif len(args) == 1:
        values["port" if "host" in values else "host"] = args[0]
    elif args:
        raise TypeError("too many positional arguments")
    host = values.pop("host")
    port = int(values.pop("port"))
    timeout = int(values.pop("timeout", "30"))
    bind = values.pop("bindAddress", None)
    if values:
        raise TypeError(f"unknown options {sorted(values)}")
    return host, port, timeout, None if bind is None else (bind, 0)


def _unixClientArguments(
    args: Sequence[str], kwargs: Mapping[str, str]
) -> tuple[str, float, bool]:
    """
    Path, timeout and lock file check of a C{unix:} client string's
    arguments (after C{unix}), as L{UNIXClientEndpoint} gets them.

    @raise TypeError: an argument is missing or unknown.
    @raise ValueError: a number is not one.
    """
    values = dict(kwargs)
    if len(args) == 1:
        values["path"] = args[0]
    elif args:
        raise TypeError("too many positional arguments")
    path = values.pop("path")
    timeout = int(values.pop("timeout", "30"))
    checkPID = bool(int(values.pop("lockfile", "0")))
    if values:
        raise TypeError(f"unknown options {sorted(values)}")
    return path, timeout, checkPID


class _PreambleProtocol(Protocol):
    """
    Writes the preamble on the raw connection, then hands the connection to
    the next protocol (TLS or the application), forwarding everything to it.
    """

    def __init__(self, inner: IProtocol, preamble: Optional[Preamble]) -> None:
        self.inner = inner
        self.preamble = preamble
        if IHalfCloseableProtocol.providedBy(inner):
            directlyProvides(self, IHalfCloseableProtocol)

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        if self.preamble is not None:
            header = self.preamble(transport)
            if header:
                transport.write(header)
        self.inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.inner.connectionLost(reason)

    def readConnectionLost(self) -> None:
        self.inner.readConnectionLost()  # type: ignore[attr-defined]

    def writeConnectionLost(self) -> None:
        self.inner.writeConnectionLost()  # type: ignore[attr-defined]

    @property
    def appProtocol(self) -> IProtocol:
        """
        The application's protocol, below TLS when there is TLS.
        """
        if isinstance(self.inner, TLSMemoryBIOProtocol):
            return self.inner.wrappedProtocol
        return self.inner


@implementer(IProtocolFactory)
class _PreambleFactory:
    def __init__(
        self,
        factory: IProtocolFactory,
        preamble: Optional[Preamble],
        creator: Optional[IOpenSSLClientConnectionCreator],
        clock: Optional[IReactorTime],
    ) -> None:
        self.preamble = preamble
        self.inner: IProtocolFactory = factory
        if creator is not None:
            tlsFactory = TLSMemoryBIOFactory(creator, True, factory, clock=clock)
            # One per connection: its start/stop lines would flood the log.
            tlsFactory.noisy = False
            self.inner = tlsFactory

    def doStart(self) -> None:
        self.inner.doStart()

    def doStop(self) -> None:
        self.inner.doStop()

    def buildProtocol(self, addr: IAddress) -> Optional[_PreambleProtocol]:
        inner = self.inner.buildProtocol(addr)
        if inner is None:
            return None
        return _PreambleProtocol(inner, self.preamble)


def connectWithPreamble(
    endpoint: IStreamClientEndpoint,
    factory: IProtocolFactory,
    preamble: Optional[Preamble],
    tlsCreator: Optional[IOpenSSLClientConnectionCreator] = None,
    clock: Optional[IReactorTime] = None,
) -> Deferred[IProtocol]:
    """
    Connect the plain C{endpoint}, write C{preamble(rawTransport)} as the
    very first bytes on the wire, then start TLS with C{tlsCreator} if there
    is one, then run C{factory}'s protocol over the result.

    @param endpoint: the plain transport, as L{splitClientTLS} gives it.
    @param preamble: builds the bytes (a PROXY header) from the raw
        transport, whose C{getHost()}/C{getPeer()} are the socket's own
        addresses; C{None} writes nothing.
    @param tlsCreator: the TLS, as L{splitClientTLS} gives it; C{None} for
        none.
    @param clock: schedules TLS write batching; C{None} for the global
        reactor.
    @return: fires with the application's protocol once connected (the TLS
        handshake may still be running); cancelling it cancels the attempt.
    """
    connecting = endpoint.connect(
        _PreambleFactory(factory, preamble, tlsCreator, clock)
    )
    return connecting.addCallback(_appProtocolOf)


def _appProtocolOf(wrapper: IProtocol) -> IProtocol:
    assert isinstance(wrapper, _PreambleProtocol)
    return wrapper.appProtocol
