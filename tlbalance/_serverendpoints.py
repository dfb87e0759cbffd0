# -*- test-case-name: tests.unit.test_tls -*-
"""
Server endpoint strings with their TLS taken off: the plain listener, on
which a PROXY receiver can sit, and the TLS to run above it, built with
tlbalance's settings.

The TLS comes from the endpoint string's own options (C{ssl:}'s key and
certificate files, C{tlsni:}'s directory), so nothing is read back out of
an endpoint Twisted built.

L{tlbalance.tls} re-exports the public names; import them from there.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from attrs import evolve
from cryptography import x509
from OpenSSL import SSL
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import PrivateCertificate
from twisted.python.filepath import FilePath

from tlbalance._endpoints import unparseEndpoint
from tlbalance._sni import SNICertificateDirectory, SNIOptions
from tlbalance._tlscontext import SingleCertificate, TLSConfigError, TLSSettings
from tlsuite._twisted import parseEndpointString

# The arguments of an ssl: server string, in the order Twisted's parser
# takes them positionally (ssl:443:key.pem is privateKey=key.pem).
_SSL_SERVER_ARGUMENTS = (
    "port",
    "privateKey",
    "certKey",
    "sslmethod",
    "interface",
    "backlog",
    "extraCertChain",
    "dhParameters",
)

# What an ssl: endpoint's sslmethod= allows, as the newest version to speak;
# older methods are below the floor.
_METHOD_MAX_VERSIONS: Dict[int, Optional[int]] = {
    SSL.TLS_METHOD: None,
    SSL.SSLv23_METHOD: None,
    SSL.TLSv1_2_METHOD: SSL.TLS1_2_VERSION,
}


def bindArguments(
    kind: str,
    names: Sequence[str],
    required: int,
    args: Sequence[str],
    kwargs: Mapping[str, str],
) -> Dict[str, str]:
    """
    Name the arguments of an endpoint string the way a Python call would:
    positional ones in the order of C{names}, then keyword ones.

    @param kind: the endpoint type, for messages.
    @param required: how many of the first C{names} must be given.
    @raise TLSConfigError: too many positional arguments, an unknown
        keyword, one given twice, or a required one missing.
    """
    takes = f"{kind}: takes {', '.join(names)}"
    if len(args) > len(names):
        raise TLSConfigError(f"{takes}; got {len(args)} positional arguments")
    values = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise TLSConfigError(f"{takes}; got an unknown option {key}=")
        if key in values:
            raise TLSConfigError(f"{kind}: {key} is given twice")
        values[key] = value
    missing = [name for name in names[:required] if name not in values]
    if missing:
        raise TLSConfigError(f"{takes}; {', '.join(missing)} is missing")
    return values


def _maxVersionFor(sslmethod: Optional[str]) -> Optional[int]:
    """
    The newest TLS version an C{ssl:} endpoint's C{sslmethod=} allows.

    @raise TLSConfigError: the method is unknown or below TLS 1.2.
    """
    if sslmethod is None:
        return None
    method = getattr(SSL, sslmethod, None) if sslmethod.endswith("_METHOD") else None
    if not isinstance(method, int) or method not in _METHOD_MAX_VERSIONS:
        raise TLSConfigError(
            "ssl: sslmethod must be TLS_METHOD or TLSv1_2_METHOD: TLS 1.2 is "
            "tlbalance's oldest version"
        )
    return _METHOD_MAX_VERSIONS[method]


def _chainFrom(path: str) -> Sequence[x509.Certificate]:
    """
    The certificates of an C{extraCertChain=} file.

    @raise TLSConfigError: it holds none.
    """
    try:
        return x509.load_pem_x509_certificates(FilePath(path).getContent())
    except ValueError:
        raise TLSConfigError(
            f"ssl: {path}: no PEM certificate in the extraCertChain file"
        ) from None


def _splitSSL(
    reactor: Any,
    args: Sequence[str],
    kwargs: Mapping[str, str],
    settings: TLSSettings,
) -> Tuple[IStreamServerEndpoint, SingleCertificate]:
    """
    Take C{ssl:PORT[:privateKey=KEY][:certKey=CERT][...]} apart: a TCP
    listener on the same port, interface and backlog, and a
    L{SingleCertificate} built with C{settings} from the same files Twisted
    would read (C{certKey} defaults to C{privateKey}, which defaults to
    C{server.pem}).

    @raise TLSConfigError: the options ask for something tlbalance's
        settings would silently drop (C{dhParameters}, an old
        C{sslmethod}), or a file holds no usable key or certificate.
    """
    values = bindArguments("ssl", _SSL_SERVER_ARGUMENTS, 1, args, kwargs)
    if "dhParameters" in values:
        raise TLSConfigError(
            "ssl: dhParameters is not supported: tlbalance offers ECDHE key "
            "exchange only, as Mozilla's intermediate profile does; remove it"
        )
    maxVersion = _maxVersionFor(values.get("sslmethod"))
    if maxVersion is not None:
        settings = evolve(settings, maxVersion=maxVersion)
    plainOptions: Dict[str, str] = {
        k: values[k] for k in ("interface", "backlog") if k in values
    }
    plain = serverFromString(
        reactor, unparseEndpoint(["tcp", values["port"]], plainOptions)
    )
    privateKey = values.get("privateKey", "server.pem")
    certKey = values.get("certKey", privateKey)
    # As Twisted's own ssl: parser: the first certificate of one file and
    # the private key of the other (often the same file), checked to match.
    pair = PrivateCertificate.loadPEM(
        FilePath(certKey).getContent() + b"\n" + FilePath(privateKey).getContent()
    )
    chainPath = values.get("extraCertChain")
    chain = _chainFrom(chainPath) if chainPath is not None else ()
    clock = reactor if IReactorTime.providedBy(reactor) else None
    try:
        creator = SingleCertificate(
            pair.privateKey.original.to_cryptography_key(),
            pair.original.to_cryptography(),
            chain,
            settings,
            clock,
        )
    except SSL.Error as e:
        raise TLSConfigError(f"ssl: OpenSSL refused the key or certificate: {e}") from e
    return plain, creator


def _splitSNI(
    reactor: Any,
    args: Sequence[str],
    kwargs: Mapping[str, str],
    settings: Optional[TLSSettings],
) -> Tuple[IStreamServerEndpoint, SNICertificateDirectory]:
    """
    Take C{tlsni:certdir=DIR[:strict=yes]:INNER} apart: the listener
    C{INNER} describes, and the certificate directory.
    """
    options = SNIOptions.fromArguments(args, kwargs)
    clock = reactor if IReactorTime.providedBy(reactor) else None
    creator = SNICertificateDirectory(options.certdir, options.strict, settings, clock)
    return serverFromString(reactor, options.inner), creator


def splitServerTLS(
    reactor: Any, description: str, settings: Optional[TLSSettings] = None
) -> Tuple[IStreamServerEndpoint, Optional[IOpenSSLServerConnectionCreator]]:
    """
    Build the listener a server endpoint string describes in two parts, its
    plain transport and its TLS, so that something (a PROXY receiver) can
    sit between the two.

    C{ssl:} becomes a C{tcp:} listener on the same port, interface and
    backlog, and a L{SingleCertificate} serving its key and certificate
    files; C{tlsni:} becomes the listener it wraps and its
    L{SNICertificateDirectory}. Any other string is built by
    L{serverFromString<twisted.internet.endpoints.serverFromString>} as it is, with no
    TLS.

    @param reactor: what the listener and the TLS session contexts use (the
        clock for ticket key rotation when it provides
        L{IReactorTime<twisted.internet.interfaces.IReactorTime>}).
    @param settings: the TLS settings; C{None} for the defaults.
    @return: C{(plainEndpoint, connectionCreator)}; the creator is C{None}
        for an endpoint without TLS.
    @raise TLSConfigError: for Twisted's own C{tls:} server endpoint, whose
        TLS settings cannot be changed, for TLS options that tlbalance's
        settings do not support, and for a broken certificate.
    @raise ValueError: the string is not a valid server endpoint (as
        L{serverFromString<twisted.internet.endpoints.serverFromString>} raises it);
        reading a file can raise C{OSError}.
    """
    if not isinstance(description, str):
        raise TypeError(
            "splitServerTLS takes (reactor, description, settings): the "
            f"endpoint string, not {description!r}"
        )
    args, kwargs = parseEndpointString(description)
    kind = args[0] if args else ""
    if kind == "ssl":
        return _splitSSL(reactor, args[1:], kwargs, settings or TLSSettings())
    if kind.lower() == "tlsni":
        return _splitSNI(reactor, args[1:], kwargs, settings)
    if kind.lower() == "tls":
        raise TLSConfigError(
            "tls: server endpoints keep Twisted's own TLS settings (CBC suites, "
            "no session resumption), which tlbalance cannot change; use "
            "tlsni:certdir=DIRECTORY:tcp6:443 instead"
        )
    return serverFromString(reactor, description), None
