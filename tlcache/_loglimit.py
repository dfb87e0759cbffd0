# -*- test-case-name: tests.unit.test_cachedpage -*-
"""
Rate-limited logging for tlcache: when the same thing goes wrong for every
request (a store down, a page failing), one line per interval says so, with
how many were not logged.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IReactorTime

__all__ = ["LogLimiter"]


class LogLimiter:
    """
    Lets one log line through per C{interval} seconds and counts the rest.
    """

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self._clock = clock
        self.interval = interval
        self._last: Optional[float] = None
        self._suppressed = 0

    def allow(self) -> Optional[int]:
        """
        C{None} when this event should not be logged; else how many were
        not logged since the last one that was.
        """
        now = self._clock.seconds()
        if self._last is not None and 0 <= now - self._last < self.interval:
            self._suppressed += 1
            return None
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        return suppressed
