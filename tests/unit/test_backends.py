"""
Tests for L{tlbalance.backends}.
"""

from __future__ import annotations

import json
from typing import Any, Container, List, Optional, Sequence

from attrs import frozen
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tlbalance import backends
from tlbalance.backends import AdminState, Backend, BackendPool, StateChange
from tlbalance.config import BackendConfig, HealthCheckConfig
from tlbalance.schedulers import RoundRobinScheduler, schedulerFor


@frozen
class FakeCheck:
    """
    Stands in for C{HealthCheckConfig}: only its presence matters here.
    """

    kind: str = "tcp"


@frozen
class FakeBackendConfig:
    """
    Stands in for C{tlbalance.config.BackendConfig}, with its attribute names.
    """

    endpoint: str
    name: str
    weight: int = 1
    backup: bool = False
    maxconn: int = 0
    sendProxy: Optional[str] = None
    check: Optional[FakeCheck] = None


def makeBackend(clock: Clock, name: str = "app1", **kwargs: Any) -> Backend:
    """
    A backend called C{name} on a made-up TCP endpoint.
    """
    return Backend(
        name=name, endpoint=f"tcp:host={name}:port=8080", clock=clock, **kwargs
    )


def captureLogs(case: SynchronousTestCase) -> List[dict]:
    """
    Send the events of L{tlbalance.backends}' logger to a list, for the
    duration of C{case}.
    """
    events: List[dict] = []
    case.patch(backends, "log", Logger(observer=events.append))
    return events


class AdminStateTests(SynchronousTestCase):
    """
    L{AdminState.fromName} reads what an operator types.
    """

    def test_names(self) -> None:
        """
        Admin states are read from their names in any case.
        """
        self.assertIs(AdminState.fromName("drain"), AdminState.DRAIN)
        self.assertIs(AdminState.fromName("MAINT"), AdminState.MAINT)
        self.assertIs(AdminState.fromName(AdminState.READY), AdminState.READY)

    def test_unknown(self) -> None:
        """
        An unknown name is refused with the valid choices in the message.
        """
        error = self.assertRaises(ValueError, AdminState.fromName, "down")
        self.assertIn("ready, drain, maint", str(error))


class BackendTests(SynchronousTestCase):
    """
    L{Backend} availability, counters and state transitions.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def test_available(self) -> None:
        """
        A new backend is healthy, READY and takes connections.
        """
        backend = makeBackend(self.clock)
        self.assertTrue(backend.healthy)
        self.assertIs(backend.admin, AdminState.READY)
        self.assertTrue(backend.available())
        self.assertEqual(backend.state, "UP")

    def test_unavailable(self) -> None:
        """
        Down, draining, in maintenance and weight-0 backends take no new
        connections.
        """
        down = makeBackend(self.clock, healthy=False)
        drain = makeBackend(self.clock, admin=AdminState.DRAIN)
        maint = makeBackend(self.clock, admin=AdminState.MAINT)
        zero = makeBackend(self.clock, weight=0)
        for backend in [down, drain, maint, zero]:
            self.assertFalse(backend.available(), backend)
        self.assertEqual(
            [down.state, drain.state, maint.state], ["DOWN", "DRAIN", "MAINT"]
        )

    def test_maxconn(self) -> None:
        """
        A backend at its C{maxconn} takes no new connection until one ends;
        C{maxconn} 0 means no limit.
        """
        backend = makeBackend(self.clock, maxconn=2)
        backend.connectionStarted()
        self.assertTrue(backend.available())
        backend.connectionStarted()
        self.assertFalse(backend.available())
        backend.connectionEnded()
        self.assertTrue(backend.available())

        unlimited = makeBackend(self.clock)
        for _ in range(1000):
            unlimited.connectionStarted()
        self.assertTrue(unlimited.available())

    def test_counters(self) -> None:
        """
        C{active} follows open connections and C{total} counts every one.
        """
        backend = makeBackend(self.clock)
        backend.connectionStarted()
        backend.connectionStarted()
        backend.connectionEnded()
        backend.connectionStarted()
        self.assertEqual((backend.active, backend.total), (2, 3))

    def test_activeNeverNegative(self) -> None:
        """
        Ending more connections than were started is a bug, caught at once.
        """
        backend = makeBackend(self.clock)
        self.assertRaises(AssertionError, backend.connectionEnded)
        self.assertEqual(backend.active, 0)

    def test_invalidSettings(self) -> None:
        """
        Weights outside 0..256, negative C{maxconn} and unknown PROXY versions
        are refused.
        """
        self.assertRaises(ValueError, makeBackend, self.clock, weight=257)
        self.assertRaises(ValueError, makeBackend, self.clock, weight=-1)
        self.assertRaises(ValueError, makeBackend, self.clock, maxconn=-1)
        self.assertRaises(ValueError, makeBackend, self.clock, sendProxy="v3")
        self.assertEqual(makeBackend(self.clock, weight=256).weight, 256)

    def test_markDownLogsOnce(self) -> None:
        """
        Marking a backend down logs one line with its name, the reason and the
        old and new states; marking it down again logs nothing.
        """
        events = captureLogs(self)
        backend = makeBackend(self.clock)
        backend.markDown("connection refused")
        backend.markDown("connection refused")
        self.assertFalse(backend.healthy)
        self.assertEqual(len(events), 1)
        event = events[0]
        self.assertEqual(
            (event["backend"], event["old"], event["new"], event["reason"]),
            ("app1", "UP", "DOWN", "connection refused"),
        )

    def test_markUpLogsOnce(self) -> None:
        """
        Marking a down backend up logs one line; marking an up backend up
        logs nothing.
        """
        events = captureLogs(self)
        backend = makeBackend(self.clock)
        backend.markUp("already up")
        self.assertEqual(events, [])
        backend.markDown("timeout")
        backend.markUp("check passed")
        backend.markUp("check passed")
        self.assertTrue(backend.healthy)
        self.assertEqual(
            [(e["old"], e["new"], e["reason"]) for e in events],
            [("UP", "DOWN", "timeout"), ("DOWN", "UP", "check passed")],
        )

    def test_observers(self) -> None:
        """
        State observers hear about every real transition, health and admin,
        once each.
        """
        backend = makeBackend(self.clock)
        changes: List[StateChange] = []
        backend.addStateObserver(changes.append)
        backend.markDown("refused")
        backend.markDown("refused")
        backend.markUp("ok")
        backend.setAdminState(AdminState.DRAIN)
        backend.setAdminState("drain")
        backend.setAdminState("maint", "upgrade")
        self.assertEqual(
            [(c.backend, c.old, c.new, c.reason) for c in changes],
            [
                (backend, "UP", "DOWN", "refused"),
                (backend, "DOWN", "UP", "ok"),
                (backend, "READY", "DRAIN", "set by an operator"),
                (backend, "DRAIN", "MAINT", "upgrade"),
            ],
        )
        backend.removeStateObserver(changes.append)
        backend.markDown("gone")
        self.assertEqual(len(changes), 4)

    def test_lastStateChange(self) -> None:
        """
        C{lastStateChange} is the creation time, then the time of the last
        transition.
        """
        backend = makeBackend(self.clock)
        self.assertEqual(backend.lastStateChange, 1000)
        self.clock.advance(5)
        backend.markDown("refused")
        self.assertEqual(backend.lastStateChange, 1005)
        self.clock.advance(5)
        backend.markDown("refused")
        self.assertEqual(backend.lastStateChange, 1005)

    def test_fromConfig(self) -> None:
        """
        L{Backend.fromConfig} copies the configured settings; a backend
        without its own PROXY setting inherits the balancer's.
        """
        config = FakeBackendConfig(
            endpoint="tcp:host=a:port=1",
            name="a",
            weight=3,
            backup=True,
            maxconn=7,
            check=FakeCheck(),
        )
        backend = Backend.fromConfig(
            config, self.clock, failTimeout=4.0, sendProxy="v2"
        )
        self.assertEqual(
            (
                backend.name,
                backend.endpoint,
                backend.weight,
                backend.backup,
                backend.maxconn,
                backend.sendProxy,
                backend.check,
                backend.failTimeout,
                backend.config,
            ),
            ("a", "tcp:host=a:port=1", 3, True, 7, "v2", FakeCheck(), 4.0, config),
        )
        own = FakeBackendConfig(endpoint="unix:path=/s", name="b", sendProxy="v1")
        self.assertEqual(
            Backend.fromConfig(own, self.clock, sendProxy="v2").sendProxy, "v1"
        )
        plain = FakeBackendConfig(endpoint="unix:path=/s", name="c")
        self.assertIsNone(Backend.fromConfig(plain, self.clock).sendProxy)
        # A backend that cannot read PROXY headers opts out of the global one.
        optOut = FakeBackendConfig(endpoint="unix:path=/s", name="d", sendProxy="none")
        self.assertIsNone(
            Backend.fromConfig(optOut, self.clock, sendProxy="v2").sendProxy
        )

    def test_fromRealConfig(self) -> None:
        """
        L{Backend.fromConfig} reads the real configuration objects; a backend
        named by default is named after its endpoint.
        """
        check = HealthCheckConfig.parse("http GET /health 200")
        config = BackendConfig(endpoint="tcp:host=a:port=1", weight=5, check=check)
        backend = Backend.fromConfig(config, self.clock)
        self.assertEqual(
            (backend.name, backend.weight, backend.check),
            ("tcp:host=a:port=1", 5, check),
        )

    def test_snapshot(self) -> None:
        """
        A snapshot is plain JSON-ready data with the state and counters.
        """
        backend = makeBackend(self.clock, weight=2, sendProxy="v1")
        backend.connectionStarted()
        backend.bytesIn += 10
        backend.bytesOut += 20
        backend.firstByteTimeouts += 1
        backend.setAdminState("drain")
        snapshot = backend.snapshot()
        self.assertEqual(json.loads(json.dumps(snapshot)), snapshot)
        self.assertEqual(
            {
                k: snapshot[k]
                for k in ["name", "state", "admin", "healthy", "available"]
            },
            {
                "name": "app1",
                "state": "DRAIN",
                "admin": "drain",
                "healthy": True,
                "available": False,
            },
        )
        self.assertEqual(
            [snapshot[k] for k in ["active", "total", "bytesIn", "bytesOut", "weight"]],
            [1, 1, 10, 20, 2],
        )
        self.assertEqual(
            [snapshot[k] for k in ["connectFailures", "firstByteTimeouts"]], [0, 1]
        )


class PassiveMarkingTests(SynchronousTestCase):
    """
    L{Backend.connectFailed}: a failed connect takes a backend out at once.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_downAtOnce(self) -> None:
        """
        One failed connect marks the backend down and is counted, with the
        failure in the reason.
        """
        events = captureLogs(self)
        backend = makeBackend(self.clock)
        backend.connectFailed("connection refused")
        self.assertFalse(backend.healthy)
        self.assertEqual(backend.connectFailures, 1)
        self.assertEqual(events[0]["reason"], "connect failed: connection refused")

    def test_returnsAfterFailTimeout(self) -> None:
        """
        Without an active check the backend comes back by itself after
        C{failTimeout} seconds.
        """
        backend = makeBackend(self.clock, failTimeout=10.0)
        backend.connectFailed("connection refused")
        self.clock.advance(9.9)
        self.assertFalse(backend.healthy)
        self.clock.advance(0.1)
        self.assertTrue(backend.healthy)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_laterFailureRestartsHold(self) -> None:
        """
        A failure during the hold (a connect already in flight) restarts it,
        and only one timer is kept.
        """
        backend = makeBackend(self.clock, failTimeout=10.0)
        backend.connectFailed("connection refused")
        self.clock.advance(6)
        backend.connectFailed("connection refused")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(6)
        self.assertFalse(backend.healthy)
        self.clock.advance(4)
        self.assertTrue(backend.healthy)
        self.assertEqual(backend.connectFailures, 2)

    def test_activeCheckBringsItBack(self) -> None:
        """
        With an active check, a failed connect marks the backend down and
        leaves the return to the checker: no timer.
        """
        backend = makeBackend(self.clock, check=FakeCheck(), failTimeout=10.0)
        backend.connectFailed("connection refused")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertFalse(backend.healthy)

    def test_markUpEndsHold(self) -> None:
        """
        A backend marked up before its hold ends keeps no timer.
        """
        backend = makeBackend(self.clock)
        backend.connectFailed("connection refused")
        backend.markUp("forced")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop(self) -> None:
        """
        L{Backend.stop} leaves no timer behind.
        """
        backend = makeBackend(self.clock)
        backend.connectFailed("connection refused")
        backend.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(backend.healthy)


class RecordingScheduler:
    """
    A scheduler that records its tier and what it was asked, and picks the
    first available, not excluded backend.
    """

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = list(backends)
        self.calls: List[tuple] = []

    def pick(
        self, clientKey: Optional[bytes], exclude: Container[Backend] = ()
    ) -> Optional[Backend]:
        """
        Record the call and pick the first available, not excluded backend.
        """
        self.calls.append((clientKey, exclude))
        for backend in self.backends:
            if backend.available() and backend not in exclude:
                return backend
        return None


class BackendPoolTests(SynchronousTestCase):
    """
    L{BackendPool}: tiers, lookup, admin states and snapshots.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.a = makeBackend(self.clock, "a")
        self.b = makeBackend(self.clock, "b")
        self.spare = makeBackend(self.clock, "spare", backup=True)
        self.schedulers: List[RecordingScheduler] = []
        self.pool = BackendPool([self.a, self.spare, self.b], self.recordingFactory)

    def recordingFactory(self, tier: Sequence[Backend]) -> RecordingScheduler:
        """
        Build and remember a L{RecordingScheduler}.
        """
        scheduler = RecordingScheduler(tier)
        self.schedulers.append(scheduler)
        return scheduler

    def test_tiers(self) -> None:
        """
        Each tier gets its own scheduler with its own backends.
        """
        self.assertEqual(
            [s.backends for s in self.schedulers], [[self.a, self.b], [self.spare]]
        )
        self.assertEqual(self.pool.backends, [self.a, self.spare, self.b])

    def test_normalFirst(self) -> None:
        """
        While a normal backend is available, the backup is not used, and the
        client key and exclusions reach the scheduler.
        """
        self.assertIs(self.pool.pick(b"\x01\x02\x03\x04", ()), self.a)
        self.a.markDown("refused")
        self.assertIs(self.pool.pick(None), self.b)
        self.assertEqual(self.schedulers[0].calls[0], (b"\x01\x02\x03\x04", ()))
        self.assertEqual(self.schedulers[1].calls, [])

    def test_backupWhenNoNormalAvailable(self) -> None:
        """
        The backup tier serves once every normal backend is unavailable,
        whatever the reason (down, maintenance, draining, full, weight 0).
        """
        self.a.markDown("refused")
        self.b.setAdminState("maint")
        self.assertIs(self.pool.pick(None), self.spare)
        self.b.setAdminState("drain")
        self.assertIs(self.pool.pick(None), self.spare)
        self.b.setAdminState("ready")
        self.b.maxconn = 1
        self.b.connectionStarted()
        self.assertIs(self.pool.pick(None), self.spare)
        self.b.connectionEnded()
        self.b.weight = 0
        self.assertIs(self.pool.pick(None), self.spare)
        self.b.weight = 1
        self.assertIs(self.pool.pick(None), self.b)

    def test_excludedNormalIsNotBackup(self) -> None:
        """
        Excluding every available normal backend gives no backend rather
        than a backup: backups are for when the normal tier is down.
        """
        self.assertIsNone(self.pool.pick(None, [self.a, self.b]))
        self.assertIs(self.pool.pick(None, [self.a]), self.b)

    def test_nothingAvailable(self) -> None:
        """
        With every backend of both tiers down, there is no pick.
        """
        for backend in self.pool.backends:
            backend.markDown("refused")
        self.assertIsNone(self.pool.pick(None))

    def test_byName(self) -> None:
        """
        Backends are found by name; an unknown name is a L{KeyError}.
        """
        self.assertIs(self.pool.byName("spare"), self.spare)
        self.assertRaises(KeyError, self.pool.byName, "nope")

    def test_duplicateNames(self) -> None:
        """
        Two backends with one name are refused: stats and hashing need
        unique names.
        """
        error = self.assertRaises(
            ValueError,
            BackendPool,
            [makeBackend(self.clock, "x"), makeBackend(self.clock, "x")],
            RoundRobinScheduler,
        )
        self.assertIn("x", str(error))

    def test_drain(self) -> None:
        """
        A draining backend gets no new connections but its open ones go on
        and end normally; back to READY it gets new ones again.
        """
        self.a.connectionStarted()
        self.pool.setAdminState("a", "drain")
        self.assertIs(self.pool.pick(None), self.b)
        self.assertEqual(self.a.active, 1)
        self.a.connectionEnded()
        self.assertEqual(self.a.active, 0)
        self.pool.setAdminState("a", AdminState.READY)
        self.assertIs(self.pool.pick(None), self.a)

    def test_maint(self) -> None:
        """
        A backend in maintenance gets no connections.
        """
        self.pool.setAdminState("a", AdminState.MAINT)
        self.assertIs(self.pool.pick(None), self.b)
        self.assertRaises(KeyError, self.pool.setAdminState, "nope", "maint")
        self.assertRaises(ValueError, self.pool.setAdminState, "a", "sleepy")

    def test_snapshot(self) -> None:
        """
        The pool's snapshot lists every backend's state, in order, as plain
        data.
        """
        self.a.markDown("refused")
        snapshot = self.pool.snapshot()
        self.assertEqual(json.loads(json.dumps(snapshot)), snapshot)
        self.assertEqual(
            [(s["name"], s["state"], s["backup"]) for s in snapshot],
            [("a", "DOWN", False), ("spare", "UP", True), ("b", "UP", False)],
        )

    def test_tierSwitchLoggedOnce(self) -> None:
        """
        The move to the backup tier and back is logged once each, not per
        connection.
        """
        events = captureLogs(self)
        self.a.markDown("refused")
        self.b.markDown("refused")
        self.pool.pick(None)
        self.pool.pick(None)
        self.b.markUp("ok")
        self.a.markUp("ok")
        tierEvents = [e for e in events if "backend" not in e]
        self.assertEqual(len(tierEvents), 2)
        self.assertIn("backup tier", tierEvents[0]["log_format"])
        self.assertIn("up again", tierEvents[1]["log_format"])

    def test_poolObserversAndStop(self) -> None:
        """
        A pool-wide observer hears every backend; stopping the pool cancels
        every fail hold.
        """
        changes: List[StateChange] = []
        self.pool.addStateObserver(changes.append)
        self.a.connectFailed("refused")
        self.spare.connectFailed("refused")
        self.assertEqual([c.backend for c in changes], [self.a, self.spare])
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.pool.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_realScheduler(self) -> None:
        """
        With a real scheduler the pool spreads clients over the normal tier
        only.
        """
        pool = BackendPool([self.a, self.spare, self.b], schedulerFor("roundrobin"))
        picks = [pool.pick(None) for _ in range(4)]
        self.assertEqual(picks, [self.a, self.b, self.a, self.b])
