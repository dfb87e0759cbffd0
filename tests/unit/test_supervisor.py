"""
Tests for L{tlbalance.supervisor}: the app-worker state machine driven by a
fake spawner, fake health checks, a fake rotation and a Clock.
"""

from __future__ import annotations

import random
from typing import Dict, List, Optional, Sequence, Tuple, cast

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tlbalance.supervisor import (
    AppSettings,
    AppSupervisor,
    ReplacementError,
    Worker,
)


class FakeProcess:
    """
    A process that records signals and ends when the test says so.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: List[str] = []
        self.lines: List[str] = []
        self._exited: Deferred[str] = Deferred()
        self.running = True

    def signal(self, name: str) -> None:
        self.signals.append(name)

    def whenExited(self) -> Deferred[str]:
        return self._exited

    def lastLines(self) -> Sequence[str]:
        return self.lines

    def exit(self, reason: str = "exit code 0") -> None:
        self.running = False
        self._exited.callback(reason)


class FakeSpawner:
    """
    Hands out L{FakeProcess}es with growing pids.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.spawned: List[Tuple[Worker, FakeProcess]] = []
        self.times: List[float] = []
        self.error: Optional[Exception] = None
        self.lines: List[str] = []

    def spawn(self, worker: Worker) -> FakeProcess:
        if self.error is not None:
            raise self.error
        process = FakeProcess(1000 + len(self.spawned))
        process.lines = list(self.lines)
        self.spawned.append((worker, process))
        self.times.append(self.clock.seconds())
        return process

    def running(self) -> List[Tuple[Worker, FakeProcess]]:
        return [(w, p) for w, p in self.spawned if p.running]

    def last(self) -> Tuple[Worker, FakeProcess]:
        return self.spawned[-1]


class FakeHealth:
    def __init__(self) -> None:
        self.watched: List[Worker] = []

    def watch(self, worker: Worker) -> None:
        self.watched.append(worker)

    def unwatch(self, worker: Worker) -> None:
        self.watched.remove(worker)


class FakeRotation:
    """
    Records joins, drains and removals; a drain ends when the test fires it.
    """

    def __init__(self) -> None:
        self.members: List[Worker] = []
        self.events: List[Tuple[str, int]] = []
        self.drains: Dict[int, Deferred[None]] = {}

    def join(self, worker: Worker) -> None:
        self.members.append(worker)
        self.events.append(("join", worker.serial))

    def drain(self, worker: Worker) -> Deferred[None]:
        self.members.remove(worker)
        self.events.append(("drain", worker.serial))
        d: Deferred[None] = Deferred()
        self.drains[worker.serial] = d
        return d

    def remove(self, worker: Worker) -> None:
        if worker in self.members:
            self.members.remove(worker)
        self.events.append(("remove", worker.serial))


class SupervisorTestsMixin:
    clock: Clock
    spawner: FakeSpawner
    health: FakeHealth
    rotation: FakeRotation

    def makeSupervisor(self, **settings: object) -> AppSupervisor:
        self.clock = Clock()
        self.spawner = FakeSpawner(self.clock)
        self.health = FakeHealth()
        self.rotation = FakeRotation()
        values: Dict[str, object] = {
            "name": "site",
            "workers": 2,
            "startTimeout": 10.0,
            "stopTimeout": 5.0,
        }
        values.update(settings)
        return AppSupervisor(
            AppSettings(**values),  # type: ignore[arg-type]
            self.spawner,
            self.health,
            self.rotation,
            self.clock,
            random.Random(12),
        )

    def startHealthy(self, supervisor: AppSupervisor) -> None:
        supervisor.start()
        for worker, _ in list(self.spawner.spawned):
            supervisor.workerHealthy(worker)

    def serving(self) -> List[int]:
        return sorted(w.serial for w in self.rotation.members)

    def captureLog(self) -> List[LogEvent]:
        events: List[LogEvent] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)  # type: ignore[attr-defined]
        return events


class StartTests(SupervisorTestsMixin, SynchronousTestCase):
    """
    Starting workers and gating them by their health checks.
    """

    def test_startsWorkersOutOfRotation(self) -> None:
        """
        C{start} spawns the wanted number of workers, numbered from 1, and
        none gets a connection before its health check passes.
        """
        supervisor = self.makeSupervisor(workers=3)
        supervisor.start()
        self.assertEqual([w.number for w, _ in self.spawner.spawned], [1, 2, 3])
        self.assertEqual(len(self.health.watched), 3)
        self.assertEqual(self.rotation.members, [])
        first = self.spawner.spawned[0][0]
        supervisor.workerHealthy(first)
        self.assertEqual(self.rotation.members, [first])

    def test_startTimeoutKillsAndRetries(self) -> None:
        """
        A worker not healthy within C{start-timeout} is killed, and a new one
        is started after the first backoff delay.
        """
        supervisor = self.makeSupervisor(workers=1)
        supervisor.start()
        worker, process = self.spawner.last()
        self.clock.advance(9.9)
        self.assertEqual(process.signals, [])
        self.clock.advance(0.1)
        self.assertEqual(process.signals, ["KILL"])
        process.exit("signal KILL")
        self.assertEqual(len(self.spawner.spawned), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.spawner.spawned), 2)
        self.assertEqual(self.spawner.last()[0].number, 1)
        self.assertEqual(self.rotation.members, [])

    def test_spawnErrorCountsAsFailure(self) -> None:
        """
        A worker whose process cannot be started at all is retried with
        backoff like one that exits at once.
        """
        supervisor = self.makeSupervisor(workers=1)
        self.spawner.error = OSError("no such file")
        supervisor.start()
        self.clock.advance(0)
        self.assertEqual(supervisor.status().failures, 1)
        self.spawner.error = None
        self.clock.advance(1)
        self.assertEqual(len(self.spawner.spawned), 1)

    def test_status(self) -> None:
        """
        C{status} shows each worker's number, pid, state and age.
        """
        supervisor = self.makeSupervisor(workers=2)
        supervisor.start()
        supervisor.workerHealthy(self.spawner.spawned[0][0])
        self.clock.advance(3)
        status = supervisor.status()
        self.assertEqual(
            (status.name, status.state, status.wanted), ("site", "running", 2)
        )
        self.assertEqual(
            [(w.number, w.pid, w.state, w.age) for w in status.workers],
            [(1, 1000, "healthy", 3.0), (2, 1001, "starting", 3.0)],
        )


class CrashTests(SupervisorTestsMixin, SynchronousTestCase):
    """
    Exits, backoff, FAILED and hangs.
    """

    def test_crashReplacedAtOnce(self) -> None:
        """
        A healthy worker that exits leaves the rotation and is replaced at
        once under the same number.
        """
        supervisor = self.makeSupervisor(workers=2)
        self.startHealthy(supervisor)
        worker, process = self.spawner.spawned[0]
        process.exit("signal KILL")
        self.assertNotIn(worker, self.rotation.members)
        self.assertEqual(len(self.spawner.spawned), 3)
        new = self.spawner.last()[0]
        self.assertEqual(new.number, 1)
        supervisor.workerHealthy(new)
        self.assertIn(new, self.rotation.members)

    def test_backoffDoublesToCeiling(self) -> None:
        """
        Workers that keep exiting without becoming healthy are restarted
        after 1, 2, 4, ... seconds, never more than 60.
        """
        supervisor = self.makeSupervisor(workers=1, startTimeout=100.0)
        supervisor.start()
        delays = []
        for _ in range(9):
            # Slow enough that fewer than 5 fall within a minute.
            self.clock.advance(20)
            exitedAt = self.clock.seconds()
            self.spawner.last()[1].exit("exit code 1")
            count = len(self.spawner.spawned)
            while len(self.spawner.spawned) == count:
                self.clock.advance(1)
            delays.append(self.spawner.times[-1] - exitedAt)
        self.assertEqual(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60])
        self.assertEqual(supervisor.state, "running")

    def test_failedAfterFiveFastExits(self) -> None:
        """
        Five exits within 60 s without becoming healthy mark the app
        FAILED, loudly and with the worker's last output; it is then retried
        every 60 s, and a healthy worker clears the mark.
        """
        events = self.captureLog()
        supervisor = self.makeSupervisor(workers=1)
        self.spawner.lines = ["ImportError: no module named site"]
        supervisor.start()
        for delay in [1, 2, 4, 8]:
            self.spawner.last()[1].exit("exit code 1")
            self.assertEqual(supervisor.state, "running")
            self.clock.advance(delay)
        self.spawner.last()[1].exit("exit code 1")
        self.assertEqual(supervisor.state, "FAILED")
        self.assertEqual(supervisor.status().state, "FAILED")
        critical = [e for e in events if e["log_level"].name == "critical"]
        self.assertEqual(len(critical), 1)
        self.assertEqual(critical[0]["app"], "site")
        self.assertIn("ImportError", critical[0]["output"])
        count = len(self.spawner.spawned)
        self.clock.advance(59)
        self.assertEqual(len(self.spawner.spawned), count)
        self.clock.advance(1)
        self.assertEqual(len(self.spawner.spawned), count + 1)
        self.spawner.last()[1].exit("exit code 1")
        self.clock.advance(60)
        supervisor.workerHealthy(self.spawner.last()[0])
        self.assertEqual(supervisor.state, "running")

    def test_hangDrainedStoppedReplaced(self) -> None:
        """
        A healthy worker whose checks fail is drained, sent TERM once its
        connections are done, and replaced when it exits.
        """
        supervisor = self.makeSupervisor(workers=1)
        self.startHealthy(supervisor)
        worker, process = self.spawner.last()
        supervisor.workerUnhealthy(worker, "3 checks timed out")
        self.assertEqual(self.rotation.members, [])
        self.assertEqual(process.signals, [])
        self.rotation.drains[worker.serial].callback(None)
        self.assertEqual(process.signals, ["TERM"])
        process.exit("exit code 0")
        new = self.spawner.last()[0]
        self.assertIsNot(new, worker)
        self.assertEqual(new.number, 1)
        supervisor.workerHealthy(new)
        self.assertEqual(self.rotation.members, [new])


class RecycleTests(SupervisorTestsMixin, SynchronousTestCase):
    """
    Recycling by max-requests, max-age and max-rss.
    """

    def test_maxRequestsWithJitter(self) -> None:
        """
        A worker is recycled once it has served between C{max-requests} and
        10% more connections; its replacement is healthy before it drains.
        """
        limits = set()
        for seed in range(30):
            supervisor = self.makeSupervisor(workers=1, maxRequests=100)
            supervisor._random = random.Random(seed)
            self.startHealthy(supervisor)
            worker, _ = self.spawner.last()
            served = 0
            while len(self.spawner.spawned) == 1:
                served += 1
                supervisor.connectionsServed(worker, served)
            limits.add(served)
            self.assertTrue(100 <= served <= 110, served)
        self.assertGreater(len(limits), 3)

    def test_replacementHealthyFirst(self) -> None:
        """
        The old worker keeps serving until its replacement is healthy, then
        is drained and stopped.
        """
        supervisor = self.makeSupervisor(workers=1, maxRss=200.0)
        self.startHealthy(supervisor)
        old, oldProcess = self.spawner.last()
        supervisor.rss(old, 150.0)
        self.assertEqual(len(self.spawner.spawned), 1)
        supervisor.rss(old, 250.0)
        new, _ = self.spawner.last()
        self.assertEqual(new.number, 1)
        self.assertEqual(self.rotation.members, [old])
        supervisor.workerHealthy(new)
        self.assertEqual(self.rotation.members, [new])
        self.assertEqual(self.rotation.events[-1], ("drain", old.serial))
        self.rotation.drains[old.serial].callback(None)
        self.assertEqual(oldProcess.signals, ["TERM"])
        oldProcess.exit()
        self.assertEqual(len(self.spawner.spawned), 2)

    def test_maxAgeWithJitter(self) -> None:
        """
        A worker is recycled between C{max-age} and 10% later.
        """
        supervisor = self.makeSupervisor(workers=1, maxAge=1000.0)
        self.startHealthy(supervisor)
        (call,) = self.clock.getDelayedCalls()
        self.assertTrue(1000 <= call.getTime() <= 1100, call.getTime())
        self.clock.advance(call.getTime())
        self.assertEqual(len(self.spawner.spawned), 2)

    def test_neverTwoRecyclesAtOnce(self) -> None:
        """
        While one worker is being recycled, another worker's recycle waits,
        so at most one extra worker exists.
        """
        supervisor = self.makeSupervisor(workers=2, maxRss=100.0)
        self.startHealthy(supervisor)
        (w1, p1), (w2, p2) = self.spawner.spawned
        supervisor.rss(w1, 300.0)
        supervisor.rss(w2, 300.0)
        self.assertEqual(len(self.spawner.running()), 3)
        supervisor.workerHealthy(self.spawner.last()[0])
        self.rotation.drains[w1.serial].callback(None)
        self.assertEqual(len(self.spawner.running()), 3)
        p1.exit()
        self.assertEqual(len(self.spawner.running()), 3)
        self.assertEqual(self.spawner.last()[0].number, 2)

    def test_oldExitsDuringRecycle(self) -> None:
        """
        When the worker being recycled exits before its replacement is
        healthy, the replacement takes its place with no third worker, and
        later recycles still happen.
        """
        supervisor = self.makeSupervisor(workers=1, maxRss=100.0)
        self.startHealthy(supervisor)
        old, oldProcess = self.spawner.last()
        supervisor.rss(old, 300.0)
        oldProcess.exit("signal SEGV")
        self.assertEqual(len(self.spawner.spawned), 2)
        new, _ = self.spawner.last()
        supervisor.workerHealthy(new)
        self.assertEqual(self.rotation.members, [new])
        supervisor.rss(new, 300.0)
        self.assertEqual(len(self.spawner.spawned), 3)

    def test_failedRecycleRetried(self) -> None:
        """
        A recycle whose replacement exits at once leaves the old worker
        serving and is tried again after the backoff delay.
        """
        supervisor = self.makeSupervisor(workers=1, maxRss=100.0)
        self.startHealthy(supervisor)
        old, _ = self.spawner.last()
        supervisor.rss(old, 300.0)
        self.spawner.last()[1].exit("exit code 1")
        self.assertEqual(self.rotation.members, [old])
        self.assertEqual(len(self.spawner.spawned), 2)
        self.clock.advance(1)
        self.assertEqual(len(self.spawner.spawned), 3)
        self.assertEqual(len(self.spawner.running()), 2)


class RollingRestartTests(SupervisorTestsMixin, SynchronousTestCase):
    """
    Rolling restarts, one worker at a time.
    """

    def test_order(self) -> None:
        """
        Each worker in turn: its replacement starts, becomes healthy and
        joins, then the old one drains and stops; never more than one extra
        worker; every pid changes.
        """
        supervisor = self.makeSupervisor(workers=3)
        self.startHealthy(supervisor)
        oldPids = {p.pid for _, p in self.spawner.spawned}
        d = supervisor.rollingRestart()
        most = 0
        for number in [1, 2, 3]:
            new, _ = self.spawner.last()
            self.assertEqual(new.number, number)
            most = max(most, len(self.spawner.running()))
            old, oldProcess = self.spawner.spawned[number - 1]
            self.assertIn(old, self.rotation.members)
            supervisor.workerHealthy(new)
            self.assertNotIn(old, self.rotation.members)
            self.rotation.drains[old.serial].callback(None)
            self.assertEqual(oldProcess.signals, ["TERM"])
            oldProcess.exit()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(most, 4)
        newPids = {p.pid for _, p in self.spawner.running()}
        self.assertEqual(len(newPids), 3)
        self.assertFalse(newPids & oldPids)
        self.assertEqual(len(self.rotation.members), 3)
        self.assertFalse(supervisor.status().restarting)

    def test_replacementNeverHealthy(self) -> None:
        """
        When a replacement does not become healthy, the restart stops there,
        the old workers keep serving, and the error carries the replacement's
        last output.
        """
        supervisor = self.makeSupervisor(workers=2)
        self.startHealthy(supervisor)
        serving = self.serving()
        d = supervisor.rollingRestart()
        self.spawner.lines = ["SyntaxError: invalid syntax"]
        # The first replacement works, the second does not.
        supervisor.workerHealthy(self.spawner.last()[0])
        first = self.spawner.spawned[0]
        self.rotation.drains[first[0].serial].callback(None)
        first[1].exit()
        new, process = self.spawner.last()
        process.lines = ["Traceback:", "SyntaxError: invalid syntax"]
        self.clock.advance(10)
        self.assertEqual(process.signals, ["KILL"])
        process.exit("signal KILL")
        error = self.failureResultOf(d, ReplacementError).value
        self.assertIn("not healthy within 10s", str(error))
        self.assertIn("SyntaxError: invalid syntax", str(error))
        self.assertEqual(len(self.spawner.running()), 2)
        self.assertIn(serving[1], self.serving())
        self.assertEqual(len(self.serving()), 2)
        self.clock.advance(120)
        self.assertEqual(len(self.spawner.running()), 2)

    def test_waitsForStartingWorker(self) -> None:
        """
        A worker still starting when the restart reaches it is replaced too,
        once it is healthy.
        """
        supervisor = self.makeSupervisor(workers=2)
        supervisor.start()
        (w1, p1), (w2, p2) = self.spawner.spawned
        supervisor.workerHealthy(w1)
        d = supervisor.rollingRestart()
        supervisor.workerHealthy(self.spawner.last()[0])
        self.rotation.drains[w1.serial].callback(None)
        p1.exit()
        self.assertEqual(len(self.spawner.spawned), 3)
        supervisor.workerHealthy(w2)
        self.assertEqual(len(self.spawner.spawned), 4)
        new, _ = self.spawner.last()
        self.assertEqual(new.number, 2)
        supervisor.workerHealthy(new)
        self.rotation.drains[w2.serial].callback(None)
        p2.exit()
        self.successResultOf(d)

    def test_onlyOneAtATime(self) -> None:
        """
        A second rolling restart while one is under way is refused.
        """
        supervisor = self.makeSupervisor(workers=1)
        self.startHealthy(supervisor)
        supervisor.rollingRestart()
        self.failureResultOf(supervisor.rollingRestart(), RuntimeError)


class StopTests(SupervisorTestsMixin, SynchronousTestCase):
    """
    Stopping every worker, and changing their number.
    """

    def test_termThenKill(self) -> None:
        """
        Stopping drains each worker for up to C{stop-timeout}, then sends
        TERM, then KILL after another C{stop-timeout}; it is done once every
        worker has exited and leaves no timer behind.
        """
        supervisor = self.makeSupervisor(workers=2, maxAge=3600.0)
        self.startHealthy(supervisor)
        (w1, p1), (w2, p2) = self.spawner.spawned
        d = supervisor.stop()
        self.assertEqual(self.rotation.members, [])
        self.rotation.drains[w1.serial].callback(None)
        self.assertEqual(p1.signals, ["TERM"])
        p1.exit()
        self.clock.advance(4.9)
        self.assertEqual(p2.signals, [])
        self.clock.advance(0.1)
        self.assertEqual(p2.signals, ["TERM"])
        self.clock.advance(5)
        self.assertEqual(p2.signals, ["TERM", "KILL"])
        self.assertNoResult(d)
        p2.exit("signal KILL")
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(supervisor.state, "stopped")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.health.watched, [])

    def test_stopWhileBackingOff(self) -> None:
        """
        Stopping while a restart waits on backoff cancels it: nothing more
        is started and no timer is left.
        """
        supervisor = self.makeSupervisor(workers=1)
        supervisor.start()
        worker, process = self.spawner.last()
        process.exit("exit code 1")
        starting = supervisor.stop()
        self.successResultOf(starting)
        self.clock.advance(100)
        self.assertEqual(len(self.spawner.spawned), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_exitWhileDraining(self) -> None:
        """
        A worker that exits while it drains for the stop is not waited for
        any longer, and no timer is left.
        """
        supervisor = self.makeSupervisor(workers=1)
        self.startHealthy(supervisor)
        worker, process = self.spawner.last()
        d = supervisor.stop()
        self.assertEqual(self.rotation.events[-1], ("drain", worker.serial))
        process.exit("signal SEGV")
        self.successResultOf(d)
        self.assertEqual(process.signals, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopAfterSpawnError(self) -> None:
        """
        A worker whose process could not be started does not keep C{stop}
        waiting.
        """
        supervisor = self.makeSupervisor(workers=1)
        self.spawner.error = OSError("no such file")
        supervisor.start()
        self.successResultOf(supervisor.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopStartingWorker(self) -> None:
        """
        A worker still starting when the app stops gets TERM at once and is
        never joined.
        """
        supervisor = self.makeSupervisor(workers=1)
        supervisor.start()
        worker, process = self.spawner.last()
        d = supervisor.stop()
        self.assertEqual(process.signals, ["TERM"])
        supervisor.workerHealthy(worker)
        self.assertEqual(self.rotation.members, [])
        process.exit()
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_setWorkers(self) -> None:
        """
        More workers are started at once; fewer drains and stops the highest
        numbered ones, without replacing them.
        """
        supervisor = self.makeSupervisor(workers=2)
        self.startHealthy(supervisor)
        supervisor.setWorkers(3)
        self.assertEqual(self.spawner.last()[0].number, 3)
        supervisor.workerHealthy(self.spawner.last()[0])
        supervisor.setWorkers(1)
        self.assertEqual([w.number for w in self.rotation.members], [1])
        for w, p in self.spawner.spawned[1:]:
            self.rotation.drains[w.serial].callback(None)
            self.assertEqual(p.signals, ["TERM"])
            p.exit()
        self.assertEqual(len(self.spawner.spawned), 3)
        self.assertEqual(len(supervisor.status().workers), 1)
        self.assertRaises(ValueError, supervisor.setWorkers, 0)
