"""
Tests for L{tlsession.stores.memcache}, with Twisted's memcached protocol
talking to an in-memory transport: what the store sends (how many round
trips, which compare-and-swap) and what it makes of every answer.
"""

from __future__ import annotations

import re
import secrets
from typing import List, Optional, Tuple

from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.memcache import MemCacheProtocol
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
from tlsession.stores.memcache import MemcacheConnection, MemcacheSessionStore

NOW = 1_000_000.0

_STORAGE = re.compile(rb"(add|set|cas) (\S+) (\d+) (-?\d+) (\d+)(?: (\S+))?\r\n")


class MemcacheWire:
    """
    A L{MemCacheProtocol} on a L{StringTransport}, seen from the server: the
    commands it sent, and answers fed back.
    """

    def __init__(self, clock: Clock, timeOut: float = 60) -> None:
        self.protocol = MemCacheProtocol(timeOut)  # type: ignore[arg-type]
        self.protocol.callLater = clock.callLater  # type: ignore[method-assign]
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

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


class MemcacheStoreTests(SynchronousTestCase):
    """
    L{MemcacheSessionStore} over one connection.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.wire = MemcacheWire(self.clock, timeOut=2)
        self.store = self.makeStore()
        self.sessionID = secrets.token_urlsafe(32)
        self.key = b"tlsession:" + self.sessionID.encode()

    def makeStore(self, **options: object) -> MemcacheSessionStore:
        """
        A store on the wire, with small round limits.
        """
        settings = {
            "idleTimeout": 60,
            "absoluteTimeout": 3600,
            "maxValueBytes": 100,
            "reclaimMargin": 5,
        }
        settings.update(options)
        return MemcacheSessionStore(self.wire.protocol, self.clock, **settings)  # type: ignore[arg-type]

    def storedValue(
        self, data: bytes = b"data", idleTimeout: float = 60, version: int = 1
    ) -> bytes:
        """
        The item value a store writes for a session at C{version}, taken off
        the wire (so the tests read what a store really writes).
        """
        writer = MemcacheWire(self.clock)
        store = MemcacheSessionStore(writer.protocol, self.clock)
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
        ]:
            self.assertRaises(ValueError, self.makeStore, **options)


@implementer(IStreamClientEndpoint)
class StringEndpoint:
    """
    Connects each protocol to a new L{StringTransport} at once.
    """

    def __init__(self) -> None:
        self.protocols: List[object] = []

    def connect(self, factory: IProtocolFactory) -> object:
        """
        Build and connect a protocol.
        """
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        protocol.makeConnection(StringTransport())
        self.protocols.append(protocol)
        return succeed(protocol)


class MemcacheConnectionTests(SynchronousTestCase):
    """
    L{MemcacheConnection}: one connection, kept up.
    """

    def test_failsFastWhileDown(self) -> None:
        """
        Until the connection is up, and between losing it and reconnecting,
        the store fails calls at once; after reconnecting it works again.
        """
        clock = Clock()
        endpoint = StringEndpoint()
        connection = MemcacheConnection(endpoint, clock)
        store = MemcacheSessionStore(connection, clock)
        sessionID = secrets.token_urlsafe(32)
        self.assertFalse(store.isConnected())
        self.failureResultOf(store.load(sessionID), StoreUnavailableError)

        connection.startService()
        self.assertTrue(store.isConnected())
        d = store.load(sessionID)
        self.assertIsNotNone(connection.protocol)
        assert connection.protocol is not None
        connection.protocol.transport.loseConnection()  # type: ignore[union-attr]
        endpoint.protocols[0].connectionLost(Failure(ConnectionLost()))  # type: ignore[attr-defined]
        self.failureResultOf(d, StoreUnavailableError)
        self.assertFalse(store.isConnected())
        self.failureResultOf(store.load(sessionID), StoreUnavailableError)

        clock.advance(60)
        self.assertEqual(len(endpoint.protocols), 2)
        self.assertTrue(store.isConnected())
        d = store.load(sessionID)
        connection.protocol.dataReceived(b"END\r\n")  # type: ignore[union-attr]
        self.assertIsNone(self.successResultOf(d))
        self.flushLoggedErrors()

    def test_replyTimeoutOnConnectionClock(self) -> None:
        """
        The connection's protocols time out on the connection's clock.
        """
        clock = Clock()
        connection = MemcacheConnection(StringEndpoint(), clock, replyTimeout=0.5)
        connection.startService()
        store = MemcacheSessionStore(connection, clock)
        d = store.load(secrets.token_urlsafe(32))
        clock.advance(0.6)
        self.failureResultOf(d, StoreUnavailableError)
