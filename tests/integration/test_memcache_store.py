# -*- test-case-name: tests.integration.test_memcache_store -*-
"""
L{tlsession.stores.memcache.MemcacheSessionStore} against a real memcached
the tests start: the conformance suite, two clients racing, outages, and what
the server itself keeps (item expiry, rotation's leftovers, evictions).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.task import Clock
from twisted.protocols.memcache import MemCacheProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.integration._servers import LoopbackServer, startMemcached
from tests.integration._support import reactor, sleep
from tests.sessionstore_conformance import SessionStoreConformance
from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    StoreUnavailableError,
)
from tlsession.stores.memcache import MemcacheSessionStore

pytestmark = pytest.mark.integration

#: Seconds a store may take to (re)connect to a server that is up.
CONNECT_TIMEOUT = 15.0


async def connectedStore(
    testCase: TestCase,
    server: LoopbackServer,
    clock: Any = None,
    **options: Any,
) -> MemcacheSessionStore:
    """
    A store on C{server}, started and connected, and stopped when the test
    ends.
    """
    store = MemcacheSessionStore.fromEndpoint(
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
    A plain memcached client connection to C{server}, to look at what the
    store left there.
    """
    protocol = await connectProtocol(
        clientFromString(reactor, server.endpoint()), MemCacheProtocol()
    )
    testCase.addCleanup(protocol.transport.loseConnection)
    return protocol


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


async def connectionCount(raw: Any) -> int:
    """
    The connections memcached has open now, as C{stats} says.
    """
    stats = await raw.stats()
    return int(stats[b"curr_connections"])


def key(sessionID: str) -> bytes:
    """
    The memcached key of a session under the default prefix.
    """
    return b"tlsession:" + sessionID.encode("ascii")


class MemcacheConformanceTests(SessionStoreConformance, TestCase):
    """
    The conformance suite on a memcached over a unix socket.
    """

    async def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> MemcacheSessionStore:
        """
        A store on a fresh memcached, not started.
        """
        server = await startMemcached(self)
        return MemcacheSessionStore.fromEndpoint(
            reactor,
            server.endpoint(),
            clock=clock,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )

    def whenStoreReady(self, store: MemcacheSessionStore) -> Deferred[Any]:
        """
        Wait for the store to connect.
        """
        return store.whenConnected().addTimeout(CONNECT_TIMEOUT, reactor)


class MemcacheStoreTests(TestCase):
    """
    What only a real memcached shows.
    """

    async def test_twoClientsRace(self) -> None:
        """
        Two app processes (two stores, two connections) that both loaded a
        session save it from the same version at once: exactly one wins, the
        other gets L{ConflictError}, and the winner's data is what is stored.
        """
        server = await startMemcached(self)
        first = await connectedStore(self, server)
        second = await connectedStore(self, server)
        record = await first.create(b"base")
        for round in range(20):
            version = record.version + round
            await first.load(record.sessionID)
            await second.load(record.sessionID)
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

    async def test_saveRacesRotation(self) -> None:
        """
        A save on the old identifier that lands while another process rotates
        the session is not lost: it either reaches the new identifier's data
        or fails as gone (and the caller retries with the new identifier).
        """
        server = await startMemcached(self)
        rotator = await connectedStore(self, server)
        writer = await connectedStore(self, server)
        for round in range(10):
            record = await rotator.create(b"before")
            await writer.load(record.sessionID)
            results = await DeferredList(
                [
                    rotator.rotate(record.sessionID),
                    writer.save(record.sessionID, 1, b"written %d" % round),
                ],
                consumeErrors=True,
            )
            (rotatedOK, rotated), (savedOK, saved) = results
            self.assertTrue(rotatedOK, rotated)
            self.assertIsNone(await writer.load(record.sessionID))
            moved = await writer.load(rotated.sessionID)
            if savedOK:
                self.assertEqual(
                    (moved.version, moved.data), (2, b"written %d" % round)
                )
            else:
                saved.trap(SessionGoneError)
                self.assertEqual((moved.version, moved.data), (1, b"before"))

    async def test_serverKilled(self) -> None:
        """
        When the server dies, calls fail with L{StoreUnavailableError} at
        once, the store reconnects when it is back, and old sessions are
        simply unknown there.
        """
        server = await startMemcached(self)
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
        self.assertIsNone(await untilAvailable(lambda: store.load(record.sessionID)))
        fresh = await store.create(b"after")
        self.assertEqual((await store.load(fresh.sessionID)).data, b"after")

    async def test_serverHangs(self) -> None:
        """
        A server that stops answering fails calls with
        L{StoreUnavailableError} after the reply timeout, not later; once it
        answers again the store works again.
        """
        server = await startMemcached(self)
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

    async def test_itemExpiryReclaimsSpace(self) -> None:
        """
        An abandoned session's item disappears from memcached on its own (it
        expires at the idle timeout plus the margin); no sweep is needed.
        """
        server = await startMemcached(self)
        store = await connectedStore(self, server, idleTimeout=0.5, reclaimMargin=0.4)
        raw = await rawConnection(self, server)
        record = await store.create(b"abandoned")
        self.assertIsNotNone((await raw.get(key(record.sessionID)))[1])
        deadline = time.monotonic() + 5
        while (await raw.get(key(record.sessionID)))[1] is not None:
            self.assertLess(time.monotonic(), deadline, "the item outlived its expiry")
            await sleep(0.1)

    async def test_rotationLeavesNoOldItem(self) -> None:
        """
        After a rotation the old identifier's item is gone from memcached, not
        merely marked.
        """
        server = await startMemcached(self)
        store = await connectedStore(self, server)
        raw = await rawConnection(self, server)
        record = await store.create(b"secret")
        rotated = await store.rotate(record.sessionID)
        self.assertEqual(await raw.get(key(record.sessionID)), (0, None))
        self.assertIsNotNone((await raw.get(key(rotated.sessionID)))[1])

    async def test_evictedSessionsAreGone(self) -> None:
        """
        A session memcached dropped (evicted, or flushed) loads as C{None} and
        a save fails with L{SessionGoneError} rather than bringing it back.
        """
        server = await startMemcached(self)
        store = await connectedStore(self, server)
        raw = await rawConnection(self, server)
        record = await store.create(b"data")
        await store.load(record.sessionID)
        await raw.flushAll()
        with self.assertRaises(SessionGoneError):
            await store.save(record.sessionID, 1, b"resurrected?")
        self.assertIsNone(await store.load(record.sessionID))
        self.assertEqual(await raw.get(key(record.sessionID)), (0, None))

    async def test_serviceParent(self) -> None:
        """
        The store runs under a service parent: it connects when the parent
        starts, works while it runs, and once the parent has stopped its
        connection is closed (the server sees it go) and calls fail at once.
        """
        server = await startMemcached(self)
        raw = await rawConnection(self, server)
        parent = MultiService()
        store = MemcacheSessionStore.fromEndpoint(reactor, server.endpoint())
        store.setServiceParent(parent)
        before = await connectionCount(raw)
        parent.startService()
        self.addCleanup(parent.stopService)
        await store.whenConnected().addTimeout(CONNECT_TIMEOUT, reactor)
        record = await store.create(b"x")
        self.assertEqual((await store.load(record.sessionID)).data, b"x")
        # memcached counts a connection once a worker thread has taken it,
        # which its stats may show a moment after the first reply.
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while await connectionCount(raw) != before + 1:
            self.assertLess(time.monotonic(), deadline, "memcached saw no connection")
            await sleep(0.05)
        await parent.stopService()
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while await connectionCount(raw) != before:
            self.assertLess(time.monotonic(), deadline, "memcached saw no close")
            await sleep(0.05)
        with self.assertRaises(StoreUnavailableError):
            await store.load(record.sessionID)

    async def test_tcp(self) -> None:
        """
        The store works over TCP on loopback as well as a unix socket.
        """
        server = await startMemcached(self, unixSocket=False)
        store = await connectedStore(self, server)
        record = await store.create(b"over tcp")
        self.assertEqual((await store.load(record.sessionID)).data, b"over tcp")
