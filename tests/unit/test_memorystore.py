"""
Tests for L{tlsession.stores.memory}: the conformance suite, then what only
the memory store does (limits with segmented LRU eviction, the bounded
sweep, observers, statistics).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.sessionstore_conformance import SessionStoreConformance
from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    SessionRecord,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.stores import isWellFormedSessionID, newSessionID
from tlsession.stores.memory import MemorySessionStore


class MemoryStoreConformanceTests(SessionStoreConformance, TestCase):
    """
    The memory store behaves like every store.
    """

    def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> MemorySessionStore:
        """
        A memory store with the suite's settings.
        """
        return MemorySessionStore(
            clock,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )


class IdentifierTests(SynchronousTestCase):
    """
    The identifier rules every store shares.
    """

    def test_newIdentifiersAreWellFormed(self) -> None:
        """
        New identifiers are 43 URL-safe characters and pass the format check.
        """
        sessionID = newSessionID()
        self.assertEqual(len(sessionID), 43)
        self.assertTrue(isWellFormedSessionID(sessionID))

    def test_junkIsNotWellFormed(self) -> None:
        """
        Anything else (too short or long, other characters, not text) fails
        the format check.
        """
        good = newSessionID()
        for junk in [good[:-1], good + "a", good[:-1] + "+", good[:-1] + "\n", b"x"]:
            self.assertFalse(isWellFormedSessionID(junk), repr(junk))
        self.assertFalse(isWellFormedSessionID(good.encode("ascii")))


class Recorder:
    """
    An observer that remembers what it was told.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[str, Optional[int]]] = []

    def __call__(self, sessionID: str, version: Optional[int]) -> None:
        self.calls.append((sessionID, version))


class MemoryStoreTests(SynchronousTestCase):
    """
    What only the memory store does.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def store(self, **kwargs: object) -> MemorySessionStore:
        """
        A started store on the test's clock, stopped after the test.
        """
        store = MemorySessionStore(self.clock, **kwargs)  # type: ignore[arg-type]
        store.startService()
        self.addCleanup(store.stopService)
        return store

    def create(self, store: MemorySessionStore, data: bytes = b"") -> SessionRecord:
        """
        Create a session holding C{data}.
        """
        return self.successResultOf(store.create(data))

    def load(
        self, store: MemorySessionStore, sessionID: str
    ) -> Optional[SessionRecord]:
        """
        Load C{sessionID}.
        """
        return self.successResultOf(store.load(sessionID))

    def test_evictsLeastRecentlyUsedByCount(self) -> None:
        """
        Past C{maxSessions}, the session used least recently (reads count
        as use) is evicted, and counted.
        """
        store = self.store(maxSessions=3)
        a, b, c = (self.create(store) for _ in range(3))
        self.load(store, a.sessionID)
        d = self.create(store)
        self.assertIsNone(self.load(store, b.sessionID))
        for kept in (a, c, d):
            self.assertIsNotNone(self.load(store, kept.sessionID))
        stats = store.stats()
        self.assertEqual((stats["sessions"], stats["evictions"]), (3, 1))

    def test_evictsLeastRecentlyUsedByBytes(self) -> None:
        """
        Past C{maxBytes} of data, least recently used sessions are evicted
        until the data fits, whether the growth came from a create or a save.
        """
        store = self.store(maxBytes=100, maxValueBytes=60)
        a = self.create(store, b"a" * 40)
        b = self.create(store, b"b" * 40)
        c = self.create(store, b"c" * 40)
        self.assertIsNone(self.load(store, a.sessionID))
        self.assertEqual(store.stats()["bytes"], 80)
        self.successResultOf(store.save(b.sessionID, 1, b"b" * 60))
        self.assertEqual(store.stats()["bytes"], 100)
        self.successResultOf(store.save(c.sessionID, 1, b"c" * 60))
        self.assertIsNone(self.load(store, b.sessionID))
        self.assertEqual(self.load(store, c.sessionID).data, b"c" * 60)
        stats = store.stats()
        self.assertEqual((stats["bytes"], stats["evictions"]), (60, 2))

    def test_expiredGoBeforeLiveAreEvicted(self) -> None:
        """
        When the store is full, sessions that have expired make room before
        any live one is evicted.
        """
        store = self.store(maxSessions=2, idleTimeout=60)
        old = self.create(store)
        self.clock.advance(30)
        live = self.create(store)
        self.clock.advance(40)
        self.create(store)
        self.assertIsNotNone(self.load(store, live.sessionID))
        self.assertIsNone(self.load(store, old.sessionID))
        stats = store.stats()
        self.assertEqual((stats["evictions"], stats["expired"]), (0, 1))

    def test_oversizedValueAndLimits(self) -> None:
        """
        A value over C{maxValueBytes} is refused with L{ValueTooLargeError}
        naming both sizes; limits that make no sense are refused when the
        store is made.
        """
        store = self.store(maxValueBytes=10)
        error = self.failureResultOf(store.create(b"x" * 11), ValueTooLargeError)
        self.assertEqual((error.value.size, error.value.limit), (11, 10))
        self.assertIn("11 bytes", str(error.value))
        for bad in [
            {"maxSessions": 0},
            {"idleTimeout": -1},
            {"absoluteTimeout": float("inf")},
            {"maxValueBytes": 10, "maxBytes": 5},
        ]:
            self.assertRaises(ValueError, MemorySessionStore, self.clock, **bad)

    def test_badArguments(self) -> None:
        """
        Data that is not bytes, and idle timeouts that are not positive,
        fail the call's L{Deferred} instead of being stored.
        """
        store = self.store()
        self.failureResultOf(store.create("text"), TypeError)  # type: ignore[arg-type]
        self.failureResultOf(store.create(b"", idleTimeout=0), ValueError)
        record = self.create(store)
        self.failureResultOf(store.save(record.sessionID, 1, b"", -5), ValueError)
        self.assertEqual(store.stats()["sessions"], 1)

    def test_sweepIsBoundedPerTick(self) -> None:
        """
        Each sweep tick removes at most C{sweepBatch} expired sessions and
        leaves live ones alone; it runs every C{sweepInterval} seconds.
        """
        store = self.store(
            idleTimeout=60, absoluteTimeout=4096, sweepBatch=100, sweepInterval=5
        )
        live = self.successResultOf(store.create(b"", idleTimeout=600))
        for _ in range(250):
            self.create(store)
        self.clock.advance(59)
        self.assertEqual(store.stats()["sessions"], 251)
        remaining = []
        for _ in range(4):
            self.clock.advance(5)
            remaining.append(store.stats()["sessions"])
        self.assertEqual(remaining, [151, 51, 1, 1])
        self.assertEqual(store.stats()["expired"], 250)
        self.assertIsNotNone(self.load(store, live.sessionID))

    def test_sweepStopsWithoutLeftovers(self) -> None:
        """
        The store sweeps with one timer while it runs, and stopping it
        leaves none on the clock; a store never started has none.
        """
        store = MemorySessionStore(self.clock)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        store.startService()
        store.startService()
        self.assertTrue(store.running)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(store.stopService())
        self.successResultOf(store.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lifecycle(self) -> None:
        """
        Calls before the start and after the stop fail, saying which; the
        sessions stay in memory across a stop and a new start.
        """
        store = MemorySessionStore(self.clock)
        failure = self.failureResultOf(store.create(b""), StoreUnavailableError)
        self.assertEqual(str(failure.value), "the memory session store is not started")
        store.startService()
        record = self.create(store, b"kept")
        self.successResultOf(store.stopService())
        failure = self.failureResultOf(
            store.load(record.sessionID), StoreUnavailableError
        )
        self.assertEqual(str(failure.value), "the memory session store is stopped")
        store.startService()
        self.addCleanup(store.stopService)
        self.assertEqual(self.load(store, record.sessionID), record)

    def test_createsReclaimWithoutSweep(self) -> None:
        """
        Between sweeps (here an hour apart), creating sessions still
        reclaims expired ones, a few at a time.
        """
        store = self.store(idleTimeout=60, sweepInterval=3600)
        for _ in range(20):
            self.create(store)
        self.clock.advance(120)
        self.create(store)
        self.assertEqual(store.stats()["sessions"], 5)
        self.create(store)
        self.assertEqual(store.stats()["sessions"], 2)

    def test_observers(self) -> None:
        """
        Observers hear of every save (with the new version), and of every
        rotation, deletion, expiry and eviction (with C{None}); not of
        creates, loads and touches. A removed observer hears nothing more.
        """
        store = self.store(maxSessions=2, idleTimeout=60)
        heard = Recorder()
        store.addObserver(heard)
        a = self.create(store)
        self.successResultOf(store.touch(a.sessionID))
        self.successResultOf(store.save(a.sessionID, 1, b"x"))
        rotated = self.successResultOf(store.rotate(a.sessionID))
        self.successResultOf(store.delete(rotated.sessionID))
        b = self.create(store)
        self.clock.advance(61)
        self.load(store, b.sessionID)
        c, d, e = (self.create(store) for _ in range(3))
        self.assertEqual(
            heard.calls,
            [
                (a.sessionID, 2),
                (a.sessionID, None),
                (rotated.sessionID, None),
                (b.sessionID, None),
                (c.sessionID, None),
            ],
        )
        store.removeObserver(heard)
        self.successResultOf(store.delete(d.sessionID))
        self.assertEqual(len(heard.calls), 5)
        self.assertRaises(ValueError, store.removeObserver, heard)
        self.assertIsNotNone(self.load(store, e.sessionID))

    def test_failingObserver(self) -> None:
        """
        An observer that raises is logged; the store's operation and the
        other observers are unaffected.
        """
        store = self.store()
        heard = Recorder()

        def broken(sessionID: str, version: Optional[int]) -> None:
            raise ZeroDivisionError("observer bug")

        store.addObserver(broken)
        store.addObserver(heard)
        record = self.create(store)
        self.assertEqual(self.successResultOf(store.save(record.sessionID, 1, b"")), 2)
        self.assertEqual(heard.calls, [(record.sessionID, 2)])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_stats(self) -> None:
        """
        The statistics count every kind of operation, and the size held.
        """
        store = self.store()
        a = self.create(store, b"12345")
        self.load(store, a.sessionID)
        self.successResultOf(store.save(a.sessionID, 1, b"123"))
        self.failureResultOf(store.save(a.sessionID, 1, b"1"), ConflictError)
        self.successResultOf(store.touch(a.sessionID))
        rotated = self.successResultOf(store.rotate(a.sessionID))
        self.failureResultOf(store.touch(a.sessionID), SessionGoneError)
        self.create(store)
        self.successResultOf(store.delete(rotated.sessionID))
        self.assertEqual(
            store.stats(),
            {
                "sessions": 1,
                "bytes": 0,
                "protected": 0,
                "evictions": 0,
                "evictedNew": 0,
                "evictedReturning": 0,
                "promotions": 1,
                "demotions": 0,
                "expired": 0,
                "creates": 2,
                "loads": 1,
                "saves": 1,
                "conflicts": 1,
                "deletes": 1,
                "rotations": 1,
                "touches": 1,
            },
        )

    def test_rotationKeepsCreationTime(self) -> None:
        """
        A rotated session keeps its creation time and version, so rotating
        does not extend its absolute lifetime.
        """
        store = self.store(idleTimeout=60, absoluteTimeout=100)
        record = self.create(store, b"data")
        self.clock.advance(50)
        rotated = self.successResultOf(store.rotate(record.sessionID))
        self.assertEqual(
            (rotated.created, rotated.version, rotated.lastSeen),
            (record.created, 1, self.clock.seconds()),
        )
        self.clock.advance(50)
        self.assertIsNone(self.load(store, rotated.sessionID))


class SegmentedEvictionTests(SynchronousTestCase):
    """
    Eviction takes sessions never used since their creation first, so a
    flood of one-shot sessions (cookie-less requests that each store
    something) evicts other one-shot sessions, not users who came back.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def store(self, **kwargs: object) -> MemorySessionStore:
        """
        A started store on the test's clock, stopped after the test.
        """
        store = MemorySessionStore(self.clock, **kwargs)  # type: ignore[arg-type]
        store.startService()
        self.addCleanup(store.stopService)
        return store

    def create(self, store: MemorySessionStore, data: bytes = b"") -> SessionRecord:
        """
        Create a session holding C{data}.
        """
        return self.successResultOf(store.create(data))

    def load(
        self, store: MemorySessionStore, sessionID: str
    ) -> Optional[SessionRecord]:
        """
        Load C{sessionID}.
        """
        return self.successResultOf(store.load(sessionID))

    def flood(self, store: MemorySessionStore, count: int, seconds: float) -> None:
        """
        Create C{count} one-shot sessions over C{seconds}.
        """
        for _ in range(count):
            self.clock.advance(seconds / count)
            self.create(store, b'{"csrf":"x"}')

    def test_returningSessionSurvivesFloodOfNewOnes(self) -> None:
        """
        A session saved by a second request survives ten times the limit of
        one-shot creates, while a session made just before the flood, and
        never used again, is evicted by it. Only new sessions are counted as
        evicted.
        """
        store = self.store(maxSessions=200)
        signedIn = self.create(store, b'{"user":"alice"}')
        self.clock.advance(5)
        self.successResultOf(store.save(signedIn.sessionID, 1, b'{"user":"alice!"}'))
        fresh = self.create(store)
        self.flood(store, 10 * 200, 0.8)
        loaded = self.load(store, signedIn.sessionID)
        assert loaded is not None
        self.assertEqual(loaded.data, b'{"user":"alice!"}')
        self.assertIsNone(self.load(store, fresh.sessionID))
        stats = store.stats()
        self.assertEqual(
            (
                stats["sessions"],
                stats["evictions"],
                stats["evictedNew"],
                stats["evictedReturning"],
            ),
            (200, 1802, 1802, 0),
        )

    def test_everyKindOfUseCounts(self) -> None:
        """
        A load, save, touch or rotation after the create makes a session a
        returning one: each survives the flood.
        """
        store = self.store(maxSessions=50)
        loaded, saved, touched, rotated = (self.create(store) for _ in range(4))
        self.clock.advance(1)
        self.load(store, loaded.sessionID)
        self.successResultOf(store.save(saved.sessionID, 1, b"x"))
        self.successResultOf(store.touch(touched.sessionID))
        moved = self.successResultOf(store.rotate(rotated.sessionID))
        self.assertEqual(store.stats()["promotions"], 4)
        self.flood(store, 500, 1.0)
        for record in (loaded, saved, touched, moved):
            self.assertIsNotNone(self.load(store, record.sessionID))

    def test_returningShareIsBounded(self) -> None:
        """
        Returning sessions keep at most 80% of C{maxSessions}: past it the
        least recently used of them go back among the new sessions (and
        are evicted first from there), so a new user always has a fifth of
        the room to come back in.
        """
        store = self.store(maxSessions=10)
        records = [self.create(store) for _ in range(10)]
        for record in records:
            self.load(store, record.sessionID)
        stats = store.stats()
        self.assertEqual((stats["protected"], stats["demotions"]), (8, 2))
        heard = Recorder()
        store.addObserver(heard)
        newcomers = [self.create(store) for _ in range(3)]
        self.assertEqual(
            heard.calls,
            [
                (records[0].sessionID, None),
                (records[1].sessionID, None),
                (newcomers[0].sessionID, None),
            ],
        )
        stats = store.stats()
        self.assertEqual((stats["evictedReturning"], stats["evictedNew"]), (2, 1))
        for record in records[2:] + newcomers[1:]:
            self.assertIsNotNone(self.load(store, record.sessionID))

    def test_returningShareOfBytes(self) -> None:
        """
        The bound holds for bytes too: a flood of new sessions evicts new
        sessions only, however large the returning ones are.
        """
        store = self.store(maxBytes=1000, maxValueBytes=500)
        big = self.create(store, b"b" * 400)
        other = self.create(store, b"o" * 300)
        for record in (big, other):
            self.load(store, record.sessionID)
        for _ in range(50):
            self.create(store, b"n" * 100)
        self.assertEqual(self.load(store, big.sessionID).data, b"b" * 400)
        self.assertEqual(self.load(store, other.sessionID).data, b"o" * 300)
        self.assertLessEqual(store.stats()["bytes"], 1000)

    def test_createKeepsItsOwnSession(self) -> None:
        """
        When returning sessions fill their share and a large new session
        does not fit next to them, a returning session makes room: a create
        never evicts the session it creates.
        """
        store = self.store(maxBytes=1000, maxValueBytes=500)
        first = self.create(store, b"1" * 400)
        second = self.create(store, b"2" * 400)
        for record in (first, second):
            self.load(store, record.sessionID)
        large = self.create(store, b"L" * 500)
        self.assertEqual(self.load(store, large.sessionID).data, b"L" * 500)
        self.assertIsNone(self.load(store, first.sessionID))
        self.assertIsNotNone(self.load(store, second.sessionID))
        self.assertEqual(store.stats()["evictedReturning"], 1)

    def test_floodOfReturningSessions(self) -> None:
        """
        The bound: sessions each used twice are returning sessions too. A
        returning session outlives C{maxSessions - 1} of them used after
        it, and is evicted by the next one, as with plain LRU.
        """
        store = self.store(maxSessions=100)
        signedIn = self.create(store)
        self.load(store, signedIn.sessionID)
        heard = Recorder()
        store.addObserver(heard)

        def returning() -> None:
            record = self.create(store)
            self.load(store, record.sessionID)

        for _ in range(99):
            returning()
        self.assertNotIn((signedIn.sessionID, None), heard.calls)
        returning()
        self.assertEqual(heard.calls, [(signedIn.sessionID, None)])
        self.assertEqual(store.stats()["evictedReturning"], 1)

    def test_protectedShareChecked(self) -> None:
        """
        The returning share must be a fraction between 0 and 1.
        """
        for bad in [0, 1, 1.5, -0.2, float("nan")]:
            self.assertRaises(
                ValueError, MemorySessionStore, self.clock, protectedShare=bad
            )
