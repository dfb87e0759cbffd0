"""
The runtime API of a real balancer: its control socket, C{tlbalancectl}
run as a program, and draining a backend under C{ab} load.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from typing import Any, List

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tests.integration._support import (
    CHECKOUT,
    LOOPBACK,
    balancerConfig,
    describeRun,
    reactor,
    runProgram,
    sleep,
    startBalancerFromArguments,
    temporaryDirectory,
)
from tests.peers import requirePeer
from tlbalance.backends import StateChange
from tlbalance.service import BalancerService, makeBalancerService
from tlsuite._startup import StartupError

pytestmark = pytest.mark.integration


class SlowPage(Resource):
    """
    Answers every request after C{delay} seconds, so that requests are in
    flight when a backend is drained.
    """

    isLeaf = True

    def __init__(self, name: str, delay: float) -> None:
        super().__init__()
        self.name = name
        self.delay = delay

    def render_GET(self, request: Request) -> Any:
        def answer() -> None:
            if not request.finished and not request._disconnected:
                request.write(self.name.encode() + b"\n")
                request.finish()

        reactor.callLater(self.delay, answer)
        return NOT_DONE_YET


class CountingSite(Site):
    """
    A site that counts the connections it accepts.
    """

    accepted = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.accepted += 1
        return super().buildProtocol(addr)


async def startSlowBackend(
    testCase: TestCase, name: str, delay: float = 0.0
) -> tuple[int, CountingSite]:
    """
    Serve a L{SlowPage} on a free loopback port.
    """
    site = CountingSite(SlowPage(name, delay))
    site.noisy = False
    port = reactor.listenTCP(0, site, interface=LOOPBACK)
    testCase.addCleanup(port.stopListening)
    return port.getHost().port, site


def tlbalancectl(control: str, *words: str) -> Deferred[Any]:
    """
    Run C{tlbalancectl --control CONTROL WORDS} to completion.
    """
    return runProgram(
        [sys.executable, "-m", "tlbalance.ctl", "--control", control, *words],
        cwd=CHECKOUT,
    )


class ControlSocketTests(TestCase):
    """
    C{--control PATH}: the socket, and every command through C{tlbalancectl}.
    """

    async def startBalancer(self) -> tuple[BalancerService, str]:
        directory = temporaryDirectory(self)
        control = os.path.join(directory, "control.sock")
        portA, _ = await startSlowBackend(self, "a")
        portB, _ = await startSlowBackend(self, "b")
        service, _ = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"{LOOPBACK}:{portA}",
            "--backend",
            f"{LOOPBACK}:{portB}",
            "--control",
            control,
        )
        self.portA, self.portB = portA, portB
        return service, control

    async def test_socketMode(self) -> None:
        """
        The socket is created mode 0600 and removed when the balancer stops.
        """
        service, control = await self.startBalancer()
        self.assertTrue(stat.S_ISSOCK(os.lstat(control).st_mode))
        self.assertEqual(stat.S_IMODE(os.lstat(control).st_mode), 0o600)
        await service.stopService()
        self.assertFalse(os.path.lexists(control))

    async def test_commands(self) -> None:
        """
        Every command works through C{tlbalancectl}, in tables and in JSON;
        a failing one exits 1 with one line.
        """
        service, control = await self.startBalancer()
        a = f"{LOOPBACK}:{self.portA}"
        b = f"{LOOPBACK}:{self.portB}"

        async def run(*words: str, status: int = 0) -> Any:
            result = await tlbalancectl(control, *words)
            self.assertEqual(result.returncode, status, describeRun(result))
            return result

        shown = (await run("show", "servers")).stdout.splitlines()
        self.assertEqual(shown[0].split()[:4], ["NAME", "ENDPOINT", "STATE", "WEIGHT"])
        self.assertEqual([line.split()[0] for line in shown[1:]], [a, b])
        listeners = json.loads((await run("--json", "show", "listeners")).stdout)
        port = service.listeners[0].port
        assert port is not None
        self.assertEqual(
            listeners["listeners"][0]["address"], f"{LOOPBACK}:{port.getHost().port}"
        )
        self.assertIn("accepted", (await run("show", "stat")).stdout)
        self.assertRegex((await run("show", "version")).stdout, r"^tlbalance \S+\n$")
        self.assertEqual(
            (await run("set", "server", a, "weight", "0")).stdout,
            f"server {a}: weight 1 -> 0\n",
        )
        await run("set", "server", b, "state", "drain")
        await run("add", "server", "c", b, "weight=2", "check=tcp")
        servers = json.loads((await run("--json", "show", "servers")).stdout)
        runtime = {s["name"]: s["runtime"] for s in servers["servers"]}
        self.assertEqual(runtime, {a: ["weight"], b: ["state"], "c": ["added"]})
        refused = await run("del", "server", a, status=1)
        self.assertEqual(
            refused.stderr,
            f"tlbalancectl: server {a} is ready: set its state to drain or maint "
            "first\n",
        )
        await run("set", "server", "c", "state", "maint")
        await run("del", "server", "c")
        bad = await run("add", "server", "d", b, "colour=red", status=1)
        self.assertEqual(len(bad.stderr.splitlines()), 1, bad.stderr)
        self.assertIn("colour", bad.stderr)
        unknown = await run("launch", "rockets", status=1)
        self.assertEqual(
            unknown.stderr, "tlbalancectl: unknown command 'launch rockets'; try help\n"
        )

    async def test_rawSocket(self) -> None:
        """
        A person on the raw socket (as with C{socat}) gets text, a
        malformed line gets a one-line error, and the connection stays
        usable.
        """
        _, control = await self.startBalancer()

        def talk() -> List[bytes]:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(10)
            client.connect(control)
            answers = []
            with client, client.makefile("rb") as f:
                for line in [b"show servers\n", b"\x00\xff what\n", b"show version\n"]:
                    client.sendall(line)
                    answer = b""
                    while not answer.endswith(b"\n\n"):
                        answer += f.readline()
                    answers.append(answer)
            return answers

        servers, error, version = await deferToThread(talk)
        self.assertTrue(servers.startswith(b"NAME "), servers)
        self.assertEqual(error.count(b"\n"), 2)
        self.assertTrue(error.startswith(b"error: unknown command"), error)
        self.assertTrue(version.startswith(b"tlbalance "), version)

    async def test_pathTaken(self) -> None:
        """
        A path that is not a socket stops start-up with one line; a stale
        socket is replaced.
        """
        directory = temporaryDirectory(self)
        path = os.path.join(directory, "control.sock")
        with open(path, "w"):
            pass
        arguments = [
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            "127.0.0.1:9",
        ]
        service = makeBalancerService(
            balancerConfig(*arguments, "--control", path), reactor
        )
        # Nothing started, so there is nothing to stop (twistd exits).
        error = self.assertRaises(StartupError, service.startService)
        self.assertEqual(str(error), f"--control: {path} exists and is not a socket")
        self.assertTrue(os.path.isfile(path))
        self.assertIsNone(service.listeners[0].port, "listened before the check")
        os.remove(path)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        startBalancerFromArguments(self, *arguments, "--control", path)
        self.assertEqual(stat.S_IMODE(os.lstat(path).st_mode), 0o600)


class DrainUnderLoadTests(TestCase):
    """
    Draining a backend under C{ab} load: it gets no new connection after
    the command, its requests in flight complete, and no request fails.
    """

    async def test_drain(self) -> None:
        ab = requirePeer("ab")
        directory = temporaryDirectory(self)
        control = os.path.join(directory, "control.sock")
        portA, siteA = await startSlowBackend(self, "a", delay=0.05)
        portB, siteB = await startSlowBackend(self, "b", delay=0.05)
        service, addresses = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"{LOOPBACK}:{portA}",
            "--backend",
            f"{LOOPBACK}:{portB}",
            "--control",
            control,
        )
        b = service.balancer.pool.byName(f"{LOOPBACK}:{portB}")
        atDrain: dict[str, int] = {}

        def drained(change: StateChange) -> None:
            # The connections the balancer had started to B when the
            # command took effect: B must accept exactly these.
            if change.new == "DRAIN":
                atDrain.update(total=b.total, active=b.active)

        b.addStateObserver(drained)
        url = f"http://{LOOPBACK}:{addresses[0].port}/"
        load = runProgram([ab, "-q", "-n", "600", "-c", "8", url], timeout=60)
        await sleep(1.0)
        result = await tlbalancectl(
            control, "set", "server", f"{LOOPBACK}:{portB}", "state", "drain"
        )
        self.assertEqual(result.returncode, 0, describeRun(result))
        report = await load
        self.assertEqual(report.returncode, 0, describeRun(report))
        self.assertRegex(report.stdout, r"Complete requests:\s+600\b")
        self.assertRegex(report.stdout, r"Failed requests:\s+0\b")
        self.assertNotIn("Non-2xx", report.stdout)
        self.assertGreater(atDrain["active"], 0, "nothing was in flight")
        self.assertEqual(siteB.accepted, atDrain["total"])
        self.assertGreater(siteA.accepted, siteB.accepted)
        self.assertEqual(b.active, 0)
