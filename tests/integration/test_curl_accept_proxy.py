# -*- test-case-name: tests.integration.test_curl_accept_proxy -*-
"""
A balancer listening with C{--accept-proxy}: curl's C{--haproxy-protocol}
header is believed from trusted peers only, the address it declares is the
one passed on, and a header sent in pieces or followed by another is
handled as the PROXY specification says.
"""

from __future__ import annotations

import time
from typing import Any, List, Tuple

import pytest
from twisted.trial.unittest import TestCase

from tests.integration._support import (
    LOOPBACK,
    ClientAddressPage,
    clientEndpoint,
    describeRun,
    rawExchange,
    runProgram,
    startBalancerFromArguments,
    startNginx,
    startRelay,
    startWebBackend,
)
from tests.peers import requirePeer

pytestmark = pytest.mark.integration

#: curl prints this after the body: the address of its own socket, which is
#: what it declares in its PROXY line.
_WRITE_OUT = "\n%{local_ip} %{local_port}"


class CurlAcceptProxyTests(TestCase):
    """
    curl's C{--haproxy-protocol} (a v1 line naming curl's own socket) into
    an C{--accept-proxy} listener that sends v2 to a C{tlproxy:} site.
    """

    timeout = 30

    async def startChain(self, trusted: str) -> Tuple[Any, ClientAddressPage]:
        """
        Start the C{tlproxy:} site and a balancer in front of it that
        accepts PROXY from C{trusted}.

        @return: the balancer's address and the site's page.
        """
        backendAddress, page = await startWebBackend(
            self, f"tlproxy:trusted=127.0.0.1/32:tcp:0:interface={LOOPBACK}"
        )
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--accept-proxy",
            trusted,
            "--proxy-header-timeout",
            "2",
            "--backend",
            f"tcp:host={LOOPBACK}:port={backendAddress.port}",
            "--send-proxy",
            "v2",
        )
        assert isinstance(page, ClientAddressPage)
        return address, page

    async def curl(self, port: int, *extra: str) -> Tuple[int, List[str]]:
        """
        Fetch C{http://127.0.0.1:PORT/} with curl and C{extra} options.

        @return: curl's exit code and its output lines (the body, then
            curl's own address).
        """
        curl = requirePeer("curl")
        result = await runProgram(
            [curl, "-sS", "--max-time", "10", "-w", _WRITE_OUT, *extra]
            + [f"http://{LOOPBACK}:{port}/"]
        )
        self.lastRun = describeRun(result)
        return result.returncode, result.stdout.splitlines()

    async def test_declaredAddressForwarded(self) -> None:
        """
        The backend names the address and port curl declared.
        """
        address, page = await self.startChain("127.0.0.1/32")
        code, lines = await self.curl(
            address.port,
            "--haproxy-protocol",
        )
        self.assertEqual(code, 0, self.lastRun)
        body, curlAddress = lines
        self.assertEqual(body.split()[:2], curlAddress.split(), self.lastRun)
        self.assertEqual(page.requests, 1)

    async def test_declaredAddressNotSocketPeer(self) -> None:
        """
        Through a byte relay whose own socket is C{127.0.0.2}, the backend
        still names curl (C{127.0.0.1} and curl's port): the balancer passes
        on what the header says, not who delivered it.
        """
        address, page = await self.startChain("127.0.0.0/8")
        relay = await startRelay(self, clientEndpoint(address, bindHost="127.0.0.2"))
        code, lines = await self.curl(
            relay.port,
            "--haproxy-protocol",
        )
        self.assertEqual(code, 0, self.lastRun)
        body, curlAddress = lines
        self.assertEqual(body.split()[:2], curlAddress.split(), self.lastRun)
        self.assertEqual(curlAddress.split()[0], LOOPBACK)

    async def test_untrustedPeerClosed(self) -> None:
        """
        A peer outside the trusted networks has its connection closed before
        anything reaches a backend, header or not.
        """
        address, page = await self.startChain("10.0.0.0/8")
        code, lines = await self.curl(
            address.port,
            "--haproxy-protocol",
        )
        # curl sends its PROXY line while connecting, so depending on when
        # the reset lands it reports a connect failure (7), a send failure
        # (55), an empty reply (52) or a receive failure (56).
        self.assertIn(code, (7, 52, 55, 56), self.lastRun)
        # The same from a plain socket: accepted, then closed unanswered.
        answer, reset = await rawExchange(
            (LOOPBACK, address.port),
            b"PROXY TCP4 10.1.2.3 10.4.5.6 1234 80\r\nGET / HTTP/1.0\r\n\r\n",
        )
        self.assertEqual(answer, b"")
        self.assertEqual(page.requests, 0)

    async def test_trustedPeerWithoutHeaderClosed(self) -> None:
        """
        A trusted peer that starts with HTTP instead of a PROXY header is
        closed: the listener never guesses whether a header is there.
        """
        address, page = await self.startChain("127.0.0.1/32")
        code, lines = await self.curl(address.port)
        self.assertIn(code, (52, 55, 56), self.lastRun)
        self.assertEqual(lines[:1], [""], self.lastRun)
        self.assertEqual(page.requests, 0)


class RawHeaderTests(TestCase):
    """
    Headers written by hand to an C{--accept-proxy} balancer in front of
    nginx (which reads the v1/v2 header the balancer writes).
    """

    timeout = 30

    async def exchange(self, *pieces: bytes) -> bytes:
        """
        Connect to a balancer trusting loopback (with a one-second header
        timeout), send C{pieces} a fifth of a second apart (so each arrives
        on its own), and read until closed.

        @return: the answer; C{self.elapsed} is how long the exchange took.
        """
        nginx = await startNginx(self, tcp=False)
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--accept-proxy",
            "127.0.0.1/32",
            "--proxy-header-timeout",
            "1",
            "--backend",
            f"unix:path={nginx.socketPath}",
            "--send-proxy",
            "v2",
        )
        started = time.monotonic()
        answer, reset = await rawExchange(
            (LOOPBACK, address.port),
            *pieces,
        )
        self.elapsed = time.monotonic() - started
        return answer

    async def test_fragmentedHeader(self) -> None:
        """
        A v1 line arriving in three pieces is put together: nginx names the
        client it declares.
        """
        answer = await self.exchange(
            b"PRO",
            b"XY TCP4 192.0.2.1 198.51.100.7 56324",
            b" 443\r\nGET / HTTP/1.0\r\n\r\n",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
        self.assertTrue(
            answer.endswith(b"\r\n\r\n192.0.2.1 56324 198.51.100.7 443"), answer
        )

    async def test_onlyFirstHeaderCounts(self) -> None:
        """
        A second PROXY line after the first is data, not a new identity:
        nginx gets it as the start of the request and refuses it, so the
        client cannot pose as someone else.
        """
        answer = await self.exchange(
            b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
            b"PROXY TCP4 203.0.113.9 198.51.100.7 1111 443\r\n"
            b"GET / HTTP/1.0\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 400"), answer)
        self.assertNotIn(b"203.0.113.9", answer)

    async def test_silentPeerTimedOut(self) -> None:
        """
        A trusted peer that connects and sends no header is disconnected
        once the header timeout (one second) has passed, not before.
        """
        answer = await self.exchange()
        self.assertEqual(answer, b"")
        self.assertGreaterEqual(self.elapsed, 0.9)
        self.assertLess(self.elapsed, 4.0)
