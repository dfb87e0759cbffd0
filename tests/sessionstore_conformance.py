"""
The conformance suite every L{tlsession.interfaces.ISessionStore} passes.

A test module mixes L{SessionStoreConformance} into a
L{twisted.trial.unittest.TestCase} and implements C{createStore} (and
C{whenStoreReady}, for a store that connects in the background); the suite
starts and stops the store as a service, and uses it in between. The store
takes its time from the C{clock} it is given, so expiry is driven by
advancing that clock, even for stores on real servers (their own TTLs only
reclaim space; expiry is enforced on read, by the store's clock).
"""

from __future__ import annotations

import json
import re
from typing import Any, List, Tuple

from twisted.application.service import IService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel
from zope.interface.verify import verifyObject

from tlsession.interfaces import (
    ConflictError,
    ISessionStore,
    SessionGoneError,
    SessionRecord,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.manager import SessionCommitError, SessionManager
from tlsession.session import Session

IDLE = 60.0
ABSOLUTE = 3600.0
MAX_BYTES = 4096

_ID = re.compile(r"^[A-Za-z0-9_-]{43,}$")

MALFORMED_IDS = [
    "",
    "x",
    "../../etc/passwd",
    "a" * 5000,
    "abc\x00def",
    "caf\u00e9" * 11,
    "sess:*",
    "' OR 1=1 --",
    "a b c",
]


#: Concurrent requests of one session in the lost-update tests.
REQUESTS = 24

#: The processes (managers) those requests are spread over.
PROCESSES = 3


def sessionRequest(sessionID: str) -> Request:
    """
    A twisted.web request whose cookie names C{sessionID}.
    """
    request = Request(DummyChannel())
    request.method = b"GET"
    request.uri = request.path = b"/"
    request.clientproto = b"HTTP/1.1"
    request.requestHeaders.addRawHeader(b"cookie", b"TLSESSION=" + sessionID.encode())
    return request


class SessionStoreConformance:
    """
    Mixin for a trial C{TestCase}: the behaviour every session store shares.
    """

    def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> Any:
        """
        Build the store under test (or a L{Deferred} of it), using C{clock}
        for every timestamp it keeps, and do not start it: the suite uses
        it only through C{startService} and C{stopService}. Cleanups of
        anything else (servers, files) are the subclass's job.
        """
        raise NotImplementedError(f"{type(self).__name__} must build a store")

    def whenStoreReady(self, store: Any) -> Any:
        """
        Wait, after C{startService}, until the store can take calls: return
        a L{Deferred}, or C{None} when it can at once. Stores that connect
        in the background override this to wait for the connection.
        """
        return None

    async def unstartedStore(
        self,
        idleTimeout: float = IDLE,
        absoluteTimeout: float = ABSOLUTE,
        maxValueBytes: int = MAX_BYTES,
    ) -> Any:
        """
        A fresh store, not started, and its clock (as C{self.clock}).
        """
        self.clock = Clock()
        self.clock.advance(1_000_000)
        return await maybeDeferred(
            self.createStore, self.clock, idleTimeout, absoluteTimeout, maxValueBytes
        )

    async def store(
        self,
        idleTimeout: float = IDLE,
        absoluteTimeout: float = ABSOLUTE,
        maxValueBytes: int = MAX_BYTES,
    ) -> Any:
        """
        A fresh store, started (and stopped when the test ends), and its
        clock (as C{self.clock}).
        """
        store = await self.unstartedStore(idleTimeout, absoluteTimeout, maxValueBytes)
        store.startService()
        self.addCleanup(store.stopService)
        await maybeDeferred(self.whenStoreReady, store)
        return store

    async def test_lifecycle(self) -> None:
        """
        The store is an L{IService}: every call fails with
        L{StoreUnavailableError} before C{startService} and after
        C{stopService}, whose L{Deferred} fires once the store has let go
        of what it held.
        """
        store = await self.unstartedStore()
        self.assertTrue(verifyObject(IService, store))
        sessionID = "A" * 43
        calls = [
            lambda: store.create(b""),
            lambda: store.load(sessionID),
            lambda: store.save(sessionID, 1, b""),
            lambda: store.touch(sessionID),
            lambda: store.rotate(sessionID),
            lambda: store.delete(sessionID),
        ]
        for call in calls:
            with self.assertRaises(StoreUnavailableError):
                await call()
        store.startService()
        await maybeDeferred(self.whenStoreReady, store)
        record = await store.create(b"x")
        stopped = store.stopService()
        self.assertIsInstance(stopped, Deferred)
        await stopped
        self.assertFalse(store.running)
        for call in [*calls, lambda: store.load(record.sessionID)]:
            with self.assertRaises(StoreUnavailableError):
                await call()

    async def test_interface(self) -> None:
        """
        The store provides L{ISessionStore} and says its limits.
        """
        store = await self.store()
        self.assertTrue(verifyObject(ISessionStore, store))
        self.assertEqual(
            (store.idleTimeout, store.absoluteTimeout, store.maxValueBytes),
            (IDLE, ABSOLUTE, MAX_BYTES),
        )

    async def test_createAndLoad(self) -> None:
        """
        A created session loads back with its data, version 1 and its times.
        """
        store = await self.store()
        record = await store.create(b'{"a": 1}')
        self.assertIsInstance(record, SessionRecord)
        self.assertEqual((record.version, record.data), (1, b'{"a": 1}'))
        self.assertEqual(record.created, self.clock.seconds())
        self.assertEqual(record.idleTimeout, IDLE)
        loaded = await store.load(record.sessionID)
        self.assertEqual(loaded, record)

    async def test_identifiers(self) -> None:
        """
        Identifiers are URL-safe, at least 256 bits (43 characters) long, and
        never repeat.
        """
        store = await self.store()
        ids = set()
        for _ in range(50):
            record = await store.create()
            self.assertRegex(record.sessionID, _ID)
            ids.add(record.sessionID)
        self.assertEqual(len(ids), 50)

    async def test_unknownAndMalformed(self) -> None:
        """
        Unknown and malformed identifiers load as C{None}, without errors.
        """
        store = await self.store()
        unknown = (await store.create()).sessionID[::-1]
        for sessionID in [unknown, *MALFORMED_IDS]:
            self.assertIsNone(await store.load(sessionID), repr(sessionID))

    async def test_saveBumpsVersion(self) -> None:
        """
        A save with the current version replaces the data and returns the
        next version.
        """
        store = await self.store()
        record = await store.create(b"one")
        self.assertEqual(await store.save(record.sessionID, 1, b"two"), 2)
        self.assertEqual(await store.save(record.sessionID, 2, b"three"), 3)
        loaded = await store.load(record.sessionID)
        self.assertEqual((loaded.version, loaded.data), (3, b"three"))

    async def test_staleSaveConflicts(self) -> None:
        """
        Of two saves from the same version, the second fails with
        L{ConflictError} and the first one's data stays.
        """
        store = await self.store()
        record = await store.create(b"base")
        await store.save(record.sessionID, 1, b"first")
        with self.assertRaises(ConflictError):
            await store.save(record.sessionID, 1, b"second")
        loaded = await store.load(record.sessionID)
        self.assertEqual((loaded.version, loaded.data), (2, b"first"))

    async def test_saveAfterDelete(self) -> None:
        """
        Saving a session deleted meanwhile fails with L{SessionGoneError}
        and does not bring it back.
        """
        store = await self.store()
        record = await store.create(b"data")
        await store.delete(record.sessionID)
        with self.assertRaises(SessionGoneError):
            await store.save(record.sessionID, 1, b"resurrected?")
        self.assertIsNone(await store.load(record.sessionID))

    async def test_saveUnknown(self) -> None:
        """
        Saving an identifier the store never issued fails with
        L{SessionGoneError} and creates nothing.
        """
        store = await self.store()
        sessionID = (await store.create()).sessionID[::-1]
        with self.assertRaises(SessionGoneError):
            await store.save(sessionID, 1, b"x")
        self.assertIsNone(await store.load(sessionID))

    async def test_deleteIsIdempotent(self) -> None:
        """
        Deleting twice, or deleting an unknown session, is fine.
        """
        store = await self.store()
        record = await store.create()
        await store.delete(record.sessionID)
        await store.delete(record.sessionID)
        await store.delete("no-such-session")
        self.assertIsNone(await store.load(record.sessionID))

    async def test_rotate(self) -> None:
        """
        Rotation moves the data to a new identifier; the old one stops
        working at once, for loads and saves.
        """
        store = await self.store()
        record = await store.create(b"secret")
        await store.save(record.sessionID, 1, b"logged in")
        rotated = await store.rotate(record.sessionID)
        self.assertNotEqual(rotated.sessionID, record.sessionID)
        self.assertRegex(rotated.sessionID, _ID)
        self.assertEqual(rotated.data, b"logged in")
        self.assertEqual(await store.load(rotated.sessionID), rotated)
        self.assertIsNone(await store.load(record.sessionID))
        with self.assertRaises(SessionGoneError):
            await store.save(record.sessionID, 2, b"old id")
        self.assertEqual(
            await store.save(rotated.sessionID, rotated.version, b"new id"),
            rotated.version + 1,
        )

    async def test_rotateMissing(self) -> None:
        """
        Rotating a missing session fails with L{SessionGoneError}.
        """
        store = await self.store()
        with self.assertRaises(SessionGoneError):
            await store.rotate("no-such-session")

    async def test_idleExpiry(self) -> None:
        """
        A session idle for longer than its idle timeout is gone, on read,
        whether or not it was swept.
        """
        store = await self.store()
        record = await store.create(b"x")
        self.clock.advance(IDLE - 1)
        self.assertIsNotNone(await store.load(record.sessionID))
        self.clock.advance(2)
        self.assertIsNone(await store.load(record.sessionID))
        with self.assertRaises(SessionGoneError):
            await store.save(record.sessionID, 1, b"late")
        with self.assertRaises(SessionGoneError):
            await store.touch(record.sessionID)

    async def test_readingIsNotActivity(self) -> None:
        """
        Loading a session does not restart its idle timeout (the manager
        touches it when it should).
        """
        store = await self.store()
        record = await store.create()
        for _ in range(3):
            self.clock.advance(IDLE / 2)
            await store.load(record.sessionID)
        self.assertIsNone(await store.load(record.sessionID))

    async def test_touchAndSaveRestartIdle(self) -> None:
        """
        Touching or saving restarts the idle timeout.
        """
        store = await self.store()
        record = await store.create()
        self.clock.advance(IDLE - 1)
        await store.touch(record.sessionID)
        self.clock.advance(IDLE - 1)
        await store.save(record.sessionID, 1, b"saved")
        self.clock.advance(IDLE - 1)
        loaded = await store.load(record.sessionID)
        self.assertEqual(loaded.data, b"saved")
        self.assertEqual(loaded.lastSeen, self.clock.seconds() - (IDLE - 1))

    async def test_absoluteExpiry(self) -> None:
        """
        However active, a session ends at the absolute timeout.
        """
        store = await self.store(idleTimeout=60, absoluteTimeout=200)
        record = await store.create()
        for _ in range(4):
            self.clock.advance(45)
            await store.touch(record.sessionID)
        self.clock.advance(21)
        self.assertIsNone(await store.load(record.sessionID))
        with self.assertRaises(SessionGoneError):
            await store.touch(record.sessionID)

    async def test_perSessionIdleTimeout(self) -> None:
        """
        A session can have its own idle timeout, set at creation or by a
        save.
        """
        store = await self.store()
        short = await store.create(idleTimeout=10)
        self.assertEqual(short.idleTimeout, 10)
        longer = await store.create()
        await store.save(longer.sessionID, 1, b"", idleTimeout=600)
        self.clock.advance(100)
        self.assertIsNone(await store.load(short.sessionID))
        loaded = await store.load(longer.sessionID)
        self.assertEqual(loaded.idleTimeout, 600)

    async def test_oversizedValue(self) -> None:
        """
        Data over the store's limit is refused with L{ValueTooLargeError},
        and the stored data is unchanged.
        """
        store = await self.store(maxValueBytes=1024)
        with self.assertRaises(ValueTooLargeError):
            await store.create(b"x" * 1025)
        record = await store.create(b"x" * 1024)
        with self.assertRaises(ValueTooLargeError):
            await store.save(record.sessionID, 1, b"y" * 1025)
        loaded = await store.load(record.sessionID)
        self.assertEqual((loaded.version, loaded.data), (1, b"x" * 1024))

    async def test_binaryData(self) -> None:
        """
        Every byte value survives the round trip.
        """
        store = await self.store()
        data = bytes(range(256)) * 4
        record = await store.create(data)
        self.assertEqual((await store.load(record.sessionID)).data, data)
        await store.save(record.sessionID, 1, data[::-1])
        self.assertEqual((await store.load(record.sessionID)).data, data[::-1])

    async def test_sessionsAreSeparate(self) -> None:
        """
        Saving or deleting one session leaves the others alone.
        """
        store = await self.store()
        a = await store.create(b"a")
        b = await store.create(b"b")
        await store.save(a.sessionID, 1, b"a2")
        await store.delete(a.sessionID)
        loaded = await store.load(b.sessionID)
        self.assertEqual((loaded.version, loaded.data), (1, b"b"))

    # Through a SessionManager: no update is reported saved and then lost.

    async def loadedRequests(
        self, store: Any, data: bytes, **managerOptions: Any
    ) -> Tuple[str, List[Tuple[SessionManager, Request, Session]]]:
        """
        A session holding C{data}, and L{REQUESTS} requests of it spread over
        L{PROCESSES} managers, all loaded before any commits.
        """
        sessionID = (await store.create(data)).sessionID
        managers = [
            SessionManager(store, self.clock, **managerOptions)
            for _ in range(PROCESSES)
        ]
        loaded = []
        for index in range(REQUESTS):
            manager = managers[index % PROCESSES]
            request = sessionRequest(sessionID)
            session = await manager.sessionForRequest(request)
            loaded.append((manager, request, session))
        return sessionID, loaded

    async def commitAll(
        self, loaded: List[Tuple[SessionManager, Request, Session]]
    ) -> List[str]:
        """
        Commit every request at once; C{"saved"} or the failure's reason
        for each.
        """
        results = await DeferredList(
            [manager.commit(request) for manager, request, _ in loaded],
            consumeErrors=True,
        )
        outcomes = []
        for ok, result in results:
            if ok:
                outcomes.append("saved")
            else:
                assert isinstance(result, Failure)
                result.trap(SessionCommitError)
                outcomes.append(result.value.reason)
        return outcomes

    async def storedCount(self, store: Any, sessionID: str) -> int:
        """
        The counter C{n} the store holds for C{sessionID}.
        """
        record = await store.load(sessionID)
        count: int = json.loads(record.data)["n"]
        return count

    async def test_plainIncrementsNeverLost(self) -> None:
        """
        Concurrent requests that each write a counter read plus one: every
        request told its change was saved counted, and the others failed
        as conflicts.
        """
        store = await self.store()
        sessionID, loaded = await self.loadedRequests(store, b'{"n":0}')
        for _, _, session in loaded:
            session["n"] = session["n"] + 1
        outcomes = await self.commitAll(loaded)
        self.assertEqual(set(outcomes) - {"saved", "conflict"}, set())
        self.assertEqual(
            await self.storedCount(store, sessionID), outcomes.count("saved")
        )
        self.assertGreaterEqual(outcomes.count("saved"), 1)

    async def test_atomicIncrementsAllCount(self) -> None:
        """
        Concurrent requests that count with C{session.increment} all
        succeed (given retries enough for every process to lose each time),
        and the counter is their number.
        """
        store = await self.store()
        sessionID, loaded = await self.loadedRequests(
            store, b'{"n":0}', maxRetries=REQUESTS
        )
        for _, _, session in loaded:
            session.increment("n")
        outcomes = await self.commitAll(loaded)
        self.assertEqual(outcomes, ["saved"] * REQUESTS)
        self.assertEqual(await self.storedCount(store, sessionID), REQUESTS)

    async def test_atomicIncrementsDefaultRetries(self) -> None:
        """
        With the default retries, concurrent C{increment}s may fail as
        conflicts, but the counter is exactly the number of successes.
        """
        store = await self.store()
        sessionID, loaded = await self.loadedRequests(store, b'{"n":0}')
        for _, _, session in loaded:
            session.increment("n")
        outcomes = await self.commitAll(loaded)
        self.assertEqual(set(outcomes) - {"saved", "conflict"}, set())
        self.assertEqual(
            await self.storedCount(store, sessionID), outcomes.count("saved")
        )

    async def test_sameKeyConflictsDisjointKeysMerge(self) -> None:
        """
        Two processes that load one session: the later commit of a key the
        earlier one changed fails; writes to other keys are kept.
        """
        store = await self.store()
        sessionID = (await store.create(b'{"a":0,"b":0}')).sessionID
        first, second, third = (SessionManager(store, self.clock) for _ in range(3))
        requests = [sessionRequest(sessionID) for _ in range(3)]
        sessions = [
            await manager.sessionForRequest(request)
            for manager, request in zip((first, second, third), requests)
        ]
        sessions[0]["a"] = 1
        sessions[1]["b"] = 2
        sessions[2]["a"] = 3
        await first.commit(requests[0])
        await second.commit(requests[1])
        with self.assertRaises(SessionCommitError) as raised:
            await third.commit(requests[2])
        self.assertEqual(raised.exception.reason, "conflict")
        record = await store.load(sessionID)
        self.assertEqual(json.loads(record.data), {"a": 1, "b": 2})
