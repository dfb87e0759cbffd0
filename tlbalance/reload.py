# -*- test-case-name: tests.unit.test_reload -*-
"""
Apply a changed configuration to a running balancer in place (SIGHUP,
C{tlbalancectl reload}): L{planReload} compares the running configuration
with the new one and says what differs, L{applyPlan} makes the changes
through the objects the runtime API uses, and L{Reloader} re-reads the file
and does both.

No established connection is dropped and no new one refused: kept
listeners keep their socket, removed backends drain before they are
forgotten, and changed settings apply to new connections. What the runtime
API set (a state, a weight, an added or deleted server) stays in force over
the file, as HAProxy's server-state file keeps it.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from attrs import evolve, fields, frozen
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall

from tlbalance._loglevel import balancerLogger
from tlbalance.backends import AdminState, Backend
from tlbalance.config import BackendConfig, BalancerConfig, ConfigError
from tlbalance.health import HealthChecker
from tlbalance.relay import BackendConnector
from tlbalance.runtime import RuntimeState
from tlbalance.schedulers import schedulerFor
from tlsuite._twisted import parseEndpointString

if TYPE_CHECKING:
    from tlbalance.service import BalancerService

log = balancerLogger("tlbalance.reload")

#: Settings a reload cannot change: they are kept, and the reply says a
#: restart is needed.
RESTART_SETTINGS = ("sessions", "secretFile", "sessionsInsecure", "stats", "control")

#: Settings that change how every listener's factory is built, so that the
#: kept listeners get a new one.
_LISTENER_SETTINGS = ("acceptProxy", "proxyHeaderTimeout", "tlsCiphers")

#: Backend fields compared between the running and the new configuration.
_BACKEND_FIELDS = ("endpoint", "weight", "backup", "maxconn", "sendProxy", "check")

#: Seconds between looks at a draining removed backend's connections.
DRAIN_POLL = 0.5


class ReloadError(Exception):
    """
    The new configuration is invalid; the running one stays in force.

    @ivar problems: every problem, one line each.
    """

    def __init__(self, problems: List[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def settingName(attribute: str) -> str:
    """
    The name of a L{BalancerConfig} attribute in files and on the command
    line (C{clientTimeout} is C{client-timeout}).
    """
    for f in fields(BalancerConfig):
        if f.name == attribute:
            key: str = f.metadata.get("key", "")
            if key:
                return key
    overrides = {"secretFile": "secret-file", "listen": "listen"}
    return overrides.get(attribute, attribute)


def _effectiveSendProxy(backend: BackendConfig, balancerWide: Optional[str]) -> Any:
    if backend.sendProxy == "none":
        return None
    return backend.sendProxy or balancerWide


@frozen
class BackendChange:
    """
    A backend in both configurations whose settings differ.

    @ivar name: the backend.
    @ivar fields: the L{BackendConfig} attributes that differ (C{sendProxy}
        compares the header actually sent).
    @ivar config: the new configuration.
    """

    name: str
    fields: Tuple[str, ...]
    config: BackendConfig


@frozen
class ReloadPlan:
    """
    What a reload changes, computed by L{planReload}.

    @ivar add: backends to add.
    @ivar remove: names of backends to drain, then forget.
    @ivar change: backends whose settings change.
    @ivar keptRuntime: C{(name, what)} for each value the runtime API set
        that stays over the file's (C{what} is C{"weight"}, C{"state"},
        C{"added"} or C{"deleted"}).
    @ivar algorithm: C{(old, new)} when the scheduler changes, else C{None}.
    @ivar listenAdd: listen strings to bind.
    @ivar listenRemove: listen strings to stop listening on.
    @ivar listenKeep: listen strings that keep their socket.
    @ivar tlsReread: kept listeners whose factory is built again: their
        certificates and C{tlsni:} directories are read again, and new PROXY
        and cipher settings take effect.
    @ivar settings: other settings changed, applied to new connections
        (attribute names).
    @ivar needRestart: settings changed in the file that only a restart
        applies; the running values stay.
    """

    add: Tuple[BackendConfig, ...] = ()
    remove: Tuple[str, ...] = ()
    change: Tuple[BackendChange, ...] = ()
    keptRuntime: Tuple[Tuple[str, str], ...] = ()
    algorithm: Optional[Tuple[str, str]] = None
    listenAdd: Tuple[str, ...] = ()
    listenRemove: Tuple[str, ...] = ()
    listenKeep: Tuple[str, ...] = ()
    tlsReread: Tuple[str, ...] = ()
    settings: Tuple[str, ...] = ()
    needRestart: Tuple[str, ...] = ()

    def describe(self) -> List[str]:
        """
        One line per change, for the log and the reply of C{reload}.
        """
        lines = [f"server {b.name} added ({b.endpoint})" for b in self.add]
        lines += [f"server {name} removed (drains first)" for name in self.remove]
        for change in self.change:
            lines.append(f"server {change.name}: {', '.join(change.fields)} changed")
        for name, what in self.keptRuntime:
            if what == "added":
                lines.append(f"server {name} kept (added through the runtime API)")
            elif what == "deleted":
                lines.append(f"server {name} stays deleted (runtime API)")
            else:
                lines.append(f"server {name}: {what} set through the runtime API kept")
        if self.algorithm is not None:
            lines.append(f"algorithm: {self.algorithm[0]} -> {self.algorithm[1]}")
        lines += [f"listener {d} added" for d in self.listenAdd]
        lines += [f"listener {d} removed" for d in self.listenRemove]
        lines += [
            f"listener {d}: TLS and PROXY settings re-read" for d in self.tlsReread
        ]
        lines += [f"{settingName(s)} changed" for s in self.settings]
        lines += [
            f"{settingName(s)} changed in the file: needs a restart, not applied"
            for s in self.needRestart
        ]
        return lines


def _isTLS(description: str) -> bool:
    """
    Whether a listen string has TLS, also under a wrapper
    (C{tlproxy:...:ssl:...}).
    """
    args, _ = parseEndpointString(description)
    return bool({"ssl", "tlsni"} & {str(arg).lower() for arg in args})


def planReload(
    running: BalancerConfig, new: BalancerConfig, runtime: RuntimeState
) -> ReloadPlan:
    """
    Compare the running configuration with a new one.

    @param running: the configuration in force (configured backends only;
        the runtime API's changes are in C{runtime}).
    @param runtime: which values the runtime API set, and which configured
        backends it deleted.
    """
    old = {b.name: b for b in running.backends}
    added: Dict[str, BackendConfig] = {}
    for name, override in runtime.overrides.items():
        if "added" in override:
            added[name] = _runtimeBackend(override["added"])
    add: List[BackendConfig] = []
    change: List[BackendChange] = []
    kept: List[Tuple[str, str]] = []
    for backend in new.backends:
        name = backend.name
        before = old.get(name) or added.get(name)
        if name in runtime.deleted and name in old:
            kept.append((name, "deleted"))
            continue
        if before is None:
            add.append(backend)
            continue
        differ = []
        for attribute in _BACKEND_FIELDS:
            if attribute == "sendProxy":
                if _effectiveSendProxy(
                    before, running.sendProxy
                ) != _effectiveSendProxy(backend, new.sendProxy):
                    differ.append(attribute)
            elif getattr(before, attribute) != getattr(backend, attribute):
                differ.append(attribute)
        override = runtime.overrides.get(name, {})
        if "weight" in override and "weight" in differ:
            differ.remove("weight")
            kept.append((name, "weight"))
        if differ:
            change.append(BackendChange(name, tuple(differ), backend))
    newNames = {b.name for b in new.backends}
    remove = tuple(
        b.name
        for b in running.backends
        if b.name not in newNames and b.name not in runtime.deleted
    )
    for name in added:
        if name not in newNames:
            kept.append((name, "added"))
    algorithm = None
    if running.algorithm != new.algorithm:
        algorithm = (running.algorithm, new.algorithm)
    listenKeep = tuple(d for d in new.listen if d in running.listen)
    rebuildAll = any(getattr(running, a) != getattr(new, a) for a in _LISTENER_SETTINGS)
    skip = {"listen", "backends", "algorithm", *RESTART_SETTINGS}
    settings = tuple(
        f.name
        for f in fields(BalancerConfig)
        if f.name not in skip and getattr(running, f.name) != getattr(new, f.name)
    )
    return ReloadPlan(
        add=tuple(add),
        remove=remove,
        change=tuple(change),
        keptRuntime=tuple(kept),
        algorithm=algorithm,
        listenAdd=tuple(d for d in new.listen if d not in running.listen),
        listenRemove=tuple(d for d in running.listen if d not in new.listen),
        listenKeep=listenKeep,
        tlsReread=tuple(d for d in listenKeep if rebuildAll or _isTLS(d)),
        settings=settings,
        needRestart=tuple(
            a for a in RESTART_SETTINGS if getattr(running, a) != getattr(new, a)
        ),
    )


def _runtimeBackend(table: Dict[str, Any]) -> BackendConfig:
    from tlbalance.config import backendFromTable

    return backendFromTable(dict(table), label=f"server {table.get('name')}")


class _Applier:
    """
    Applies one L{ReloadPlan} to a running L{BalancerService}.
    """

    def __init__(
        self, service: BalancerService, reloader: Reloader, new: BalancerConfig
    ) -> None:
        self.service = service
        self.reloader = reloader
        self.new = new
        self.balancer = service.balancer
        self.pool = service.balancer.pool
        self.reactor = service.balancer.clock
        self.lines: List[str] = []

    def checkerOf(self, backend: Backend) -> Optional[HealthChecker]:
        for checker in self.service.checkers:
            if checker.backend is backend:
                return checker
        return None

    def stopChecker(self, backend: Backend) -> None:
        checker = self.checkerOf(backend)
        if checker is None:
            return
        self.service.checkers.remove(checker)
        if checker.parent is not None:
            checker.disownServiceParent()
        if checker.running:
            checker.stopService()

    def startChecker(self, backend: Backend) -> None:
        if backend.check is None:
            return
        checker = HealthChecker(
            self.reactor,
            backend,
            backend.check,
            connect=self.balancer.connectors[backend.name].connectWithPreamble,
            sendProxy=backend.sendProxy,
            localErrors=self.balancer.localErrors,
        )
        self.service.checkers.append(checker)
        if self.service.running and backend.admin is not AdminState.MAINT:
            checker.startService()

    def connector(self, endpoint: str) -> BackendConnector:
        return BackendConnector.fromString(
            self.reactor, endpoint, self.new.connectTimeout
        )

    def addBackend(self, config: BackendConfig) -> None:
        draining = self.reloader.draining.pop(config.name, None)
        if draining is not None:
            # Removed by an earlier reload and back before it was forgotten.
            draining.cancel()
            backend = self.pool.byName(config.name)
            backend.setAdminState(AdminState.READY, "back in the reloaded file")
            self.changeBackend(backend, config, _BACKEND_FIELDS)
            return
        backend = Backend.fromConfig(
            config,
            self.reactor,
            failTimeout=self.new.failTimeout,
            sendProxy=self.new.sendProxy,
        )
        self.balancer.connectors[config.name] = self.connector(config.endpoint)
        self.pool.addBackend(backend)
        self.startChecker(backend)

    def removeBackend(self, name: str) -> None:
        try:
            backend = self.pool.byName(name)
        except KeyError:
            return
        backend.setAdminState(AdminState.DRAIN, "removed from the reloaded file")
        self.reloader.forgetWhenIdle(backend)

    def changeBackend(
        self, backend: Backend, config: BackendConfig, changed: Tuple[str, ...]
    ) -> None:
        backend.config = config
        if "weight" in changed:
            backend.weight = config.weight
        if "maxconn" in changed:
            backend.maxconn = config.maxconn
        if "endpoint" in changed:
            backend.endpoint = config.endpoint
            self.balancer.connectors[backend.name] = self.connector(config.endpoint)
        backend.sendProxy = _effectiveSendProxy(config, self.new.sendProxy)
        if "backup" in changed:
            self.pool.setBackup(backend.name, config.backup)
        if {"check", "endpoint", "sendProxy"} & set(changed):
            self.stopChecker(backend)
            backend.check = config.check
            if config.check is None and not backend.healthy:
                backend.markUp("its health check was removed by a reload")
            self.startChecker(backend)

    def applyGlobal(self, plan: ReloadPlan) -> None:
        new = self.new
        if plan.algorithm is not None:
            self.pool.setScheduler(schedulerFor(new.algorithm))
        from tlbalance.service import relaySettings

        self.balancer.settings = relaySettings(new)
        changed = {c.name for c in plan.change}
        for backend in list(self.pool.backends):
            backend.failTimeout = new.failTimeout
            if "connectTimeout" in plan.settings and backend.name not in changed:
                self.balancer.connectors[backend.name] = self.connector(
                    backend.endpoint
                )
                self.stopChecker(backend)
                self.startChecker(backend)
            if "sendProxy" in plan.settings and backend.config is not None:
                backend.sendProxy = _effectiveSendProxy(backend.config, new.sendProxy)

    def applyListeners(self, plan: ReloadPlan) -> bool:
        """
        Bind the new listeners first: if one cannot bind, those just bound
        are closed and no listener is added or removed. Kept TLS listeners
        get their new factory either way.

        @return: whether the listeners were changed as planned.
        """
        from tlbalance.service import listenerService

        service = self.service
        bound: List[Any] = []
        for description in plan.listenAdd:
            listener = listenerService(
                self.new, self.balancer, self.reactor, description
            )
            try:
                if service.running:
                    listener.privilegedStartService()
            except Exception as e:
                # StartupError says it in one line (an address in use);
                # other endpoints fail with their own exception.
                for other in bound:
                    other.stopService()
                self.error(
                    f"{e}; listeners not changed "
                    f"({', '.join(service.config.listen)} kept)"
                )
                self.rebuildFactories(plan)
                return False
            bound.append(listener)
        for listener in bound:
            listener.setServiceParent(service)
            service.listeners.append(listener)
        for listener in list(service.listeners):
            if listener.description in plan.listenRemove:
                service.listeners.remove(listener)
                # Stops it when the balancer runs: it accepts no more, and
                # the connections it accepted go on.
                listener.disownServiceParent()
        self.rebuildFactories(plan)
        return True

    def rebuildFactories(self, plan: ReloadPlan) -> None:
        """
        Give the kept listeners of C{plan.tlsReread} a factory built from
        the new configuration (certificate files read now).
        """
        from tlbalance.service import listenerFactory

        for listener in self.service.listeners:
            if listener.description not in plan.tlsReread or not listener.frontend:
                continue
            try:
                _, factory = listenerFactory(
                    self.new, self.reactor, listener.description, listener.frontend
                )
            except Exception as e:
                # The files changed again since the configuration was read.
                self.error(f"listener {listener.description} not re-read: {e}")
                continue
            _swapFactory(listener, factory)

    def error(self, message: str) -> None:
        log.error("Reload: {message}", message=message)
        self.lines.append(f"error: {message}")


def _swapFactory(listener: Any, factory: Any) -> None:
    """
    Give a listening port a new factory for the connections it accepts
    from now on; those it accepted keep theirs.
    """
    old = listener.factory
    listener.factory = factory
    port = listener.port
    if port is not None and getattr(port, "factory", None) is old:
        factory.doStart()
        port.factory = factory
        if old is not None:
            old.doStop()


def applyPlan(
    service: BalancerService,
    reloader: Reloader,
    plan: ReloadPlan,
    new: BalancerConfig,
) -> List[str]:
    """
    Make the changes of C{plan} to the running C{service}, and make C{new}
    (less what needs a restart, or listeners that could not bind) its
    configuration.

    @return: one line per change; a line starting with C{error:} for a part
        that was refused.
    """
    applier = _Applier(service, reloader, new)
    for config in plan.add:
        applier.addBackend(config)
    for name in plan.remove:
        applier.removeBackend(name)
    for change in plan.change:
        applier.changeBackend(
            service.balancer.pool.byName(change.name), change.config, change.fields
        )
    applier.applyGlobal(plan)
    runtime = service.runtime
    names = {b.name for b in new.backends}
    for name in names:
        runtime.forgetAdded(name)
    runtime.deleted &= names
    listen = new.listen
    if not applier.applyListeners(plan):
        listen = service.config.listen
        plan = evolve(plan, listenAdd=(), listenRemove=())
    kept = {a: getattr(service.config, a) for a in RESTART_SETTINGS}
    listenAfter: Any = listen
    service.config = evolve(new, listen=listenAfter, **kept)
    return plan.describe() + applier.lines


class Reloader:
    """
    Re-reads the configuration and applies it to a running balancer; the
    runtime API's C{reload} and SIGHUP call L{reload}.

    @ivar load: builds the new configuration from the file and the command
        line as at start-up, raising L{ConfigError}.
    @ivar draining: removed backends waiting for their last connection.
    """

    def __init__(
        self, service: BalancerService, load: Callable[[], BalancerConfig]
    ) -> None:
        self.service = service
        self.load = load
        self.draining: Dict[str, IDelayedCall] = {}
        service.runtime.reloader = self.reload

    def reload(self, who: str) -> List[str]:
        """
        Re-read the configuration and apply the difference.

        @param who: who asked, for the log.
        @return: one line per change (C{"no change"} when there is none).
        @raise ReloadError: the new configuration is invalid (every
            problem logged); nothing was changed.
        """
        log.info("Reload asked by {who}", who=who)
        if self.service.startedAt is not None and not self.service.running:
            problem = "the balancer is stopping: nothing reloaded"
            log.error("Reload refused: {problem}", problem=problem)
            raise ReloadError([problem])
        try:
            new = self.load()
        except ConfigError as e:
            problems = list(e.problems) or [str(e)]
            for problem in problems:
                log.error("Reload refused: {problem}", problem=problem)
            raise ReloadError(problems) from None
        plan = planReload(self.service.config, new, self.service.runtime)
        lines = applyPlan(self.service, self, plan, new) or ["no change"]
        for line in lines:
            log.info("Reload: {change}", change=line)
        return lines

    def forgetWhenIdle(self, backend: Backend) -> None:
        """
        Take C{backend} out of the balancer once its last connection ends.
        """
        clock = self.service.balancer.clock

        def look() -> None:
            self.draining.pop(backend.name, None)
            pool = self.service.balancer.pool
            if backend not in pool.backends:
                return
            if backend.active:
                self.draining[backend.name] = clock.callLater(DRAIN_POLL, look)
                return
            for checker in list(self.service.checkers):
                if checker.backend is backend:
                    self.service.checkers.remove(checker)
                    if checker.parent is not None:
                        checker.disownServiceParent()
                    if checker.running:
                        checker.stopService()
            pool.removeBackend(backend.name)
            self.service.balancer.connectors.pop(backend.name, None)
            # What the runtime API set for it ends with it.
            self.service.runtime.overrides.pop(backend.name, None)
            log.info(
                "Reload: backend {backend} drained and forgotten", backend=backend.name
            )

        self.draining[backend.name] = clock.callLater(0, look)

    def stop(self) -> None:
        """
        Stop watching draining backends (the balancer stops).
        """
        for call in self.draining.values():
            if call.active():
                call.cancel()
        self.draining.clear()


class SIGHUPReload(Service):
    """
    Reloads the balancer on SIGHUP while it runs, restoring the signal's
    previous handler on stop. twistd itself leaves SIGHUP alone (it rotates
    its log on SIGUSR1), and its default would end the process.

    The handler only schedules the reload with C{callFromThread}, which is
    safe in a signal handler and wakes the reactor.
    """

    def __init__(self, reloader: Reloader, reactor: Any) -> None:
        self.reloader = reloader
        self.reactor = reactor
        self._previous: Any = None
        self._installed = False

    def startService(self) -> None:
        super().startService()
        try:
            self._previous = signal.signal(signal.SIGHUP, self._received)
        except ValueError:
            # Not the main thread: no signals here.
            log.warn("SIGHUP reload not installed: not in the main thread")
            return
        self._installed = True

    def stopService(self) -> Any:
        super().stopService()
        self.reloader.stop()
        if self._installed:
            signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)
            self._installed = False
        return None

    def _received(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reloadNow)

    def reloadNow(self) -> None:
        """
        Reload, logging the outcome; a refused reload leaves the balancer as
        it was.
        """
        try:
            self.reloader.reload("SIGHUP")
        except ReloadError:
            pass
        except Exception:
            log.failure("Reload on SIGHUP failed")
