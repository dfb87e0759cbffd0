# -*- test-case-name: tests.unit.test_loglimit -*-
"""
Rate-limited logging, shared by the suite's packages: when the same thing
goes wrong again and again (a store down, a flood of connections turned
away), one line per interval says so, with how many were not logged.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IReactorTime

__all__ = ["LogLimiter"]


class LogLimiter:
    """
    Lets one log line through per C{interval} seconds of C{clock} and
    counts the events whose lines it held back.
    """

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self._clock = clock
        self.interval = interval
        self._last: Optional[float] = None
        self._suppressed = 0

    def allow(self) -> Optional[int]:
        """
        Count one event.

        @return: C{None} when its line should not be logged; else how many
            events were not logged since the last one that was (so the
            line stands for that many plus one).
        """
        now = self._clock.seconds()
        if self._last is not None and 0 <= now - self._last < self.interval:
            self._suppressed += 1
            return None
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        return suppressed

    @property
    def active(self) -> bool:
        """
        Whether an event was counted since the last L{reset}.
        """
        return self._last is not None

    def reset(self) -> None:
        """
        Forget the events counted so far: the next one is logged at once
        (the trouble ended; if it starts again, say so right away).
        """
        self._last = None
        self._suppressed = 0
