# -*- test-case-name: tests.unit.test_memcachestore -*-
"""
Sessions in memcached, through L{twisted.protocols.memcache}: one item per
session, compare-and-swap with C{gets}/C{cas}, the item's expiry to reclaim
space.

memcached is a cache: under memory pressure it evicts items, and a restart
forgets everything, so sessions may vanish before they expire (their users
get a new, empty session). Choose it when that is acceptable; the protocol
has no authentication, so keep the server on a private socket or network.
"""

from __future__ import annotations

import math
import re
import struct
from collections import OrderedDict
from typing import Any, Callable, Optional

import attrs
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import (
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.protocols.memcache import (
    ClientError,
    MemCacheProtocol,
    NoSuchCommand,
    ServerError,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from tlsession.interfaces import (
    ConflictError,
    ISessionStore,
    SessionGoneError,
    SessionRecord,
    SessionStoreError,
    StoreUnavailableError,
)
from tlsession.stores import (
    SESSION_ID_LENGTH,
    isWellFormedSessionID,
    newSessionID,
)
from tlsession.stores._checks import (
    InvalidArgumentError,
    StoreService,
    checkCreate,
    checkLimits,
    checkPositive,
    checkSave,
    checkSessionID,
)
from tlsuite._endpoints import EndpointStringError, checkClientEndpoint
from tlsuite._memcache import MemcacheConnection

# MemcacheConnection lives in tlsuite._memcache (tlcache uses it too); it is
# re-exported here for the code that imports it from this module.
__all__ = ["MemcacheConnection", "MemcacheSessionStore"]

#: The item's value: a marker, then version, created, lastSeen and
#: idleTimeout, then the session's data. The marker keeps values that other
#: programs stored under the prefix from passing for sessions.
_HEADER = struct.Struct("!4sQddd")
_LIVE = b"tls1"
#: What a rotated-away session's item holds for the instant before it
#: expires: reads as no session at all.
_TOMBSTONE = b"tls0"

#: memcached reads an expiry over 30 days as an absolute Unix time.
_MAX_RELATIVE_EXPIRY = 30 * 24 * 3600

#: Compare-and-swap rounds before giving up (each lost round means another
#: request wrote the session in between).
_ATTEMPTS = 5


@attrs.frozen
class _Header:
    """
    Everything stored about a session but its data.
    """

    version: int
    created: float
    lastSeen: float
    idleTimeout: float


@attrs.frozen
class _Seen:
    """
    What the store remembers of a session it loaded: its header and the
    item's cas unique (not its data, to keep the memory small).
    """

    header: _Header
    cas: bytes


@attrs.frozen
class _Read:
    """
    A session as read with C{gets}: its header, data and the item's cas
    unique (what the next C{cas} must name to succeed).
    """

    header: _Header
    data: bytes
    cas: bytes


def _pack(header: _Header, data: bytes) -> bytes:
    return (
        _HEADER.pack(
            _LIVE, header.version, header.created, header.lastSeen, header.idleTimeout
        )
        + data
    )


def _unpack(value: Optional[bytes]) -> Optional[tuple[_Header, bytes]]:
    """
    The header and data of an item's value, or C{None} for a missing item, a
    tombstone, or anything this store did not write.
    """
    if value is None or len(value) < _HEADER.size or not value.startswith(_LIVE):
        return None
    _, version, created, lastSeen, idle = _HEADER.unpack_from(value)
    return _Header(version, created, lastSeen, idle), value[_HEADER.size :]


def _unavailable(failure: Failure) -> Failure:
    """
    Turn what the protocol and the transport report into
    L{StoreUnavailableError}; let the store's own errors through.
    """
    if failure.check(
        ClientError,
        ServerError,
        NoSuchCommand,
        TimeoutError,
        ConnectionClosed,
        ConnectError,
    ) or (failure.check(RuntimeError) and str(failure.value) == "not connected"):
        raise StoreUnavailableError(
            f"memcached: {failure.getErrorMessage()}"
        ) from failure.value
    return failure


@implementer(ISessionStore)
class MemcacheSessionStore(StoreService):
    """
    Sessions in memcached, shared by every process that uses the same server
    and prefix.

    The store is an L{IService<twisted.application.service.IService>}: building it
    connects nothing;
    L{startService} connects (and reconnects after a loss, see
    L{tlsuite._memcache}), L{stopService} closes the connection. Calls made
    before the start, after the stop, or while there is no connection fail
    at once with L{StoreUnavailableError}.

    A load is one C{gets}. A save that follows a load of the same session by
    this store is one C{cas} (the store remembers the cas uniques of its last
    C{casCacheSize} loads); otherwise it is C{gets} then C{cas}, and so is a
    touch. Rotation is C{gets}, C{add} of the new identifier, then a C{cas}
    that expires the old item: a save on the old identifier in between makes
    the C{cas} fail and the rotation start over, so no update is lost. The
    two keys are not changed atomically, though: for that moment both exist
    (only the caller knows the new one), and a crash in between leaves the
    old session working and an orphan item that expires on its own.

    Sessions may vanish before they expire (eviction under memory pressure,
    a restart); memcached's default item limit (1 MiB) also caps
    C{maxValueBytes}. Item expiry is capped at 30 days, memcached's longest
    relative expiry.

    @ivar idleTimeout: default seconds of inactivity before a session expires.
    @ivar absoluteTimeout: seconds after creation when a session ends.
    @ivar maxValueBytes: the largest session data accepted.
    @ivar reclaimMargin: seconds memcached keeps an expired session before
        the item expires (covers clock differences between app processes).
    """

    storeDescription = "the memcached session store"

    idleTimeout: float
    absoluteTimeout: float
    maxValueBytes: int

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        *,
        reactor: Optional[IReactorTime] = None,
        replyTimeout: float = 2.0,
        retryPolicy: Optional[Callable[[int], float]] = None,
        idleTimeout: float = 1800.0,
        absoluteTimeout: float = 86400.0,
        maxValueBytes: int = 65536,
        prefix: str = "tlsession:",
        reclaimMargin: float = 60.0,
        casCacheSize: int = 1024,
    ) -> None:
        """
        @param endpoint: where memcached listens.
        @param clock: the source of every timestamp the store keeps.
        @param reactor: schedules reconnections and reply timeouts
            (C{clock} if C{None}).
        @param replyTimeout: seconds to wait for an answer before dropping
            the connection and failing its calls.
        @param retryPolicy: seconds to wait before the n-th reconnection
            attempt (see L{tlsuite._memcache.MemcacheConnection}).
        @param prefix: put before each session identifier to make its key
            (with the identifier, at most 250 bytes).
        @param casCacheSize: how many loads' cas uniques to remember, so that
            a save right after a load needs one round trip.
        @raise InvalidArgumentError: for a prefix memcached keys cannot
            start with, or limits that make no sense.
        """
        self._prefix = prefix.encode("utf-8")
        if len(
            self._prefix
        ) + SESSION_ID_LENGTH > MemCacheProtocol.MAX_KEY_LENGTH or re.search(
            rb"[\x00-\x20\x7f]", self._prefix
        ):
            raise InvalidArgumentError(
                f"prefix {prefix!r} cannot start a memcached key"
            )
        self.idleTimeout, self.absoluteTimeout, self.maxValueBytes = checkLimits(
            idleTimeout, absoluteTimeout, maxValueBytes
        )
        # A margin of 0 is fine: items expire with their sessions.
        self.reclaimMargin = (
            0.0 if reclaimMargin == 0 else checkPositive("reclaimMargin", reclaimMargin)
        )
        checkPositive("replyTimeout", replyTimeout)
        if (
            isinstance(casCacheSize, bool)
            or not isinstance(casCacheSize, int)
            or casCacheSize < 0
        ):
            raise InvalidArgumentError(
                f"casCacheSize must be a non-negative integer, not {casCacheSize!r}"
            )
        self._connection = MemcacheConnection(
            endpoint,
            clock if reactor is None else reactor,
            replyTimeout,
            retryPolicy,
        )
        self._clock = clock
        self._casCacheSize = casCacheSize
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    @classmethod
    def fromEndpoint(
        cls,
        reactor: IReactorTime,
        description: str,
        *,
        clock: Optional[IReactorTime] = None,
        **storeOptions: Any,
    ) -> MemcacheSessionStore:
        """
        A store on the memcached at an endpoint string
        (C{"unix:path=/run/memcached/memcached.sock:timeout=2"},
        C{"tcp:host=127.0.0.1:port=11211:timeout=2"}). Like the
        constructor, it connects nothing: start the store (as a child of
        the app's service, or with L{startService}).

        @param reactor: connects the endpoint and schedules reconnections
            and reply timeouts (and is the default C{clock}).
        @param storeOptions: the constructor's keyword arguments
            (C{replyTimeout}, C{idleTimeout}, C{absoluteTimeout},
            C{maxValueBytes}, C{prefix}, C{reclaimMargin}, C{casCacheSize}).
        @raise InvalidArgumentError: for an endpoint string that does not
            parse, or bad options.
        """
        try:
            checkClientEndpoint(description)
        except EndpointStringError as e:
            raise InvalidArgumentError(str(e)) from None
        return cls(
            clientFromString(reactor, description),
            reactor if clock is None else clock,
            reactor=reactor,
            **storeOptions,
        )

    # The service.

    def startService(self) -> None:
        """
        Start connecting to memcached.
        """
        self._connection.startService()
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Refuse new calls, close the connection and stop reconnecting.

        @return: L{Deferred} firing when the connection is closed.
        """
        super().stopService()
        return self._connection.stopService()

    def whenConnected(self) -> Deferred[MemcacheSessionStore]:
        """
        @return: L{Deferred} firing with this store once it is connected
            (at once if it is); start the store first.
        """
        return self._connection.whenConnected().addCallback(lambda _: self)

    def isConnected(self) -> bool:
        """
        Whether the connection to memcached is up right now (calls made while
        it is not fail at once).
        """
        return self._connection.protocol is not None

    # The ISessionStore methods.

    def create(
        self, data: bytes = b"", idleTimeout: Optional[float] = None
    ) -> Deferred[SessionRecord]:
        """
        Store a new session under a fresh random identifier with C{add} (see
        L{ISessionStore.create}).
        """
        try:
            self.checkRunning()
            data, idle = checkCreate(data, idleTimeout, self.maxValueBytes)
        except SessionStoreError:
            return fail()
        return self._guard(
            self._create(data, self.idleTimeout if idle is None else idle)
        )

    async def _create(self, data: bytes, idle: float) -> SessionRecord:
        now = self._clock.seconds()
        header = _Header(1, now, now, idle)
        for _ in range(_ATTEMPTS):
            sessionID = newSessionID()
            protocol = self._protocol()
            if await protocol.add(
                self._key(sessionID), _pack(header, data), 0, self._expiry(header, now)
            ):
                return SessionRecord(sessionID, 1, data, now, now, idle)
        raise SessionStoreError(f"{_ATTEMPTS} fresh session identifiers were all taken")

    def load(self, sessionID: str) -> Deferred[Optional[SessionRecord]]:
        """
        Read a live session, or C{None} (see L{ISessionStore.load}). One
        C{gets}; reading does not count as activity.
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        if not isWellFormedSessionID(sessionID):
            return succeed(None)
        return self._guard(self._load(sessionID))

    async def _load(self, sessionID: str) -> Optional[SessionRecord]:
        read = await self._gets(sessionID)
        if read is None or self._expired(read.header, self._clock.seconds()):
            return None
        self._remember(sessionID, _Seen(read.header, read.cas))
        h = read.header
        return SessionRecord(
            sessionID, h.version, read.data, h.created, h.lastSeen, h.idleTimeout
        )

    def save(
        self,
        sessionID: str,
        expectedVersion: int,
        data: bytes,
        idleTimeout: Optional[float] = None,
    ) -> Deferred[int]:
        """
        Compare-and-swap the session's data (see L{ISessionStore.save}).
        """
        try:
            self.checkRunning()
            version, data, idle = checkSave(
                sessionID, expectedVersion, data, idleTimeout, self.maxValueBytes
            )
        except SessionStoreError:
            return fail()
        return self._guard(self._save(sessionID, version, data, idle))

    async def _save(
        self,
        sessionID: str,
        expectedVersion: int,
        data: bytes,
        idle: Optional[float],
    ) -> int:
        for _ in range(_ATTEMPTS):
            now = self._clock.seconds()
            seen = await self._seenForSave(sessionID, now, expectedVersion)
            header = attrs.evolve(
                seen.header,
                version=expectedVersion + 1,
                lastSeen=now,
                idleTimeout=seen.header.idleTimeout if idle is None else idle,
            )
            if await self._cas(sessionID, header, data, seen.cas, now):
                return header.version
        raise ConflictError(sessionID, expectedVersion)

    def touch(self, sessionID: str) -> Deferred[None]:
        """
        Mark the session seen (see L{ISessionStore.touch}): a C{cas} that
        keeps its data and version.
        """
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()
        return self._guard(self._touch(sessionID))

    async def _touch(self, sessionID: str) -> None:
        for _ in range(_ATTEMPTS):
            now = self._clock.seconds()
            read = await self._current(sessionID, now)
            header = attrs.evolve(read.header, lastSeen=now)
            if await self._cas(sessionID, header, read.data, read.cas, now):
                return
        # Every round lost to a write from another request, and each of
        # those marked the session seen as well.

    def rotate(self, sessionID: str) -> Deferred[SessionRecord]:
        """
        Move the session to a new identifier (see L{ISessionStore.rotate}).
        It keeps its data, version and creation time (the absolute timeout
        still counts from the first login) and is marked seen.
        """
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()
        return self._guard(self._rotate(sessionID))

    async def _rotate(self, sessionID: str) -> SessionRecord:
        self._seen.pop(sessionID, None)
        version = 0
        for _ in range(_ATTEMPTS):
            now = self._clock.seconds()
            read = await self._gets(sessionID)
            if read is None or self._expired(read.header, now):
                raise SessionGoneError(sessionID)
            version = read.header.version
            header = attrs.evolve(read.header, lastSeen=now)
            newID = newSessionID()
            protocol = self._protocol()
            newKey = self._key(newID)
            if not await protocol.add(
                newKey, _pack(header, read.data), 0, self._expiry(header, now)
            ):
                continue
            # A negative expiry makes this an atomic compare-and-delete.
            if await self._protocol().checkAndSet(
                self._key(sessionID), _TOMBSTONE, read.cas, 0, -1
            ):
                h = header
                return SessionRecord(
                    newID, h.version, read.data, h.created, h.lastSeen, h.idleTimeout
                )
            await self._protocol().delete(newKey)
        # Other requests kept saving the session while it was being moved.
        raise ConflictError(sessionID, version)

    def delete(self, sessionID: str) -> Deferred[None]:
        """
        Remove the session; a missing one is fine (see
        L{ISessionStore.delete}).
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        if not isWellFormedSessionID(sessionID):
            return succeed(None)
        self._seen.pop(sessionID, None)
        return self._guard(self._delete(sessionID))

    async def _delete(self, sessionID: str) -> None:
        await self._protocol().delete(self._key(sessionID))

    # Plumbing.

    def _guard(self, coroutine: Any) -> Deferred[Any]:
        d = Deferred.fromCoroutine(coroutine)
        d.addErrback(_unavailable)
        return d

    def _protocol(self) -> MemCacheProtocol:
        protocol = self._connection.protocol
        if protocol is None:
            raise StoreUnavailableError("memcached: not connected")
        return protocol

    def _key(self, sessionID: str) -> bytes:
        return self._prefix + sessionID.encode("ascii")

    def _expired(self, header: _Header, now: float) -> bool:
        return (
            now - header.lastSeen > header.idleTimeout
            or now - header.created > self.absoluteTimeout
        )

    def _expiry(self, header: _Header, now: float) -> int:
        """
        The item's expiry: when the session would expire if left alone, plus
        the margin, in whole seconds.
        """
        left = min(header.idleTimeout, self.absoluteTimeout - (now - header.created))
        seconds = math.ceil(left + self.reclaimMargin)
        return max(1, min(seconds, _MAX_RELATIVE_EXPIRY))

    def _remember(self, sessionID: str, seen: _Seen) -> None:
        self._seen[sessionID] = seen
        self._seen.move_to_end(sessionID)
        while len(self._seen) > self._casCacheSize:
            self._seen.popitem(last=False)

    async def _gets(self, sessionID: str) -> Optional[_Read]:
        _, cas, value = await self._protocol().get(
            self._key(sessionID), withIdentifier=True
        )
        unpacked = _unpack(value)
        if unpacked is None:
            return None
        return _Read(unpacked[0], unpacked[1], cas)

    async def _current(
        self, sessionID: str, now: float, expectedVersion: Optional[int] = None
    ) -> _Read:
        """
        The live session, read with C{gets}.

        @raise SessionGoneError: it is missing or expired.
        @raise ConflictError: its version is not C{expectedVersion}.
        """
        self._seen.pop(sessionID, None)
        read = await self._gets(sessionID)
        if read is None or self._expired(read.header, now):
            raise SessionGoneError(sessionID)
        if expectedVersion is not None and read.header.version != expectedVersion:
            raise ConflictError(sessionID, expectedVersion, read.header.version)
        return read

    async def _seenForSave(
        self, sessionID: str, now: float, expectedVersion: int
    ) -> _Seen:
        """
        What a save swaps against: the session as this store last loaded it
        when that still looks right (the C{cas} tells whether it changed
        since), else a fresh read. Only a fresh read can declare the session
        gone or in conflict: another process may have touched or saved it.
        """
        seen = self._seen.pop(sessionID, None)
        if (
            seen is not None
            and seen.header.version == expectedVersion
            and not self._expired(seen.header, now)
        ):
            return seen
        read = await self._current(sessionID, now, expectedVersion)
        return _Seen(read.header, read.cas)

    async def _cas(
        self, sessionID: str, header: _Header, data: bytes, cas: bytes, now: float
    ) -> bool:
        stored: bool = await self._protocol().checkAndSet(
            self._key(sessionID), _pack(header, data), cas, 0, self._expiry(header, now)
        )
        return stored
