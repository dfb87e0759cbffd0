# -*- test-case-name: tests.unit.test_supervisor -*-
"""
The pure state machine that supervises one C{[[app]]}'s worker processes.

L{AppSupervisor} starts, watches, recycles and restarts workers one by one;
it reaches processes, health checks, the balancer's rotation and time only
through the small roles below, so tests drive it with fakes and a
L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

import random as _random
from typing import (
    Callable,
    Dict,
    List,
    Optional,
    Protocol,
    Sequence,
    Union,
)

from attrs import define, field, frozen
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from tlbalance._loglevel import balancerLogger

__all__ = [
    "AppSettings",
    "AppStatus",
    "AppSupervisor",
    "IRotation",
    "IWorkerHealth",
    "IWorkerProcess",
    "IWorkerSpawner",
    "ReplacementError",
    "Worker",
    "WorkerStatus",
]

log = balancerLogger("tlbalance.supervisor")

# Worker states.
STARTING = "starting"
HEALTHY = "healthy"
DRAINING = "draining"
STOPPING = "stopping"
EXITED = "exited"

# App states.
RUNNING = "running"
FAILED = "FAILED"
APP_STOPPING = "stopping"
STOPPED = "stopped"

#: The first delay before retrying a worker that exited without becoming
#: healthy, doubled after each such exit up to L{BACKOFF_CEILING}.
BACKOFF_START = 1.0
BACKOFF_CEILING = 60.0
#: This many exits without becoming healthy within L{FAILED_WINDOW} seconds
#: mark the app FAILED.
FAILED_EXITS = 5
FAILED_WINDOW = 60.0
#: Recycling limits are raised by up to this fraction, at random, so that
#: workers started together do not all recycle together.
JITTER = 0.1


class IWorkerProcess(Protocol):
    """
    A running worker process, as the spawner hands it out.
    """

    pid: int

    def signal(self, name: str) -> None:
        """
        Send the signal C{name} (C{"TERM"}, C{"KILL"}) to the process.
        """

    def whenExited(self) -> Deferred[str]:
        """
        A L{Deferred} that fires with a description of how the process ended
        (its exit code or signal) once it has ended.
        """

    def lastLines(self) -> Sequence[str]:
        """
        The last lines the process wrote on its stdout and stderr.
        """


class IWorkerSpawner(Protocol):
    """
    Starts worker processes from the app's current command.
    """

    def spawn(self, worker: Worker) -> IWorkerProcess:
        """
        Start the process for C{worker}; raise if it cannot be started.
        """


class IWorkerHealth(Protocol):
    """
    Runs a worker's health checks and reports the results to the supervisor
    through L{AppSupervisor.workerHealthy} and
    L{AppSupervisor.workerUnhealthy}.
    """

    def watch(self, worker: Worker) -> None:
        """
        Start checking C{worker}.
        """

    def unwatch(self, worker: Worker) -> None:
        """
        Stop checking C{worker}.
        """


class IRotation(Protocol):
    """
    The balancer's rotation: the backends new connections go to.
    """

    def join(self, worker: Worker) -> None:
        """
        Send new connections to C{worker} from now on.
        """

    def drain(self, worker: Worker) -> Deferred[None]:
        """
        Send no new connection to C{worker}; the result fires once its last
        open connection has closed (at once when none is open).
        """

    def remove(self, worker: Worker) -> None:
        """
        Forget C{worker}: its process has ended.
        """


@frozen
class AppSettings:
    """
    What the supervisor needs from one C{[[app]]} table.

    @ivar name: the app's name.
    @ivar workers: how many workers to keep running.
    @ivar startTimeout: seconds a new worker has to become healthy.
    @ivar stopTimeout: seconds a drained worker's connections have to
        finish before it is sent TERM, and again before KILL.
    @ivar maxRequests: recycle a worker after about this many connections,
        or C{None}.
    @ivar maxAge: recycle a worker after about this many seconds, or C{None}.
    @ivar maxRss: recycle a worker above this many MB of resident memory, or
        C{None}.
    """

    name: str
    workers: int
    startTimeout: float = 30.0
    stopTimeout: float = 30.0
    maxRequests: Optional[int] = None
    maxAge: Optional[float] = None
    maxRss: Optional[float] = None


@define(eq=False)
class Worker:
    """
    One worker process of an app, from its spawn to its exit.

    @ivar app: the app's name.
    @ivar number: the worker's place, 1 to the number of workers; a
        replacement takes its predecessor's number.
    @ivar serial: unique among the app's workers, for what two workers alive
        at once must not share (a socket path).
    @ivar state: one of C{starting}, C{healthy}, C{draining}, C{stopping},
        C{exited}.
    """

    app: str
    number: int
    serial: int
    state: str = STARTING
    process: Optional[IWorkerProcess] = None
    started: float = 0.0
    joined: bool = False
    everHealthy: bool = False
    retiring: bool = False
    timedOut: bool = False
    served: int = 0
    rss: Optional[float] = None
    requestLimit: Optional[int] = None
    recycleReason: Optional[str] = None
    calls: Dict[str, IDelayedCall] = field(factory=dict)
    drained: Optional[Deferred[None]] = None

    @property
    def pid(self) -> Optional[int]:
        """
        The process id, or C{None} before the process exists.
        """
        return self.process.pid if self.process is not None else None


@frozen
class WorkerStatus:
    """
    One worker as C{show apps} shows it.
    """

    number: int
    serial: int
    pid: Optional[int]
    state: str
    age: float
    served: int
    rss: Optional[float]


@frozen
class AppStatus:
    """
    One app as C{show apps} shows it.

    @ivar failures: exits without becoming healthy in the last minute.
    """

    name: str
    state: str
    wanted: int
    workers: List[WorkerStatus]
    failures: int
    restarting: bool


class ReplacementError(Exception):
    """
    A replacement worker never became healthy; the old one keeps serving.
    """

    def __init__(self, worker: Worker, reason: str, lines: Sequence[str]):
        self.worker = worker
        self.reason = reason
        self.lines = list(lines)
        text = f"app {worker.app!r} worker {worker.number}: {reason}"
        if self.lines:
            text += "; its last output:\n" + "\n".join(self.lines)
        super().__init__(text)


@define(eq=False)
class _Replacement:
    """
    A new worker started to take an old one's place, then the old one's
    retirement: at most one per app at a time.
    """

    old: Worker
    new: Worker
    done: Deferred[None]


class AppSupervisor:
    """
    Keeps an app's workers running: gated by health, replaced on exit with
    backoff, recycled and restarted one at a time with at most one extra
    worker.

    @ivar state: C{running}, C{FAILED}, C{stopping} or C{stopped}.
    """

    def __init__(
        self,
        settings: AppSettings,
        spawner: IWorkerSpawner,
        health: IWorkerHealth,
        rotation: IRotation,
        clock: IReactorTime,
        random: Optional[_random.Random] = None,
    ) -> None:
        self.settings = settings
        self.wanted = settings.workers
        self.state = STOPPED
        self._spawner = spawner
        self._health = health
        self._rotation = rotation
        self._clock = clock
        self._random = random if random is not None else _random.Random()
        self._serial = 0
        self._workers: List[Worker] = []
        self._slots: Dict[int, Worker] = {}
        self._respawns: Dict[int, IDelayedCall] = {}
        self._calls: List[IDelayedCall] = []
        self._failures: List[float] = []
        self._streak = 0
        self._busy: Optional[_Replacement] = None
        self._recycles: List[Worker] = []
        self._rolling: Optional[List[Worker]] = None
        self._rollingDone: Optional[Deferred[None]] = None
        self._stopped: List[Deferred[None]] = []

    # Life of the app.

    def start(self) -> None:
        """
        Start the wanted number of workers.
        """
        self.state = RUNNING
        for number in range(1, self.wanted + 1):
            self._fill(number, 0)

    def stop(self) -> Deferred[None]:
        """
        Drain and stop every worker: TERM after C{stopTimeout} of drain,
        KILL after another C{stopTimeout}.

        @return: fires once every worker has exited.
        """
        if self.state == STOPPED and not self._workers:
            return succeed(None)
        self.state = APP_STOPPING
        for call in self._calls + list(self._respawns.values()):
            if call.active():
                call.cancel()
        self._calls = []
        self._respawns.clear()
        self._recycles = []
        self._busy = None
        self._failRolling(RuntimeError(f"app {self.settings.name!r} is stopping"))
        for worker in list(self._workers):
            self._cancel(worker, "start", "age")
            if worker.state in (STARTING, HEALTHY):
                self._retire(worker)
        d: Deferred[None] = Deferred()
        self._stopped.append(d)
        self._maybeStopped()
        return d

    def setWorkers(self, count: int) -> None:
        """
        Keep C{count} workers from now on: start the missing ones, or drain
        and stop those numbered above C{count}.
        """
        if count < 1:
            raise ValueError(f"an app needs at least 1 worker, not {count}")
        old, self.wanted = self.wanted, count
        log.info(
            "app {app} workers {old} -> {new}",
            app=self.settings.name,
            old=old,
            new=count,
        )
        if self.state not in (RUNNING, FAILED):
            return
        for number in range(1, count + 1):
            self._fill(number, 0)
        for number in sorted(self._respawns):
            if number > count:
                self._respawns.pop(number).cancel()
        for number in sorted(self._slots):
            if number > count:
                self._retire(self._slots.pop(number))
        busy = self._busy
        if busy is not None and busy.new.number > count and busy.new.state == STARTING:
            self._retire(busy.new)

    def rollingRestart(self) -> Deferred[None]:
        """
        Replace every healthy worker in turn: start its replacement, wait
        until it is healthy, drain and stop the old one, then the next.

        @return: fires when every worker has been replaced; fails with
            L{ReplacementError} when a replacement never became healthy (the
            restart stops there and the old workers keep serving).
        """
        if self.state not in (RUNNING, FAILED):
            return fail(RuntimeError(f"app {self.settings.name!r} is not running"))
        if self._rolling is not None:
            return fail(
                RuntimeError(
                    f"a rolling restart of app {self.settings.name!r} is under way"
                )
            )
        self._rolling = [self._slots[n] for n in sorted(self._slots)]
        d: Deferred[None] = Deferred()
        self._rollingDone = d
        log.info("app {app} rolling restart begins", app=self.settings.name)
        self._pump()
        return d

    # What the health checks and the rotation report.

    def workerHealthy(self, worker: Worker) -> None:
        """
        C{worker}'s health check passed: a starting worker joins the rotation.
        """
        if worker.state != STARTING or worker.retiring:
            return
        self._cancel(worker, "start")
        worker.state = HEALTHY
        worker.everHealthy = True
        self._streak = 0
        self._failures = []
        if self.state == FAILED:
            self.state = RUNNING
            log.info("app {app} recovered", app=self.settings.name)
        self._log("healthy after {seconds:.1f}s", worker, seconds=self._age(worker))
        worker.joined = True
        self._rotation.join(worker)
        limit = self.settings.maxRequests
        if limit is not None:
            worker.requestLimit = int(limit * (1 + self._random.random() * JITTER))
        maxAge = self.settings.maxAge
        if maxAge is not None:
            delay = maxAge * (1 + self._random.random() * JITTER)
            worker.calls["age"] = self._clock.callLater(
                delay, self._ageReached, worker, f"max-age {maxAge:g}s"
            )
        busy = self._busy
        if busy is not None and busy.new is worker:
            # The replacement takes the old worker's number and place.
            self._slots[worker.number] = worker
            if busy.old.state == EXITED:
                self._finishReplacement(busy)
            elif busy.old.state in (STARTING, HEALTHY):
                self._retire(busy.old)
        self._pump()

    def workerUnhealthy(self, worker: Worker, reason: str) -> None:
        """
        C{worker} failed its health check C{fall} times: a worker in the
        rotation is drained, stopped and replaced.
        """
        if worker.state != HEALTHY:
            return
        self._log("hangs ({reason}); draining and stopping it", worker, reason=reason)
        if self._slots.get(worker.number) is worker:
            del self._slots[worker.number]
        self._retire(worker)

    def connectionsServed(self, worker: Worker, count: int) -> None:
        """
        C{worker} has been given C{count} connections in all; past
        C{max-requests} (with jitter) it is recycled.
        """
        worker.served = count
        if worker.requestLimit is not None and count >= worker.requestLimit:
            self._recycle(worker, f"max-requests {self.settings.maxRequests}")

    def rss(self, worker: Worker, mb: float) -> None:
        """
        C{worker} uses C{mb} MB of resident memory; above C{max-rss} it is
        recycled.
        """
        worker.rss = mb
        limit = self.settings.maxRss
        if limit is not None and mb > limit:
            self._recycle(worker, f"max-rss {limit:g} MB ({mb:g} MB)")

    def status(self) -> AppStatus:
        """
        A snapshot of the app and its workers.
        """
        now = self._clock.seconds()
        return AppStatus(
            name=self.settings.name,
            state=self.state,
            wanted=self.wanted,
            workers=[
                WorkerStatus(
                    number=w.number,
                    serial=w.serial,
                    pid=w.pid,
                    state=w.state,
                    age=now - w.started,
                    served=w.served,
                    rss=w.rss,
                )
                for w in sorted(self._workers, key=lambda w: (w.number, w.serial))
            ],
            failures=len([t for t in self._failures if now - t < FAILED_WINDOW]),
            restarting=self._rolling is not None,
        )

    # Spawning and exits.

    def _fill(self, number: int, delay: float) -> None:
        """
        Start a worker numbered C{number} after C{delay} seconds unless one
        is already there, starting or on its way.
        """
        if self.state not in (RUNNING, FAILED) or number > self.wanted:
            return
        if number in self._slots or number in self._respawns:
            return
        busy = self._busy
        if busy is not None and busy.new.number == number:
            return
        if delay <= 0:
            self._slots[number] = self._spawn(number)
            return

        def respawn() -> None:
            del self._respawns[number]
            self._fill(number, 0)

        log.info(
            "app {app} worker {worker} restarts in {delay:g}s",
            app=self.settings.name,
            worker=number,
            delay=delay,
        )
        self._respawns[number] = self._clock.callLater(delay, respawn)

    def _spawn(self, number: int) -> Worker:
        self._serial += 1
        worker = Worker(
            app=self.settings.name,
            number=number,
            serial=self._serial,
            started=self._clock.seconds(),
        )
        self._workers.append(worker)
        try:
            process = self._spawner.spawn(worker)
        except Exception as e:
            # The exit is reported from the reactor's next turn, like a
            # process that ended at once.
            self._later(0, self._exited, worker, f"not started: {e}")
            return worker
        worker.process = process
        self._log("started", worker)
        self._health.watch(worker)
        worker.calls["start"] = self._clock.callLater(
            self.settings.startTimeout, self._startTimedOut, worker
        )
        process.whenExited().addCallback(lambda reason: self._exited(worker, reason))
        return worker

    def _startTimedOut(self, worker: Worker) -> None:
        del worker.calls["start"]
        worker.timedOut = True
        self._log(
            "not healthy within {timeout:g}s; killing it",
            worker,
            timeout=self.settings.startTimeout,
            level="warn",
        )
        self._signal(worker, "KILL")

    def _exited(self, worker: Worker, reason: str) -> None:
        if worker.state == EXITED:
            return
        if worker.timedOut:
            reason = (
                f"not healthy within {self.settings.startTimeout:g}s, killed ({reason})"
            )
        wasUnexpected = not worker.retiring
        worker.state = EXITED
        self._cancel(worker, *list(worker.calls))
        if worker.drained is not None:
            worker.drained.cancel()
        self._workers.remove(worker)
        if worker.joined:
            self._rotation.remove(worker)
        if worker.process is not None:
            self._health.unwatch(worker)
        if self._slots.get(worker.number) is worker:
            del self._slots[worker.number]
        self._log(
            "exited: {reason}",
            worker,
            reason=reason,
            level="warn" if wasUnexpected else "info",
        )
        if self.state in (APP_STOPPING, STOPPED):
            self._maybeStopped()
            return
        delay = 0.0
        if wasUnexpected and not worker.everHealthy:
            delay = self._countFailure(worker, reason)
        busy = self._busy
        if busy is not None and busy.new is worker:
            self._busy = None
            if worker.everHealthy or worker.number > self.wanted:
                busy.done.callback(None)
            else:
                lines = worker.process.lastLines() if worker.process else ()
                busy.done.errback(ReplacementError(worker, reason, lines))
        elif busy is not None and busy.old is worker and busy.new.everHealthy:
            self._finishReplacement(busy)
        self._fill(worker.number, delay)
        self._pump()

    def _countFailure(self, worker: Worker, reason: str) -> float:
        """
        Note an exit without becoming healthy.

        @return: how long to wait before the next start.
        """
        now = self._clock.seconds()
        self._failures = [t for t in self._failures if now - t < FAILED_WINDOW]
        self._failures.append(now)
        self._streak += 1
        delay = min(BACKOFF_CEILING, BACKOFF_START * 2 ** (self._streak - 1))
        if self.state == RUNNING and len(self._failures) >= FAILED_EXITS:
            self.state = FAILED
            lines = worker.process.lastLines() if worker.process else ()
            log.critical(
                "app {app} FAILED: {count} workers exited within {window:g}s"
                " without becoming healthy; retrying every {ceiling:g}s."
                " Last exit: {reason}; its last output:\n{output}",
                app=self.settings.name,
                count=len(self._failures),
                window=FAILED_WINDOW,
                ceiling=BACKOFF_CEILING,
                reason=reason,
                output="\n".join(lines),
            )
        if self.state == FAILED:
            delay = BACKOFF_CEILING
        return delay

    # Retiring a worker: drain, TERM, KILL.

    def _retire(self, worker: Worker) -> None:
        worker.retiring = True
        self._cancel(worker, "start", "age")
        if not worker.joined or worker.state != HEALTHY:
            self._terminate(worker)
            return
        worker.state = DRAINING
        self._log("draining", worker)
        drained = self._rotation.drain(worker)
        worker.drained = drained
        worker.calls["drain"] = self._clock.callLater(
            self.settings.stopTimeout, self._drainTimedOut, worker
        )

        def done(result: object) -> None:
            worker.drained = None
            if isinstance(result, Failure):
                result.trap(CancelledError)
                return
            if worker.state == DRAINING:
                self._terminate(worker)

        drained.addBoth(done)

    def _drainTimedOut(self, worker: Worker) -> None:
        del worker.calls["drain"]
        self._log(
            "connections still open after {timeout:g}s of drain",
            worker,
            timeout=self.settings.stopTimeout,
        )
        if worker.drained is not None:
            worker.drained.cancel()
        self._terminate(worker)

    def _terminate(self, worker: Worker) -> None:
        worker.retiring = True
        self._cancel(worker, "start", "age", "drain")
        worker.state = STOPPING
        if worker.process is None:
            # Its spawn failed; its exit is due on the next turn, unless the
            # app is stopping and has cancelled that.
            self._exited(worker, "not started")
            return
        self._signal(worker, "TERM")
        worker.calls["kill"] = self._clock.callLater(
            self.settings.stopTimeout, self._kill, worker
        )

    def _kill(self, worker: Worker) -> None:
        del worker.calls["kill"]
        self._log(
            "still running {timeout:g}s after TERM; killing it",
            worker,
            timeout=self.settings.stopTimeout,
            level="warn",
        )
        self._signal(worker, "KILL")

    # Recycling and rolling restarts: one replacement at a time.

    def _ageReached(self, worker: Worker, why: str) -> None:
        del worker.calls["age"]
        self._recycle(worker, why)

    def _recycle(self, worker: Worker, why: str) -> None:
        if worker.state != HEALTHY or worker.recycleReason is not None:
            return
        if self._slots.get(worker.number) is not worker:
            return
        worker.recycleReason = why
        self._log("to be recycled: {why}", worker, why=why)
        self._recycles.append(worker)
        self._pump()

    def _pump(self) -> None:
        """
        Start the next replacement when none is under way: the rolling
        restart's next worker first, then a recycle.
        """
        if self._busy is not None or self.state not in (RUNNING, FAILED):
            return
        if self._rolling is not None:
            while self._rolling:
                old = self._rolling[0]
                current = self._slots.get(old.number) is old
                if old.state == STARTING and current:
                    # It may have read the old files: replace it once it is
                    # healthy (or its own replacement will be new anyway).
                    return
                self._rolling.pop(0)
                if old.state == HEALTHY and current:
                    self._replace(old).addCallbacks(
                        lambda _: self._pump(), self._rollingFailed
                    )
                    return
            log.info("app {app} rolling restart done", app=self.settings.name)
            d = self._rollingDone
            self._rolling = self._rollingDone = None
            if d is not None:
                d.callback(None)
        while self._recycles:
            old = self._recycles.pop(0)
            if old.state == HEALTHY and self._slots.get(old.number) is old:
                self._replace(old).addCallbacks(
                    lambda _: self._pump(), self._recycleFailed, errbackArgs=(old,)
                )
                return

    def _replace(self, old: Worker) -> Deferred[None]:
        new = self._spawn(old.number)
        replacement = _Replacement(old=old, new=new, done=Deferred())
        self._busy = replacement
        return replacement.done

    def _finishReplacement(self, replacement: _Replacement) -> None:
        if self._busy is replacement:
            self._busy = None
        replacement.done.callback(None)

    def _rollingFailed(self, reason: Failure) -> None:
        log.error(
            "app {app} rolling restart stopped: {error}",
            app=self.settings.name,
            error=reason.getErrorMessage(),
        )
        self._failRolling(reason)
        self._pump()

    def _failRolling(self, reason: Union[Failure, BaseException]) -> None:
        d = self._rollingDone
        self._rolling = self._rollingDone = None
        if d is not None:
            d.errback(reason)

    def _recycleFailed(self, reason: Failure, old: Worker) -> None:
        reason.trap(ReplacementError)
        log.warn(
            "app {app} worker {worker} not recycled: {error}",
            app=self.settings.name,
            worker=old.number,
            error=reason.getErrorMessage(),
        )
        why = old.recycleReason or "recycle"
        old.recycleReason = None
        delay = min(BACKOFF_CEILING, BACKOFF_START * 2 ** max(self._streak - 1, 0))
        if self.state == FAILED:
            delay = BACKOFF_CEILING
        self._later(delay, self._recycle, old, why)
        self._pump()

    # Small things.

    def _maybeStopped(self) -> None:
        if self._workers:
            return
        self.state = STOPPED
        waiting, self._stopped = self._stopped, []
        for d in waiting:
            d.callback(None)

    def _later(self, delay: float, f: Callable[..., object], *args: object) -> None:
        """
        Call C{f} after C{delay} seconds unless the app stops first.
        """
        self._calls = [call for call in self._calls if call.active()]
        self._calls.append(self._clock.callLater(delay, f, *args))

    def _cancel(self, worker: Worker, *names: str) -> None:
        for name in names:
            call = worker.calls.pop(name, None)
            if call is not None and call.active():
                call.cancel()

    def _signal(self, worker: Worker, name: str) -> None:
        if worker.process is not None:
            worker.process.signal(name)

    def _age(self, worker: Worker) -> float:
        return self._clock.seconds() - worker.started

    def _log(
        self, text: str, worker: Worker, level: str = "info", **fields: object
    ) -> None:
        emit: Callable[..., None] = getattr(log, level)
        emit(
            "app {app} worker {worker} (pid {pid}) " + text,
            app=worker.app,
            worker=worker.number,
            pid=worker.pid,
            **fields,
        )
