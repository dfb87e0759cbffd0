# -*- test-case-name: tests.integration.test_memcache_cachestore -*-
"""
L{tlcache.memcachestore.MemcacheCacheStore} against a real memcached the
tests start: two stores (two app processes) sharing it, invalidations seen
across them, the item size limit, outages, and a clean service stop.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Optional, Tuple

import pytest
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.task import Clock
from twisted.protocols.memcache import MemCacheProtocol
from twisted.trial.unittest import TestCase

from tests.integration._servers import LoopbackServer, startMemcached
from tests.integration._support import reactor, sleep, waitUntil
from tlcache._memcacheitem import _encodeItem
from tlcache.keys import familyOfKey, keyPrefix
from tlcache.memcachestore import (
    DEFAULT_MAX_ENTRY_BYTES,
    MAX_BOUNDARIES,
    MAX_TAGS,
    CacheStoreUnavailableError,
    MemcacheCacheStore,
    boundaryPrefixes,
)
from tlcache.store import CacheEntry

pytestmark = pytest.mark.integration

#: Seconds a store may take to (re)connect to a server that is up.
CONNECT_TIMEOUT = 15.0

NOW = 1_000_000.0

NEWS = b"example.com|/news/today|" + b"a1" * 16
SPORT = b"example.com|/sport/|" + b"b2" * 16
OTHER_HOST = b"other.example|/news/today|" + b"c3" * 16


def entry(
    body: bytes = b"<p>page</p>",
    now: float = NOW,
    ttl: float = 60.0,
    tags: Tuple[str, ...] = (),
    maxStale: float = 600.0,
) -> CacheEntry:
    return CacheEntry.build(
        body, [(b"content-type", b"text/html")], now, ttl, 0.0, maxStale, tags
    )


async def runningStore(
    testCase: TestCase,
    server: LoopbackServer,
    clock: Optional[Any] = None,
    **options: Any,
) -> MemcacheCacheStore:
    """
    A store on C{server}, started as a service and connected; stopped when
    the test ends.
    """
    store = MemcacheCacheStore.fromEndpoint(
        reactor,
        server.endpoint(),
        clock=clock if clock is not None else reactor,
        **options,
    )
    store.startService()
    testCase.addCleanup(store.stopService)
    await waitUntil(store.isConnected, CONNECT_TIMEOUT, "the store connecting")
    return store


async def rawConnection(testCase: TestCase, server: LoopbackServer) -> Any:
    """
    A plain memcached client connection to C{server}.
    """
    protocol = await connectProtocol(
        clientFromString(reactor, server.endpoint()), MemCacheProtocol()
    )
    testCase.addCleanup(protocol.transport.loseConnection)
    return protocol


async def eventually(call: Callable[[], Awaitable[Any]], accept: Any) -> None:
    """
    Repeat C{call} until it answers C{accept} (a store recovering from an
    outage), for at most L{CONNECT_TIMEOUT}.
    """
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        if accept(await call()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{call} did not recover in {CONNECT_TIMEOUT} s")
        await sleep(0.05)


class SharedMemcacheTests(TestCase):
    """
    Two stores, as two processes behind the balancer, on one memcached.
    """

    async def twoStores(
        self, unixSocket: bool = True, **options: Any
    ) -> Tuple[MemcacheCacheStore, MemcacheCacheStore, Clock]:
        server = await startMemcached(self, unixSocket=unixSocket)
        clock = Clock()
        clock.advance(NOW)
        first = await runningStore(self, server, clock, **options)
        second = await runningStore(self, server, clock, **options)
        return first, second, clock

    async def test_renderedOnceSharedByBoth(self) -> None:
        """
        What one process stores, the other reads back equal, tags and
        headers included.
        """
        first, second, _ = await self.twoStores()
        stored = entry(b"\x00\xffbody" * 1000, tags=("news", "front"))
        self.assertTrue(await first.set(NEWS, stored))
        self.assertEqual(await second.get(NEWS), stored)
        self.assertIsNone(await second.get(SPORT))
        stats = second.stats()
        self.assertEqual((stats["remoteHits"], stats["remoteMisses"]), (1, 1))

    async def test_invalidatePrefixSeenAfterNearTTL(self) -> None:
        """
        A subtree invalidated in one process is gone in the other once its
        near copy is older than nearTTL; other subtrees and hosts stay.
        """
        first, second, clock = await self.twoStores()
        for key in (NEWS, SPORT, OTHER_HOST):
            self.assertTrue(await first.set(key, entry(key)))
            self.assertIsNotNone(await second.get(key))
        await first.invalidatePrefix(keyPrefix(b"example.com", b"/news/"))
        self.assertIsNone(await first.get(NEWS))
        self.assertIsNotNone(await second.get(NEWS))
        clock.advance(second.nearTTL)
        self.assertIsNone(await second.get(NEWS))
        self.assertIsNotNone(await second.get(SPORT))
        self.assertIsNotNone(await second.get(OTHER_HOST))
        self.assertEqual(second.stats()["invalidatedReads"], 1)

    async def test_invalidateHostAndFamily(self) -> None:
        """
        A whole virtual host, and one path's variants, are invalidated
        across processes.
        """
        first, second, _ = await self.twoStores(nearTTL=0)
        for key in (NEWS, SPORT, OTHER_HOST):
            self.assertTrue(await first.set(key, entry(key)))
        await first.invalidatePrefix(familyOfKey(OTHER_HOST) + b"|")
        self.assertIsNone(await second.get(OTHER_HOST))
        self.assertIsNotNone(await second.get(NEWS))
        await second.invalidatePrefix(keyPrefix(b"example.com"))
        self.assertEqual([await first.get(key) for key in (NEWS, SPORT)], [None, None])

    async def test_invalidateTag(self) -> None:
        """
        A tag invalidated in one process drops the tagged entries in the
        other; a new entry under the same key and tag is current again.
        """
        first, second, _ = await self.twoStores(nearTTL=0)
        self.assertTrue(await first.set(NEWS, entry(tags=("news",))))
        self.assertTrue(await first.set(SPORT, entry(tags=("sport",))))
        await first.invalidateTag("news")
        self.assertIsNone(await second.get(NEWS))
        self.assertIsNotNone(await second.get(SPORT))
        self.assertTrue(await second.set(NEWS, entry(b"again", tags=("news",))))
        fetched = await first.get(NEWS)
        self.assertEqual(fetched.body, b"again")

    async def test_delete(self) -> None:
        """
        A delete in one process is a miss in the other.
        """
        first, second, _ = await self.twoStores(nearTTL=0)
        self.assertTrue(await first.set(NEWS, entry()))
        self.assertTrue(await second.delete(NEWS))
        self.assertIsNone(await first.get(NEWS))
        self.assertFalse(await second.delete(NEWS))

    async def test_itemSizeLimit(self) -> None:
        """
        An item of exactly the default maxEntryBytes fits in a memcached with
        the default 1 MiB item size; one byte more is refused by the store
        (and the older item under the key goes).
        """
        first, second, _ = await self.twoStores(nearTTL=0)
        overhead = len(_encodeItem(NEWS, entry(b""), [0] * 4, []))
        largest = entry(b"x" * (DEFAULT_MAX_ENTRY_BYTES - overhead))
        self.assertTrue(await first.set(NEWS, largest))
        self.assertEqual(await second.get(NEWS), largest)
        tooLarge = entry(b"x" * (DEFAULT_MAX_ENTRY_BYTES - overhead + 1))
        self.assertFalse(await first.set(NEWS, tooLarge))
        self.assertIsNone(await second.get(NEWS))
        self.assertEqual(first.stats()["refusals"], 1)
        self.assertEqual(first.stats()["remoteErrors"], 0)

    async def test_deepestKeyAndMostTags(self) -> None:
        """
        A key with the most boundaries and an entry with the most tags work
        against a real server (the longest multi-key gets there are).
        """
        first, second, _ = await self.twoStores(nearTTL=0)
        key = b"example.com|" + b"/level" * (MAX_BOUNDARIES - 2) + b"|" + b"d" * 32
        self.assertEqual(len(boundaryPrefixes(key)), MAX_BOUNDARIES)
        tags = tuple(f"tag number {n}" for n in range(MAX_TAGS))
        stored = entry(tags=tags)
        self.assertTrue(await first.set(key, stored))
        self.assertEqual(await second.get(key), stored)
        await first.invalidateTag(tags[-1])
        self.assertIsNone(await second.get(key))

    async def test_namespacesAreSeparate(self) -> None:
        """
        Stores with different namespaces on one memcached see nothing of
        each other, invalidations included.
        """
        server = await startMemcached(self)
        siteA = await runningStore(self, server, namespace=b"site-a:", nearTTL=0)
        siteB = await runningStore(self, server, namespace=b"site-b:", nearTTL=0)
        now = reactor.seconds()
        self.assertTrue(await siteA.set(NEWS, entry(b"a", now=now)))
        self.assertTrue(await siteB.set(NEWS, entry(b"b", now=now)))
        await siteA.invalidatePrefix(b"example.com|")
        self.assertIsNone(await siteA.get(NEWS))
        self.assertEqual((await siteB.get(NEWS)).body, b"b")

    async def test_memcachedExpiresItems(self) -> None:
        """
        memcached itself drops an item at its entry's hard limit: nothing
        needs sweeping.
        """
        server = await startMemcached(self)
        store = await runningStore(self, server, nearTTL=0)
        raw = await rawConnection(self, server)
        self.assertTrue(
            await store.set(NEWS, entry(now=reactor.seconds(), ttl=0.5, maxStale=0.5))
        )
        itemKey = store._itemKey(NEWS)
        self.assertIsNotNone((await raw.get(itemKey))[1])
        await eventually(lambda: raw.get(itemKey), lambda got: got[1] is None)

    async def test_tcp(self) -> None:
        """
        The store works over TCP on loopback as well as a unix socket.
        """
        first, second, _ = await self.twoStores(unixSocket=False)
        self.assertTrue(await first.set(NEWS, entry(b"over tcp")))
        self.assertEqual((await second.get(NEWS)).body, b"over tcp")


class OutageTests(TestCase):
    """
    memcached going away, hanging, and coming back.
    """

    async def test_serverKilled(self) -> None:
        """
        With the server killed, gets are misses and sets C{False}, with no
        exception; invalidations fail with L{CacheStoreUnavailableError}.
        Once it is back the store works again (empty: memcached forgets).
        """
        server = await startMemcached(self)
        clock = Clock()
        clock.advance(NOW)
        store = await runningStore(self, server, clock, nearTTL=0)
        self.assertTrue(await store.set(NEWS, entry(b"before")))
        server.kill()
        for _ in range(3):
            self.assertIsNone(await store.get(NEWS))
            self.assertFalse(await store.set(NEWS, entry(b"during")))
            with self.assertRaises(CacheStoreUnavailableError):
                await store.invalidatePrefix(b"example.com|")
            with self.assertRaises(CacheStoreUnavailableError):
                await store.invalidateTag("news")
            with self.assertRaises(CacheStoreUnavailableError):
                await store.delete(NEWS)
        self.assertGreaterEqual(store.stats()["remoteErrors"], 6)
        await server.start()
        await eventually(lambda: store.set(NEWS, entry(b"after")), bool)
        self.assertEqual((await store.get(NEWS)).body, b"after")

    async def test_serverHangs(self) -> None:
        """
        A server that stops answering makes gets misses after the reply
        timeout; once it answers again, so does the store.
        """
        server = await startMemcached(self)
        clock = Clock()
        clock.advance(NOW)
        store = await runningStore(self, server, clock, nearTTL=0, replyTimeout=0.5)
        self.assertTrue(await store.set(NEWS, entry(b"kept")))
        server.pause()
        self.assertIsNone(await store.get(NEWS))
        self.assertGreaterEqual(store.stats()["remoteErrors"], 1)
        server.resume()
        await eventually(lambda: store.get(NEWS), lambda got: got is not None)

    async def test_serviceStopsCleanly(self) -> None:
        """
        Stopping the store closes its connection and leaves no timer in the
        reactor; a stopped store answers misses.
        """
        server = await startMemcached(self)
        before = set(reactor.getDelayedCalls())
        store = await runningStore(self, server, nearTTL=0)
        self.assertTrue(await store.set(NEWS, entry(now=reactor.seconds())))
        self.assertIsNotNone(await store.get(NEWS))
        await store.stopService()
        self.assertFalse(store.isConnected())
        # (Only the test runner's own timeout, if any, is left.)
        self.assertEqual(set(reactor.getDelayedCalls()) - before, set())
        self.assertIsNone(await store.get(NEWS))
