# -*- test-case-name: tests.unit.test_startup -*-
"""
Start-up errors of the suite's twistd plugins: one line naming the problem
and what to do, exit status 1, never twistd's usage text or a traceback.

Three moments can go wrong, and each is handled where it happens:

 - Parsing the command line: twistd prints its whole usage text above a
   L{usage.UsageError}, so L{CommandLineOptions} turns one into
   L{SystemExit} with the message (as twistd itself does for a bad
   C{--pidfile}).
 - Building the service (C{makeService}): raise L{SystemExit} with the
   message, the same way (L{exitWith}).
 - Starting it (C{privilegedStartService}, C{startService}): services raise
   L{StartupError}. twistd lets the exception through (after removing its
   pid file and telling a daemonizing parent), and the hook
   L{reportStartupErrors} installs prints its message alone instead of the
   traceback.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, NoReturn, Optional, Sequence, Type

from twisted.logger import Logger
from twisted.python import usage

from tlsuite import __version__

__all__ = [
    "CommandLineOptions",
    "StartupError",
    "exitWith",
    "reportStartupErrors",
]

_TYPE_ENFORCEMENT = "Parameter type enforcement failed: "

_log = Logger(namespace="tlsuite.startup")


class StartupError(Exception):
    """
    A service could not start: the message says why and what to do, in one
    line, ready to show the operator.
    """


def exitWith(command: str, message: object) -> NoReturn:
    """
    Stop the command with C{message} on standard error and exit status 1.

    @param command: how the operator ran it (C{"twistd tlsession"}), the
        start of the line.
    @param message: one problem, or several, one per line (each line then
        starts with C{command}).
    """
    lines = str(message).splitlines() or [""]
    raise SystemExit("\n".join(f"{command}: {line}" for line in lines))


class CommandLineOptions(usage.Options):
    """
    Options of one of the suite's twistd plugins: an error in the command
    line ends the command with one line (L{exitWith}) rather than twistd's
    usage text, which C{--help} still prints; C{--version} prints the
    suite's version.

    @cvar command: how the operator runs the plugin, for messages.
    @cvar program: the name C{--version} prints before the version.
    """

    command = "twistd"
    program = "tlsuite"

    def parseOptions(self, options: Optional[Sequence[str]] = None) -> None:
        """
        Parse C{options}, exiting with one line on a usage error.

        @raise SystemExit: with the message, for any L{usage.UsageError}.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            message = str(e)
            if message.startswith(_TYPE_ENFORCEMENT):
                message = message[len(_TYPE_ENFORCEMENT) :]
            if "not recognized" in message or message.startswith("No such option"):
                message += f" ({self.command} --help lists the options)"
            exitWith(self.command, message)

    def opt_version(self) -> NoReturn:
        """
        Print the version and exit.
        """
        print(f"{self.program} {__version__}")
        raise SystemExit(0)


def _hook(
    previous: Any,
    command: str,
    kind: Type[BaseException],
    value: BaseException,
    traceback: Optional[TracebackType],
) -> None:
    if isinstance(value, StartupError):
        # In the log too: a daemonized twistd's parent reports only the
        # first 100 bytes, and points at the log file.
        _log.critical("{command}: {error}", command=command, error=str(value))
        # twistd's log has taken over sys.stderr by now; the operator reads
        # the terminal.
        stream = sys.__stderr__ if sys.__stderr__ is not None else sys.stderr
        stream.write(f"{command}: {value}\n")
        stream.flush()
        return
    previous(kind, value, traceback)


def reportStartupErrors(command: str) -> None:
    """
    Show a L{StartupError} that ends the process as one line starting with
    C{command}, on the terminal's standard error; other exceptions are shown
    as before. The exit status stays 1.

    Call it from C{makeService}: twistd starts the services after it, and
    an exception from their start ends the process.
    """
    previous = sys.excepthook
    if getattr(previous, "startupCommand", None) == command:
        return

    def hook(
        kind: Type[BaseException],
        value: BaseException,
        traceback: Optional[TracebackType],
    ) -> None:
        _hook(previous, command, kind, value, traceback)

    hook.startupCommand = command  # type: ignore[attr-defined]
    sys.excepthook = hook
