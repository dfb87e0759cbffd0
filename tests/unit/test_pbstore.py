"""
Tests for L{tlsession.stores.pb}: the session daemon's client, connected to
a daemon in memory. The conformance suite, the near cache and its
invalidation (including a push and a reply crossing), failing fast while
the daemon is away, timeouts, reconnection and refused logins.
"""

from __future__ import annotations

from typing import Any, List, Optional

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.sessionstore_conformance import SessionStoreConformance
from tests.unit.test_daemon import (
    SECRET,
    START,
    MemoryNetwork,
    capturedLog,
    makeDaemon,
)
from tlsession._wire import MAX_BATCH
from tlsession.daemon import SessionDaemonService
from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    SessionRecord,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.stores.memory import MemorySessionStore
from tlsession.stores.pb import NearCache, PBSessionStore


def fixedDelay(delay: float, attempts: Optional[List[int]] = None) -> Any:
    """
    A retry policy waiting C{delay} seconds, noting each attempt number.
    """

    def policy(attempt: int) -> float:
        if attempts is not None:
            attempts.append(attempt)
        return delay

    return policy


class PBStoreConformanceTests(SessionStoreConformance, TestCase):
    """
    The client passes the conformance suite against a daemon connected in
    memory.
    """

    def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> Any:
        store = MemorySessionStore(
            clock,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )
        daemon = SessionDaemonService(store, SECRET, [], clock, clock, statsInterval=0)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        network = MemoryNetwork(daemon.factory)
        return PBSessionStore(
            network.endpoint(),
            SECRET,
            clock,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )

    def whenStoreReady(self, store: PBSessionStore) -> Deferred[Any]:
        """
        Wait for the client to log in (on the clock's next turn).
        """
        waiting = store.whenConnected()
        self.clock.advance(0)
        return waiting


class ClientTestCase(SynchronousTestCase):
    """
    A daemon in memory and helpers to connect clients to it.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.daemon = makeDaemon(self.clock)
        self.network = MemoryNetwork(self.daemon.factory)

    def client(
        self, network: Optional[MemoryNetwork] = None, **kwargs: Any
    ) -> PBSessionStore:
        """
        A started client of the daemon, stopped after the test.
        """
        kwargs.setdefault("retryPolicy", fixedDelay(1.0))
        store = PBSessionStore(
            (network or self.network).endpoint(),
            kwargs.pop("secret", SECRET),
            self.clock,
            **kwargs,
        )
        store.startService()
        self.addCleanup(store.stopService)
        return store

    def daemonCounts(self) -> dict[str, Any]:
        """
        The daemon's store counters.
        """
        counts: dict[str, Any] = self.daemon.store.stats()
        return counts


class NearCacheTests(ClientTestCase):
    """
    Loads are answered from the near cache with no round trip, while the
    daemon's pushes keep it right.
    """

    def test_hitWithoutRoundTrip(self) -> None:
        """
        A session this process created or loaded loads again with no call to
        the daemon.
        """
        store = self.client()
        record = self.successResultOf(store.create(b"data"))
        self.assertEqual(self.successResultOf(store.load(record.sessionID)), record)
        self.assertEqual(self.daemonCounts()["loads"], 0)
        other = self.client()
        self.successResultOf(other.load(record.sessionID))
        self.successResultOf(other.load(record.sessionID))
        self.assertEqual(self.daemonCounts()["loads"], 1)
        self.assertEqual(
            (other.stats()["nearCacheHits"], other.stats()["nearCacheMisses"]), (1, 1)
        )

    def test_ownWritesUpdateTheCache(self) -> None:
        """
        After this process saves or touches a session, a load answers the
        new data and times from the cache.
        """
        store = self.client()
        record = self.successResultOf(store.create(b"one"))
        self.clock.advance(5)
        self.assertEqual(
            self.successResultOf(store.save(record.sessionID, 1, b"two")), 2
        )
        self.clock.advance(5)
        self.successResultOf(store.touch(record.sessionID))
        loaded = self.successResultOf(store.load(record.sessionID))
        self.assertEqual(
            (loaded.version, loaded.data, loaded.lastSeen), (2, b"two", START + 10)
        )
        self.assertEqual(self.daemonCounts()["loads"], 0)
        self.assertEqual(
            loaded, self.successResultOf(self.daemon.store.load(record.sessionID))
        )

    def test_saveWithIdleTimeout(self) -> None:
        """
        A save that sets a new idle timeout is cached with it.
        """
        store = self.client()
        record = self.successResultOf(store.create())
        self.successResultOf(store.save(record.sessionID, 1, b"", idleTimeout=600))
        loaded = self.successResultOf(store.load(record.sessionID))
        self.assertEqual(loaded.idleTimeout, 600.0)
        self.assertEqual(self.daemonCounts()["loads"], 0)

    def test_invalidatedBySave(self) -> None:
        """
        When another process saves a session, this process's next load
        returns the new data.
        """
        a, b = self.client(), self.client()
        record = self.successResultOf(a.create(b"old"))
        self.successResultOf(b.load(record.sessionID))
        self.successResultOf(a.save(record.sessionID, 1, b"new"))
        loaded = self.successResultOf(b.load(record.sessionID))
        self.assertEqual((loaded.version, loaded.data), (2, b"new"))
        self.assertEqual(b.stats()["invalidations"], 1)

    def test_invalidatedByDeleteAndRotate(self) -> None:
        """
        A session deleted or rotated by another process is gone here too.
        """
        a, b = self.client(), self.client()
        one = self.successResultOf(a.create(b"1"))
        two = self.successResultOf(a.create(b"2"))
        self.successResultOf(b.load(one.sessionID))
        self.successResultOf(b.load(two.sessionID))
        self.successResultOf(a.delete(one.sessionID))
        rotated = self.successResultOf(a.rotate(two.sessionID))
        self.assertIsNone(self.successResultOf(b.load(one.sessionID)))
        self.assertIsNone(self.successResultOf(b.load(two.sessionID)))
        self.assertEqual(self.successResultOf(b.load(rotated.sessionID)).data, b"2")

    def test_conflictDropsStaleEntry(self) -> None:
        """
        A save refused as stale drops the cached record, so the re-read that
        follows sees the winner's data.
        """
        a, b = self.client(), self.client()
        record = self.successResultOf(a.create(b"base"))
        self.successResultOf(b.load(record.sessionID))
        # b misses the push (its cache is filled by hand after a's save).
        self.successResultOf(a.save(record.sessionID, 1, b"a wins"))
        b.nearCache.put(record, self.clock.seconds())
        failure = self.failureResultOf(
            b.save(record.sessionID, 1, b"b loses"), ConflictError
        )
        self.assertEqual(failure.value.current, 2)
        self.assertEqual(self.successResultOf(b.load(record.sessionID)).data, b"a wins")

    def test_expiryOnHit(self) -> None:
        """
        A cached record past its idle timeout is not served; the daemon is
        asked, and says it is gone.
        """
        store = self.client()
        record = self.successResultOf(store.create())
        self.clock.advance(59)
        self.assertIsNotNone(self.successResultOf(store.load(record.sessionID)))
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(store.load(record.sessionID)))
        self.assertEqual(self.daemonCounts()["loads"], 1)
        self.assertEqual(len(store.nearCache), 0)

    def test_touchedElsewhere(self) -> None:
        """
        A session kept alive by another process's touches is not ended by
        this process's older cached copy: past its cached idle time it is
        read again, alive, with the newer time.
        """
        a, b = self.client(), self.client()
        record = self.successResultOf(a.create())
        self.clock.advance(50)
        self.successResultOf(b.touch(record.sessionID))
        self.clock.advance(20)
        loaded = self.successResultOf(a.load(record.sessionID))
        self.assertEqual(loaded.lastSeen, START + 50)

    def test_absoluteTimeoutOnHit(self) -> None:
        """
        However recently touched, a cached record past the daemon's
        absolute timeout is not served.
        """
        store = self.client()
        record = self.successResultOf(store.create())
        for _ in range(71):
            self.clock.advance(50)
            self.successResultOf(store.touch(record.sessionID))
        self.clock.advance(49)
        self.assertIsNotNone(self.successResultOf(store.load(record.sessionID)))
        self.assertEqual(self.daemonCounts()["loads"], 0)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(store.load(record.sessionID)))

    def test_maxAge(self) -> None:
        """
        A cached record is read again once it is older than
        C{nearCacheMaxAge}, however valid it looks.
        """
        store = self.client(nearCacheMaxAge=10)
        record = self.successResultOf(store.create())
        self.clock.advance(9)
        self.successResultOf(store.load(record.sessionID))
        self.assertEqual(self.daemonCounts()["loads"], 0)
        self.clock.advance(1)
        self.successResultOf(store.load(record.sessionID))
        self.assertEqual(self.daemonCounts()["loads"], 1)

    def test_bounded(self) -> None:
        """
        The near cache keeps at most C{nearCacheEntries} records and
        C{nearCacheBytes} bytes, dropping the least recently used.
        """
        store = self.client(nearCacheEntries=2, nearCacheBytes=1000)
        one, two, three = (
            self.successResultOf(store.create(b"x" * 100)) for _ in range(3)
        )
        self.assertEqual(len(store.nearCache), 2)
        self.assertIsNone(store.nearCache.get(one.sessionID))
        # A miss brings one back; two is now the least recently used.
        self.successResultOf(store.load(one.sessionID))
        self.assertEqual(self.daemonCounts()["loads"], 1)
        self.assertIsNone(store.nearCache.get(two.sessionID))
        self.assertIsNotNone(store.nearCache.get(three.sessionID))
        big = self.successResultOf(store.create(b"y" * 950))
        self.assertEqual(len(store.nearCache), 1)
        self.assertIsNotNone(store.nearCache.get(big.sessionID))
        self.assertEqual(store.nearCache.bytes, 950)
        store.nearCache.put(attrs.evolve(big, data=b"z" * 1001, version=2), START)
        self.assertEqual((len(store.nearCache), store.nearCache.bytes), (0, 0))

    def test_turnedOff(self) -> None:
        """
        With C{nearCacheEntries=0}, every load asks the daemon.
        """
        store = self.client(nearCacheEntries=0)
        record = self.successResultOf(store.create())
        self.successResultOf(store.load(record.sessionID))
        self.successResultOf(store.load(record.sessionID))
        self.assertEqual(self.daemonCounts()["loads"], 2)

    def test_flushedOnDisconnect(self) -> None:
        """
        When the connection is lost the whole near cache is dropped: nothing
        is served from it, and after reconnecting loads go to the daemon.
        """
        store = self.client()
        record = self.successResultOf(store.create(b"kept"))
        self.assertEqual(len(store.nearCache), 1)
        self.network.dropAll()
        self.assertEqual(len(store.nearCache), 0)
        self.failureResultOf(store.load(record.sessionID), StoreUnavailableError)
        self.clock.advance(1)
        self.assertTrue(store.connected)
        self.assertEqual(
            self.successResultOf(store.load(record.sessionID)).data, b"kept"
        )
        self.assertEqual(self.daemonCounts()["loads"], 1)
        self.assertEqual(store.stats()["cacheFlushes"], 1)


class _HeldLoads:
    """
    A store whose loads answer only when the test says: the reply can then
    be made to cross a push.
    """

    def __init__(self, store: MemorySessionStore) -> None:
        self.store = store
        self.held: List[tuple[Deferred[Any], Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def load(self, sessionID: str) -> Deferred[Any]:
        result = self.store.load(sessionID)
        held: Deferred[Any] = Deferred()
        self.held.append((held, result))
        return held

    def release(self) -> None:
        """
        Answer the held loads with what the store said when they came.
        """
        held, self.held = self.held, []
        for deferred, result in held:
            result.chainDeferred(deferred)


class RaceTests(SynchronousTestCase):
    """
    A reply and an invalidation crossing never leave a stale record cached.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)

    def connect(
        self, daemon: SessionDaemonService
    ) -> tuple[MemoryNetwork, PBSessionStore, PBSessionStore]:
        """
        Two clients of C{daemon}, connected, on a network the test drives.
        """
        network = MemoryNetwork(daemon.factory)
        stores = []
        for _ in range(2):
            store = PBSessionStore(network.endpoint(), SECRET, self.clock)
            store.startService()
            self.addCleanup(store.stopService)
            stores.append(store)
        network.autoDeliver = False
        return network, stores[0], stores[1]

    def test_replyThenPush(self) -> None:
        """
        A load answered just before another process saves: the old record
        arrives first, the push right behind it drops it.
        """
        daemon = makeDaemon(self.clock)
        network, a, b = self.connect(daemon)
        network.autoDeliver = True
        record = self.successResultOf(b.create(b"v1"))
        network.autoDeliver = False
        clientA, clientB = (c for c, _, _ in network.connections)

        loading = a.load(record.sessionID)
        network.deliverToServer(clientA)
        saving = b.save(record.sessionID, 1, b"v2")
        network.deliverToServer(clientB)
        network.deliverTo(clientB)
        self.assertEqual(self.successResultOf(saving), 2)
        network.deliverTo(clientA)
        self.assertEqual(self.successResultOf(loading).data, b"v1")
        network.autoDeliver = True
        network.flush()
        self.assertEqual(self.successResultOf(a.load(record.sessionID)).data, b"v2")

    def test_pushBeforeReply(self) -> None:
        """
        A push for a newer version arriving while a load is in flight stops
        the load's older answer from being cached.
        """
        clock = self.clock
        store = _HeldLoads(
            MemorySessionStore(clock, idleTimeout=60.0, maxValueBytes=4096)
        )
        daemon = SessionDaemonService(store, SECRET, [], clock, clock, statsInterval=0)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        network, a, b = self.connect(daemon)
        network.autoDeliver = True
        record = self.successResultOf(b.create(b"v1"))

        loading = a.load(record.sessionID)
        self.assertNoResult(loading)
        self.successResultOf(b.save(record.sessionID, 1, b"v2"))
        store.release()
        self.assertEqual(self.successResultOf(loading).data, b"v1")
        self.assertIsNone(a.nearCache.get(record.sessionID))
        self.assertEqual(
            self.successResultOf(_released(store, a.load(record.sessionID))).data, b"v2"
        )

    def test_goneBeforeReply(self) -> None:
        """
        A session pushed as gone while a load is in flight is not cached
        from the load's answer.
        """
        clock = self.clock
        store = _HeldLoads(MemorySessionStore(clock, idleTimeout=60.0))
        daemon = SessionDaemonService(store, SECRET, [], clock, clock, statsInterval=0)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        network, a, b = self.connect(daemon)
        network.autoDeliver = True
        record = self.successResultOf(b.create(b"v1"))
        loading = a.load(record.sessionID)
        self.successResultOf(b.delete(record.sessionID))
        store.release()
        self.assertIsNotNone(self.successResultOf(loading))
        self.assertIsNone(a.nearCache.get(record.sessionID))

    def test_staleOwnWriteNotCached(self) -> None:
        """
        A save's answer older than a push received meanwhile is not cached.
        """
        cache = NearCache()
        record = SessionRecord("a" * 43, 2, b"", START, START, 60.0)
        cache.watch(record.sessionID)
        cache.invalidate(record.sessionID, 3)
        cache.put(record, START, cache.unwatch(record.sessionID))
        self.assertIsNone(cache.get(record.sessionID))
        cache.put(record, START)
        cache.put(SessionRecord("a" * 43, 1, b"older", START, START, 60.0), START)
        self.assertEqual(cache.get(record.sessionID), (record, START))
        self.assertFalse(cache.invalidate(record.sessionID, 2))
        self.assertTrue(cache.invalidate(record.sessionID, None))


def _released(store: _HeldLoads, result: Deferred[Any]) -> Deferred[Any]:
    store.release()
    return result


class BatchTests(ClientTestCase):
    """
    Requests made while one is in flight go out together when it is
    answered.
    """

    def recordBatches(self, daemon: Optional[SessionDaemonService] = None) -> List[int]:
        """
        The size of each batch the daemon runs, from now on.
        """
        realm = (daemon or self.daemon).realm
        sizes: List[int] = []
        runBatch = realm.runBatch

        def recording(avatar: Any, requests: List[Any]) -> Any:
            sizes.append(len(requests))
            return runBatch(avatar, requests)

        self.patch(realm, "runBatch", recording)
        return sizes

    def test_coalesced(self) -> None:
        """
        A lone request goes out at once; those made while it is in flight
        share the next message, and each gets its own answer.
        """
        store = self.client()
        sizes = self.recordBatches()
        self.network.autoDeliver = False
        calls = [store.create(str(n).encode()) for n in range(5)]
        self.network.autoDeliver = True
        self.network.flush()
        self.assertEqual(sizes, [1, 4])
        self.assertEqual(
            [self.successResultOf(call).data for call in calls],
            [b"0", b"1", b"2", b"3", b"4"],
        )

    def test_bounded(self) -> None:
        """
        A batch carries at most L{MAX_BATCH} requests and about a mebibyte.
        """
        store = self.client()
        sizes = self.recordBatches()
        self.network.autoDeliver = False
        calls = [store.create() for _ in range(MAX_BATCH + 11)]
        self.network.autoDeliver = True
        self.network.flush()
        self.assertEqual(sizes, [1, MAX_BATCH, 10])
        for call in calls:
            self.successResultOf(call)

        big = makeDaemon(self.clock, maxValueBytes=400_000, maxBytes=2**24)
        network = MemoryNetwork(big.factory)
        store = self.client(network)
        sizes = self.recordBatches(big)
        network.autoDeliver = False
        calls = [store.create()] + [store.create(b"x" * 400_000) for _ in range(4)]
        network.autoDeliver = True
        network.flush()
        self.assertEqual(sizes, [1, 2, 2])
        for call in calls:
            self.successResultOf(call)

    def test_queuedFailOnDisconnect(self) -> None:
        """
        Requests waiting behind the batch in flight fail with
        L{StoreUnavailableError} when the connection is lost.
        """
        store = self.client()
        self.network.autoDeliver = False
        calls = [store.create() for _ in range(3)]
        self.network.dropAll()
        for call in calls:
            self.failureResultOf(call, StoreUnavailableError)
        self.assertEqual(store.stats()["pending"], 0)


class LimitTests(ClientTestCase):
    """
    The client reports and enforces the daemon's limits.
    """

    def test_fromTheDaemon(self) -> None:
        """
        Limits not given are the daemon's, once logged in.
        """
        store = self.client()
        self.assertEqual(
            (store.idleTimeout, store.absoluteTimeout, store.maxValueBytes),
            (60.0, 3600.0, 4096),
        )

    def test_ownIdleTimeout(self) -> None:
        """
        An idle timeout given to the client applies to the sessions it
        creates.
        """
        store = self.client(idleTimeout=10)
        record = self.successResultOf(store.create())
        self.assertEqual((store.idleTimeout, record.idleTimeout), (10.0, 10.0))

    def test_smallerValueLimit(self) -> None:
        """
        A value limit given to the client is checked before sending; the
        daemon's still applies when it is smaller.
        """
        self.assertEqual(self.client(maxValueBytes=100).maxValueBytes, 100)
        self.assertEqual(self.client(maxValueBytes=10_000).maxValueBytes, 4096)

    def test_absoluteMismatchLogged(self) -> None:
        """
        An expected absolute timeout the daemon does not have is reported,
        and the daemon's applies.
        """
        texts = capturedLog(self)
        store = self.client(absoluteTimeout=100)
        self.assertEqual(store.absoluteTimeout, 3600.0)
        self.assertIn(
            "tlsession: the session daemon ends sessions after 3600.0 s, not the "
            "100.0 s this app was configured with; the daemon's applies",
            texts,
        )

    def test_oversizedRefusedLocally(self) -> None:
        """
        Data over the limit is refused with L{ValueTooLargeError} without a
        round trip, for creates and saves.
        """
        store = self.client()
        failure = self.failureResultOf(store.create(b"x" * 4097), ValueTooLargeError)
        self.assertEqual((failure.value.size, failure.value.limit), (4097, 4096))
        record = self.successResultOf(store.create(b"ok"))
        self.failureResultOf(
            store.save(record.sessionID, 1, b"y" * 5000), ValueTooLargeError
        )
        self.assertEqual(self.daemonCounts()["creates"], 1)
        self.assertEqual(self.successResultOf(store.load(record.sessionID)).data, b"ok")

    def test_oversizedRefusedByDaemon(self) -> None:
        """
        When the daemon's own check refuses data, the client's Deferred
        fails with L{ValueTooLargeError} too.
        """
        store = self.client()
        self.daemon.store.maxValueBytes = 10
        failure = self.failureResultOf(store.create(b"x" * 11), ValueTooLargeError)
        self.assertEqual((failure.value.size, failure.value.limit), (11, 10))

    def test_argumentsChecked(self) -> None:
        """
        Data that is not bytes and impossible idle timeouts are refused
        before sending.
        """
        store = self.client()
        self.failureResultOf(store.create("text"), TypeError)  # type: ignore[arg-type]
        self.failureResultOf(store.create(b"", idleTimeout=0), ValueError)
        self.failureResultOf(store.create(b"", idleTimeout=True), ValueError)
        self.assertEqual(self.daemonCounts()["creates"], 0)

    def test_malformedIdentifiers(self) -> None:
        """
        Identifiers that cannot have been issued never reach the daemon.
        """
        store = self.client()
        for sessionID in ["", "x", "a" * 44, "../etc/passwd"]:
            self.assertIsNone(self.successResultOf(store.load(sessionID)))
            self.failureResultOf(store.save(sessionID, 1, b""), SessionGoneError)
            self.failureResultOf(store.touch(sessionID), SessionGoneError)
            self.failureResultOf(store.rotate(sessionID), SessionGoneError)
            self.successResultOf(store.delete(sessionID))
        self.assertEqual(store.stats()["calls"], 0)


class AvailabilityTests(ClientTestCase):
    """
    While the daemon is away, calls fail at once; the client comes back on
    its own.
    """

    def test_failFastWhileDown(self) -> None:
        """
        With the daemon unreachable, every call fails at once with
        L{StoreUnavailableError} (the app answers 503).
        """
        self.network.refusing = True
        store = self.client()
        sessionID = "a" * 43
        for call in [
            store.create(),
            store.load(sessionID),
            store.save(sessionID, 1, b""),
            store.touch(sessionID),
            store.rotate(sessionID),
            store.delete(sessionID),
            store.daemonStats(),
        ]:
            failure = self.failureResultOf(call, StoreUnavailableError)
            self.assertIn("not connected to the session daemon", str(failure.value))
        self.assertEqual(store.stats()["unavailable"], 7)

    def test_reconnectsWithBackoff(self) -> None:
        """
        The client retries as its policy says, and once the daemon is back
        calls work again.
        """
        attempts: List[int] = []
        self.network.refusing = True
        store = self.client(retryPolicy=fixedDelay(2.0, attempts))
        self.clock.advance(2)
        self.clock.advance(2)
        self.assertEqual(attempts, [1, 2, 3])
        self.network.refusing = False
        self.clock.advance(2)
        self.assertTrue(store.connected)
        self.successResultOf(store.create())

    def test_daemonRestart(self) -> None:
        """
        After a daemon restart, old identifiers load as C{None} and new
        sessions work.
        """
        store = self.client()
        old = self.successResultOf(store.create(b"before"))
        self.network.dropAll()
        self.failureResultOf(store.create(), StoreUnavailableError)
        restarted = makeDaemon(self.clock)
        self.network.serverFactory = restarted.factory
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(store.load(old.sessionID)))
        new = self.successResultOf(store.create(b"after"))
        self.assertEqual(self.successResultOf(store.load(new.sessionID)).data, b"after")

    def test_inFlightCallsFail(self) -> None:
        """
        Calls waiting for an answer when the connection is lost fail with
        L{StoreUnavailableError}.
        """
        store = self.client()
        self.network.autoDeliver = False
        pending = store.create()
        self.network.dropAll()
        failure = self.failureResultOf(pending, StoreUnavailableError)
        self.assertEqual(
            str(failure.value), "lost the connection to the session daemon"
        )

    def test_callTimeout(self) -> None:
        """
        A call with no answer within C{callTimeout} fails with
        L{StoreUnavailableError}, and the connection is dropped (so the
        next calls fail at once until the client has reconnected).
        """
        store = self.client(callTimeout=2.0)
        record = self.successResultOf(store.create())
        self.network.autoDeliver = False
        pending = store.save(record.sessionID, 1, b"")
        self.clock.advance(1.9)
        self.assertNoResult(pending)
        self.clock.advance(0.1)
        failure = self.failureResultOf(pending, StoreUnavailableError)
        self.assertEqual(
            str(failure.value), "the session daemon did not answer within 2.0 s"
        )
        self.network.flush()
        self.assertFalse(store.connected)
        self.assertEqual(len(store.nearCache), 0)
        self.failureResultOf(store.load(record.sessionID), StoreUnavailableError)
        self.network.autoDeliver = True
        self.clock.advance(1)
        self.assertTrue(store.connected)
        self.assertEqual(store.stats()["timeouts"], 1)

    def test_boundedPending(self) -> None:
        """
        Beyond C{maxPendingCalls} calls waiting for answers, more fail at
        once.
        """
        store = self.client(maxPendingCalls=2)
        self.network.autoDeliver = False
        first, second = store.create(), store.create()
        failure = self.failureResultOf(store.create(), StoreUnavailableError)
        self.assertEqual(
            str(failure.value), "2 calls are already waiting for the session daemon"
        )
        self.network.autoDeliver = True
        self.network.flush()
        self.successResultOf(first)
        self.successResultOf(second)
        self.successResultOf(store.create())

    def test_loginTimeout(self) -> None:
        """
        A daemon that accepts the connection but never answers the login
        counts as a failed attempt after C{loginTimeout}.
        """
        self.network.autoDeliver = False
        store = self.client(loginTimeout=3.0)
        self.clock.advance(3)
        self.assertFalse(store.connected)
        self.network.autoDeliver = True
        self.clock.advance(1)
        self.assertTrue(store.connected)

    def test_stop(self) -> None:
        """
        Stopping the store disconnects it and leaves no timers.
        """
        store = PBSessionStore(self.network.endpoint(), SECRET, self.clock)
        store.startService()
        self.assertTrue(store.connected)
        self.successResultOf(store.stopService())
        self.assertFalse(store.connected)
        self.clock.advance(0)
        self.assertEqual(len(self.daemon.factory.connections), 0)
        # The daemon's own timers (its store's sweep) go with the daemon.
        self.successResultOf(self.daemon.stopService())
        self.assertEqual(
            [call for call in self.clock.getDelayedCalls() if call.active()], []
        )
        for call in [store.create(), store.load("a" * 43), store.daemonStats()]:
            failure = self.failureResultOf(call, StoreUnavailableError)
            self.assertEqual(str(failure.value), "the PB session store is stopped")

    def test_notStarted(self) -> None:
        """
        Building the store connects nothing; until it is started every call
        fails at once, saying so.
        """
        store = PBSessionStore(self.network.endpoint(), SECRET, self.clock)
        self.clock.advance(10)
        self.assertFalse(store.connected)
        self.assertEqual(len(self.daemon.factory.connections), 0)
        sessionID = "a" * 43
        for call in [
            store.create(),
            store.load(sessionID),
            store.save(sessionID, 1, b""),
            store.touch(sessionID),
            store.rotate(sessionID),
            store.delete(sessionID),
            store.daemonStats(),
        ]:
            failure = self.failureResultOf(call, StoreUnavailableError)
            self.assertEqual(str(failure.value), "the PB session store is not started")


class LoginRefusedTests(ClientTestCase):
    """
    A client with the wrong secret never gets in, and says why.
    """

    def test_wrongSecret(self) -> None:
        """
        The login is refused, counted and logged; calls fail at once, and
        attempts back off like refused connections.
        """
        attempts: List[int] = []
        store = self.client(
            secret=b"not the secret at all", retryPolicy=fixedDelay(5.0, attempts)
        )
        waiting = store.whenConnected(failAfterFailures=1)
        self.clock.advance(0)
        self.assertNoResult(waiting)
        self.assertFalse(store.connected)
        self.failureResultOf(store.create(), StoreUnavailableError)
        self.clock.advance(5)
        failed = self.failureResultOf(waiting, StoreUnavailableError)
        self.assertIn("refused the secret", failed.getErrorMessage())
        self.assertEqual(attempts, [1, 2])
        self.assertEqual(store.stats()["loginFailures"], 2)


class ConstructionTests(SynchronousTestCase):
    """
    The client refuses settings that would leak sessions or never work.
    """

    def test_plainEndpointRefused(self) -> None:
        """
        A C{tcp:} endpoint string is refused unless C{insecure}; unix
        sockets and TLS are fine.
        """
        clock = Clock()
        error = self.assertRaises(
            ValueError, PBSessionStore, "tcp:host=10.0.0.1:port=7100", SECRET, clock
        )
        self.assertIn("pass insecure=True", str(error))
        PBSessionStore("tcp:host=10.0.0.1:port=7100", SECRET, clock, insecure=True)
        PBSessionStore("unix:path=/run/tlsession.sock", SECRET, clock)

    def test_badSettings(self) -> None:
        """
        An empty secret and non-positive timeouts are refused.
        """
        clock = Clock()
        endpoint = "unix:path=/run/tlsession.sock"
        self.assertRaises(ValueError, PBSessionStore, endpoint, b"", clock)
        self.assertRaises(
            ValueError, PBSessionStore, endpoint, SECRET, clock, callTimeout=0
        )
        self.assertRaises(
            ValueError, PBSessionStore, endpoint, SECRET, clock, nearCacheMaxAge=-1
        )
        self.assertEqual(
            PBSessionStore(endpoint, SECRET.decode(), clock)._secret, SECRET
        )

    def test_limitsBeforeLogin(self) -> None:
        """
        Before it has heard the daemon, the client reports what it was
        given, or the daemon's defaults.
        """
        clock = Clock()
        endpoint = "unix:path=/run/tlsession.sock"
        store = PBSessionStore(endpoint, SECRET, clock)
        self.assertEqual(
            (store.idleTimeout, store.absoluteTimeout, store.maxValueBytes),
            (1800.0, 86400.0, 65536),
        )
        given = PBSessionStore(
            endpoint, SECRET, clock, idleTimeout=5, absoluteTimeout=50, maxValueBytes=10
        )
        self.assertEqual(
            (given.idleTimeout, given.absoluteTimeout, given.maxValueBytes),
            (5.0, 50.0, 10),
        )


class StatsTests(ClientTestCase):
    """
    The client's counters and the daemon's, as an operator reads them.
    """

    def test_daemonStats(self) -> None:
        """
        The daemon's statistics arrive through the client.
        """
        store = self.client()
        self.successResultOf(store.create(b"abc"))
        stats = self.successResultOf(store.daemonStats())
        self.assertEqual(
            (stats["sessions"], stats["bytes"], stats["clients"]), (1, 3, 1)
        )

    def test_clientStats(self) -> None:
        """
        The client counts calls, hits and misses.
        """
        store = self.client()
        record = self.successResultOf(store.create(b"abc"))
        self.successResultOf(store.load(record.sessionID))
        stats = store.stats()
        self.assertEqual(
            (
                stats["calls"],
                stats["nearCacheHits"],
                stats["nearCacheEntries"],
                stats["nearCacheBytes"],
                stats["connected"],
            ),
            (1, 1, 1, 3, True),
        )
