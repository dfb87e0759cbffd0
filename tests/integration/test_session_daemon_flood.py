# -*- test-case-name: tests.integration.test_session_daemon_flood -*-
"""
The session daemon under a flood of connections that never log in, on a
real TCP listener with its production limits: an app still logs in within
a second, whether the flood connects once and idles or keeps reconnecting
every connection the daemon closes. The flood runs as a process of its own
(L{tests.integration._flood}), as an attacker would.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, List, Optional

import pytest
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration._support import (
    CHECKOUT,
    LOOPBACK,
    PYTHON,
    PeerProcess,
    sleep,
    startPeer,
    temporaryDirectory,
    waitUntil,
)
from tests.integration.test_session_daemon import startStore, writeSecret
from tlsession.daemon import LOGIN_GRACE, SessionDaemonService
from tlsession.daemonconfig import DaemonConfig, makeDaemonService

pytestmark = pytest.mark.integration

#: Connections in the flood.
FLOOD = 1000

#: Where the reconnecting flood comes from: another loopback address than
#: the app's.
OTHER_LOOPBACK = "127.0.0.2"


class FloodTests(TestCase):
    """
    A thousand connections that never log in do not keep an app out.
    """

    timeout = 90

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.directory = temporaryDirectory(self)

    async def startDaemon(self) -> SessionDaemonService:
        """
        The daemon with its production limits on a TCP port of the loopback
        interface, counting the connections it accepts. The listen backlog
        is raised so that the flood reaches the daemon at once instead of
        queueing in the kernel.
        """
        config = DaemonConfig.build(
            [f"tcp:0:interface={LOOPBACK}:backlog=1024"],
            writeSecret(self.directory),
            insecure=True,
        )
        daemon = makeDaemonService(config, self.reactor)
        factory = daemon.factory
        self.accepted = 0
        buildProtocol = factory.buildProtocol

        def counting(address: Any) -> Any:
            self.accepted += 1
            return buildProtocol(address)

        factory.buildProtocol = counting  # type: ignore[method-assign]
        daemon.startService()
        self.addCleanup(daemon.stopService)
        port = daemon.listeners[0].port
        assert port is not None
        self.port: int = port.getHost().port  # type: ignore[attr-defined]
        return daemon

    async def flood(self, reconnect: bool, source: Optional[str] = None) -> PeerProcess:
        """
        Start L{FLOOD} idle connections to the daemon from another process,
        killed after the test, and wait until the daemon has accepted them.
        """
        argv = [PYTHON, "-m", "tests.integration._flood", LOOPBACK, str(self.port)]
        argv.append(str(FLOOD))
        if source is not None:
            argv += ["--source", source]
        if reconnect:
            argv.append("--reconnect")
        process = startPeer(
            self,
            "flood",
            argv,
            os.path.join(self.directory, "flood.log"),
            cwd=CHECKOUT,
        )
        await waitUntil(
            lambda: self.accepted >= FLOOD or not process.running(),
            30,
            "the daemon accepting the flood",
        )
        self.assertTrue(process.running(), process.output())
        return process

    async def timeToLogIn(self) -> float:
        """
        Start an app's client store (with its default reconnection policy),
        return how long it took to log in, and check it can use sessions.
        """
        started = time.monotonic()
        store = startStore(
            self,
            f"tcp:host={LOOPBACK}:port={self.port}",
            self.reactor,
            insecure=True,
            retryPolicy=None,
        )
        loggedIn: List[float] = []
        store.whenConnected().addCallbacks(
            lambda _: loggedIn.append(time.monotonic() - started),
            # Cancelled when the store stops, had it not logged in.
            lambda failure: failure.trap(CancelledError),
        )
        await waitUntil(lambda: bool(loggedIn), 5, "the app logging in")
        record = await store.create(b"during the flood")
        self.assertEqual((await store.load(record.sessionID)).data, b"during the flood")
        return loggedIn[0]

    async def test_idleFlood(self) -> None:
        """
        A thousand connections opened at once from the app's own address
        and left idle: an app logs in within a second. The daemon keeps only
        a few of them waiting to log in, and closed the others.
        """
        daemon = await self.startDaemon()
        await self.flood(reconnect=False)
        # Idle, as in the report; fresher ones from the app's own address
        # would have the app's first attempt refused (LOGIN_GRACE).
        await sleep(LOGIN_GRACE)
        elapsed = await self.timeToLogIn()
        self.assertLess(elapsed, 1.0)
        stats = daemon.stats()
        self.assertEqual(stats["clients"], 1)
        self.assertLessEqual(stats["loggingIn"], 16)
        self.assertGreaterEqual(
            stats["connectionsRefused"] + stats["connectionsDropped"], FLOOD - 16
        )

    async def test_reconnectingFlood(self) -> None:
        """
        A thousand connections from another address, each opened again as
        soon as the daemon closes it: an app logs in within a second, since
        one address may have only a few connections waiting to log in.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("127.0.0.2 is a loopback address on Linux only")
        daemon = await self.startDaemon()
        await self.flood(reconnect=True, source=OTHER_LOOPBACK)
        elapsed = await self.timeToLogIn()
        self.assertLess(elapsed, 1.0)
        stats = daemon.stats()
        self.assertEqual(stats["clients"], 1)
        self.assertLessEqual(stats["loggingIn"], 16)
        self.assertGreater(stats["connectionsRefused"], FLOOD)
