"""
Tests for L{tlsession.stores.memcache}, with Twisted's memcached protocol
talking to an in-memory transport: what the store sends (how many round
trips, which compare-and-swap) and what it makes of every answer.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.sessionstore_conformance import MALFORMED_IDS
from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    SessionRecord,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.stores._checks import InvalidArgumentError
from tlsession.stores.memcache import MemcacheSessionStore

NOW = 1_000_000.0

_STORAGE = re.compile(rb"(add|set|cas) (\S+) (\d+) (-?\d+) (\d+)(?: (\S+))?\r\n")


class MemcacheWire:
    """
    A connected memcached client protocol on a L{StringTransport}, seen from
    the server: the commands it sent, and answers fed back.
    """

    def __init__(self, protocol: Any, transport: StringTransport) -> None:
        self.protocol = protocol
        self.transport = transport

    def sent(self) -> List[Tuple[bytes, ...]]:
        """
        The commands written since the last call: C{(name, key)} for reads
        and deletes, C{(name, key, exptime, cas, value)} for stores.
        """
        data = self.transport.value()
        self.transport.clear()
        commands: List[Tuple[bytes, ...]] = []
        while data:
            match = _STORAGE.match(data)
            if match:
                name, key, _, exptime, length, cas = match.groups()
                start = match.end()
                value = data[start : start + int(length)]
                data = data[start + int(length) + 2 :]
                commands.append((name, key, exptime, cas or b"", value))
            else:
                line, data = data.split(b"\r\n", 1)
                commands.append(tuple(line.split(b" ")))
        return commands

    def reply(self, data: bytes) -> None:
        """
        Feed the server's answer.
        """
        self.protocol.dataReceived(data)

    def value(self, key: bytes, value: bytes, cas: bytes = b"77") -> None:
        """
        Answer a C{gets} with an item.
        """
        self.reply(b"VALUE %s 0 %d %s\r\n%s\r\nEND\r\n" % (key, len(value), cas, value))


@implementer(IStreamClientEndpoint)
class WireEndpoint:
    """
    Connects each protocol to a new L{StringTransport} at once, or, while
    C{down}, fails to connect.

    @ivar wires: a L{MemcacheWire} per connection made, oldest first.
    """

    def __init__(self) -> None:
        self.wires: List[MemcacheWire] = []
        self.down = False

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        """
        Build and connect a protocol.
        """
        if self.down:
            return fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.wires.append(MemcacheWire(protocol, transport))
        return succeed(protocol)


def startedStore(
    testCase: SynchronousTestCase, clock: Clock, **options: Any
) -> Tuple[MemcacheSessionStore, MemcacheWire]:
    """
    A store connected to a wire, stopped when the test ends.
    """
    endpoint = WireEndpoint()
    store = MemcacheSessionStore(endpoint, clock, **options)
    store.startService()
    testCase.addCleanup(store.stopService)
    [wire] = endpoint.wires
    return store, wire


class MemcacheStoreTests(SynchronousTestCase):
    """
    L{MemcacheSessionStore} over one connection.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = self.makeStore()
        self.sessionID = secrets.token_urlsafe(32)
        self.key = b"tlsession:" + self.sessionID.encode()

    def makeStore(self, **options: Any) -> MemcacheSessionStore:
        """
        A started store with small round limits, on a wire of its own that
        becomes C{self.wire}.
        """
        settings: Dict[str, Any] = {
            "idleTimeout": 60,
            "absoluteTimeout": 3600,
            "maxValueBytes": 100,
            "reclaimMargin": 5,
        }
        settings.update(options)
        store, self.wire = startedStore(self, self.clock, **settings)
        return store

    def storedValue(
        self, data: bytes = b"data", idleTimeout: float = 60, version: int = 1
    ) -> bytes:
        """
        The item value a store writes for a session at C{version}, taken off
        the wire (so the tests read what a store really writes).
        """
        store, writer = startedStore(self, self.clock)
        d = store.create(data, idleTimeout=idleTimeout)
        [(_, key, _, _, value)] = writer.sent()
        writer.reply(b"STORED\r\n")
        sessionID = self.successResultOf(d).sessionID
        for current in range(1, version):
            store.save(sessionID, current, data)
            writer.sent()
            writer.value(key, value)
            [(_, _, _, _, value)] = writer.sent()
            writer.reply(b"STORED\r\n")
        return value

    def loaded(self, value: bytes, cas: bytes = b"77") -> Optional[SessionRecord]:
        """
        Load C{self.sessionID}, answering the C{gets} with C{value}.
        """
        d = self.store.load(self.sessionID)
        self.assertEqual(self.wire.sent(), [(b"gets", self.key)])
        self.wire.value(self.key, value, cas)
        return self.successResultOf(d)

    def test_createAndLoadRoundTrip(self) -> None:
        """
        A session one process creates (with C{add}) loads in another with
        one C{gets}, with the same data, times and timeouts.
        """
        d = self.store.create(b"\x00hello\xff", idleTimeout=30)
        [(name, key, exptime, cas, value)] = self.wire.sent()
        self.assertEqual((name, exptime, cas), (b"add", b"35", b""))
        self.wire.reply(b"STORED\r\n")
        created = self.successResultOf(d)
        self.assertEqual(key, b"tlsession:" + created.sessionID.encode())

        self.clock.advance(10)
        other = self.makeStore()
        d = other.load(created.sessionID)
        self.assertEqual(self.wire.sent(), [(b"gets", key)])
        self.wire.value(key, value)
        self.assertEqual(self.successResultOf(d), created)
        self.assertEqual(
            (created.version, created.data, created.created, created.idleTimeout),
            (1, b"\x00hello\xff", NOW, 30),
        )

    def test_createCollision(self) -> None:
        """
        When C{add} finds the identifier taken (practically never), the store
        draws another instead of overwriting someone's session.
        """
        d = self.store.create(b"x")
        [first] = self.wire.sent()
        self.wire.reply(b"NOT_STORED\r\n")
        [second] = self.wire.sent()
        self.assertEqual(second[0], b"add")
        self.assertNotEqual(first[1], second[1])
        self.wire.reply(b"STORED\r\n")
        self.assertEqual(
            b"tlsession:" + self.successResultOf(d).sessionID.encode(), second[1]
        )

    def test_itemExpiry(self) -> None:
        """
        The item expires at the session's own end plus the margin: its idle
        timeout, or what is left of the absolute timeout when that is
        sooner, and never past memcached's 30-day limit on relative expiry.
        """
        self.store.create(b"")
        self.assertEqual(self.wire.sent()[0][2], b"65")
        store = self.makeStore(idleTimeout=7200, reclaimMargin=0.5)
        store.create(b"")
        self.assertEqual(self.wire.sent()[0][2], b"3601")
        store = self.makeStore(idleTimeout=90 * 86400, absoluteTimeout=365 * 86400)
        store.create(b"")
        self.assertEqual(self.wire.sent()[0][2], b"2592000")

    def test_loadMissingOrForeign(self) -> None:
        """
        A missing item, a rotated session's tombstone, and a value some other
        program stored under the prefix all load as C{None}.
        """
        d = self.store.load(self.sessionID)
        self.wire.sent()
        self.wire.reply(b"END\r\n")
        self.assertIsNone(self.successResultOf(d))
        foreign = b"\x01" + bytes(range(64))
        for value in [b"tls0", b"", b"plain text from someone else", foreign]:
            self.assertIsNone(self.loaded(value))

    def test_loadExpired(self) -> None:
        """
        A session still in memcached (its item outlives it by the margin)
        but idle for longer than its timeout loads as C{None}.
        """
        value = self.storedValue()
        self.clock.advance(60)
        self.assertIsNotNone(self.loaded(value))
        self.clock.advance(0.5)
        self.assertIsNone(self.loaded(value))

    def test_saveAfterLoadIsOneRoundTrip(self) -> None:
        """
        A save right after a load sends one C{cas}, naming the cas unique
        the load saw, with the next version and the new data.
        """
        self.loaded(self.storedValue(), cas=b"4242")
        self.clock.advance(3)
        d = self.store.save(self.sessionID, 1, b"new")
        [(name, key, exptime, cas, value)] = self.wire.sent()
        self.assertEqual((name, key, exptime, cas), (b"cas", self.key, b"65", b"4242"))
        self.wire.reply(b"STORED\r\n")
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(
            self.loaded(value),
            SessionRecord(self.sessionID, 2, b"new", NOW, NOW + 3, 60),
        )

    def test_saveWithoutLoad(self) -> None:
        """
        A save with nothing remembered reads the item first (C{gets}), then
        swaps it; a new idle timeout is stored with it.
        """
        d = self.store.save(self.sessionID, 1, b"new", idleTimeout=600)
        self.assertEqual(self.wire.sent(), [(b"gets", self.key)])
        self.wire.value(self.key, self.storedValue(), b"9")
        [(name, _, exptime, cas, value)] = self.wire.sent()
        self.assertEqual((name, exptime, cas), (b"cas", b"605", b"9"))
        self.wire.reply(b"STORED\r\n")
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(self.loaded(value).idleTimeout, 600)

    def test_saveLosesRace(self) -> None:
        """
        When another request saved in between (C{cas} answers C{EXISTS}),
        the store reads the item again and fails with L{ConflictError}
        carrying the version now stored.
        """
        self.loaded(self.storedValue())
        d = self.store.save(self.sessionID, 1, b"mine")
        self.wire.sent()
        self.wire.reply(b"EXISTS\r\n")
        self.assertEqual(self.wire.sent(), [(b"gets", self.key)])
        self.wire.value(self.key, self.storedValue(b"theirs", version=2), b"78")
        conflict = self.failureResultOf(d, ConflictError).value
        self.assertEqual((conflict.expected, conflict.current), (1, 2))
        self.assertEqual(self.wire.sent(), [])

    def test_saveAfterDelete(self) -> None:
        """
        When the session was deleted in between (C{cas} answers
        C{NOT_FOUND}), the save fails with L{SessionGoneError} and stores
        nothing.
        """
        self.loaded(self.storedValue())
        d = self.store.save(self.sessionID, 1, b"mine")
        self.wire.sent()
        self.wire.reply(b"NOT_FOUND\r\n")
        self.assertEqual(self.wire.sent(), [(b"gets", self.key)])
        self.wire.reply(b"END\r\n")
        self.failureResultOf(d, SessionGoneError)
        self.assertEqual(self.wire.sent(), [])

    def test_saveStaleVersion(self) -> None:
        """
        A save from an older version than stored fails with
        L{ConflictError} without writing.
        """
        self.loaded(self.storedValue())
        d = self.store.save(self.sessionID, 5, b"stale")
        self.assertEqual(self.wire.sent(), [(b"gets", self.key)])
        self.wire.value(self.key, self.storedValue())
        self.assertEqual(self.failureResultOf(d, ConflictError).value.current, 1)
        self.assertEqual(self.wire.sent(), [])

    def test_saveExpiredSinceLoad(self) -> None:
        """
        A session that expired after it was loaded cannot be saved: the
        store reads it again (it might have been touched elsewhere) and
        fails with L{SessionGoneError}.
        """
        value = self.storedValue()
        self.loaded(value)
        self.clock.advance(61)
        d = self.store.save(self.sessionID, 1, b"late")
        self.assertEqual(self.wire.sent(), [(b"gets", self.key)])
        self.wire.value(self.key, value)
        self.failureResultOf(d, SessionGoneError)
        self.assertEqual(self.wire.sent(), [])

    def test_touchRetriesAfterConcurrentTouch(self) -> None:
        """
        A touch that loses its C{cas} to another touch (same version) reads
        again and tries once more, and keeps the data and version.
        """
        value = self.storedValue(b"keep me")
        self.clock.advance(30)
        d = self.store.touch(self.sessionID)
        self.wire.sent()
        self.wire.value(self.key, value, b"1")
        [(name, _, _, cas, _)] = self.wire.sent()
        self.assertEqual((name, cas), (b"cas", b"1"))
        self.wire.reply(b"EXISTS\r\n")
        self.wire.sent()
        self.wire.value(self.key, value, b"2")
        [(name, _, exptime, cas, touched)] = self.wire.sent()
        self.assertEqual((name, exptime, cas), (b"cas", b"65", b"2"))
        self.wire.reply(b"STORED\r\n")
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(
            self.loaded(touched),
            SessionRecord(self.sessionID, 1, b"keep me", NOW, NOW + 30, 60),
        )

    def test_touchMissing(self) -> None:
        """
        Touching a missing session fails with L{SessionGoneError}.
        """
        d = self.store.touch(self.sessionID)
        self.wire.sent()
        self.wire.reply(b"END\r\n")
        self.failureResultOf(d, SessionGoneError)

    def test_rotate(self) -> None:
        """
        Rotation adds the session under a new key, then removes the old item
        with a C{cas} that expires it at once (so a save on the old
        identifier in between is not lost); the record keeps its data and
        version.
        """
        value = self.storedValue(b"logged in")
        self.clock.advance(10)
        d = self.store.rotate(self.sessionID)
        self.assertEqual(self.wire.sent(), [(b"gets", self.key)])
        self.wire.value(self.key, value, b"31")
        [(name, newKey, exptime, _, moved)] = self.wire.sent()
        self.assertEqual((name, exptime), (b"add", b"65"))
        self.wire.reply(b"STORED\r\n")
        [(name, key, exptime, cas, tombstone)] = self.wire.sent()
        self.assertEqual(
            (name, key, exptime, cas, tombstone),
            (b"cas", self.key, b"-1", b"31", b"tls0"),
        )
        self.wire.reply(b"STORED\r\n")
        record = self.successResultOf(d)
        self.assertEqual(b"tlsession:" + record.sessionID.encode(), newKey)
        self.assertEqual(
            record,
            SessionRecord(record.sessionID, 1, b"logged in", NOW, NOW + 10, 60),
        )
        self.sessionID, self.key = record.sessionID, newKey
        self.assertEqual(self.loaded(moved), record)

    def test_rotateRacesSave(self) -> None:
        """
        When the old item changed between the read and the removal (a save
        landed), the new item is deleted and the rotation starts over with
        the saved data.
        """
        d = self.store.rotate(self.sessionID)
        self.wire.sent()
        self.wire.value(self.key, self.storedValue(b"old"), b"1")
        [(_, firstNewKey, _, _, _)] = self.wire.sent()
        self.wire.reply(b"STORED\r\n")
        self.wire.sent()
        self.wire.reply(b"EXISTS\r\n")
        self.assertEqual(self.wire.sent(), [(b"delete", firstNewKey)])
        self.wire.reply(b"DELETED\r\n")
        self.assertEqual(self.wire.sent(), [(b"gets", self.key)])
        self.wire.value(self.key, self.storedValue(b"saved meanwhile"), b"2")
        [(_, newKey, _, _, _)] = self.wire.sent()
        self.wire.reply(b"STORED\r\n")
        self.wire.sent()
        self.wire.reply(b"STORED\r\n")
        record = self.successResultOf(d)
        self.assertEqual(record.data, b"saved meanwhile")
        self.assertEqual(b"tlsession:" + record.sessionID.encode(), newKey)

    def test_rotateMissing(self) -> None:
        """
        Rotating a missing session fails with L{SessionGoneError} and adds
        nothing.
        """
        d = self.store.rotate(self.sessionID)
        self.wire.sent()
        self.wire.reply(b"END\r\n")
        self.failureResultOf(d, SessionGoneError)
        self.assertEqual(self.wire.sent(), [])

    def test_delete(self) -> None:
        """
        Delete is one C{delete}, fine whether or not the item existed, and
        forgets what the store remembered about the session.
        """
        self.loaded(self.storedValue())
        for answer in [b"DELETED\r\n", b"NOT_FOUND\r\n"]:
            d = self.store.delete(self.sessionID)
            self.assertEqual(self.wire.sent(), [(b"delete", self.key)])
            self.wire.reply(answer)
            self.assertIsNone(self.successResultOf(d))
        self.store.save(self.sessionID, 1, b"")
        self.assertEqual(self.wire.sent(), [(b"gets", self.key)])

    def test_casMemoryBounded(self) -> None:
        """
        The store remembers the cas uniques of only the last C{casCacheSize}
        loads; an older session's save reads it again.
        """
        self.store = self.makeStore(casCacheSize=2)
        ids = [secrets.token_urlsafe(32) for _ in range(3)]
        for sessionID in ids:
            self.sessionID = sessionID
            self.key = b"tlsession:" + sessionID.encode()
            self.loaded(self.storedValue())
        self.store.save(ids[0], 1, b"")
        self.assertEqual(self.wire.sent()[0][0], b"gets")
        self.store.save(ids[2], 1, b"")
        self.assertEqual(self.wire.sent()[0][0], b"cas")

    def test_malformedIdentifiersNeverSent(self) -> None:
        """
        Malformed identifiers are unknown without a word to the server.
        """
        for sessionID in [*MALFORMED_IDS, "no-such-session", self.sessionID + "\n"]:
            self.assertIsNone(self.successResultOf(self.store.load(sessionID)))
            self.assertIsNone(self.successResultOf(self.store.delete(sessionID)))
            for d in [
                self.store.save(sessionID, 1, b""),
                self.store.touch(sessionID),
                self.store.rotate(sessionID),
            ]:
                self.failureResultOf(d, SessionGoneError)
        self.assertEqual(self.wire.transport.value(), b"")

    def test_oversizedData(self) -> None:
        """
        Data over C{maxValueBytes} is refused with L{ValueTooLargeError}
        before anything is sent.
        """
        self.failureResultOf(self.store.create(b"x" * 101), ValueTooLargeError)
        self.failureResultOf(
            self.store.save(self.sessionID, 1, b"x" * 101), ValueTooLargeError
        )
        self.assertEqual(self.wire.transport.value(), b"")

    def test_serverError(self) -> None:
        """
        An error from memcached (out of memory, item too large) fails the
        call with L{StoreUnavailableError} that says why.
        """
        d = self.store.create(b"x")
        self.wire.sent()
        self.wire.reply(b"SERVER_ERROR out of memory storing object\r\n")
        failure = self.failureResultOf(d, StoreUnavailableError)
        self.assertIn("out of memory", str(failure.value))
        self.flushLoggedErrors()

    def test_connectionLost(self) -> None:
        """
        Calls waiting for an answer when the connection drops, and calls
        made after, fail with L{StoreUnavailableError}.
        """
        d = self.store.load(self.sessionID)
        self.wire.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, StoreUnavailableError)
        self.assertFalse(self.store.isConnected())
        self.failureResultOf(self.store.load(self.sessionID), StoreUnavailableError)

    def test_replyTimeout(self) -> None:
        """
        A server that does not answer within the protocol's timeout fails
        the call with L{StoreUnavailableError}.
        """
        d = self.store.load(self.sessionID)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.failureResultOf(d, StoreUnavailableError)

    def test_badSettings(self) -> None:
        """
        Prefixes that cannot start a memcached key, and timeouts that are not
        positive and finite, are refused.
        """
        for options in [
            {"prefix": "has space:"},
            {"prefix": "x" * 250},
            {"idleTimeout": 0},
            {"absoluteTimeout": float("nan")},
            {"maxValueBytes": -1},
            {"reclaimMargin": -1},
            {"replyTimeout": 0},
        ]:
            self.assertRaises(
                InvalidArgumentError,
                MemcacheSessionStore,
                WireEndpoint(),
                self.clock,
                **options,
            )


class LifecycleTests(SynchronousTestCase):
    """
    The store is a service: built, it connects nothing; started, it
    connects; stopped, it closes its connection.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = WireEndpoint()
        self.sessionID = secrets.token_urlsafe(32)

    def calls(self, store: MemcacheSessionStore) -> List[Deferred[Any]]:
        """
        One call of each kind.
        """
        return [
            store.create(b""),
            store.load(self.sessionID),
            store.save(self.sessionID, 1, b""),
            store.touch(self.sessionID),
            store.rotate(self.sessionID),
            store.delete(self.sessionID),
        ]

    def test_builtConnectsNothing(self) -> None:
        """
        Building a store, or one from an endpoint string, makes no
        connection; its calls fail at once saying it is not started.
        """
        store = MemcacheSessionStore(self.endpoint, self.clock)
        reactor = MemoryReactorClock()
        fromString = MemcacheSessionStore.fromEndpoint(
            reactor, "tcp:host=127.0.0.1:port=11211"
        )
        self.assertEqual((self.endpoint.wires, reactor.tcpClients), ([], []))
        for d in self.calls(store) + self.calls(fromString):
            error = self.failureResultOf(d, StoreUnavailableError).value
            self.assertEqual(str(error), "the memcached session store is not started")

    def test_startConnects(self) -> None:
        """
        Starting the store connects it, and C{whenConnected} fires with it.
        """
        store = MemcacheSessionStore(self.endpoint, self.clock)
        store.startService()
        self.addCleanup(store.stopService)
        self.assertEqual(len(self.endpoint.wires), 1)
        self.assertTrue(store.isConnected())
        waiting = store.whenConnected()
        self.assertNoResult(waiting)
        self.clock.advance(0)
        self.assertIs(self.successResultOf(waiting), store)

    def test_stopCloses(self) -> None:
        """
        Stopping the store closes its connection (the L{Deferred} it returns
        fires once it is closed) and leaves no timer behind; calls then
        fail saying it is stopped.
        """
        store = MemcacheSessionStore(self.endpoint, self.clock)
        store.startService()
        [wire] = self.endpoint.wires
        stopped = store.stopService()
        self.assertTrue(wire.transport.disconnecting)
        self.assertNoResult(stopped)
        wire.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(store.isConnected())
        for d in self.calls(store):
            error = self.failureResultOf(d, StoreUnavailableError).value
            self.assertEqual(str(error), "the memcached session store is stopped")

    def test_failsFastWhileDown(self) -> None:
        """
        Between losing the connection and making it again, calls fail at
        once; once reconnected (0.3 s later, plus jitter), they work again.
        """
        store = MemcacheSessionStore(self.endpoint, self.clock)
        store.startService()
        self.addCleanup(store.stopService)
        [wire] = self.endpoint.wires
        d = store.load(self.sessionID)
        self.endpoint.down = True
        wire.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, StoreUnavailableError)
        self.assertFalse(store.isConnected())
        error = self.failureResultOf(store.load(self.sessionID), StoreUnavailableError)
        self.assertEqual(str(error.value), "memcached: not connected")

        self.endpoint.down = False
        self.clock.advance(5)
        self.assertEqual(len(self.endpoint.wires), 2)
        d = store.load(self.sessionID)
        self.endpoint.wires[1].reply(b"END\r\n")
        self.assertIsNone(self.successResultOf(d))

    def test_replyTimeoutOnReactor(self) -> None:
        """
        Reply timeouts are kept by the C{reactor}, not by the clock session
        times are read from.
        """
        reactor = Clock()
        store = MemcacheSessionStore(
            self.endpoint, self.clock, reactor=reactor, replyTimeout=0.5
        )
        store.startService()
        self.addCleanup(store.stopService)
        d = store.load(self.sessionID)
        self.clock.advance(10)
        self.assertNoResult(d)
        reactor.advance(0.6)
        self.failureResultOf(d, StoreUnavailableError)

    def test_badEndpointString(self) -> None:
        """
        An endpoint string that does not parse is refused when the store is
        built, naming it.
        """
        error = self.assertRaises(
            InvalidArgumentError,
            MemcacheSessionStore.fromEndpoint,
            MemoryReactorClock(),
            "tcp:host=127.0.0.1",
        )
        self.assertEqual(str(error), "'tcp:host=127.0.0.1': no port given")
