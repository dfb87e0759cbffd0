# -*- test-case-name: tests.unit.test_runtime -*-
"""
Changes to a running balancer's backends (admin state, weight, added and
removed servers), made by an operator through the runtime API
(L{tlbalance.control}), each recorded so that C{show servers} can say which
values came from it and a reload can keep them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Set

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from tlbalance._loglevel import balancerLogger
from tlbalance.backends import MAX_WEIGHT, AdminState, Backend
from tlbalance.config import ConfigError, backendFromTable
from tlbalance.health import HealthChecker
from tlbalance.relay import BackendConnector
from tlbalance.stats import balancerStats

if TYPE_CHECKING:
    from tlbalance.service import BalancerService

log = balancerLogger("tlbalance.runtime")


class RuntimeChangeError(Exception):
    """
    A runtime change that cannot be made; the message is one line for the
    operator.
    """


def describeAddress(address: object) -> str:
    """
    One word for where a listener listens: C{127.0.0.1:8080},
    C{[::1]:8080}, or a unix socket's path.
    """
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            return name.decode("utf-8", "replace")
        return str(name)
    return str(address)


def valueFromText(text: str) -> Any:
    """
    Read a C{key=value} word's value as a TOML file would type it:
    C{true}/C{false}, an integer, a number, else the text itself.
    """
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class RuntimeState:
    """
    The runtime API's view of one L{BalancerService}: what C{show} reads and
    what C{set}, C{add} and C{del} change.

    @ivar service: the balancer.
    @ivar overrides: for each backend name, the values the runtime API set
        (C{"state"}, C{"weight"}, C{"added"}: the backend's table).
    @ivar deleted: names of configured backends the runtime API removed.
    @ivar reloader: re-reads the configuration file and applies it
        (L{tlbalance.reload.Reloader.reload}), or C{None} when the balancer
        has no file to re-read.
    """

    def __init__(self, service: BalancerService) -> None:
        self.service = service
        self.overrides: Dict[str, Dict[str, Any]] = {}
        self.deleted: Set[str] = set()
        self.reloader: Optional[Callable[[str], List[str]]] = None

    @property
    def _pool(self) -> Any:
        return self.service.balancer.pool

    def _backend(self, name: str) -> Backend:
        try:
            backend: Backend = self._pool.byName(name)
        except KeyError:
            raise RuntimeChangeError(f"no server called {name!r}") from None
        return backend

    def _checker(self, backend: Backend) -> Optional[HealthChecker]:
        for checker in self.service.checkers:
            if checker.backend is backend:
                return checker
        return None

    def _record(self, name: str, key: str, value: Any) -> None:
        self.overrides.setdefault(name, {})[key] = value

    def servers(self) -> List[Dict[str, Any]]:
        """
        Every backend's state and counters (L{Backend.snapshot}), each with
        C{runtime}: the names of the values the runtime API set.
        """
        rows = []
        for backend in self._pool.backends:
            row = backend.snapshot()
            row["runtime"] = sorted(self.overrides.get(backend.name, {}))
            rows.append(row)
        return rows

    def listeners(self) -> List[Dict[str, Any]]:
        """
        Each listen endpoint as configured, and the address it is bound to
        (C{None} while not listening).
        """
        rows = []
        for listener in self.service.listeners:
            port = listener.port
            rows.append(
                {
                    "listen": listener.description,
                    "address": (
                        None if port is None else describeAddress(port.getHost())
                    ),
                }
            )
        return rows

    def stat(self) -> Dict[str, Any]:
        """
        The balancer's state and counters now: the snapshot the stats page
        shows (L{tlbalance.stats.balancerStats}).
        """
        return balancerStats(self.service, self.service.balancer.clock.seconds())

    def setServerState(self, name: str, state: str, who: str) -> str:
        """
        Make a backend ready, draining or in maintenance.

        Draining and maintenance both stop new connections and leave the
        open ones to finish; maintenance also stops the backend's health
        checks, which ready starts again (a backend that was down stays
        down until they pass).

        @param who: who asked, for the log (C{"uid 1000"}).
        @return: what was done, in one line.
        @raise RuntimeChangeError: no such backend or state.
        """
        backend = self._backend(name)
        try:
            admin = AdminState.fromName(state)
        except ValueError as e:
            raise RuntimeChangeError(str(e)) from None
        old = backend.admin
        backend.setAdminState(admin, f"set by {who} through the runtime API")
        checker = self._checker(backend)
        if checker is not None and self.service.running:
            if admin is AdminState.MAINT and checker.running:
                checker.stopService()
            elif admin is not AdminState.MAINT and not checker.running:
                checker.startService()
        self._record(name, "state", admin.value)
        if old is admin:
            return f"server {name} was already {admin.value}"
        return f"server {name}: {old.value} -> {admin.value}"

    def setServerWeight(self, name: str, weight: int, who: str) -> str:
        """
        Change a backend's weight; 0 takes it out of the choice for new
        connections while it stays up and checked (as in HAProxy).

        @raise RuntimeChangeError: no such backend, or out of range.
        """
        backend = self._backend(name)
        if not 0 <= weight <= MAX_WEIGHT:
            raise RuntimeChangeError(
                f"weight must be within 0..{MAX_WEIGHT}, not {weight}"
            )
        old = backend.weight
        backend.weight = weight
        self._record(name, "weight", weight)
        log.info(
            "Backend {backend} weight {old} -> {new}: set by {who} through the "
            "runtime API",
            backend=name,
            old=old,
            new=weight,
            who=who,
        )
        return f"server {name}: weight {old} -> {weight}"

    def addServer(
        self, name: str, endpoint: str, options: Mapping[str, str], who: str
    ) -> str:
        """
        Add a backend, built from the keys of a C{[[backend]]} table (given
        as text, typed as in TOML), ready and, if it has a check, checked.

        @raise RuntimeChangeError: the name is taken, or a key is wrong
            (every problem in one line).
        """
        if "name" in options or "endpoint" in options:
            raise RuntimeChangeError(
                "give the name and endpoint as the first two words, not as keys"
            )
        if any(b.name == name for b in self._pool.backends):
            raise RuntimeChangeError(f"there is already a server called {name!r}")
        table: Dict[str, Any] = {"name": name, "endpoint": endpoint}
        table.update({key: valueFromText(text) for key, text in options.items()})
        config = self.service.config
        try:
            backendConfig = backendFromTable(table, label=f"server {name}")
        except ConfigError as e:
            raise RuntimeChangeError("; ".join(str(e).splitlines())) from None
        reactor = self.service.balancer.clock
        try:
            connector = BackendConnector.fromString(
                reactor, backendConfig.endpoint, config.connectTimeout
            )
        except (ValueError, TypeError) as e:
            raise RuntimeChangeError(f"endpoint: {e}") from None
        backend = Backend.fromConfig(
            backendConfig,
            reactor,
            failTimeout=config.failTimeout,
            sendProxy=config.sendProxy,
        )
        self.service.balancer.connectors[name] = connector
        self._pool.addBackend(backend)
        if backendConfig.check is not None:
            checker = HealthChecker(
                reactor,
                backend,
                backendConfig.check,
                connect=connector.connectWithPreamble,
                sendProxy=backend.sendProxy,
                localErrors=self.service.balancer.localErrors,
            )
            self.service.checkers.append(checker)
            if self.service.running:
                checker.startService()
        self.deleted.discard(name)
        self._record(name, "added", dict(table))
        log.info(
            "Backend {backend} added ({endpoint}) by {who} through the runtime API",
            backend=name,
            endpoint=backendConfig.endpoint,
            who=who,
        )
        return f"server {name} added"

    def delServer(self, name: str, who: str) -> str:
        """
        Remove a backend that is draining or in maintenance and has no
        connection left.

        @raise RuntimeChangeError: no such backend, still ready, or still
            busy.
        """
        backend = self._backend(name)
        if backend.admin is AdminState.READY:
            raise RuntimeChangeError(
                f"server {name} is ready: set its state to drain or maint first"
            )
        if backend.active:
            raise RuntimeChangeError(
                f"server {name} still has {backend.active} connection(s); "
                "wait for them to finish"
            )
        checker = self._checker(backend)
        if checker is not None:
            if checker.running:
                checker.stopService()
            self.service.checkers.remove(checker)
        self._pool.removeBackend(name)
        del self.service.balancer.connectors[name]
        if "added" not in self.overrides.pop(name, {}):
            self.deleted.add(name)
        log.info(
            "Backend {backend} removed by {who} through the runtime API",
            backend=name,
            who=who,
        )
        return f"server {name} removed"

    def reload(self, who: str) -> List[str]:
        """
        Re-read the configuration file and apply what changed.

        @return: one line per change.
        @raise RuntimeChangeError: there is no file, or the new
            configuration is invalid (every problem in the line); the
            running one stays in force.
        """
        if self.reloader is None:
            raise RuntimeChangeError(
                "nothing to reload: the balancer was started without --config"
            )
        from tlbalance.reload import ReloadError

        try:
            return self.reloader(who)
        except ReloadError as e:
            raise RuntimeChangeError(
                "reload refused, the running configuration stays: "
                + "; ".join(e.problems)
            ) from None

    def forgetAdded(self, name: str) -> None:
        """
        A server added through the runtime API is now in the configuration
        file: it is a configured server from now on.
        """
        override = self.overrides.get(name)
        if override is not None:
            override.pop("added", None)
            if not override:
                del self.overrides[name]
