# -*- test-case-name: tests.unit.test_backends -*-
"""
Backend runtime state (health, admin state, counters) and the pool the
balancer picks from: a normal tier and a backup tier, each with a scheduler.
"""

from __future__ import annotations

from enum import Enum
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Container,
    Dict,
    List,
    Optional,
    Sequence,
    Union,
)

from attrs import define, field, frozen, validators
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from tlbalance._loglevel import balancerLogger

if TYPE_CHECKING:
    from tlbalance.config import BackendConfig, HealthCheckConfig
    from tlbalance.schedulers import IScheduler

log = balancerLogger("tlbalance.backends")

MAX_WEIGHT = 256

UP = "UP"
DOWN = "DOWN"


class AdminState(Enum):
    """
    What an operator allows a backend to do.

    @cvar READY: takes new connections (when healthy).
    @cvar DRAIN: takes no new connections; the ones it has continue.
    @cvar MAINT: in maintenance: takes no new connections at all.
    """

    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"

    @classmethod
    def fromName(cls, name: Union[str, AdminState]) -> AdminState:
        """
        Read an admin state from its name, in any case (C{"drain"},
        C{"MAINT"}), or pass an L{AdminState} through.

        @raise ValueError: naming the valid choices when C{name} is none.
        """
        if isinstance(name, AdminState):
            return name
        try:
            return cls(name.lower())
        except ValueError:
            choices = ", ".join(s.value for s in cls)
            raise ValueError(
                f"unknown admin state {name!r}; choose one of {choices}"
            ) from None


@frozen
class StateChange:
    """
    One real transition of a backend's state, as handed to state observers.

    @ivar backend: the backend that changed.
    @ivar old: the state before: C{"UP"}/C{"DOWN"} for health changes, an
        L{AdminState} name (C{"READY"}, C{"DRAIN"}, C{"MAINT"}) for admin
        changes.
    @ivar new: the state after, in the same vocabulary as C{old}.
    @ivar reason: why, in words.
    """

    backend: Backend
    old: str
    new: str
    reason: str


StateObserver = Callable[[StateChange], Any]


def _validWeight(instance: object, attribute: Any, value: int) -> None:
    if not 0 <= value <= MAX_WEIGHT:
        raise ValueError(f"weight must be within 0..{MAX_WEIGHT}, not {value!r}")


def _ownOrGlobal(own: Optional[str], balancerWide: Optional[str]) -> Optional[str]:
    # A backend's "none" overrides a balancer-wide PROXY version.
    if own == "none":
        return None
    return own or balancerWide


@define(eq=False, kw_only=True)
class Backend:
    """
    The runtime state of one backend server.

    Backends compare by identity so schedulers can keep them in sets and
    dictionaries.

    @ivar config: the L{BackendConfig} this backend was built from, if any.
    @ivar name: the name used in logs, stats and consistent hashing.
    @ivar endpoint: the client endpoint string used to reach it.
    @ivar weight: 0..256; weight 0 takes no new connections.
    @ivar backup: only used when no normal backend is available.
    @ivar maxconn: most concurrent connections; 0 means unlimited.
    @ivar sendProxy: the PROXY header version to send (C{"v1"}, C{"v2"}) or
        C{None}; traffic and health checks both use it.
    @ivar check: the active health check, or C{None} (passive marking only).
    @ivar clock: the clock that times state changes and the fail hold.
    @ivar failTimeout: seconds a backend without an active check stays down
        after a failed connect.
    @ivar healthy: set by the health checker and by passive marking.
    @ivar admin: what the operator allows.
    @ivar active: connections (including connect attempts) now open.
    @ivar total: connections started since the balancer started.
    @ivar connectFailures: failed connect attempts (the balancer's own
        resource errors, such as running out of file descriptors, are not
        counted: they say nothing about the backend).
    @ivar firstByteTimeouts: connections closed because this backend sent
        nothing within the first-byte timeout of the client's request.
    @ivar bytesIn: bytes relayed from clients to this backend.
    @ivar bytesOut: bytes relayed from this backend to clients.
    @ivar peak: the most connections it had open at once.
    @ivar retries: connect attempts that failed here and were tried again
        (here or elsewhere).
    @ivar redispatches: connect attempts that failed here and were tried
        again on another backend.
    @ivar lastStateChange: the clock's time of the last health or admin
        change (the creation time until there is one).
    """

    name: str
    endpoint: str
    clock: IReactorTime
    weight: int = field(default=1, validator=_validWeight)
    backup: bool = False
    maxconn: int = field(default=0, validator=validators.ge(0))
    sendProxy: Optional[str] = field(
        default=None, validator=validators.in_((None, "v1", "v2"))
    )
    check: Optional[HealthCheckConfig] = None
    config: Optional[BackendConfig] = None
    failTimeout: float = 10.0
    healthy: bool = True
    admin: AdminState = AdminState.READY
    active: int = 0
    total: int = 0
    connectFailures: int = 0
    firstByteTimeouts: int = 0
    bytesIn: int = 0
    bytesOut: int = 0
    peak: int = 0
    retries: int = 0
    redispatches: int = 0
    lastStateChange: float = field()
    _observers: List[StateObserver] = field(factory=list, init=False, repr=False)
    _failHold: Optional[IDelayedCall] = field(default=None, init=False, repr=False)

    @lastStateChange.default
    def _now(self) -> float:
        return self.clock.seconds()

    @classmethod
    def fromConfig(
        cls,
        backendConfig: BackendConfig,
        clock: IReactorTime,
        failTimeout: float = 10.0,
        sendProxy: Optional[str] = None,
    ) -> Backend:
        """
        Build the runtime state of a configured backend.

        @param backendConfig: reads C{name}, C{endpoint}, C{weight},
            C{backup}, C{maxconn}, C{sendProxy} and C{check}.
        @param clock: times state changes and the fail hold.
        @param failTimeout: the balancer's C{failTimeout}.
        @param sendProxy: the balancer-wide PROXY version, used when the
            backend does not set its own.
        """
        return cls(
            name=backendConfig.name,
            endpoint=backendConfig.endpoint,
            clock=clock,
            weight=backendConfig.weight,
            backup=backendConfig.backup,
            maxconn=backendConfig.maxconn,
            sendProxy=_ownOrGlobal(backendConfig.sendProxy, sendProxy),
            check=backendConfig.check,
            config=backendConfig,
            failTimeout=failTimeout,
        )

    @property
    def state(self) -> str:
        """
        One word for humans and stats: C{"MAINT"} or C{"DRAIN"} when the
        operator says so, else C{"UP"} or C{"DOWN"}.
        """
        if self.admin is not AdminState.READY:
            return self.admin.name
        return UP if self.healthy else DOWN

    def available(self) -> bool:
        """
        Whether this backend may take a new connection now: healthy, READY,
        with a weight, and under its C{maxconn}.
        """
        return (
            self.healthy
            and self.admin is AdminState.READY
            and self.weight > 0
            and (self.maxconn == 0 or self.active < self.maxconn)
        )

    def connectionStarted(self) -> None:
        """
        Count a connection (or connect attempt) to this backend.
        """
        self.active += 1
        self.total += 1
        if self.active > self.peak:
            self.peak = self.active

    def connectionEnded(self) -> None:
        """
        Count the end of a connection counted by L{connectionStarted}.
        """
        assert self.active > 0, f"backend {self.name}: more ends than starts"
        self.active -= 1

    def addStateObserver(self, observer: StateObserver) -> None:
        """
        Call C{observer} with a L{StateChange} after every real health or
        admin transition of this backend.
        """
        self._observers.append(observer)

    def removeStateObserver(self, observer: StateObserver) -> None:
        """
        Stop calling an observer added with L{addStateObserver}.
        """
        self._observers.remove(observer)

    def markDown(self, reason: str) -> None:
        """
        Mark this backend unhealthy; logs and notifies observers only when it
        was healthy.
        """
        if not self.healthy:
            return
        self.healthy = False
        self._changed(UP, DOWN, reason)

    def markUp(self, reason: str) -> None:
        """
        Mark this backend healthy; logs and notifies observers only when it
        was unhealthy. Ends any pending fail hold.
        """
        self._cancelFailHold()
        if self.healthy:
            return
        self.healthy = True
        self._changed(DOWN, UP, reason)

    def setAdminState(self, admin: Union[AdminState, str], reason: str = "") -> None:
        """
        Change what the operator allows; logs and notifies observers when the
        state really changes.

        @param admin: an L{AdminState} or its name.
        @param reason: why, for the log; defaults to saying an operator did it.
        """
        admin = AdminState.fromName(admin)
        if admin is self.admin:
            return
        old = self.admin
        self.admin = admin
        self._changed(old.name, admin.name, reason or "set by an operator")

    def connectFailed(self, reason: str) -> None:
        """
        Passive marking: a connect to this backend failed.

        The backend goes down at once. Without an active check it comes back
        by itself after C{failTimeout} seconds (a later failure restarts the
        hold, as nginx's C{max_fails=1}); with one, only the checker brings it
        back.

        @param reason: what failed, e.g. C{"connection refused"}.
        """
        self.connectFailures += 1
        self.markDown(f"connect failed: {reason}")
        if self.check is None:
            self._cancelFailHold()
            self._failHold = self.clock.callLater(self.failTimeout, self._failHoldOver)

    def stop(self) -> None:
        """
        Cancel this backend's pending timers (the fail hold).
        """
        self._cancelFailHold()

    def snapshot(self) -> Dict[str, Any]:
        """
        The state and counters of this backend as plain values, for stats
        and logs.
        """
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "state": self.state,
            "healthy": self.healthy,
            "admin": self.admin.value,
            "available": self.available(),
            "weight": self.weight,
            "backup": self.backup,
            "maxconn": self.maxconn,
            "sendProxy": self.sendProxy,
            "checked": self.check is not None,
            "active": self.active,
            "total": self.total,
            "connectFailures": self.connectFailures,
            "firstByteTimeouts": self.firstByteTimeouts,
            "bytesIn": self.bytesIn,
            "bytesOut": self.bytesOut,
            "peak": self.peak,
            "retries": self.retries,
            "redispatches": self.redispatches,
            "lastStateChange": self.lastStateChange,
        }

    def _failHoldOver(self) -> None:
        self._failHold = None
        self.markUp(f"fail timeout of {self.failTimeout}s expired")

    def _cancelFailHold(self) -> None:
        if self._failHold is not None:
            if self._failHold.active():
                self._failHold.cancel()
            self._failHold = None

    def _changed(self, old: str, new: str, reason: str) -> None:
        self.lastStateChange = self.clock.seconds()
        log.info(
            "Backend {backend} {old} -> {new}: {reason}",
            backend=self.name,
            old=old,
            new=new,
            reason=reason,
        )
        change = StateChange(self, old, new, reason)
        for observer in list(self._observers):
            observer(change)


class BackendPool:
    """
    The backends of one balancer in two tiers, normal and backup, each with
    its own scheduler.

    The backup tier serves only while no normal backend is available at all
    (all down, draining, in maintenance, weight 0 or full), as HAProxy's
    C{backup} servers do. Backends a caller excludes still count as available
    for that choice: excluding every normal backend gives C{None}, not a
    backup.

    @ivar backends: every backend, in configuration order.
    """

    def __init__(
        self,
        backends: Sequence[Backend],
        schedulerFactory: Callable[[Sequence[Backend]], IScheduler],
    ) -> None:
        """
        @param backends: every backend; the C{backup} flag sorts them into
            tiers.
        @param schedulerFactory: builds one tier's scheduler from its
            backends, e.g. L{tlbalance.schedulers.schedulerFor}C{("source")}.
        """
        self.backends: List[Backend] = list(backends)
        names = [b.name for b in self.backends]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"backend names must be unique: {', '.join(duplicates)}")
        self._schedulerFactory = schedulerFactory
        self._poolObservers: List[StateObserver] = []
        self._tiers()
        self._normalUp = self._tierUp(self._normal)
        for backend in self._normal:
            backend.addStateObserver(self._normalTierChanged)

    def _tiers(self) -> None:
        # Schedulers are built for a fixed list of backends: a backend added
        # or removed at run time gets fresh ones (a consistent-hash ring is
        # rebuilt with its points, and only its clients move).
        self._byName = {b.name: b for b in self.backends}
        self._normal = [b for b in self.backends if not b.backup]
        self._backup = [b for b in self.backends if b.backup]
        self._normalScheduler = self._schedulerFactory(self._normal)
        self._backupScheduler = self._schedulerFactory(self._backup)

    def addBackend(self, backend: Backend) -> None:
        """
        Take a new backend into its tier, after the others.

        @raise ValueError: when a backend of that name is already here.
        """
        if backend.name in self._byName:
            raise ValueError(f"there is already a backend called {backend.name!r}")
        self.backends.append(backend)
        self._tiers()
        if not backend.backup:
            backend.addStateObserver(self._normalTierChanged)
        for observer in self._poolObservers:
            backend.addStateObserver(observer)
        self._normalTierChanged(None)

    def removeBackend(self, name: str) -> Backend:
        """
        Take the backend called C{name} out of the pool, and cancel its
        timers. New connections no longer reach it; the caller makes sure
        it has none left.

        @return: the backend removed.
        @raise KeyError: when there is no backend called C{name}.
        """
        backend = self._byName[name]
        self.backends.remove(backend)
        self._tiers()
        if not backend.backup:
            backend.removeStateObserver(self._normalTierChanged)
        for observer in self._poolObservers:
            backend.removeStateObserver(observer)
        backend.stop()
        self._normalTierChanged(None)
        return backend

    def setScheduler(
        self, schedulerFactory: Callable[[Sequence[Backend]], IScheduler]
    ) -> None:
        """
        Pick the backends of new connections with schedulers built by
        C{schedulerFactory} (a reload's new algorithm); open connections
        stay where they are.
        """
        self._schedulerFactory = schedulerFactory
        self._tiers()

    def setBackup(self, name: str, backup: bool) -> None:
        """
        Move the backend called C{name} to the backup tier, or back to the
        normal one, keeping its place, its state and its connections.

        @raise KeyError: when there is no backend called C{name}.
        """
        backend = self._byName[name]
        if backend.backup == backup:
            return
        if backup:
            backend.removeStateObserver(self._normalTierChanged)
        else:
            backend.addStateObserver(self._normalTierChanged)
        backend.backup = backup
        self._tiers()
        self._normalTierChanged(None)

    def pick(
        self, clientKey: Optional[bytes], exclude: Container[Backend] = ()
    ) -> Optional[Backend]:
        """
        Choose the backend for a new connection.

        @param clientKey: the packed client IP, or C{None} for unix clients.
        @param exclude: backends not to choose (already tried).
        @return: a backend, or C{None} when none can take the connection.
        """
        if any(b.available() for b in self._normal):
            return self._normalScheduler.pick(clientKey, exclude)
        return self._backupScheduler.pick(clientKey, exclude)

    def byName(self, name: str) -> Backend:
        """
        The backend called C{name}.

        @raise KeyError: when there is none.
        """
        return self._byName[name]

    def setAdminState(
        self, name: str, state: Union[AdminState, str], reason: str = ""
    ) -> None:
        """
        Drain a backend, put it in maintenance or make it ready again.

        @raise KeyError: when there is no backend called C{name}.
        @raise ValueError: when C{state} names no admin state.
        """
        self.byName(name).setAdminState(state, reason)

    def addStateObserver(self, observer: StateObserver) -> None:
        """
        Observe state changes of every backend in the pool, including the
        ones added later.
        """
        self._poolObservers.append(observer)
        for backend in self.backends:
            backend.addStateObserver(observer)

    def stop(self) -> None:
        """
        Cancel every backend's pending timers.
        """
        for backend in self.backends:
            backend.stop()

    def snapshot(self) -> List[Dict[str, Any]]:
        """
        Every backend's L{Backend.snapshot}, in configuration order.
        """
        return [b.snapshot() for b in self.backends]

    @staticmethod
    def _tierUp(tier: Sequence[Backend]) -> bool:
        return any(b.healthy and b.admin is AdminState.READY for b in tier)

    def _normalTierChanged(self, change: Optional[StateChange]) -> None:
        # Say once, not per connection, that traffic moved between tiers.
        up = self._tierUp(self._normal)
        if up == self._normalUp:
            return
        self._normalUp = up
        if up:
            log.info("A normal backend is up again; the backup tier is idle")
        elif self._backup:
            log.warn("No normal backend is up; using the backup tier")
        else:
            log.warn("No backend is up")
