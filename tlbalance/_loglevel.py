# -*- test-case-name: tests.unit.test_loglevel -*-
"""
The lowest level of the balancer's own log events, set while the twistd
plugin's service runs.

twistd writes every event it is given, debug ones included, and has no
option to say otherwise; C{twist} filters at its C{--log-level}. The
balancer's modules log through L{balancerLogger}, whose events pass
L{gate}: everything by default (a C{.tac} file or a test sees it all), the
level of C{--log-level} (info unless asked) under C{twistd tlbalance}.
"""

from __future__ import annotations

from typing import Any, FrozenSet, Optional

from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    globalLogPublisher,
)
from zope.interface import implementer

__all__ = [
    "LEVEL_NAMES",
    "LevelGate",
    "balancerLogger",
    "gate",
    "logLevelFor",
    "parseLogLevel",
]

#: The names C{--log-level} takes, lowest first.
LEVEL_NAMES = ("debug", "info", "warn", "error", "critical")

_ORDER = [LogLevel.levelWithName(name) for name in LEVEL_NAMES]

#: The level of the plugin's service when neither C{--log-level} nor the
#: program running it (C{twist --log-level}) says otherwise.
DEFAULT_LEVEL = LogLevel.info


@implementer(ILogObserver)
class LevelGate:
    """
    Passes the events at or above a level on to another observer.

    @ivar observer: where passing events go.
    @ivar level: the lowest level passed, or C{None} for every event.
    """

    def __init__(self, observer: ILogObserver) -> None:
        self.observer = observer
        self.level: Optional[LogLevel] = None
        self._passing: FrozenSet[LogLevel] = frozenset(_ORDER)

    def setLevel(self, level: Optional[LogLevel]) -> None:
        """
        Pass events at C{level} and above from now on; C{None} passes all.
        """
        self.level = level
        lowest = 0 if level is None else _ORDER.index(level)
        self._passing = frozenset(_ORDER[lowest:])

    def __call__(self, event: LogEvent) -> None:
        # One set lookup per event: the relay logs once per connection.
        if event["log_level"] in self._passing:
            self.observer(event)


#: The gate every balancer module logs through, in front of Twisted's
#: global log publisher.
gate = LevelGate(globalLogPublisher)


def balancerLogger(namespace: str) -> Logger:
    """
    A L{Logger} for C{namespace} whose events pass L{gate}.
    """
    return Logger(namespace=namespace, observer=gate)


def parseLogLevel(name: str) -> LogLevel:
    """
    The level called C{name}, in any case.

    @raise ValueError: naming the choices when there is no such level.
    """
    if name.lower() in LEVEL_NAMES:
        return LogLevel.levelWithName(name.lower())
    raise ValueError(
        f"unknown log level {name!r}; choose one of {', '.join(LEVEL_NAMES)}"
    )


def logLevelFor(level: Optional[LogLevel], parentOptions: Any) -> LogLevel:
    """
    The level the plugin's service logs at.

    @param level: the plugin's own C{--log-level}, or C{None} when not
        given.
    @param parentOptions: the options of the program running the plugin:
        twistd's, or C{twist}'s, whose C{--log-level} (C{"logLevel"}) is
        then the default, so that C{twist --log-level=debug tlbalance}
        shows debug events as it does for any other plugin.
    @return: C{level}, else C{twist}'s level, else L{DEFAULT_LEVEL}.
    """
    if level is not None:
        return level
    try:
        hostLevel = parentOptions["logLevel"]
    except (KeyError, TypeError):
        return DEFAULT_LEVEL
    if hostLevel in _ORDER:
        chosen: LogLevel = hostLevel
        return chosen
    return DEFAULT_LEVEL
