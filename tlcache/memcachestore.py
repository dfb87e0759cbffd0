# -*- test-case-name: tests.unit.test_memcachecachestore -*-
"""
The render cache shared through memcached: L{MemcacheCacheStore} keeps
rendered pages where every process behind the balancer finds them, with a
small in-process LRU in front, and invalidates across processes with
generation tokens, since memcached cannot list its keys.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple, TypeVar, Union

from twisted.application.service import Service
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols.memcache import (
    ClientError,
    MemCacheProtocol,
    NoSuchCommand,
    ServerError,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from tlcache._footprint import FLOAT, ORDERED_ITEM, footprint, sizeOf
from tlcache._memcacheitem import (
    _KEY_SUFFIX_LENGTH,
    _decodeItem,
    _encodeHead,
    _encodeItem,
    _generation,
    _ItemFormatError,
    _itemMemcacheKey,
    _newGeneration,
    _OtherVersionError,
    _prefixTokenKey,
    _StoredItem,
    _tagTokenKey,
    _tokenBytes,
)
from tlcache.store import CacheEntry, ICacheStore, MemoryCacheStore
from tlsuite._loglimit import LogLimiter
from tlsuite._memcache import MemcacheConnection

__all__ = [
    "DEFAULT_MAX_ENTRY_BYTES",
    "MAX_BOUNDARIES",
    "MAX_TAGS",
    "CacheStoreUnavailableError",
    "MemcacheCacheStore",
    "boundaryPrefixes",
]

_log = Logger()

_T = TypeVar("_T")

#: The largest item value written by default: memcached's default item
#: limit (1 MiB) less room for its item header and our key.
DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024 - 2048

#: The most invalidation boundaries a key may have (host, each directory
#: level, the path's variants). A deeper key is refused: every read of it
#: fetches one generation token per boundary.
MAX_BOUNDARIES = 32

#: The most tags an entry may carry (each is a generation token to fetch).
MAX_TAGS = 32

#: memcached reads an expiry over 30 days as an absolute Unix time.
_MAX_RELATIVE_EXPIRY = 30 * 24 * 3600

#: Gets whose generation tokens a following set may reuse, and for how long;
#: and the share of the near store's budget they may take up at most.
_STASH_SIZE = 4096
_STASH_MAX_AGE = 60.0
_STASH_SHARE = 8

_COUNTERS = (
    "hits",
    "staleHits",
    "misses",
    "expired",
    "sets",
    "refusals",
    "invalidations",
    "nearHits",
    "remoteHits",
    "remoteMisses",
    "remoteErrors",
    "decodeErrors",
    "otherVersions",
    "invalidatedReads",
)

# A stashed read's value tuple, its size and its place in the stash.
_STASH_ITEM = sizeOf((0.0, (), 0)) + sizeOf(2**40) + ORDERED_ITEM

_BAD_KEY_BYTES = re.compile(rb"[\x00-\x20\x7f]")
_BOUNDARY = re.compile(rb"[|/]")


class CacheStoreUnavailableError(Exception):
    """
    memcached did not take an invalidation (or a delete): it is down, timed
    out or answered with an error, so other processes may still serve what
    was meant to go. Retry, or expect stale pages until they expire.
    """


class _NotConnectedError(Exception):
    """
    No connection to memcached right now.
    """


def boundaryPrefixes(key: bytes) -> Tuple[bytes, ...]:
    """
    The prefixes of C{key} that L{MemcacheCacheStore.invalidatePrefix} can
    reach: every prefix ending in C{b"|"} or C{b"/"} from the first C{b"|"}
    on. For C{b"host|/a/b/c|digest"}: C{b"host|"}, C{b"host|/"},
    C{b"host|/a/"}, C{b"host|/a/b/"} and C{b"host|/a/b/c|"}. A key without a
    C{b"|"} has none (only L{MemcacheCacheStore.delete} reaches it).
    """
    start = key.find(b"|")
    if start == -1:
        return ()
    return tuple(key[: m.end()] for m in _BOUNDARY.finditer(key, start))


def _isBoundary(prefix: bytes) -> bool:
    return prefix.endswith((b"|", b"/")) and b"|" in prefix


def _isUnavailable(error: BaseException) -> bool:
    """
    Whether C{error} is memcached or the connection failing, as opposed to
    a bug here.
    """
    if isinstance(error, RuntimeError):
        return str(error) == "not connected"
    return isinstance(
        error,
        (
            ClientError,
            ServerError,
            NoSuchCommand,
            TimeoutError,
            ConnectionClosed,
            ConnectError,
            _NotConnectedError,
        ),
    )


def _synchronously(d: Deferred[_T]) -> _T:
    """
    The result of a L{Deferred} that has already fired (the near store's).
    """
    results: List[Any] = []
    d.addBoth(results.append)
    if not results:
        raise RuntimeError("the near store must answer at once")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    result: _T = results[0]
    return result


@implementer(ICacheStore)
class MemcacheCacheStore(Service):
    """
    Rendered pages in memcached, shared by every process using the same
    server and namespace, behind a small in-process LRU (the I{near} store).

    B{Reads.} A key read or written in the last C{nearTTL} seconds is
    answered from the near store with no round trip. Otherwise one
    C{get} asks for the item and the generation tokens of the key's
    boundary prefixes (L{boundaryPrefixes}) together; an item with tags
    takes a second C{get} for the tags' tokens. An item whose stored tokens
    differ from the current ones was invalidated after it was written: a
    miss (counted as C{invalidatedReads}).

    B{Invalidation.} memcached cannot list keys, so
    L{invalidatePrefix} and L{invalidateTag} replace the prefix's or tag's
    token with a new random one: every item written under the old token
    stops matching, in every process, at once. Only boundary prefixes can
    be invalidated: a host (C{keyPrefix(host)}), a subtree ending in
    C{b"/"} (C{keyPrefix(host, b"/news/")}) or one path's variants
    (C{familyOfKey(key) + b"|"}). I{Another process's invalidation (or
    delete, or set) takes effect here within C{nearTTL}}: that long a near
    copy may still be served. This process's own invalidations take effect
    here at once. A missing token (never set, evicted, server restarted)
    matches no item, so losing one costs misses, never stale pages.

    As with any cache filled after rendering, a page rendered before an
    invalidation and stored after it would pass for current; the store
    narrows that window by writing an item with the tokens its own last
    miss on that key saw (when it is under a minute old), so a set that
    follows a get is also one round trip. Tag tokens are read at set time.

    B{Failures.} memcached down, slow or answering errors: L{get} is a
    miss, L{set} answers C{False}, both counted (C{remoteErrors}) and logged
    at most once per C{logInterval}. L{invalidatePrefix}, L{invalidateTag}
    and L{delete} fail with L{CacheStoreUnavailableError}: silently losing
    an invalidation would serve stale pages. An item that cannot be decoded
    (corrupted, hostile, another program's) is a logged, counted miss.

    As an L{IService<twisted.application.service.IService>} it starts and stops its
    L{MemcacheConnection} (unless
    that was already running when it started); it schedules no timers of
    its own.

    @ivar nearTTL: seconds a near copy is served without asking memcached.
    @ivar namespace: put before every memcached key this store uses.
    @ivar maxEntryBytes: the largest item value written; bigger entries are
        refused.
    """

    def __init__(
        self,
        connection: Union[MemCacheProtocol, MemcacheConnection],
        clock: IReactorTime,
        *,
        near: Optional[MemoryCacheStore] = None,
        nearTTL: float = 1.0,
        namespace: bytes = b"tlcache:",
        maxEntryBytes: int = DEFAULT_MAX_ENTRY_BYTES,
        logInterval: float = 10.0,
    ) -> None:
        """
        @param connection: a L{MemcacheConnection} (which reconnects), or a
            connected L{MemCacheProtocol}.
        @param clock: the time entries and near copies are judged by.
        @param near: the in-process store in front (default: an 8 MiB
            L{MemoryCacheStore} on C{clock}); it must answer at once, and
            be on C{clock} too. What this store keeps in the process is
            bounded by its budget: the near copies, and up to an eighth of
            it more for what recent misses read.
        @param nearTTL: at most how many seconds a near copy is served; C{0}
            turns the near store off.
        @param namespace: so several sites can share one memcached.
        @param maxEntryBytes: the largest item value (memcached's limit is
            its C{-I} option, 1 MiB by default, including key and header).
        @param logInterval: seconds between log lines about failures.
        """
        if not isinstance(namespace, bytes):
            raise TypeError(f"namespace must be bytes, not {type(namespace)!r}")
        if _BAD_KEY_BYTES.search(namespace):
            raise ValueError(
                f"namespace {namespace!r} has a space or control byte, which"
                " memcached keys cannot hold"
            )
        if len(namespace) + _KEY_SUFFIX_LENGTH > MemCacheProtocol.MAX_KEY_LENGTH:
            raise ValueError(f"namespace {namespace!r} is too long for memcached")
        if not nearTTL >= 0:
            raise ValueError(f"nearTTL must not be negative: {nearTTL!r}")
        if maxEntryBytes < 1:
            raise ValueError(f"maxEntryBytes must be positive: {maxEntryBytes!r}")
        self._connection = connection
        self._clock = clock
        self.nearTTL = float(nearTTL)
        self.namespace = namespace
        self.maxEntryBytes = maxEntryBytes
        self._near = (
            near
            if near is not None
            else MemoryCacheStore(clock, maxBytes=8 * 1024 * 1024)
        )
        # Per key: when a get read generation tokens, the tokens, and what
        # the three take in memory; within _stashMaxBytes.
        self._stash: OrderedDict[
            bytes, Tuple[float, Tuple[Optional[int], ...], int]
        ] = OrderedDict()
        self._stashBytes = 0
        self._stashMaxBytes = self._near.maxBytes // _STASH_SHARE
        # Bumped by each local invalidation: a read or write in flight
        # across one must not leave a near copy behind.
        self._epoch = 0
        self._ownsConnection = False
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._failureLog = LogLimiter(clock, logInterval)
        self._decodeLog = LogLimiter(clock, logInterval)
        self._refusalLog = LogLimiter(clock, logInterval)

    @classmethod
    def fromEndpoint(
        cls,
        reactor: IReactorTime,
        description: str,
        *,
        replyTimeout: float = 2.0,
        clock: Optional[IReactorTime] = None,
        **options: Any,
    ) -> MemcacheCacheStore:
        """
        A store on the memcached at an endpoint string
        (C{"unix:path=/run/memcached/memcached.sock:timeout=2"},
        C{"tcp:host=127.0.0.1:port=11211:timeout=2"}). It connects when
        started as a service (C{setServiceParent}, or L{startService}).

        @param reactor: connects the endpoint (and is the default C{clock}).
        @param replyTimeout: seconds to wait for an answer before dropping
            the connection (the call in flight is a miss).
        @param options: the constructor's keyword arguments.
        """
        connection = MemcacheConnection(
            clientFromString(reactor, description), reactor, replyTimeout
        )
        return cls(connection, clock if clock is not None else reactor, **options)

    # IService.

    def startService(self) -> None:
        """
        Start the connection, unless it was already running.
        """
        super().startService()
        connection = self._connection
        if isinstance(connection, MemcacheConnection) and not connection.running:
            self._ownsConnection = True
            connection.startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop the connection if L{startService} started it.

        @return: L{Deferred} firing when it is closed.
        """
        super().stopService()
        if self._ownsConnection and isinstance(self._connection, MemcacheConnection):
            self._ownsConnection = False
            return self._connection.stopService()
        return succeed(None)

    @property
    def maxBytes(self) -> int:
        """
        The most memory this store keeps in the process: its near store's
        budget, and an eighth of it more for what recent misses read.
        """
        return self._near.maxBytes + self._stashMaxBytes

    def isConnected(self) -> bool:
        """
        Whether the connection to memcached is up right now.
        """
        if isinstance(self._connection, MemcacheConnection):
            return self._connection.protocol is not None
        return not self._connection._disconnected

    # ICacheStore.

    def get(self, key: bytes) -> Deferred[Optional[CacheEntry]]:
        """
        See L{ICacheStore.get}: from the near store within C{nearTTL}, else
        from memcached (one round trip, two for a tagged item). Any failure
        is a miss.
        """
        now = self._clock.seconds()
        entry = self._nearGet(key, now)
        if entry is not None:
            self._counters["nearHits"] += 1
            return succeed(self._classify(entry, now))
        return Deferred.fromCoroutine(self._remoteGet(key, now))

    def set(self, key: bytes, entry: CacheEntry) -> Deferred[bool]:
        """
        See L{ICacheStore.set}. Refused (C{False}, and the older item
        deleted) when the encoded item is over C{maxEntryBytes}, the key has
        more than L{MAX_BOUNDARIES} boundary prefixes or the entry more than
        L{MAX_TAGS} tags. C{False} too when memcached fails. memcached drops
        the item at C{entry.expiresAt}.
        """
        now = self._clock.seconds()
        self._dropNear(key)
        stash = self._unstash(key)
        boundaries = boundaryPrefixes(key)
        tags = sorted(entry.tags)
        if len(boundaries) > MAX_BOUNDARIES:
            return self._refuse(key, f"more than {MAX_BOUNDARIES} boundary prefixes")
        if len(tags) > MAX_TAGS:
            return self._refuse(key, f"more than {MAX_TAGS} tags")
        try:
            head = _encodeHead(
                key, entry, [0] * len(boundaries), [(tag, 0) for tag in tags]
            )
        except ValueError as e:
            return self._refuse(key, str(e))
        size = len(head) + len(entry.body)
        if size > self.maxEntryBytes:
            return self._refuse(
                key, f"{size} bytes encoded, over maxEntryBytes={self.maxEntryBytes}"
            )
        return Deferred.fromCoroutine(
            self._remoteSet(key, entry, boundaries, tags, stash, now)
        )

    def delete(self, key: bytes) -> Deferred[bool]:
        """
        See L{ICacheStore.delete}: from memcached and the near store. Fails
        with L{CacheStoreUnavailableError} when memcached does.
        """
        self._epoch += 1
        hadNear = self._dropNear(key)
        self._unstash(key)
        d = Deferred.fromCoroutine(self._remoteDelete(key))
        d.addErrback(self._invalidationFailed, f"key {key!r}")

        def deleted(remote: bool) -> bool:
            if remote or hadNear:
                self._counters["invalidations"] += 1
                return True
            return False

        return d.addCallback(deleted)

    def invalidatePrefix(self, prefix: bytes) -> Deferred[int]:
        """
        See L{ICacheStore.invalidatePrefix}, for boundary prefixes only
        (see the class docstring). memcached cannot count what it drops, so
        the answer is how many near copies this process dropped.

        @raise ValueError: C{prefix} is not a boundary prefix.
        @return: fails with L{CacheStoreUnavailableError} when memcached
            did not take the invalidation.
        """
        if not isinstance(prefix, bytes):
            raise TypeError(f"prefix must be bytes, not {type(prefix)!r}")
        if not _isBoundary(prefix):
            raise ValueError(
                f"memcached can only invalidate a whole host"
                f" (keyPrefix(host) -> b'host|'), a subtree ending in '/'"
                f" (keyPrefix(host, b'/news/')) or one path's variants"
                f" (familyOfKey(key) + b'|'), not {prefix!r}"
            )
        self._epoch += 1
        dropped = _synchronously(self._near.invalidatePrefix(prefix))
        self._counters["invalidations"] += dropped
        return self._renew(self._prefixKey(prefix), f"prefix {prefix!r}", dropped)

    def invalidateTag(self, tag: str) -> Deferred[int]:
        """
        See L{ICacheStore.invalidateTag}; like L{invalidatePrefix}, the
        answer is how many near copies this process dropped.

        @return: fails with L{CacheStoreUnavailableError} when memcached
            did not take the invalidation.
        """
        if not isinstance(tag, str):
            raise TypeError(f"tag must be str, not {type(tag)!r}")
        self._epoch += 1
        dropped = _synchronously(self._near.invalidateTag(tag))
        self._counters["invalidations"] += dropped
        return self._renew(self._tagKey(tag), f"tag {tag!r}", dropped)

    def stats(self) -> Dict[str, int]:
        """
        See L{ICacheStore.stats}. C{hits}, C{staleHits} and C{misses}
        classify every get; C{sets} and C{refusals} count writes;
        C{invalidations} counts near copies dropped and items deleted by
        this process. C{bytes}, C{entries} and C{evictions} are the near
        store's (memcached's own evictions are in its C{stats}). Also:
        C{nearHits}; C{remoteHits} and C{remoteMisses} (gets that asked
        memcached); C{remoteErrors} (failed calls); C{decodeErrors}
        (unreadable items); C{otherVersions} (items in another format
        version); C{invalidatedReads} (items whose tokens were replaced);
        C{expired} (items read past their hard limit).
        """
        near = self._near.stats()
        result = dict(self._counters)
        for name in ("bytes", "entries", "evictions"):
            result[name] = near[name]
        return result

    # memcached keys (laid out in tlcache._memcacheitem).

    def _itemKey(self, key: bytes) -> bytes:
        return _itemMemcacheKey(self.namespace, key)

    def _prefixKey(self, prefix: bytes) -> bytes:
        return _prefixTokenKey(self.namespace, prefix)

    def _tagKey(self, tag: str) -> bytes:
        return _tagTokenKey(self.namespace, tag)

    # The near store.

    # A near copy's age is the near store's: when it stored the copy (a
    # time kept beside each copy there, so nothing here outlives a copy
    # the near store evicts).

    def _nearGet(self, key: bytes, now: float) -> Optional[CacheEntry]:
        stamp = self._near.storedAt(key)
        if stamp is None:
            return None
        if not 0 <= now - stamp < self.nearTTL:
            self._dropNear(key)
            return None
        return _synchronously(self._near.get(key))

    def _putNear(self, key: bytes, entry: CacheEntry, now: float) -> None:
        if self.nearTTL <= 0:
            return
        # Copies past nearTTL are never served again: free them (the least
        # recently used, up to the first one still young enough).
        self._near.dropStoredUntil(now - self.nearTTL)
        _synchronously(self._near.set(key, entry))

    def _dropNear(self, key: bytes) -> bool:
        return _synchronously(self._near.delete(key))

    # memcached calls.

    def _protocol(self) -> MemCacheProtocol:
        if isinstance(self._connection, MemcacheConnection):
            protocol = self._connection.protocol
            if protocol is None:
                raise _NotConnectedError("not connected")
            return protocol
        return self._connection

    async def _remoteGet(self, key: bytes, readAt: float) -> Optional[CacheEntry]:
        epoch = self._epoch
        boundaries = boundaryPrefixes(key)
        if len(boundaries) > MAX_BOUNDARIES:
            # Never stored (see set).
            self._counters["misses"] += 1
            return None
        itemKey = self._itemKey(key)
        prefixKeys = [self._prefixKey(prefix) for prefix in boundaries]
        try:
            values = await self._protocol().getMultiple([itemKey, *prefixKeys])
            current = tuple(_generation(values[k][1]) for k in prefixKeys)
            item = self._decode(key, values[itemKey][1], len(boundaries))
            valid = item is not None and self._current(item, current)
            if valid and item is not None and item.tagGenerations:
                tagKeys = [self._tagKey(tag) for tag, _ in item.tagGenerations]
                tagValues = await self._protocol().getMultiple(tagKeys)
                valid = all(
                    _generation(tagValues[tagKey][1]) == generation
                    for tagKey, (_, generation) in zip(tagKeys, item.tagGenerations)
                )
                if not valid:
                    self._counters["invalidatedReads"] += 1
        except Exception as e:
            self._remoteFailed("get", e)
            self._counters["misses"] += 1
            return None
        now = self._clock.seconds()
        if valid and item is not None and item.entry.isExpired(now):
            self._counters["expired"] += 1
            valid = False
        if not valid or item is None:
            self._counters["remoteMisses"] += 1
            self._counters["misses"] += 1
            self._remember(key, readAt, current)
            return None
        self._counters["remoteHits"] += 1
        entry = item.entry
        if not entry.isFresh(now):
            self._remember(key, readAt, current)
        stamp = self._near.storedAt(key)
        if epoch == self._epoch and (stamp is None or stamp < readAt):
            # (A newer near copy, written meanwhile, wins.)
            self._putNear(key, entry, now)
        return self._classify(entry, now)

    def _current(self, item: _StoredItem, current: Tuple[Optional[int], ...]) -> bool:
        if item.prefixGenerations == current:
            return True
        self._counters["invalidatedReads"] += 1
        return False

    def _decode(
        self, key: bytes, value: Optional[bytes], boundaries: int
    ) -> Optional[_StoredItem]:
        """
        The item in C{value}, or C{None} (counted and logged when there is
        a value but not a readable item for C{key}).
        """
        if value is None:
            return None
        try:
            item = _decodeItem(value)
        except _OtherVersionError:
            self._counters["otherVersions"] += 1
            return None
        except _ItemFormatError as e:
            reason = str(e)
        else:
            if item.key != key:
                reason = "it was written for another key"
            elif len(item.prefixGenerations) != boundaries:
                reason = "its generations do not fit the key"
            else:
                return item
        self._counters["decodeErrors"] += 1
        suppressed = self._decodeLog.allow()
        if suppressed is not None:
            _log.warn(
                "Unreadable memcached item for {key!r}, served as a miss:"
                " {reason} ({suppressed} more not logged)",
                key=key,
                reason=reason,
                suppressed=suppressed,
            )
        return None

    async def _remoteSet(
        self,
        key: bytes,
        entry: CacheEntry,
        boundaries: Tuple[bytes, ...],
        tags: List[str],
        stash: Optional[Tuple[float, Tuple[Optional[int], ...]]],
        now: float,
    ) -> bool:
        epoch = self._epoch
        prefixKeys = [self._prefixKey(prefix) for prefix in boundaries]
        tagKeys = [self._tagKey(tag) for tag in tags]
        read: Dict[bytes, Optional[int]] = {}
        if stash is not None and 0 <= now - stash[0] < _STASH_MAX_AGE:
            read.update(zip(prefixKeys, stash[1]))
        try:
            wanted = [k for k in prefixKeys + tagKeys if k not in read]
            if wanted:
                values = await self._protocol().getMultiple(wanted)
                read.update((k, _generation(values[k][1])) for k in wanted)
            generations: Dict[bytes, int] = {}
            for k, generation in read.items():
                if generation is None:
                    generation = await self._createGeneration(k)
                generations[k] = generation
            value = _encodeItem(
                key,
                entry,
                [generations[k] for k in prefixKeys],
                [(tag, generations[k]) for tag, k in zip(tags, tagKeys)],
            )
            await self._protocol().set(
                self._itemKey(key), value, 0, self._expiry(entry, now)
            )
        except Exception as e:
            self._remoteFailed("set", e)
            return False
        self._counters["sets"] += 1
        if epoch == self._epoch:
            self._putNear(key, entry, self._clock.seconds())
        return True

    async def _createGeneration(self, generationKey: bytes) -> int:
        """
        Give a missing or unreadable generation token a value, unless
        another process does first; the token's value.
        """
        generation = _newGeneration()
        protocol = self._protocol()
        if await protocol.add(generationKey, _tokenBytes(generation)):
            return generation
        _, value = await protocol.get(generationKey)
        existing = _generation(value)
        if existing is not None:
            return existing
        await protocol.set(generationKey, _tokenBytes(generation))
        return generation

    def _refuse(self, key: bytes, reason: str) -> Deferred[bool]:
        """
        Refuse an entry and delete the older item under C{key}.
        """
        self._counters["refusals"] += 1
        suppressed = self._refusalLog.allow()
        if suppressed is not None:
            _log.info(
                "Not caching {key!r} in memcached: {reason}"
                " ({suppressed} more refusals not logged)",
                key=key,
                reason=reason,
                suppressed=suppressed,
            )

        async def refused() -> bool:
            try:
                await self._remoteDelete(key)
            except Exception as e:
                self._remoteFailed("delete", e)
            return False

        return Deferred.fromCoroutine(refused())

    async def _remoteDelete(self, key: bytes) -> bool:
        deleted: bool = await self._protocol().delete(self._itemKey(key))
        return deleted

    def _renew(self, generationKey: bytes, what: str, dropped: int) -> Deferred[int]:
        """
        Give a prefix's or tag's generation token a new random value: every
        item written under the old one stops matching.
        """

        async def renew() -> int:
            await self._protocol().set(
                generationKey, _tokenBytes(_newGeneration()), 0, 0
            )
            return dropped

        d = Deferred.fromCoroutine(renew())
        d.addErrback(self._invalidationFailed, what)
        return d

    def _invalidationFailed(self, failure: Failure, what: str) -> Failure:
        self._counters["remoteErrors"] += 1
        if failure.value is None or not _isUnavailable(failure.value):
            return failure
        _log.warn(
            "memcached did not invalidate {what}: {error}",
            what=what,
            error=failure.getErrorMessage(),
        )
        raise CacheStoreUnavailableError(
            f"memcached did not invalidate {what}: {failure.getErrorMessage()}"
        ) from failure.value

    def _remoteFailed(self, operation: str, error: Exception) -> None:
        self._counters["remoteErrors"] += 1
        suppressed = self._failureLog.allow()
        if suppressed is None:
            return
        if _isUnavailable(error):
            _log.warn(
                "memcached {operation} failed, the cache is skipped: {error}"
                " ({suppressed} more failures not logged)",
                operation=operation,
                error=str(error) or type(error).__name__,
                suppressed=suppressed,
            )
        else:
            _log.failure(
                "Unexpected error in memcached {operation}, the cache is skipped"
                " ({suppressed} more failures not logged)",
                Failure(error),
                operation=operation,
                suppressed=suppressed,
            )

    # Bookkeeping.

    def _remember(
        self, key: bytes, readAt: float, generations: Tuple[Optional[int], ...]
    ) -> None:
        self._unstash(key)
        cost = footprint(key, generations) + FLOAT + _STASH_ITEM
        if cost > self._stashMaxBytes:
            return
        self._stash[key] = (readAt, generations, cost)
        self._stashBytes += cost
        while len(self._stash) > _STASH_SIZE or self._stashBytes > self._stashMaxBytes:
            _, (_, _, dropped) = self._stash.popitem(last=False)
            self._stashBytes -= dropped

    def _unstash(self, key: bytes) -> Optional[Tuple[float, Tuple[Optional[int], ...]]]:
        stashed = self._stash.pop(key, None)
        if stashed is None:
            return None
        readAt, generations, cost = stashed
        self._stashBytes -= cost
        return readAt, generations

    def _classify(self, entry: CacheEntry, now: float) -> CacheEntry:
        if entry.isFresh(now):
            self._counters["hits"] += 1
        elif entry.isServableStale(now):
            self._counters["staleHits"] += 1
        else:
            self._counters["misses"] += 1
        return entry

    def _expiry(self, entry: CacheEntry, now: float) -> int:
        """
        The item's expiry in memcached: the seconds left until the entry's
        hard limit, rounded up, at least 1, at most 30 days.
        """
        left = entry.expiresAt - now
        if math.isnan(left) or left <= 0:
            return 1
        if left >= _MAX_RELATIVE_EXPIRY:
            return _MAX_RELATIVE_EXPIRY
        return max(1, math.ceil(left))
