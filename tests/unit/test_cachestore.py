"""
Tests for L{tlcache.store}: cache entries (lifetime, ETag) and the bounded
in-memory store (budget, caps, LRU, invalidation, expiry, counters).
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from tlcache.keys import pageKey
from tlcache.store import CacheEntry, ICacheStore, MemoryCacheStore, _familyCost


def stored(key: bytes, *entries: CacheEntry) -> int:
    """
    The bytes a new store accounts for C{entries}, the first under C{key}
    and the others under variants of it in the same family.
    """
    store = MemoryCacheStore(Clock())
    for index, e in enumerate(entries):
        store.set(key + b"%d" % index if index else key, e)
    return store.stats()["bytes"]


def entry(
    body: bytes = b"<html>hello</html>",
    now: float = 0.0,
    ttl: float = 10.0,
    grace: float = 5.0,
    maxStale: float = 60.0,
    tags: tuple = (),
) -> CacheEntry:
    return CacheEntry.build(
        body, [(b"content-type", b"text/html")], now, ttl, grace, maxStale, tags
    )


class CacheEntryTests(SynchronousTestCase):
    """
    An entry knows its ETag and how fresh it is.
    """

    def test_etagIsStrongQuotedHashOfBody(self) -> None:
        """
        The ETag is a quoted hash: the same for the same bytes, different for
        different bytes, and not weak.
        """
        first = entry(b"abc")
        self.assertTrue(first.etag.startswith(b'"') and first.etag.endswith(b'"'))
        self.assertFalse(first.etag.startswith(b"W/"))
        self.assertEqual(first.etag, entry(b"abc", now=99).etag)
        self.assertNotEqual(first.etag, entry(b"abd").etag)

    def test_etagComputedOnce(self) -> None:
        """
        The ETag is stored on the entry, not recomputed on each access, and
        the store hands back the same entry.
        """
        clock = Clock()
        store = MemoryCacheStore(clock)
        stored = entry(b"x" * 1000)
        store.set(b"h|/|k", stored)
        fetched = self.successResultOf(store.get(b"h|/|k"))
        self.assertIs(fetched, stored)
        self.assertIs(fetched.etag, stored.etag)

    def test_freshStaleExpired(self) -> None:
        """
        Fresh for the ttl, servable stale for the grace after it, expired at
        the hard limit past freshness.
        """
        e = entry(now=100, ttl=10, grace=5, maxStale=30)
        self.assertTrue(e.isFresh(109.9))
        self.assertFalse(e.isServableStale(109.9))
        self.assertFalse(e.isFresh(110))
        self.assertTrue(e.isServableStale(110))
        self.assertFalse(e.isServableStale(115))
        self.assertFalse(e.isExpired(139.9))
        self.assertTrue(e.isExpired(140))

    def test_buildRejectsBadDurations(self) -> None:
        """
        Negative durations and a hard limit inside the grace are refused.
        """
        self.assertRaises(ValueError, entry, ttl=-1)
        self.assertRaises(ValueError, entry, grace=10, maxStale=5)

    def test_setCookieNeverStored(self) -> None:
        """
        An entry cannot carry a Set-Cookie header, in any case.
        """
        self.assertRaises(
            ValueError,
            CacheEntry.build,
            b"body",
            [(b"Set-Cookie", b"TWISTED_SESSION=abc")],
            0,
            1,
            0,
            0,
        )


class MemoryCacheStoreTests(SynchronousTestCase):
    """
    The memory store keeps within its bounds and counts what it does.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_interface(self) -> None:
        """
        The memory store provides L{ICacheStore}.
        """
        self.assertTrue(verifyObject(ICacheStore, MemoryCacheStore(self.clock)))

    def test_getSet(self) -> None:
        """
        A stored entry comes back; an unknown key gives None. Hits, misses
        and sets are counted.
        """
        store = MemoryCacheStore(self.clock)
        e = entry()
        self.assertTrue(self.successResultOf(store.set(b"a|/|1", e)))
        self.assertIs(self.successResultOf(store.get(b"a|/|1")), e)
        self.assertIsNone(self.successResultOf(store.get(b"a|/|2")))
        stats = store.stats()
        self.assertEqual((stats["hits"], stats["misses"], stats["sets"]), (1, 1, 1))
        self.assertEqual(stats["entries"], 1)
        self.assertGreater(stats["bytes"], len(b"a|/|1") + e.size())
        self.assertEqual(stats["bytes"], stored(b"a|/|1", e))

    def test_replaceAccountsBytes(self) -> None:
        """
        Replacing an entry does not count the old one's bytes twice.
        """
        store = MemoryCacheStore(self.clock)
        store.set(b"a|/|1", entry(b"x" * 100))
        store.set(b"a|/|1", entry(b"y" * 10))
        self.assertEqual(store.stats()["bytes"], stored(b"a|/|1", entry(b"y" * 10)))
        self.assertEqual(store.stats()["entries"], 1)
        store.delete(b"a|/|1")
        self.assertEqual(store.stats()["bytes"], 0)

    def test_perEntryCapRefused(self) -> None:
        """
        An entry larger than the per-entry cap is refused and counted, and
        the older entry under its key goes.
        """
        store = MemoryCacheStore(self.clock, maxBytes=100_000, maxEntryBytes=2000)
        store.set(b"a|/|1", entry(b"small"))
        self.assertFalse(self.successResultOf(store.set(b"a|/|1", entry(b"x" * 2000))))
        self.assertIsNone(self.successResultOf(store.get(b"a|/|1")))
        self.assertEqual(store.stats()["refusals"], 1)
        self.assertEqual(store.stats()["bytes"], 0)

    def test_lruOrder(self) -> None:
        """
        Over budget, the least recently used entry goes first; a read makes
        an entry recently used.
        """
        first = stored(b"h|/a|1", entry(b"x" * 100))
        size = stored(b"h|/a|1", entry(b"x" * 100), entry(b"x" * 100)) - first
        store = MemoryCacheStore(
            self.clock, maxBytes=first + 2 * size, maxEntryBytes=size
        )
        for name in (b"1", b"2", b"3"):
            store.set(b"h|/a|" + name, entry(b"x" * 100))
        store.get(b"h|/a|1")
        store.set(b"h|/a|4", entry(b"x" * 100))
        self.assertIsNone(self.successResultOf(store.get(b"h|/a|2")))
        for name in (b"1", b"3", b"4"):
            self.assertIsNotNone(self.successResultOf(store.get(b"h|/a|" + name)))
        self.assertEqual(store.stats()["evictions"], 1)

    def test_randomQueryStringsStayUnderBudget(self) -> None:
        """
        10,000 random query strings on one path and others spread over many
        paths never take the store past its byte budget; the evictions are
        counted and the variant cap keeps one path from filling the store.
        """
        maxBytes = 256 * 1024
        store = MemoryCacheStore(
            self.clock,
            maxBytes=maxBytes,
            maxEntryBytes=16 * 1024,
            maxVariantsPerPath=20,
        )
        rng = random.Random(5)

        for i in range(10_000):
            request = DummyRequest([b"search"])
            request.uri = b"/search?x=%d" % rng.getrandbits(64)
            request.requestHeaders.setRawHeaders(b"host", [b"example.com"])
            body = b"r" * rng.randrange(100, 4000)
            self.assertTrue(
                self.successResultOf(store.set(pageKey(request), entry(body)))
            )
            other = DummyRequest([b"p"])
            other.uri = b"/p%d" % (i % 500)
            other.requestHeaders.setRawHeaders(b"host", [b"example.com"])
            store.set(pageKey(other), entry(b"p" * 500))
            self.assertLessEqual(store.stats()["bytes"], maxBytes)
        stats = store.stats()
        self.assertGreater(stats["evictions"], 0)
        self.assertGreater(stats["variantEvictions"], 0)
        searchKeys = [k for k in store._slots if k.startswith(b"example.com|/search|")]
        self.assertLessEqual(len(searchKeys), 20)
        # The entries, and the names of the families they are in.
        self.assertEqual(
            stats["bytes"],
            sum(slot.size for slot in store._slots.values())
            + sum(_familyCost(family) for family in store._families),
        )

    def test_variantCapEvictsOldestVariantOfSamePath(self) -> None:
        """
        At the variant cap, a new variant evicts the least recently used
        variant of the same path, not another page.
        """
        store = MemoryCacheStore(self.clock, maxVariantsPerPath=2)
        store.set(b"h|/other|1", entry())
        store.set(b"h|/p|1", entry())
        store.set(b"h|/p|2", entry())
        store.get(b"h|/p|1")
        store.set(b"h|/p|3", entry())
        self.assertIsNone(self.successResultOf(store.get(b"h|/p|2")))
        self.assertIsNotNone(self.successResultOf(store.get(b"h|/p|1")))
        self.assertIsNotNone(self.successResultOf(store.get(b"h|/other|1")))
        self.assertEqual(store.stats()["variantEvictions"], 1)

    def test_hardExpiryOnRead(self) -> None:
        """
        An entry past its hard limit is dropped when read, and its bytes are
        given back.
        """
        store = MemoryCacheStore(self.clock)
        store.set(b"h|/|1", entry(now=0, ttl=10, grace=5, maxStale=20))
        self.clock.advance(29.9)
        self.assertIsNotNone(self.successResultOf(store.get(b"h|/|1")))
        self.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(store.get(b"h|/|1")))
        stats = store.stats()
        self.assertEqual(
            (stats["expired"], stats["entries"], stats["bytes"]), (1, 0, 0)
        )

    def test_freshStaleCounters(self) -> None:
        """
        Reads are counted as hits while fresh, stale hits during the grace,
        and misses after it (the entry still comes back for stale-if-error).
        """
        store = MemoryCacheStore(self.clock)
        store.set(b"h|/|1", entry(now=0, ttl=10, grace=5, maxStale=60))
        results = []
        for when in (5, 12, 20):
            self.clock.advance(when - self.clock.seconds())
            e = self.successResultOf(store.get(b"h|/|1"))
            results.append((e.isFresh(when), e.isServableStale(when)))
        self.assertEqual(results, [(True, False), (False, True), (False, False)])
        stats = store.stats()
        self.assertEqual(
            (stats["hits"], stats["staleHits"], stats["misses"]), (1, 1, 1)
        )

    def test_deleteExactKey(self) -> None:
        """
        Delete drops one key and says whether it was there.
        """
        store = MemoryCacheStore(self.clock)
        store.set(b"h|/a|1", entry())
        store.set(b"h|/a|2", entry())
        self.assertTrue(self.successResultOf(store.delete(b"h|/a|1")))
        self.assertFalse(self.successResultOf(store.delete(b"h|/a|1")))
        self.assertIsNotNone(self.successResultOf(store.get(b"h|/a|2")))
        self.assertEqual(store.stats()["invalidations"], 1)

    def test_invalidatePrefix(self) -> None:
        """
        A prefix drops a subtree, one path's variants, or part of a family,
        and nothing else.
        """
        store = MemoryCacheStore(self.clock)
        keys = [
            b"h|/news/a|1",
            b"h|/news/a|2",
            b"h|/news/b|1",
            b"h|/newsletter|1",
            b"other|/news/a|1",
        ]
        for key in keys:
            store.set(key, entry())
        self.assertEqual(self.successResultOf(store.invalidatePrefix(b"h|/news/a|")), 2)
        self.assertEqual(self.successResultOf(store.invalidatePrefix(b"h|/news/")), 1)
        self.assertEqual(sorted(store._slots), [b"h|/newsletter|1", b"other|/news/a|1"])
        self.assertEqual(
            self.successResultOf(store.invalidatePrefix(b"h|/newsletter|1")), 1
        )
        self.assertEqual(store.stats()["invalidations"], 4)
        self.assertEqual(store._families.keys(), {b"other|/news/a"})

    def test_invalidateTag(self) -> None:
        """
        A tag drops every entry carrying it, and the tag index forgets it.
        """
        store = MemoryCacheStore(self.clock)
        store.set(b"h|/a|1", entry(tags=("news", "front")))
        store.set(b"h|/b|1", entry(tags=("news",)))
        store.set(b"h|/c|1", entry(tags=("sport",)))
        self.assertEqual(self.successResultOf(store.invalidateTag("news")), 2)
        self.assertEqual(self.successResultOf(store.invalidateTag("news")), 0)
        self.assertIsNotNone(self.successResultOf(store.get(b"h|/c|1")))
        self.assertEqual(set(store._tags), {"sport"})

    def test_storedAtAndDropStoredUntil(self) -> None:
        """
        The store knows when each entry was stored, without counting a read
        or moving it; a sweep drops the least recently used entries stored
        by a time, up to the first one stored later.
        """
        store = MemoryCacheStore(self.clock)
        store.set(b"h|/a|1", entry())
        self.clock.advance(1)
        store.set(b"h|/b|1", entry())
        self.clock.advance(1)
        store.set(b"h|/c|1", entry())
        store.get(b"h|/a|1")
        self.assertEqual(store.storedAt(b"h|/a|1"), 0)
        self.assertEqual(store.storedAt(b"h|/c|1"), 2)
        self.assertIsNone(store.storedAt(b"h|/d|1"))
        self.assertEqual(store.stats()["hits"], 1)
        self.assertEqual(store.dropStoredUntil(1), 1)
        self.assertEqual(sorted(store._slots), [b"h|/a|1", b"h|/c|1"])
        self.assertEqual(store.dropStoredUntil(2), 2)
        stats = store.stats()
        self.assertEqual(
            (stats["entries"], stats["bytes"], stats["expired"]), (0, 0, 3)
        )

    def test_noTimers(self) -> None:
        """
        The store schedules nothing on its clock.
        """
        store = MemoryCacheStore(self.clock)
        store.set(b"h|/a|1", entry())
        store.get(b"h|/a|1")
        self.assertEqual(self.clock.getDelayedCalls(), [])
