# -*- test-case-name: tests.unit.test_pbstore -*-
"""
The session daemon client's near cache: recently read or written sessions,
answered with no round trip, dropped when the daemon pushes a change.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional

from tlsession.interfaces import SessionRecord

_GONE = -1


class NearCache:
    """
    A bounded LRU map of session identifier to L{SessionRecord}, with the
    floors that keep late replies from bringing back what a push removed.

    @ivar maxEntries: records kept at most.
    @ivar maxBytes: total record data kept at most.
    """

    def __init__(self, maxEntries: int = 10_000, maxBytes: int = 64 * 2**20):
        self.maxEntries = maxEntries
        self.maxBytes = maxBytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[SessionRecord, float]] = OrderedDict()
        # Per session with calls in flight: [calls, floor]; the floor is the
        # highest version pushed meanwhile, or _GONE.
        self._watches: Dict[str, List[int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, sessionID: str) -> Optional[tuple[SessionRecord, float]]:
        """
        The cached record and when it was stored, marking it recently used.
        """
        entry = self._entries.get(sessionID)
        if entry is not None:
            self._entries.move_to_end(sessionID)
        return entry

    def fresh(
        self, sessionID: str, now: float, maxAge: float, absoluteTimeout: float
    ) -> Optional[SessionRecord]:
        """
        The cached record for C{sessionID} if it is surely alive at C{now}
        (within its idle timeout and C{absoluteTimeout}) and was stored
        less than C{maxAge} seconds ago; a record that is not is dropped.
        """
        entry = self._entries.get(sessionID)
        if entry is None:
            return None
        record, storedAt = entry
        if (
            now - storedAt < maxAge
            and now - record.lastSeen < record.idleTimeout
            and now - record.created < absoluteTimeout
        ):
            self._entries.move_to_end(sessionID)
            return record
        self.discard(sessionID)
        return None

    def watch(self, sessionID: str) -> None:
        """
        A call about C{sessionID} is going out; its reply is checked with
        L{unwatch}.
        """
        watch = self._watches.get(sessionID)
        if watch is None:
            self._watches[sessionID] = [1, 0]
        else:
            watch[0] += 1

    def unwatch(self, sessionID: str) -> int:
        """
        A reply about C{sessionID} came back (or the call failed).

        @return: the floor: the highest version pushed since the call went
            out, C{-1} if the session was pushed as gone, else C{0}.
        """
        watch = self._watches.get(sessionID)
        if watch is None:
            return 0
        watch[0] -= 1
        if watch[0] <= 0:
            del self._watches[sessionID]
        return watch[1]

    def put(self, record: SessionRecord, storedAt: float, floor: int = 0) -> None:
        """
        Keep C{record}, unless a push said it is stale (C{floor}) or a newer
        version is cached already.
        """
        if floor == _GONE or record.version < floor:
            self.discard(record.sessionID)
            return
        if len(record.data) > self.maxBytes:
            self.discard(record.sessionID)
            return
        old = self._entries.get(record.sessionID)
        if old is not None:
            if old[0].version > record.version:
                return
            self.bytes -= len(old[0].data)
        self._entries[record.sessionID] = (record, storedAt)
        self._entries.move_to_end(record.sessionID)
        self.bytes += len(record.data)
        while len(self._entries) > self.maxEntries or self.bytes > self.maxBytes:
            _, (evicted, _) = self._entries.popitem(last=False)
            self.bytes -= len(evicted.data)

    def invalidate(self, sessionID: str, version: Optional[int]) -> bool:
        """
        The daemon says C{sessionID} is now at C{version} (C{None}: gone).

        @return: whether a cached record was dropped.
        """
        watch = self._watches.get(sessionID)
        if watch is not None:
            watch[1] = (
                _GONE
                if version is None or watch[1] == _GONE
                else max(watch[1], version)
            )
        entry = self._entries.get(sessionID)
        if entry is None:
            return False
        if version is not None and entry[0].version >= version:
            return False
        self.discard(sessionID)
        return True

    def discard(self, sessionID: str) -> None:
        """
        Forget C{sessionID}.
        """
        entry = self._entries.pop(sessionID, None)
        if entry is not None:
            self.bytes -= len(entry[0].data)

    def clear(self) -> None:
        """
        Forget everything, floors included (the connection they were about
        is gone).
        """
        self._entries.clear()
        self._watches.clear()
        self.bytes = 0
