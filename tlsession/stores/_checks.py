# -*- test-case-name: tests.unit.test_storechecks -*-
"""
What every session store checks before it does anything: that it is running
(L{StoreService}), and that its arguments are usable (the C{check*}
functions).

Every check raises a L{SessionStoreError}, so a store method catches that
one class and hands the error back as a failed L{Deferred}, never raising
and never returning a value for a refused call::

    def save(self, sessionID, expectedVersion, data, idleTimeout=None):
        try:
            self.checkRunning()
            version, data, idle = checkSave(
                sessionID, expectedVersion, data, idleTimeout, self.maxValueBytes
            )
        except SessionStoreError:
            return fail()
        ...

Constructors cannot return a L{Deferred}: they raise (L{checkLimits},
L{checkPositive}), synchronously, the same L{InvalidArgumentError}.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

from twisted.application.service import Service

from tlsession.interfaces import (
    SessionGoneError,
    SessionStoreError,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.stores import isWellFormedSessionID

__all__ = [
    "MAX_VERSION",
    "InvalidArgumentError",
    "StoreService",
    "checkCreate",
    "checkData",
    "checkIdleTimeout",
    "checkLimits",
    "checkPositive",
    "checkSave",
    "checkSessionID",
    "checkVersion",
]

#: The largest version a store accepts: what a signed 64-bit column holds.
MAX_VERSION = 2**63 - 1


class InvalidArgumentError(SessionStoreError, TypeError, ValueError):
    """
    A store was given an argument it cannot use: data that is not bytes, a
    timeout that is not a positive number of seconds, a version that is not
    a positive integer, a limit out of range.

    It is a L{SessionStoreError} like every error a store reports, and also
    a L{TypeError} and a L{ValueError}, so code written for the built-in
    errors the stores used to raise keeps catching it.
    """


class StoreService(Service):
    """
    The lifecycle every store shares: building it does no I/O,
    C{startService} opens what it needs, C{stopService} closes it (and
    returns a L{Deferred} when that takes time). Calls made before the start
    or after the stop fail with L{StoreUnavailableError} saying which.

    Subclasses call L{checkRunning} at the start of each call, and set
    L{storeDescription}.
    """

    #: What the store is, for the errors of calls it cannot take.
    storeDescription = "the session store"

    _hasStarted = False

    def startService(self) -> None:
        """
        Mark the store running. Subclasses open their resources first, so
        that a store that could not start is not marked running.
        """
        super().startService()
        self._hasStarted = True

    def checkRunning(self) -> None:
        """
        @raise StoreUnavailableError: the store has not been started, or has
            been stopped.
        """
        if not self.running:
            state = "stopped" if self._hasStarted else "not started"
            raise StoreUnavailableError(f"{self.storeDescription} is {state}")


def checkPositive(name: str, value: object) -> float:
    """
    C{value} as a float, checked to be a positive, finite number (an C{int}
    or C{float}, not a C{bool}).

    @param name: the setting or argument, for the message.
    @raise InvalidArgumentError: for anything else.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(
            f"{name} must be a number, not {type(value).__name__}"
        )
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise InvalidArgumentError(f"{name} must be a positive number, not {value!r}")
    return number


def checkLimits(
    idleTimeout: float, absoluteTimeout: float, maxValueBytes: int
) -> Tuple[float, float, int]:
    """
    A store's limits, checked: the timeouts positive, finite numbers of
    seconds, the size limit a non-negative integer.

    @return: the timeouts as floats, and the size limit.
    @raise InvalidArgumentError: for anything else.
    """
    idle = checkPositive("idleTimeout", idleTimeout)
    absolute = checkPositive("absoluteTimeout", absoluteTimeout)
    if (
        isinstance(maxValueBytes, bool)
        or not isinstance(maxValueBytes, int)
        or maxValueBytes < 0
    ):
        raise InvalidArgumentError(
            f"maxValueBytes must be a non-negative integer, not {maxValueBytes!r}"
        )
    return idle, absolute, maxValueBytes


def checkData(data: object, maxValueBytes: int) -> bytes:
    """
    C{data}, checked to be session data the store accepts.

    @raise InvalidArgumentError: it is not C{bytes}.
    @raise ValueTooLargeError: it is longer than C{maxValueBytes}.
    """
    if not isinstance(data, bytes):
        raise InvalidArgumentError(
            f"session data must be bytes, not {type(data).__name__}"
        )
    if len(data) > maxValueBytes:
        raise ValueTooLargeError(len(data), maxValueBytes)
    return data


def checkIdleTimeout(idleTimeout: object) -> Optional[float]:
    """
    A session's own idle timeout as a float, or C{None} (the store's
    default, or the session's current one) unchanged.

    @raise InvalidArgumentError: it is not a positive, finite number.
    """
    if idleTimeout is None:
        return None
    return checkPositive("idleTimeout", idleTimeout)


def checkVersion(version: object) -> int:
    """
    C{version}, checked to be a version a store can hold: an integer from 1
    to L{MAX_VERSION}.

    @raise InvalidArgumentError: for anything else.
    """
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidArgumentError(
            f"a version must be an integer, not {type(version).__name__}"
        )
    if not 1 <= version <= MAX_VERSION:
        raise InvalidArgumentError(
            f"a version must be between 1 and {MAX_VERSION}, not {version}"
        )
    return version


def checkSessionID(sessionID: object) -> str:
    """
    C{sessionID}, checked to be shaped like an identifier a store makes;
    for C{save}, C{touch} and C{rotate}, which fail for a session that is
    not there. (C{load} answers C{None} and C{delete} does nothing for a
    malformed identifier: they test L{isWellFormedSessionID} instead.)

    @raise SessionGoneError: it is not; no such session can exist.
    """
    if not isWellFormedSessionID(sessionID):
        raise SessionGoneError(
            sessionID if isinstance(sessionID, str) else repr(sessionID)
        )
    assert isinstance(sessionID, str)
    return sessionID


def checkCreate(
    data: object, idleTimeout: object, maxValueBytes: int
) -> Tuple[bytes, Optional[float]]:
    """
    The arguments of C{ISessionStore.create}, checked.

    @return: the data and the idle timeout (C{None}: the store's default).
    @raise InvalidArgumentError: for data that is not bytes or an unusable
        idle timeout.
    @raise ValueTooLargeError: for oversized data.
    """
    return checkData(data, maxValueBytes), checkIdleTimeout(idleTimeout)


def checkSave(
    sessionID: object,
    expectedVersion: object,
    data: object,
    idleTimeout: object,
    maxValueBytes: int,
) -> Tuple[int, bytes, Optional[float]]:
    """
    The arguments of C{ISessionStore.save}, checked: first the ones only a
    caller's mistake gets wrong, then the identifier.

    @return: the version, the data and the idle timeout (C{None}: keep the
        session's own).
    @raise InvalidArgumentError: for data that is not bytes, an unusable
        idle timeout or version.
    @raise ValueTooLargeError: for oversized data.
    @raise SessionGoneError: for a malformed identifier.
    """
    version = checkVersion(expectedVersion)
    data = checkData(data, maxValueBytes)
    idle = checkIdleTimeout(idleTimeout)
    checkSessionID(sessionID)
    return version, data, idle
