# -*- test-case-name: tests.unit.test_sqlstore -*-
"""
Tests for L{tlsession.stores.sql}: the SQL session store on SQLite and the
sweep service.

The adbapi pool here runs its queries inline, on the test's thread, so the
tests are deterministic and need no reactor; the same store against SQLite
and PostgreSQL through real threads is in
L{tests.integration.test_sql_store}.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.sessionstore_conformance import SessionStoreConformance
from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    StoreUnavailableError,
)
from tlsession.stores import newSessionID
from tlsession.stores.sql import (
    TABLE,
    SessionSweepService,
    SQLSessionStore,
)


class InlineReactor:
    """
    Just enough reactor for an adbapi pool whose thread pool is replaced by
    L{InlineThreadPool}: results are delivered at once, on this thread.
    """

    def __init__(self) -> None:
        self.triggers: Dict[int, Tuple[str, str, Callable[..., Any]]] = {}

    def callWhenRunning(self, f: Callable[..., Any], *args: Any) -> int:
        # Never called: the test starts the pool itself.
        return self.addSystemEventTrigger("after", "startup", f)

    def addSystemEventTrigger(
        self, phase: str, event: str, f: Callable[..., Any], *args: Any
    ) -> int:
        key = len(self.triggers) + 1
        self.triggers[key] = (phase, event, f)
        return key

    def removeSystemEventTrigger(self, key: int) -> None:
        del self.triggers[key]

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class InlineThreadPool:
    """
    A thread pool that runs each job at once, on the calling thread.
    """

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], None],
        f: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        try:
            result = f(*args, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


def temporaryDirectory(testCase: SynchronousTestCase) -> str:
    """
    A fresh directory under the system's temporary directory, removed when
    the test ends.
    """
    path = tempfile.mkdtemp(prefix="tlsql-")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def inlineSQLiteStore(
    testCase: SynchronousTestCase, path: str, clock: Clock, **kw: Any
) -> SQLSessionStore:
    """
    A SQLite store on C{path} whose queries run inline; closed when the test
    ends.
    """
    reactor = InlineReactor()
    store = SQLSessionStore.sqlite(path, clock, reactor=reactor, **kw)
    store.pool.threadpool = InlineThreadPool()
    store.pool.start()
    testCase.addCleanup(store.close)
    return store


def rows(path: str) -> List[Tuple[Any, ...]]:
    """
    Every row of the sessions table, read with a separate connection.
    """
    with sqlite3.connect(path) as connection:
        return connection.execute(
            f"SELECT session_id, version, data FROM {TABLE} ORDER BY session_id"
        ).fetchall()


class SQLiteConformanceTests(SessionStoreConformance, TestCase):
    """
    The SQL store on SQLite passes the store conformance suite.
    """

    def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> SQLSessionStore:
        path = os.path.join(temporaryDirectory(self), "sessions.sqlite")
        return inlineSQLiteStore(
            self,
            path,
            clock,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )


class SQLiteStoreTests(TestCase):
    """
    What the SQLite store does beyond the conformance suite: schema, two
    stores on one database, corrupt rows, an unavailable database, sweeping.
    """

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self)
        self.path = os.path.join(self.directory, "sessions.sqlite")
        self.clock = Clock()
        self.clock.advance(1_000_000)

    def store(self, path: Optional[str] = None, **kw: Any) -> SQLSessionStore:
        return inlineSQLiteStore(self, path or self.path, self.clock, **kw)

    def test_schemaCreationIsIdempotent(self) -> None:
        """
        Creating the schema again, from the same store or another one on the
        same database, keeps the sessions already stored.
        """
        first = self.store()
        record = self.successResultOf(first.create(b"kept"))
        self.successResultOf(first.createSchema())
        second = self.store()
        self.successResultOf(second.createSchema())
        loaded = self.successResultOf(second.load(record.sessionID))
        self.assertEqual(loaded, record)
        with sqlite3.connect(self.path) as connection:
            names = {
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE tbl_name = ?", (TABLE,)
                )
            }
        self.assertEqual(
            names, {TABLE, f"{TABLE}_expires_at", f"sqlite_autoindex_{TABLE}_1"}
        )

    def test_walModeAndPrivateFile(self) -> None:
        """
        The database runs in WAL mode (readers in other processes do not
        block writers) and its file is readable by its owner only.
        """
        self.successResultOf(self.store().create())
        with sqlite3.connect(self.path) as connection:
            (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        self.assertEqual(mode, "wal")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_twoStoresOneDatabase(self) -> None:
        """
        Two stores on one database (two app processes) see each other's
        sessions, and of two saves from the same version exactly one wins.
        """
        a, b = self.store(), self.store()
        record = self.successResultOf(a.create(b"start"))
        self.assertEqual(self.successResultOf(b.load(record.sessionID)), record)
        self.assertEqual(self.successResultOf(b.save(record.sessionID, 1, b"b")), 2)
        failure = self.failureResultOf(a.save(record.sessionID, 1, b"a"), ConflictError)
        self.assertEqual((failure.value.expected, failure.value.current), (1, 2))
        loaded = self.successResultOf(a.load(record.sessionID))
        self.assertEqual((loaded.version, loaded.data), (2, b"b"))
        self.successResultOf(b.delete(record.sessionID))
        self.failureResultOf(a.save(record.sessionID, 2, b"again"), SessionGoneError)
        self.assertEqual(rows(self.path), [])

    def test_rotateRemovesTheOldRow(self) -> None:
        """
        After rotation only the new identifier has a row, with the data,
        version and creation time of the old one.
        """
        store = self.store()
        record = self.successResultOf(store.create(b"data"))
        self.clock.advance(5)
        rotated = self.successResultOf(store.rotate(record.sessionID))
        self.assertEqual(rows(self.path), [(rotated.sessionID, 1, b"data")])
        self.assertEqual(rotated.created, record.created)
        self.assertEqual(rotated.lastSeen, record.lastSeen + 5)

    def test_rotationKeepsTheAbsoluteTimeout(self) -> None:
        """
        Rotating a session does not extend its absolute lifetime.
        """
        store = self.store(idleTimeout=100, absoluteTimeout=150)
        record = self.successResultOf(store.create())
        self.clock.advance(90)
        rotated = self.successResultOf(store.rotate(record.sessionID))
        self.clock.advance(61)
        self.assertIsNone(self.successResultOf(store.load(rotated.sessionID)))

    def corruptRow(self, sql: str) -> Tuple[SQLSessionStore, str, List[Dict[str, Any]]]:
        store = self.store()
        events: List[Dict[str, Any]] = []
        store.log = Logger(observer=events.append)
        record = self.successResultOf(store.create(b"fine"))
        with sqlite3.connect(self.path) as connection:
            connection.execute(sql, (record.sessionID,))
        return store, record.sessionID, events

    def test_corruptRowIsGone(self) -> None:
        """
        A row holding something no store wrote (text for data, a word for a
        version) loads as no session, is logged and deleted, and saving to
        it fails with L{SessionGoneError}.
        """
        for sql in [
            f"UPDATE {TABLE} SET data = 'text' WHERE session_id = ?",
            f"UPDATE {TABLE} SET version = 'one' WHERE session_id = ?",
            f"UPDATE {TABLE} SET created = 'yesterday' WHERE session_id = ?",
            f"UPDATE {TABLE} SET idle_timeout = -1 WHERE session_id = ?",
        ]:
            store, sessionID, events = self.corruptRow(sql)
            self.assertIsNone(self.successResultOf(store.load(sessionID)), sql)
            self.assertEqual(len(events), 1, sql)
            self.assertIn("corrupt session row", events[0]["log_format"])
            self.assertEqual(rows(self.path), [], sql)

    def test_corruptRowSaveIsGone(self) -> None:
        """
        Saving to a corrupt row that has not been loaded fails with
        L{SessionGoneError} rather than crashing.
        """
        store, sessionID, events = self.corruptRow(
            f"UPDATE {TABLE} SET version = 7, created = 'x' WHERE session_id = ?"
        )
        self.failureResultOf(store.save(sessionID, 1, b"new"), SessionGoneError)
        self.failureResultOf(store.rotate(sessionID), SessionGoneError)

    def test_unreachableDatabase(self) -> None:
        """
        A database that cannot be opened makes every call fail with
        L{StoreUnavailableError}; once it can be, the store works, creating
        its schema then.
        """
        path = os.path.join(self.directory, "missing", "sessions.sqlite")
        store = self.store(path)
        failure = self.failureResultOf(store.create(), StoreUnavailableError)
        self.assertIn("session database is unavailable", str(failure.value))
        self.failureResultOf(store.load(newSessionID()), StoreUnavailableError)
        os.mkdir(os.path.dirname(path))
        record = self.successResultOf(store.create(b"late"))
        self.assertEqual(self.successResultOf(store.load(record.sessionID)), record)

    def test_lockedDatabaseFailsFast(self) -> None:
        """
        While another process holds the write lock for longer than the busy
        timeout, a save fails with L{StoreUnavailableError} and changes
        nothing; afterwards it succeeds.
        """
        store = self.store(busyTimeout=0.05)
        record = self.successResultOf(store.create(b"before"))
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        self.failureResultOf(
            store.save(record.sessionID, 1, b"x"), StoreUnavailableError
        )
        other.execute("ROLLBACK")
        self.assertEqual(self.successResultOf(store.save(record.sessionID, 1, b"x")), 2)

    def test_sweepDeletesExpiredRowsInBatches(self) -> None:
        """
        L{SQLSessionStore.sweep} deletes at most the number of expired rows
        it is asked to, and never a live one.
        """
        store = self.store(idleTimeout=60)
        expired = [self.successResultOf(store.create(idleTimeout=10)) for _ in range(5)]
        live = self.successResultOf(store.create(b"live"))
        self.clock.advance(30)
        self.assertEqual(self.successResultOf(store.sweep(2)), 2)
        self.assertEqual(len(rows(self.path)), 4)
        self.assertEqual(self.successResultOf(store.sweep(10)), 3)
        self.assertEqual(self.successResultOf(store.sweep(10)), 0)
        self.assertEqual(rows(self.path), [(live.sessionID, 1, b"live")])
        self.assertEqual(len(expired), 5)

    def test_badArguments(self) -> None:
        """
        Nonsense limits are refused when the store is built, and nonsense
        idle timeouts when they are used.
        """
        with self.assertRaises(ValueError):
            self.store(idleTimeout=0)
        with self.assertRaises(ValueError):
            self.store(absoluteTimeout=float("inf"))
        with self.assertRaises(ValueError):
            self.store(maxValueBytes=-1)
        store = self.store()
        self.failureResultOf(store.create(idleTimeout=-5), ValueError)
        record = self.successResultOf(store.create())
        self.failureResultOf(
            store.save(record.sessionID, 1, b"", idleTimeout=float("nan")), ValueError
        )
        with self.assertRaises(ValueError):
            SQLSessionStore(store.pool, self.clock, "oracle")


class FakeSweepable:
    """
    A store whose C{sweep} answers from a script: numbers, exceptions or
    Deferreds the test fires.
    """

    def __init__(self, answers: List[Any]) -> None:
        self.answers = answers
        self.calls: List[int] = []

    def sweep(self, maxRows: int) -> Deferred[int]:
        self.calls.append(maxRows)
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, Deferred):
            return answer
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)


class SessionSweepServiceTests(SynchronousTestCase):
    """
    L{SessionSweepService} sweeps on its clock, in bounded batches, survives
    errors and leaves no timer behind.
    """

    def service(
        self, answers: List[Any], **kw: Any
    ) -> Tuple[SessionSweepService, FakeSweepable, Clock, List[Dict[str, Any]]]:
        clock = Clock()
        store = FakeSweepable(answers)
        service = SessionSweepService(store, clock, **kw)
        events: List[Dict[str, Any]] = []
        service.log = Logger(observer=events.append)
        return service, store, clock, events

    def test_sweepsEveryInterval(self) -> None:
        """
        Nothing is swept at start; each interval runs one sweep, then stopping
        leaves no pending timer.
        """
        service, store, clock, _ = self.service([3, 0], interval=10, batchSize=100)
        service.startService()
        self.assertEqual(store.calls, [])
        clock.advance(10)
        self.assertEqual(store.calls, [100])
        clock.advance(10)
        self.assertEqual(store.calls, [100, 100])
        self.assertEqual(service.removed, 3)
        self.assertIsNone(service.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_fullBatchesRepeatUpToTheLimit(self) -> None:
        """
        While batches come back full the tick sweeps again, at most
        C{maxBatches} times; the rest waits for the next tick.
        """
        service, store, clock, _ = self.service(
            [5, 5, 5, 5, 2], interval=10, batchSize=5, maxBatches=3
        )
        service.startService()
        clock.advance(10)
        self.assertEqual((len(store.calls), service.removed), (3, 15))
        clock.advance(10)
        self.assertEqual((len(store.calls), service.removed), (5, 22))
        service.stopService()

    def test_errorsAreLoggedAndTheNextTickRetries(self) -> None:
        """
        An unavailable store is a warning, any other error is logged with its
        traceback, and sweeping goes on at the next interval.
        """
        service, store, clock, events = self.service(
            [StoreUnavailableError("database down"), RuntimeError("bug"), 4],
            interval=10,
        )
        service.startService()
        clock.advance(10)
        clock.advance(10)
        clock.advance(10)
        self.assertEqual(len(store.calls), 3)
        self.assertEqual(service.removed, 4)
        self.assertIn("database down", events[0]["error"])
        self.assertIsInstance(events[1]["log_failure"].value, RuntimeError)
        service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopWaitsForASweepInProgress(self) -> None:
        """
        Stopping during a sweep returns a L{Deferred} that fires once the
        sweep is done, and no further sweep starts.
        """
        pending: Deferred[int] = Deferred()
        service, store, clock, _ = self.service([pending, 5], interval=10, batchSize=5)
        service.startService()
        clock.advance(10)
        stopped = service.stopService()
        assert stopped is not None
        self.assertNoResult(stopped)
        pending.callback(5)
        self.successResultOf(stopped)
        self.assertEqual(store.calls, [5])
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(100)
        self.assertEqual(store.calls, [5])

    def test_sweepsARealStore(self) -> None:
        """
        Run against a SQLite store, the service removes expired sessions and
        keeps live ones.
        """
        directory = temporaryDirectory(self)
        path = os.path.join(directory, "sessions.sqlite")
        clock = Clock()
        store = inlineSQLiteStore(self, path, clock)
        old = [self.successResultOf(store.create(idleTimeout=5)) for _ in range(3)]
        live = self.successResultOf(store.create())
        service = SessionSweepService(store, clock, interval=30, batchSize=2)
        service.startService()
        clock.advance(30)
        self.assertEqual(rows(path), [(live.sessionID, 1, b"")])
        self.assertEqual(service.removed, len(old))
        service.stopService()

    def test_badArguments(self) -> None:
        """
        A zero interval or batch size is refused.
        """
        for kw in [{"interval": 0}, {"batchSize": 0}, {"maxBatches": 0}]:
            with self.assertRaises(ValueError):
                SessionSweepService(FakeSweepable([]), Clock(), **kw)
