"""
A balancer service with stats, built in a L{MemoryReactorClock}, for the
stats, metrics and status page tests.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tlbalance.health import CheckResult
from tlbalance.service import BalancerService, makeBalancerService
from tlbalance.tap import Options

#: A start time well after the epoch, so times read like real ones.
START = 1_800_000_000.0


def startedBalancer(
    testCase: SynchronousTestCase, *extra: str
) -> Tuple[BalancerService, MemoryReactorClock]:
    """
    A started balancer with two checked backends (C{a}, C{b<i>&amp;}) and
    one stats listener, in a memory reactor whose clock reads L{START}.
    """
    options = Options()
    options.parseOptions(
        [
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--backend",
            "127.0.0.1:1",
            "--backend",
            "127.0.0.1:2",
            "--check",
            "tcp",
            "--check-inter",
            "0.2",
            "--check-fall",
            "2",
            "--stats",
            "tcp:8404:interface=127.0.0.1",
            "--drain-timeout",
            "0",
            *extra,
        ]
    )
    reactor = MemoryReactorClock()
    reactor.advance(START)
    service = makeBalancerService(options["config"], reactor)
    service.startService()
    testCase.addCleanup(service.stopService)
    # The tests report check results themselves: no check of their own
    # may time out in the memory reactor as its clock moves.
    for checker in service.checkers:
        checker.stopService()
    return service, reactor


def failCheck(service: BalancerService, index: int, at: float) -> None:
    """
    Report a failed check of backend C{index} to its checker, as many times
    as its C{fall} asks, so it goes DOWN.
    """
    checker = service.checkers[index]
    for _ in range(checker.check.fall):
        checker._checkFinished(CheckResult(False, "connection refused", at, 0.002))


def names(items: List[Any]) -> List[str]:
    """
    The C{name} of each item.
    """
    return [item["name"] for item in items]
