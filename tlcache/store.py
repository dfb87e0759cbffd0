# -*- test-case-name: tests.unit.test_cachestore -*-
"""
Where rendered pages are kept: the L{ICacheStore} role, the L{CacheEntry}
value it holds, and L{MemoryCacheStore}, the bounded in-process LRU default.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

from attrs import field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers as _TwistedHeaders
from zope.interface import Interface, implementer

from tlcache.keys import familyOfKey

__all__ = ["CacheEntry", "ICacheStore", "MemoryCacheStore", "strongETag"]

Headers = Tuple[Tuple[bytes, bytes], ...]

# What a stored entry costs beyond its bytes: the slot, the entry object
# with the headers it replays (prepared once), the dict and OrderedDict
# nodes, the index sets (about 1,350 bytes, measured with tracemalloc on
# CPython 3.11). Counted so that a flood of tiny entries is bounded by the
# budget too, not only large ones.
ENTRY_OVERHEAD = 1344

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
        The bytes this entry holds: body, headers, ETag and tags.
        """
        return (
            len(self.body)
            + sum(len(name) + len(value) for name, value in self.headers)
            + len(self.etag)
            + sum(len(tag) for tag in self.tags)
        )


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


class _Slot:
    """
    An entry as the memory store keeps it, with its accounted size.
    """

    __slots__ = ("entry", "family", "size")

    def __init__(self, entry: CacheEntry, family: bytes, size: int) -> None:
        self.entry = entry
        self.family = family
        self.size = size


@implementer(ICacheStore)
class MemoryCacheStore:
    """
    The in-process store: an LRU bounded by a byte budget (key, body, headers
    and a per-entry overhead are counted), a per-entry cap, and a cap on the
    variants of one path (the keys sharing a family, see
    L{tlcache.keys.familyOfKey}) so one path's query strings cannot push
    every other page out. Expiry is enforced on read; no timers.
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
        self._families: Dict[bytes, OrderedDict[bytes, None]] = {}
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
        L{get} without the L{Deferred<twisted.internet.defer.Deferred>}, for callers on
        the hot path that
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
        self._families[slot.family].move_to_end(key)
        entry = slot.entry
        if now < entry.freshUntil:
            self._counters["hits"] += 1
        elif entry.isServableStale(now):
            self._counters["staleHits"] += 1
        else:
            self._counters["misses"] += 1
        return entry

    def set(self, key: bytes, entry: CacheEntry) -> Deferred[bool]:
        """
        See L{ICacheStore.set}. Evicts least recently used entries to stay
        within the budget, and the least recently used variant of the same
        path to stay within the variant cap.
        """
        size = len(key) + entry.size() + ENTRY_OVERHEAD
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
        while self._bytes + size > self.maxBytes:
            self._remove(next(iter(self._slots)))
            self._counters["evictions"] += 1
        self._slots[key] = _Slot(entry, family, size)
        self._families.setdefault(family, OrderedDict())[key] = None
        for tag in entry.tags:
            self._tags.setdefault(tag, set()).add(key)
        self._bytes += size
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
        hard limit) and C{variantEvictions} (evictions by the variant cap,
        also counted in C{evictions}).
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
        variants = self._families[slot.family]
        del variants[key]
        if not variants:
            del self._families[slot.family]
        for tag in slot.entry.tags:
            tagged = self._tags[tag]
            tagged.discard(key)
            if not tagged:
                del self._tags[tag]
