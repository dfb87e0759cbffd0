# -*- test-case-name: tests.integration.test_exhaustion -*-
"""
The balancer under exhaustion, for real: a C{twistd tlbalance} process
with a low open files limit flooded with idle clients, and backends that
accept connections but never answer (SIGSTOPped, while the kernel still
completes their handshakes).
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from typing import Any, List, Tuple

import pytest
from twisted.internet import reactor
from twisted.internet.endpoints import connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.integration._servers import LoopbackServer
from tests.integration._support import (
    LOOPBACK,
    PYTHON,
    TWISTD,
    PeerProcess,
    clientEndpoint,
    freePort,
    rawExchange,
    sleep,
    startBalancerFromArguments,
    startPeer,
    temporaryDirectory,
    waitUntil,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="reads /proc, as the peers do"
    ),
]

#: The open files limit the balancer starts with: low, as in the report.
START_LIMIT = 128

#: Clients the balancer can relay once its limit is lowered further; the
#: next one is accepted with the last descriptor, so its backend connect is
#: the one that fails with EMFILE.
RELAYED = 10
FLOOD = 60


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class _Client(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def _limitDescriptors() -> None:
    # Runs in the child between fork and exec.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (START_LIMIT, hard))


def _leaveDescriptors(pid: int, free: int) -> None:
    """
    Lower process C{pid}'s open files limit so that exactly C{free} more
    descriptors can be opened.
    """
    used = len(os.listdir(f"/proc/{pid}/fd"))
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (used + free, hard))


def _cpuSeconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15; the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DescriptorLimitTests(TestCase):
    """
    C{twistd tlbalance} with a low C{RLIMIT_NOFILE}, flooded with L{FLOOD}
    idle clients: running out of descriptors is the balancer's problem,
    never the backend's.
    """

    timeout = 60

    async def startTwistd(self) -> Tuple[PeerProcess, int]:
        backend = await serverFromString(
            reactor, f"tcp:0:interface={LOOPBACK}:backlog=511"
        ).listen(Factory.forProtocol(_Echo))
        self.addCleanup(backend.stopListening)
        port = freePort()
        directory = temporaryDirectory(self)
        process = startPeer(
            self,
            "twistd",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "tlbalance",
                "--listen",
                f"tcp:{port}:interface={LOOPBACK}",
                "--backend",
                f"{LOOPBACK}:{backend.getHost().port}",
                "--drain-timeout",
                "1",
            ],
            os.path.join(directory, "twistd.log"),
            cwd=directory,
            preexec_fn=_limitDescriptors,
        )
        await process.listening((LOOPBACK, port), timeout=20)
        return process, port

    async def flood(self, port: int) -> List[socket.socket]:
        """
        Open L{FLOOD} idle connections, a few milliseconds apart so that the
        balancer takes them one by one; the kernel completes each handshake
        whether or not the balancer accepts it.
        """
        clients = []
        for _ in range(FLOOD):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setblocking(False)
            self.addCleanup(client.close)
            try:
                client.connect((LOOPBACK, port))
            except BlockingIOError:
                pass
            clients.append(client)
            await sleep(0.003)
        return clients

    async def echo(self, port: int) -> bytes:
        client = _Client()
        await connectProtocol(clientEndpoint((LOOPBACK, port)), client)
        client.transport.write(b"ping")  # type: ignore[union-attr]
        await waitUntil(
            lambda: client.received == b"ping" or client.lost, 5, "the echo"
        )
        client.transport.loseConnection()  # type: ignore[union-attr]
        return client.received

    async def test_floodPastTheLimit(self) -> None:
        """
        The backend stays up while the balancer is out of descriptors; the
        event is logged once, not per client; the balancer does not spin;
        and once the flood is gone a new client is served at once, not
        refused for C{--fail-timeout}.
        """
        process, port = await self.startTwistd()
        self.assertEqual(await self.echo(port), b"ping")
        # Each relayed client holds two descriptors; one left over means a
        # client is accepted with no descriptor left for its backend.
        _leaveDescriptors(process.pid, 2 * RELAYED + 1)
        clients = await self.flood(port)
        await waitUntil(
            lambda: "Too many open files" in process.output(),
            10,
            "the balancer running out of descriptors",
        )
        started = _cpuSeconds(process.pid)
        await sleep(1.0)
        busy = _cpuSeconds(process.pid) - started
        for client in clients:
            client.close()
        await sleep(0.3)
        self.assertEqual(await self.echo(port), b"ping")
        output = process.output()
        self.assertNotIn("UP -> DOWN", output)
        self.assertNotIn("No backend is up", output)
        self.assertIn("raise the open files limit", output)
        # The client accepted with the last descriptor was closed, and about
        # one more per pause of accepting (8 in the 4 s of this test, with
        # pauses growing to 1 s); the other idle clients of the flood waited
        # in the listen queue instead of being accepted and closed.
        closed = output.count("local error: EMFILE (Too many open files)")
        self.assertGreaterEqual(closed, 1)
        self.assertLess(closed, (FLOOD - RELAYED) // 2, output)
        self.assertLessEqual(output.count("[tlbalance.localerrors#warn]"), 2, output)
        self.assertNotIn("EMFILE recovery", output)
        self.assertLess(busy, 0.5, "the balancer spun while out of descriptors")


class HungBackendTests(TestCase):
    """
    A backend SIGSTOPped while the balancer relays to it: its kernel still
    completes handshakes, so only the first-byte timeout and HTTP checks
    see that it is gone.
    """

    timeout = 60

    async def startBackend(self) -> LoopbackServer:
        """
        Start a web server in a process of its own (it is to be stopped),
        with a long listen queue so that the checks' connections to the
        stopped server keep being completed by its kernel.
        """
        directory = temporaryDirectory(self)
        with open(os.path.join(directory, "index.html"), "w") as f:
            f.write("ok")
        port = freePort()
        server = LoopbackServer(
            self,
            "twist-web",
            directory,
            [
                PYTHON,
                "-m",
                "twisted",
                "web",
                "--listen",
                f"tcp:{port}:interface={LOOPBACK}:backlog=511",
                "--path",
                directory,
            ],
            None,
            port,
        )
        await server.start()
        return server

    async def test_firstByteTimeout(self) -> None:
        """
        With C{--first-byte-timeout 1}, a client whose request the stopped
        backend never answers is closed after about a second, not after the
        idle timeout.
        """
        backend = await self.startBackend()
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"{LOOPBACK}:{backend.port}",
            "--first-byte-timeout",
            "1",
        )
        request = b"GET / HTTP/1.0\r\n\r\n"
        answer, _ = await rawExchange((LOOPBACK, address.port), request, gap=0)
        self.assertIn(b" 200 ", answer.split(b"\r\n", 1)[0])
        backend.pause()
        started = time.monotonic()
        answer, reset = await rawExchange(
            (LOOPBACK, address.port), request, gap=0, limit=10
        )
        waited = time.monotonic() - started
        self.assertEqual((answer, reset), (b"", True))
        self.assertGreaterEqual(waited, 1.0)
        self.assertLess(waited, 3.0)
        self.assertEqual(service.balancer.pool.backends[0].firstByteTimeouts, 1)

    async def test_checks(self) -> None:
        """
        A TCP check keeps passing against the stopped backend; an HTTP check
        takes it down within C{fall} x (C{inter} + C{timeout}).
        """
        backend = await self.startBackend()
        endpoint = f"tcp:host={LOOPBACK}:port={backend.port}"
        service, _ = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--config",
            self.checksFile(endpoint),
        )
        tcpChecked, httpChecked = service.balancer.pool.backends
        backend.pause()
        started = time.monotonic()
        await waitUntil(lambda: not httpChecked.healthy, 5, "the HTTP check failing")
        took = time.monotonic() - started
        await sleep(1.0)
        self.assertTrue(tcpChecked.healthy)
        self.assertLess(took, 2 * (0.3 + 0.3) * 1.1 + 1.0)

    def checksFile(self, endpoint: str) -> str:
        path = os.path.join(temporaryDirectory(self), "checks.toml")
        with open(path, "w") as f:
            f.write(
                "check-inter = 0.3\n"
                "check-fall = 2\n"
                "[[backend]]\n"
                f'endpoint = "{endpoint}"\n'
                'name = "tcp-checked"\n'
                'check = "tcp"\n'
                "[[backend]]\n"
                f'endpoint = "{endpoint}"\n'
                'name = "http-checked"\n'
                'check = "http GET / 200"\n'
            )
        return path
