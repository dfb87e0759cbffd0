# -*- test-case-name: tests.unit.test_metrics -*-
"""
The balancer's counters as Prometheus metrics: a prometheus_client
collector that reads a fresh L{tlbalance.stats.balancerStats} snapshot at
scrape time, so nothing is updated per connection.

Names follow HAProxy's exporter (promex) with the C{tlbalance_} prefix
where the concept is the same; docs/balancer.md lists every metric.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from tlbalance.stats import CHECK_STATES

__all__ = ["SERVER_STATES", "BalancerCollector", "metricsRegistry"]

#: The values of C{tlbalance_server_status}'s C{state} label.
SERVER_STATES = ("UP", "DOWN", "DRAIN", "MAINT")

Snapshot = Callable[[], Dict[str, Any]]


def _gauge(name: str, documentation: str, labels: List[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily("tlbalance_" + name, documentation, labels=labels)


def _counter(name: str, documentation: str, labels: List[str]) -> CounterMetricFamily:
    return CounterMetricFamily("tlbalance_" + name, documentation, labels=labels)


class BalancerCollector:
    """
    A custom collector: each scrape takes one snapshot and turns it into
    metric families.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        """
        @param snapshot: returns the current L{balancerStats} snapshot.
        """
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """
        The metrics of one fresh snapshot.
        """
        stats = self.snapshot()
        yield from _processMetrics(stats)
        yield from _frontendMetrics(stats)
        yield from _backendMetrics(stats)
        yield from _serverMetrics(stats)

    def describe(self) -> Iterator[Metric]:
        """
        Nothing up front: the registry must not take a snapshot when the
        collector is registered.
        """
        return iter(())


def metricsRegistry(snapshot: Snapshot) -> CollectorRegistry:
    """
    A registry of its own (not prometheus_client's global one) holding only
    a L{BalancerCollector} over C{snapshot}.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BalancerCollector(snapshot))
    return registry


def _processMetrics(stats: Dict[str, Any]) -> Iterator[Metric]:
    process = stats["process"]
    info = _gauge("build_info", "tlbalance's version.", ["version"])
    info.add_metric([process["version"]], 1)
    yield info
    if process["startTime"] is not None:
        start = _gauge(
            "process_start_time_seconds",
            "When the balancer started, in seconds since the epoch.",
            [],
        )
        start.add_metric([], process["startTime"])
        yield start
    cpu = _counter(
        "process_cpu_seconds", "User and system CPU time the balancer used.", []
    )
    cpu.add_metric([], process["cpuSeconds"])
    yield cpu
    if process["rssBytes"] is not None:
        rss = _gauge(
            "process_resident_memory_bytes", "The balancer's resident memory.", []
        )
        rss.add_metric([], process["rssBytes"])
        yield rss


def _frontendMetrics(stats: Dict[str, Any]) -> Iterator[Metric]:
    current = _gauge(
        "frontend_current_sessions", "Client connections open now.", ["listener"]
    )
    total = _counter("frontend_sessions", "Client connections accepted.", ["listener"])
    for listener in stats["listeners"]:
        current.add_metric([listener["name"]], listener["current"])
        total.add_metric([listener["name"]], listener["total"])
    yield current
    yield total


def _backendMetrics(stats: Dict[str, Any]) -> Iterator[Metric]:
    balancer = stats["balancer"]
    local = balancer["localErrors"]
    for family, name, documentation, value in [
        (_gauge, "backend_active_servers", "Normal backends UP.", "activeServers"),
        (_gauge, "backend_backup_servers", "Backup backends UP.", "backupServers"),
        (_gauge, "backend_current_sessions", "Client connections open now.", "current"),
        (_counter, "backend_sessions", "Client connections accepted.", "total"),
        (
            _counter,
            "backend_no_server",
            "Client connections closed because no backend was available.",
            "refused",
        ),
    ]:
        metric: Any = family(name, documentation, [])
        metric.add_metric([], balancer[value])
        yield metric
    local_ = _counter(
        "local_errors",
        "Failures for want of the balancer's own resources (descriptors, "
        "memory, ports), by what failed.",
        ["operation"],
    )
    for operation in ("connect", "accept", "check"):
        local_.add_metric([operation], local[operation])
    yield local_


# (kind, name, help, snapshot key) of the per-backend metrics with one value.
_SERVER_VALUES = [
    (_gauge, "server_current_sessions", "Connections open now.", "active"),
    (_gauge, "server_max_sessions", "The most connections open at once.", "peak"),
    (
        _gauge,
        "server_limit_sessions",
        "The connection limit (maxconn); 0 is none.",
        "maxconn",
    ),
    (_counter, "server_sessions", "Connections (and attempts) made.", "total"),
    (_counter, "server_bytes_in", "Bytes relayed from clients.", "bytesIn"),
    (_counter, "server_bytes_out", "Bytes relayed to clients.", "bytesOut"),
    (
        _counter,
        "server_connection_errors",
        "Connect attempts that failed.",
        "connectFailures",
    ),
    (
        _counter,
        "server_retry_warnings",
        "Failed connect attempts that were tried again.",
        "retries",
    ),
    (
        _counter,
        "server_redispatch_warnings",
        "Failed connect attempts tried again on another backend.",
        "redispatches",
    ),
    (
        _counter,
        "server_first_byte_timeouts",
        "Connections closed waiting for the first byte of a response.",
        "firstByteTimeouts",
    ),
    (_gauge, "server_weight", "The weight (0 to 256).", "weight"),
    (
        _gauge,
        "server_check_last_change_seconds",
        "Seconds since the last state change.",
        "sinceStateChange",
    ),
]


def _serverMetrics(stats: Dict[str, Any]) -> Iterator[Metric]:
    backends = stats["backends"]
    status = _gauge(
        "server_status",
        "The backend's state: 1 for the current one.",
        ["server", "state"],
    )
    for backend in backends:
        for state in SERVER_STATES:
            status.add_metric([backend["name"], state], int(backend["state"] == state))
    yield status
    for family, name, documentation, key in _SERVER_VALUES:
        metric: Any = family(name, documentation, ["server"])
        for backend in backends:
            metric.add_metric([backend["name"]], backend[key])
        yield metric
    checkStatus = _gauge(
        "server_check_status",
        "The last health check's outcome: 1 for the current one.",
        ["server", "state"],
    )
    duration = _gauge(
        "server_check_duration_seconds",
        "How long the last health check took.",
        ["server"],
    )
    failures = _gauge(
        "server_check_failures_in_a_row",
        "Health checks failed since the last one that passed.",
        ["server"],
    )
    for backend in backends:
        check = backend["check"]
        if check["status"] == "none":
            continue
        for state in CHECK_STATES[1:]:
            checkStatus.add_metric(
                [backend["name"], state], int(check["status"] == state)
            )
        if check["duration"] is not None:
            duration.add_metric([backend["name"]], check["duration"])
        failures.add_metric([backend["name"]], check["failedInARow"])
    yield checkStatus
    yield duration
    yield failures
