# -*- test-case-name: tests.unit.test_sqlstore -*-
"""
Tests for L{tlsession.stores.sql}: the SQL session store on SQLite, its
lifecycle as a service, and the PostgreSQL store's set-up (no server).

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

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.sessionstore_conformance import SessionStoreConformance
from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.stores import newSessionID
from tlsession.stores._checks import InvalidArgumentError
from tlsession.stores.sql import TABLE, SQLSessionStore


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
    A thread pool that runs each job at once, on the calling thread; or,
    once C{held}, when the test calls L{runHeld}.
    """

    def __init__(self) -> None:
        self.started = False
        self.stopped = False
        self.held: Optional[List[Callable[[], None]]] = None

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], None],
        f: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        def job() -> None:
            try:
                result = f(*args, **kw)
            except BaseException:
                onResult(False, Failure())
            else:
                onResult(True, result)

        if self.held is None:
            job()
        else:
            self.held.append(job)

    def runHeld(self) -> None:
        jobs, self.held = self.held or [], None
        for job in jobs:
            job()


def runInline(store: SQLSessionStore) -> List[adbapi.ConnectionPool]:
    """
    Make the pools C{store} opens run their queries inline.

    @return: the pools it opened so far (filled in as it opens them).
    """
    opened: List[adbapi.ConnectionPool] = []
    openPool = store.openPool

    def openInline() -> adbapi.ConnectionPool:
        pool = openPool()
        pool.threadpool = InlineThreadPool()
        opened.append(pool)
        return pool

    store.openPool = openInline
    return opened


def stopped(testCase: SynchronousTestCase, store: Any) -> None:
    """
    Stop C{store}, checking that it has finished stopping at once.
    """
    if store.running:
        testCase.successResultOf(store.stopService())


def temporaryDirectory(testCase: SynchronousTestCase) -> str:
    """
    A fresh directory under the system's temporary directory, removed when
    the test ends.
    """
    path = tempfile.mkdtemp(prefix="tlsql-")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def inlineSQLiteStore(
    testCase: SynchronousTestCase,
    path: str,
    clock: Clock,
    start: bool = True,
    **kw: Any,
) -> SQLSessionStore:
    """
    A SQLite store on C{path} whose queries run inline, started unless
    C{start} is false; stopped when the test ends.
    """
    store = SQLSessionStore.sqlite(path, clock, reactor=InlineReactor(), **kw)
    runInline(store)
    if start:
        store.startService()
    testCase.addCleanup(stopped, testCase, store)
    return store


class LockedWALConnection:
    """
    A stand-in SQLite connection whose first C{refusals} switches to WAL
    mode fail as SQLite fails them while another connection makes the
    switch.
    """

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.attempts = 0
        self.statements: List[str] = []

    def cursor(self) -> LockedWALConnection:
        return self

    def execute(self, statement: str) -> None:
        self.statements.append(statement)
        if statement == "PRAGMA journal_mode=WAL":
            self.attempts += 1
            if self.attempts <= self.refusals:
                raise sqlite3.OperationalError("database is locked")

    def fetchall(self) -> List[Tuple[str]]:
        return [("wal",)]

    def close(self) -> None:
        pass


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
            start=False,
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

    def test_walSwitchWaitsForOtherConnections(self) -> None:
        """
        A connection opened while another one switches a new database file
        to WAL mode, which SQLite refuses at once as "database is locked"
        rather than waiting, tries again until the busy timeout; then the
        error stands.
        """
        store = SQLSessionStore.sqlite(
            self.path, self.clock, reactor=InlineReactor(), busyTimeout=0.2
        )
        pool = store.openPool()
        self.addCleanup(pool.close)
        for refusals, succeeds in [(3, True), (1000, False)]:
            connection = LockedWALConnection(refusals)
            if succeeds:
                pool.openfun(connection)
                self.assertEqual(connection.attempts, refusals + 1)
                self.assertIn("PRAGMA busy_timeout = 200", connection.statements)
            else:
                with self.assertRaises(sqlite3.OperationalError):
                    pool.openfun(connection)

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
        Nonsense limits are refused when the store is built; nonsense
        arguments to its methods come back as failed L{Deferred}s, never
        raised, all L{InvalidArgumentError}s (also L{TypeError}s and
        L{ValueError}s), or L{ValueTooLargeError} for data over the limit.
        """
        for kw in [
            {"idleTimeout": 0},
            {"absoluteTimeout": float("inf")},
            {"maxValueBytes": -1},
            {"busyTimeout": 0},
        ]:
            with self.assertRaises(InvalidArgumentError):
                SQLSessionStore.sqlite(self.path, self.clock, **kw)
        with self.assertRaises(ValueError):
            SQLSessionStore(
                lambda: adbapi.ConnectionPool("sqlite3"), self.clock, "oracle"
            )
        store = self.store(maxValueBytes=10)
        record = self.successResultOf(store.create())
        sessionID = record.sessionID
        for call in [
            lambda: store.create("text"),  # type: ignore[arg-type]
            lambda: store.create(bytearray(b"x")),  # type: ignore[arg-type]
            lambda: store.create(b"", idleTimeout=-5),
            lambda: store.create(b"", idleTimeout=True),
            lambda: store.save(sessionID, 1, "text"),  # type: ignore[arg-type]
            lambda: store.save(sessionID, 1, b"", idleTimeout=float("nan")),
            lambda: store.save(sessionID, 0, b""),
            lambda: store.save(sessionID, 2**63, b""),
            lambda: store.save(sessionID, "1", b""),  # type: ignore[arg-type]
        ]:
            failure = self.failureResultOf(call(), InvalidArgumentError)
            self.assertIsInstance(failure.value, (TypeError, ValueError))
        self.failureResultOf(store.create(b"x" * 11), ValueTooLargeError)
        self.failureResultOf(store.save(sessionID, 1, b"x" * 11), ValueTooLargeError)
        self.assertEqual(self.successResultOf(store.load(sessionID)), record)


class SQLiteLifecycleTests(SynchronousTestCase):
    """
    The SQL store is a service: building it does no I/O, starting it opens
    the pool and the schema, stopping it closes them once the calls in
    progress are done, and calls outside a run fail as unavailable.
    """

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self)
        self.path = os.path.join(self.directory, "sessions.sqlite")
        self.clock = Clock()
        self.reactor = InlineReactor()

    def unstarted(self, **kw: Any) -> Tuple[SQLSessionStore, List[Any]]:
        store = SQLSessionStore.sqlite(
            self.path, self.clock, reactor=self.reactor, **kw
        )
        pools = runInline(store)
        self.addCleanup(stopped, self, store)
        return store, pools

    def calls(self, store: SQLSessionStore) -> List[Callable[[], Deferred[Any]]]:
        sessionID = newSessionID()
        return [
            lambda: store.create(),
            lambda: store.load(sessionID),
            lambda: store.load("malformed"),
            lambda: store.save(sessionID, 1, b""),
            lambda: store.touch(sessionID),
            lambda: store.rotate(sessionID),
            lambda: store.delete(sessionID),
            lambda: store.delete("malformed"),
            lambda: store.sweep(),
            lambda: store.createSchema(),
        ]

    def assertUnavailable(self, store: SQLSessionStore, reason: str) -> None:
        for call in self.calls(store):
            failure = self.failureResultOf(call(), StoreUnavailableError)
            self.assertEqual(str(failure.value), f"the SQL session store is {reason}")

    def test_buildingDoesNoIO(self) -> None:
        """
        Building a store creates no database file and opens no pool (no
        thread would start with the reactor); calls fail, saying the store
        is not started.
        """
        store, pools = self.unstarted()
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual((store.pool, pools, self.reactor.triggers), (None, [], {}))
        self.assertUnavailable(store, "not started")
        self.assertFalse(os.path.exists(self.path))

    def test_startOpensAndCreatesTheSchema(self) -> None:
        """
        Starting the store creates the private database file, starts the
        pool and creates the table before any call.
        """
        store, pools = self.unstarted()
        store.startService()
        self.assertEqual(store.pool, pools[0])
        self.assertTrue(pools[0].threadpool.started)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(rows(self.path), [])

    def test_withoutCreateSchema(self) -> None:
        """
        With C{createSchema=False} the store creates no table: calls fail as
        unavailable until the table exists, then work.
        """
        store, _ = self.unstarted(createSchema=False)
        store.startService()
        failure = self.failureResultOf(store.create(), StoreUnavailableError)
        self.assertIn("no such table", str(failure.value))
        self.successResultOf(
            inlineSQLiteStore(self, self.path, self.clock).createSchema()
        )
        record = self.successResultOf(store.create(b"x"))
        self.assertEqual(self.successResultOf(store.load(record.sessionID)), record)

    def test_stopWaitsForCallsThenCloses(self) -> None:
        """
        L{SQLSessionStore.stopService} refuses new calls at once, lets the
        calls in progress finish, then stops the pool's threads and closes
        its connections before its L{Deferred} fires.
        """
        store, pools = self.unstarted()
        store.startService()
        pool = pools[0]
        record = self.successResultOf(store.create(b"one"))
        threadpool = pool.threadpool
        threadpool.held = []
        saving = store.save(record.sessionID, 1, b"two")
        done = store.stopService()
        self.assertNoResult(saving)
        self.assertNoResult(done)
        self.assertUnavailable(store, "stopped")
        self.assertFalse(threadpool.stopped)
        threadpool.runHeld()
        self.assertEqual(self.successResultOf(saving), 2)
        self.successResultOf(done)
        self.assertTrue(threadpool.stopped)
        self.assertEqual(
            (pool.running, pool.connections, store.pool), (False, {}, None)
        )
        self.assertEqual(self.reactor.triggers, {})
        self.assertEqual(rows(self.path), [(record.sessionID, 2, b"two")])

    def test_restart(self) -> None:
        """
        A stopped store starts again with a new pool, and finds its
        sessions.
        """
        store, pools = self.unstarted()
        store.startService()
        record = self.successResultOf(store.create(b"kept"))
        self.successResultOf(store.stopService())
        store.startService()
        self.assertEqual(len(pools), 2)
        self.assertEqual(self.successResultOf(store.load(record.sessionID)), record)

    def test_unsupportedDriver(self) -> None:
        """
        A DB-API module whose parameter style the store cannot write fails
        the start, and leaves no pool to start with the reactor.
        """
        reactor = InlineReactor()
        pools: List[adbapi.ConnectionPool] = []

        def openPool() -> adbapi.ConnectionPool:
            pool = adbapi.ConnectionPool("sqlite3", self.path, cp_reactor=reactor)
            pool.dbapi = type("Driver", (), {"paramstyle": "format"})
            pools.append(pool)
            return pool

        store = SQLSessionStore(openPool, self.clock)
        with self.assertRaises(InvalidArgumentError):
            store.startService()
        self.assertFalse(store.running)
        self.assertEqual(reactor.triggers, {})


class PostgreSQLSetupTests(SynchronousTestCase):
    """
    What the PostgreSQL store does before it reaches a server: it connects
    through psycopg 3 with a connect timeout, at start only, and reports a
    server it cannot reach as unavailable.
    """

    def setUp(self) -> None:
        self.reactor = InlineReactor()
        self.clock = Clock()

    def store(
        self, connection: Any, **kw: Any
    ) -> Tuple[SQLSessionStore, List[adbapi.ConnectionPool]]:
        store = SQLSessionStore.postgresql(
            connection, self.clock, reactor=self.reactor, **kw
        )
        pools = runInline(store)
        self.addCleanup(stopped, self, store)
        return store, pools

    def connectArguments(self, connection: Any, **kw: Any) -> Tuple[Any, Any]:
        store, pools = self.store(connection, **kw)
        store.startService()
        return pools[0].connargs, pools[0].connkw

    def test_buildingDoesNoIO(self) -> None:
        """
        Building the store opens no pool and registers nothing with the
        reactor.
        """
        store, pools = self.store("host=/nonexistent dbname=sessions")
        self.assertEqual((store.pool, pools, self.reactor.triggers), (None, [], {}))
        self.failureResultOf(store.create(), StoreUnavailableError)

    def test_psycopgWithConnectTimeout(self) -> None:
        """
        The pool connects with psycopg, given the connection string or
        keywords as they are plus libpq's C{connect_timeout} (whole seconds,
        at least 2) unless they set one.
        """
        dsn = "host=/run/postgresql dbname=site"
        uri = "postgresql://u@localhost/site"
        for connection, kw, expected in [
            (dsn, {}, ((dsn,), {"connect_timeout": 5})),
            (dsn, {"connectTimeout": 0.5}, ((dsn,), {"connect_timeout": 2})),
            (dsn, {"connectTimeout": 7.2}, ((dsn,), {"connect_timeout": 8})),
            (dsn + " connect_timeout=1", {}, ((dsn + " connect_timeout=1",), {})),
            (uri, {}, ((uri,), {"connect_timeout": 5})),
            (uri + "?connect_timeout=3", {}, ((uri + "?connect_timeout=3",), {})),
            (
                {"host": "h", "dbname": "d"},
                {},
                (("",), {"host": "h", "dbname": "d", "connect_timeout": 5}),
            ),
            (
                {"dbname": "d", "connect_timeout": 9},
                {},
                (("",), {"dbname": "d", "connect_timeout": 9}),
            ),
        ]:
            self.assertEqual(self.connectArguments(connection, **kw), expected)
        store, pools = self.store(dsn)
        store.startService()
        self.assertEqual(pools[0].dbapiName, "psycopg")
        self.assertTrue(pools[0].reconnect)

    def test_badArguments(self) -> None:
        """
        A connection string libpq cannot parse and nonsense pool sizes are
        refused when the store is built.
        """
        for connection, kw in [
            ("host=x dbname", {}),
            ("postgresql://[", {}),
            ("dbname=x", {"minConnections": 0}),
            ("dbname=x", {"minConnections": 3, "maxConnections": 2}),
            ("dbname=x", {"maxConnections": 1.5}),
            ("dbname=x", {"connectTimeout": 0}),
        ]:
            with self.assertRaises(InvalidArgumentError, msg=repr((connection, kw))):
                SQLSessionStore.postgresql(connection, self.clock, **kw)

    def test_noServerIsUnavailable(self) -> None:
        """
        With no server at the address, calls fail with
        L{StoreUnavailableError} (psycopg's C{OperationalError}).
        """
        directory = temporaryDirectory(self)
        store, _ = self.store({"host": directory, "dbname": "sessions"})
        store.startService()
        failure = self.failureResultOf(store.create(), StoreUnavailableError)
        self.assertIn("session database is unavailable", str(failure.value))
        self.failureResultOf(store.load(newSessionID()), StoreUnavailableError)
