# -*- test-case-name: tests.unit.test_tls -*-
"""
TLS for tlbalance, in one place to import from: the settings every listener
is built with, the C{tlsni:} listener that picks a certificate by server
name, endpoint strings taken apart into their plain transport and their TLS
(so a PROXY header can travel below it), and the facts about a TLS
connection that PROXY v2 headers carry.

Both directions put the PROXY header on the raw connection, before the TLS
ClientHello: that is what HAProxy, nginx and the PROXY specification expect
(Twisted's own C{haproxy:ssl:} does the reverse).

Each idea lives in a private module: L{tlbalance._tlscontext} (settings and
contexts), L{tlbalance._sni} (C{tlsni:}), L{tlbalance._serverendpoints}
and L{tlbalance._clientendpoints} (endpoint strings taken apart, connecting
with a preamble), L{tlbalance._tlsfacts} (what a connection negotiated).
"""

from __future__ import annotations

from tlbalance._clientendpoints import Preamble, connectWithPreamble, splitClientTLS
from tlbalance._serverendpoints import splitServerTLS
from tlbalance._sni import (
    SNICertificateDirectory,
    SNIOptions,
    TLSServerEndpoint,
    parseSNIEndpoint,
)
from tlbalance._tlscontext import (
    DEFAULT_CIPHERS,
    SESSION_LIFETIME,
    TLS13_CIPHERSUITES,
    SingleCertificate,
    TLSConfigError,
    TLSSettings,
    checkCiphers,
)
from tlbalance._tlsfacts import TLSFacts, tlsFacts

__all__ = [
    "DEFAULT_CIPHERS",
    "SESSION_LIFETIME",
    "SNICertificateDirectory",
    "SNIOptions",
    "SingleCertificate",
    "TLS13_CIPHERSUITES",
    "TLSConfigError",
    "TLSFacts",
    "TLSServerEndpoint",
    "TLSSettings",
    "Preamble",
    "checkCiphers",
    "connectWithPreamble",
    "parseSNIEndpoint",
    "splitClientTLS",
    "splitServerTLS",
    "tlsFacts",
]
