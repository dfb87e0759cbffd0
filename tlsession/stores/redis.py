# -*- test-case-name: tests.unit.test_redisstore -*-
"""
Sessions in Redis, through txredisapi: one hash per session, compare-and-swap
by Lua scripts (one round trip per load or save), native TTLs to reclaim space.

Layout: the key C{prefix + sessionID} holds a hash with the fields C{data},
C{version}, C{created}, C{lastSeen} and C{idleTimeout}. Expiry is decided on
every read with the store's own clock (the TTL only frees memory, some time
after the session has already stopped working). The scripts touch one key
(two for rotation), so this store needs one Redis server (or a Sentinel-led
primary), not Redis Cluster or txredisapi's client-side sharding.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any, List, Optional, Sequence, Tuple, Union

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
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
from tlsession.stores import isWellFormedSessionID, newSessionID
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

try:
    import txredisapi
except ImportError as e:  # pragma: no cover - an install without the extra
    raise ImportError(
        "the Redis session store needs txredisapi: pip install 'tlsuite[redis]'"
    ) from e

__all__ = ["RedisSessionStore"]

_log = Logger()

#: Fresh identifiers tried when one is taken (practically never: 256 bits).
_CREATE_ATTEMPTS = 3

# The session's fields in one bulk string (a multi-bulk reply of five costs
# txredisapi a pause and resume of the socket per element): each field as a
# 4-byte big-endian length and its bytes, a missing field as the length
# 0xFFFFFFFF; nil when the session does not exist. Reads only: expiry is
# decided by the caller, with the store's clock.
_LOAD = b"""
local f = redis.call('HMGET', KEYS[1], 'version', 'created', 'lastSeen',
                     'idleTimeout', 'data')
if not f[1] then return false end
local parts = {}
for i = 1, 5 do
  local v = f[i]
  if v then
    parts[i] = struct.pack('>I4', #v) .. v
  else
    parts[i] = struct.pack('>I4', 4294967295)
  end
end
return table.concat(parts)
"""

_CREATE = b"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'version', 1, 'created', ARGV[2],
           'lastSeen', ARGV[2], 'idleTimeout', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# Shared by the scripts that act on a live session: ARGV[1] is now, ARGV[2]
# the absolute timeout, ARGV[3] the reclamation margin (seconds). A session
# found expired is deleted, so that nothing can bring it back.
_LIVE = b"""
local now = tonumber(ARGV[1])
local absolute = tonumber(ARGV[2])
local margin = tonumber(ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'version', 'created', 'lastSeen',
                     'idleTimeout')
if not f[1] then return 0 end
local created = tonumber(f[2])
local idle = tonumber(f[4])
if now - tonumber(f[3]) > idle or now - created > absolute then
  redis.call('DEL', KEYS[1])
  return 0
end
local function expire(key, idleTimeout)
  local ttl = math.min(idleTimeout, absolute - (now - created)) + margin
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
end
"""

# ARGV[4] expected version, ARGV[5] data, ARGV[6] new idle timeout or ''.
# Returns the new version, 0 when gone, minus the current version on a
# conflict.
_SAVE = (
    _LIVE
    + b"""
local version = tonumber(f[1])
if version ~= tonumber(ARGV[4]) then return -version end
local idleText = f[4]
if ARGV[6] ~= '' then idleText = ARGV[6] end
version = version + 1
redis.call('HSET', KEYS[1], 'data', ARGV[5], 'version', version,
           'lastSeen', ARGV[1], 'idleTimeout', idleText)
expire(KEYS[1], tonumber(idleText))
return version
"""
)

_TOUCH = (
    _LIVE
    + b"""
redis.call('HSET', KEYS[1], 'lastSeen', ARGV[1])
expire(KEYS[1], idle)
return 1
"""
)

# KEYS[2] is the new identifier's key: 1 when it is taken (the caller draws
# another), else the moved record. RENAME keeps the hash whole.
_ROTATE = (
    _LIVE
    + b"""
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local data = redis.call('HGET', KEYS[1], 'data')
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], 'lastSeen', ARGV[1])
expire(KEYS[2], idle)
return {f[1], f[2], ARGV[1], f[4], data}
"""
)


@attrs.frozen
class _Script:
    """
    A Lua script and the SHA-1 that C{EVALSHA} names it by.
    """

    source: bytes
    sha: bytes = attrs.field(init=False)

    @sha.default
    def _sha(self) -> bytes:
        return hashlib.sha1(self.source).hexdigest().encode("ascii")


_LOAD_SCRIPT = _Script(_LOAD)
_CREATE_SCRIPT = _Script(_CREATE)
_SAVE_SCRIPT = _Script(_SAVE)
_TOUCH_SCRIPT = _Script(_TOUCH)
_ROTATE_SCRIPT = _Script(_ROTATE)

#: The fields the load script packs, in order.
_FIELD_COUNT = 5

#: The length the load script gives a field the hash does not have.
_MISSING = 0xFFFFFFFF

_LENGTH = struct.Struct(">I")


def _unpackFields(packed: bytes) -> List[Optional[bytes]]:
    """
    The fields the load script packed into one string.

    @raise ValueError: when C{packed} is not what the script makes.
    """
    fields: List[Optional[bytes]] = []
    offset = 0
    for _ in range(_FIELD_COUNT):
        if offset + _LENGTH.size > len(packed):
            raise ValueError("truncated packed session")
        (length,) = _LENGTH.unpack_from(packed, offset)
        offset += _LENGTH.size
        if length == _MISSING:
            fields.append(None)
            continue
        if offset + length > len(packed):
            raise ValueError("truncated packed session")
        fields.append(packed[offset : offset + length])
        offset += length
    if offset != len(packed):
        raise ValueError("trailing bytes after packed session")
    return fields


def _number(value: float) -> bytes:
    """
    A float as text that Lua's C{tonumber} reads back to the same double.
    """
    return repr(float(value)).encode("ascii")


def _isNoScript(failure: Failure) -> bool:
    """
    Whether the server answered C{EVALSHA} with C{NOSCRIPT} (its script cache
    was flushed or the server restarted): the script did not run.
    """
    return bool(
        failure.check(txredisapi.ResponseError)
        and str(failure.value).startswith("NOSCRIPT")
    )


def _unavailable(failure: Failure) -> Failure:
    """
    Turn what txredisapi and the transport report into
    L{StoreUnavailableError}; let the store's own errors through.
    """
    if failure.check(txredisapi.RedisError, ConnectionClosed, ConnectError):
        raise StoreUnavailableError(
            f"redis: {failure.getErrorMessage()}"
        ) from failure.value
    return failure


class _Pool(txredisapi.RedisFactory):
    """
    txredisapi's connection pool, telling its store when a connection has
    joined it (ready for commands, after C{AUTH} and C{SELECT}).
    """

    def __init__(self, store: RedisSessionStore, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = store

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if self.size:
            self.store._poolReady()


@implementer(ISessionStore)
class RedisSessionStore(StoreService):
    """
    Sessions in Redis, shared by every process that uses the same server and
    prefix.

    The store is an L{IService<twisted.application.service.IService>}: building it
    connects nothing;
    L{startService} opens a pool of C{poolSize} connections (each made
    again after a loss, with backoff), L{stopService} closes them. Calls
    made before the start, after the stop, or while no connection is up
    fail at once with L{StoreUnavailableError}, rather than waiting in the
    pool's queue.

    Load, create, save, touch and rotate are one C{EVALSHA} each (a
    C{NOSCRIPT} answer, after a server restart, costs one C{EVAL}); a load
    gets the session back as one bulk string, not one element per field.
    txredisapi schedules its reconnections on the global reactor.

    @ivar idleTimeout: default seconds of inactivity before a session expires.
    @ivar absoluteTimeout: seconds after creation when a session ends.
    @ivar maxValueBytes: the largest session data accepted.
    @ivar reclaimMargin: seconds the server keeps an expired session before
        its TTL frees it (covers clock differences between app processes).
    """

    storeDescription = "the Redis session store"

    idleTimeout: float
    absoluteTimeout: float
    maxValueBytes: int

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        *,
        password: Optional[str] = None,
        dbid: Optional[int] = None,
        poolSize: int = 4,
        replyTimeout: float = 2.0,
        idleTimeout: float = 1800.0,
        absoluteTimeout: float = 86400.0,
        maxValueBytes: int = 65536,
        prefix: str = "tlsession:",
        reclaimMargin: float = 60.0,
    ) -> None:
        """
        @param endpoint: where the Redis server listens.
        @param clock: the source of every timestamp the store keeps.
        @param password: sent with C{AUTH}; a refused password stops the
            pool from reconnecting (every call then fails, and it is logged).
        @param dbid: the database number to C{SELECT}.
        @param poolSize: connections kept open; calls are spread over them.
        @param replyTimeout: seconds to wait for an answer before dropping
            the connection and failing the call.
        @param prefix: put before each session identifier to make its key.
        @raise InvalidArgumentError: for settings that make no sense.
        """
        self.idleTimeout, self.absoluteTimeout, self.maxValueBytes = checkLimits(
            idleTimeout, absoluteTimeout, maxValueBytes
        )
        # A margin of 0 is fine: keys expire with their sessions.
        self.reclaimMargin = (
            0.0 if reclaimMargin == 0 else checkPositive("reclaimMargin", reclaimMargin)
        )
        checkPositive("replyTimeout", replyTimeout)
        if isinstance(poolSize, bool) or not isinstance(poolSize, int) or poolSize < 1:
            raise InvalidArgumentError(
                f"poolSize must be a positive integer, not {poolSize!r}"
            )
        if dbid is not None and (
            isinstance(dbid, bool) or not isinstance(dbid, int) or dbid < 0
        ):
            raise InvalidArgumentError(
                f"dbid must be a non-negative integer, not {dbid!r}"
            )
        self._endpoint = endpoint
        self._clock = clock
        self._password = password
        self._dbid = dbid
        self._poolSize = poolSize
        self._replyTimeout = replyTimeout
        self._prefix = prefix.encode("utf-8")
        self._pool: Optional[_Pool] = None
        self._waiting: List[Deferred[RedisSessionStore]] = []

    @classmethod
    def fromEndpoint(
        cls,
        reactor: IReactorTime,
        description: str,
        *,
        clock: Optional[IReactorTime] = None,
        **storeOptions: Any,
    ) -> RedisSessionStore:
        """
        A store on the Redis server at an endpoint string
        (C{"unix:path=/run/redis/redis.sock:timeout=2"},
        C{"tcp:host=127.0.0.1:port=6379:timeout=2"}, C{"tls:..."}). Like
        the constructor, it connects nothing: start the store (as a child
        of the app's service, or with L{startService}).

        @param reactor: connects the endpoint (and is the default C{clock}).
        @param storeOptions: the constructor's keyword arguments
            (C{password}, C{dbid}, C{poolSize}, C{replyTimeout},
            C{idleTimeout}, C{absoluteTimeout}, C{maxValueBytes}, C{prefix},
            C{reclaimMargin}).
        @raise InvalidArgumentError: for an endpoint string that does not
            parse, or bad options.
        """
        try:
            checkClientEndpoint(description)
        except EndpointStringError as e:
            raise InvalidArgumentError(str(e)) from None
        store = cls(
            clientFromString(reactor, description),
            reactor if clock is None else clock,
            **storeOptions,
        )
        store._description = description
        return store

    #: Where the server is, for log lines.
    _description = "the Redis server"

    # The service.

    def startService(self) -> None:
        """
        Start connecting the pool to the server.
        """
        pool = _Pool(
            self,
            self._description,
            self._dbid,
            self._poolSize,
            isLazy=True,
            handler=txredisapi.ConnectionHandler,
            charset=None,
            password=self._password,
            replyTimeout=self._replyTimeout,
            convertNumbers=False,
        )
        # Fails only when the server refuses AUTH or SELECT; nobody else
        # waits on it in a lazy pool, so say why here.
        pool.deferred.addErrback(self._refused)
        self._pool = pool
        pool.startConnecting(self._endpoint)
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Refuse new calls, close every connection of the pool and stop
        reconnecting.

        @return: L{Deferred} firing when they are closed.
        """
        super().stopService()
        pool, self._pool = self._pool, None
        self._failWaiting(StoreUnavailableError(f"{self.storeDescription} is stopped"))
        if pool is None:
            return succeed(None)
        closed: Deferred[Any] = pool.disconnect()
        return closed.addCallback(lambda _: None)

    def whenConnected(self) -> Deferred[RedisSessionStore]:
        """
        @return: L{Deferred} firing with this store once a connection is up
            (at once if one is); it fails if the server refuses the password
            or database, or the store stops first. Start the store first.
        """
        if self.isConnected():
            return succeed(self)
        waiting: Deferred[RedisSessionStore] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def isConnected(self) -> bool:
        """
        Whether a connection to the server is up right now (calls made while
        it is not fail at once).
        """
        return self._pool is not None and self._pool.size > 0

    def _poolReady(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self)

    def _failWaiting(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(error)

    def _refused(self, failure: Failure) -> None:
        _log.error(
            "Redis session store at {endpoint} gave up: {reason}",
            endpoint=self._description,
            reason=failure.getErrorMessage(),
        )
        self._failWaiting(StoreUnavailableError(f"redis: {failure.getErrorMessage()}"))

    # The ISessionStore methods.

    def create(
        self, data: bytes = b"", idleTimeout: Optional[float] = None
    ) -> Deferred[SessionRecord]:
        """
        Store a new session under a fresh random identifier (see
        L{ISessionStore.create}).
        """
        try:
            self.checkRunning()
            data, idle = checkCreate(data, idleTimeout, self.maxValueBytes)
        except SessionStoreError:
            return fail()
        return Deferred.fromCoroutine(
            self._create(data, self.idleTimeout if idle is None else idle)
        )

    async def _create(self, data: bytes, idle: float) -> SessionRecord:
        now = self._clock.seconds()
        ttl = math.ceil((min(idle, self.absoluteTimeout) + self.reclaimMargin) * 1000)
        for _ in range(_CREATE_ATTEMPTS):
            sessionID = newSessionID()
            stored = await self._run(
                _CREATE_SCRIPT,
                [self._key(sessionID)],
                [data, _number(now), _number(idle), str(ttl).encode("ascii")],
            )
            if stored == 1:
                return SessionRecord(sessionID, 1, data, now, now, idle)
        raise SessionStoreError(
            f"{_CREATE_ATTEMPTS} fresh session identifiers were all taken"
        )

    def load(self, sessionID: str) -> Deferred[Optional[SessionRecord]]:
        """
        Read a live session, or C{None} (see L{ISessionStore.load}). One
        C{EVALSHA} of a read-only script; reading does not count as activity.
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        if not isWellFormedSessionID(sessionID):
            return succeed(None)
        d = self._run(_LOAD_SCRIPT, [self._key(sessionID)], [])
        d.addCallback(self._recordFromPacked, sessionID)
        d.addErrback(_unavailable)
        return d

    def _recordFromPacked(
        self, packed: Optional[bytes], sessionID: str
    ) -> Optional[SessionRecord]:
        if packed is None:
            return None
        try:
            if not isinstance(packed, bytes):
                raise TypeError(f"unexpected reply {packed!r}")
            fields = _unpackFields(packed)
        except (TypeError, ValueError):
            self._warnMalformed(sessionID)
            return None
        if fields[0] is None:
            return None
        record = self._record(sessionID, fields)
        if record is None:
            return None
        now = self._clock.seconds()
        if (
            now - record.lastSeen > record.idleTimeout
            or now - record.created > self.absoluteTimeout
        ):
            return None
        return record

    def save(
        self,
        sessionID: str,
        expectedVersion: int,
        data: bytes,
        idleTimeout: Optional[float] = None,
    ) -> Deferred[int]:
        """
        Compare-and-swap the session's data (see L{ISessionStore.save}); one
        C{EVALSHA}.
        """
        try:
            self.checkRunning()
            version, data, idle = checkSave(
                sessionID, expectedVersion, data, idleTimeout, self.maxValueBytes
            )
        except SessionStoreError:
            return fail()
        idleText = b"" if idle is None else _number(idle)
        expected = b"%d" % version
        d = self._run(
            _SAVE_SCRIPT,
            [self._key(sessionID)],
            [*self._liveArguments(), expected, data, idleText],
        )

        def saved(result: int) -> int:
            if result == 0:
                raise SessionGoneError(sessionID)
            if result < 0:
                raise ConflictError(sessionID, expectedVersion, -result)
            return result

        return d.addCallback(saved)

    def touch(self, sessionID: str) -> Deferred[None]:
        """
        Mark the session seen (see L{ISessionStore.touch}); one C{EVALSHA}.
        """
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()
        d = self._run(
            _TOUCH_SCRIPT, [self._key(sessionID)], list(self._liveArguments())
        )

        def touched(result: int) -> None:
            if result == 0:
                raise SessionGoneError(sessionID)

        return d.addCallback(touched)

    def rotate(self, sessionID: str) -> Deferred[SessionRecord]:
        """
        Move the session to a new identifier in one atomic script (see
        L{ISessionStore.rotate}). It keeps its data, version and creation
        time (the absolute timeout still counts from the first login) and is
        marked seen; the old key no longer exists once this fires.
        """
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()
        return Deferred.fromCoroutine(self._rotate(sessionID))

    async def _rotate(self, sessionID: str) -> SessionRecord:
        for _ in range(_CREATE_ATTEMPTS):
            newID = newSessionID()
            result = await self._run(
                _ROTATE_SCRIPT,
                [self._key(sessionID), self._key(newID)],
                list(self._liveArguments()),
            )
            if result == 0:
                raise SessionGoneError(sessionID)
            if isinstance(result, list):
                record = self._record(newID, result)
                if record is not None:
                    return record
                raise SessionGoneError(sessionID)
        raise SessionStoreError(
            f"{_CREATE_ATTEMPTS} fresh session identifiers were all taken"
        )

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
        d = self._command(b"DEL", self._key(sessionID))
        d.addCallback(lambda _: None)
        d.addErrback(_unavailable)
        return d

    # Plumbing.

    def _key(self, sessionID: str) -> bytes:
        return self._prefix + sessionID.encode("ascii")

    def _liveArguments(self) -> Tuple[bytes, bytes, bytes]:
        return (
            _number(self._clock.seconds()),
            _number(self.absoluteTimeout),
            _number(self.reclaimMargin),
        )

    def _record(self, sessionID: str, fields: Sequence[Any]) -> Optional[SessionRecord]:
        """
        The record from the hash's fields, or C{None} (logged) when they are
        not what this store writes: some other program's key under the prefix.
        """
        try:
            version, created, lastSeen, idle, data = fields
            return SessionRecord(
                sessionID,
                int(version),
                bytes(data),
                float(created),
                float(lastSeen),
                float(idle),
            )
        except (TypeError, ValueError):
            self._warnMalformed(sessionID)
            return None

    def _warnMalformed(self, sessionID: str) -> None:
        _log.warn(
            "Ignoring a malformed session hash at {key!r}",
            key=self._key(sessionID),
        )

    def _command(self, *arguments: Union[bytes, int]) -> Deferred[Any]:
        """
        Send one command, failing at once when no connection is up (a pool
        would otherwise queue the call until it reconnects).
        """
        pool = self._pool
        if pool is None or not pool.size:
            return fail(StoreUnavailableError("redis: not connected"))
        return maybeDeferred(pool.handler.execute_command, *arguments)

    def _run(
        self, script: _Script, keys: List[bytes], arguments: List[bytes]
    ) -> Deferred[Any]:
        """
        Run a script by its SHA-1, sending its source only when the server
        does not know it yet.
        """
        tail: List[Union[bytes, int]] = [len(keys), *keys, *arguments]
        d = self._command(b"EVALSHA", script.sha, *tail)

        def sendSource(failure: Failure) -> Any:
            if _isNoScript(failure):
                return self._command(b"EVAL", script.source, *tail)
            return failure

        d.addErrback(sendSource)
        d.addErrback(_unavailable)
        return d
