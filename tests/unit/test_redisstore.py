"""
Tests for L{tlsession.stores.redis}, with txredisapi's own protocol talking
to an in-memory transport: what the store sends, and what it makes of every
answer (the Lua scripts themselves run in tests/integration).
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from typing import Any, List, Optional, Sequence, Tuple, Union

import txredisapi
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
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
from tlsession.stores.redis import RedisSessionStore

NOW = 1_000_000.0

Reply = Union[int, bytes, None, List[Any], Exception]


def encode(reply: Reply) -> bytes:
    """
    A reply as Redis sends it (RESP2).
    """
    if isinstance(reply, Exception):
        return b"-" + str(reply).encode() + b"\r\n"
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(encode(item) for item in reply)


def parseCommands(data: bytes) -> List[List[bytes]]:
    """
    The commands in what a client wrote (RESP2 arrays of bulk strings).
    """
    commands = []
    while data:
        header, data = data.split(b"\r\n", 1)
        assert header.startswith(b"*"), header
        arguments = []
        for _ in range(int(header[1:])):
            length, data = data.split(b"\r\n", 1)
            assert length.startswith(b"$"), length
            size = int(length[1:])
            arguments.append(data[:size])
            data = data[size + 2 :]
        commands.append(arguments)
    return commands


class RedisWire:
    """
    A connected txredisapi protocol on a L{StringTransport}, as the server
    sees it: the commands it sent, and replies fed back.
    """

    def __init__(self, protocol: Any, transport: StringTransport, clock: Clock):
        self.protocol = protocol
        self.transport = transport
        self.clock = clock

    def sent(self) -> List[List[bytes]]:
        """
        The commands written since the last call.
        """
        commands = parseCommands(self.transport.value())
        self.transport.clear()
        return commands

    def reply(self, *replies: Reply) -> None:
        """
        Send replies, one reply at a time as txredisapi expects to resume.
        """
        for reply in replies:
            self.protocol.dataReceived(encode(reply))
            self.clock.advance(0)


@implementer(IStreamClientEndpoint)
class WireEndpoint:
    """
    Connects each protocol to a new L{StringTransport} at once, or, while
    C{pending}, leaves every attempt waiting.

    @ivar wires: a L{RedisWire} per connection made, oldest first.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.wires: List[RedisWire] = []
        self.pending = False

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        """
        Build and connect a protocol.
        """
        if self.pending:
            return Deferred()
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.wires.append(RedisWire(protocol, transport, self.clock))
        return succeed(protocol)


def onClock(testCase: SynchronousTestCase, clock: Clock) -> None:
    """
    Make txredisapi schedule on C{clock}: it calls the global reactor
    directly (to hand a new connection to its pool, to time replies out).
    """
    testCase.patch(txredisapi, "reactor", clock)
    testCase.patch(txredisapi.RedisProtocol, "callLater", clock.callLater)


def startedStore(
    testCase: SynchronousTestCase, clock: Clock, **options: Any
) -> Tuple[RedisSessionStore, WireEndpoint]:
    """
    A store of C{poolSize} connections (one by default) on wires, started
    with its connections in the pool, and stopped when the test ends.
    """
    onClock(testCase, clock)
    options.setdefault("poolSize", 1)
    endpoint = WireEndpoint(clock)
    store = RedisSessionStore(endpoint, clock, **options)
    store.startService()
    testCase.addCleanup(store.stopService)
    clock.advance(0)
    return store, endpoint


def hashReply(
    version: int = 1,
    created: float = NOW,
    lastSeen: float = NOW,
    idle: float = 60.0,
    data: bytes = b"data",
) -> List[Any]:
    """
    The fields C{version created lastSeen idleTimeout data} of a session the
    store wrote (as rotation's script answers them).
    """
    return [b"%d" % version, repr(created).encode(), repr(lastSeen).encode(),
            repr(idle).encode(), data]  # fmt: skip


def packed(fields: Sequence[Optional[bytes]]) -> bytes:
    """
    What the load script answers for a hash with C{fields}: each a 4-byte
    big-endian length and its bytes, a missing one the length 0xFFFFFFFF.
    """
    return b"".join(
        struct.pack(">I", 0xFFFFFFFF)
        if field is None
        else struct.pack(">I", len(field)) + field
        for field in fields
    )


def loadReply(*arguments: Any, **keywords: Any) -> bytes:
    """
    What the load script answers for a session the store wrote.
    """
    return packed(hashReply(*arguments, **keywords))


class RedisStoreTests(SynchronousTestCase):
    """
    L{RedisSessionStore} over one connection.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store, endpoint = startedStore(
            self,
            self.clock,
            replyTimeout=2.0,
            idleTimeout=60,
            absoluteTimeout=3600,
            maxValueBytes=100,
            reclaimMargin=5,
        )
        [self.wire] = endpoint.wires
        self.sessionID = secrets.token_urlsafe(32)
        self.key = b"tlsession:" + self.sessionID.encode()

    def evalsha(self, *arguments: bytes) -> bytes:
        """
        Check that the one command sent is an C{EVALSHA} with C{arguments}
        after the script's SHA-1; return the SHA-1.
        """
        [command] = self.wire.sent()
        self.assertEqual(command[0], b"EVALSHA")
        self.assertRegex(command[1], b"^[0-9a-f]{40}$")
        self.assertEqual(command[2:], list(arguments))
        return command[1]

    def test_loadIsOneEVALSHA(self) -> None:
        """
        A load sends one C{EVALSHA} naming the session's key and returns the
        record its one packed answer holds.
        """
        d = self.store.load(self.sessionID)
        self.evalsha(b"1", self.key)
        self.wire.reply(loadReply(3, NOW - 100, NOW - 10, 60.0, b"\x00\xff"))
        self.assertEqual(
            self.successResultOf(d),
            SessionRecord(self.sessionID, 3, b"\x00\xff", NOW - 100, NOW - 10, 60.0),
        )

    def test_loadMissing(self) -> None:
        """
        A session Redis does not have loads as C{None}.
        """
        d = self.store.load(self.sessionID)
        self.wire.reply(None)
        self.assertIsNone(self.successResultOf(d))

    def test_loadExpired(self) -> None:
        """
        A session still in Redis (its TTL has a margin) but idle for longer
        than its timeout, or older than the absolute timeout, loads as
        C{None}: the store's clock decides.
        """
        for reply in [
            loadReply(lastSeen=NOW - 60.5),
            loadReply(created=NOW - 3601, lastSeen=NOW),
        ]:
            d = self.store.load(self.sessionID)
            self.wire.reply(reply)
            self.assertIsNone(self.successResultOf(d))
        d = self.store.load(self.sessionID)
        self.wire.reply(loadReply(lastSeen=NOW - 60))
        self.assertIsNotNone(self.successResultOf(d))

    def test_loadForeignHash(self) -> None:
        """
        A hash under the prefix that this store did not write loads as
        C{None} instead of failing the request.
        """
        d = self.store.load(self.sessionID)
        self.wire.reply(packed([b"one", b"two", b"three", b"four", b"five"]))
        self.assertIsNone(self.successResultOf(d))

    def test_malformedIdentifiersNeverSent(self) -> None:
        """
        Malformed identifiers are unknown without a word to the server:
        loads give C{None}, deletes do nothing, and saves, touches and
        rotations fail with L{SessionGoneError}.
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

    def test_saveArguments(self) -> None:
        """
        A save is one C{EVALSHA} with the key, the clock's time, the
        timeouts, the expected version, the data and the new idle timeout
        (empty to keep the session's own).
        """
        self.store.save(self.sessionID, 3, b"new data", idleTimeout=600)
        self.evalsha(
            b"1", self.key, b"1000000.0", b"3600.0", b"5.0", b"3", b"new data", b"600.0"
        )
        self.store.save(self.sessionID, 4, b"")
        self.evalsha(b"1", self.key, b"1000000.0", b"3600.0", b"5.0", b"4", b"", b"")

    def test_saveOutcomes(self) -> None:
        """
        The script's answer becomes the new version, L{SessionGoneError}, or
        L{ConflictError} carrying the version another request saved.
        """
        d = self.store.save(self.sessionID, 3, b"x")
        self.wire.reply(4)
        self.assertEqual(self.successResultOf(d), 4)

        d = self.store.save(self.sessionID, 3, b"x")
        self.wire.reply(0)
        self.failureResultOf(d, SessionGoneError)

        d = self.store.save(self.sessionID, 3, b"x")
        self.wire.reply(-7)
        conflict = self.failureResultOf(d, ConflictError).value
        self.assertEqual(
            (conflict.sessionID, conflict.expected, conflict.current),
            (self.sessionID, 3, 7),
        )

    def test_scriptSentOnlyWhenUnknown(self) -> None:
        """
        When the server does not know a script (C{NOSCRIPT}: it restarted or
        flushed its cache), the store sends its source once with C{EVAL},
        then goes back to C{EVALSHA}.
        """
        d = self.store.save(self.sessionID, 1, b"x")
        sha = self.evalsha(
            b"1", self.key, b"1000000.0", b"3600.0", b"5.0", b"1", b"x", b""
        )
        self.wire.reply(txredisapi.ResponseError("NOSCRIPT No matching script."))
        [command] = self.wire.sent()
        self.assertEqual(command[0], b"EVAL")
        self.assertEqual(hashlib.sha1(command[1]).hexdigest().encode(), sha)
        self.assertIn(b"redis.call", command[1])
        self.assertEqual(
            command[2:],
            [b"1", self.key, b"1000000.0", b"3600.0", b"5.0", b"1", b"x", b""],
        )
        self.wire.reply(2)
        self.assertEqual(self.successResultOf(d), 2)
        self.store.save(self.sessionID, 2, b"y")
        self.assertEqual(
            self.evalsha(
                b"1", self.key, b"1000000.0", b"3600.0", b"5.0", b"2", b"y", b""
            ),
            sha,
        )

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

    def test_createArguments(self) -> None:
        """
        Create runs one script with the data, the time, the idle timeout and
        the key's TTL in milliseconds (the shorter timeout plus the margin);
        a taken identifier (practically never) makes it draw another.
        """
        d = self.store.create(b"hello", idleTimeout=10)
        [command] = self.wire.sent()
        firstKey = command[3]
        self.assertEqual(command[2], b"1")
        self.assertEqual(command[4:], [b"hello", b"1000000.0", b"10.0", b"15000"])
        self.wire.reply(0)
        [command] = self.wire.sent()
        self.assertNotEqual(command[3], firstKey)
        self.wire.reply(1)
        record = self.successResultOf(d)
        self.assertEqual(b"tlsession:" + record.sessionID.encode(), command[3])
        self.assertEqual(
            (record.version, record.data, record.created, record.lastSeen),
            (1, b"hello", NOW, NOW),
        )
        self.assertEqual(record.idleTimeout, 10)

    def test_createTTLCappedByAbsolute(self) -> None:
        """
        The TTL of a new key is never longer than the absolute timeout plus
        the margin.
        """
        store, endpoint = startedStore(
            self,
            self.clock,
            idleTimeout=7200,
            absoluteTimeout=3600,
            reclaimMargin=0.5,
        )
        store.create()
        [command] = endpoint.wires[0].sent()
        self.assertEqual(command[-1], b"3600500")

    def test_rotate(self) -> None:
        """
        Rotation is one script naming the old and a fresh key; its answer is
        the moved record under the new identifier. A taken new identifier
        makes it draw another; a missing session is L{SessionGoneError}.
        """
        d = self.store.rotate(self.sessionID)
        [command] = self.wire.sent()
        self.assertEqual(command[2:4], [b"2", self.key])
        self.assertEqual(command[5:], [b"1000000.0", b"3600.0", b"5.0"])
        firstNew = command[4]
        self.wire.reply(1)
        [command] = self.wire.sent()
        newKey = command[4]
        self.assertNotEqual(newKey, firstNew)
        self.wire.reply(hashReply(2, NOW - 5, NOW, 60.0, b"kept"))
        record = self.successResultOf(d)
        self.assertEqual(b"tlsession:" + record.sessionID.encode(), newKey)
        self.assertEqual(
            (record.version, record.data, record.created, record.lastSeen),
            (2, b"kept", NOW - 5, NOW),
        )

        d = self.store.rotate(self.sessionID)
        self.wire.reply(0)
        self.failureResultOf(d, SessionGoneError)

    def test_touch(self) -> None:
        """
        Touch is one script; a missing or expired session is
        L{SessionGoneError}.
        """
        d = self.store.touch(self.sessionID)
        self.evalsha(b"1", self.key, b"1000000.0", b"3600.0", b"5.0")
        self.wire.reply(1)
        self.assertIsNone(self.successResultOf(d))
        d = self.store.touch(self.sessionID)
        self.wire.reply(0)
        self.failureResultOf(d, SessionGoneError)

    def test_delete(self) -> None:
        """
        Delete is one C{DEL}, fine whether or not the key existed.
        """
        for existed in (1, 0):
            d = self.store.delete(self.sessionID)
            self.assertEqual(self.wire.sent(), [[b"DEL", self.key]])
            self.wire.reply(existed)
            self.assertIsNone(self.successResultOf(d))

    def test_serverErrorUnavailable(self) -> None:
        """
        An error answer from the server (out of memory, a read-only replica)
        fails the call with L{StoreUnavailableError} that says why.
        """
        d = self.store.save(self.sessionID, 1, b"x")
        self.wire.reply(
            txredisapi.ResponseError("OOM command not allowed when used memory")
        )
        failure = self.failureResultOf(d, StoreUnavailableError)
        self.assertIn("OOM", str(failure.value))

    def test_connectionLostDuringCall(self) -> None:
        """
        A call waiting for its answer when the connection drops fails with
        L{StoreUnavailableError}; later calls fail at once without writing.
        """
        d = self.store.load(self.sessionID)
        self.wire.sent()
        self.wire.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, StoreUnavailableError)
        self.assertFalse(self.store.isConnected())
        self.failureResultOf(self.store.load(self.sessionID), StoreUnavailableError)
        self.failureResultOf(
            self.store.save(self.sessionID, 1, b""), StoreUnavailableError
        )
        self.assertEqual(self.wire.sent(), [])

    def test_replyTimeout(self) -> None:
        """
        A server that does not answer within the connection's reply timeout
        fails the call with L{StoreUnavailableError} and drops the connection.
        """
        d = self.store.load(self.sessionID)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.failureResultOf(d, StoreUnavailableError)
        self.assertTrue(self.wire.transport.disconnecting)


class LifecycleTests(SynchronousTestCase):
    """
    The store is a service: built, it connects nothing; started, it fills
    its pool; stopped, it closes every connection.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = WireEndpoint(self.clock)
        self.sessionID = secrets.token_urlsafe(32)
        onClock(self, self.clock)

    def calls(self, store: RedisSessionStore) -> List[Deferred[Any]]:
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
        store = RedisSessionStore(self.endpoint, self.clock)
        reactor = MemoryReactorClock()
        fromString = RedisSessionStore.fromEndpoint(
            reactor, "tcp:host=127.0.0.1:port=6379"
        )
        self.assertEqual((self.endpoint.wires, reactor.tcpClients), ([], []))
        self.assertFalse(store.isConnected())
        for d in self.calls(store) + self.calls(fromString):
            error = self.failureResultOf(d, StoreUnavailableError).value
            self.assertEqual(str(error), "the Redis session store is not started")

    def test_startFillsPool(self) -> None:
        """
        Starting the store opens C{poolSize} connections; C{whenConnected}
        fires once one is ready.
        """
        store = RedisSessionStore(self.endpoint, self.clock, poolSize=3)
        store.startService()
        self.addCleanup(store.stopService)
        waiting = store.whenConnected()
        self.assertEqual(len(self.endpoint.wires), 3)
        self.assertNoResult(waiting)
        self.clock.advance(0)
        self.assertTrue(store.isConnected())
        self.assertIs(self.successResultOf(waiting), store)
        self.assertIs(self.successResultOf(store.whenConnected()), store)

    def test_stopClosesEveryConnection(self) -> None:
        """
        Stopping the store closes each of its connections; the L{Deferred}
        it returns fires once they are all closed. Calls then fail saying it
        is stopped.
        """
        store = RedisSessionStore(self.endpoint, self.clock, poolSize=2)
        store.startService()
        self.clock.advance(0)
        stopped = store.stopService()
        for wire in self.endpoint.wires:
            self.assertTrue(wire.transport.disconnecting)
        self.assertNoResult(stopped)
        for wire in self.endpoint.wires:
            wire.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertFalse(store.isConnected())
        for d in self.calls(store):
            error = self.failureResultOf(d, StoreUnavailableError).value
            self.assertEqual(str(error), "the Redis session store is stopped")

    def test_noConnectionFailsAtOnce(self) -> None:
        """
        While the pool has no live connection (server down, reconnecting),
        calls fail at once with L{StoreUnavailableError} instead of waiting
        in the pool's queue for a connection; stopping the store fails
        whoever waits for a connection.
        """
        self.endpoint.pending = True
        store = RedisSessionStore(self.endpoint, self.clock)
        store.startService()
        waiting = store.whenConnected()
        self.assertFalse(store.isConnected())
        for d in self.calls(store):
            error = self.failureResultOf(d, StoreUnavailableError).value
            self.assertEqual(str(error), "redis: not connected")
        self.successResultOf(store.stopService())
        self.failureResultOf(waiting, StoreUnavailableError)

    def test_badSettings(self) -> None:
        """
        Limits and pool settings that make no sense, and endpoint strings
        that do not parse, are refused when the store is built.
        """
        for options in [
            {"idleTimeout": 0},
            {"absoluteTimeout": -1},
            {"idleTimeout": float("inf")},
            {"maxValueBytes": -1},
            {"reclaimMargin": -1},
            {"poolSize": 0},
            {"dbid": -1},
            {"replyTimeout": 0},
        ]:
            self.assertRaises(
                InvalidArgumentError,
                RedisSessionStore,
                self.endpoint,
                self.clock,
                **options,
            )
        error = self.assertRaises(
            InvalidArgumentError,
            RedisSessionStore.fromEndpoint,
            MemoryReactorClock(),
            "tcp:host=127.0.0.1:port=99999",
        )
        self.assertIn("the port must be from 1 to 65535", str(error))
