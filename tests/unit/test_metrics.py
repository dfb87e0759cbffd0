"""
L{tlbalance.metrics}: the Prometheus metrics of a running balancer, read
back with prometheus_client's own text parser.
"""

from __future__ import annotations

from typing import Dict, Tuple

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from tests.unit._statsfixture import START, failCheck, startedBalancer
from tlbalance.metrics import metricsRegistry
from tlbalance.service import BalancerService
from tlbalance.stats import balancerStats

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]

#: Every family, with its type.
FAMILIES = {
    "tlbalance_build_info": "gauge",
    "tlbalance_process_start_time_seconds": "gauge",
    "tlbalance_process_cpu_seconds": "counter",
    "tlbalance_process_resident_memory_bytes": "gauge",
    "tlbalance_frontend_current_sessions": "gauge",
    "tlbalance_frontend_sessions": "counter",
    "tlbalance_backend_active_servers": "gauge",
    "tlbalance_backend_backup_servers": "gauge",
    "tlbalance_backend_current_sessions": "gauge",
    "tlbalance_backend_sessions": "counter",
    "tlbalance_backend_no_server": "counter",
    "tlbalance_local_errors": "counter",
    "tlbalance_server_status": "gauge",
    "tlbalance_server_current_sessions": "gauge",
    "tlbalance_server_max_sessions": "gauge",
    "tlbalance_server_limit_sessions": "gauge",
    "tlbalance_server_sessions": "counter",
    "tlbalance_server_bytes_in": "counter",
    "tlbalance_server_bytes_out": "counter",
    "tlbalance_server_connection_errors": "counter",
    "tlbalance_server_retry_warnings": "counter",
    "tlbalance_server_redispatch_warnings": "counter",
    "tlbalance_server_first_byte_timeouts": "counter",
    "tlbalance_server_weight": "gauge",
    "tlbalance_server_check_last_change_seconds": "gauge",
    "tlbalance_server_check_status": "gauge",
    "tlbalance_server_check_duration_seconds": "gauge",
    "tlbalance_server_check_failures_in_a_row": "gauge",
}


def scrape(service: BalancerService) -> Tuple[Dict[str, str], Samples]:
    """
    Scrape the balancer's metrics as Prometheus would, and parse them.

    @return: each family's type by name, and each sample's value by name
        and sorted labels.
    """
    reactor = service.balancer.clock
    registry = metricsRegistry(lambda: balancerStats(service, reactor.seconds()))
    text = generate_latest(registry).decode("utf-8")
    types: Dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples


class MetricsTests(SynchronousTestCase):
    """
    The metrics' names, types, labels and values.
    """

    def test_families(self) -> None:
        """
        Every documented family is there with its type, and no other.
        """
        service, reactor = startedBalancer(self)
        failCheck(service, 0, reactor.seconds())
        types, _ = scrape(service)
        self.assertEqual(types, FAMILIES)

    def test_values(self) -> None:
        """
        The values are the balancer's counters and states at scrape time.
        """
        service, reactor = startedBalancer(self)
        reactor.advance(2)
        failCheck(service, 0, reactor.seconds())
        reactor.advance(1.5)
        backend = service.balancer.pool.backends[1]
        backend.connectionStarted()
        backend.bytesIn, backend.bytesOut = 100, 5000
        backend.connectFailures, backend.retries, backend.redispatches = 4, 3, 1
        service.balancer.accepted = 9
        frontend = service.listeners[0].frontend
        assert frontend is not None
        frontend.current, frontend.total = 1, 9
        _, samples = scrape(service)
        down, up = "127.0.0.1:1", "127.0.0.1:2"

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        self.assertEqual(value("tlbalance_server_status", server=down, state="DOWN"), 1)
        self.assertEqual(value("tlbalance_server_status", server=down, state="UP"), 0)
        self.assertEqual(value("tlbalance_server_status", server=up, state="UP"), 1)
        self.assertEqual(
            value("tlbalance_server_check_status", server=down, state="failed"), 1
        )
        self.assertEqual(
            value("tlbalance_server_check_status", server=up, state="pending"), 1
        )
        self.assertEqual(
            value("tlbalance_server_check_last_change_seconds", server=down), 1.5
        )
        self.assertEqual(
            value("tlbalance_server_check_duration_seconds", server=down), 0.002
        )
        self.assertEqual(
            value("tlbalance_server_check_failures_in_a_row", server=down), 2
        )
        self.assertEqual(value("tlbalance_server_current_sessions", server=up), 1)
        self.assertEqual(value("tlbalance_server_sessions_total", server=up), 1)
        self.assertEqual(value("tlbalance_server_bytes_in_total", server=up), 100)
        self.assertEqual(value("tlbalance_server_bytes_out_total", server=up), 5000)
        self.assertEqual(
            value("tlbalance_server_connection_errors_total", server=up), 4
        )
        self.assertEqual(value("tlbalance_server_retry_warnings_total", server=up), 3)
        self.assertEqual(
            value("tlbalance_server_redispatch_warnings_total", server=up), 1
        )
        self.assertEqual(value("tlbalance_server_weight", server=up), 1)
        self.assertEqual(value("tlbalance_backend_active_servers"), 1)
        self.assertEqual(value("tlbalance_backend_sessions_total"), 9)
        listener = "tcp:0:interface=127.0.0.1"
        self.assertEqual(
            value("tlbalance_frontend_current_sessions", listener=listener), 1
        )
        self.assertEqual(
            value("tlbalance_frontend_sessions_total", listener=listener), 9
        )
        self.assertEqual(value("tlbalance_process_start_time_seconds"), START)
        self.assertGreater(value("tlbalance_process_cpu_seconds_total"), 0)
        self.assertGreater(value("tlbalance_process_resident_memory_bytes"), 0)

    def test_labelsEscaped(self) -> None:
        """
        A backend name with quotes, backslashes and a newline comes back
        from the parser as it was.
        """
        name = 'we"ird\\name\nx'
        service, _ = startedBalancer(self)
        service.balancer.pool.backends[0].name = name
        _, samples = scrape(service)
        self.assertEqual(samples[("tlbalance_server_weight", (("server", name),))], 1)
