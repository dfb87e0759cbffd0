# -*- test-case-name: tests.unit.test_memorystore -*-
"""
The in-memory session store: the default for one process, and the heart of
the session daemon. Bounded in sessions and bytes (least recently used
sessions are evicted, and counted), expired on every read, and swept
incrementally with bounded work per tick.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from attrs import define
from twisted.application.service import Service
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
    ValueTooLargeError,
)
from tlsession.stores import checkData, isWellFormedSessionID, newSessionID

__all__ = ["MemorySessionStore", "SessionObserver"]

#: Called as C{observer(sessionID, version)} after a session changed:
#: C{version} is its new version, or C{None} when it is gone.
SessionObserver = Callable[[str, Optional[int]], None]

# Expiry times are kept in buckets this many seconds wide, at most this many
# buckets over the absolute timeout: the sweep's index stays small however
# many sessions there are, at the price of reclaiming memory a bucket late
# (reads enforce expiry to the second regardless).
_MAX_BUCKETS = 4096

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
class MemorySessionStore(Service):
    """
    Sessions in a dictionary of this process, in least-recently-used order.

    Every method returns an already-fired L{Deferred}. As an
    L{twisted.application.service.IService}, the store sweeps expired
    sessions while it runs; L{startSweeping} and L{stopSweeping} do the same
    outside a service hierarchy.

    @ivar idleTimeout: default seconds of inactivity before a session ends.
    @ivar absoluteTimeout: seconds after creation when any session ends.
    @ivar maxValueBytes: the largest session data accepted.
    @ivar maxSessions: sessions kept before the least recently used is
        evicted.
    @ivar maxBytes: total bytes of session data kept before the least
        recently used sessions are evicted.
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
    ) -> None:
        """
        @param clock: the time source for every timestamp and the sweep.
        @param sweepInterval: seconds between two sweep ticks.
        @param sweepBatch: the most expired sessions one tick removes.
        @raise ValueError: for a limit that is not positive, or a
            C{maxValueBytes} larger than C{maxBytes}.
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
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        if maxValueBytes > maxBytes:
            raise ValueError(
                f"maxValueBytes ({maxValueBytes}) cannot exceed maxBytes ({maxBytes})"
            )
        self.clock = clock
        self.idleTimeout = float(idleTimeout)
        self.absoluteTimeout = float(absoluteTimeout)
        self.maxValueBytes = maxValueBytes
        self.maxSessions = maxSessions
        self.maxBytes = maxBytes
        self.sweepInterval = sweepInterval
        self.sweepBatch = sweepBatch
        self._sessions: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
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
            self._checkData(data)
            idle = self._checkIdle(idleTimeout, self.idleTimeout)
        except (TypeError, ValueError, ValueTooLargeError) as e:
            return fail(e)
        self._sweepDue(_CREATE_SWEEP)
        sessionID = newSessionID()
        while sessionID in self._sessions:  # pragma: no cover - 2**-256
            sessionID = newSessionID()
        now = self.clock.seconds()
        entry = _Entry(sessionID, 1, data, now, now, idle)
        self._sessions[sessionID] = entry
        self._bytes += len(data)
        self._file(entry)
        self._counters["creates"] += 1
        self._makeRoom()
        return succeed(entry.record())

    def load(self, sessionID: str) -> Deferred[Optional[SessionRecord]]:
        """
        Read a live session, or C{None}.
        """
        self._counters["loads"] += 1
        entry = self._live(sessionID)
        if entry is None:
            return succeed(None)
        self._sessions.move_to_end(sessionID)
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
            self._checkData(data)
        except (TypeError, ValueTooLargeError) as e:
            return fail(e)
        entry = self._live(sessionID)
        if entry is None:
            return fail(SessionGoneError(sessionID))
        try:
            idle = self._checkIdle(idleTimeout, entry.idleTimeout)
        except (TypeError, ValueError) as e:
            return fail(e)
        if entry.version != expectedVersion:
            self._counters["conflicts"] += 1
            return fail(ConflictError(sessionID, expectedVersion, entry.version))
        self._bytes += len(data) - len(entry.data)
        entry.data = data
        entry.version += 1
        entry.idleTimeout = idle
        entry.lastSeen = self.clock.seconds()
        self._file(entry)
        self._sessions.move_to_end(sessionID)
        self._counters["saves"] += 1
        self._makeRoom()
        self._notify(sessionID, entry.version)
        return succeed(entry.version)

    def touch(self, sessionID: str) -> Deferred[None]:
        """
        Restart a session's idle timeout.
        """
        entry = self._live(sessionID)
        if entry is None:
            return fail(SessionGoneError(sessionID))
        entry.lastSeen = self.clock.seconds()
        self._file(entry)
        self._sessions.move_to_end(sessionID)
        self._counters["touches"] += 1
        return succeed(None)

    def rotate(self, sessionID: str) -> Deferred[SessionRecord]:
        """
        Move a session to a new identifier; the old one stops working.

        The rotated session keeps its data, version and creation time (so
        rotating does not extend its absolute lifetime) and counts as seen.
        """
        entry = self._live(sessionID)
        if entry is None:
            return fail(SessionGoneError(sessionID))
        self._remove(entry)
        newID = newSessionID()
        while newID in self._sessions:  # pragma: no cover - 2**-256
            newID = newSessionID()
        entry.sessionID = newID
        entry.lastSeen = self.clock.seconds()
        self._sessions[newID] = entry
        self._bytes += len(entry.data)
        self._file(entry)
        self._counters["rotations"] += 1
        self._notify(sessionID, None)
        return succeed(entry.record())

    def delete(self, sessionID: str) -> Deferred[None]:
        """
        Remove a session; a missing one is fine.
        """
        self._counters["deletes"] += 1
        entry = self._sessions.get(sessionID) if isinstance(sessionID, str) else None
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

        @return: C{sessions} and C{bytes} held now; C{evictions} (sessions
            dropped to respect the limits) and C{expired} (sessions found
            or swept past their timeouts); and the operation counts
            C{creates}, C{loads}, C{saves}, C{conflicts}, C{deletes},
            C{rotations} and C{touches}.
        """
        result = {"sessions": len(self._sessions), "bytes": self._bytes}
        result.update(self._counters)
        return result

    # Sweeping

    def startSweeping(self) -> None:
        """
        Sweep expired sessions every C{sweepInterval} seconds until
        L{stopSweeping}. Starting twice is harmless.
        """
        if self._sweeper is not None:
            return
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(self.sweepInterval, now=False)

    def stopSweeping(self) -> None:
        """
        Stop the periodic sweep, leaving no timer behind.
        """
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and sweeper.running:
            sweeper.stop()

    def startService(self) -> None:
        """
        Start sweeping with the service.
        """
        Service.startService(self)
        self.startSweeping()

    def stopService(self) -> Optional[Deferred[None]]:
        """
        Stop sweeping with the service.
        """
        self.stopSweeping()
        return Service.stopService(self)

    def sweep(self) -> int:
        """
        Remove up to C{sweepBatch} expired sessions, the longest expired
        first.

        @return: how many were removed.
        """
        return self._sweepDue(self.sweepBatch)

    # Internals

    def _checkData(self, data: Any) -> None:
        checkData(data, self.maxValueBytes)

    def _checkIdle(self, idleTimeout: Optional[float], default: float) -> float:
        if idleTimeout is None:
            return default
        if not (idleTimeout > 0 and math.isfinite(idleTimeout)):
            raise ValueError(
                f"idleTimeout must be a positive number, not {idleTimeout!r}"
            )
        return float(idleTimeout)

    def _live(self, sessionID: str) -> Optional[_Entry]:
        """
        The session by that identifier if it exists and has not expired; an
        expired one is removed on the spot.
        """
        if not isWellFormedSessionID(sessionID):
            return None
        entry = self._sessions.get(sessionID)
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

    def _remove(self, entry: _Entry) -> None:
        del self._sessions[entry.sessionID]
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
                entry = self._sessions[sessionID]
                if now >= entry.expiresAt(self.absoluteTimeout):
                    self._expire(entry)
                    removed += 1
                else:  # pragma: no cover - filing keeps due buckets expired
                    self._file(entry, earliest=due + 1)
            if not bucket:
                heapq.heappop(self._bucketOrder)
                del self._buckets[key]
        return removed

    def _makeRoom(self) -> None:
        """
        Evict the least recently used sessions until both limits hold,
        reclaiming expired sessions first.
        """
        if len(self._sessions) <= self.maxSessions and self._bytes <= self.maxBytes:
            return
        self._sweepDue(self.sweepBatch)
        now = self.clock.seconds()
        while len(self._sessions) > self.maxSessions or self._bytes > self.maxBytes:
            entry = next(iter(self._sessions.values()))
            if now >= entry.expiresAt(self.absoluteTimeout):
                # Expired but not yet swept (the sweep runs a bucket late).
                self._expire(entry)
                continue
            self._remove(entry)
            self._counters["evictions"] += 1
            self._notify(entry.sessionID, None)

    def _notify(self, sessionID: str, version: Optional[int]) -> None:
        for observer in list(self._observers):
            try:
                observer(sessionID, version)
            except Exception:
                self.log.failure(
                    "Session observer {observer!r} failed", observer=observer
                )
