# -*- test-case-name: tests.integration.test_sql_store -*-
"""
The SQL session store through real adbapi threads: on SQLite files, and on
a real PostgreSQL server the tests start (L{tests.integration._postgres}),
through psycopg 3. Both run the conformance suite, stores sharing one
database race each other (of saves from one version exactly one wins, and
no update is lost), and stopping a store closes its threads and
connections.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any, Callable, List, Set, Tuple

import pytest
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.integration._postgres import PostgresServer, startPostgres
from tests.integration._support import reactor, temporaryDirectory
from tests.sessionstore_conformance import SessionStoreConformance
from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    SessionRecord,
    StoreUnavailableError,
)
from tlsession.stores.sql import TABLE, SQLSessionStore

pytestmark = pytest.mark.integration

_databases = itertools.count(1)


async def addOne(store: SQLSessionStore, sessionID: str) -> None:
    """
    Add one to the counter in session C{sessionID}, re-reading and retrying
    on conflicts as the session manager does (at most 1000 times).
    """
    for _ in range(1000):
        record = await store.load(sessionID)
        try:
            await store.save(sessionID, record.version, b"%d" % (int(record.data) + 1))
        except ConflictError:
            continue
        return
    raise AssertionError("no save got through in 1000 attempts")


def startedStore(testCase: TestCase, store: SQLSessionStore) -> SQLSessionStore:
    """
    Start C{store}, and stop it when C{testCase} ends (waiting until its
    threads and connections are closed).
    """
    store.startService()
    testCase.addCleanup(stopStore, store)
    return store


def stopStore(store: SQLSessionStore) -> Any:
    """
    Stop C{store} if it runs.
    """
    return store.stopService() if store.running else None


def poolThreads() -> Set[threading.Thread]:
    """
    The threads of adbapi pools alive now.
    """
    return {
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("PoolThread-")
    }


async def addMany(store: SQLSessionStore, sessionID: str, times: int) -> None:
    """
    L{addOne} C{times} times in a row, as one client's requests would.
    """
    for _ in range(times):
        await addOne(store, sessionID)


class RacingStoresMixin:
    """
    Tests for two stores (two app processes) on one database, each with its
    own connections, for a C{TestCase} that has C{makeStore(clock, **kw)}.
    """

    #: Builds a started store on the test's database, stopped when the test
    #: ends.
    makeStore: Callable[..., SQLSessionStore]

    def twoStores(self) -> Tuple[SQLSessionStore, SQLSessionStore]:
        clock = Clock()
        clock.advance(1_000_000)
        return self.makeStore(clock), self.makeStore(clock)

    async def test_racingSavesOneWins(self) -> None:
        """
        Of eight saves from the same version, sent at once through two
        stores, exactly one succeeds; the others fail with L{ConflictError}
        and the stored data is the winner's.
        """
        a, b = self.twoStores()
        record = await a.create(b"start")
        saves = [
            (a, b)[i % 2].save(record.sessionID, 1, b"writer %d" % i) for i in range(8)
        ]
        results = await DeferredList(saves, consumeErrors=True)
        winners = [i for i, (ok, _) in enumerate(results) if ok]
        self.assertEqual(len(winners), 1, results)
        for ok, outcome in results:
            if not ok:
                outcome.trap(ConflictError)
        loaded = await b.load(record.sessionID)
        self.assertEqual((loaded.version, loaded.data), (2, b"writer %d" % winners[0]))

    async def test_concurrentIncrementsLoseNothing(self) -> None:
        """
        Four clients incrementing one counter through two stores at once,
        re-reading on conflicts, lose no increment.
        """
        a, b = self.twoStores()
        record = await a.create(b"0")
        await gatherResults(
            [
                Deferred.fromCoroutine(addMany((a, b)[i % 2], record.sessionID, 15))
                for i in range(4)
            ]
        )
        loaded = await a.load(record.sessionID)
        self.assertEqual((loaded.data, loaded.version), (b"60", 61))

    async def test_rotationRacingASave(self) -> None:
        """
        A rotation and a save of the same session at once: either the save
        wins and the rotated session holds its data, or the rotation wins
        and the save fails with L{SessionGoneError}. The old identifier is
        dead either way.
        """
        a, b = self.twoStores()
        for _ in range(10):
            record = await a.create(b"before")
            rotation = a.rotate(record.sessionID)
            saving = b.save(record.sessionID, 1, b"after")
            [(rotated, new), (saved, version)] = await DeferredList(
                [rotation, saving], consumeErrors=True
            )
            self.assertTrue(rotated, new)
            if saved:
                self.assertEqual((new.data, new.version), (b"after", 2))
            else:
                version.trap(SessionGoneError)
                self.assertEqual((new.data, new.version), (b"before", 1))
            self.assertIsNone(await b.load(record.sessionID))
            self.assertEqual(await b.load(new.sessionID), new)

    async def test_racingRotationsOneWins(self) -> None:
        """
        Of two rotations of one session at once, one succeeds and the other
        fails with L{SessionGoneError}: the session is not duplicated.
        """
        a, b = self.twoStores()
        for _ in range(5):
            record = await a.create(b"one")
            results = await DeferredList(
                [a.rotate(record.sessionID), b.rotate(record.sessionID)],
                consumeErrors=True,
            )
            rotated = [outcome for ok, outcome in results if ok]
            self.assertEqual(len(rotated), 1, results)
            for ok, outcome in results:
                if not ok:
                    outcome.trap(SessionGoneError)
            self.assertEqual(await a.load(rotated[0].sessionID), rotated[0])

    async def test_schemaCreationIsIdempotentAndConcurrent(self) -> None:
        """
        Stores creating the schema at the same time, and again, all succeed
        and keep the sessions already stored.
        """
        a, b = self.twoStores()
        record = await a.create(b"kept")
        stores = [a, b, *self.twoStores()]
        await gatherResults([store.createSchema() for store in stores * 2])
        self.assertEqual(await b.load(record.sessionID), record)


class SQLiteThreadedConformanceTests(SessionStoreConformance, TestCase):
    """
    The SQLite store, through adbapi's real thread pool, passes the store
    conformance suite.
    """

    def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> SQLSessionStore:
        return SQLSessionStore.sqlite(
            os.path.join(temporaryDirectory(self), "sessions.sqlite"),
            clock,
            reactor=reactor,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )


class SQLiteRacingTests(RacingStoresMixin, TestCase):
    """
    Two SQLite stores, each with its own connection and thread, on one
    database file.
    """

    def setUp(self) -> None:
        self.path = os.path.join(temporaryDirectory(self), "sessions.sqlite")

    def makeStore(self, clock: Clock, **kw: Any) -> SQLSessionStore:
        store = SQLSessionStore.sqlite(self.path, clock, reactor=reactor, **kw)
        return startedStore(self, store)

    async def test_stopEndsThePoolThread(self) -> None:
        """
        Once C{stopService}'s L{Deferred} has fired, the pool's thread is
        gone and a call in progress when it was called has finished.
        """
        before = poolThreads()
        store = self.makeStore(Clock())
        record = await store.create(b"one")
        self.assertEqual(len(poolThreads() - before), 1)
        saving = store.save(record.sessionID, 1, b"two")
        await store.stopService()
        self.assertEqual(await saving, 2)
        self.assertEqual(poolThreads(), before)


class PostgresTestCase(TestCase):
    """
    Tests with a PostgreSQL server for the class and a fresh database for
    each test.
    """

    server: PostgresServer

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = startPostgres()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.remove()

    def setUp(self) -> None:
        self.database = f"sessions{next(_databases)}"
        self.server.createDatabase(self.database)
        self.addCleanup(self.server.dropDatabase, self.database)

    def postgresStore(self, clock: Clock, **kw: Any) -> SQLSessionStore:
        return SQLSessionStore.postgresql(
            self.server.connectionArguments(self.database),
            clock,
            reactor=reactor,
            **kw,
        )

    def makeStore(self, clock: Clock, **kw: Any) -> SQLSessionStore:
        return startedStore(self, self.postgresStore(clock, **kw))

    def connections(self) -> int:
        """
        How many connections to the test's database the server has, other
        than the one asking.
        """
        [(count,)] = self.server.query(
            self.database,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            self.database,
        )
        return int(count)

    async def noConnectionsLeft(self) -> None:
        """
        Wait until the server has no connection to the test's database (it
        notices a closed connection a moment after the client closed it).
        """
        deadline = time.monotonic() + 10
        while self.connections():
            if time.monotonic() > deadline:
                self.fail("connections to the database were left open")
            await deferLater(reactor, 0.05, lambda: None)


class PostgreSQLConformanceTests(SessionStoreConformance, PostgresTestCase):
    """
    The SQL store on PostgreSQL passes the store conformance suite.
    """

    def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> SQLSessionStore:
        return self.postgresStore(
            clock,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )


class PostgreSQLStoreTests(RacingStoresMixin, PostgresTestCase):
    """
    Stores on one PostgreSQL database race each other, and what else the
    PostgreSQL store does beyond the conformance suite.
    """

    async def test_connectionStrings(self) -> None:
        """
        A libpq connection string or URI works as well as keyword
        arguments, here over TCP on loopback.
        """
        arguments = self.server.connectionArguments(self.database, tcp=True)
        keywordForm = " ".join(f"{key}={value}" for key, value in arguments.items())
        uriForm = (
            f"postgresql://{arguments['user']}@{arguments['host']}:"
            f"{arguments['port']}/{arguments['dbname']}"
        )
        for dsn in [keywordForm, uriForm, uriForm + "?application_name=tests"]:
            store = startedStore(
                self, SQLSessionStore.postgresql(dsn, Clock(), reactor=reactor)
            )
            record = await store.create(b"over tcp")
            self.assertEqual(await store.load(record.sessionID), record, dsn)

    async def test_schema(self) -> None:
        """
        The table has the session columns with PostgreSQL types, and the
        sweep's index on C{expires_at}.
        """
        store = self.makeStore(Clock())
        await store.createSchema()
        columns = self.server.query(
            self.database,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = %s ORDER BY ordinal_position",
            TABLE,
        )
        self.assertEqual(
            columns,
            [
                ("session_id", "text"),
                ("version", "bigint"),
                ("data", "bytea"),
                ("created", "double precision"),
                ("last_seen", "double precision"),
                ("idle_timeout", "double precision"),
                ("expires_at", "double precision"),
            ],
        )
        indexes = self.server.query(
            self.database,
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname",
            TABLE,
        )
        self.assertIn("(expires_at)", indexes[0][0])

    async def test_sweep(self) -> None:
        """
        A sweep deletes at most the number of expired rows asked for, and
        no live row.
        """
        clock = Clock()
        store = self.makeStore(clock, idleTimeout=60)
        for _ in range(5):
            await store.create(idleTimeout=10)
        live = await store.create(b"live")
        clock.advance(30)
        self.assertEqual(await store.sweep(3), 3)
        self.assertEqual(await store.sweep(3), 2)
        self.assertEqual(await store.sweep(3), 0)
        rows = self.server.query(self.database, f"SELECT session_id FROM {TABLE}")
        self.assertEqual(rows, [(live.sessionID,)])

    async def test_impossibleRowIsGone(self) -> None:
        """
        A row with values no store writes (a NaN idle timeout) loads as no
        session, is logged and deleted.
        """
        store = self.makeStore(Clock())
        events: List[Any] = []
        store.log = Logger(observer=events.append)
        record = await store.create(b"x")
        self.server.query(
            self.database,
            f"UPDATE {TABLE} SET idle_timeout = 'NaN' WHERE session_id = %s",
            record.sessionID,
        )
        self.assertIsNone(await store.load(record.sessionID))
        self.assertEqual(len(events), 1)
        self.assertEqual(
            self.server.query(self.database, f"SELECT count(*) FROM {TABLE}"), [(0,)]
        )

    async def test_noServer(self) -> None:
        """
        With no server at the address, calls fail fast with
        L{StoreUnavailableError}.
        """
        arguments = self.server.connectionArguments(self.database)
        arguments["host"] = temporaryDirectory(self)
        store = startedStore(
            self, SQLSessionStore.postgresql(arguments, Clock(), reactor=reactor)
        )
        started = time.monotonic()
        with self.assertRaises(StoreUnavailableError) as caught:
            await store.create()
        self.assertIn("unavailable", str(caught.exception))
        self.assertLess(time.monotonic() - started, 5)

    async def test_lifecycle(self) -> None:
        """
        Building the store opens no connection; starting it creates the
        table; once C{stopService}'s L{Deferred} has fired, every connection
        and thread it opened is closed, and a call in progress when it was
        called has finished.
        """
        before = poolThreads()
        store = self.postgresStore(Clock(), minConnections=2, maxConnections=4)
        self.assertEqual(self.connections(), 0)
        store.startService()
        self.addCleanup(stopStore, store)
        record = await store.create(b"one")
        await gatherResults([store.load(record.sessionID) for _ in range(8)])
        self.assertGreater(self.connections(), 1)
        self.assertGreater(len(poolThreads() - before), 1)
        saving = store.save(record.sessionID, 1, b"two")
        await store.stopService()
        self.assertEqual(await saving, 2)
        await self.noConnectionsLeft()
        self.assertEqual(poolThreads(), before)
        with self.assertRaises(StoreUnavailableError) as caught:
            await store.load(record.sessionID)
        self.assertIn("stopped", str(caught.exception))

    async def test_withoutCreateSchema(self) -> None:
        """
        A store told not to create the schema creates none (its calls fail
        with the driver's error for a missing table), and works on the table
        another store made.
        """
        store = self.makeStore(Clock(), createSchema=False)
        with self.assertRaises(self.server.driver.errors.UndefinedTable):
            await store.create()
        await self.makeStore(Clock()).createSchema()
        record = await store.create(b"x")
        self.assertEqual(await store.load(record.sessionID), record)


class PostgreSQLRestartTests(PostgresTestCase):
    """
    The store across a restart of its server.
    """

    async def test_serverRestart(self) -> None:
        """
        While the server is down calls fail with L{StoreUnavailableError};
        once it is back the store reconnects on its own and the sessions
        are still there.
        """
        clock = Clock()
        store = self.makeStore(clock)
        record = await store.create(b"survives")
        self.server.stop()
        for _ in range(2):
            with self.assertRaises(StoreUnavailableError):
                await store.load(record.sessionID)
        self.server.start()
        loaded = await self.retry(lambda: store.load(record.sessionID))
        self.assertEqual(loaded, record)
        self.assertEqual(await store.save(record.sessionID, 1, b"after"), 2)
        # adbapi logs the rollbacks that failed on the dead connections.
        self.flushLoggedErrors()

    async def retry(self, call: Any, attempts: int = 3) -> SessionRecord:
        """
        C{call()} until it does not fail with L{StoreUnavailableError}: the
        first calls after a restart find the pool's dead connections.
        """
        for _ in range(attempts - 1):
            try:
                result: SessionRecord = await call()
                return result
            except StoreUnavailableError:
                continue
        result = await call()
        return result
