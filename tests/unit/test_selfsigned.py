"""
Tests for L{tlbalance._selfsigned}: the certificates the demo, the TLS
benchmarks and tests make for themselves, and which the balancer itself
never imports.
"""

from __future__ import annotations

import ast
import datetime
import os
import stat
from pathlib import Path

from cryptography import x509
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import SynchronousTestCase

import tlbalance
from tests.unit.test_tls import Handshake, temporaryPath, writeDirectory
from tlbalance._selfsigned import ensureSelfSigned, selfSignedPEM
from tlbalance.tls import SNICertificateDirectory


class SelfSignedTests(SynchronousTestCase):
    """
    L{selfSignedPEM} and L{ensureSelfSigned} make a certificate for a first
    run.
    """

    def test_usable(self) -> None:
        """
        The PEM loads as a C{tlsni:} directory entry, names its hosts in the
        SAN (IP literals as IP addresses), and a client trusting it verifies
        the handshake.
        """
        pem = selfSignedPEM(["demo.localhost", "127.0.0.1", "::1"])
        sni = SNICertificateDirectory(writeDirectory(self, {"demo.pem": pem}))
        handshake = Handshake(
            sni,
            optionsForClientTLS("demo.localhost", trustRoot=Certificate.loadPEM(pem)),
        )
        self.assertTrue(handshake.works())
        certificate = handshake.peerCertificate
        assert certificate is not None
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["demo.localhost"])
        self.assertEqual(
            [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
            ["127.0.0.1", "::1"],
        )
        # Exactly 825 days: testssl.sh flags a longer validity.
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        self.assertEqual(lifetime, datetime.timedelta(days=825))

    def test_ipAddressVerifies(self) -> None:
        """
        A client connecting by IP literal verifies the certificate by its IP
        SAN.
        """
        pem = selfSignedPEM(["127.0.0.1"])
        handshake = Handshake(
            SNICertificateDirectory(writeDirectory(self, {"a.pem": pem})),
            optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(pem)),
        )
        self.assertTrue(handshake.works())

    def test_noNames(self) -> None:
        """
        A certificate needs at least one name.
        """
        self.assertRaises(ValueError, selfSignedPEM, [])

    def test_ensureWritesOnce(self) -> None:
        """
        L{ensureSelfSigned} writes the file readable by its owner only, and
        leaves an existing file alone.
        """
        path = temporaryPath(self)
        self.assertTrue(ensureSelfSigned(path, ["demo.localhost"]))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode) & 0o077, 0)
        with open(path, "rb") as f:
            first = f.read()
        self.assertIn(b"PRIVATE KEY", first)
        self.assertFalse(ensureSelfSigned(path, ["other.localhost"]))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), first)


class OutOfTheRuntimePathTests(SynchronousTestCase):
    """
    Making certificates is for first runs and tests, not for the balancer.
    """

    def test_noRuntimeImport(self) -> None:
        """
        No module of the C{tlbalance} package imports
        L{tlbalance._selfsigned}.
        """
        importers = []
        for path in sorted(Path(tlbalance.__file__).parent.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    names = [f"{node.module}.{a.name}" for a in node.names]
                    names.append(str(node.module))
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                if any(n.startswith("tlbalance._selfsigned") for n in names):
                    importers.append(path.name)
        self.assertEqual(importers, [])
