# -*- test-case-name: tests.unit.test_pbstore -*-
"""
The client of the session daemon (L{tlsession.daemon}): an L{ISessionStore}
over Perspective Broker, with a near cache kept right by the daemon's
invalidations.

The near cache
==============

Every record this process loads or writes is kept in a bounded LRU cache,
and C{load} answers from it with no round trip. The daemon pushes
C{(sessionID, version)} after every change made by another process (and
after expiries and evictions), and the cache drops what those make stale.
The whole cache is dropped when the connection is lost, since pushes may
have been missed; after a reconnection it fills again from the daemon.

Replies and pushes travel on the one PB connection, in the order the daemon
produced them, and the daemon answers each batch of requests before it runs
the next, so a reply is never older than a push that came before it. The cache does not
rely on that for sessions it already knows: each call about one notes the
session first; a push arriving before the reply raises a floor (the pushed
version, or "gone"), and a reply below the floor is not cached. A cached
record is only ever replaced by one of the same or a higher version.

A change made by another process reaches this one when its push arrives
(a fraction of a millisecond on a unix socket); until then a load may
answer the version before it. Saves are compare-and-swap in the daemon, so
a save based on such a read fails with L{ConflictError} (the manager
re-reads and merges, or fails with 409) and no update is lost. Changes made by this
process are seen by it at once.

What a hit may answer: the record as this process last read or wrote it.
Touches from other processes are not pushed (they change no data), so a
cached C{lastSeen} can be older than the daemon's, never newer: a record
the cache judges alive (by this process's clock, against its idle timeout
and the daemon's absolute timeout) is alive in the daemon too, and one it
judges expired is asked for again. Entries are also re-read after
C{nearCacheMaxAge} seconds whatever happens. Clocks of the daemon's and the
app's hosts should agree (NTP); on one host they are the same clock.

Requests and failures
=====================

Requests are sent in batches (L{tlsession.stores._pbbatch}): a request goes
out at once when none is in flight, and the requests made while one is in
flight go out together in one PB message when its answer arrives. A lone
request waits for nothing; many concurrent ones share the cost of each
message. Connecting and logging in are L{tlsession.stores._pblogin}'s.

While the daemon is unreachable every call fails at once with
L{StoreUnavailableError} (the app answers 503). A batch with no answer
within C{callTimeout} fails the same way and the connection is dropped (a
request queued behind it waits at most twice that); the client reconnects
with backoff. A restarted daemon has no sessions: old identifiers load as
C{None} and users get new sessions.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Union

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    fail,
    succeed,
)
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import (
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from tlsession._wire import (
    DELETE,
    LOAD,
    ROTATE,
    TOUCH,
    packCreate,
    packSave,
    packSession,
    unpackAnswer,
    unpackRecord,
    unpackSaved,
    unpackSeen,
)
from tlsession.interfaces import (
    ConflictError,
    ISessionStore,
    SessionGoneError,
    SessionRecord,
    SessionStoreError,
    StoreUnavailableError,
)
from tlsession.stores import isWellFormedSessionID
from tlsession.stores._checks import (
    InvalidArgumentError,
    StoreService,
    checkCreate,
    checkIdleTimeout,
    checkLimits,
    checkPositive,
    checkSave,
    checkSessionID,
)
from tlsession.stores._nearcache import NearCache
from tlsession.stores._pblogin import (
    LOST,
    ConnectionFactory,
    DaemonConnection,
    LoginEndpoint,
    isLoginRefusal,
)
from tlsuite._endpoints import EndpointStringError, checkClientEndpoint, endpointKind

__all__ = ["NearCache", "PBSessionStore"]

# NearCache lives in its own module; it is re-exported here, where it is used.

log = Logger(namespace="tlsession.stores.pb")

# What the store reports before it has heard the daemon's own limits.
_DEFAULT_IDLE = 1800.0
_DEFAULT_ABSOLUTE = 86400.0
_DEFAULT_MAX_VALUE = 65536


def _checkDaemonEndpoint(description: str, insecure: bool) -> None:
    """
    Refuse an endpoint string that does not parse, and a plain one unless
    C{insecure}: the login is an MD5 challenge and sessions would travel in
    the clear.
    """
    try:
        checkClientEndpoint(description)
    except EndpointStringError as e:
        raise InvalidArgumentError(str(e)) from None
    if endpointKind(description) in ("unix", "ssl", "tls") or insecure:
        return
    raise InvalidArgumentError(
        f"{description!r}: sessions and the login would travel unencrypted; "
        "connect over unix:path=... or ssl:/tls:, or pass insecure=True "
        "(only on a private network)"
    )


@implementer(ISessionStore)
class PBSessionStore(StoreService):
    """
    Sessions kept by the session daemon, shared by every process connected
    to it, with a near cache (see the module's documentation).

    The store is an L{IService<twisted.application.service.IService>}: building it
    connects nothing;
    L{startService} connects and logs in (and again after a loss, with
    backoff), L{stopService} disconnects. L{whenConnected} tells when a
    login is done. Calls made before the start, after the stop, or while
    not logged in fail at once with L{StoreUnavailableError}.

    @ivar callTimeout: seconds a call may wait for its answer.
    @ivar loginTimeout: seconds to connect and log in.
    @ivar nearCache: the L{NearCache}.
    """

    def __init__(
        self,
        endpoint: Union[str, IStreamClientEndpoint],
        secret: Union[bytes, str],
        clock: IReactorTime,
        *,
        reactor: Optional[Any] = None,
        idleTimeout: Optional[float] = None,
        absoluteTimeout: Optional[float] = None,
        maxValueBytes: Optional[int] = None,
        insecure: bool = False,
        callTimeout: float = 5.0,
        loginTimeout: float = 10.0,
        maxPendingCalls: int = 10_000,
        nearCacheEntries: int = 10_000,
        nearCacheBytes: int = 64 * 2**20,
        nearCacheMaxAge: float = 60.0,
        retryPolicy: Optional[Callable[[int], float]] = None,
    ) -> None:
        """
        @param endpoint: the daemon's client endpoint string
            (C{unix:path=/run/tlsession/daemon.sock}, C{ssl:host=...:port=...},
            C{tls:...}) or an endpoint.
        @param secret: the shared secret (L{tlsession.daemonconfig.readSecretFile}
            reads the daemon's file with the same checks).
        @param clock: the time every session timestamp is judged by (the
            reactor; a L{twisted.internet.task.Clock} in tests).
        @param reactor: connects, and times calls and reconnections
            (C{clock} if C{None}).
        @param idleTimeout: the idle timeout of the sessions this process
            creates; C{None} for the daemon's.
        @param absoluteTimeout: the daemon's absolute timeout as expected
            until it says its own (it is the daemon's to decide; a
            different one is logged).
        @param maxValueBytes: a limit below the daemon's, checked here
            before sending; C{None} for the daemon's alone.
        @param insecure: allow a plain C{tcp:} endpoint string.
        @param callTimeout: seconds a batch of requests may wait for its
            answer; then its calls fail with L{StoreUnavailableError} and
            the connection is dropped and made again.
        @param loginTimeout: seconds to connect and log in.
        @param maxPendingCalls: calls that may wait for answers at once;
            more fail at once.
        @param nearCacheEntries: records the near cache keeps (0 turns it
            off).
        @param nearCacheBytes: session bytes the near cache keeps.
        @param nearCacheMaxAge: seconds after which a cached record is
            read again from the daemon anyway.
        @param retryPolicy: seconds to wait before the n-th reconnection
            attempt (L{backoffPolicy} up to 5 seconds by default).
        @raise InvalidArgumentError: for an endpoint string that does not
            parse or is plain without C{insecure}, an empty secret, or
            settings that make no sense.
        """
        if reactor is None:
            reactor = clock
        connectTo: IStreamClientEndpoint
        if isinstance(endpoint, str):
            _checkDaemonEndpoint(endpoint, insecure)
            self.endpointDescription = endpoint
            connectTo = clientFromString(reactor, endpoint)
        else:
            self.endpointDescription = repr(endpoint)
            connectTo = endpoint
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if not secret:
            raise InvalidArgumentError("the secret must not be empty")
        for name, value in [
            ("callTimeout", callTimeout),
            ("loginTimeout", loginTimeout),
            ("maxPendingCalls", maxPendingCalls),
            ("nearCacheMaxAge", nearCacheMaxAge),
        ]:
            checkPositive(name, value)
        self._secret = secret
        self.clock = clock
        self._reactor = reactor
        self._ownIdle = checkIdleTimeout(idleTimeout)
        self._expectedAbsolute = (
            None
            if absoluteTimeout is None
            else checkPositive("absoluteTimeout", absoluteTimeout)
        )
        self._absoluteTimeout = (
            _DEFAULT_ABSOLUTE
            if self._expectedAbsolute is None
            else self._expectedAbsolute
        )
        if maxValueBytes is not None:
            checkLimits(_DEFAULT_IDLE, _DEFAULT_ABSOLUTE, maxValueBytes)
        self._ownMaxValue = maxValueBytes
        self.callTimeout = callTimeout
        self.loginTimeout = loginTimeout
        self.maxPendingCalls = maxPendingCalls
        self.nearCacheMaxAge = nearCacheMaxAge
        self._cacheOn = nearCacheEntries > 0
        self.nearCache = NearCache(max(nearCacheEntries, 1), nearCacheBytes)
        self._limits: Dict[str, Any] = {}
        self._connection: Optional[DaemonConnection] = None
        self._pending = 0
        self._wasConnected = False
        self.counters = dict.fromkeys(
            [
                "calls",
                "nearCacheHits",
                "nearCacheMisses",
                "invalidations",
                "cacheFlushes",
                "unavailable",
                "timeouts",
                "logins",
                "loginFailures",
            ],
            0,
        )
        self._connectionFactory = ConnectionFactory()
        self._service = ClientService(
            LoginEndpoint(self, connectTo),
            self._connectionFactory,
            retryPolicy=retryPolicy or backoffPolicy(initialDelay=0.2, maxDelay=5.0),
            clock=reactor,
        )

    # Limits: the daemon decides; until it has said, what we were told.

    @property
    def idleTimeout(self) -> float:
        """
        The idle timeout of the sessions this process creates.
        """
        if self._ownIdle is not None:
            return self._ownIdle
        return float(self._limits.get("idleTimeout", _DEFAULT_IDLE))

    @property
    def absoluteTimeout(self) -> float:
        """
        The daemon's absolute timeout.
        """
        return self._absoluteTimeout

    @property
    def maxValueBytes(self) -> int:
        """
        The largest session data accepted: this process's limit and the
        daemon's, whichever is smaller.
        """
        limits = [
            limit
            for limit in (self._ownMaxValue, self._limits.get("maxValueBytes"))
            if limit is not None
        ]
        return int(min(limits)) if limits else _DEFAULT_MAX_VALUE

    # The service.

    storeDescription = "the PB session store"

    def startService(self) -> None:
        """
        Start connecting (and reconnecting) to the daemon.
        """
        self._service.startService()
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Refuse new calls, disconnect and stop reconnecting.

        @return: L{Deferred} firing once the connection is closed.
        """
        super().stopService()
        stopped: Deferred[None] = self._service.stopService()
        return stopped

    def whenConnected(self, failAfterFailures: Optional[int] = None) -> Deferred[Any]:
        """
        @param failAfterFailures: fail after this many failed attempts in a
            row (C{None}: wait until connected or stopped).
        @return: a L{Deferred} firing with this store once logged in (on
            the reactor turn after, so that code waiting on it never runs
            inside L{ClientService}'s bookkeeping).
        """
        result: Deferred[Any] = Deferred()

        def later(outcome: Any) -> None:
            self._reactor.callLater(0, result.callback, outcome)

        self._service.whenConnected(failAfterFailures).addCallback(
            lambda _: self
        ).addBoth(later)
        return result

    @property
    def connected(self) -> bool:
        """
        Whether the store is logged in to the daemon right now.
        """
        return self._connection is not None

    def stats(self) -> Dict[str, Any]:
        """
        This client's counters: C{calls} to the daemon, C{nearCacheHits},
        C{nearCacheMisses}, C{invalidations} that dropped a cached record,
        C{cacheFlushes} (connections lost), C{unavailable} (calls failed at
        once), C{timeouts}, C{logins}, C{loginFailures}, C{pending} (calls
        waiting for answers), and the near cache's C{nearCacheEntries} and
        C{nearCacheBytes}.
        """
        numbers: Dict[str, Any] = dict(self.counters)
        numbers["pending"] = self._pending
        numbers["nearCacheEntries"] = len(self.nearCache)
        numbers["nearCacheBytes"] = self.nearCache.bytes
        numbers["connected"] = self.connected
        return numbers

    def daemonStats(self) -> Deferred[Dict[str, Any]]:
        """
        The daemon's counters (sessions, bytes, evictions, operations per
        second, clients...).
        """
        return self._callRemote("stats")

    # ISessionStore

    def create(
        self, data: bytes = b"", idleTimeout: Optional[float] = None
    ) -> Deferred[SessionRecord]:
        """
        Create a session in the daemon.
        """
        try:
            self.checkRunning()
            data, idleTimeout = checkCreate(data, idleTimeout, self.maxValueBytes)
        except SessionStoreError:
            return fail()
        if idleTimeout is None:
            idleTimeout = self._ownIdle

        def created(answer: Any) -> SessionRecord:
            record = _decode(unpackRecord, _payload(answer, ""))
            self._keep(record)
            return record

        return self._request(packCreate(data, idleTimeout)).addCallback(created)

    def load(self, sessionID: str) -> Deferred[Optional[SessionRecord]]:
        """
        Read a session: from the near cache when it holds a live record,
        else from the daemon.
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        connected = self._connection is not None
        # Only well-formed identifiers are ever cached: look there first.
        if connected and self._cacheOn and type(sessionID) is str:
            hit = self.nearCache.fresh(
                sessionID,
                self.clock.seconds(),
                self.nearCacheMaxAge,
                self._absoluteTimeout,
            )
            if hit is not None:
                self.counters["nearCacheHits"] += 1
                return succeed(hit)
        if not isWellFormedSessionID(sessionID):
            return succeed(None)
        if not connected:
            return self._unavailable()
        self.counters["nearCacheMisses"] += 1

        def loaded(answer: Any) -> Optional[SessionRecord]:
            payload = _payload(answer, sessionID)
            if not payload:
                self.nearCache.discard(sessionID)
                return None
            record = _decode(unpackRecord, payload)
            self._keep(record, floor)
            return record

        floor = 0

        def settled(result: Any) -> Any:
            nonlocal floor
            floor = self.nearCache.unwatch(sessionID)
            return result

        self.nearCache.watch(sessionID)
        return (
            self._request(packSession(LOAD, sessionID))
            .addBoth(settled)
            .addCallback(loaded)
        )

    def save(
        self,
        sessionID: str,
        expectedVersion: int,
        data: bytes,
        idleTimeout: Optional[float] = None,
    ) -> Deferred[int]:
        """
        Compare-and-swap a session's data in the daemon.
        """
        try:
            self.checkRunning()
            expectedVersion, data, idleTimeout = checkSave(
                sessionID, expectedVersion, data, idleTimeout, self.maxValueBytes
            )
        except SessionStoreError:
            return fail()
        before = self.nearCache.get(sessionID)
        floor = 0

        def settled(result: Any) -> Any:
            nonlocal floor
            floor = self.nearCache.unwatch(sessionID)
            return result

        def saved(answer: Any) -> int:
            version, lastSeen = _decode(
                unpackSaved, _payload(answer, sessionID, expectedVersion)
            )
            old = before[0] if before is not None else None
            if old is not None and old.version == expectedVersion:
                record = attrs.evolve(
                    old,
                    version=version,
                    data=data,
                    lastSeen=float(lastSeen),
                    idleTimeout=(
                        old.idleTimeout if idleTimeout is None else float(idleTimeout)
                    ),
                )
                self._keep(record, floor)
            else:
                self.nearCache.discard(sessionID)
            return int(version)

        self.nearCache.watch(sessionID)
        return (
            self._request(packSave(sessionID, expectedVersion, data, idleTimeout))
            .addBoth(settled)
            .addCallback(saved)
            .addErrback(self._forget, sessionID)
        )

    def touch(self, sessionID: str) -> Deferred[None]:
        """
        Restart a session's idle timeout in the daemon.
        """
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()
        floor = 0

        def settled(result: Any) -> Any:
            nonlocal floor
            floor = self.nearCache.unwatch(sessionID)
            return result

        def touched(answer: Any) -> None:
            lastSeen = _decode(unpackSeen, _payload(answer, sessionID))
            entry = self.nearCache.get(sessionID)
            if entry is not None and entry[0].lastSeen < lastSeen:
                self._keep(attrs.evolve(entry[0], lastSeen=lastSeen), floor)

        self.nearCache.watch(sessionID)
        return (
            self._request(packSession(TOUCH, sessionID))
            .addBoth(settled)
            .addCallback(touched)
            .addErrback(self._forget, sessionID)
        )

    def rotate(self, sessionID: str) -> Deferred[SessionRecord]:
        """
        Move a session to a new identifier in the daemon.
        """
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()

        def rotated(answer: Any) -> SessionRecord:
            self.nearCache.discard(sessionID)
            record = _decode(unpackRecord, _payload(answer, sessionID))
            self._keep(record)
            return record

        return (
            self._request(packSession(ROTATE, sessionID))
            .addCallback(rotated)
            .addErrback(self._forget, sessionID)
        )

    def delete(self, sessionID: str) -> Deferred[None]:
        """
        Delete a session in the daemon.
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        if not isWellFormedSessionID(sessionID):
            return succeed(None)

        def deleted(answer: Any) -> None:
            _payload(answer, sessionID)
            self.nearCache.discard(sessionID)

        return self._request(packSession(DELETE, sessionID)).addCallback(deleted)

    # Internals.

    def _keep(self, record: SessionRecord, floor: int = 0) -> None:
        if self._cacheOn:
            self.nearCache.put(record, self.clock.seconds(), floor)

    def _forget(self, reason: Failure, sessionID: str) -> Failure:
        """
        The daemon says the cached record is stale or gone: drop it.
        """
        if reason.check(ConflictError, SessionGoneError):
            self.nearCache.discard(sessionID)
        return reason

    def _invalidate(self, changes: list[tuple[str, Optional[int]]]) -> None:
        for sessionID, version in changes:
            if self.nearCache.invalidate(sessionID, version):
                self.counters["invalidations"] += 1

    def _unavailable(self, reason: str = "") -> Deferred[Any]:
        self.counters["unavailable"] += 1
        return fail(
            StoreUnavailableError(
                reason
                or f"not connected to the session daemon at "
                f"{self.endpointDescription} (reconnecting)"
            )
        )

    def _request(self, request: bytes) -> Deferred[Any]:
        """
        Send a request (L{packCreate}, L{packSave}, L{packSession}) to the
        daemon in the connection's next batch (see L{RequestBatcher}),
        failing with L{StoreUnavailableError} at once when not connected or
        when C{maxPendingCalls} calls are already waiting.

        @return: a L{Deferred} firing with the answer (see
            L{unpackAnswer}).
        """
        connection = self._connection
        if connection is None:
            return self._unavailable()
        if self._pending >= self.maxPendingCalls:
            return self._unavailable(
                f"{self._pending} calls are already waiting for the session daemon"
            )
        self._pending += 1
        self.counters["calls"] += 1
        return connection.batcher.request(request).addBoth(self._answered)

    def _answered(self, result: object) -> object:
        self._pending -= 1
        return result

    def _callRemote(self, name: str, *args: Any) -> Deferred[Any]:
        """
        Call one of the daemon's other methods (C{stats}).
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        connection = self._connection
        if connection is None:
            return self._unavailable()
        try:
            answer: Deferred[Any] = connection.avatar.callRemote(name, *args)
        except pb.DeadReferenceError:
            return self._unavailable()
        return self._guard(answer, connection, name)

    def _guard(
        self, answer: Deferred[Any], connection: DaemonConnection, what: str
    ) -> Deferred[Any]:
        """
        Fail C{answer} with L{StoreUnavailableError} when it does not come
        within C{callTimeout} (dropping the connection, which no longer
        answers) or when it fails.
        """
        answer.addTimeout(self.callTimeout, self._reactor)

        def failed(reason: Failure) -> Failure:
            if reason.check(TimeoutError):
                self.counters["timeouts"] += 1
                log.warn(
                    "tlsession: the session daemon did not answer {what} within "
                    "{timeout} s; reconnecting",
                    what=what,
                    timeout=self.callTimeout,
                )
                connection.abort()
                raise StoreUnavailableError(
                    f"the session daemon did not answer within {self.callTimeout} s"
                )
            if reason.check(pb.PBConnectionLost, pb.DeadReferenceError):
                raise StoreUnavailableError(LOST)
            raise StoreUnavailableError(
                f"the session daemon failed: {reason.getErrorMessage()}"
            )

        return answer.addErrback(failed)

    def _connected(self, connection: DaemonConnection) -> None:
        self.nearCache.clear()
        self._limits = dict(connection.limits)
        if "absoluteTimeout" in self._limits:
            self._absoluteTimeout = float(self._limits["absoluteTimeout"])
        self._connection = connection
        self.counters["logins"] += 1
        self._wasConnected = True
        daemonAbsolute = self._limits.get("absoluteTimeout")
        if (
            self._expectedAbsolute is not None
            and daemonAbsolute is not None
            and float(daemonAbsolute) != float(self._expectedAbsolute)
        ):
            log.warn(
                "tlsession: the session daemon ends sessions after {daemon} s, "
                "not the {expected} s this app was configured with; the "
                "daemon's applies",
                daemon=daemonAbsolute,
                expected=self._expectedAbsolute,
            )
        log.info(
            "tlsession: logged in to the session daemon at {endpoint}",
            endpoint=self.endpointDescription,
        )

    def _disconnected(self, connection: DaemonConnection, reason: Failure) -> None:
        connection.batcher.close(Failure(StoreUnavailableError(LOST)))
        if self._connection is not connection:
            return
        self._connection = None
        self.nearCache.clear()
        self.counters["cacheFlushes"] += 1
        log.warn(
            "tlsession: lost the session daemon at {endpoint} ({reason}); "
            "session calls fail until it is back",
            endpoint=self.endpointDescription,
            reason=reason.getErrorMessage(),
        )

    def _connectFailed(self, reason: Failure) -> None:
        if reason.check(CancelledError):
            return
        if isLoginRefusal(reason):
            self.counters["loginFailures"] += 1
            log.error(
                "tlsession: the session daemon at {endpoint} refused our secret; "
                "check that the app and the daemon read the same secret file",
                endpoint=self.endpointDescription,
            )
        elif self._wasConnected:
            self._wasConnected = False
            log.info(
                "tlsession: cannot reach the session daemon at {endpoint}: {reason}",
                endpoint=self.endpointDescription,
                reason=reason.getErrorMessage(),
            )


def _payload(answer: Any, sessionID: str, expectedVersion: int = 0) -> bytes:
    """
    The payload of a successful answer; a refusal raises its error.
    """
    try:
        return unpackAnswer(answer, sessionID, expectedVersion)
    except ValueError as e:
        raise StoreUnavailableError(
            f"unexpected answer from the session daemon: {e}"
        ) from None


def _decode(unpack: Callable[[bytes], Any], payload: bytes) -> Any:
    """
    Read a payload with C{unpack}; one that does not read is the daemon's
    fault, not the caller's.
    """
    try:
        return unpack(payload)
    except ValueError as e:
        raise StoreUnavailableError(
            f"unexpected answer from the session daemon: {e}"
        ) from None
