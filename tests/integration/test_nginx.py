# -*- test-case-name: tests.integration.test_nginx -*-
"""
nginx, a PROXY receiver used in production, behind tlbalance: it must read
the true client address from every header tlbalance sends, on TCP and unix
backends, for IPv4 and IPv6 clients, below TLS, and in health checks.
"""

from __future__ import annotations

import os

import pytest
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from tests.certs import makeAuthority
from tests.integration._support import (
    LOOPBACK,
    LOOPBACK6,
    Nginx,
    clientEndpoint,
    httpGet,
    requireIPv6Loopback,
    sleep,
    startBalancerFromArguments,
    startNginx,
)

pytestmark = pytest.mark.integration


class NginxProxyProtocolTests(TestCase):
    """
    nginx with C{listen ... proxy_protocol} reports, in
    C{$proxy_protocol_addr} and C{$proxy_protocol_port}, the client's own
    address and port, and in C{$proxy_protocol_server_addr/port} the
    balancer address the client connected to.
    """

    timeout = 30

    async def assertNginxSeesClient(
        self, version: str, backend: str, listen: str, clientHost: str
    ) -> None:
        """
        Connect from C{clientHost} to a balancer listening on C{listen} that
        sends PROXY C{version} to an nginx reached through C{backend}
        (C{"tcp"} or C{"unix"}); nginx must name the client socket and the
        balancer's listening socket.
        """
        nginx = await startNginx(self)
        if backend == "tcp":
            target = f"tcp:host={LOOPBACK}:port={nginx.port}"
        else:
            target = f"unix:path={nginx.socketPath}"
        service, [address] = startBalancerFromArguments(
            self, "--listen", listen, "--backend", target, "--send-proxy", version
        )
        response = await httpGet(clientEndpoint(address, bindHost=clientHost))
        local = response.localAddress
        self.assertEqual(response.status, 200, response.text)
        self.assertEqual(
            response.text.split(),
            [
                local.host,
                str(local.port),
                address.host,
                str(address.port),
            ],
        )

    async def test_v1TCPBackend(self) -> None:
        """
        nginx on TCP reads the client's address and port from a v1 header.
        """
        await self.assertNginxSeesClient(
            "v1", "tcp", f"tcp:0:interface={LOOPBACK}", LOOPBACK
        )

    async def test_v2TCPBackend(self) -> None:
        """
        nginx on TCP reads the client's address and port from a v2 header.
        """
        await self.assertNginxSeesClient(
            "v2", "tcp", f"tcp:0:interface={LOOPBACK}", LOOPBACK
        )

    async def test_v1UnixBackend(self) -> None:
        """
        nginx on a unix socket still learns the TCP client (not the unix
        hop) from a v1 header.
        """
        await self.assertNginxSeesClient(
            "v1", "unix", f"tcp:0:interface={LOOPBACK}", LOOPBACK
        )

    async def test_v2UnixBackend(self) -> None:
        """
        nginx on a unix socket still learns the TCP client (not the unix
        hop) from a v2 header.
        """
        await self.assertNginxSeesClient(
            "v2", "unix", f"tcp:0:interface={LOOPBACK}", LOOPBACK
        )

    async def test_v1IPv6Client(self) -> None:
        """
        An IPv6 client's address reaches nginx in a v1 TCP6 line.
        """
        requireIPv6Loopback()
        await self.assertNginxSeesClient(
            "v1", "tcp", r"tcp6:0:interface=\:\:1", LOOPBACK6
        )

    async def test_v2IPv6Client(self) -> None:
        """
        An IPv6 client's address reaches nginx, over a unix socket, in a v2
        header.
        """
        requireIPv6Loopback()
        await self.assertNginxSeesClient(
            "v2", "unix", r"tcp6:0:interface=\:\:1", LOOPBACK6
        )

    async def test_manyClientsEachSeeThemselves(self) -> None:
        """
        Twenty clients at once each get their own address back: no header
        is mixed up between concurrent connections.
        """
        nginx = await startNginx(self, tcp=False)
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"unix:path={nginx.socketPath}",
            "--send-proxy",
            "v2",
        )
        responses = await gatherResults(
            [
                Deferred.fromCoroutine(
                    httpGet(clientEndpoint(address, bindHost=LOOPBACK))
                )
                for _ in range(20)
            ]
        )
        for response in responses:
            local = response.localAddress
            self.assertEqual(
                response.text.split()[:2],
                [local.host, str(local.port)],
            )


class NginxTLSBackendTests(TestCase):
    """
    A TLS backend that requires PROXY (nginx C{listen ... ssl
    proxy_protocol}) expects the header on the raw connection, before the
    ClientHello.
    """

    timeout = 30

    async def test_headerBeforeTLS(self) -> None:
        """
        A plain client balanced onto an HTTPS nginx gets an answer naming
        its own address: the header went out first, then TLS started, and
        the certificate checked out against the test authority.
        """
        authority = makeAuthority()
        nginx = await startNginx(self, unix=False, tls=authority.issue("backend.test"))
        caDirectory = os.path.join(nginx.directory, "ca")
        os.mkdir(caDirectory)
        with open(os.path.join(caDirectory, "ca.pem"), "wb") as f:
            f.write(authority.certPEM)
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"ssl:host={LOOPBACK}:port={nginx.port}:caCertsDir={caDirectory}"
            ":hostname=backend.test",
            "--send-proxy",
            "v2",
        )
        response = await httpGet(clientEndpoint(address, bindHost=LOOPBACK))
        local = response.localAddress
        self.assertEqual(response.status, 200, response.text)
        self.assertEqual(
            response.text.split()[:2],
            [local.host, str(local.port)],
        )


class NginxHealthCheckTests(TestCase):
    """
    Health checks of a backend that requires PROXY carry a header too;
    without one, nginx would reject every check and the backend would go
    down while it is fine.
    """

    timeout = 30

    async def assertChecksPass(self, version: str) -> None:
        """
        Run HTTP checks with PROXY C{version} against nginx for many
        intervals: the backend stays up, and nginx logged no broken header.
        """
        nginx = await startNginx(self, tcp=False)
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"unix:path={nginx.socketPath}",
            "--send-proxy",
            version,
            "--check",
            "http GET / 200",
            "--check-inter",
            "0.05",
            "--check-fall",
            "2",
        )
        [backend] = service.balancer.pool.backends
        # Twenty intervals: ten times what two failures need.
        await sleep(1.0)
        self.assertTrue(backend.healthy, backend.snapshot())
        self.assertEqual(self.brokenHeaders(nginx), [])
        self.assertTrue(service.running)

    def brokenHeaders(self, nginx: Nginx) -> list[str]:
        """
        The lines of nginx's error log that complain about a PROXY header.
        """
        with open(os.path.join(nginx.directory, "error.log")) as f:
            return [line for line in f if "broken header" in line]

    async def test_v1Checks(self) -> None:
        """
        v1 checks (a header naming the check's own socket) satisfy nginx.
        """
        await self.assertChecksPass("v1")

    async def test_v2Checks(self) -> None:
        """
        v2 checks (a LOCAL header) satisfy nginx.
        """
        await self.assertChecksPass("v2")

    async def test_checksWithoutHeaderFail(self) -> None:
        """
        The control: checks without a header fail against the same nginx, so
        the two tests above could fail.
        """
        nginx = await startNginx(self, tcp=False)
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"unix:path={nginx.socketPath}",
            "--check",
            "http GET / 200",
            "--check-inter",
            "0.05",
            "--check-fall",
            "2",
        )
        [backend] = service.balancer.pool.backends
        await sleep(1.0)
        self.assertFalse(backend.healthy, backend.snapshot())
        self.assertNotEqual(self.brokenHeaders(nginx), [])
