"""
Tests for L{tlsuite._startup}: how the twistd plugins end on a start-up
error.
"""

from __future__ import annotations

import io
import sys
from typing import Any, List

from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tlsuite._startup import (
    CommandLineOptions,
    StartupError,
    exitWith,
    reportStartupErrors,
)


class _Options(CommandLineOptions):
    command = "twistd example"
    program = "example"
    optParameters = [["count", None, 1, "A count.", int]]

    def postOptions(self) -> None:
        if self["count"] < 1:
            raise usage.UsageError("--count: must be at least 1")


class CommandLineOptionsTests(SynchronousTestCase):
    """
    L{CommandLineOptions} ends a bad command line with one line.
    """

    def test_postOptionsError(self) -> None:
        """
        A L{usage.UsageError} from C{postOptions} exits with its message,
        after the command's name.
        """
        error = self.assertRaises(SystemExit, _Options().parseOptions, ["--count", "0"])
        self.assertEqual(error.code, "twistd example: --count: must be at least 1")

    def test_coerceError(self) -> None:
        """
        A value its option refuses is named without usage's boilerplate.
        """
        error = self.assertRaises(SystemExit, _Options().parseOptions, ["--count", "x"])
        self.assertEqual(
            error.code,
            "twistd example: invalid literal for int() with base 10: 'x'",
        )

    def test_unknownOption(self) -> None:
        """
        An unknown option points at C{--help}.
        """
        error = self.assertRaises(SystemExit, _Options().parseOptions, ["--what"])
        self.assertEqual(
            error.code,
            "twistd example: option --what not recognized (twistd example "
            "--help lists the options)",
        )

    def test_exitWith(self) -> None:
        """
        L{exitWith} raises L{SystemExit} with the one line.
        """
        error = self.assertRaises(SystemExit, exitWith, "twistd x", "broken")
        self.assertEqual(error.code, "twistd x: broken")

    def test_exitWithSeveralLines(self) -> None:
        """
        Several problems, one per line, each start with the command.
        """
        error = self.assertRaises(
            SystemExit, exitWith, "twistd x", "first: bad\nsecond: worse"
        )
        self.assertEqual(error.code, "twistd x: first: bad\ntwistd x: second: worse")


class ReportStartupErrorsTests(SynchronousTestCase):
    """
    L{reportStartupErrors} shows a L{StartupError} as one line.
    """

    def setUp(self) -> None:
        self.previous: List[Any] = []
        self.patch(sys, "excepthook", lambda *info: self.previous.append(info))
        self.stderr = io.StringIO()
        self.patch(sys, "__stderr__", self.stderr)

    def test_startupError(self) -> None:
        """
        A L{StartupError} reaching the top is written as one line to the
        terminal's standard error and to the log; the previous hook does
        not see it.
        """
        logged: List[str] = []

        def observer(event: Any) -> None:
            logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        reportStartupErrors("twistd example")
        error = StartupError("cannot listen on tcp:1: in use")
        sys.excepthook(StartupError, error, None)
        self.assertEqual(
            self.stderr.getvalue(), "twistd example: cannot listen on tcp:1: in use\n"
        )
        self.assertEqual(self.previous, [])
        # Also in the log, which is all a daemonized twistd leaves.
        self.assertIn("twistd example: cannot listen on tcp:1: in use", logged)

    def test_otherErrors(self) -> None:
        """
        Any other exception goes to the hook that was there before.
        """
        reportStartupErrors("twistd example")
        error = ValueError("bug")
        sys.excepthook(ValueError, error, None)
        self.assertEqual(self.previous, [(ValueError, error, None)])
        self.assertEqual(self.stderr.getvalue(), "")

    def test_once(self) -> None:
        """
        Installing the hook twice for one command wraps the previous hook
        once.
        """
        reportStartupErrors("twistd example")
        hook = sys.excepthook
        reportStartupErrors("twistd example")
        self.assertIs(sys.excepthook, hook)
