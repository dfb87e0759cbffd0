# -*- test-case-name: tests.integration.test_faults -*-
"""
Backends that die and come back, with real nginx processes killed with
SIGKILL: clients must not notice, and active checks must take the backend
out of rotation and bring it back within the configured intervals.
"""

from __future__ import annotations

import time
from typing import Any, List, Optional, Tuple

import pytest
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase

from tests.integration._support import (
    LOOPBACK,
    EmptyResponseError,
    Nginx,
    clientEndpoint,
    httpGet,
    startBalancerFromArguments,
    startNginx,
    waitUntil,
)
from tlbalance.backends import Backend, StateChange
from tlbalance.service import BalancerService

pytestmark = pytest.mark.integration

INTER = 0.2
FALL = 2
RISE = 2
# Check intervals are drawn within +/-10%, a check may take up to INTER, and
# a loaded two-core machine adds scheduling delay.
MARGIN = 2 * INTER + 0.5


class _Outcome:
    """
    One request of the load: when it started and how it ended.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self.status: Optional[int] = None
        self.body = ""
        self.error: Optional[str] = None


class KilledBackendTests(TestCase):
    """
    Two nginx backends, one killed while the balancer is busy or idle.
    """

    timeout = 60

    async def startPair(self) -> Tuple[Nginx, Nginx, BalancerService, Any]:
        """
        Start nginx C{a} and C{b} on unix sockets and a round-robin balancer
        over them with HTTP checks every L{INTER} seconds.

        @return: both nginx, the balancer service and its address.
        """
        first = await startNginx(self, tcp=False, proxyProtocol=False, body="a")
        second = await startNginx(self, tcp=False, proxyProtocol=False, body="b")
        service, [address] = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--backend",
            f"unix:path={first.socketPath}",
            "--backend",
            f"unix:path={second.socketPath}",
            "--check",
            "http GET / 200",
            "--check-inter",
            str(INTER),
            "--check-fall",
            str(FALL),
            "--check-rise",
            str(RISE),
        )
        return first, second, service, address

    def transitions(self, backend: Backend) -> List[Tuple[float, str]]:
        """
        Record C{backend}'s health transitions as C{(monotonic time, new
        state)}, from now on.
        """
        seen: List[Tuple[float, str]] = []

        def observe(change: StateChange) -> None:
            seen.append((time.monotonic(), change.new))

        backend.addStateObserver(observe)
        self.addCleanup(backend.removeStateObserver, observe)
        return seen

    async def test_noFailureAfterKill(self) -> None:
        """
        300 short requests, 10 at a time; nginx C{b} is killed after the
        first 100 finish. Every request started after the kill is answered
        200 (connect failures are retried elsewhere, unseen), and once C{b}
        is down within C{inter * fall} every answer comes from C{a}.
        """
        first, second, service, address = await self.startPair()
        backendB = service.balancer.pool.backends[1]
        seen = self.transitions(backendB)
        outcomes: List[_Outcome] = []
        killedAt: List[float] = []
        total, concurrency, killAfter = 300, 10, 100

        async def worker() -> None:
            while len(outcomes) < total:
                outcome = _Outcome(time.monotonic())
                outcomes.append(outcome)
                try:
                    response = await httpGet(clientEndpoint(address))
                except EmptyResponseError as e:
                    outcome.error = str(e)
                else:
                    outcome.status = response.status
                    outcome.body = response.text
                finished = sum(1 for o in outcomes if o.status or o.error)
                if not killedAt and finished >= killAfter:
                    second.kill()
                    killedAt.append(time.monotonic())

        await gatherResults(
            [Deferred.fromCoroutine(worker()) for _ in range(concurrency)]
        )
        self.assertEqual(len(killedAt), 1)
        killed = killedAt[0]
        before = [o for o in outcomes if o.started < killed]
        after = [o for o in outcomes if o.started >= killed]
        self.assertGreater(len(after), 150)
        failed = [(o.status, o.error) for o in after if o.status != 200]
        self.assertEqual(failed, [], f"{len(failed)} of {len(after)} failed")
        self.assertIn("b", {o.body for o in before})
        # b leaves rotation in time, and stays out.
        self.assertEqual([state for _, state in seen], ["DOWN"])
        downAt = seen[0][0]
        self.assertLessEqual(downAt - killed, INTER * FALL + MARGIN)
        self.assertEqual({o.body for o in after if o.started > downAt}, {"a"})

    async def test_leavesAndRejoinsRotation(self) -> None:
        """
        With no traffic at all, only the active checks notice: a killed
        backend is down within C{inter * fall}, back up within C{inter *
        rise} of restarting, and then takes its share of requests again.
        """
        first, second, service, address = await self.startPair()
        backendB = service.balancer.pool.backends[1]
        seen = self.transitions(backendB)
        second.kill()
        killed = time.monotonic()
        await waitUntil(
            lambda: not backendB.healthy, INTER * FALL + MARGIN, "b marked down"
        )
        self.assertLessEqual(seen[0][0] - killed, INTER * FALL + MARGIN)
        self.assertEqual(backendB.connectFailures, 0)
        bodies = [(await httpGet(clientEndpoint(address))).text for _ in range(4)]
        self.assertEqual(bodies, ["a"] * 4)

        await second.start()
        restarted = time.monotonic()
        await waitUntil(
            lambda: backendB.healthy, INTER * RISE + MARGIN, "b marked up again"
        )
        self.assertLessEqual(seen[-1][0] - restarted, INTER * RISE + MARGIN)
        self.assertEqual([state for _, state in seen], ["DOWN", "UP"])
        bodies = [(await httpGet(clientEndpoint(address))).text for _ in range(4)]
        self.assertEqual(sorted(bodies), ["a", "a", "b", "b"])
