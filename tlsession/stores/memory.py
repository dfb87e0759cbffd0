# -*- test-case-name: tests.unit.test_memorystore -*-
"""
The in-memory session store: the default for one process, and the heart of
the session daemon. Bounded in sessions and bytes by a segmented LRU (new
sessions are evicted before sessions used again since their creation),
expired on every read, and swept incrementally with bounded work per tick.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Callable, Dict, List, Optional

from attrs import define
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from tlsession.interfaces import (
    ConflictError,
    ISessionStore,
    SessionGoneError,
    SessionRecord,
    SessionStoreError,
)
from tlsession.stores import isWellFormedSessionID, newSessionID
from tlsession.stores._checks import (
    InvalidArgumentError,
    StoreService,
    checkCreate,
    checkPositive,
    checkSave,
    checkSessionID,
)

__all__ = ["MemorySessionStore", "SessionObserver"]

#: Called as C{observer(sessionID, version)} after a session changed:
#: C{version} is its new version, or C{None} when it is gone.
SessionObserver = Callable[[str, Optional[int]], None]

# Expiry times are kept in buckets this many seconds wide, at most this many
# buckets over the absolute timeout: the sweep's index stays small however
# many sessions there are, at the price of reclaiming memory a bucket late
# (reads enforce expiry to the second regardless).
_MAX_BUCKETS = 4096

# The share of the limits that returning sessions (used again after their
# creation) may hold, as in SLRU: the rest keeps room for new sessions to
# come back in.
_PROTECTED_SHARE = 0.8

# Every create reclaims up to this many expired sessions, so a store whose
# sweep was never started still gives back the memory of the sessions
# that expired.
_CREATE_SWEEP = 16

_COUNTERS = (
    "creates",
    "loads",
    "saves",
    "conflicts",
    "deletes",
    "rotations",
    "touches",
    "evictions",
    "evictedNew",
    "evictedReturning",
    "promotions",
    "demotions",
    "expired",
)


@define
class _Entry:
    """
    One stored session and where the sweep files it.
    """

    sessionID: str
    version: int
    data: bytes
    created: float
    lastSeen: float
    idleTimeout: float
    bucket: Optional[int] = None
    #: In the protected segment (a returning session) rather than probation.
    protected: bool = False
    #: Used again since its creation, at any time (even if demoted since).
    returning: bool = False

    def expiresAt(self, absoluteTimeout: float) -> float:
        return min(self.lastSeen + self.idleTimeout, self.created + absoluteTimeout)

    def record(self) -> SessionRecord:
        return SessionRecord(
            sessionID=self.sessionID,
            version=self.version,
            data=self.data,
            created=self.created,
            lastSeen=self.lastSeen,
            idleTimeout=self.idleTimeout,
        )


@implementer(ISessionStore)
class MemorySessionStore(StoreService):
    """
    Sessions in a dictionary of this process, evicted by a segmented LRU.

    A new session starts in the I{probation} segment. A later load, save,
    touch or rotation makes it a I{returning} session and moves it to the
    I{protected} segment. When a limit is reached, the least recently used
    session of probation is evicted; only when probation is empty is the
    least recently used protected session. Protected sessions may hold at
    most C{protectedShare} of each limit: past it, the least recently used
    go back to probation (as its most recently used). So a flood of new
    sessions evicts new sessions, and a new session always has the rest of
    the room to be used again in.

    Every method returns an already-fired L{Deferred}. The store is an
    L{twisted.application.service.IService}: it takes calls while it runs
    (calls before L{startService} or after L{stopService} fail with
    L{StoreUnavailableError}), and sweeps expired sessions meanwhile.

    @ivar idleTimeout: default seconds of inactivity before a session ends.
    @ivar absoluteTimeout: seconds after creation when any session ends.
    @ivar maxValueBytes: the largest session data accepted.
    @ivar maxSessions: sessions kept before one is evicted.
    @ivar maxBytes: total bytes of session data kept before sessions are
        evicted.
    @ivar protectedShare: the share of C{maxSessions} and C{maxBytes} that
        returning sessions may hold.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        idleTimeout: float = 1800.0,
        absoluteTimeout: float = 86400.0,
        maxValueBytes: int = 65536,
        maxSessions: int = 100_000,
        maxBytes: int = 256 * 2**20,
        sweepInterval: float = 1.0,
        sweepBatch: int = 1000,
        protectedShare: float = _PROTECTED_SHARE,
    ) -> None:
        """
        @param clock: the time source for every timestamp and the sweep.
        @param sweepInterval: seconds between two sweep ticks.
        @param sweepBatch: the most expired sessions one tick removes.
        @raise InvalidArgumentError: for a limit that is not positive, a
            C{maxValueBytes} larger than C{maxBytes}, or a
            C{protectedShare} not strictly between 0 and 1.
        """
        for name, value in [
            ("idleTimeout", idleTimeout),
            ("absoluteTimeout", absoluteTimeout),
            ("maxValueBytes", maxValueBytes),
            ("maxSessions", maxSessions),
            ("maxBytes", maxBytes),
            ("sweepInterval", sweepInterval),
            ("sweepBatch", sweepBatch),
        ]:
            checkPositive(name, value)
        if maxValueBytes > maxBytes:
            raise InvalidArgumentError(
                f"maxValueBytes ({maxValueBytes}) cannot exceed maxBytes ({maxBytes})"
            )
        if not 0 < checkPositive("protectedShare", protectedShare) < 1:
            raise InvalidArgumentError(
                f"protectedShare must be between 0 and 1, not {protectedShare!r}"
            )
        self.clock = clock
        self.idleTimeout = float(idleTimeout)
        self.absoluteTimeout = float(absoluteTimeout)
        self.maxValueBytes = maxValueBytes
        self.maxSessions = maxSessions
        self.maxBytes = maxBytes
        self.sweepInterval = sweepInterval
        self.sweepBatch = sweepBatch
        self.protectedShare = protectedShare
        self._protectedMaxSessions = int(maxSessions * protectedShare)
        self._protectedMaxBytes = int(maxBytes * protectedShare)
        # Each session is in exactly one segment, least recently used first.
        self._probation: OrderedDict[str, _Entry] = OrderedDict()
        self._protected: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._protectedBytes = 0
        self._bucketWidth = max(1.0, self.absoluteTimeout / _MAX_BUCKETS)
        self._buckets: Dict[int, Dict[str, None]] = {}
        self._bucketOrder: List[int] = []
        self._observers: List[SessionObserver] = []
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._sweeper: Optional[LoopingCall] = None

    # ISessionStore

    def create(
        self, data: bytes = b"", idleTimeout: Optional[float] = None
    ) -> Deferred[SessionRecord]:
        """
        Store a new session under a fresh identifier.
        """
        try:
            self.checkRunning()
            data, ownIdle = checkCreate(data, idleTimeout, self.maxValueBytes)
        except SessionStoreError:
            return fail()
        idle = self.idleTimeout if ownIdle is None else ownIdle
        self._sweepDue(_CREATE_SWEEP)
        sessionID = newSessionID()
        while self._find(sessionID) is not None:  # pragma: no cover - 2**-256
            sessionID = newSessionID()
        now = self.clock.seconds()
        entry = _Entry(sessionID, 1, data, now, now, idle)
        self._probation[sessionID] = entry
        self._bytes += len(data)
        self._file(entry)
        self._counters["creates"] += 1
        self._makeRoom(entry)
        return succeed(entry.record())

    def load(self, sessionID: str) -> Deferred[Optional[SessionRecord]]:
        """
        Read a live session, or C{None}.
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        self._counters["loads"] += 1
        entry = self._live(sessionID)
        if entry is None:
            return succeed(None)
        self._used(entry)
        return succeed(entry.record())

    def save(
        self,
        sessionID: str,
        expectedVersion: int,
        data: bytes,
        idleTimeout: Optional[float] = None,
    ) -> Deferred[int]:
        """
        Replace a session's data if its version is still C{expectedVersion}.
        """
        try:
            self.checkRunning()
            expectedVersion, data, ownIdle = checkSave(
                sessionID, expectedVersion, data, idleTimeout, self.maxValueBytes
            )
        except SessionStoreError:
            return fail()
        entry = self._live(sessionID)
        if entry is None:
            return fail(SessionGoneError(sessionID))
        idle = entry.idleTimeout if ownIdle is None else ownIdle
        if entry.version != expectedVersion:
            self._counters["conflicts"] += 1
            return fail(ConflictError(sessionID, expectedVersion, entry.version))
        growth = len(data) - len(entry.data)
        self._bytes += growth
        if entry.protected:
            self._protectedBytes += growth
        entry.data = data
        entry.version += 1
        entry.idleTimeout = idle
        entry.lastSeen = self.clock.seconds()
        self._file(entry)
        self._used(entry)
        self._counters["saves"] += 1
        self._makeRoom(entry)
        self._notify(sessionID, entry.version)
        return succeed(entry.version)

    def touch(self, sessionID: str) -> Deferred[None]:
        """
        Restart a session's idle timeout.
        """
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()
        entry = self._live(sessionID)
        if entry is None:
            return fail(SessionGoneError(sessionID))
        entry.lastSeen = self.clock.seconds()
        self._file(entry)
        self._used(entry)
        self._counters["touches"] += 1
        return succeed(None)

    def rotate(self, sessionID: str) -> Deferred[SessionRecord]:
        """
        Move a session to a new identifier; the old one stops working.

        The rotated session keeps its data, version and creation time (so
        rotating does not extend its absolute lifetime) and counts as seen.
        """
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()
        entry = self._live(sessionID)
        if entry is None:
            return fail(SessionGoneError(sessionID))
        wasProtected = entry.protected
        self._remove(entry)
        newID = newSessionID()
        while self._find(newID) is not None:  # pragma: no cover - 2**-256
            newID = newSessionID()
        entry.sessionID = newID
        entry.lastSeen = self.clock.seconds()
        # Same segment and place as a use of the old identifier would give.
        if wasProtected:
            self._protected[newID] = entry
            self._protectedBytes += len(entry.data)
            entry.protected = True
        else:
            self._probation[newID] = entry
        self._bytes += len(entry.data)
        self._file(entry)
        self._used(entry)
        self._counters["rotations"] += 1
        self._notify(sessionID, None)
        return succeed(entry.record())

    def delete(self, sessionID: str) -> Deferred[None]:
        """
        Remove a session; a missing one is fine.
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        self._counters["deletes"] += 1
        entry = self._find(sessionID) if isinstance(sessionID, str) else None
        if entry is not None:
            self._remove(entry)
            self._notify(sessionID, None)
        return succeed(None)

    # Observers and statistics

    def addObserver(self, observer: SessionObserver) -> None:
        """
        Call C{observer(sessionID, version)} after every save, rotation,
        deletion, expiry and eviction; C{version} is the new version, or
        C{None} when the session is gone. An observer's exception is logged
        and does not affect the store.
        """
        self._observers.append(observer)

    def removeObserver(self, observer: SessionObserver) -> None:
        """
        Stop calling C{observer}.

        @raise ValueError: it was not added.
        """
        self._observers.remove(observer)

    def stats(self) -> Dict[str, int]:
        """
        The store's size and counters since it was made.

        @return: C{sessions} and C{bytes} held now, and C{protected}, the
            sessions in the protected segment; C{evictions} (sessions
            dropped to respect the limits), split into C{evictedNew} (never
            used since their creation) and C{evictedReturning} (used again
            at some point: in the protected segment, or demoted from it);
            C{promotions} (to the protected segment) and C{demotions} (back
            to probation, when protected sessions are over their share);
            C{expired} (sessions found or swept past their timeouts); and
            the operation counts C{creates}, C{loads}, C{saves},
            C{conflicts}, C{deletes}, C{rotations} and C{touches}.
        """
        result = {
            "sessions": len(self._probation) + len(self._protected),
            "bytes": self._bytes,
            "protected": len(self._protected),
        }
        result.update(self._counters)
        return result

    # The service, and sweeping

    storeDescription = "the memory session store"

    def startService(self) -> None:
        """
        Take calls, and sweep expired sessions every C{sweepInterval}
        seconds until stopped.
        """
        if self._sweeper is None:
            sweeper = self._sweeper = LoopingCall(self.sweep)
            sweeper.clock = self.clock
            sweeper.start(self.sweepInterval, now=False)
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Refuse new calls and stop sweeping, leaving no timer behind. The
        sessions stay in memory: started again, the store has them.

        @return: an already-fired L{Deferred}.
        """
        super().stopService()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and sweeper.running:
            sweeper.stop()
        return succeed(None)

    def sweep(self) -> int:
        """
        Remove up to C{sweepBatch} expired sessions, the longest expired
        first.

        @return: how many were removed.
        """
        return self._sweepDue(self.sweepBatch)

    # Internals

    def _live(self, sessionID: str) -> Optional[_Entry]:
        """
        The session by that identifier if it exists and has not expired; an
        expired one is removed on the spot.
        """
        if not isWellFormedSessionID(sessionID):
            return None
        entry = self._find(sessionID)
        if entry is None:
            return None
        if self.clock.seconds() >= entry.expiresAt(self.absoluteTimeout):
            self._expire(entry)
            return None
        return entry

    def _expire(self, entry: _Entry) -> None:
        self._remove(entry)
        self._counters["expired"] += 1
        self._notify(entry.sessionID, None)

    def _find(self, sessionID: str) -> Optional[_Entry]:
        entry = self._protected.get(sessionID)
        if entry is None:
            entry = self._probation.get(sessionID)
        return entry

    def _used(self, entry: _Entry) -> None:
        """
        C{entry} was used after its creation: make it the most recently used
        protected session, then keep the protected segment within its share.
        """
        if entry.protected:
            self._protected.move_to_end(entry.sessionID)
        else:
            del self._probation[entry.sessionID]
            self._protected[entry.sessionID] = entry
            self._protectedBytes += len(entry.data)
            entry.protected = entry.returning = True
            self._counters["promotions"] += 1
        while (
            len(self._protected) > self._protectedMaxSessions
            or self._protectedBytes > self._protectedMaxBytes
        ):
            sessionID, demoted = self._protected.popitem(last=False)
            self._protectedBytes -= len(demoted.data)
            demoted.protected = False
            self._probation[sessionID] = demoted
            self._counters["demotions"] += 1

    def _remove(self, entry: _Entry) -> None:
        if entry.protected:
            del self._protected[entry.sessionID]
            self._protectedBytes -= len(entry.data)
            entry.protected = False
        else:
            del self._probation[entry.sessionID]
        self._bytes -= len(entry.data)
        if entry.bucket is not None:
            bucket = self._buckets.get(entry.bucket)
            if bucket is not None:
                bucket.pop(entry.sessionID, None)
            entry.bucket = None

    def _file(self, entry: _Entry, earliest: int = 0) -> None:
        """
        File C{entry} in the bucket of its expiry time: the bucket after the
        one its expiry falls in, so that every session in a bucket that is
        due has expired.
        """
        expiresAt = entry.expiresAt(self.absoluteTimeout)
        key = max(int(expiresAt // self._bucketWidth) + 1, earliest)
        if key == entry.bucket:
            return
        if entry.bucket is not None:
            old = self._buckets.get(entry.bucket)
            if old is not None:
                old.pop(entry.sessionID, None)
        entry.bucket = key
        bucket = self._buckets.get(key)
        if bucket is None:
            # Each bucket is indexed once while it exists; buckets emptied
            # by moves stay until they are due, so the index holds at most
            # one key per bucket width of the absolute timeout.
            bucket = self._buckets[key] = {}
            heapq.heappush(self._bucketOrder, key)
        bucket[entry.sessionID] = None

    def _sweepDue(self, limit: int) -> int:
        now = self.clock.seconds()
        due = int(now // self._bucketWidth)
        removed = 0
        while self._bucketOrder and self._bucketOrder[0] <= due and removed < limit:
            key = self._bucketOrder[0]
            bucket = self._buckets[key]
            while bucket and removed < limit:
                sessionID = next(iter(bucket))
                found = self._find(sessionID)
                assert found is not None, "a filed session is stored"
                entry = found
                if now >= entry.expiresAt(self.absoluteTimeout):
                    self._expire(entry)
                    removed += 1
                else:  # pragma: no cover - filing keeps due buckets expired
                    self._file(entry, earliest=due + 1)
            if not bucket:
                heapq.heappop(self._bucketOrder)
                del self._buckets[key]
        return removed

    def _overLimits(self) -> bool:
        return (
            len(self._probation) + len(self._protected) > self.maxSessions
            or self._bytes > self.maxBytes
        )

    def _makeRoom(self, keep: _Entry) -> None:
        """
        Evict sessions until both limits hold, reclaiming expired sessions
        first: the least recently used of probation, and only when probation
        holds nothing but C{keep} (the session just created or saved, which
        fits on its own), the least recently used protected session.
        """
        if not self._overLimits():
            return
        self._sweepDue(self.sweepBatch)
        now = self.clock.seconds()
        while self._overLimits():
            entry = next(iter(self._probation.values()), None)
            if entry is None or entry is keep:
                entry = next(iter(self._protected.values()))
            if now >= entry.expiresAt(self.absoluteTimeout):
                # Expired but not yet swept (the sweep runs a bucket late).
                self._expire(entry)
                continue
            self._remove(entry)
            self._counters["evictions"] += 1
            self._counters["evictedReturning" if entry.returning else "evictedNew"] += 1
            self._notify(entry.sessionID, None)

    def _notify(self, sessionID: str, version: Optional[int]) -> None:
        for observer in list(self._observers):
            try:
                observer(sessionID, version)
            except Exception:
                self.log.failure(
                    "Session observer {observer!r} failed", observer=observer
                )
