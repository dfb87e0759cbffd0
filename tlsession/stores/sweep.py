# -*- test-case-name: tests.unit.test_sweep -*-
"""
L{SessionSweepService}: reclaims the expired sessions of a store that does
not expire them by itself (the SQL and file stores), on a clock, in bounded
batches.
"""

from __future__ import annotations

from typing import Optional, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tlsession.interfaces import StoreUnavailableError
from tlsession.stores._checks import InvalidArgumentError, checkPositive

__all__ = ["SessionSweepService"]


class _Sweepable(Protocol):
    def sweep(self, maxRows: int) -> Deferred[int]: ...


class SessionSweepService(Service):
    """
    Reclaims expired sessions in the background: every C{interval} seconds
    on C{clock}, calls C{store.sweep(batchSize)} up to C{maxBatches} times,
    stopping early once a batch comes back short. Errors are logged and the
    next tick tries again; stopping the service leaves no timer behind.

    Works with any store that has C{sweep(maxRows) -> Deferred[int]}
    (L{tlsession.stores.sql.SQLSessionStore},
    L{tlsession.stores.files.FileSessionStore}). Give it the same parent
    service as the store, after the store: a
    L{MultiService<twisted.application.service.MultiService>} starts its
    children in order and stops them in reverse, so the sweeps stop before
    the store does.
    """

    log = Logger()

    def __init__(
        self,
        store: _Sweepable,
        clock: IReactorTime,
        interval: float = 60.0,
        batchSize: int = 500,
        maxBatches: int = 10,
    ) -> None:
        """
        @raise InvalidArgumentError: for an interval, batch size or number
            of batches that is not positive (the counts must be integers).
        """
        self.interval = checkPositive("interval", interval)
        for name, count in [("batchSize", batchSize), ("maxBatches", maxBatches)]:
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidArgumentError(
                    f"{name} must be a positive integer, not {count!r}"
                )
        self.store = store
        self.clock = clock
        self.batchSize = batchSize
        self.maxBatches = maxBatches
        #: Sessions removed since the service was created.
        self.removed = 0
        self._loop: Optional[LoopingCall] = None
        self._inFlight: Optional[Deferred[None]] = None

    def startService(self) -> None:
        """
        Start sweeping; the first sweep runs one interval from now.
        """
        super().startService()
        loop = LoopingCall(self._tick)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.interval, now=False)

    def stopService(self) -> Optional[Deferred[None]]:
        """
        Stop sweeping.

        @return: C{None}, or a L{Deferred} firing when a sweep in progress
            has finished.
        """
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        if self._inFlight is None:
            return None
        done: Deferred[None] = Deferred()

        def finished(result: object) -> object:
            done.callback(None)
            return result

        self._inFlight.addBoth(finished)
        return done

    def _tick(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._sweepBatches())
        self._inFlight = d

        def finished(result: None) -> None:
            self._inFlight = None

        d.addBoth(finished)
        return d

    async def _sweepBatches(self) -> None:
        removed = 0
        try:
            for _ in range(self.maxBatches):
                count = await self.store.sweep(self.batchSize)
                removed += count
                if count < self.batchSize or self._loop is None:
                    break
        except StoreUnavailableError as error:
            self.log.warn(
                "Session sweep skipped: {error}; retrying in {interval}s",
                error=str(error),
                interval=self.interval,
            )
        except Exception:
            self.log.failure(
                "Session sweep failed; retrying in {interval}s", interval=self.interval
            )
        finally:
            self.removed += removed
        if removed:
            self.log.debug("Swept {removed} expired sessions", removed=removed)
