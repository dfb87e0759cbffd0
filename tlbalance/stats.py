# -*- test-case-name: tests.unit.test_stats -*-
"""
The running balancer's state and counters as one typed snapshot: what the
status page, C{/stats.json}, C{/metrics} and the runtime API all show.

Reading a snapshot costs the data plane nothing: it reads the counters the
relay already keeps. The one thing the relay does not keep, a connection
rate, comes from L{ConnectionRates}, which samples the totals once a
second. docs/balancer.md documents the schema (L{SCHEMA_VERSION}).
"""

from __future__ import annotations

import os
import resource
import sys
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Tuple

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

import tlsuite
from tlbalance.backends import UP

if TYPE_CHECKING:
    from tlbalance.backends import Backend
    from tlbalance.service import BalancerService

__all__ = [
    "RATE_WINDOW",
    "SCHEMA_VERSION",
    "CHECK_STATES",
    "ConnectionRates",
    "balancerStats",
    "processStats",
]

#: The version of the snapshot's layout; it grows when a field changes
#: meaning or goes away (new fields do not change it).
SCHEMA_VERSION = 1

#: Seconds of history the connection rates are computed over.
RATE_WINDOW = 10

#: What a backend's last health check says, in the snapshot's
#: C{check.status}: no check, none finished yet, passed, failed, or could
#: not run for a reason on the balancer's side.
CHECK_STATES = ("none", "pending", "passed", "failed", "local")

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _residentBytes() -> Optional[int]:
    # /proc/self/statm: size, resident, ... in pages (Linux). Elsewhere
    # the peak from getrusage is the best there is, in kilobytes on Linux
    # and BSD but bytes on macOS.
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def processStats() -> Dict[str, Any]:
    """
    The balancer process's own use of the machine.

    @return: C{pid}, C{cpuSeconds} (user plus system) and C{rssBytes} (the
        resident set now; C{None} where it cannot be read).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pid": os.getpid(),
        "cpuSeconds": usage.ru_utime + usage.ru_stime,
        "rssBytes": _residentBytes(),
    }


class ConnectionRates(Service):
    """
    Connections per second over the last L{RATE_WINDOW} seconds, for the
    balancer and each listener and backend.

    Once a second it copies the totals into a small ring; a rate is the
    difference between the newest and oldest copies over the time between
    them. Nothing is done per connection.
    """

    def __init__(
        self,
        clock: IReactorTime,
        balancerService: BalancerService,
        window: int = RATE_WINDOW,
    ) -> None:
        self.clock = clock
        self.balancerService = balancerService
        self._ring: Deque[Tuple[float, Dict[str, int]]] = deque(maxlen=window + 1)
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock

    def startService(self) -> None:
        """
        Sample now and then every second.
        """
        super().startService()
        self._loop.start(1.0, now=True)

    def stopService(self) -> None:
        """
        Stop sampling.
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def sample(self) -> None:
        """
        Copy the current totals into the ring.
        """
        service = self.balancerService
        totals = {"balancer": service.balancer.accepted}
        for listener in service.listeners:
            if listener.frontend is not None:
                totals["listener:" + listener.description] = listener.frontend.total
        for backend in service.balancer.pool.backends:
            totals["backend:" + backend.name] = backend.total
        self._ring.append((self.clock.seconds(), totals))

    def rate(self, key: str) -> float:
        """
        Connections per second of C{key} (C{"balancer"},
        C{"listener:ENDPOINT"} or C{"backend:NAME"}) over the ring; 0 until
        there are two samples.
        """
        if len(self._ring) < 2:
            return 0.0
        (start, first), (end, last) = self._ring[0], self._ring[-1]
        if end <= start or key not in last:
            return 0.0
        return max(0, last[key] - first.get(key, 0)) / (end - start)


def _checkStats(service: BalancerService, backend: Backend) -> Dict[str, Any]:
    checker = next((c for c in service.checkers if c.backend is backend), None)
    if checker is None:
        return {
            "status": "none",
            "kind": None,
            "reason": None,
            "time": None,
            "duration": None,
            "failedInARow": 0,
            "inter": None,
            "rise": None,
            "fall": None,
        }
    result = checker.lastResult
    if result is None:
        status = "pending"
    elif result.local:
        status = "local"
    else:
        status = "passed" if result.ok else "failed"
    return {
        "status": status,
        "kind": checker.check.kind,
        "reason": None if result is None else result.reason,
        "time": None if result is None else result.started,
        "duration": None if result is None else result.duration,
        "failedInARow": checker.failedInARow,
        "inter": checker.check.inter,
        "rise": checker.check.rise,
        "fall": checker.check.fall,
    }


def balancerStats(service: BalancerService, now: float) -> Dict[str, Any]:
    """
    Everything the balancer knows about itself now, as JSON-ready values of
    fixed types (numbers are numbers).

    @param service: the running balancer.
    @param now: the current time (the reactor's C{seconds()}), from which
        uptimes and times since state changes are counted.
    @return: C{{"schema": 1, "process": {...}, "balancer": {...},
        "listeners": [...], "backends": [...]}}; docs/balancer.md lists
        every field.
    """
    balancer = service.balancer
    rates: Optional[ConnectionRates] = service.rates
    started = service.startedAt
    process = processStats()
    process.update(
        version=tlsuite.__version__,
        startTime=started,
        uptime=None if started is None else max(0.0, now - started),
    )
    local = balancer.localErrors
    pool = balancer.pool
    listeners: List[Dict[str, Any]] = []
    for listener in service.listeners:
        frontend = listener.frontend
        listeners.append(
            {
                "name": listener.description,
                "listening": listener.port is not None,
                "current": 0 if frontend is None else frontend.current,
                "total": 0 if frontend is None else frontend.total,
                "rate": (
                    0.0
                    if rates is None
                    else rates.rate("listener:" + listener.description)
                ),
            }
        )
    backends: List[Dict[str, Any]] = []
    for backend in pool.backends:
        entry = backend.snapshot()
        entry["sinceStateChange"] = max(0.0, now - backend.lastStateChange)
        entry["rate"] = 0.0 if rates is None else rates.rate("backend:" + backend.name)
        entry["check"] = _checkStats(service, backend)
        backends.append(entry)
    return {
        "schema": SCHEMA_VERSION,
        "time": now,
        "process": process,
        "balancer": {
            "algorithm": service.config.algorithm,
            "current": len(balancer.connections),
            "total": balancer.accepted,
            "refused": balancer.refused,
            "rate": 0.0 if rates is None else rates.rate("balancer"),
            "activeServers": sum(
                1 for b in pool.backends if not b.backup and b.state == UP
            ),
            "backupServers": sum(
                1 for b in pool.backends if b.backup and b.state == UP
            ),
            "localErrors": {
                "connect": local.connectErrors,
                "accept": local.acceptErrors,
                "check": local.checkErrors,
                "pauses": local.pauses,
                "paused": local.paused,
            },
        },
        "listeners": listeners,
        "backends": backends,
    }
