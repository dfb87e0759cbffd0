"""
Tests for L{tlbalance.runtime}: runtime changes to a balancer's backends.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tlbalance.config import buildConfig
from tlbalance.runtime import RuntimeChangeError, RuntimeState
from tlbalance.service import BalancerService, makeBalancerService

WHO = "uid 1000"


def startBalancer(testCase: SynchronousTestCase, **settings: Any) -> BalancerService:
    """
    A started balancer on a memory reactor, over backend C{a} (with a TCP
    check) and C{b} (without), stopped at the end of the test.
    """
    values: dict[str, Any] = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "backend": [
            {"endpoint": "127.0.0.1:8081", "name": "a", "check": "tcp"},
            {"endpoint": "127.0.0.1:8082", "name": "b"},
        ],
        "drain-timeout": 0,
    }
    values.update(settings)
    service = makeBalancerService(buildConfig(values), MemoryReactorClock())
    service.startService()
    testCase.addCleanup(service.stopService)
    return service


def picks(service: BalancerService, count: int = 20) -> set[str]:
    """
    The names of the backends chosen for C{count} new connections from
    different clients.
    """
    pool = service.balancer.pool
    chosen = set()
    for i in range(count):
        backend = pool.pick(bytes([10, 0, 0, i]))
        if backend is not None:
            chosen.add(backend.name)
    return chosen


class StateTests(SynchronousTestCase):
    """
    C{set server NAME state}: drain, maint and ready.
    """

    def setUp(self) -> None:
        self.service = startBalancer(self)
        self.runtime = RuntimeState(self.service)
        self.a = self.service.balancer.pool.byName("a")
        self.checker = self.service.checkers[0]

    def test_drain(self) -> None:
        """
        A draining backend gets no new connection and keeps its open ones;
        C{show servers} says the state came from the runtime API.
        """
        self.a.connectionStarted()
        message = self.runtime.setServerState("a", "drain", WHO)
        self.assertEqual(message, "server a: ready -> drain")
        self.assertEqual(picks(self.service), {"b"})
        self.assertEqual(self.a.active, 1)
        self.assertTrue(self.checker.running)
        rows = {row["name"]: row for row in self.runtime.servers()}
        self.assertEqual(rows["a"]["state"], "DRAIN")
        self.assertEqual(rows["a"]["runtime"], ["state"])
        self.assertEqual(rows["b"]["runtime"], [])
        self.a.connectionEnded()

    def test_maintStopsChecks(self) -> None:
        """
        Maintenance stops the backend's health checks; ready starts them
        again and the backend takes connections.
        """
        self.runtime.setServerState("a", "maint", WHO)
        self.assertFalse(self.checker.running)
        self.assertEqual(picks(self.service), {"b"})
        self.runtime.setServerState("a", "ready", WHO)
        self.assertTrue(self.checker.running)
        self.assertEqual(picks(self.service), {"a", "b"})

    def test_sameState(self) -> None:
        """
        Setting the state a backend has already says so.
        """
        self.assertEqual(
            self.runtime.setServerState("a", "ready", WHO),
            "server a was already ready",
        )

    def test_unknownServer(self) -> None:
        """
        A name that is no backend is refused in one line.
        """
        error = self.assertRaises(
            RuntimeChangeError, self.runtime.setServerState, "zz", "drain", WHO
        )
        self.assertEqual(str(error), "no server called 'zz'")


class WeightTests(SynchronousTestCase):
    """
    C{set server NAME weight N}.
    """

    def setUp(self) -> None:
        self.service = startBalancer(self)
        self.runtime = RuntimeState(self.service)

    def test_weightZero(self) -> None:
        """
        Weight 0 takes a backend out of the choice while it stays up and
        checked, as in HAProxy.
        """
        self.runtime.setServerWeight("a", 0, WHO)
        self.assertEqual(picks(self.service), {"b"})
        row = self.runtime.servers()[0]
        self.assertEqual((row["state"], row["weight"]), ("UP", 0))
        self.assertEqual(row["runtime"], ["weight"])
        self.assertTrue(self.service.checkers[0].running)

    def test_weightZeroSourceHash(self) -> None:
        """
        The consistent-hash ring follows a weight set at run time.
        """
        service = startBalancer(self, algorithm="source")
        runtime = RuntimeState(service)
        runtime.setServerWeight("b", 0, WHO)
        self.assertEqual(picks(service), {"a"})
        runtime.setServerWeight("b", 1, WHO)
        self.assertEqual(picks(service, 64), {"a", "b"})

    def test_outOfRange(self) -> None:
        """
        A weight above 256 is refused and changes nothing.
        """
        error = self.assertRaises(
            RuntimeChangeError, self.runtime.setServerWeight, "a", 257, WHO
        )
        self.assertEqual(str(error), "weight must be within 0..256, not 257")
        self.assertEqual(self.runtime.servers()[0]["weight"], 1)


class AddDeleteTests(SynchronousTestCase):
    """
    C{add server} and C{del server}.
    """

    def setUp(self) -> None:
        self.service = startBalancer(self, algorithm="source")
        self.runtime = RuntimeState(self.service)

    def test_add(self) -> None:
        """
        A server added with C{[[backend]]} keys takes connections, is
        checked, and shows as added by the runtime API.
        """
        message = self.runtime.addServer(
            "c", "127.0.0.1:8083", {"weight": "3", "check": "tcp"}, WHO
        )
        self.assertEqual(message, "server c added")
        self.assertIn("c", picks(self.service, 64))
        row = self.runtime.servers()[-1]
        self.assertEqual(
            (row["name"], row["endpoint"], row["weight"], row["checked"]),
            ("c", "tcp:host=127.0.0.1:port=8083", 3, True),
        )
        self.assertEqual(row["runtime"], ["added"])
        self.assertTrue(self.service.checkers[-1].running)
        self.assertEqual(self.service.checkers[-1].backend.name, "c")

    def test_addBadKeys(self) -> None:
        """
        Wrong keys are refused in one line naming each, and nothing is
        added.
        """
        error = self.assertRaises(
            RuntimeChangeError,
            self.runtime.addServer,
            "c",
            "127.0.0.1:8083",
            {"weight": "900", "colour": "red"},
            WHO,
        )
        self.assertNotIn("\n", str(error))
        self.assertIn("weight", str(error))
        self.assertIn("colour", str(error))
        self.assertEqual([r["name"] for r in self.runtime.servers()], ["a", "b"])

    def test_addTaken(self) -> None:
        """
        A name already used is refused.
        """
        error = self.assertRaises(
            RuntimeChangeError, self.runtime.addServer, "a", "127.0.0.1:1", {}, WHO
        )
        self.assertEqual(str(error), "there is already a server called 'a'")

    def test_delRefusedWhileReady(self) -> None:
        """
        A ready server cannot be deleted.
        """
        error = self.assertRaises(RuntimeChangeError, self.runtime.delServer, "a", WHO)
        self.assertEqual(
            str(error), "server a is ready: set its state to drain or maint first"
        )

    def test_delRefusedWhileBusy(self) -> None:
        """
        A drained server with connections left cannot be deleted yet.
        """
        a = self.service.balancer.pool.byName("a")
        a.connectionStarted()
        self.runtime.setServerState("a", "drain", WHO)
        error = self.assertRaises(RuntimeChangeError, self.runtime.delServer, "a", WHO)
        self.assertEqual(
            str(error), "server a still has 1 connection(s); wait for them to finish"
        )
        a.connectionEnded()

    def test_delDrained(self) -> None:
        """
        A drained, idle server is removed with its check; the others take
        every connection, and the runtime API remembers the deletion.
        """
        self.runtime.setServerState("a", "maint", WHO)
        self.assertEqual(self.runtime.delServer("a", WHO), "server a removed")
        self.assertEqual([r["name"] for r in self.runtime.servers()], ["b"])
        self.assertEqual(self.service.checkers, [])
        self.assertNotIn("a", self.service.balancer.connectors)
        self.assertEqual(picks(self.service), {"b"})
        self.assertEqual(self.runtime.deleted, {"a"})
