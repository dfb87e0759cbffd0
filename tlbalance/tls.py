# -*- test-case-name: tests.unit.test_tls -*-
"""
TLS for tlbalance: the C{tlsni:} listener that picks a certificate by server
name, splitting TLS off endpoints so a PROXY header can travel below it (and
rebuilding an C{ssl:} listener's TLS with tlbalance's settings), and the
facts about a TLS connection that PROXY v2 headers carry.

Both directions put the PROXY header on the raw connection, before the TLS
ClientHello: that is what HAProxy, nginx and the PROXY specification expect
(Twisted's own C{haproxy:ssl:} does the reverse).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from inspect import getclosurevars
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from attrs import evolve, frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    _WrapperEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import directlyProvides, implementer

from tlbalance._endpoints import unparseEndpoint
from tlbalance._loglevel import balancerLogger
from tlbalance._tlscontext import (
    DEFAULT_CIPHERS,
    SESSION_LIFETIME,
    TLS13_CIPHERSUITES,
    SessionContext,
    SingleCertificate,
    TLSConfigError,
    TLSSettings,
    checkCiphers,
    withWorkingALPN,
)

__all__ = [
    "DEFAULT_CIPHERS",
    "SESSION_LIFETIME",
    "SNICertificateDirectory",
    "SingleCertificate",
    "TLS13_CIPHERSUITES",
    "TLSConfigError",
    "TLSFacts",
    "TLSServerEndpoint",
    "TLSSettings",
    "checkCiphers",
    "connectWithPreamble",
    "ensureSelfSigned",
    "parseSNIEndpoint",
    "selfSignedPEM",
    "splitClientTLS",
    "splitServerTLS",
    "tlsFacts",
]

_log = balancerLogger("tlbalance.tls")

Preamble = Callable[[ITransport], bytes]


# Certificates and contexts.

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL
)


def _publicKeyBytes(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )


def _namesOf(certificate: x509.Certificate) -> Tuple[str, ...]:
    """
    The names a certificate serves: its SAN DNS names, or its common name
    when it has no SAN at all (RFC 6125 ignores the CN once a SAN exists).
    """
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        commonNames = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(_normalName(str(a.value)) for a in commonNames)
    return tuple(_normalName(n) for n in san.get_values_for_type(x509.DNSName))


def _normalName(name: str) -> str:
    return name.lower().rstrip(".")


@frozen
class _CertificateFile:
    """
    One loaded PEM file of a certificate directory.
    """

    path: FilePath[str]
    names: Tuple[str, ...]
    context: SSL.Context


def _loadCertificateFile(
    path: FilePath[str], settings: TLSSettings
) -> _CertificateFile:
    """
    Read a PEM file holding a private key and a certificate, optionally
    followed by its chain, and build its context with C{settings}.

    @raise TLSConfigError: naming the file when something is missing, broken
        or mismatched.
    """
    where = path.path
    try:
        data = path.getContent()
    except OSError as e:
        raise TLSConfigError(f"{where}: cannot read: {e.strerror}") from e
    keys: List[bytes] = []
    certificates: List[bytes] = []
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1)
        if label.endswith(b"PRIVATE KEY"):
            keys.append(match.group(0))
        elif label == b"CERTIFICATE":
            certificates.append(match.group(0))
    if not keys:
        raise TLSConfigError(f"{where}: no private key")
    if len(keys) > 1:
        raise TLSConfigError(f"{where}: more than one private key")
    if not certificates:
        raise TLSConfigError(f"{where}: no certificate")
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except TypeError as e:
        raise TLSConfigError(f"{where}: the private key is encrypted") from e
    except ValueError as e:
        raise TLSConfigError(f"{where}: unreadable private key ({e})") from e
    try:
        parsed = [x509.load_pem_x509_certificate(c) for c in certificates]
    except ValueError as e:
        raise TLSConfigError(f"{where}: unreadable certificate ({e})") from e
    certificate, chain = parsed[0], parsed[1:]
    if _publicKeyBytes(key.public_key()) != _publicKeyBytes(certificate.public_key()):
        raise TLSConfigError(
            f"{where}: the private key does not match the certificate "
            "(the first certificate in the file must be the server's own)"
        )
    try:
        context = settings.certificateContext(key, certificate, chain)
    except SSL.Error as e:
        raise TLSConfigError(f"{where}: OpenSSL refused it: {e}") from e
    return _CertificateFile(path, _namesOf(certificate), context)


@frozen
class _CertificateTable:
    """
    The certificates of one load of a directory, indexed by name.

    @ivar files: every file, in load (alphabetical) order; the first one is
        the default certificate.
    @ivar exact: exact names to the file that serves them.
    @ivar wildcards: for C{*.example.com}, C{example.com} to its file.
    """

    files: Tuple[_CertificateFile, ...]
    exact: Dict[str, _CertificateFile]
    wildcards: Dict[str, _CertificateFile]

    @classmethod
    def fromFiles(cls, files: Sequence[_CertificateFile]) -> _CertificateTable:
        """
        Index C{files}; when two files claim a name, the first loaded wins.
        """
        exact: Dict[str, _CertificateFile] = {}
        wildcards: Dict[str, _CertificateFile] = {}
        for entry in files:
            for name in entry.names:
                if name.startswith("*.") and len(name) > 2:
                    wildcards.setdefault(name[2:], entry)
                else:
                    exact.setdefault(name, entry)
        return cls(tuple(files), exact, wildcards)

    def lookup(self, serverName: str) -> Optional[_CertificateFile]:
        """
        The file serving C{serverName}: an exact name first, then a wildcard,
        which stands for exactly one leftmost label.
        """
        name = _normalName(serverName)
        found = self.exact.get(name)
        if found is not None:
            return found
        label, dot, parent = name.partition(".")
        if label and dot:
            return self.wildcards.get(parent)
        return None


@implementer(IOpenSSLServerConnectionCreator)
class SNICertificateDirectory:
    """
    Server TLS connections whose certificate is chosen by the client's server
    name (SNI) among the C{*.pem} files of a directory.

    Each file holds a private key and its certificate, optionally followed by
    chain certificates. A file serves the DNS names of its certificate's SAN
    (the common name only when there is no SAN); C{*.example.com} matches one
    label; exact names win over wildcards. The first file in alphabetical
    order serves clients that send no name or an unknown one, unless
    C{strict} is set, in which case their handshake is refused.

    Every connection starts on one L{SessionContext}, whose ticket keys and
    session cache serve all the names, and is moved to its certificate's
    context during the handshake.

    @ivar directory: the certificate directory.
    @ivar strict: refuse handshakes without a matching server name.
    @ivar settings: what every context is built with.
    """

    def __init__(
        self,
        directory: Union[str, FilePath[str]],
        strict: bool = False,
        settings: Optional[TLSSettings] = None,
        clock: Optional[IReactorTime] = None,
    ):
        """
        Load the directory.

        @param settings: L{None} for the defaults.
        @param clock: for ticket key rotation; L{None} for the global
            reactor.
        @raise TLSConfigError: when it is missing, holds no C{*.pem} file or
            one of them cannot be used.
        """
        self.directory: FilePath[str] = (
            directory if isinstance(directory, FilePath) else FilePath(directory)
        )
        self.strict = strict
        self.settings = settings if settings is not None else TLSSettings()
        self._clock = clock
        self._refusing = self.settings.context()
        self._sessions = SessionContext(self.settings, self._chooseContext, clock)
        self._table = self._load()

    def withSettings(self, settings: TLSSettings) -> SNICertificateDirectory:
        """
        The same directory, read again, with other settings.

        @raise TLSConfigError: as the constructor.
        """
        return SNICertificateDirectory(
            self.directory, self.strict, settings, self._clock
        )

    def _load(self) -> _CertificateTable:
        where = self.directory.path
        if not self.directory.isdir():
            raise TLSConfigError(f"{where}: not a directory of certificates")
        paths = sorted(self.directory.globChildren("*.pem"), key=lambda p: p.basename())
        if not paths:
            raise TLSConfigError(f"{where}: no *.pem certificate files")
        table = _CertificateTable.fromFiles(
            [_loadCertificateFile(p, self.settings) for p in paths]
        )
        _log.info(
            "tlsni: {count} certificate file(s) loaded from {directory}; "
            "default {default}",
            count=len(table.files),
            directory=where,
            default=table.files[0].path.basename(),
        )
        return table

    @property
    def names(self) -> Dict[str, str]:
        """
        Every name served, mapped to the base name of the file serving it
        (wildcards keep their C{*.}): for logs and the stats page.
        """
        served = {n: f.path.basename() for n, f in self._table.exact.items()}
        served.update(
            {f"*.{n}": f.path.basename() for n, f in self._table.wildcards.items()}
        )
        return served

    def reload(self) -> None:
        """
        Read the directory again. New handshakes use the new certificates;
        established connections keep theirs.

        @raise TLSConfigError: the directory is broken now; the certificates
            loaded before stay in use.
        """
        self._table = self._load()

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        Start a server connection on the session context; the servername
        callback moves it to its certificate during the handshake.
        """
        return self._sessions.connection()

    def _chooseContext(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        serverName = raw.decode("ascii", "replace") if raw is not None else None
        found = self._table.lookup(serverName) if serverName is not None else None
        if found is not None:
            connection.set_context(found.context)
        elif self.strict:
            _log.warn(
                "tlsni: refused a TLS handshake for server name {serverName!r}: "
                "no certificate in {directory} matches (strict=yes)",
                serverName=serverName,
                directory=self.directory.path,
            )
            connection.set_context(self._refusing)
        else:
            connection.set_context(self._table.files[0].context)


@implementer(IStreamServerEndpoint)
@frozen
class TLSServerEndpoint:
    """
    A server endpoint that runs TLS over another one.

    @ivar wrapped: the plain endpoint (TCP, unix, ...).
    @ivar contextFactory: the server connection creator, for instance an
        L{SNICertificateDirectory}.
    @ivar clock: schedules TLS write batching; L{None} for the global reactor.
    """

    wrapped: IStreamServerEndpoint
    contextFactory: Any
    clock: Optional[IReactorTime] = None

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """
        Listen on the wrapped endpoint, with TLS around C{protocolFactory}.
        """
        return self.wrapped.listen(
            TLSMemoryBIOFactory(
                self.contextFactory, False, protocolFactory, clock=self.clock
            )
        )


_STRICT_VALUES = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}


def parseSNIEndpoint(reactor: Any, *args: str, **kwargs: str) -> TLSServerEndpoint:
    """
    Build the endpoint for C{tlsni:certdir=DIR[:strict=yes]:INNER}, where
    C{INNER} is a plain server endpoint such as C{tcp:8443} or
    C{unix:/run/tlbalance.sock}.

    @raise TLSConfigError: an option is missing or wrong, or the directory
        cannot be loaded.
    """
    certdir = kwargs.pop("certdir", None)
    if not certdir:
        raise TLSConfigError("tlsni: needs certdir=DIRECTORY")
    strictText = kwargs.pop("strict", "no").lower()
    if strictText not in _STRICT_VALUES:
        raise TLSConfigError(f"tlsni: strict must be yes or no, not {strictText!r}")
    if not args:
        raise TLSConfigError(
            "tlsni: needs a plain endpoint after its options, "
            "e.g. tlsni:certdir=/etc/tlbalance/certs:tcp:8443"
        )
    clock = reactor if IReactorTime.providedBy(reactor) else None
    contextFactory = SNICertificateDirectory(
        certdir, strict=_STRICT_VALUES[strictText], clock=clock
    )
    wrapped = serverFromString(reactor, unparseEndpoint(args, kwargs))
    return TLSServerEndpoint(wrapped, contextFactory, clock)


# Splitting TLS off endpoints.


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
@frozen
class _ContextFactoryCreator:
    """
    Present an old-style L{IOpenSSLContextFactory} as a connection creator.
    """

    contextFactory: Any

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.contextFactory.getContext(), None)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.contextFactory.getContext(), None)


def _asCreator(contextFactory: Any, interface: Any) -> Any:
    if interface is IOpenSSLServerConnectionCreator and hasattr(
        contextFactory, "getContext"
    ):
        # Context factories such as CertificateOptions build their context
        # once and keep it, so repairing it here lasts.
        withWorkingALPN(contextFactory.getContext())
    if interface.providedBy(contextFactory):
        return contextFactory
    # Like TLSMemoryBIOFactory, take anything with getContext, declared
    # IOpenSSLContextFactory or not.
    if hasattr(contextFactory, "getContext"):
        return _ContextFactoryCreator(contextFactory)
    raise TypeError(f"not a TLS context factory: {contextFactory!r}")


def _twistedSNIEndpointType() -> Optional[type]:
    # Twisted 25 added its own tls: server endpoint; older versions lack it.
    try:
        from twisted.protocols._sni import TLSServerEndpoint as TwistedTLSEndpoint
    except ImportError:
        return None
    return TwistedTLSEndpoint


# What an ssl: endpoint's sslmethod= allows, as the newest version to speak;
# older methods are below the floor.
_METHOD_MAX_VERSIONS: Dict[int, Optional[int]] = {
    SSL.TLS_METHOD: None,
    SSL.SSLv23_METHOD: None,
    SSL.TLSv1_2_METHOD: SSL.TLS1_2_VERSION,
}


def _fromCertificateOptions(
    options: CertificateOptions, settings: TLSSettings, clock: Optional[IReactorTime]
) -> SingleCertificate:
    """
    Rebuild the TLS of an C{ssl:} endpoint, which Twisted's parser makes a
    L{CertificateOptions} with Twisted's defaults (CBC suites offered,
    session resumption off, the server's cipher order), with C{settings}.

    @raise TLSConfigError: the options ask for something tlbalance's
        settings would silently drop.
    """
    if options.certificate is None or options.privateKey is None:
        raise TLSConfigError("ssl: the TLS settings carry no certificate")
    if options.verify:
        raise TLSConfigError(
            "ssl: client certificate verification is not supported on tlbalance "
            "listeners"
        )
    if options.dhParameters is not None:
        raise TLSConfigError(
            "ssl: dhParameters is not supported: tlbalance offers ECDHE key "
            "exchange only, as Mozilla's intermediate profile does; remove it"
        )
    if options.method not in _METHOD_MAX_VERSIONS:
        raise TLSConfigError(
            "ssl: sslmethod must be TLS_METHOD or TLSv1_2_METHOD: TLS 1.2 is "
            "tlbalance's oldest version"
        )
    maxVersion = _METHOD_MAX_VERSIONS[options.method]
    if maxVersion is not None:
        settings = evolve(settings, maxVersion=maxVersion)
    try:
        return SingleCertificate(
            options.privateKey.to_cryptography_key(),
            options.certificate.to_cryptography(),
            [extra.to_cryptography() for extra in options.extraCertChain],
            settings,
            clock,
        )
    except SSL.Error as e:
        raise TLSConfigError(f"ssl: OpenSSL refused the key or certificate: {e}") from e


def splitServerTLS(
    endpoint: IStreamServerEndpoint, settings: Optional[TLSSettings] = None
) -> Tuple[IStreamServerEndpoint, Optional[IOpenSSLServerConnectionCreator]]:
    """
    Separate a server endpoint into its plain transport and its TLS, so that
    something (a PROXY receiver) can sit between the two.

    Handles Twisted's C{ssl:} endpoint, whose TLS is rebuilt with
    tlbalance's settings (L{SingleCertificate}), and L{TLSServerEndpoint}
    (C{tlsni:}). An C{ssl:} endpoint given a context factory other than a
    plain L{CertificateOptions} keeps it as it is. Anything else is
    returned as is.

    @param settings: the TLS settings for C{ssl:} endpoints and
        L{SNICertificateDirectory}s; L{None} leaves a
        L{SNICertificateDirectory} with its own, and gives C{ssl:}
        endpoints the defaults.
    @return: C{(plainEndpoint, connectionCreator)}; the creator is L{None}
        for an endpoint without TLS.
    @raise TLSConfigError: for Twisted's own C{tls:} server endpoint, whose
        TLS settings cannot be changed, and for C{ssl:} options that
        tlbalance's settings do not support.
    """
    if isinstance(endpoint, SSL4ServerEndpoint):
        # SSL4ServerEndpoint exposes no public accessors; tests pin these
        # attribute names so a Twisted change fails loudly.
        reactor = endpoint._reactor
        plain = TCP4ServerEndpoint(
            reactor, endpoint._port, endpoint._backlog, endpoint._interface
        )
        contextFactory = endpoint._sslContextFactory
        if type(contextFactory) is CertificateOptions:
            clock = reactor if IReactorTime.providedBy(reactor) else None
            return plain, _fromCertificateOptions(
                contextFactory, settings or TLSSettings(), clock
            )
        return plain, _asCreator(contextFactory, IOpenSSLServerConnectionCreator)
    if isinstance(endpoint, TLSServerEndpoint):
        creator = endpoint.contextFactory
        if (
            isinstance(creator, SNICertificateDirectory)
            and settings is not None
            and settings != creator.settings
        ):
            return endpoint.wrapped, creator.withSettings(settings)
        return endpoint.wrapped, _asCreator(creator, IOpenSSLServerConnectionCreator)
    twistedType = _twistedSNIEndpointType()
    if twistedType is not None and isinstance(endpoint, twistedType):
        raise TLSConfigError(
            "tls: server endpoints keep Twisted's own TLS settings (CBC suites, "
            "no session resumption), which tlbalance cannot change; use "
            "tlsni:certdir=DIRECTORY:tcp6:443 instead"
        )
    return endpoint, None


def splitClientTLS(
    endpoint: IStreamClientEndpoint,
) -> Tuple[IStreamClientEndpoint, Optional[IOpenSSLClientConnectionCreator]]:
    """
    Separate a client endpoint into its plain transport and its TLS, so that
    a PROXY header can be written on the raw connection before TLS starts.

    Handles C{ssl:host=...:port=...} (L{SSL4ClientEndpoint}) and C{tls:...}
    (the endpoint L{twisted.internet.endpoints.wrapClientTLS} returns).
    Anything else is returned as is.

    @return: C{(plainEndpoint, connectionCreator)}; the creator is L{None}
        for an endpoint without TLS.
    """
    if isinstance(endpoint, SSL4ClientEndpoint):
        # As for SSL4ServerEndpoint: private names, pinned by the tests.
        plain = TCP4ClientEndpoint(
            endpoint._reactor,
            endpoint._host,
            endpoint._port,
            endpoint._timeout,
            endpoint._bindAddress,
        )
        return plain, _asCreator(
            endpoint._sslContextFactory, IOpenSSLClientConnectionCreator
        )
    if isinstance(endpoint, _WrapperEndpoint):
        # wrapClientTLS keeps its creator only in the closure of the lambda
        # it wraps each factory with.
        captured = getclosurevars(endpoint._wrapperFactory).nonlocals
        creator = captured.get("connectionCreator")
        if creator is None:
            raise TypeError(
                f"cannot find the TLS settings of {endpoint!r}: "
                "twisted.internet.endpoints.wrapClientTLS has changed"
            )
        return endpoint._wrappedEndpoint, _asCreator(
            creator, IOpenSSLClientConnectionCreator
        )
    return endpoint, None


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
    clock: Optional[IReactorTime] = None,
) -> Deferred[IProtocol]:
    """
    Connect C{endpoint}, write C{preamble(rawTransport)} as the very first
    bytes on the wire, then start TLS when the endpoint is C{ssl:} or
    C{tls:}, then run C{factory}'s protocol over the result.

    @param preamble: builds the bytes (a PROXY header) from the raw
        transport, whose C{getHost()}/C{getPeer()} are the socket's own
        addresses; L{None} writes nothing.
    @param clock: schedules TLS write batching; L{None} for the global
        reactor.
    @return: fires with the application's protocol once connected (the TLS
        handshake may still be running); cancelling it cancels the attempt.
    """
    plain, creator = splitClientTLS(endpoint)
    connecting = plain.connect(_PreambleFactory(factory, preamble, creator, clock))
    return connecting.addCallback(_appProtocolOf)


def _appProtocolOf(wrapper: IProtocol) -> IProtocol:
    assert isinstance(wrapper, _PreambleProtocol)
    return wrapper.appProtocol


# What a TLS connection negotiated.


@frozen
class TLSFacts:
    """
    What a TLS connection negotiated, for PROXY v2 AUTHORITY and SSL TLVs.

    @ivar serverName: the server name (SNI) the client asked for, if any.
    @ivar version: the protocol version, e.g. C{"TLSv1.3"}.
    @ivar cipher: the OpenSSL cipher name, e.g. C{"TLS_AES_256_GCM_SHA384"}.
    @ivar clientCertificate: the peer presented a certificate (on a
        listener: the client sent one).
    """

    serverName: Optional[str]
    version: str
    cipher: str
    clientCertificate: bool


def tlsFacts(transport: Any) -> Optional[TLSFacts]:
    """
    Describe the TLS of a protocol's transport.

    @param transport: a L{TLSMemoryBIOProtocol} (what L{TLSServerEndpoint}
        and split C{ssl:} listeners give the application) or a native Twisted
        TLS transport.
    @return: the facts, or L{None} for a plain connection.
    @raise ValueError: the handshake has not completed (or the connection is
        gone): call this from C{handshakeCompleted} or once data arrived.
    """
    native = getattr(transport, "TLS", False) is True
    if not (native or isinstance(transport, TLSMemoryBIOProtocol)):
        return None
    connection = transport.getHandle()
    cipher = connection.get_cipher_name() if connection is not None else None
    version = connection.get_protocol_version_name() if connection is not None else None
    if connection is None or cipher is None or version is None:
        raise ValueError("the TLS handshake has not completed")
    serverName = connection.get_servername()
    peer = connection.get_peer_certificate(as_cryptography=True)
    return TLSFacts(
        serverName=serverName.decode("ascii", "replace") if serverName else None,
        version=version,
        cipher=cipher,
        clientCertificate=peer is not None,
    )


# Self-signed certificates for a first run.


def selfSignedPEM(hostnames: Sequence[str], days: int = 825) -> bytes:
    """
    Make a private key and a self-signed certificate for C{hostnames}, in one
    PEM blob (key first): what an C{ssl:} endpoint or a C{tlsni:} directory
    reads.

    @param hostnames: DNS names and IP literals; all go in the SAN (IPs as IP
        addresses), the first one is also the common name.
    @param days: validity, from an hour ago: exactly C{days} days, so the
        default stays within the 825 days testssl.sh accepts.
    """
    if not hostnames:
        raise ValueError("a certificate needs at least one host name")
    altNames: List[x509.GeneralName] = []
    for name in hostnames:
        try:
            altNames.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            altNames.append(x509.DNSName(name))
    # A common name longer than 64 characters is invalid; the SAN suffices.
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]
        if len(hostnames[0]) <= 64
        else []
    )
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(
            now - datetime.timedelta(hours=1) + datetime.timedelta(days=days)
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.SubjectAlternativeName(altNames), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return keyPEM + certificate.public_bytes(serialization.Encoding.PEM)


def ensureSelfSigned(
    path: Union[str, os.PathLike[str]], hostnames: Sequence[str]
) -> bool:
    """
    Write a L{selfSignedPEM} for C{hostnames} to C{path}, readable by its
    owner only, unless the file already exists.

    @return: C{True} when the file was written, C{False} when it was there.
    """
    pem = selfSignedPEM(hostnames)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    except BaseException:
        os.unlink(path)
        raise
    _log.info(
        "wrote a self-signed certificate for {hostnames} to {path}",
        hostnames=", ".join(hostnames),
        path=os.fspath(path),
    )
    return True
