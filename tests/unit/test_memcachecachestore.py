"""
Tests for L{tlcache.memcachestore}: the item codec of
L{tlcache._memcacheitem} (round trips, and every corrupted, truncated or
hostile value read as a miss), the memcached keys, and the store's
generation logic, near copies and failures, driven by a small in-memory
memcached with L{MemCacheProtocol}'s Deferred API.
"""

from __future__ import annotations

import math
import random
import re
import struct
from typing import Any, Dict, List, Optional, Tuple

from twisted.application.service import IService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.protocols.memcache import ClientError, MemCacheProtocol, ServerError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.unit.test_cachememory import traced
from tlcache import memcachestore
from tlcache._memcacheitem import (
    _decodeItem,
    _encodeItem,
    _ItemFormatError,
    _OtherVersionError,
    _StoredItem,
)
from tlcache.keys import familyOfKey, keyPrefix, pageKey
from tlcache.memcachestore import (
    DEFAULT_MAX_ENTRY_BYTES,
    MAX_BOUNDARIES,
    MAX_TAGS,
    CacheStoreUnavailableError,
    MemcacheCacheStore,
    boundaryPrefixes,
)
from tlcache.store import CacheEntry, ICacheStore, MemoryCacheStore
from tlsession.stores.memcache import MemcacheConnection

NOW = 1_000_000.0

KEY = b"example.com|/news/today|" + b"3f" * 16
SIBLING = b"example.com|/news/today|" + b"00" * 16


def entry(
    body: bytes = b"<p>today</p>",
    now: float = NOW,
    ttl: float = 10.0,
    grace: float = 5.0,
    maxStale: float = 60.0,
    tags: Tuple[str, ...] = (),
    headers: Tuple[Tuple[bytes, bytes], ...] = ((b"content-type", b"text/html"),),
) -> CacheEntry:
    return CacheEntry.build(body, headers, now, ttl, grace, maxStale, tags)


_GOOD_KEY = re.compile(rb"[\x21-\x7e]{1,250}")


class FakeMemcache:
    """
    memcached in a dict, behind the part of L{MemCacheProtocol}'s API the
    store calls (C{get}, C{getMultiple}, C{set}, C{add}, C{delete}), with the
    same answers: C{(flags, value)} with C{None} for a missing item,
    C{True}/C{False} for writes. A command takes effect when called, as on
    a pipelined connection; replies can be held and then released in order.

    @ivar commands: C{(name, keys)} of every call since L{sent} last ran.
    @ivar expiries: the expiry time each key was last stored with.
    @ivar error: when set, every call fails with it.
    """

    _disconnected = False

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.items: Dict[bytes, Tuple[bytes, float]] = {}
        self.expiries: Dict[bytes, int] = {}
        self.commands: List[Tuple[str, Tuple[bytes, ...]]] = []
        self.error: Optional[Exception] = None
        self._held: Optional[List[Tuple[Deferred[Any], Any]]] = None

    def sent(self) -> List[str]:
        """
        The names of the commands called since the last call.
        """
        names = [name for name, _ in self.commands]
        del self.commands[:]
        return names

    def hold(self) -> None:
        """
        Keep replies back until L{release}.
        """
        self._held = []

    def release(self) -> None:
        """
        Deliver the held replies in order, and answer at once from now on.
        """
        held, self._held = self._held or [], None
        for d, result in held:
            d.callback(result)

    def _call(self, name: str, keys: Tuple[bytes, ...]) -> Optional[Deferred[Any]]:
        self.commands.append((name, keys))
        if self.error is not None:
            return fail(self.error)
        for key in keys:
            if not isinstance(key, bytes) or not _GOOD_KEY.fullmatch(key):
                return fail(ClientError(f"bad key {key!r}"))
        return None

    def _reply(self, result: Any) -> Deferred[Any]:
        if self._held is not None:
            d: Deferred[Any] = Deferred()
            self._held.append((d, result))
            return d
        return succeed(result)

    def _value(self, key: bytes) -> Optional[bytes]:
        item = self.items.get(key)
        if item is None:
            return None
        if self.clock.seconds() >= item[1]:
            del self.items[key]
            return None
        return item[0]

    def _store(self, key: bytes, value: bytes, expireTime: int) -> None:
        assert isinstance(value, bytes), value
        assert 0 <= expireTime <= 30 * 24 * 3600, expireTime
        expires = math.inf if expireTime == 0 else self.clock.seconds() + expireTime
        self.items[key] = (value, expires)
        self.expiries[key] = expireTime

    def get(self, key: bytes) -> Deferred[Any]:
        return self._call("get", (key,)) or self._reply((0, self._value(key)))

    def getMultiple(self, keys: List[bytes]) -> Deferred[Any]:
        return self._call("getMultiple", tuple(keys)) or self._reply(
            {key: (0, self._value(key)) for key in keys}
        )

    def set(
        self, key: bytes, val: bytes, flags: int = 0, expireTime: int = 0
    ) -> Deferred[Any]:
        failed = self._call("set", (key,))
        if failed:
            return failed
        self._store(key, val, expireTime)
        return self._reply(True)

    def add(
        self, key: bytes, val: bytes, flags: int = 0, expireTime: int = 0
    ) -> Deferred[Any]:
        failed = self._call("add", (key,))
        if failed:
            return failed
        if self._value(key) is not None:
            return self._reply(False)
        self._store(key, val, expireTime)
        return self._reply(True)

    def delete(self, key: bytes) -> Deferred[Any]:
        failed = self._call("delete", (key,))
        if failed:
            return failed
        return self._reply(self.items.pop(key, None) is not None)


@implementer(IStreamClientEndpoint)
class PendingEndpoint:
    """
    An endpoint whose connection attempts never finish.
    """

    def __init__(self) -> None:
        self.attempts: List[Deferred[Any]] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append(d)
        return d


class _StoreTestCase(SynchronousTestCase):
    """
    Stores on one fake memcached, with a log that records what they say.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.memcache = FakeMemcache(self.clock)
        self.events: List[Dict[str, Any]] = []
        self.patch(memcachestore, "_log", Logger(observer=self.events.append))

    def makeStore(self, **options: Any) -> MemcacheCacheStore:
        return MemcacheCacheStore(self.memcache, self.clock, **options)  # type: ignore[arg-type]

    def logged(self) -> List[str]:
        texts = [formatEvent(event) for event in self.events]
        del self.events[:]
        return texts

    def stored(self, store: MemcacheCacheStore, key: bytes, e: CacheEntry) -> None:
        self.assertTrue(self.successResultOf(store.set(key, e)))

    def fetched(self, store: MemcacheCacheStore, key: bytes) -> Optional[CacheEntry]:
        result: Optional[CacheEntry] = self.successResultOf(store.get(key))
        return result


class ItemCodecTests(SynchronousTestCase):
    """
    The item format: what is written reads back; anything else is an
    L{_ItemFormatError}, never another exception.
    """

    def sample(self) -> bytes:
        return _encodeItem(
            KEY,
            entry(
                b"\x00body\xff" * 10,
                tags=("news", "caf\u00e9"),
                headers=((b"content-type", b"text/html"), (b"x-a", b"")),
            ),
            [1, 2**64 - 1, 0],
            [("caf\u00e9", 7), ("news", 8)],
        )

    def test_roundTrip(self) -> None:
        """
        Key, body, headers, times, ETag, tags and generations come back as
        they went in.
        """
        e = entry(
            b"\x00body\xff",
            ttl=1.5,
            grace=2.25,
            maxStale=3.0,
            tags=("news", "caf\u00e9"),
            headers=((b"content-type", b"text/html"), (b"x-empty", b"")),
        )
        value = _encodeItem(KEY, e, [1, 2**64 - 1], [("caf\u00e9", 7), ("news", 0)])
        self.assertEqual(
            _decodeItem(value),
            _StoredItem(KEY, e, (1, 2**64 - 1), (("caf\u00e9", 7), ("news", 0))),
        )

    def test_roundTripEmpty(self) -> None:
        """
        An empty body, no headers and no tags round-trip too.
        """
        e = entry(b"", headers=())
        self.assertEqual(
            _decodeItem(_encodeItem(b"k", e, [], [])), _StoredItem(b"k", e, (), ())
        )

    def test_everyTruncation(self) -> None:
        """
        Every proper prefix of an item's value is refused.
        """
        value = self.sample()
        for length in range(len(value)):
            self.assertRaises(_ItemFormatError, _decodeItem, value[:length])

    def test_trailingBytes(self) -> None:
        """
        Bytes after the body are refused: the body length must be exact.
        """
        self.assertRaises(_ItemFormatError, _decodeItem, self.sample() + b"x")

    def test_everyByteCorrupted(self) -> None:
        """
        Whatever single byte is overwritten, and with whatever value (so
        every length field is tried at its largest and smallest), the value
        either decodes or is refused with L{_ItemFormatError}.
        """
        value = self.sample()
        refused = set()
        for index in range(len(value)):
            for byte in (0x00, 0x7F, 0xFF):
                corrupted = value[:index] + bytes([byte]) + value[index + 1 :]
                try:
                    _decodeItem(corrupted)
                except _ItemFormatError:
                    refused.add(index)
        # The marker, the version and the key's length at least.
        self.assertLessEqual({0, 1, 2, 3, 36, 37, 38, 39}, refused)

    def test_randomCorruption(self) -> None:
        """
        Random byte flips, insertions and deletions never raise anything but
        L{_ItemFormatError}.
        """
        value = self.sample()
        rng = random.Random(1234)
        for _ in range(3000):
            corrupted = bytearray(value)
            for _ in range(rng.randrange(1, 4)):
                index = rng.randrange(len(corrupted))
                action = rng.randrange(3)
                if action == 0:
                    corrupted[index] = rng.randrange(256)
                elif action == 1:
                    corrupted.insert(index, rng.randrange(256))
                else:
                    del corrupted[index]
            try:
                _decodeItem(bytes(corrupted))
            except _ItemFormatError:
                pass

    def test_hostileLengths(self) -> None:
        """
        A length field claiming far more than the value holds is refused
        without reading (or allocating) past the value.
        """
        value = bytearray(self.sample())
        keyLengthAt = 4 + 32
        self.assertEqual(struct.unpack_from("!I", value, keyLengthAt)[0], len(KEY))
        value[keyLengthAt : keyLengthAt + 4] = b"\xff\xff\xff\xff"
        with self.assertRaises(_ItemFormatError) as caught:
            _decodeItem(bytes(value))
        self.assertEqual(str(caught.exception), "truncated")

    def test_foreignValues(self) -> None:
        """
        Values another program stored, or nothing at all, are refused.
        """
        for value in (b"", b"tl", b"tlc", b"hello world", b"\x80\x04\x95pickle"):
            self.assertRaises(_ItemFormatError, _decodeItem, value)

    def test_otherVersion(self) -> None:
        """
        An item in another format version is refused as such.
        """
        value = self.sample()
        self.assertRaises(
            _OtherVersionError, _decodeItem, value[:3] + b"\x02" + value[4:]
        )

    def test_notANumberTime(self) -> None:
        """
        A time that is not a number (which would never expire) is refused.
        """
        value = self.sample()
        nan = struct.pack("!d", math.nan)
        self.assertRaises(_ItemFormatError, _decodeItem, value[:12] + nan + value[20:])

    def test_setCookieRefused(self) -> None:
        """
        An item carrying a Set-Cookie header, which no store writes, is
        refused: replaying it would hand one user's cookie to another.
        """
        value = _encodeItem(KEY, entry(headers=((b"set-cookix", b"s=1"),)), [], [])
        with self.assertRaises(_ItemFormatError) as caught:
            _decodeItem(value.replace(b"set-cookix", b"set-cookie"))
        self.assertIn("cookie", str(caught.exception))

    def test_badTags(self) -> None:
        """
        A tag that is not UTF-8, or the same tag twice, is refused.
        """
        value = _encodeItem(KEY, entry(tags=("a\u00e9", "b")), [], [("a\u00e9", 1)])
        self.assertRaises(
            _ItemFormatError,
            _decodeItem,
            value.replace("a\u00e9".encode(), b"a\xff\xfe"),
        )
        twice = _encodeItem(KEY, entry(tags=("ab", "ac")), [], [("ab", 1), ("ac", 2)])
        self.assertRaises(
            _ItemFormatError, _decodeItem, twice.replace(b"\x00\x02ac", b"\x00\x02ab")
        )


class KeyTests(_StoreTestCase):
    """
    memcached keys and the prefixes that can be invalidated.
    """

    def test_boundaryPrefixes(self) -> None:
        """
        A key's boundaries: the host, each directory level and the path's
        variants; a path ending in a slash is a directory of its own.
        """
        self.assertEqual(
            boundaryPrefixes(b"host|/a/b/c|digest"),
            (b"host|", b"host|/", b"host|/a/", b"host|/a/b/", b"host|/a/b/c|"),
        )
        self.assertEqual(
            boundaryPrefixes(b"host|/a/|d"),
            (b"host|", b"host|/", b"host|/a/", b"host|/a/|"),
        )
        self.assertEqual(boundaryPrefixes(b"no-separator/at/all"), ())

    def test_pageKeyBoundaries(self) -> None:
        """
        For a real page key, the prefixes L{keyPrefix} and L{familyOfKey}
        give are boundaries.
        """
        request = DummyRequest([b"news", b"today"])
        request.uri = b"/news/today?page=2"
        request.requestHeaders.setRawHeaders(b"host", [b"Example.com:80"])
        key = pageKey(request)
        boundaries = boundaryPrefixes(key)
        for prefix in (
            keyPrefix(b"example.com"),
            keyPrefix(b"example.com", b"/"),
            keyPrefix(b"example.com", b"/news/"),
            familyOfKey(key) + b"|",
        ):
            self.assertIn(prefix, boundaries)
        self.assertEqual(len(boundaries), 4)

    def test_memcachedKeys(self) -> None:
        """
        Every memcached key the store uses is at most 250 bytes with no
        space or control byte, starts with the namespace, and differs for
        different cache keys, whatever the cache key holds.
        """
        store = self.makeStore(namespace=b"site-a:")
        keys = [
            b"h|/|" + b"x" * 10_000,
            b"h|/with space\r\n|d",
            b"h|/\x00\xff|d",
            b"",
            KEY,
        ]
        made = set()
        for key in keys:
            for memcacheKey in (store._itemKey(key), store._prefixKey(key)):
                self.assertTrue(_GOOD_KEY.fullmatch(memcacheKey), memcacheKey)
                self.assertTrue(memcacheKey.startswith(b"site-a:"))
                made.add(memcacheKey)
        made.add(store._tagKey("h|/|"))
        self.assertEqual(len(made), 2 * len(keys) + 1)
        again = self.makeStore(namespace=b"site-a:")
        self.assertEqual(store._itemKey(KEY), again._itemKey(KEY))

    def test_badNamespace(self) -> None:
        """
        A namespace memcached keys cannot start with is refused.
        """
        self.assertRaises(ValueError, self.makeStore, namespace=b"my site:")
        self.assertRaises(ValueError, self.makeStore, namespace=b"a\n")
        self.assertRaises(ValueError, self.makeStore, namespace=b"n" * 220)
        self.assertRaises(TypeError, self.makeStore, namespace="tlcache:")

    def test_badOptions(self) -> None:
        """
        A negative nearTTL or a maxEntryBytes under 1 is refused.
        """
        self.assertRaises(ValueError, self.makeStore, nearTTL=-1)
        self.assertRaises(ValueError, self.makeStore, nearTTL=math.nan)
        self.assertRaises(ValueError, self.makeStore, maxEntryBytes=0)

    def test_onlyBoundaryPrefixes(self) -> None:
        """
        A prefix that is not a boundary cannot be invalidated; the error
        says which prefixes can.
        """
        store = self.makeStore()
        for prefix in (b"example.com|/news", b"example.com", b"", b"/news/"):
            with self.assertRaises(ValueError) as caught:
                store.invalidatePrefix(prefix)
            self.assertIn("keyPrefix(host, b'/news/')", str(caught.exception))
            self.assertIn("familyOfKey(key) + b'|'", str(caught.exception))
        self.assertRaises(TypeError, store.invalidatePrefix, "example.com|")
        self.assertRaises(TypeError, store.invalidateTag, b"news")
        self.assertEqual(self.memcache.sent(), [])


class SharedStoreTests(_StoreTestCase):
    """
    Two stores (two processes) on one memcached.
    """

    def setUp(self) -> None:
        super().setUp()
        self.first = self.makeStore()
        self.second = self.makeStore()

    def test_interfaces(self) -> None:
        """
        The store is an L{ICacheStore} and an L{IService}.
        """
        self.assertTrue(verifyObject(ICacheStore, self.first))
        self.assertTrue(verifyObject(IService, self.first))

    def test_setThenGetElsewhere(self) -> None:
        """
        An entry one process stores, the other reads, equal, in one
        C{get} round trip for the item and its generations.
        """
        stored = entry(b"\x00" * 5000, headers=((b"content-type", b"a/b"),))
        self.stored(self.first, KEY, stored)
        self.memcache.sent()
        self.assertEqual(self.fetched(self.second, KEY), stored)
        self.assertEqual(self.memcache.sent(), ["getMultiple"])
        stats = self.second.stats()
        self.assertEqual((stats["hits"], stats["remoteHits"]), (1, 1))

    def test_oneRoundTripNames(self) -> None:
        """
        The one C{get} asks for the item and every boundary's generation.
        """
        self.stored(self.first, KEY, entry())
        del self.memcache.commands[:]
        self.fetched(self.second, KEY)
        [(name, keys)] = self.memcache.commands
        self.assertEqual(
            keys,
            (self.second._itemKey(KEY),)
            + tuple(self.second._prefixKey(p) for p in boundaryPrefixes(KEY)),
        )

    def test_taggedItemTwoRoundTrips(self) -> None:
        """
        A tagged item takes a second C{get}, for its tags' generations.
        """
        stored = entry(tags=("news", "front"))
        self.stored(self.first, KEY, stored)
        self.memcache.sent()
        self.assertEqual(self.fetched(self.second, KEY), stored)
        self.assertEqual(self.memcache.sent(), ["getMultiple", "getMultiple"])

    def test_missIsOneRoundTrip(self) -> None:
        """
        A missing item is a miss after one C{get}.
        """
        self.assertIsNone(self.fetched(self.first, KEY))
        self.assertEqual(self.memcache.sent(), ["getMultiple"])
        stats = self.first.stats()
        self.assertEqual((stats["misses"], stats["remoteMisses"]), (1, 1))

    def test_nearCopy(self) -> None:
        """
        For nearTTL seconds after a read, the entry is answered with no
        round trip; then memcached is asked again.
        """
        self.stored(self.first, KEY, entry())
        self.fetched(self.second, KEY)
        self.memcache.sent()
        self.clock.advance(0.5)
        self.assertIsNotNone(self.fetched(self.second, KEY))
        self.assertEqual(self.memcache.sent(), [])
        self.clock.advance(0.5)
        self.assertIsNotNone(self.fetched(self.second, KEY))
        self.assertEqual(self.memcache.sent(), ["getMultiple"])
        self.assertEqual(self.second.stats()["nearHits"], 1)

    def test_nearOff(self) -> None:
        """
        With nearTTL 0, every get asks memcached.
        """
        store = self.makeStore(nearTTL=0)
        self.stored(store, KEY, entry())
        self.memcache.sent()
        for _ in range(3):
            self.assertIsNotNone(self.fetched(store, KEY))
        self.assertEqual(self.memcache.sent(), ["getMultiple"] * 3)
        self.assertEqual(store.stats()["entries"], 0)

    def test_oldNearCopiesFreed(self) -> None:
        """
        Near copies past nearTTL, never served again, leave the near store
        as new ones come.
        """
        for index in range(5):
            self.stored(self.first, b"h|/p%d|d" % index, entry())
        self.assertEqual(self.first.stats()["entries"], 5)
        self.clock.advance(1.0)
        self.stored(self.first, b"h|/new|d", entry(now=NOW + 1))
        self.assertEqual(self.first.stats()["entries"], 1)

    def test_invalidatePrefixSeenAfterNearTTL(self) -> None:
        """
        One process's prefix invalidation is a miss in the other once its
        near copy is older than nearTTL, and at once in its own.
        """
        self.stored(self.first, KEY, entry())
        self.assertIsNotNone(self.fetched(self.second, KEY))
        prefix = keyPrefix(b"example.com", b"/news/")
        self.assertEqual(self.successResultOf(self.first.invalidatePrefix(prefix)), 1)
        self.assertIsNone(self.fetched(self.first, KEY))
        self.assertIsNotNone(self.fetched(self.second, KEY))
        self.clock.advance(1.0)
        self.assertIsNone(self.fetched(self.second, KEY))
        self.assertEqual(self.second.stats()["invalidatedReads"], 1)

    def test_eachBoundaryReachesItsKeysOnly(self) -> None:
        """
        A host, a subtree and one path's variants each drop exactly the
        keys that start with them, in other processes too.
        """
        keys = [
            b"h|/news/a|1",
            b"h|/news/a|2",
            b"h|/news/b/c|1",
            b"h|/sport/x|1",
            b"other|/news/a|1",
        ]
        cases = [
            (b"h|/news/a|", {b"h|/news/a|1", b"h|/news/a|2"}),
            (b"h|/news/", {b"h|/news/a|1", b"h|/news/a|2", b"h|/news/b/c|1"}),
            (b"h|/news/b/", {b"h|/news/b/c|1"}),
            (b"h|", set(keys) - {b"other|/news/a|1"}),
            (b"other|/", {b"other|/news/a|1"}),
        ]
        reader = self.makeStore(nearTTL=0)
        for prefix, dropped in cases:
            for key in keys:
                self.stored(self.first, key, entry(body=key))
            self.successResultOf(self.first.invalidatePrefix(prefix))
            missing = {key for key in keys if self.fetched(reader, key) is None}
            self.assertEqual(missing, dropped, prefix)

    def test_invalidateTag(self) -> None:
        """
        A tag invalidation drops the tagged entries in every process, and
        the untagged ones stay.
        """
        self.stored(self.first, b"h|/a|1", entry(tags=("news",)))
        self.stored(self.first, b"h|/b|1", entry(tags=("sport", "news")))
        self.stored(self.first, b"h|/c|1", entry(tags=("sport",)))
        self.stored(self.first, b"h|/d|1", entry())
        self.assertEqual(self.successResultOf(self.first.invalidateTag("news")), 2)
        reader = self.makeStore(nearTTL=0)
        self.assertEqual(
            [self.fetched(reader, k) is None for k in (b"h|/a|1", b"h|/b|1")],
            [True, True],
        )
        self.assertIsNotNone(self.fetched(reader, b"h|/c|1"))
        self.assertIsNotNone(self.fetched(reader, b"h|/d|1"))
        self.assertEqual(reader.stats()["invalidatedReads"], 2)

    def test_setAgainAfterInvalidation(self) -> None:
        """
        After an invalidation, a new entry stored under the same key is
        current again.
        """
        self.stored(self.first, KEY, entry(tags=("t",)))
        self.successResultOf(self.first.invalidatePrefix(b"example.com|"))
        self.successResultOf(self.first.invalidateTag("t"))
        self.stored(self.second, KEY, entry(b"new", tags=("t",)))
        reader = self.makeStore(nearTTL=0)
        fetched = self.fetched(reader, KEY)
        assert fetched is not None
        self.assertEqual(fetched.body, b"new")

    def test_setAfterMissUsesTheMissesGenerations(self) -> None:
        """
        A set that follows a miss on the same key writes the generations the
        miss saw, with no other round trip: a page rendered before another
        process's invalidation is stored already invalid.
        """
        self.stored(self.first, SIBLING, entry())
        self.assertIsNone(self.fetched(self.second, KEY))
        self.successResultOf(self.first.invalidatePrefix(b"example.com|/"))
        self.memcache.sent()
        self.stored(self.second, KEY, entry(b"rendered before"))
        self.assertEqual(self.memcache.sent(), ["set"])
        self.assertIsNone(self.fetched(self.makeStore(), KEY))

    def test_setWithoutMissReadsGenerations(self) -> None:
        """
        A set with no recent miss reads the current generations first.
        """
        self.stored(self.first, SIBLING, entry())
        self.assertIsNone(self.fetched(self.second, KEY))
        self.successResultOf(self.first.invalidatePrefix(b"example.com|/"))
        self.clock.advance(60)
        self.memcache.sent()
        self.stored(self.second, KEY, entry(b"rendered after", now=NOW + 60))
        self.assertEqual(self.memcache.sent(), ["getMultiple", "set"])
        self.assertIsNotNone(self.fetched(self.makeStore(), KEY))

    def test_inFlightGetAcrossInvalidation(self) -> None:
        """
        A get in flight when this process invalidates answers what it read,
        but leaves no near copy behind to be served afterwards.
        """
        self.stored(self.first, KEY, entry())
        self.memcache.hold()
        d = self.second.get(KEY)
        invalidated = self.second.invalidatePrefix(b"example.com|")
        self.memcache.release()
        self.assertIsNotNone(self.successResultOf(d))
        self.successResultOf(invalidated)
        self.memcache.sent()
        self.assertIsNone(self.fetched(self.second, KEY))
        self.assertEqual(self.memcache.sent(), ["getMultiple"])

    def test_delete(self) -> None:
        """
        A delete removes the item from memcached and the near copy; C{True}
        only when there was something.
        """
        self.stored(self.first, KEY, entry())
        self.assertTrue(self.successResultOf(self.first.delete(KEY)))
        self.assertIsNone(self.fetched(self.second, KEY))
        self.assertIsNone(self.fetched(self.first, KEY))
        self.assertFalse(self.successResultOf(self.first.delete(KEY)))
        self.assertEqual(self.first.stats()["invalidations"], 1)

    def test_expiry(self) -> None:
        """
        memcached drops the item at the entry's hard limit: the seconds
        left, rounded up, at least 1, at most 30 days.
        """
        itemKey = self.first._itemKey(KEY)
        for grace, maxStale, sent in [(5, 50.2, 61), (0, 0, 10), (5, 1e9, 2592000)]:
            self.stored(self.first, KEY, entry(grace=grace, maxStale=maxStale))
            self.assertEqual(self.memcache.expiries[itemKey], sent)
        self.stored(self.first, KEY, entry(now=NOW - 100))
        self.assertEqual(self.memcache.expiries[itemKey], 1)
        self.stored(self.first, KEY, entry(ttl=math.inf))
        self.assertEqual(self.memcache.expiries[itemKey], 30 * 24 * 3600)

    def test_expiredItemIsMiss(self) -> None:
        """
        An item read past its hard limit (a process whose clock is ahead)
        is a miss.
        """
        self.stored(self.first, KEY, entry(maxStale=20))
        aheadClock = Clock()
        aheadClock.advance(NOW + 30.5)
        later = MemcacheCacheStore(self.memcache, aheadClock, nearTTL=0)  # type: ignore[arg-type]
        self.assertIsNone(self.fetched(later, KEY))
        self.assertEqual(later.stats()["expired"], 1)

    def test_classification(self) -> None:
        """
        Fresh entries are hits, entries in their grace window stale hits,
        later ones misses (still returned, for stale-if-error).
        """
        reader = self.makeStore(nearTTL=0)
        self.stored(self.first, KEY, entry(ttl=10, grace=5, maxStale=30))
        for advance in (0, 12, 5):
            self.clock.advance(advance)
            self.assertIsNotNone(self.fetched(reader, KEY))
        stats = reader.stats()
        self.assertEqual(
            (stats["hits"], stats["staleHits"], stats["misses"]), (1, 1, 1)
        )

    def test_statsNames(self) -> None:
        """
        stats() has the ICacheStore counters and the memcached ones.
        """
        self.assertLessEqual(
            {
                "hits",
                "staleHits",
                "misses",
                "sets",
                "refusals",
                "evictions",
                "invalidations",
                "bytes",
                "entries",
                "nearHits",
                "remoteHits",
                "remoteMisses",
                "remoteErrors",
                "decodeErrors",
                "invalidatedReads",
            },
            set(self.first.stats()),
        )


class GenerationTests(_StoreTestCase):
    """
    Generation tokens that are missing, lost or unreadable.
    """

    def test_missingTokensCreated(self) -> None:
        """
        A set under prefixes no one has invalidated yet creates their tokens
        with C{add}.
        """
        store = self.makeStore()
        self.stored(store, KEY, entry())
        self.assertEqual(self.memcache.sent(), ["getMultiple"] + ["add"] * 4 + ["set"])
        for prefix in boundaryPrefixes(KEY):
            self.assertIn(store._prefixKey(prefix), self.memcache.items)

    def test_lostTokenIsMiss(self) -> None:
        """
        An evicted token (or a restarted server's) matches no item: a
        miss, never a stale page. The next set makes the key work again.
        """
        store = self.makeStore(nearTTL=0)
        self.stored(store, KEY, entry())
        del self.memcache.items[store._prefixKey(b"example.com|/")]
        self.assertIsNone(self.fetched(store, KEY))
        self.stored(store, KEY, entry())
        self.assertIsNotNone(self.fetched(store, KEY))

    def test_unreadableTokenIsMiss(self) -> None:
        """
        A token holding something else is a miss, and replaced on the next
        set.
        """
        store = self.makeStore(nearTTL=0)
        self.stored(store, KEY, entry())
        tokenKey = store._prefixKey(b"example.com|")
        self.memcache.items[tokenKey] = (b"garbage", math.inf)
        self.assertIsNone(self.fetched(store, KEY))
        self.stored(store, KEY, entry())
        self.assertNotEqual(self.memcache.items[tokenKey][0], b"garbage")
        self.assertIsNotNone(self.fetched(store, KEY))

    def test_tokenCreatedMeanwhile(self) -> None:
        """
        When another process creates a missing token first, the set uses
        that one, and the item is current.
        """
        store = self.makeStore()
        tokenKey = store._prefixKey(b"example.com|")
        self.memcache.hold()
        d = store.set(KEY, entry())
        self.assertEqual(self.memcache.sent(), ["getMultiple"])
        # Another process creates a token while the reply is on its way.
        self.memcache.items[tokenKey] = (b"%016x" % (12345,), math.inf)
        self.memcache.release()
        self.assertTrue(self.successResultOf(d))
        self.assertEqual(self.memcache.sent(), ["add", "get"] + ["add"] * 3 + ["set"])
        self.assertEqual(self.memcache.items[tokenKey][0], b"%016x" % (12345,))
        self.assertIsNotNone(self.fetched(self.makeStore(), KEY))


class RefusalTests(_StoreTestCase):
    """
    Entries the store will not write.
    """

    def test_overMaxEntryBytes(self) -> None:
        """
        An entry whose encoded item is over maxEntryBytes is refused, and
        the older item under its key is deleted (it is no longer current).
        """
        store = self.makeStore(maxEntryBytes=1000)
        self.stored(store, KEY, entry(b"small"))
        self.assertFalse(self.successResultOf(store.set(KEY, entry(b"x" * 1000))))
        self.assertIsNone(self.fetched(store, KEY))
        self.assertNotIn(store._itemKey(KEY), self.memcache.items)
        self.assertEqual(store.stats()["refusals"], 1)
        self.assertIn("over maxEntryBytes=1000", " ".join(self.logged()))

    def test_exactlyMaxEntryBytes(self) -> None:
        """
        An item of exactly maxEntryBytes is written.
        """
        store = self.makeStore(maxEntryBytes=1000)
        overhead = len(_encodeItem(KEY, entry(b""), [0] * 4, []))
        self.stored(store, KEY, entry(b"x" * (1000 - overhead)))
        self.assertEqual(len(self.memcache.items[store._itemKey(KEY)][0]), 1000)

    def test_defaultLimit(self) -> None:
        """
        The default fits under memcached's 1 MiB item, key and header
        included.
        """
        self.assertEqual(self.makeStore().maxEntryBytes, DEFAULT_MAX_ENTRY_BYTES)
        self.assertLess(DEFAULT_MAX_ENTRY_BYTES + 250 + 100, 1024 * 1024)

    def test_tooDeep(self) -> None:
        """
        A key with more than MAX_BOUNDARIES boundaries is refused, and a get
        of it is a miss without a round trip.
        """
        store = self.makeStore()
        deepest = b"h|" + b"/d" * (MAX_BOUNDARIES - 2) + b"|x"
        self.assertEqual(len(boundaryPrefixes(deepest)), MAX_BOUNDARIES)
        self.stored(store, deepest, entry())
        deeper = b"h|" + b"/d" * (MAX_BOUNDARIES - 1) + b"|x"
        self.assertFalse(self.successResultOf(store.set(deeper, entry())))
        self.memcache.sent()
        self.assertIsNone(self.fetched(store, deeper))
        self.assertEqual(self.memcache.sent(), [])

    def test_tooManyTags(self) -> None:
        """
        An entry with more than MAX_TAGS tags is refused.
        """
        store = self.makeStore()
        tags = tuple(f"t{n}" for n in range(MAX_TAGS + 1))
        self.stored(store, KEY, entry(tags=tags[:-1]))
        self.assertFalse(self.successResultOf(store.set(KEY, entry(tags=tags))))
        self.assertIn(f"more than {MAX_TAGS} tags", " ".join(self.logged()))

    def test_fieldTooLongForFormat(self) -> None:
        """
        A header name longer than the format holds is refused, not raised.
        """
        store = self.makeStore(maxEntryBytes=10**6)
        huge = entry(headers=((b"x" * 70000, b"v"),))
        self.assertFalse(self.successResultOf(store.set(KEY, huge)))
        self.assertEqual(store.stats()["refusals"], 1)


class UnreadableItemTests(_StoreTestCase):
    """
    What memcached holds under an item key but this store cannot use.
    """

    def setUp(self) -> None:
        super().setUp()
        self.store = self.makeStore(nearTTL=0)
        self.stored(self.store, KEY, entry())
        self.itemKey = self.store._itemKey(KEY)
        self.value = self.memcache.items[self.itemKey][0]

    def replaced(self, value: bytes) -> Optional[CacheEntry]:
        self.memcache.items[self.itemKey] = (value, math.inf)
        return self.fetched(self.store, KEY)

    def test_corruptedIsLoggedMiss(self) -> None:
        """
        Every truncation of the item is a miss, counted, and logged once per
        interval with how many were not logged.
        """
        for length in range(len(self.value)):
            self.assertIsNone(self.replaced(self.value[:length]))
        self.assertEqual(self.store.stats()["decodeErrors"], len(self.value))
        [line] = self.logged()
        self.assertIn("Unreadable memcached item", line)
        self.clock.advance(10)
        self.replaced(b"junk")
        [line] = self.logged()
        self.assertIn(f"({len(self.value) - 1} more not logged)", line)

    def test_otherVersionNotLogged(self) -> None:
        """
        An item in another format version is a counted miss, not a warning.
        """
        self.assertIsNone(self.replaced(self.value[:3] + b"\x09" + self.value[4:]))
        self.assertEqual(self.store.stats()["otherVersions"], 1)
        self.assertEqual(self.logged(), [])

    def test_anotherKeysItem(self) -> None:
        """
        An item written for another key (a hash collision, or a copy) is a
        miss.
        """
        self.stored(self.store, SIBLING, entry(b"other page"))
        copied = self.memcache.items[self.store._itemKey(SIBLING)][0]
        self.assertIsNone(self.replaced(copied))
        self.assertIn("another key", " ".join(self.logged()))
        self.assertEqual(self.store.stats()["decodeErrors"], 1)


class FailureTests(_StoreTestCase):
    """
    memcached down, failing or slow.
    """

    def test_downMeansMisses(self) -> None:
        """
        With memcached gone, gets are misses and sets C{False}, counted and
        logged once per interval; it works again when memcached is back.
        """
        store = self.makeStore(nearTTL=0)
        self.stored(store, KEY, entry())
        self.memcache.error = ConnectionLost("gone")
        for _ in range(3):
            self.assertIsNone(self.fetched(store, KEY))
            self.assertFalse(self.successResultOf(store.set(KEY, entry())))
        self.assertEqual(store.stats()["remoteErrors"], 6)
        [line] = self.logged()
        self.assertIn("memcached get failed", line)
        self.clock.advance(10)
        self.fetched(store, KEY)
        [line] = self.logged()
        self.assertIn("(5 more failures not logged)", line)
        self.memcache.error = None
        self.assertIsNotNone(self.fetched(store, KEY))

    def test_serverErrorsAreMisses(self) -> None:
        """
        Errors memcached answers with are misses too.
        """
        store = self.makeStore()
        self.memcache.error = ServerError("out of memory")
        self.assertIsNone(self.fetched(store, KEY))
        self.assertFalse(self.successResultOf(store.set(KEY, entry())))

    def test_invalidationsFailLoudly(self) -> None:
        """
        An invalidation or delete memcached did not take fails with
        L{CacheStoreUnavailableError}, naming what was not invalidated, and
        still drops the near copies here.
        """
        store = self.makeStore()
        self.stored(store, KEY, entry(tags=("news",)))
        self.memcache.error = ConnectionLost("gone")
        for call, what in [
            (lambda: store.invalidatePrefix(b"example.com|"), "example.com|"),
            (lambda: store.invalidateTag("news"), "'news'"),
            (lambda: store.delete(KEY), "/news/today"),
        ]:
            failure = self.failureResultOf(call(), CacheStoreUnavailableError)
            self.assertIn(what, failure.getErrorMessage())
        self.assertEqual(store.stats()["entries"], 0)

    def test_unexpectedErrorIsMissWithTraceback(self) -> None:
        """
        A bug (not memcached failing) in a get is still a miss, logged with
        its traceback.
        """
        store = self.makeStore()
        self.memcache.error = ZeroDivisionError("bug")
        self.assertIsNone(self.fetched(store, KEY))
        [event] = self.events
        self.assertIsInstance(event["log_failure"].value, ZeroDivisionError)

    def test_notConnected(self) -> None:
        """
        A L{MemcacheConnection} with no connection: gets miss, sets answer
        C{False}, invalidations fail, at once.
        """
        connection = MemcacheConnection(PendingEndpoint(), self.clock)
        store = MemcacheCacheStore(connection, self.clock)
        self.assertFalse(store.isConnected())
        self.assertIsNone(self.fetched(store, KEY))
        self.assertFalse(self.successResultOf(store.set(KEY, entry())))
        self.failureResultOf(
            store.invalidatePrefix(b"example.com|"), CacheStoreUnavailableError
        )

    def test_replyTimeoutIsMiss(self) -> None:
        """
        Over a real L{MemCacheProtocol}: the get is one command line, and a
        server that does not answer within the timeout is a miss.
        """
        protocol = MemCacheProtocol(2)  # type: ignore[arg-type]
        protocol.callLater = self.clock.callLater  # type: ignore[method-assign]
        transport = StringTransport()
        protocol.makeConnection(transport)
        store = MemcacheCacheStore(protocol, self.clock)
        d = store.get(KEY)
        keys = [store._itemKey(KEY)] + [
            store._prefixKey(p) for p in boundaryPrefixes(KEY)
        ]
        self.assertEqual(transport.value(), b"get " + b" ".join(keys) + b"\r\n")
        self.assertNoResult(d)
        self.clock.advance(2)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(store.stats()["remoteErrors"], 1)


class ServiceTests(_StoreTestCase):
    """
    The store as a service: it runs its connection.
    """

    def test_startsAndStopsItsConnection(self) -> None:
        """
        Starting the store starts its connection; stopping it stops the
        connection and leaves no timer behind.
        """
        endpoint = PendingEndpoint()
        connection = MemcacheConnection(endpoint, self.clock)
        store = MemcacheCacheStore(connection, self.clock)
        store.startService()
        self.assertTrue(connection.running)
        self.assertEqual(len(endpoint.attempts), 1)
        self.successResultOf(store.stopService())
        self.assertFalse(connection.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_leavesARunningConnectionAlone(self) -> None:
        """
        A connection that was already running (shared with another user)
        is not stopped with the store.
        """
        connection = MemcacheConnection(PendingEndpoint(), self.clock)
        connection.startService()
        self.addCleanup(connection.stopService)
        store = MemcacheCacheStore(connection, self.clock)
        store.startService()
        self.successResultOf(store.stopService())
        self.assertTrue(connection.running)

    def test_nearStoreGiven(self) -> None:
        """
        A near store passed in is the one used.
        """
        near = MemoryCacheStore(self.clock, maxBytes=4096, maxEntryBytes=4096)
        store = self.makeStore(near=near)
        self.stored(store, KEY, entry())
        self.assertEqual(near.stats()["entries"], 1)
        self.assertTrue(self.successResultOf(store.set(KEY, entry(b"y" * 5000))))
        self.assertEqual(near.stats()["entries"], 0)


_TOKEN = b"%016x" % (0x0123456789ABCDEF,)


class ForgetfulMemcache:
    """
    A memcached that keeps no item and has one generation token for every
    prefix and tag: everything a store reads is a miss, and nothing written
    stays in this process (so what does is the store's own).
    """

    _disconnected = False

    def __init__(self, namespace: bytes) -> None:
        self._tokens = (namespace + b"p:", namespace + b"t:")

    def _value(self, key: bytes) -> Tuple[int, Optional[bytes]]:
        return (0, _TOKEN if key.startswith(self._tokens) else None)

    def get(self, key: bytes) -> Deferred[Any]:
        return succeed(self._value(key))

    def getMultiple(self, keys: List[bytes]) -> Deferred[Any]:
        return succeed({key: self._value(key) for key in keys})

    def set(
        self, key: bytes, val: bytes, flags: int = 0, expireTime: int = 0
    ) -> Deferred[Any]:
        return succeed(True)

    def add(
        self, key: bytes, val: bytes, flags: int = 0, expireTime: int = 0
    ) -> Deferred[Any]:
        return succeed(False)

    def delete(self, key: bytes) -> Deferred[Any]:
        return succeed(False)


class InProcessMemoryTests(SynchronousTestCase):
    """
    What the store keeps in the process stays within its near store's
    budget, however long and many the keys.
    """

    def test_longKeyFloodStaysWithinNearBudget(self) -> None:
        """
        At ten thousand requests a second, twenty times the near store's
        budget of 2 KB-URL pages read and written once each (one in four
        read but never written, as an uncacheable page is) leave at most 1.5
        times that budget (and a small fixed baseline) of memory in the
        process; C{maxBytes} says how much it may keep.
        """
        budget = 256 * 1024
        clock = Clock()
        clock.advance(NOW)
        headers = ((b"content-type", b"text/html; charset=utf-8"),)

        def fill() -> MemcacheCacheStore:
            near = MemoryCacheStore(clock, maxBytes=budget, maxEntryBytes=budget)
            store = MemcacheCacheStore(
                ForgetfulMemcache(b"tlcache:"),  # type: ignore[arg-type]
                clock,
                near=near,
            )
            offered = index = 0
            while offered < 20 * budget:
                index += 1
                request = DummyRequest([b""])
                path = b"/item/%08d/" % index
                request.uri = path + b"a" * (2048 - len(path))
                request.requestHeaders.setRawHeaders(b"host", [b"example.com"])
                key = pageKey(request)
                clock.advance(0.0001)
                self.assertIsNone(self.successResultOf(store.get(key)))
                if index % 4:
                    page = b"<p>%d</p>" % index + b"x" * 200
                    written = entry(page, now=clock.seconds(), headers=headers)
                    self.assertTrue(self.successResultOf(store.set(key, written)))
                    offered += len(page)
                offered += len(key)
            return store

        used, store = traced(fill)
        self.assertGreater(store.stats()["evictions"], 0)
        self.assertLessEqual(used, 1.5 * budget + 32 * 1024)
        self.assertEqual(store.maxBytes, budget + budget // 8)
