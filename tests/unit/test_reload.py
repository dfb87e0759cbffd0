"""
Tests for L{tlbalance.reload}: the difference between two configurations,
and applying it to a running balancer.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Dict, List, Tuple

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tlbalance._commands import Command
from tlbalance.backends import AdminState
from tlbalance.config import BalancerConfig, ConfigError, buildConfig
from tlbalance.reload import (
    DRAIN_POLL,
    BackendChange,
    Reloader,
    ReloadError,
    ReloadPlan,
    SIGHUPReload,
    planReload,
)
from tlbalance.runtime import RuntimeChangeError
from tlbalance.service import makeBalancerService

WHO = "uid 1000"


def baseValues() -> Dict[str, Any]:
    """
    The settings of the running balancer in these tests: backends C{a}
    (checked) and C{b}, one listener.
    """
    return {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "backend": [
            {"endpoint": "127.0.0.1:8081", "name": "a", "check": "tcp"},
            {"endpoint": "127.0.0.1:8082", "name": "b"},
        ],
        "drain-timeout": 0,
    }


def withBackend(values: Dict[str, Any], name: str, **keys: Any) -> Dict[str, Any]:
    """
    C{values} with backend C{name}'s table updated by C{keys} (a key set to
    C{None} is removed).
    """
    backends = []
    for table in values["backend"]:
        table = dict(table)
        if table["name"] == name:
            table.update(keys)
            table = {k: v for k, v in table.items() if v is not None}
        backends.append(table)
    return {**values, "backend": backends}


def changed(**updates: Any) -> BalancerConfig:
    """
    The base configuration with top-level C{updates} (settings' names with
    C{_} for C{-}).
    """
    values = baseValues()
    values.update({k.replace("_", "-"): v for k, v in updates.items()})
    return buildConfig(values)


class PlanTests(SynchronousTestCase):
    """
    L{planReload} lists every kind of change, and nothing else.
    """

    def setUp(self) -> None:
        self.running = buildConfig(baseValues())
        self.service = makeBalancerService(self.running, MemoryReactorClock())
        self.runtime = self.service.runtime

    def plan(self, new: BalancerConfig) -> ReloadPlan:
        return planReload(self.running, new, self.runtime)

    def test_noChange(self) -> None:
        """
        The same file: nothing to do, every listener kept.
        """
        plan = self.plan(buildConfig(baseValues()))
        self.assertEqual(plan, ReloadPlan(listenKeep=("tcp:0:interface=127.0.0.1",)))
        self.assertEqual(plan.describe(), [])

    def test_backendChanges(self) -> None:
        """
        Each changed backend field is named, for every field a reload
        applies.
        """
        cases: List[Tuple[Dict[str, Any], Tuple[str, ...]]] = [
            ({"weight": 5}, ("weight",)),
            ({"maxconn": 10}, ("maxconn",)),
            ({"backup": True}, ("backup",)),
            ({"send-proxy": "v2"}, ("sendProxy",)),
            ({"check": "http GET /health 200"}, ("check",)),
            ({"check": None}, ("check",)),
            ({"endpoint": "127.0.0.1:9091"}, ("endpoint",)),
            ({"weight": 3, "maxconn": 2}, ("weight", "maxconn")),
        ]
        for keys, fields in cases:
            with self.subTest(keys=keys):
                new = buildConfig(withBackend(baseValues(), "a", **keys))
                plan = self.plan(new)
                self.assertEqual(
                    plan.change, (BackendChange("a", fields, new.backends[0]),)
                )
                self.assertEqual((plan.add, plan.remove), ((), ()))
                self.assertEqual(
                    plan.describe(), [f"server a: {', '.join(fields)} changed"]
                )

    def test_globalSendProxy(self) -> None:
        """
        The balancer-wide send-proxy changes the header of the backends
        that set none of their own, and is a changed setting.
        """
        values = withBackend(baseValues(), "b", **{"send-proxy": "none"})
        self.running = buildConfig(values)
        plan = self.plan(buildConfig({**values, "send-proxy": "v1"}))
        self.assertEqual([c.name for c in plan.change], ["a"])
        self.assertEqual(plan.settings, ("sendProxy",))

    def test_addRemove(self) -> None:
        """
        A backend only in the new file is added, one only in the running
        configuration removed.
        """
        values = baseValues()
        values["backend"] = [
            values["backend"][0],
            {"endpoint": "127.0.0.1:8083", "name": "c"},
        ]
        new = buildConfig(values)
        plan = self.plan(new)
        self.assertEqual(plan.add, (new.backends[1],))
        self.assertEqual(plan.remove, ("b",))
        self.assertEqual(
            plan.describe(),
            [
                "server c added (tcp:host=127.0.0.1:port=8083)",
                "server b removed (drains first)",
            ],
        )

    def test_algorithm(self) -> None:
        """
        A new algorithm changes the scheduler.
        """
        plan = self.plan(changed(algorithm="leastconn"))
        self.assertEqual(plan.algorithm, ("roundrobin", "leastconn"))
        self.assertEqual(plan.describe(), ["algorithm: roundrobin -> leastconn"])

    def test_settings(self) -> None:
        """
        Each other setting that changed is named, applied to new
        connections.
        """
        cases: List[Tuple[Dict[str, Any], str]] = [
            ({"client_timeout": 5}, "client-timeout"),
            ({"server_timeout": 5}, "server-timeout"),
            ({"connect_timeout": 1}, "connect-timeout"),
            ({"first_byte_timeout": 2}, "first-byte-timeout"),
            ({"retries": 0}, "retries"),
            ({"fail_timeout": 1}, "fail-timeout"),
            ({"drain_timeout": 9}, "drain-timeout"),
            ({"pending_buffer_bytes": 4096}, "pending-buffer-bytes"),
            ({"dontlog_normal": True}, "dontlog-normal"),
        ]
        for updates, name in cases:
            with self.subTest(name=name):
                plan = self.plan(changed(**updates))
                self.assertEqual(plan.describe(), [f"{name} changed"])

    def test_listenerSettings(self) -> None:
        """
        A change to accept-proxy rebuilds every kept listener's factory.
        """
        plan = self.plan(changed(accept_proxy="127.0.0.1"))
        self.assertEqual(plan.tlsReread, ("tcp:0:interface=127.0.0.1",))
        self.assertIn("accept-proxy changed", plan.describe())

    def test_tlsListenersReread(self) -> None:
        """
        Kept TLS listeners, also wrapped, read their files again; plain ones
        are left alone.
        """
        from tlbalance.reload import _isTLS

        self.assertTrue(_isTLS("ssl:443:privateKey=k.pem"))
        self.assertTrue(_isTLS("tlsni:certdir=/c:tcp:443"))
        self.assertTrue(_isTLS("tlproxy:trusted=10.0.0.0/8:ssl:443:privateKey=k.pem"))
        self.assertFalse(_isTLS("tcp:443"))
        self.assertFalse(_isTLS("unix:/run/ssl.sock"))

    def test_listeners(self) -> None:
        """
        Listen strings are added, removed or kept by their text.
        """
        plan = self.plan(changed(listen=["tcp:0:interface=127.0.0.2"]))
        self.assertEqual(plan.listenAdd, ("tcp:0:interface=127.0.0.2",))
        self.assertEqual(plan.listenRemove, ("tcp:0:interface=127.0.0.1",))
        self.assertEqual(plan.listenKeep, ())

    def test_needRestart(self) -> None:
        """
        The control socket and stats listeners are not changed by a
        reload, which says they need a restart.
        """
        plan = self.plan(changed(control="/tmp/other.sock", stats=["tcp:0"]))
        self.assertEqual(plan.needRestart, ("stats", "control"))
        self.assertEqual(
            plan.describe(),
            [
                "stats changed in the file: needs a restart, not applied",
                "control changed in the file: needs a restart, not applied",
            ],
        )

    def test_runtimeWeightWins(self) -> None:
        """
        A weight set through the runtime API stays over the file's.
        """
        self.runtime.setServerWeight("a", 7, WHO)
        new = buildConfig(withBackend(baseValues(), "a", weight=5, maxconn=3))
        plan = self.plan(new)
        self.assertEqual(
            plan.change, (BackendChange("a", ("maxconn",), new.backends[0]),)
        )
        self.assertEqual(plan.keptRuntime, (("a", "weight"),))

    def test_runtimeAddedKept(self) -> None:
        """
        A server added through the runtime API stays when the file does not
        name it, and becomes a configured one when it does.
        """
        self.runtime.addServer("c", "127.0.0.1:8083", {}, WHO)
        plan = self.plan(buildConfig(baseValues()))
        self.assertEqual(plan.keptRuntime, (("c", "added"),))
        self.assertEqual(plan.add, ())
        values = baseValues()
        values["backend"].append({"endpoint": "127.0.0.1:8083", "name": "c"})
        plan = self.plan(buildConfig(values))
        self.assertEqual((plan.add, plan.change, plan.keptRuntime), ((), (), ()))

    def test_runtimeDeletedKept(self) -> None:
        """
        A configured server deleted through the runtime API stays deleted
        while the file still names it.
        """
        self.runtime.setServerState("b", "maint", WHO)
        self.runtime.delServer("b", WHO)
        plan = self.plan(buildConfig(baseValues()))
        self.assertEqual((plan.add, plan.remove), ((), ()))
        self.assertEqual(plan.keptRuntime, (("b", "deleted"),))


class ApplyTests(SynchronousTestCase):
    """
    L{Reloader.reload} applies the new file to a running balancer.
    """

    def setUp(self) -> None:
        self.values = baseValues()
        self.reactor = MemoryReactorClock()
        self.service = makeBalancerService(buildConfig(self.values), self.reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.reloader = Reloader(self.service, lambda: buildConfig(self.values))
        self.pool = self.service.balancer.pool

    def reload(self) -> List[str]:
        return self.reloader.reload(WHO)

    def test_addBackend(self) -> None:
        """
        An added backend is picked for new connections and checked if it
        has a check.
        """
        self.values["backend"].append(
            {"endpoint": "127.0.0.1:8083", "name": "c", "check": "tcp"}
        )
        self.assertEqual(
            self.reload(), ["server c added (tcp:host=127.0.0.1:port=8083)"]
        )
        c = self.pool.byName("c")
        self.assertIn(c, self.pool.backends)
        self.assertIn("c", self.service.balancer.connectors)
        self.assertTrue([k for k in self.service.checkers if k.backend is c][0].running)
        self.assertEqual(self.service.config.backends[-1].name, "c")

    def test_removeBackendDrains(self) -> None:
        """
        A removed backend drains: no new connection, its open one kept;
        it is forgotten once that one ends.
        """
        b = self.pool.byName("b")
        b.connectionStarted()
        self.values["backend"] = self.values["backend"][:1]
        self.reload()
        self.assertIs(b.admin, AdminState.DRAIN)
        self.reactor.advance(DRAIN_POLL * 3)
        self.assertIn(b, self.pool.backends)
        b.connectionEnded()
        self.reactor.advance(DRAIN_POLL)
        self.assertNotIn(b, self.pool.backends)
        self.assertNotIn("b", self.service.balancer.connectors)

    def test_removedThenBack(self) -> None:
        """
        A backend put back in the file before it was forgotten is ready
        again.
        """
        b = self.pool.byName("b")
        b.connectionStarted()
        backends = self.values["backend"]
        self.values["backend"] = backends[:1]
        self.reload()
        self.values["backend"] = backends
        self.reload()
        self.reactor.advance(DRAIN_POLL * 4)
        self.assertIs(self.pool.byName("b"), b)
        self.assertIs(b.admin, AdminState.READY)

    def test_changeWeightMaxconn(self) -> None:
        """
        A changed weight and maxconn apply to the running backend.
        """
        self.values = withBackend(self.values, "b", weight=9, maxconn=4)
        self.reload()
        b = self.pool.byName("b")
        self.assertEqual((b.weight, b.maxconn), (9, 4))

    def test_changeCheckRestartsChecker(self) -> None:
        """
        A changed check replaces the backend's checker; a removed one stops
        it and leaves the backend up.
        """
        a = self.pool.byName("a")
        old = self.service.checkers[0]
        self.values = withBackend(self.values, "a", check="http GET /h 200")
        self.reload()
        self.assertFalse(old.running)
        [new] = [k for k in self.service.checkers if k.backend is a]
        self.assertTrue(new.running)
        self.assertEqual(new.check.path, "/h")
        a.markDown("test")
        self.values = withBackend(self.values, "a", check=None)
        self.reload()
        self.assertFalse(new.running)
        self.assertEqual([k for k in self.service.checkers if k.backend is a], [])
        self.assertTrue(a.healthy)

    def test_sendProxy(self) -> None:
        """
        A changed send-proxy is the header the backend is sent.
        """
        self.values = withBackend(self.values, "b", **{"send-proxy": "v2"})
        self.reload()
        self.assertEqual(self.pool.byName("b").sendProxy, "v2")

    def test_backup(self) -> None:
        """
        A backend made backup serves only when the normal ones cannot.
        """
        self.values = withBackend(self.values, "b", backup=True)
        self.reload()
        self.assertEqual(
            {getattr(self.pool.pick(None), "name", None) for _ in range(4)}, {"a"}
        )

    def test_backupKeepsFailHold(self) -> None:
        """
        A backend without a check that a failed connect took down comes
        back after fail-timeout, also when a reload made it a backup.
        """
        b = self.pool.byName("b")
        b.connectFailed("refused")
        self.values = withBackend(self.values, "b", backup=True)
        self.reload()
        self.assertFalse(b.healthy)
        self.reactor.advance(self.service.config.failTimeout)
        self.assertTrue(b.healthy)
        self.values = withBackend(self.values, "b", backup=None)
        self.reload()
        self.assertEqual(
            {
                getattr(self.pool.pick(bytes([10, 0, 0, i])), "name", None)
                for i in range(8)
            },
            {"a", "b"},
        )

    def test_forgottenLosesRuntimeValues(self) -> None:
        """
        What the runtime API set for a backend ends when a reload removes
        it: put back later, it has the file's weight, which the next reload
        changes, and C{show servers} marks nothing.
        """
        self.service.runtime.setServerWeight("b", 9, WHO)
        backends = self.values["backend"]
        self.values["backend"] = backends[:1]
        self.reload()
        self.reactor.advance(DRAIN_POLL)
        self.values["backend"] = backends
        self.reload()
        self.assertEqual(self.pool.byName("b").weight, 1)
        rows = {row["name"]: row for row in self.service.runtime.servers()}
        self.assertEqual(rows["b"]["runtime"], [])
        self.values = withBackend(self.values, "b", weight=2)
        self.reload()
        self.assertEqual(self.pool.byName("b").weight, 2)

    def test_algorithm(self) -> None:
        """
        The new scheduler picks new connections.
        """
        a = self.pool.byName("a")
        for _ in range(3):
            a.connectionStarted()
        self.values["algorithm"] = "leastconn"
        self.reload()
        self.assertEqual(
            {getattr(self.pool.pick(None), "name", None) for _ in range(4)}, {"b"}
        )

    def test_settingsForNewConnections(self) -> None:
        """
        Changed timeouts are the relay's settings for new connections, and
        the service's configuration.
        """
        self.values["client-timeout"] = 7
        self.values["drain-timeout"] = 3
        self.reload()
        self.assertEqual(self.service.balancer.settings.clientTimeout, 7)
        self.assertEqual(self.service.config.drainTimeout, 3)

    def test_listeners(self) -> None:
        """
        A kept listener keeps its port; a new one is bound, a removed one
        stops listening.
        """
        [kept] = self.service.listeners
        port = kept.port
        self.values["listen"] = [
            "tcp:0:interface=127.0.0.1",
            "tcp:0:interface=127.0.0.2",
        ]
        self.reload()
        self.assertIs(kept.port, port)
        self.assertEqual(len(self.service.listeners), 2)
        added = self.service.listeners[1]
        self.assertIsNotNone(added.port)
        self.values["listen"] = ["tcp:0:interface=127.0.0.2"]
        self.reload()
        self.assertEqual(self.service.listeners, [added])
        self.assertFalse(kept.running)
        self.assertEqual(self.service.config.listen, ("tcp:0:interface=127.0.0.2",))

    def test_bindFailureKeepsListeners(self) -> None:
        """
        A new listener that cannot bind refuses the listener part: the old
        ones stay, the error is in the reply, the rest is applied.
        """
        from twisted.internet.error import CannotListenError

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise CannotListenError("127.0.0.2", 0, OSError(98, "in use"))

        self.reactor.listenTCP = refuse  # type: ignore[method-assign]
        [kept] = self.service.listeners
        self.values["listen"] = ["tcp:0:interface=127.0.0.2"]
        self.values["retries"] = 1
        lines = self.reload()
        self.assertEqual(self.service.listeners, [kept])
        self.assertTrue(kept.running)
        self.assertTrue([line for line in lines if line.startswith("error: ")])
        self.assertEqual([line for line in lines if line.startswith("listener")], [])
        self.assertIn("retries changed", lines)
        self.assertEqual(self.service.config.listen, ("tcp:0:interface=127.0.0.1",))
        self.assertEqual(self.service.balancer.settings.retries, 1)
        # The next reload tries again.
        del self.reactor.listenTCP
        lines = self.reload()
        self.assertEqual(
            lines,
            [
                "listener tcp:0:interface=127.0.0.2 added",
                "listener tcp:0:interface=127.0.0.1 removed",
            ],
        )

    def test_otherListenFailure(self) -> None:
        """
        A listen that fails with another error than an address in use is
        refused the same way, with the rest of the reload applied.
        """

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise ValueError("no such socket")

        self.reactor.listenTCP = refuse  # type: ignore[method-assign]
        [kept] = self.service.listeners
        self.values["listen"] = ["tcp:0:interface=127.0.0.2"]
        self.values["retries"] = 1
        lines = self.reload()
        self.assertEqual(self.service.listeners, [kept])
        self.assertIn("no such socket", lines[-1])
        self.assertEqual(self.service.balancer.settings.retries, 1)

    def test_invalidRefused(self) -> None:
        """
        An invalid file is refused with every problem, and nothing changes.
        """
        before = self.service.config
        self.values["retries"] = -1
        self.values["client-timeout"] = "soon"
        with self.assertRaises(ReloadError) as raised:
            self.reload()
        self.assertEqual(len(raised.exception.problems), 2)
        self.assertIs(self.service.config, before)

    def test_runtimeStateSurvives(self) -> None:
        """
        A state and weight set through the runtime API stay over the file's,
        and C{show servers} still says where they came from.
        """
        runtime = self.service.runtime
        runtime.setServerState("a", "drain", WHO)
        runtime.setServerWeight("a", 5, WHO)
        self.values = withBackend(self.values, "a", weight=2)
        lines = self.reload()
        a = self.pool.byName("a")
        self.assertEqual((a.admin, a.weight), (AdminState.DRAIN, 5))
        self.assertIn("server a: weight set through the runtime API kept", lines)
        rows = {row["name"]: row for row in runtime.servers()}
        self.assertEqual(rows["a"]["runtime"], ["state", "weight"])

    def test_runtimeAddedSurvives(self) -> None:
        """
        A server added through the runtime API survives a reload.
        """
        self.service.runtime.addServer("c", "127.0.0.1:8083", {}, WHO)
        self.reload()
        self.assertEqual([b.name for b in self.pool.backends], ["a", "b", "c"])

    def test_restartSettingsKept(self) -> None:
        """
        Settings only a restart applies keep their running value.
        """
        self.values["stats"] = ["tcp:0"]
        self.reload()
        self.assertEqual(self.service.config.stats, ())
        self.assertEqual(self.service.statsListeners, [])

    def test_runtimeReload(self) -> None:
        """
        The runtime API's reload answers with the changes, or every problem
        in one line; without a file it says so.
        """
        runtime = self.service.runtime
        self.values["retries"] = 1
        self.assertEqual(runtime.reload(WHO), ["retries changed"])
        self.assertEqual(runtime.reload(WHO), ["no change"])
        self.values["retries"] = -1
        with self.assertRaises(RuntimeChangeError) as raised:
            runtime.reload(WHO)
        self.assertIn(
            "reload refused, the running configuration stays: ", str(raised.exception)
        )
        runtime.reloader = None
        with self.assertRaises(RuntimeChangeError):
            runtime.reload(WHO)


class SIGHUPTests(SynchronousTestCase):
    """
    L{SIGHUPReload} reloads on SIGHUP while running.
    """

    def test_sighup(self) -> None:
        """
        SIGHUP schedules a reload through C{callFromThread}; stopping puts
        the previous handler back.
        """
        reactor = MemoryReactorClock()
        values = baseValues()
        service = makeBalancerService(buildConfig(values), reactor)
        calls: List[str] = []

        def load() -> BalancerConfig:
            calls.append("load")
            raise ConfigError("retries: bad")

        scheduled: List[Any] = []
        reactor.callFromThread = lambda f, *a, **k: scheduled.append(f)  # type: ignore[attr-defined]
        hup = SIGHUPReload(Reloader(service, load), reactor)
        before = signal.getsignal(signal.SIGHUP)
        hup.startService()
        try:
            os.kill(os.getpid(), signal.SIGHUP)
        finally:
            hup.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
        self.assertEqual(len(scheduled), 1)
        scheduled[0]()
        self.assertEqual(calls, ["load"])


class ReloadCommandTests(SynchronousTestCase):
    """
    The runtime API's C{reload} command.
    """

    def test_parseAndRender(self) -> None:
        """
        C{reload} is a command; its text reply is one line per change.
        """
        from tlbalance._commands import USAGE, parseCommand, renderText

        self.assertEqual(parseCommand("reload"), Command("reload"))
        self.assertEqual(parseCommand("json reload"), Command("reload", json=True))
        self.assertIn("reload", USAGE)
        lines = ["server c added (tcp:host=h:port=1)", "retries changed"]
        self.assertEqual(renderText("reload", {"changes": lines}), lines)

    def test_execute(self) -> None:
        """
        The control socket runs C{reload} through the balancer's reloader.
        """
        from tlbalance.control import execute

        values = baseValues()
        service = makeBalancerService(buildConfig(values), MemoryReactorClock())
        Reloader(service, lambda: buildConfig({**values, "retries": 2}))
        result = execute(service.runtime, Command("reload"), WHO)
        self.assertEqual(result, {"changes": ["retries changed"]})
