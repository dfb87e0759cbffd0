"""
L{tlbalance.stats}: the typed snapshot of a running balancer, and the
connection rates sampled beside it.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from twisted.trial.unittest import SynchronousTestCase

import tlsuite
from tests.unit._statsfixture import START, failCheck, names, startedBalancer
from tlbalance.stats import SCHEMA_VERSION, ConnectionRates, balancerStats

#: The documented fields of each part of the snapshot and their types.
SCHEMA: Dict[str, Dict[str, Any]] = {
    "top": {"schema": int, "time": float},
    "process": {
        "pid": int,
        "version": str,
        "startTime": float,
        "uptime": float,
        "cpuSeconds": float,
        "rssBytes": int,
    },
    "balancer": {
        "algorithm": str,
        "current": int,
        "total": int,
        "refused": int,
        "rate": float,
        "activeServers": int,
        "backupServers": int,
    },
    "listener": {
        "name": str,
        "listening": bool,
        "current": int,
        "total": int,
        "rate": float,
    },
    "backend": {
        "name": str,
        "endpoint": str,
        "state": str,
        "healthy": bool,
        "admin": str,
        "weight": int,
        "backup": bool,
        "maxconn": int,
        "active": int,
        "peak": int,
        "total": int,
        "connectFailures": int,
        "retries": int,
        "redispatches": int,
        "firstByteTimeouts": int,
        "bytesIn": int,
        "bytesOut": int,
        "lastStateChange": float,
        "sinceStateChange": float,
        "rate": float,
    },
    "check": {
        "status": str,
        "kind": str,
        "reason": str,
        "time": float,
        "duration": float,
        "failedInARow": int,
        "inter": float,
        "rise": int,
        "fall": int,
    },
}


#: Fields that are C{null} when there is nothing to say (no check, no
#: check finished yet, a platform without the number).
NULLABLE = {
    "process.startTime",
    "process.uptime",
    "process.rssBytes",
    *(
        f"check.{key}"
        for key in SCHEMA["check"]
        if key not in ("status", "failedInARow")
    ),
}


class BalancerStatsTests(SynchronousTestCase):
    """
    L{balancerStats} gives the documented fields with fixed types.
    """

    def assertTyped(self, part: str, values: Dict[str, Any]) -> None:
        for key, kind in SCHEMA[part].items():
            self.assertIn(key, values, f"{part}.{key}")
            value = values[key]
            if value is None and f"{part}.{key}" in NULLABLE:
                continue
            if kind is float:
                # JSON numbers: an integral float may come as an int.
                self.assertIsInstance(value, (int, float), f"{part}.{key}")
                self.assertFalse(isinstance(value, bool), f"{part}.{key}")
            else:
                self.assertIsInstance(value, kind, f"{part}.{key}")

    def test_schema(self) -> None:
        """
        Every documented field is there with its type, and the snapshot
        survives a JSON round trip unchanged.
        """
        service, reactor = startedBalancer(self)
        reactor.advance(3)
        failCheck(service, 0, reactor.seconds())
        stats = balancerStats(service, reactor.seconds())
        self.assertEqual(json.loads(json.dumps(stats)), stats)
        self.assertEqual(stats["schema"], SCHEMA_VERSION)
        self.assertTyped("top", stats)
        self.assertTyped("process", stats["process"])
        self.assertTyped("balancer", stats["balancer"])
        for listener in stats["listeners"]:
            self.assertTyped("listener", listener)
        for backend in stats["backends"]:
            self.assertTyped("backend", backend)
            self.assertTyped("check", backend["check"])
        self.assertEqual(stats["process"]["version"], tlsuite.__version__)
        self.assertEqual(stats["process"]["uptime"], 3.0)
        self.assertEqual(names(stats["backends"]), ["127.0.0.1:1", "127.0.0.1:2"])

    def test_downBackend(self) -> None:
        """
        A backend its checks took down shows as DOWN, with the failed
        check's reason, time and duration and the time since it changed.
        """
        service, reactor = startedBalancer(self)
        reactor.advance(1)
        failCheck(service, 0, reactor.seconds())
        reactor.advance(5)
        down, up = balancerStats(service, reactor.seconds())["backends"]
        self.assertEqual((down["state"], down["healthy"]), ("DOWN", False))
        self.assertEqual(down["sinceStateChange"], 5.0)
        self.assertEqual(
            down["check"],
            {
                "status": "failed",
                "kind": "tcp",
                "reason": "connection refused",
                "time": START + 1,
                "duration": 0.002,
                "failedInARow": 2,
                "inter": 0.2,
                "rise": 2,
                "fall": 2,
            },
        )
        self.assertEqual((up["state"], up["check"]["status"]), ("UP", "pending"))
        self.assertEqual(up["sinceStateChange"], 6.0)
        stats = balancerStats(service, reactor.seconds())
        self.assertEqual(stats["balancer"]["activeServers"], 1)

    def test_adminState(self) -> None:
        """
        A drained backend says so in C{state} and C{admin}.
        """
        service, reactor = startedBalancer(self)
        service.balancer.pool.setAdminState("127.0.0.1:2", "drain")
        backend = balancerStats(service, reactor.seconds())["backends"][1]
        self.assertEqual((backend["state"], backend["admin"]), ("DRAIN", "drain"))

    def test_counters(self) -> None:
        """
        The backends' and listeners' counters are the ones the relay keeps.
        """
        service, reactor = startedBalancer(self)
        backend = service.balancer.pool.backends[1]
        backend.connectionStarted()
        backend.connectionStarted()
        backend.connectionEnded()
        backend.bytesIn, backend.bytesOut = 10, 2000
        backend.retries, backend.redispatches = 3, 1
        frontend = service.listeners[0].frontend
        assert frontend is not None
        frontend.current, frontend.total = 1, 7
        stats = balancerStats(service, reactor.seconds())
        entry = stats["backends"][1]
        self.assertEqual(
            [entry[k] for k in ("active", "peak", "total", "bytesIn", "bytesOut")],
            [1, 2, 2, 10, 2000],
        )
        self.assertEqual((entry["retries"], entry["redispatches"]), (3, 1))
        listener = stats["listeners"][0]
        self.assertEqual(
            (listener["name"], listener["current"], listener["total"]),
            ("tcp:0:interface=127.0.0.1", 1, 7),
        )


class ConnectionRatesTests(SynchronousTestCase):
    """
    L{ConnectionRates} samples the totals once a second and gives rates
    over the last ten seconds.
    """

    def test_rate(self) -> None:
        """
        Twenty connections over ten seconds are two per second; after ten
        quiet seconds the rate is back to zero.
        """
        service, reactor = startedBalancer(self)
        rates = service.rates
        assert isinstance(rates, ConnectionRates)
        self.assertEqual(rates.rate("balancer"), 0.0)
        backend = service.balancer.pool.backends[0]
        for _ in range(10):
            service.balancer.accepted += 2
            backend.total += 2
            reactor.advance(1)
        self.assertEqual(rates.rate("balancer"), 2.0)
        self.assertEqual(rates.rate("backend:127.0.0.1:1"), 2.0)
        self.assertEqual(rates.rate("backend:127.0.0.1:2"), 0.0)
        stats = balancerStats(service, reactor.seconds())
        self.assertEqual(stats["balancer"]["rate"], 2.0)
        self.assertEqual(stats["backends"][0]["rate"], 2.0)
        for _ in range(10):
            reactor.advance(1)
        self.assertEqual(rates.rate("balancer"), 0.0)

    def test_ringBounded(self) -> None:
        """
        The ring keeps eleven samples (ten seconds), however long it runs.
        """
        service, reactor = startedBalancer(self)
        rates = service.rates
        assert rates is not None
        for _ in range(100):
            reactor.advance(1)
        self.assertEqual(len(rates._ring), 11)

    def test_stops(self) -> None:
        """
        Stopping the balancer stops the sampling: no timer is left.
        """
        service, reactor = startedBalancer(self)
        self.successResultOf(service.stopService())
        self.assertEqual(reactor.getDelayedCalls(), [])
