# -*- test-case-name: tests.integration.test_haproxy -*-
"""
HAProxy, the reference PROXY implementation, on both sides of tlsuite: as a
sender in front of the C{tlproxy:} endpoint and of an C{--accept-proxy}
balancer, and as a receiver behind a balancer that sends PROXY.
"""

from __future__ import annotations

import os

import pytest
from twisted.trial.unittest import TestCase

from tests.certs import makeAuthority
from tests.integration._support import (
    LOOPBACK,
    clientEndpoint,
    freePort,
    httpGet,
    startBalancerFromArguments,
    startHAProxy,
    startNginx,
    startWebBackend,
    temporaryDirectory,
    tlsClientEndpoint,
    writeCertificateDirectory,
)

pytestmark = pytest.mark.integration

_DEFAULTS = """\
global
    maxconn 200

defaults
    timeout connect 5s
    timeout client 10s
    timeout server 10s
"""


def senderConfig(frontPort: int, server: str, option: str) -> str:
    """
    An HAProxy that relays TCP from C{127.0.0.1:frontPort} to C{server} (an
    HAProxy address: C{host:port} or a unix socket path), opening each
    server connection with the PROXY header C{option} asks for.
    """
    return _DEFAULTS + (
        "frontend front\n"
        "    mode tcp\n"
        f"    bind {LOOPBACK}:{frontPort}\n"
        "    default_backend back\n"
        "backend back\n"
        "    mode tcp\n"
        f"    server app {server} {option}\n"
    )


class HAProxySenderTests(TestCase):
    """
    A Twisted web site on C{tlproxy:} behind HAProxy reports, as
    C{request.getClientAddress()}, the client HAProxy saw.
    """

    timeout = 30

    async def assertSiteSeesClient(self, option: str, unix: bool) -> None:
        """
        Connect through an HAProxy using C{option} to a C{tlproxy:} site on
        TCP, or on a unix socket when C{unix}; the site must name the client
        socket.
        """
        if unix:
            path = os.path.join(temporaryDirectory(self), "site.sock")
            await startWebBackend(self, f"tlproxy:trusted=unix:unix:{path}")
            server = path
        else:
            address, _ = await startWebBackend(
                self,
                f"tlproxy:trusted=127.0.0.1/32:tcp:0:interface={LOOPBACK}",
            )
            server = f"{LOOPBACK}:{address.port}"
        front = freePort()
        await startHAProxy(self, senderConfig(front, server, option), (LOOPBACK, front))
        response = await httpGet(clientEndpoint((LOOPBACK, front), bindHost=LOOPBACK))
        local = response.localAddress
        self.assertEqual(response.status, 200, response.text)
        self.assertEqual(
            response.text.split()[:2],
            [local.host, str(local.port)],
        )

    async def test_sendProxy(self) -> None:
        """
        HAProxy's C{send-proxy} (v1) header is understood.
        """
        await self.assertSiteSeesClient("send-proxy", unix=False)

    async def test_sendProxyV2(self) -> None:
        """
        HAProxy's C{send-proxy-v2} header is understood.
        """
        await self.assertSiteSeesClient("send-proxy-v2", unix=False)

    async def test_sendProxyV2Unix(self) -> None:
        """
        A C{tlproxy:} site on a unix socket, trusting unix peers, learns the
        TCP client from HAProxy's v2 header.
        """
        await self.assertSiteSeesClient("send-proxy-v2", unix=True)

    async def test_sendProxyV2WithTLVs(self) -> None:
        """
        A v2 header carrying TLVs HAProxy adds (a CRC32C checksum and a
        unique id) is accepted, checksum included.
        """
        await self.assertSiteSeesClient(
            "send-proxy-v2 proxy-v2-options crc32c,unique-id", unix=False
        )

    async def test_chainThroughBalancer(self) -> None:
        """
        HAProxy in front of an C{--accept-proxy} balancer that sends v1 to
        nginx: nginx names the client HAProxy saw, not HAProxy itself.
        """
        nginx = await startNginx(self, tcp=False)
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--accept-proxy",
            "127.0.0.1/32",
            "--backend",
            f"unix:path={nginx.socketPath}",
            "--send-proxy",
            "v1",
        )
        front = freePort()
        server = f"{LOOPBACK}:{address.port}"
        await startHAProxy(
            self, senderConfig(front, server, "send-proxy-v2"), (LOOPBACK, front)
        )
        response = await httpGet(clientEndpoint((LOOPBACK, front), bindHost=LOOPBACK))
        local = response.localAddress
        self.assertEqual(response.status, 200, response.text)
        # The destination is what the client dialled: HAProxy's front port.
        self.assertEqual(
            response.text.split(),
            [local.host, str(local.port), LOOPBACK, str(front)],
        )

    async def test_headerBeforeTLS(self) -> None:
        """
        HAProxy relaying TLS untouched, header first, into a TLS balancer
        with C{--accept-proxy}: the handshake succeeds behind the header,
        and the backend learns both the client and the server name.
        """
        authority = makeAuthority()
        certificates = writeCertificateDirectory(
            self, {"site.pem": authority.issue("site.test")}
        )
        backendAddress, _ = await startWebBackend(
            self, f"tlproxy:trusted=127.0.0.1/32:tcp:0:interface={LOOPBACK}"
        )
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tlsni:certdir={certificates}:tcp:0:interface={LOOPBACK}",
            "--accept-proxy",
            "127.0.0.1/32",
            "--backend",
            f"tcp:host={LOOPBACK}:port={backendAddress.port}",
            "--send-proxy",
            "v2",
        )
        front = freePort()
        server = f"{LOOPBACK}:{address.port}"
        await startHAProxy(
            self, senderConfig(front, server, "send-proxy-v2"), (LOOPBACK, front)
        )
        response = await httpGet(
            tlsClientEndpoint(
                (LOOPBACK, front), "site.test", authority.certPEM, bindHost=LOOPBACK
            )
        )
        local = response.localAddress
        self.assertEqual(response.status, 200, response.text)
        self.assertEqual(
            response.text.split(),
            [local.host, str(local.port), "site.test"],
        )


def receiverConfig(socketPath: str) -> str:
    """
    An HAProxy that requires a PROXY header on the unix socket
    C{socketPath} and answers each HTTP request with what it learnt from
    the header: source address, source port and AUTHORITY TLV.
    """
    return _DEFAULTS + (
        "frontend receiver\n"
        "    mode http\n"
        f"    bind unix@{socketPath} accept-proxy\n"
        "    http-request return status 200 content-type text/plain "
        'lf-string "%[src] %[src_port] %[fc_pp_authority]"\n'
    )


class HAProxyReceiverTests(TestCase):
    """
    HAProxy with C{accept-proxy} behind the balancer reads the real client
    from every header the balancer writes.
    """

    timeout = 30

    async def assertHAProxySeesClient(self, version: str, tls: bool) -> None:
        """
        Balance a client onto an HAProxy receiver with PROXY C{version},
        over TLS (server name C{site.test}) when C{tls}.
        """
        socketPath = os.path.join(temporaryDirectory(self), "haproxy.sock")
        await startHAProxy(self, receiverConfig(socketPath), socketPath)
        listen = f"tcp:0:interface={LOOPBACK}"
        authority = makeAuthority()
        if tls:
            certificates = writeCertificateDirectory(
                self, {"site.pem": authority.issue("site.test")}
            )
            listen = f"tlsni:certdir={certificates}:{listen}"
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            listen,
            "--backend",
            f"unix:path={socketPath}",
            "--send-proxy",
            version,
        )
        if tls:
            endpoint = tlsClientEndpoint(
                address, "site.test", authority.certPEM, bindHost=LOOPBACK
            )
        else:
            endpoint = clientEndpoint(address, bindHost=LOOPBACK)
        response = await httpGet(endpoint)
        local = response.localAddress
        self.assertEqual(response.status, 200, response.text)
        expected = [local.host, str(local.port)]
        if tls:
            expected.append("site.test")
        self.assertEqual(response.text.split(), expected)

    async def test_v1(self) -> None:
        """
        HAProxy reads the client from the balancer's v1 header.
        """
        await self.assertHAProxySeesClient("v1", tls=False)

    async def test_v2(self) -> None:
        """
        HAProxy reads the client from the balancer's v2 header.
        """
        await self.assertHAProxySeesClient("v2", tls=False)

    async def test_v2AuthorityFromTLS(self) -> None:
        """
        Behind a TLS listener, HAProxy finds the client's server name in the
        v2 header's AUTHORITY TLV (C{fc_pp_authority}).
        """
        await self.assertHAProxySeesClient("v2", tls=True)
