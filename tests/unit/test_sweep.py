# -*- test-case-name: tests.unit.test_sweep -*-
"""
Tests for L{tlsession.stores.sweep.SessionSweepService}: sweeping on a
clock, in bounded batches, through errors, leaving no timer behind.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_sqlstore import inlineSQLiteStore, rows, temporaryDirectory
from tlsession.interfaces import StoreUnavailableError
from tlsession.stores._checks import InvalidArgumentError
from tlsession.stores.sweep import SessionSweepService


class FakeSweepable:
    """
    A store whose C{sweep} answers from a script: numbers, exceptions or
    Deferreds the test fires.
    """

    def __init__(self, answers: List[Any]) -> None:
        self.answers = answers
        self.calls: List[int] = []

    def sweep(self, maxRows: int) -> Deferred[int]:
        self.calls.append(maxRows)
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)


class SessionSweepServiceTests(SynchronousTestCase):
    """
    L{SessionSweepService} sweeps on its clock, in bounded batches, survives
    errors and leaves no timer behind.
    """

    def service(
        self, answers: List[Any], **kw: Any
    ) -> Tuple[SessionSweepService, FakeSweepable, Clock, List[Dict[str, Any]]]:
        clock = Clock()
        store = FakeSweepable(answers)
        service = SessionSweepService(store, clock, **kw)
        events: List[Dict[str, Any]] = []
        service.log = Logger(observer=events.append)
        return service, store, clock, events

    def test_sweepsEveryInterval(self) -> None:
        """
        Nothing is swept at start; each interval runs one sweep, then stopping
        leaves no pending timer.
        """
        service, store, clock, _ = self.service([3, 0], interval=10, batchSize=100)
        service.startService()
        self.assertEqual(store.calls, [])
        clock.advance(10)
        self.assertEqual(store.calls, [100])
        clock.advance(10)
        self.assertEqual(store.calls, [100, 100])
        self.assertEqual(service.removed, 3)
        self.assertIsNone(service.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_fullBatchesRepeatUpToTheLimit(self) -> None:
        """
        While batches come back full the tick sweeps again, at most
        C{maxBatches} times; the rest waits for the next tick.
        """
        service, store, clock, _ = self.service(
            [5, 5, 5, 5, 2], interval=10, batchSize=5, maxBatches=3
        )
        service.startService()
        clock.advance(10)
        self.assertEqual((len(store.calls), service.removed), (3, 15))
        clock.advance(10)
        self.assertEqual((len(store.calls), service.removed), (5, 22))
        service.stopService()

    def test_errorsAreLoggedAndTheNextTickRetries(self) -> None:
        """
        An unavailable store is a warning, any other error is logged with its
        traceback, and sweeping goes on at the next interval.
        """
        service, store, clock, events = self.service(
            [StoreUnavailableError("database down"), RuntimeError("bug"), 4],
            interval=10,
        )
        service.startService()
        clock.advance(10)
        clock.advance(10)
        clock.advance(10)
        self.assertEqual(len(store.calls), 3)
        self.assertEqual(service.removed, 4)
        self.assertIn("database down", events[0]["error"])
        self.assertIsInstance(events[1]["log_failure"].value, RuntimeError)
        service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopWaitsForASweepInProgress(self) -> None:
        """
        Stopping during a sweep returns a L{Deferred} that fires once the
        sweep is done, and no further sweep starts.
        """
        pending: Deferred[int] = Deferred()
        service, store, clock, _ = self.service([pending, 5], interval=10, batchSize=5)
        service.startService()
        clock.advance(10)
        stopped = service.stopService()
        assert stopped is not None
        self.assertNoResult(stopped)
        pending.callback(5)
        self.successResultOf(stopped)
        self.assertEqual(store.calls, [5])
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(100)
        self.assertEqual(store.calls, [5])

    def test_sweepsARealStore(self) -> None:
        """
        Run against a SQLite store, the service removes expired sessions and
        keeps live ones.
        """
        directory = temporaryDirectory(self)
        path = os.path.join(directory, "sessions.sqlite")
        clock = Clock()
        store = inlineSQLiteStore(self, path, clock)
        old = [self.successResultOf(store.create(idleTimeout=5)) for _ in range(3)]
        live = self.successResultOf(store.create())
        service = SessionSweepService(store, clock, interval=30, batchSize=2)
        service.startService()
        clock.advance(30)
        self.assertEqual(rows(path), [(live.sessionID, 1, b"")])
        self.assertEqual(service.removed, len(old))
        service.stopService()

    def test_badArguments(self) -> None:
        """
        A zero interval or batch size, or a batch size that is not an
        integer, is refused.
        """
        for kw in [
            {"interval": 0},
            {"batchSize": 0},
            {"maxBatches": 0},
            {"batchSize": 1.5},
        ]:
            with self.assertRaises(InvalidArgumentError):
                SessionSweepService(FakeSweepable([]), Clock(), **kw)
