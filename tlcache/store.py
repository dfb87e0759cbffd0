# -*- test-case-name: tests.unit.test_cachestore -*-
"""
Where rendered pages are kept: the L{ICacheStore} role, the L{CacheEntry}
value it holds, and L{MemoryCacheStore}, the bounded in-process LRU default.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

from attrs import field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers as _TwistedHeaders
from zope.interface import Interface, implementer

from tlcache._footprint import (
    CPYTHON_SIZES,
    DICT_ITEM,
    FLOAT,
    ORDERED_BASE,
    ORDERED_ITEM,
    SET_BASE,
    SET_ITEM,
    footprint,
    sizeOf,
)
from tlcache.keys import familyOfKey

__all__ = ["CacheEntry", "ICacheStore", "MemoryCacheStore", "strongETag"]

Headers = Tuple[Tuple[bytes, bytes], ...]

_COUNTERS = (
    "hits",
    "staleHits",
    "misses",
    "expired",
    "sets",
    "refusals",
    "evictions",
    "variantEvictions",
    "invalidations",
)


def strongETag(body: bytes) -> bytes:
    """
    A strong entity tag for C{body}: a quoted hash of exactly these bytes.
    """
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'


def _checkHeaders(headers: Headers) -> Headers:
    for pair in headers:
        if len(pair) != 2 or not all(isinstance(part, bytes) for part in pair):
            raise TypeError(f"headers must be (bytes, bytes) pairs, not {pair!r}")
        if pair[0].lower() == b"set-cookie":
            # Footgun 2: a replayed cookie hands one user's session to another.
            raise ValueError("a response that sets a cookie is never stored")
    return headers


@frozen
class CacheEntry:
    """
    One stored render: its bytes, the headers to replay, its strong ETag and
    its lifetime. Fresh until C{freshUntil}; then servable while one refresh
    runs until C{staleUntil} (the grace window); kept for stale-if-error until
    C{expiresAt}, after which no store returns it.

    Build entries with L{CacheEntry.build}, which computes the ETag once.
    """

    body: bytes
    headers: Headers = field(converter=_checkHeaders)
    created: float
    etag: bytes
    tags: FrozenSet[str]
    freshUntil: float
    staleUntil: float
    expiresAt: float
    #: What a hit sends, worked out once: the stored headers, C{ETag} and
    #: C{Last-Modified}, as twisted.web names them.
    replayHeaders: Tuple[Tuple[bytes, Tuple[bytes, ...]], ...] = field(
        init=False, eq=False, repr=False
    )
    _size: int = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        prepared = _TwistedHeaders()
        for name, value in self.headers:
            prepared.addRawHeader(name, value)
        prepared.setRawHeaders(b"etag", [self.etag])
        try:
            lastModified = datetimeToString(int(self.created))
        except (OverflowError, ValueError, OSError) as e:
            raise ValueError(f"creation time {self.created!r} is out of range") from e
        prepared.setRawHeaders(b"last-modified", [lastModified])
        object.__setattr__(
            self,
            "replayHeaders",
            tuple(
                (name, tuple(values)) for name, values in prepared.getAllRawHeaders()
            ),
        )
        size = _entrySize(self)
        object.__setattr__(self, "_size", size + sizeOf(size))

    @classmethod
    def build(
        cls,
        body: bytes,
        headers: Iterable[Tuple[bytes, bytes]],
        now: float,
        ttl: float,
        grace: float,
        maxStale: float,
        tags: Iterable[str] = (),
    ) -> CacheEntry:
        """
        An entry rendered at C{now}: fresh for C{ttl} seconds, then served
        stale for C{grace} seconds while it is refreshed; C{maxStale} is the
        hard limit on staleness (seconds past freshness), at least C{grace}.

        @raise ValueError: on a negative duration, C{maxStale < grace}, or a
            C{Set-Cookie} header.
        """
        if ttl < 0 or grace < 0 or maxStale < 0:
            raise ValueError("ttl, grace and maxStale must not be negative")
        if maxStale < grace:
            raise ValueError("maxStale must be at least grace")
        freshUntil = now + ttl
        return cls(
            body=body,
            headers=tuple((name, value) for name, value in headers),
            created=now,
            etag=strongETag(body),
            tags=frozenset(tags),
            freshUntil=freshUntil,
            staleUntil=freshUntil + grace,
            expiresAt=freshUntil + maxStale,
        )

    def isFresh(self, now: float) -> bool:
        """
        May this entry be served without a refresh?
        """
        return now < self.freshUntil

    def isServableStale(self, now: float) -> bool:
        """
        Is this entry past freshness but inside its grace window, so it may be
        served while one background refresh runs?
        """
        return self.freshUntil <= now < self.staleUntil

    def isExpired(self, now: float) -> bool:
        """
        Is this entry past its hard limit, never to be served again?
        """
        return now >= self.expiresAt

    def size(self) -> int:
        """
        The memory this entry occupies, in bytes: its body, its headers (as
        stored and as a hit sends them), ETag, tags, times and the entry
        itself, each object as CPython counts it (C{sys.getsizeof}; an
        estimate on PyPy). Worked out once, when the entry is made.
        """
        return self._size


def _entrySize(entry: CacheEntry) -> int:
    """
    The memory C{entry} occupies with what it holds, each object counted
    once (a header value is often the same object stored and replayed).
    """
    if not CPYTHON_SIZES:
        return footprint(
            entry,
            entry.body,
            entry.headers,
            entry.etag,
            entry.tags,
            entry.created,
            entry.freshUntil,
            entry.staleUntil,
            entry.expiresAt,
            entry.replayHeaders,
        )
    getsizeof = sys.getsizeof
    headers = entry.headers
    tags = entry.tags
    replay = entry.replayHeaders
    size = (
        getsizeof(entry)
        + getsizeof(entry.body)
        + getsizeof(entry.etag)
        + 4 * FLOAT
        + getsizeof(headers)
        + getsizeof(tags)
        + getsizeof(replay)
    )
    stored = set()
    for pair in headers:
        value = pair[1]
        stored.add(id(value))
        size += getsizeof(pair) + getsizeof(pair[0]) + getsizeof(value)
    for tag in tags:
        size += getsizeof(tag)
    for prepared in replay:
        values = prepared[1]
        size += getsizeof(prepared) + getsizeof(prepared[0]) + getsizeof(values)
        for sent in values:
            if id(sent) not in stored:
                size += getsizeof(sent)
    return size


class ICacheStore(Interface):
    """
    Keeps rendered entries by key. Every method answers through a Deferred,
    so a networked store (memcached) fits behind the same role.
    """

    def get(key: bytes) -> Deferred[Optional[CacheEntry]]:
        """
        The entry under C{key}, or C{None}. Entries past C{expiresAt} are
        never returned. An entry past its grace window may still be returned
        (for stale-if-error); the caller classifies it with
        L{CacheEntry.isFresh} and L{CacheEntry.isServableStale}.
        """

    def set(key: bytes, entry: CacheEntry) -> Deferred[bool]:
        """
        Store C{entry} under C{key}, replacing what was there. C{False} when
        the store refused it (larger than its per-entry cap); a refusal also
        drops the older entry under C{key}, which is no longer current.
        """

    def delete(key: bytes) -> Deferred[bool]:
        """
        Drop the entry under C{key}; C{True} if there was one.
        """

    def invalidatePrefix(prefix: bytes) -> Deferred[int]:
        """
        Drop every entry whose key starts with C{prefix}; how many.
        """

    def invalidateTag(tag: str) -> Deferred[int]:
        """
        Drop every entry carrying C{tag}; how many.
        """

    def stats() -> Dict[str, int]:
        """
        Counters and gauges: hits, staleHits, misses, sets, refusals,
        evictions, invalidations, bytes, entries, and store-specific ones.
        """


class _Variants(OrderedDict[bytes, None]):
    """
    The keys of one family (see L{tlcache.keys.familyOfKey}), least recently
    used first, and the family they share.
    """

    __slots__ = ("family",)

    def __init__(self, family: bytes) -> None:
        super().__init__()
        self.family = family


class _Slot:
    """
    An entry as the memory store keeps it: its family's keys, its accounted
    size and when it was stored.
    """

    __slots__ = ("entry", "variants", "size", "stored")

    def __init__(
        self, entry: CacheEntry, variants: _Variants, size: int, stored: float
    ) -> None:
        self.entry = entry
        self.variants = variants
        self.size = size
        self.stored = stored


# What the memory store's bookkeeping costs, beyond the entries and keys:
# per entry, its slot (with its size and time) and its places in the LRU
# and in its family; per tag an entry carries, its place in the tag's set.
_SLOT_COST = sizeOf(_Slot.__new__(_Slot)) + sizeOf(2**40) + FLOAT + 2 * ORDERED_ITEM
# Per family, and per tag, present: the name, its (nearly) empty container
# and its place in the index.
_FAMILY_COST = sizeOf(_Variants(b"")) - sizeOf(OrderedDict()) + ORDERED_BASE + DICT_ITEM
_TAG_COST = SET_BASE + DICT_ITEM


def _familyCost(family: bytes) -> int:
    return sizeOf(family) + _FAMILY_COST


def _tagCost(tag: str) -> int:
    return sizeOf(tag) + _TAG_COST


@implementer(ICacheStore)
class MemoryCacheStore:
    """
    The in-process store: an LRU bounded by a byte budget, a per-entry cap,
    and a cap on the variants of one path (the keys sharing a family, see
    L{tlcache.keys.familyOfKey}) so one path's query strings cannot push
    every other page out. Expiry is enforced on read; no timers.

    The budget counts the memory the store really holds, as CPython counts
    it (C{sys.getsizeof}): each entry (L{CacheEntry.size}), its key, the
    store's bookkeeping for it, and the family and tag names its indexes
    keep. So however long the URLs and however small the pages, the store's
    memory stays within C{maxBytes} (and a few kilobytes of its own).
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxBytes: int = 64 * 1024 * 1024,
        maxEntryBytes: int = 1024 * 1024,
        maxVariantsPerPath: Optional[int] = 256,
        familyOf: Callable[[bytes], bytes] = familyOfKey,
    ) -> None:
        if maxEntryBytes > maxBytes:
            raise ValueError("maxEntryBytes must not exceed maxBytes")
        if maxVariantsPerPath is not None and maxVariantsPerPath < 1:
            raise ValueError("maxVariantsPerPath must be at least 1, or None")
        self.clock = clock
        self.maxBytes = maxBytes
        self.maxEntryBytes = maxEntryBytes
        self.maxVariantsPerPath = maxVariantsPerPath
        self._familyOf = familyOf
        self._slots: OrderedDict[bytes, _Slot] = OrderedDict()
        # family -> its keys, least recently used first.
        self._families: Dict[bytes, _Variants] = {}
        self._tags: Dict[str, Set[bytes]] = {}
        self._bytes = 0
        self._counters = dict.fromkeys(_COUNTERS, 0)

    def get(self, key: bytes) -> Deferred[Optional[CacheEntry]]:
        """
        See L{ICacheStore.get}. Counts a fresh entry as a hit, an entry in
        its grace window as a stale hit, anything else as a miss.
        """
        return succeed(self.getNow(key))

    def getNow(self, key: bytes) -> Optional[CacheEntry]:
        """
        L{get} without the L{Deferred}, for callers on the hot path that
        know this store answers at once.
        """
        now = self.clock.seconds()
        slot = self._slots.get(key)
        if slot is not None and slot.entry.isExpired(now):
            self._remove(key)
            self._counters["expired"] += 1
            slot = None
        if slot is None:
            self._counters["misses"] += 1
            return None
        self._slots.move_to_end(key)
        slot.variants.move_to_end(key)
        entry = slot.entry
        if now < entry.freshUntil:
            self._counters["hits"] += 1
        elif entry.isServableStale(now):
            self._counters["staleHits"] += 1
        else:
            self._counters["misses"] += 1
        return entry

    def storedAt(self, key: bytes) -> Optional[float]:
        """
        When the entry under C{key} was stored (by this store's clock), or
        C{None} if there is none. Neither a read nor a use: nothing is
        counted and the entry keeps its place.
        """
        slot = self._slots.get(key)
        return None if slot is None else slot.stored

    def dropStoredUntil(self, when: float) -> int:
        """
        Drop the least recently used entries stored at or before C{when},
        up to the first one stored later (a cheap sweep, for entries only
        worth keeping for a while, like L{tlcache.memcachestore}'s near
        copies); how many. Counted as C{expired}.
        """
        count = 0
        slots = self._slots
        while slots:
            key, slot = next(iter(slots.items()))
            if slot.stored > when:
                break
            self._remove(key)
            count += 1
        self._counters["expired"] += count
        return count

    def set(self, key: bytes, entry: CacheEntry) -> Deferred[bool]:
        """
        See L{ICacheStore.set}. Evicts least recently used entries to stay
        within the budget, and the least recently used variant of the same
        path to stay within the variant cap.
        """
        tags = entry.tags
        size = sizeOf(key) + entry.size() + _SLOT_COST + SET_ITEM * len(tags)
        if key in self._slots:
            self._remove(key)
        if size > self.maxEntryBytes:
            self._counters["refusals"] += 1
            return succeed(False)
        family = self._familyOf(key)
        variants = self._families.get(family)
        if self.maxVariantsPerPath is not None and variants is not None:
            while len(variants) >= self.maxVariantsPerPath:
                self._remove(next(iter(variants)))
                self._counters["evictions"] += 1
                self._counters["variantEvictions"] += 1
                variants = self._families.get(family)
                if variants is None:
                    break
        while True:
            needed = size
            if family not in self._families:
                needed += _familyCost(family)
            for tag in tags:
                if tag not in self._tags:
                    needed += _tagCost(tag)
            if self._bytes + needed <= self.maxBytes:
                break
            if not self._slots:
                self._counters["refusals"] += 1
                return succeed(False)
            self._remove(next(iter(self._slots)))
            self._counters["evictions"] += 1
        variants = self._families.get(family)
        if variants is None:
            variants = self._families[family] = _Variants(family)
        variants[key] = None
        self._slots[key] = _Slot(entry, variants, size, self.clock.seconds())
        for tag in tags:
            tagged = self._tags.get(tag)
            if tagged is None:
                tagged = self._tags[tag] = set()
            tagged.add(key)
        self._bytes += needed
        self._counters["sets"] += 1
        return succeed(True)

    def delete(self, key: bytes) -> Deferred[bool]:
        """
        See L{ICacheStore.delete}.
        """
        if key not in self._slots:
            return succeed(False)
        self._remove(key)
        self._counters["invalidations"] += 1
        return succeed(True)

    def invalidatePrefix(self, prefix: bytes) -> Deferred[int]:
        """
        See L{ICacheStore.invalidatePrefix}. Looks at families, not at every
        entry: a whole family goes when it starts with C{prefix}, and only a
        family that C{prefix} reaches into has its keys looked at one by one.
        """
        doomed: List[bytes] = []
        for family, variants in self._families.items():
            if family.startswith(prefix):
                doomed.extend(variants)
            elif prefix.startswith(family):
                doomed.extend(key for key in variants if key.startswith(prefix))
        return succeed(self._invalidate(doomed))

    def invalidateTag(self, tag: str) -> Deferred[int]:
        """
        See L{ICacheStore.invalidateTag}. Uses the tag index: the cost is the
        number of tagged entries.
        """
        return succeed(self._invalidate(list(self._tags.get(tag, ()))))

    def stats(self) -> Dict[str, int]:
        """
        See L{ICacheStore.stats}; also C{expired} (dropped on read past their
        hard limit, or by L{dropStoredUntil}) and C{variantEvictions}
        (evictions by the variant cap, also counted in C{evictions}).
        C{bytes} is the memory held, as the budget counts it.
        """
        result = dict(self._counters)
        result["bytes"] = self._bytes
        result["entries"] = len(self._slots)
        return result

    def _invalidate(self, keys: Iterable[bytes]) -> int:
        count = 0
        for key in keys:
            self._remove(key)
            count += 1
        self._counters["invalidations"] += count
        return count

    def _remove(self, key: bytes) -> None:
        slot = self._slots.pop(key)
        self._bytes -= slot.size
        variants = slot.variants
        del variants[key]
        if not variants:
            del self._families[variants.family]
            self._bytes -= _familyCost(variants.family)
        for tag in slot.entry.tags:
            tagged = self._tags[tag]
            tagged.discard(key)
            if not tagged:
                del self._tags[tag]
                self._bytes -= _tagCost(tag)
