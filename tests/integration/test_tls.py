# -*- test-case-name: tests.integration.test_tls -*-
"""
TLS listeners (C{tlsni:}) seen by real TLS clients: the certificate chosen
by server name, the protocol floor, and the server name and TLS facts passed
to backends in the PROXY v2 header.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence, Tuple

import pytest
from twisted.trial.unittest import TestCase

from tests.certs import CertificateAuthority, makeAuthority
from tests.integration._support import (
    LOOPBACK,
    ClientAddressPage,
    describeRun,
    runProgram,
    startBalancerFromArguments,
    startWebBackend,
    temporaryDirectory,
    writeCertificateDirectory,
)
from tests.peers import requirePeer
from tlbalance.proxyprotocol import (
    PP2_CLIENT_SSL,
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_SSL,
    parseSSLTLV,
)

pytestmark = pytest.mark.integration

_SUBJECT = re.compile(r"^subject=(.*)$", re.MULTILINE)
_REQUEST = "GET / HTTP/1.0\r\nHost: {name}\r\n\r\n"


class SNIListenerTests(TestCase):
    """
    C{openssl s_client} against a C{tlsni:} listener over a directory with a
    default certificate and two named ones.
    """

    timeout = 30

    async def startTLSBalancer(
        self,
    ) -> Tuple[CertificateAuthority, Any, ClientAddressPage, str]:
        """
        Start a balancer with a C{tlsni:} listener over C{00-default.pem}
        (C{default.test}, loaded first), C{alpha.pem} and C{beta.pem}, sending
        PROXY v2 to a C{tlproxy:} site.

        @return: the authority, the listener's address, the site's page and
            the authority's certificate file.
        """
        authority = makeAuthority()
        certificates = writeCertificateDirectory(
            self,
            {
                "00-default.pem": authority.issue("default.test"),
                "alpha.pem": authority.issue("alpha.test"),
                "beta.pem": authority.issue("beta.test", "www.beta.test"),
            },
        )
        authorityFile = os.path.join(temporaryDirectory(self), "ca.pem")
        with open(authorityFile, "wb") as f:
            f.write(authority.certPEM)
        backendAddress, page = await startWebBackend(
            self, f"tlproxy:trusted=127.0.0.1/32:tcp:0:interface={LOOPBACK}"
        )
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tlsni:certdir={certificates}:tcp:0:interface={LOOPBACK}",
            "--backend",
            f"tcp:host={LOOPBACK}:port={backendAddress.port}",
            "--send-proxy",
            "v2",
        )
        assert isinstance(page, ClientAddressPage)
        return authority, address, page, authorityFile

    async def sClient(
        self, address: Any, options: Sequence[str], request: str = ""
    ) -> Tuple[int, str]:
        """
        Run C{openssl s_client} against C{address} with C{options}, sending
        C{request} and reading until the server closes.

        @return: the exit code and everything it printed.
        """
        openssl = requirePeer("openssl")
        result = await runProgram(
            [
                openssl,
                "s_client",
                "-connect",
                f"{LOOPBACK}:{address.port}",
                *(["-ign_eof"] if request else []),
                *options,
            ],
            input=request,
        )
        self.lastRun = describeRun(result)
        return result.returncode, result.stdout + result.stderr

    async def assertServes(self, serverName: str, expectedSubject: str) -> None:
        """
        A client asking for C{serverName} gets the certificate whose subject
        is C{expectedSubject}, and it verifies against the authority.
        """
        authority, address, page, authorityFile = await self.startTLSBalancer()
        options = ["-CAfile", authorityFile, "-verify_return_error"]
        if serverName:
            options += ["-servername", serverName]
        else:
            options.append("-noservername")
        code, output = await self.sClient(address, options)
        self.assertEqual(code, 0, self.lastRun)
        self.assertEqual(
            [s.strip() for s in _SUBJECT.findall(output)],
            [f"CN = {expectedSubject}"],
            self.lastRun,
        )
        self.assertIn("Verify return code: 0 (ok)", output)

    async def test_firstName(self) -> None:
        """
        C{alpha.test} gets the alpha certificate.
        """
        await self.assertServes("alpha.test", "alpha.test")

    async def test_secondName(self) -> None:
        """
        C{www.beta.test}, the second SAN of the beta certificate, gets it.
        """
        await self.assertServes("www.beta.test", "beta.test")

    async def test_unknownNameGetsDefault(self) -> None:
        """
        A name no certificate serves gets the first file's certificate.
        """
        await self.assertServes("unknown.test", "default.test")

    async def test_noNameGetsDefault(self) -> None:
        """
        A client that sends no server name gets the first file's
        certificate.
        """
        await self.assertServes("", "default.test")

    async def test_tls11Refused(self) -> None:
        """
        A client offering only TLS 1.1 (with every cipher allowed, so that
        the refusal is the server's) gets a protocol-version alert and no
        certificate.
        """
        authority, address, page, authorityFile = await self.startTLSBalancer()
        code, output = await self.sClient(
            address,
            ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "alpha.test"],
        )
        self.assertNotEqual(code, 0, self.lastRun)
        self.assertIn("alert protocol version", output, self.lastRun)
        self.assertIn("no peer certificate available", output)
        self.assertEqual(page.requests, 0)

    async def test_tls12Works(self) -> None:
        """
        A TLS 1.2 client completes a request, and the backend's PROXY v2
        header says TLS 1.2 in its SSL TLV, with the cipher the client
        negotiated.
        """
        authority, address, page, authorityFile = await self.startTLSBalancer()
        code, output = await self.sClient(
            address,
            ["-tls1_2", "-servername", "alpha.test", "-CAfile", authorityFile],
            _REQUEST.format(name="alpha.test"),
        )
        self.assertIn("Protocol  : TLSv1.2", output, self.lastRun)
        self.assertIn("HTTP/1.0 200", output, self.lastRun)
        self.assertEqual(page.requests, 1)
        [header] = page.headers
        sslValue = header.tlv(PP2_TYPE_SSL)
        self.assertIsNotNone(sslValue)
        ssl = parseSSLTLV(sslValue)
        self.assertTrue(ssl.client & PP2_CLIENT_SSL)
        self.assertEqual(ssl.tlv(PP2_SUBTYPE_SSL_VERSION), b"TLSv1.2")
        cipher = re.search(r"Cipher is (\S+)", output)
        assert cipher is not None, self.lastRun
        self.assertEqual(
            ssl.tlv(PP2_SUBTYPE_SSL_CIPHER), cipher.group(1).encode("ascii")
        )

    async def test_closeNotifyWhenBackendCloses(self) -> None:
        """
        When the backend closes after answering, the client's TLS stream
        ends with a close_notify alert, not a bare TCP close that TLS
        clients report as a truncation attack ("unexpected eof").
        """
        authority, address, page, authorityFile = await self.startTLSBalancer()
        code, output = await self.sClient(
            address,
            ["-servername", "alpha.test", "-CAfile", authorityFile],
            _REQUEST.format(name="alpha.test"),
        )
        self.assertIn("HTTP/1.0 200", output, self.lastRun)
        self.assertNotIn("unexpected eof", output, self.lastRun)
        self.assertEqual(code, 0, self.lastRun)

    async def test_serverNameToBackend(self) -> None:
        """
        curl asking for C{beta.test}: the backend behind C{--send-proxy v2}
        finds C{beta.test} in the AUTHORITY TLV and curl's own address as
        the client.
        """
        authority, address, page, authorityFile = await self.startTLSBalancer()
        curl = requirePeer("curl")
        port = address.port
        result = await runProgram(
            [
                curl,
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                authorityFile,
                "--resolve",
                f"beta.test:{port}:{LOOPBACK}",
                "-w",
                "\n%{local_ip} %{local_port}",
                f"https://beta.test:{port}/",
            ]
        )
        self.assertEqual(result.returncode, 0, describeRun(result))
        body, curlAddress = result.stdout.splitlines()
        self.assertEqual(body.split(), curlAddress.split() + ["beta.test"])
        [header] = page.headers
        self.assertEqual(header.tlv(PP2_TYPE_AUTHORITY), b"beta.test")
