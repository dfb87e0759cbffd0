"""
Tests for the render cache's memory bounds: what L{tlcache.store} accounts
for an entry is what CPython really holds for it, so a flood of long unique
URLs keeps the in-process store within its budget; and the bounded maps of
L{tlcache._footprint}.
"""

from __future__ import annotations

import gc
import platform
from typing import Any, Callable, Iterator, List, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from tlcache._footprint import DICT_ITEM, Deadlines, KeyMemo, footprint, sizeOf
from tlcache.keys import pageKey
from tlcache.store import CacheEntry, MemoryCacheStore

#: What a page's response keeps when it is stored (see the render path's
#: _storedHeaders): lower-cased names, the values as sent.
HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"public, max-age=60"),
    (b"x-frame-options", b"SAMEORIGIN"),
]


def traced(fill: Callable[[], Any]) -> Tuple[int, Any]:
    """
    The bytes still allocated once C{fill} has run (what the object it
    returns keeps alive), as tracemalloc counts them, and that object.
    """
    if platform.python_implementation() != "CPython":
        raise SkipTest("tracemalloc counts CPython's allocations only")
    # Imported here: PyPy has no tracemalloc at all.
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def longURLs(count: int, pathLength: int = 2048) -> Iterator[DummyRequest]:
    """
    Requests for C{count} distinct pages, each under a path of about
    C{pathLength} bytes with a query string.
    """
    for index in range(count):
        request = DummyRequest([b""])
        path = b"/item/%08d/" % index
        request.uri = path + b"a" * (pathLength - len(path)) + b"?ref=%d" % index
        request.requestHeaders.setRawHeaders(b"host", [b"www.example.com"])
        yield request


def body(index: int) -> bytes:
    """
    A small page, or every sixteenth time a mid-size one.
    """
    size = 8 * 1024 if index % 16 == 0 else 200
    return (b"<p>%d</p>" % index).ljust(size, b"x")


SHAPES = ("tiny", "long key", "mid-size body", "many headers", "tags", "variants")


def shaped(shape: str, index: int) -> Tuple[bytes, CacheEntry]:
    """
    The C{index}th key and entry of a C{shape} from L{SHAPES}.
    """
    key = b"h|/p%d|%032x" % (index, index)
    page = b"x%d" % index
    headers: List[Tuple[bytes, bytes]] = HEADERS
    tags: Tuple[str, ...] = ()
    if shape == "tiny":
        headers = []
    elif shape == "long key":
        key = b"h|/p%d/%s|%032x" % (index, b"a" * 2000, index)
    elif shape == "mid-size body":
        page = page.ljust(8 * 1024, b"x")
    elif shape == "many headers":
        headers = [(b"x-h%d" % n, b"v%d" % (index * n)) for n in range(20)]
    elif shape == "tags":
        tags = (f"item:{index}", "all")
    elif shape == "variants":
        key = b"h|/search%s|%032x" % (b"s" * 500, index)
    return key, CacheEntry.build(page, headers, 0, 60, 0, 0, tags)


class StoreBudgetTests(SynchronousTestCase):
    """
    The memory store's byte budget bounds the memory it really holds.
    """

    def test_longURLFloodStaysWithinBudget(self) -> None:
        """
        Twenty times its budget of pages under 2 KB URLs, small and
        mid-size, each tagged, leave the store holding no more than 1.5
        times its budget (and a small fixed baseline) of real memory, while
        it is full.
        """
        budget = 512 * 1024
        clock = Clock()

        def fill() -> MemoryCacheStore:
            store = MemoryCacheStore(clock, maxBytes=budget, maxEntryBytes=budget)
            offered = 0
            for index, request in enumerate(longURLs(30000)):
                page = body(index)
                key = pageKey(request)
                store.set(
                    key,
                    CacheEntry.build(
                        page, HEADERS, clock.seconds(), 60, 10, 60, ("item",)
                    ),
                )
                offered += len(key) + len(page)
                if offered > 20 * budget:
                    break
            return store

        used, store = traced(fill)
        self.assertGreater(store.stats()["evictions"], 0)
        self.assertGreater(store.stats()["bytes"], 0.9 * budget)
        self.assertLessEqual(used, 1.5 * budget + 32 * 1024)

    def test_accountedCoversRealMemory(self) -> None:
        """
        For entries of every shape (tiny, under long keys, with many headers,
        with tags, variants of one path), the bytes the store accounts are
        at least what CPython holds for them, and not far more (what a
        table costs is counted as it is right after the table has grown).
        """
        clock = Clock()
        for shape in SHAPES:

            def fill(shape: str = shape) -> MemoryCacheStore:
                store = MemoryCacheStore(clock, maxBytes=10**9, maxVariantsPerPath=None)
                for index in range(500):
                    store.set(*shaped(shape, index))
                return store

            used, store = traced(fill)
            accounted = store.stats()["bytes"]
            self.assertLessEqual(used, accounted, shape)
            self.assertGreater(used, 0.6 * accounted, shape)


class FootprintTests(SynchronousTestCase):
    """
    Sizes are counted once per object, through tuples and frozensets.
    """

    def test_sharedObjectsCountedOnce(self) -> None:
        """
        An object reached twice is counted once; tuples count what they hold.
        """
        value = b"v" * 1000
        self.assertEqual(
            footprint((value, value)), sizeOf((value, value)) + sizeOf(value)
        )
        self.assertEqual(footprint(value, (value,)), sizeOf(value) + sizeOf((value,)))
        self.assertGreater(sizeOf(value), 1000)

    def test_entrySizeCountsWhatItHolds(self) -> None:
        """
        An entry's size covers its body, its headers twice over (as stored,
        and as a hit sends them), its ETag and its tags.
        """
        small = CacheEntry.build(b"x", HEADERS, 0, 60, 0, 0)
        large = CacheEntry.build(b"x" * 10_000, HEADERS, 0, 60, 0, 0)
        self.assertEqual(large.size() - small.size(), 9999)
        tagged = CacheEntry.build(b"x", HEADERS, 0, 60, 0, 0, ("t" * 500,))
        self.assertGreater(tagged.size() - small.size(), 500)
        longer = CacheEntry.build(b"x", HEADERS + [(b"x-a", b"b" * 300)], 0, 60, 0, 0)
        self.assertGreater(longer.size() - small.size(), 300 + 2 * sizeOf(b""))


class KeyMemoTests(SynchronousTestCase):
    """
    The key memo stays within its budget.
    """

    def test_keepsKeys(self) -> None:
        """
        A remembered key is found by its inputs.
        """
        memo = KeyMemo(maxBytes=10_000, maxItems=10)
        memo.remember((b"/a", b"host"), b"host|/a|1")
        self.assertEqual(memo.get((b"/a", b"host")), b"host|/a|1")
        self.assertIsNone(memo.get((b"/b", b"host")))

    def test_forgetsWhenFull(self) -> None:
        """
        Long inputs fill it by bytes, many short ones by count: then it
        starts again, never over either bound.
        """
        memo = KeyMemo(maxBytes=64 * 1024, maxItems=1000)
        for index in range(500):
            memo.remember((b"/%d" % index + b"a" * 2000,), b"h|/%d|k" % index)
            self.assertLessEqual(memo.bytes, 64 * 1024)
            self.assertEqual(
                memo.bytes,
                sum(footprint(inputs, key) + DICT_ITEM for inputs, key in memo.items()),
            )
        self.assertLess(len(memo), 32)
        memo = KeyMemo(maxBytes=10**9, maxItems=100)
        for index in range(250):
            memo.remember((b"/%d" % index,), b"k")
            self.assertLessEqual(len(memo), 100)

    def test_tooLargeNotKept(self) -> None:
        """
        Inputs larger than the whole budget are not kept (and do not empty
        the memo).
        """
        memo = KeyMemo(maxBytes=1000, maxItems=10)
        memo.remember((b"/a",), b"k")
        memo.remember((b"/" + b"b" * 2000,), b"k")
        self.assertEqual(list(memo), [(b"/a",)])


class DeadlinesTests(SynchronousTestCase):
    """
    Held keys are bounded by count and bytes; times pass.
    """

    def test_heldUntilTime(self) -> None:
        """
        A key is held for its time, then forgotten when looked at.
        """
        clock = Clock()
        held = Deadlines(clock, maxItems=10, maxBytes=10_000)
        held.hold(b"k", 5)
        self.assertTrue(held.holds(b"k"))
        self.assertTrue(held.active(b"k"))
        clock.advance(5)
        self.assertTrue(held.holds(b"k"))
        self.assertFalse(held.active(b"k"))
        self.assertFalse(held.holds(b"k"))
        self.assertEqual((len(held), held.bytes), (0, 0))

    def test_boundedByBytesAndCount(self) -> None:
        """
        Long keys are let go by bytes, short ones by count, the least
        recently held first.
        """
        clock = Clock()
        held = Deadlines(clock, maxItems=1000, maxBytes=32 * 1024)
        for index in range(100):
            held.hold(b"h|/%d|" % index + b"a" * 2000, 60)
            self.assertLessEqual(held.bytes, 32 * 1024)
        self.assertTrue(held.holds(b"h|/99|" + b"a" * 2000))
        self.assertFalse(held.holds(b"h|/0|" + b"a" * 2000))
        self.assertLess(len(held), 16)
        held = Deadlines(clock, maxItems=3, maxBytes=10**9)
        for key in (b"a", b"b", b"c", b"a", b"d"):
            held.hold(key, 60)
        self.assertEqual(
            [k for k in (b"a", b"b", b"c", b"d") if held.holds(k)], [b"a", b"c", b"d"]
        )
