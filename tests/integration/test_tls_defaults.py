# -*- test-case-name: tests.integration.test_tls_defaults -*-
"""
The TLS defaults of a real balancer's C{ssl:} and C{tlsni:} listeners, as
C{openssl s_client} and testssl.sh see them: returning clients resume their
session, CBC suites are refused, and only AEAD suites with forward secrecy
are offered.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Sequence, Tuple

import pytest
from twisted.trial.unittest import TestCase

from tests.certs import makeAuthority
from tests.integration._support import (
    LOOPBACK,
    describeRun,
    runProgram,
    startBalancerFromArguments,
    startWebBackend,
    temporaryDirectory,
    writeCertificateDirectory,
)
from tests.peers import requirePeer

pytestmark = pytest.mark.integration

_SESSION_LINE = re.compile(r"^(New|Reused), (TLSv1\.[23]), Cipher is (\S+)$", re.M)
_REQUEST = "GET / HTTP/1.0\r\nHost: alpha.test\r\n\r\n"


class _SClient:
    """
    Runs C{openssl s_client} against a listener of the test's balancer.
    """

    lastRun: str

    async def sClient(self, port: int, options: Sequence[str]) -> Tuple[int, str]:
        """
        Run C{openssl s_client} against C{port} with C{options}, sending a
        request and reading the answer (which also reads the TLS 1.3
        session tickets, sent after the handshake).

        @return: its exit code and everything it printed.
        """
        openssl = requirePeer("openssl")
        result = await runProgram(
            [
                openssl,
                "s_client",
                "-connect",
                f"{LOOPBACK}:{port}",
                "-servername",
                "alpha.test",
                "-ign_eof",
                *options,
            ],
            input=_REQUEST,
        )
        self.lastRun = describeRun(result)
        return result.returncode, result.stdout + result.stderr


class TLSDefaultsTests(_SClient, TestCase):
    """
    One balancer with an C{ssl:} listener and a C{tlsni:} listener, both
    showing C{alpha.test}'s certificate, in front of a web backend.
    """

    timeout = 120

    async def setUp(self) -> None:
        authority = makeAuthority()
        alpha = authority.issue("alpha.test")
        directory = temporaryDirectory(self)
        pem = os.path.join(directory, "alpha.pem")
        with open(pem, "wb") as f:
            f.write(alpha.combinedPEM())
        certificates = writeCertificateDirectory(self, {"alpha.pem": alpha})
        backendAddress, page = await startWebBackend(
            self, f"tcp:0:interface={LOOPBACK}"
        )
        service, addresses = startBalancerFromArguments(
            self,
            "--listen",
            f"ssl:0:privateKey={pem}:interface={LOOPBACK}",
            "--listen",
            f"tlsni:certdir={certificates}:tcp:0:interface={LOOPBACK}",
            "--backend",
            f"tcp:host={LOOPBACK}:port={backendAddress.port}",
        )
        self.listeners = {"ssl": addresses[0], "tlsni": addresses[1]}
        self.directory = directory

    async def sessionsOf(self, port: int, version: str) -> List[Tuple[str, str]]:
        """
        Connect twice with C{version} (C{-tls1_2} or C{-tls1_3}), the second
        time offering the first connection's session.

        @return: for each connection, C{New} or C{Reused} and the protocol.
        """
        session = os.path.join(self.directory, f"session-{port}{version}.pem")
        found = []
        for option in ["-sess_out", "-sess_in"]:
            code, output = await self.sClient(port, [version, option, session])
            self.assertEqual(code, 0, self.lastRun)
            self.assertIn("HTTP/1.0 200", output, self.lastRun)
            lines = _SESSION_LINE.findall(output)
            self.assertEqual(len(lines), 1, self.lastRun)
            found.append(lines[0][:2])
        return found

    async def test_resumesTLS12(self) -> None:
        """
        A TLS 1.2 client offering its session again resumes it, on both
        listeners (session tickets; OpenSSL's client takes them).
        """
        for name, address in self.listeners.items():
            self.assertEqual(
                await self.sessionsOf(address.port, "-tls1_2"),
                [("New", "TLSv1.2"), ("Reused", "TLSv1.2")],
                name,
            )

    async def test_resumesTLS12WithoutTickets(self) -> None:
        """
        A TLS 1.2 client that refuses tickets resumes by session id, from
        the server's session cache.
        """
        address = self.listeners["ssl"]
        session = os.path.join(self.directory, "session-id.pem")
        outcomes = []
        for option in ["-sess_out", "-sess_in"]:
            code, output = await self.sClient(
                address.port, ["-tls1_2", "-no_ticket", option, session]
            )
            self.assertEqual(code, 0, self.lastRun)
            outcomes.append(_SESSION_LINE.findall(output)[0][0])
        self.assertEqual(outcomes, ["New", "Reused"])

    async def test_resumesTLS13(self) -> None:
        """
        A TLS 1.3 client resumes with the ticket it was sent, on both
        listeners.
        """
        for name, address in self.listeners.items():
            self.assertEqual(
                await self.sessionsOf(address.port, "-tls1_3"),
                [("New", "TLSv1.3"), ("Reused", "TLSv1.3")],
                name,
            )

    async def test_cbcRefused(self) -> None:
        """
        C{openssl s_client -tls1_2 -cipher AES128-SHA} (CBC, RSA key
        exchange) and C{ECDHE-ECDSA-AES128-SHA} (CBC with forward secrecy)
        are refused with a handshake failure alert.
        """
        for address in self.listeners.values():
            for cipher in ["AES128-SHA", "ECDHE-ECDSA-AES128-SHA"]:
                code, output = await self.sClient(
                    address.port, ["-tls1_2", "-cipher", cipher]
                )
                self.assertNotEqual(code, 0, self.lastRun)
                self.assertIn("alert handshake failure", output, self.lastRun)
                self.assertNotIn("HTTP/1.0 200", output, self.lastRun)

    async def test_testsslCiphersPerProtocol(self) -> None:
        """
        testssl.sh's cipher-per-protocol check (C{-E}, about 20 s) finds no
        protocol below TLS 1.2, the three ECDHE-ECDSA AEAD suites for TLS
        1.2 (an ECDSA certificate) and the three TLS 1.3 suites.
        """
        testssl = requirePeer("testssl")
        address = self.listeners["ssl"]
        report = os.path.join(self.directory, "testssl.json")
        result = await runProgram(
            [
                testssl,
                "--quiet",
                "--color",
                "0",
                "--warnings",
                "off",
                "--openssl-timeout",
                "10",
                "--jsonfile",
                report,
                "-E",
                f"{LOOPBACK}:{address.port}",
            ],
            timeout=100,
            env={**os.environ, "TMPDIR": self.directory},
        )
        with open(report) as f:
            findings: List[Dict[str, Any]] = json.load(f)
        offered: Dict[str, List[str]] = {}
        for finding in findings:
            # id "cipher-tls1_2_xc02c", finding "TLS 1.2 xc02c
            # ECDHE-ECDSA-AES256-GCM-SHA384 ECDH 253 AESGCM 256 TLS_...": the
            # OpenSSL name follows the hexcode.
            match = re.fullmatch(r"cipher-(\w+)_(x[0-9a-f]+)", finding["id"])
            if match is not None:
                words = finding["finding"].split()
                name = words[words.index(match.group(2)) + 1]
                offered.setdefault(match.group(1), []).append(name)
        self.assertEqual(
            {protocol: sorted(names) for protocol, names in offered.items()},
            {
                "tls1_2": [
                    "ECDHE-ECDSA-AES128-GCM-SHA256",
                    "ECDHE-ECDSA-AES256-GCM-SHA384",
                    "ECDHE-ECDSA-CHACHA20-POLY1305",
                ],
                "tls1_3": [
                    "TLS_AES_128_GCM_SHA256",
                    "TLS_AES_256_GCM_SHA384",
                    "TLS_CHACHA20_POLY1305_SHA256",
                ],
            },
            describeRun(result),
        )


class TLSCiphersOptionTests(_SClient, TestCase):
    """
    C{--tls-ciphers} replaces the TLS 1.2 suites a listener offers.
    """

    timeout = 60

    async def setUp(self) -> None:
        authority = makeAuthority()
        directory = temporaryDirectory(self)
        pem = os.path.join(directory, "alpha.pem")
        with open(pem, "wb") as f:
            f.write(authority.issue("alpha.test").combinedPEM())
        backendAddress, page = await startWebBackend(
            self, f"tcp:0:interface={LOOPBACK}"
        )
        service, addresses = startBalancerFromArguments(
            self,
            "--listen",
            f"ssl:0:privateKey={pem}:interface={LOOPBACK}",
            "--backend",
            f"tcp:host={LOOPBACK}:port={backendAddress.port}",
            "--tls-ciphers",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        )
        self.listeners = {"ssl": addresses[0]}
        self.directory = directory

    async def test_onlyTheNamedSuites(self) -> None:
        """
        The one suite named is accepted; another AEAD suite of the default
        list is refused.
        """
        port = self.listeners["ssl"].port
        code, output = await self.sClient(
            port, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
        )
        self.assertEqual(code, 0, self.lastRun)
        self.assertIn("HTTP/1.0 200", output, self.lastRun)
        code, output = await self.sClient(
            port, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]
        )
        self.assertNotEqual(code, 0, self.lastRun)
        self.assertNotIn("HTTP/1.0 200", output, self.lastRun)
