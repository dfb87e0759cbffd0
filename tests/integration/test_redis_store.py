# -*- test-case-name: tests.integration.test_redis_store -*-
"""
L{tlsession.stores.redis.RedisSessionStore} against a real redis-server the
tests start: the conformance suite, two clients racing, outages, and what
the server itself keeps (TTLs, one round trip per call).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Tuple

import pytest
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.integration._servers import LoopbackServer, startRedis
from tests.integration._support import reactor, sleep, waitUntil
from tests.sessionstore_conformance import SessionStoreConformance
from tlsession.interfaces import (
    ConflictError,
    StoreUnavailableError,
)
from tlsession.stores.redis import RedisSessionStore

pytestmark = pytest.mark.integration

#: Seconds a store may take to (re)connect to a server that is up.
CONNECT_TIMEOUT = 15.0


async def connectedStore(
    testCase: TestCase,
    server: LoopbackServer,
    clock: Any = None,
    **options: Any,
) -> RedisSessionStore:
    """
    A store on C{server}, started and connected, and stopped when the test
    ends.
    """
    options.setdefault("replyTimeout", 2.0)
    store = RedisSessionStore.fromEndpoint(
        reactor,
        server.endpoint(),
        clock=clock if clock is not None else reactor,
        **options,
    )
    store.startService()
    testCase.addCleanup(store.stopService)
    await store.whenConnected().addTimeout(CONNECT_TIMEOUT, reactor)
    return store


async def rawConnection(testCase: TestCase, server: LoopbackServer) -> Any:
    """
    A plain txredisapi connection to C{server}, to look at what the store
    left there.
    """
    import txredisapi

    assert server.socketPath is not None
    connection = await txredisapi.UnixConnection(
        server.socketPath, reconnect=False, charset=None, convertNumbers=False
    )
    testCase.addCleanup(connection.disconnect)
    return connection


async def untilAvailable(call: Callable[[], Deferred[Any]]) -> Any:
    """
    Repeat C{call} until it stops failing with L{StoreUnavailableError} (a
    store recovering from an outage), for at most L{CONNECT_TIMEOUT}.
    """
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            return await call()
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            await sleep(0.05)


async def commandCounts(raw: Any, command: str) -> Tuple[int, int]:
    """
    How many times the server ran C{command}, and how many of those
    failed, as C{INFO commandstats} says.
    """
    stats = await raw.info("commandstats")
    line = stats.get(f"cmdstat_{command}")
    if line is None:
        return 0, 0
    fields = dict(item.split("=", 1) for item in line.split(","))
    return int(fields["calls"]), int(fields["failed_calls"])


async def clientCount(raw: Any) -> int:
    """
    The connections the server has open now, as C{INFO clients} says.
    """
    clients = await raw.info("clients")
    return int(clients["connected_clients"])


class RedisConformanceTests(SessionStoreConformance, TestCase):
    """
    The conformance suite on a Redis server over a unix socket.
    """

    async def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> RedisSessionStore:
        """
        A store on a fresh redis-server, not started.
        """
        server = await startRedis(self)
        return RedisSessionStore.fromEndpoint(
            reactor,
            server.endpoint(),
            clock=clock,
            replyTimeout=2.0,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )

    def whenStoreReady(self, store: RedisSessionStore) -> Deferred[Any]:
        """
        Wait for the store to connect.
        """
        return store.whenConnected().addTimeout(CONNECT_TIMEOUT, reactor)


class RedisStoreTests(TestCase):
    """
    What only a real Redis server shows.
    """

    def assertTTL(self, milliseconds: int, expected: int) -> None:
        """
        Assert a key's TTL is C{expected} milliseconds, less the second the
        test may have taken since it was set.
        """
        self.assertTrue(expected - 1000 <= milliseconds <= expected, milliseconds)

    async def test_twoClientsRace(self) -> None:
        """
        Two app processes (two stores, two pools) saving the same session
        from the same version at once: exactly one wins, the other gets
        L{ConflictError}, and the winner's data is what is stored.
        """
        server = await startRedis(self)
        first = await connectedStore(self, server)
        second = await connectedStore(self, server)
        record = await first.create(b"base")
        for round in range(20):
            version = record.version + round
            results = await DeferredList(
                [
                    first.save(record.sessionID, version, b"first %d" % round),
                    second.save(record.sessionID, version, b"second %d" % round),
                ],
                consumeErrors=True,
            )
            winners = [value for ok, value in results if ok]
            losers = [value for ok, value in results if not ok]
            self.assertEqual(winners, [version + 1], results)
            self.assertEqual(len(losers), 1)
            self.assertIsInstance(losers[0], Failure)
            losers[0].trap(ConflictError)
            stored = await second.load(record.sessionID)
            self.assertEqual(stored.version, version + 1)
            self.assertIn(stored.data, (b"first %d" % round, b"second %d" % round))

    async def test_serverKilled(self) -> None:
        """
        When the server dies, calls fail with L{StoreUnavailableError} at
        once, the store reconnects when it is back, and (with nothing
        persisted) old sessions are simply unknown there.
        """
        server = await startRedis(self)
        store = await connectedStore(self, server)
        record = await store.create(b"before")
        server.kill()
        for _ in range(3):
            started = time.monotonic()
            with self.assertRaises(StoreUnavailableError):
                await store.load(record.sessionID)
            with self.assertRaises(StoreUnavailableError):
                await store.save(record.sessionID, 1, b"during")
            self.assertLess(time.monotonic() - started, 1.0)
        await server.start()
        await waitUntil(store.isConnected, CONNECT_TIMEOUT, "reconnecting")
        self.assertIsNone(await store.load(record.sessionID))
        fresh = await store.create(b"after")
        self.assertEqual((await store.load(fresh.sessionID)).data, b"after")

    async def test_serverHangs(self) -> None:
        """
        A server that stops answering fails calls with
        L{StoreUnavailableError} after the reply timeout, not later; once it
        answers again the store works again.
        """
        server = await startRedis(self)
        store = await connectedStore(self, server, replyTimeout=0.5)
        record = await store.create(b"data")
        server.pause()
        started = time.monotonic()
        with self.assertRaises(StoreUnavailableError):
            await store.load(record.sessionID)
        self.assertLess(time.monotonic() - started, 2.0)
        server.resume()
        loaded = await untilAvailable(lambda: store.load(record.sessionID))
        self.assertEqual(loaded.data, b"data")

    async def test_ttlReclaimsSpace(self) -> None:
        """
        An abandoned session's key disappears from Redis on its own (its TTL
        is the idle timeout plus the margin); no sweep is needed.
        """
        server = await startRedis(self)
        store = await connectedStore(self, server, idleTimeout=0.2, reclaimMargin=0.1)
        raw = await rawConnection(self, server)
        record = await store.create(b"abandoned")
        key = b"tlsession:" + record.sessionID.encode()
        self.assertEqual(await raw.exists(key), 1)
        deadline = time.monotonic() + 5
        while await raw.exists(key):
            self.assertLess(time.monotonic(), deadline, "the key outlived its TTL")
            await sleep(0.05)

    async def test_ttlFollowsTimeouts(self) -> None:
        """
        The key's TTL follows the session: the idle timeout plus the margin
        while young, the time left before the absolute timeout near its end;
        rotation moves it with the data and leaves no old key.
        """
        server = await startRedis(self)
        clock = Clock()
        clock.advance(1_000_000)
        store = await connectedStore(
            self, server, clock, idleTimeout=60, absoluteTimeout=200, reclaimMargin=5
        )
        raw = await rawConnection(self, server)
        record = await store.create(b"x")
        key = b"tlsession:" + record.sessionID.encode()
        self.assertTTL(await raw.execute_command("PTTL", key), 65_000)
        for _ in range(4):
            clock.advance(45)
            await store.touch(record.sessionID)
        self.assertTTL(await raw.execute_command("PTTL", key), 25_000)
        rotated = await store.rotate(record.sessionID)
        self.assertEqual(await raw.exists(key), 0)
        newKey = b"tlsession:" + rotated.sessionID.encode()
        self.assertTTL(await raw.execute_command("PTTL", newKey), 25_000)
        self.assertEqual(
            await raw.hgetall(newKey),
            {
                b"data": b"x",
                b"version": b"1",
                b"created": b"1000000.0",
                b"lastSeen": b"1000180.0",
                b"idleTimeout": b"60.0",
            },
        )

    async def test_oneRoundTripEach(self) -> None:
        """
        A load and a save are one C{EVALSHA} each: a script's source
        crosses the wire once (the first time the server is asked for a
        script it does not know), not with every call.
        """
        server = await startRedis(self)
        store = await connectedStore(self, server, poolSize=2)
        raw = await rawConnection(self, server)
        record = await store.create(b"0")
        await store.save(record.sessionID, 1, b"1")
        self.assertEqual(await commandCounts(raw, "evalsha"), (2, 2))
        self.assertEqual(await commandCounts(raw, "eval"), (2, 0))
        for version in range(2, 12):
            await store.load(record.sessionID)
            await store.save(record.sessionID, version, b"%d" % version)
        # The load script is new to the server the first time only.
        self.assertEqual(await commandCounts(raw, "evalsha"), (2 + 20, 3))
        self.assertEqual(await commandCounts(raw, "eval"), (3, 0))

    async def test_serviceParent(self) -> None:
        """
        The store runs under a service parent: its pool connects when the
        parent starts, and once the parent has stopped every connection is
        closed (the server sees them go) and calls fail at once.
        """
        server = await startRedis(self)
        raw = await rawConnection(self, server)
        before = await clientCount(raw)
        parent = MultiService()
        store = RedisSessionStore.fromEndpoint(reactor, server.endpoint(), poolSize=3)
        store.setServiceParent(parent)
        parent.startService()
        self.addCleanup(parent.stopService)
        await store.whenConnected().addTimeout(CONNECT_TIMEOUT, reactor)
        await untilAvailable(lambda: store.create(b"x"))
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while await clientCount(raw) != before + 3:
            self.assertLess(time.monotonic(), deadline, "the pool never filled")
            await sleep(0.05)
        await parent.stopService()
        while await clientCount(raw) != before:
            self.assertLess(time.monotonic(), deadline, "redis saw no close")
            await sleep(0.05)
        with self.assertRaises(StoreUnavailableError):
            await store.load("A" * 43)

    async def test_scriptCacheFlushed(self) -> None:
        """
        After the server forgets its scripts (C{SCRIPT FLUSH}, a restart or
        a failover), saves keep working.
        """
        server = await startRedis(self)
        store = await connectedStore(self, server)
        raw = await rawConnection(self, server)
        record = await store.create(b"0")
        await raw.script_flush()
        self.assertEqual(await store.save(record.sessionID, 1, b"1"), 2)
        self.assertEqual(await store.save(record.sessionID, 2, b"2"), 3)

    async def test_passwordAndDatabase(self) -> None:
        """
        With C{requirepass}, the right password and a database number work
        (the sessions live in that database); a wrong password leaves the
        store failing fast with L{StoreUnavailableError} rather than hanging.
        """
        server = await startRedis(self, extraArguments=["--requirepass", "s3cret"])
        store = await connectedStore(self, server, password="s3cret", dbid=3)
        record = await store.create(b"in db 3")
        import txredisapi

        assert server.socketPath is not None
        raw = await txredisapi.UnixConnection(
            server.socketPath,
            dbid=3,
            password="s3cret",
            reconnect=False,
            charset=None,
            convertNumbers=False,
        )
        self.addCleanup(raw.disconnect)
        self.assertEqual(await raw.exists(b"tlsession:" + record.sessionID.encode()), 1)

        wrong = RedisSessionStore.fromEndpoint(
            reactor, server.endpoint(), password="wrong", clock=reactor
        )
        wrong.startService()
        self.addCleanup(wrong.stopService)
        with self.assertRaises(StoreUnavailableError):
            await wrong.whenConnected().addTimeout(CONNECT_TIMEOUT, reactor)
        started = time.monotonic()
        for _ in range(5):
            with self.assertRaises(StoreUnavailableError):
                await wrong.load(record.sessionID)
            await sleep(0.1)
        self.assertLess(time.monotonic() - started, 2.0)
        self.flushLoggedErrors()

    async def test_tcp(self) -> None:
        """
        The store works over TCP on loopback as well as a unix socket.
        """
        server = await startRedis(self, unixSocket=False)
        store = await connectedStore(self, server)
        record = await store.create(b"over tcp")
        self.assertEqual((await store.load(record.sessionID)).data, b"over tcp")
