# -*- test-case-name: tests.unit.test_tls -*-
"""
The C{tlsni:} listener: TLS whose certificate is chosen by the client's
server name (SNI) among the PEM files of a directory, over any plain server
endpoint.

L{tlbalance.tls} re-exports the public names; import them from there.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.filepath import FilePath
from zope.interface import implementer

from tlbalance._endpoints import unparseEndpoint
from tlbalance._loglevel import balancerLogger
from tlbalance._tlscontext import SessionContext, TLSConfigError, TLSSettings

# The namespace the documentation shows for these lines.
_log = balancerLogger("tlbalance.tls")

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

        @param settings: C{None} for the defaults.
        @param clock: for ticket key rotation; C{None} for the global
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
    @ivar clock: schedules TLS write batching; C{None} for the global reactor.
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


@frozen
class SNIOptions:
    """
    What a C{tlsni:certdir=DIR[:strict=yes]:INNER} string asks for.

    @ivar certdir: the certificate directory.
    @ivar strict: refuse handshakes without a matching server name.
    @ivar inner: the plain server endpoint string it wraps, such as
        C{tcp:8443} or C{unix:/run/tlbalance.sock}.
    """

    certdir: str
    strict: bool
    inner: str

    @classmethod
    def fromArguments(
        cls, args: Sequence[str], kwargs: Mapping[str, str]
    ) -> SNIOptions:
        """
        Read the options from the arguments after C{tlsni}, as Twisted's
        endpoint-string parser splits them: C{certdir} and C{strict} are
        C{tlsni}'s own, everything else belongs to the inner endpoint.

        @raise TLSConfigError: an option is missing or wrong.
        """
        rest = dict(kwargs)
        certdir = rest.pop("certdir", None)
        if not certdir:
            raise TLSConfigError("tlsni: needs certdir=DIRECTORY")
        strictText = rest.pop("strict", "no").lower()
        if strictText not in _STRICT_VALUES:
            raise TLSConfigError(f"tlsni: strict must be yes or no, not {strictText!r}")
        if not args:
            raise TLSConfigError(
                "tlsni: needs a plain endpoint after its options, "
                "e.g. tlsni:certdir=/etc/tlbalance/certs:tcp:8443"
            )
        return cls(certdir, _STRICT_VALUES[strictText], unparseEndpoint(args, rest))


def parseSNIEndpoint(reactor: Any, *args: str, **kwargs: str) -> TLSServerEndpoint:
    """
    Build the endpoint for C{tlsni:certdir=DIR[:strict=yes]:INNER} (see
    L{SNIOptions}), with the default L{TLSSettings}.

    @raise TLSConfigError: an option is missing or wrong, or the directory
        cannot be loaded.
    """
    options = SNIOptions.fromArguments(args, kwargs)
    clock = reactor if IReactorTime.providedBy(reactor) else None
    contextFactory = SNICertificateDirectory(
        options.certdir, strict=options.strict, clock=clock
    )
    return TLSServerEndpoint(
        serverFromString(reactor, options.inner), contextFactory, clock
    )
