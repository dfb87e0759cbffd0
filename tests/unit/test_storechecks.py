# -*- test-case-name: tests.unit.test_storechecks -*-
"""
Tests for L{tlsession.stores._checks}: the lifecycle and argument checks
every session store shares.
"""

from __future__ import annotations

from typing import Any, Callable, List

from twisted.application.service import IService
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tlsession.interfaces import (
    SessionGoneError,
    SessionStoreError,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.stores import newSessionID
from tlsession.stores._checks import (
    MAX_VERSION,
    InvalidArgumentError,
    StoreService,
    checkCreate,
    checkData,
    checkIdleTimeout,
    checkLimits,
    checkPositive,
    checkSave,
    checkSessionID,
    checkVersion,
)

NOT_NUMBERS: List[object] = [True, "5", None, b"5", [5]]
NOT_POSITIVE: List[object] = [0, -1, -0.5, float("inf"), float("-inf"), float("nan")]


class InvalidArgumentErrorTests(SynchronousTestCase):
    """
    L{InvalidArgumentError} is a store error and a built-in argument error.
    """

    def test_family(self) -> None:
        """
        Code catching L{SessionStoreError}, L{TypeError} or L{ValueError}
        catches it.
        """
        for base in (SessionStoreError, TypeError, ValueError):
            with self.assertRaises(base):
                checkData("text", 10)


class StoreServiceTests(SynchronousTestCase):
    """
    L{StoreService} refuses calls, with the reason, while it is not running.
    """

    def unavailable(self, store: StoreService) -> str:
        with self.assertRaises(StoreUnavailableError) as caught:
            store.checkRunning()
        return str(caught.exception)

    def test_lifecycle(self) -> None:
        """
        Before its start a store says it is not started; while running it
        takes calls; after its stop it says it is stopped, and after a new
        start it takes calls again.
        """
        store = StoreService()
        store.storeDescription = "the test store"
        self.assertTrue(verifyObject(IService, store))
        self.assertEqual(self.unavailable(store), "the test store is not started")
        store.startService()
        store.checkRunning()
        store.stopService()
        self.assertEqual(self.unavailable(store), "the test store is stopped")
        store.startService()
        store.checkRunning()


class ArgumentCheckTests(SynchronousTestCase):
    """
    The argument checks accept what stores can use, as it is, and refuse
    everything else with a L{SessionStoreError}.
    """

    def assertRefused(self, error: type, check: Callable[..., Any], *args: Any) -> None:
        with self.assertRaises(error, msg=repr(args)):
            check(*args)

    def test_positive(self) -> None:
        """
        Positive finite ints and floats pass, as floats; booleans,
        non-numbers, zero, negatives, infinities and NaN do not.
        """
        self.assertEqual(checkPositive("t", 5), 5.0)
        self.assertIsInstance(checkPositive("t", 5), float)
        self.assertEqual(checkPositive("t", 0.25), 0.25)
        for value in NOT_NUMBERS + NOT_POSITIVE:
            self.assertRefused(InvalidArgumentError, checkPositive, "t", value)
        with self.assertRaises(InvalidArgumentError) as caught:
            checkPositive("lockTimeout", -1)
        self.assertIn("lockTimeout", str(caught.exception))

    def test_limits(self) -> None:
        """
        A store's limits: timeouts as for L{checkPositive}, the size limit a
        non-negative integer.
        """
        self.assertEqual(checkLimits(60, 3600, 0), (60.0, 3600.0, 0))
        for bad in [
            (0, 3600, 10),
            (60, float("inf"), 10),
            (60, 3600, -1),
            (60, 3600, 1.5),
            (60, 3600, True),
            ("60", 3600, 10),
        ]:
            self.assertRefused(InvalidArgumentError, checkLimits, *bad)

    def test_data(self) -> None:
        """
        Bytes up to the limit pass unchanged; longer bytes are too large;
        anything else, even bytes-like, is refused.
        """
        self.assertEqual(checkData(b"abc", 3), b"abc")
        self.assertEqual(checkData(b"", 0), b"")
        with self.assertRaises(ValueTooLargeError) as caught:
            checkData(b"abcd", 3)
        self.assertEqual((caught.exception.size, caught.exception.limit), (4, 3))
        for data in ["text", bytearray(b"x"), memoryview(b"x"), 5, None]:
            self.assertRefused(InvalidArgumentError, checkData, data, 100)

    def test_idleTimeout(self) -> None:
        """
        C{None} (the default) passes unchanged; otherwise as for
        L{checkPositive}.
        """
        self.assertIsNone(checkIdleTimeout(None))
        self.assertEqual(checkIdleTimeout(30), 30.0)
        for value in [True, "5", *NOT_POSITIVE]:
            self.assertRefused(InvalidArgumentError, checkIdleTimeout, value)

    def test_version(self) -> None:
        """
        Integers from 1 to L{MAX_VERSION} pass; zero, negatives, larger
        integers, booleans and floats do not.
        """
        self.assertEqual(checkVersion(1), 1)
        self.assertEqual(checkVersion(MAX_VERSION), MAX_VERSION)
        for value in [0, -1, MAX_VERSION + 1, True, 1.0, "1", None]:
            self.assertRefused(InvalidArgumentError, checkVersion, value)

    def test_sessionID(self) -> None:
        """
        An identifier a store could have made passes; anything else means
        the session is gone.
        """
        sessionID = newSessionID()
        self.assertEqual(checkSessionID(sessionID), sessionID)
        for value in ["", "../x", "a" * 5000, None, sessionID.encode()]:
            self.assertRefused(SessionGoneError, checkSessionID, value)

    def test_create(self) -> None:
        """
        C{create}'s data and idle timeout are checked together.
        """
        self.assertEqual(checkCreate(b"x", None, 10), (b"x", None))
        self.assertEqual(checkCreate(b"x", 5, 10), (b"x", 5.0))
        self.assertRefused(InvalidArgumentError, checkCreate, "x", None, 10)
        self.assertRefused(InvalidArgumentError, checkCreate, b"x", 0, 10)
        self.assertRefused(ValueTooLargeError, checkCreate, b"x" * 11, None, 10)

    def test_save(self) -> None:
        """
        C{save}'s arguments are checked together; a caller's mistake is
        reported before a malformed identifier.
        """
        sessionID = newSessionID()
        self.assertEqual(checkSave(sessionID, 3, b"x", None, 10), (3, b"x", None))
        self.assertEqual(checkSave(sessionID, 3, b"x", 9, 10), (3, b"x", 9.0))
        for args in [
            ("junk", 0, b"x", None),
            ("junk", 1, "x", None),
            ("junk", 1, b"x", -1),
        ]:
            self.assertRefused(InvalidArgumentError, checkSave, *args, 10)
        self.assertRefused(
            ValueTooLargeError, checkSave, "junk", 1, b"x" * 11, None, 10
        )
        self.assertRefused(SessionGoneError, checkSave, "junk", 1, b"x", None, 10)
