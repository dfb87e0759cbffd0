# -*- test-case-name: tests.unit.test_tlscontext -*-
"""
How tlbalance builds server TLS contexts: TLS 1.2 as the floor, Mozilla's
"intermediate" cipher suites, no compression or renegotiation, and session
resumption through one session context per listener whose ticket keys are
replaced every hour.

L{tlbalance.tls} re-exports the public names; import them from there.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

from attrs import field, frozen
from OpenSSL import SSL
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from zope.interface import implementer

from tlbalance._loglevel import balancerLogger

_log = balancerLogger("tlbalance._tlscontext")

# Mozilla's Server Side TLS guidelines 6.0, "intermediate": ECDHE key
# exchange with an AEAD cipher, nothing else, for TLS 1.2. (5.7 also had
# three DHE suites; 6.0 dropped them.)
DEFAULT_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)

# TLS 1.3 has only AEAD suites with forward secrecy; these are OpenSSL's
# defaults and Mozilla's list, pinned so that a system OpenSSL configuration
# cannot change them.
TLS13_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:" + (
    "TLS_CHACHA20_POLY1305_SHA256"
)

# Seconds a session can be resumed, and how long one set of ticket keys is
# used before the session context holding them is replaced.
SESSION_LIFETIME = 3600

# Every context of a listener has the same session id context, so that a
# connection moved to a certificate's context by the servername callback can
# still resume (OpenSSL compares it with the session's).
_SESSION_ID_CONTEXT = b"tlbalance"

_VERSION_NAMES = {SSL.TLS1_2_VERSION: "TLS 1.2", SSL.TLS1_3_VERSION: "TLS 1.3"}


class TLSConfigError(ValueError):
    """
    TLS configuration that cannot work: a missing or empty certificate
    directory, a PEM file without key or certificate, a key that does not
    belong to its certificate, a bad C{tlsni:} option, a cipher string
    OpenSSL finds nothing in. The message names the file or option.
    """


def checkCiphers(ciphers: str) -> str:
    """
    Check a TLS 1.2 cipher string in OpenSSL's syntax (as C{openssl ciphers}
    takes it).

    OpenSSL skips names it does not know, as long as something matches; so
    does this check, so that one list can serve several OpenSSL versions.

    @return: C{ciphers}, unchanged.
    @raise TLSConfigError: it is empty, not ASCII, or selects no TLS 1.2
        cipher suite (TLS 1.3 suite names select none: they are not
        configurable).
    """
    if not isinstance(ciphers, str) or not ciphers.strip():
        raise TLSConfigError(
            f"expected an OpenSSL cipher string such as {DEFAULT_CIPHERS!r}, "
            f"got {ciphers!r}"
        )
    try:
        encoded = ciphers.encode("ascii")
    except UnicodeEncodeError:
        raise TLSConfigError(
            f"the cipher string {ciphers!r} is not ASCII, as OpenSSL needs"
        ) from None
    try:
        SSL.Context(SSL.TLS_METHOD).set_cipher_list(encoded)
    except SSL.Error:
        raise TLSConfigError(
            f"OpenSSL finds no TLS 1.2 cipher suite in {ciphers!r} "
            "(see the openssl-ciphers manual for the syntax)"
        ) from None
    return ciphers


def _validCiphers(instance: object, attribute: Any, value: str) -> None:
    checkCiphers(value)


def _validMaxVersion(instance: object, attribute: Any, value: Optional[int]) -> None:
    if value is not None and value not in _VERSION_NAMES:
        raise TLSConfigError(
            f"the newest TLS version must be TLS 1.2 or TLS 1.3, not {value!r}"
        )


def _selectALPN(connection: SSL.Connection, offered: List[bytes]) -> Any:
    """
    Choose an ALPN protocol the way Twisted does (from the application
    factory's L{IProtocolNegotiationFactory}), but decline with
    C{NO_OVERLAPPING_PROTOCOLS} when there is nothing to agree on.

    Twisted's own callback returns C{b""} in that case, which current
    pyOpenSSL turns into an C{internal_error} alert: every client offering
    ALPN (curl, browsers) would be refused by a server that speaks none.
    """
    protocol = connection.get_app_data()
    factory = getattr(getattr(protocol, "factory", None), "wrappedFactory", None)
    negotiation = IProtocolNegotiationFactory(factory, None)
    if negotiation is not None:
        for candidate in negotiation.acceptableProtocols():
            if candidate in offered:
                return candidate
    return SSL.NO_OVERLAPPING_PROTOCOLS


def withWorkingALPN(context: SSL.Context) -> SSL.Context:
    """
    Install L{_selectALPN} on C{context}.

    @return: C{context}.
    """
    context.set_alpn_select_callback(_selectALPN)
    return context


@frozen
class TLSSettings:
    """
    What every server TLS context of a listener is built with.

    The rest is fixed: TLS 1.2 as the floor, L{TLS13_CIPHERSUITES} for TLS
    1.3, OpenSSL's default key exchange groups, the client's cipher order
    (every suite offered is strong, and the client knows whether it has
    AES hardware: Mozilla's advice), no compression, no renegotiation,
    session tickets and a server-side session cache, sessions resumable for
    C{sessionLifetime} seconds.

    @ivar ciphers: the TLS 1.2 cipher suites, an OpenSSL cipher string;
        checked by L{checkCiphers}.
    @ivar maxVersion: the newest protocol version, as a pyOpenSSL
        C{TLS1_*_VERSION} constant; C{None} for the newest OpenSSL has.
    @ivar sessionLifetime: seconds a session stays resumable, which is also
        how long a L{SessionContext} keeps its ticket keys.
    """

    ciphers: str = field(default=DEFAULT_CIPHERS, validator=_validCiphers)
    maxVersion: Optional[int] = field(default=None, validator=_validMaxVersion)
    sessionLifetime: int = SESSION_LIFETIME

    def context(self) -> SSL.Context:
        """
        A new server context with these settings and no certificate: a
        handshake that stays on it fails with a C{handshake_failure} alert.
        """
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if self.maxVersion is not None:
            context.set_max_proto_version(self.maxVersion)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
        # Idle connections give their 34 KiB read and write buffers back.
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
        context.set_cipher_list(self.ciphers.encode("ascii"))
        # pyOpenSSL has the setter from 25.3 on, which needs cryptography 45
        # (none for PyPy 3.9); without it, OpenSSL's own TLS 1.3 default is
        # these same three AEAD suites.
        setTLS13 = getattr(context, "set_tls13_ciphersuites", None)
        if setTLS13 is not None:
            setTLS13(TLS13_CIPHERSUITES.encode("ascii"))
        context.set_session_id(_SESSION_ID_CONTEXT)
        context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
        context.set_timeout(self.sessionLifetime)
        return withWorkingALPN(context)

    def certificateContext(
        self, key: Any, certificate: Any, chain: Sequence[Any] = ()
    ) -> SSL.Context:
        """
        A new server context with these settings serving C{certificate}.

        @param key: its private key (pyOpenSSL or cryptography).
        @param certificate: pyOpenSSL or cryptography.
        @param chain: intermediate certificates, sent after it.
        @raise OpenSSL.SSL.Error: OpenSSL refuses the key or certificate (a
            key too weak for its security level, a mismatch).
        """
        context = self.context()
        context.use_certificate(certificate)
        context.use_privatekey(key)
        for extra in chain:
            context.add_extra_chain_cert(extra)
        context.check_privatekey()
        return context

    def offered(self) -> Tuple[str, ...]:
        """
        The TLS 1.2 cipher suites these settings offer, in OpenSSL's names
        and order.
        """
        names = SSL.Connection(self.context(), None).get_cipher_list()
        return tuple(name for name in names if not name.startswith("TLS_"))

    def describe(self) -> str:
        """
        Say in one line what a listener built with these settings speaks,
        for the start-up log.
        """
        newest = _VERSION_NAMES.get(self.maxVersion or SSL.TLS1_3_VERSION, "?")
        return (
            f"TLS 1.2 to {newest}; TLS 1.2 suites {':'.join(self.offered())}; "
            f"sessions resumable for {self.sessionLifetime}s"
        )


class SessionContext:
    """
    The context every connection of one listener starts on. It holds the
    listener's session ticket keys and session cache, and no certificate:
    its servername callback must move each connection to the context of the
    certificate it is to be shown.

    OpenSSL makes random ticket keys with each context and never changes
    them, and pyOpenSSL cannot set them, so they are rotated by replacing
    this context: the first connection after C{settings.sessionLifetime}
    seconds gets a new one. Tickets and cached sessions issued before no
    longer resume; those clients make one full handshake.

    OpenSSL encrypts and decrypts tickets and keeps cached sessions with the
    context a connection started on, whatever context the servername
    callback moves it to, so all connections share these.
    """

    def __init__(
        self,
        settings: TLSSettings,
        chooseCertificate: Callable[[SSL.Connection], None],
        clock: Optional[IReactorTime] = None,
    ) -> None:
        """
        @param chooseCertificate: the servername callback: called during
            each handshake, with or without a server name from the client,
            it must call C{connection.set_context}.
        @param clock: tells the time; C{None} for the global reactor.
        """
        self.settings = settings
        self._chooseCertificate = chooseCertificate
        self._clock = clock
        self._context: Optional[SSL.Context] = None
        self._born = 0.0

    def _now(self) -> float:
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        assert clock is not None
        return clock.seconds()

    def current(self) -> SSL.Context:
        """
        The context new connections start on: a new one once the current
        one has used its ticket keys for C{settings.sessionLifetime}
        seconds.
        """
        now = self._now()
        if self._context is None or now - self._born >= self.settings.sessionLifetime:
            context = self.settings.context()
            context.set_tlsext_servername_callback(self._chooseCertificate)
            if self._context is not None:
                _log.debug("TLS session ticket keys replaced")
            self._context, self._born = context, now
        return self._context

    def connection(self) -> SSL.Connection:
        """
        A new server connection on L{current}.
        """
        return SSL.Connection(self.current(), None)


@implementer(IOpenSSLServerConnectionCreator)
class SingleCertificate:
    """
    Server TLS connections showing one certificate to every client: what an
    C{ssl:} listener becomes.

    @ivar settings: what its contexts are built with.
    """

    def __init__(
        self,
        key: Any,
        certificate: Any,
        chain: Sequence[Any] = (),
        settings: Optional[TLSSettings] = None,
        clock: Optional[IReactorTime] = None,
    ) -> None:
        """
        @param key: the private key (pyOpenSSL or cryptography).
        @param certificate: its certificate (pyOpenSSL or cryptography).
        @param chain: intermediate certificates, sent after it.
        @param settings: C{None} for the defaults.
        @param clock: for ticket key rotation; C{None} for the global
            reactor.
        @raise OpenSSL.SSL.Error: OpenSSL refuses the key or certificate.
        """
        self.settings = settings if settings is not None else TLSSettings()
        self._context = self.settings.certificateContext(key, certificate, chain)
        self._sessions = SessionContext(self.settings, self._chooseContext, clock)

    def _chooseContext(self, connection: SSL.Connection) -> None:
        connection.set_context(self._context)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        A new server connection, on the listener's session context.
        """
        return self._sessions.connection()
