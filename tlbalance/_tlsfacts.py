# -*- test-case-name: tests.unit.test_tls -*-
"""
What a TLS connection negotiated (server name, version, cipher, client
certificate): the facts a PROXY v2 header passes on to the backend.

L{tlbalance.tls} re-exports the public names; import them from there.
"""

from __future__ import annotations

from typing import Any, Optional

from attrs import frozen
from twisted.protocols.tls import TLSMemoryBIOProtocol


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

    @param transport: a
        L{TLSMemoryBIOProtocol<twisted.protocols.tls.TLSMemoryBIOProtocol>} (what
        L{TLSServerEndpoint}
        and split C{ssl:} listeners give the application) or a native Twisted
        TLS transport.
    @return: the facts, or C{None} for a plain connection.
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
