"""
Tests for L{tlsuite._loglimit}: one log line per interval, with a count of
those held back.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tlsuite._loglimit import LogLimiter


class LogLimiterTests(SynchronousTestCase):
    """
    L{LogLimiter} lets one line through per interval.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.limiter = LogLimiter(self.clock, 10.0)

    def test_firstEventLogged(self) -> None:
        """
        The first event is logged at once, standing for nothing held back.
        """
        self.assertFalse(self.limiter.active)
        self.assertEqual(self.limiter.allow(), 0)
        self.assertTrue(self.limiter.active)

    def test_heldBackWithinInterval(self) -> None:
        """
        Events within the interval are held back; the first one after it is
        logged with how many were held back.
        """
        self.limiter.allow()
        self.clock.advance(4)
        self.assertIsNone(self.limiter.allow())
        self.clock.advance(5.9)
        self.assertIsNone(self.limiter.allow())
        self.clock.advance(0.1)
        self.assertEqual(self.limiter.allow(), 2)
        self.assertIsNone(self.limiter.allow())

    def test_clockGoingBack(self) -> None:
        """
        A clock set back (the wall clock corrected) does not silence the
        log for longer than the interval: the next event is logged.
        """
        self.limiter.allow()
        self.clock.rightNow -= 60
        self.assertEqual(self.limiter.allow(), 0)

    def test_reset(self) -> None:
        """
        After L{LogLimiter.reset} the next event is logged at once, and the
        events held back before it are not counted again.
        """
        self.limiter.allow()
        self.limiter.allow()
        self.limiter.reset()
        self.assertFalse(self.limiter.active)
        self.assertEqual(self.limiter.allow(), 0)
