# -*- test-case-name: tests.unit.test_daemon -*-
"""
The session daemon: one process keeps every session in memory and serves
them to all the app processes of a site over Perspective Broker.

Clients log in through twisted.cred with a shared secret (L{SecretChecker});
each gets a L{SessionAvatar} whose C{perspective_*} methods are the
L{ISessionStore} operations. Only basic types travel: each answer is one
byte string with a status byte, so the store's refusals reach the client as
the same exceptions (L{unpackAnswer}). The daemon pushes C{(sessionID,
version)} invalidations to every other connected client through the
C{mind} it passed at login, so clients can keep a near cache
(L{tlsession.stores.pb}).

PB's login is an MD5 challenge/response, so the daemon listens only on unix
sockets (made mode 0600) or TLS unless told C{insecure}; its configuration
is L{tlsession.daemonconfig}, its command line L{tlsession.tap}.

Connections that have not logged in yet are held to a few seconds and to a
share of the connection limit, overall and per client address, and make
way for newer ones (L{SessionServerFactory}): a flood of idle connections
cannot keep an app from logging in.
"""

from __future__ import annotations

import hmac
from functools import partial
from hashlib import md5
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

from twisted.application.service import MultiService
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from zope.interface import implementer

from tlsession._connections import (
    DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
    LOGIN_GRACE,
    MAX_BYTES_BEFORE_LOGIN,
    TURNED_AWAY_COUNTERS,
    SessionServerFactory,
    defaultMaxUnauthenticated,
)
from tlsession._wire import (
    BAD,
    CREATE,
    LOAD,
    MAX_BATCH,
    OK,
    ROTATE,
    SAVE,
    SECRET_USERNAME,
    TOUCH,
    packChanges,
    packRecord,
    packRefusal,
    packSaved,
    packSeen,
    unpackRequest,
)
from tlsession.interfaces import (
    SessionRecord,
)
from tlsuite._listen import ListenService

__all__ = [
    "DEFAULT_LOGIN_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS",
    "LOGIN_GRACE",
    "LoginRefusedError",
    "MAX_BYTES_BEFORE_LOGIN",
    "MAX_VALUE_BYTES_LIMIT",
    "PUSH_BATCH",
    "SecretChecker",
    "SessionAvatar",
    "SessionDaemonService",
    "SessionRealm",
    "SessionServerFactory",
    "defaultMaxUnauthenticated",
]

log = Logger(namespace="tlsession.daemon")

#: The largest per-session value the daemon may be configured to accept:
#: banana refuses any string over 640 KiB and drops the connection.
MAX_VALUE_BYTES_LIMIT = 512 * 1024

#: Invalidations per push message.
PUSH_BATCH = 1000

# Authentication.


@implementer(ICredentialsChecker)
class SecretChecker:
    """
    Accepts the clients that know the shared secret, comparing in constant
    time.

    PB sends an MD5 challenge response
    (L{IUsernameMD5Password<twisted.spread.pb.IUsernameMD5Password>}); plain
    L{IUsernamePassword} credentials are accepted too, for in-process use.
    """

    credentialInterfaces = (IUsernamePassword, pb.IUsernameMD5Password)

    def __init__(self, secret: bytes, username: bytes = SECRET_USERNAME) -> None:
        if not secret:
            raise ValueError("the secret must not be empty")
        self._secret = secret
        self._hashedSecret = md5(secret).digest()
        self._username = username

    def requestAvatarId(self, credentials: Any) -> Deferred[Union[bytes, Tuple[()]]]:
        """
        Check C{credentials}.

        @return: a L{Deferred} firing with the user name, or failing with
            L{UnauthorizedLogin}.
        """
        username = credentials.username
        if isinstance(username, str):
            username = username.encode("utf-8", "replace")
        if not isinstance(username, bytes) or not hmac.compare_digest(
            username, self._username
        ):
            return self._refuse("unknown user name")
        if IUsernamePassword.providedBy(credentials):
            password = credentials.password
            if isinstance(password, str):
                password = password.encode("utf-8")
            if isinstance(password, bytes) and hmac.compare_digest(
                password, self._secret
            ):
                return succeed(self._username)
            return self._refuse("wrong secret")
        challenge = getattr(credentials, "challenge", None)
        response = getattr(credentials, "response", None)
        if isinstance(challenge, bytes) and isinstance(response, bytes):
            expected = md5(self._hashedSecret + challenge).digest()
            if hmac.compare_digest(response, expected):
                return succeed(self._username)
            return self._refuse("wrong secret")
        # Some other MD5 credentials: let them do the comparison.
        checked = maybeDeferred(credentials.checkMD5Password, self._hashedSecret)

        def decide(matched: object) -> Any:
            if matched is True:
                return self._username
            return self._refuse("wrong secret")

        return checked.addCallback(decide)

    def _refuse(self, reason: str) -> Deferred[Union[bytes, Tuple[()]]]:
        log.warn("tlsession: refused a login: {reason}", reason=reason)
        failed: Deferred[Union[bytes, Tuple[()]]] = Deferred()
        failed.errback(UnauthorizedLogin(reason))
        return failed


# The avatar and the realm.


class SessionAvatar(pb.Avatar):
    """
    One logged-in app process. Its store operations come in batches (one
    PB message carries every request the client had waiting), each request
    a byte string; each answer is one too: L{OK} and the operation's
    payload, the store's refusal (L{CONFLICT} and the current version,
    L{GONE}, L{TOO_LARGE} and the size and limit), or L{BAD} for a request
    that could not be read. L{unpackAnswer} reads it.

    @ivar mind: the client's L{pb.RemoteReference} for invalidations, or
        C{None}.
    @ivar outstandingPushes: push messages sent and not yet acknowledged.
    """

    def __init__(self, realm: SessionRealm, mind: Any) -> None:
        self.realm = realm
        self.mind = mind
        self.outstandingPushes = 0
        self.connected = True

    def perspective_limits(self) -> dict[str, Any]:
        """
        The daemon's limits: C{idleTimeout}, C{absoluteTimeout},
        C{maxValueBytes}.
        """
        store = self.realm.store
        return {
            "idleTimeout": float(store.idleTimeout),
            "absoluteTimeout": float(store.absoluteTimeout),
            "maxValueBytes": int(store.maxValueBytes),
        }

    def perspective_stats(self) -> dict[str, Any]:
        """
        The daemon's counters (see L{SessionRealm.stats}).
        """
        return self.realm.stats()

    def perspective_batch(self, requests: object) -> Any:
        """
        Run requests (L{packCreate}, L{packSave}, L{packSession}) in order.

        @return: their answers, in the same order (a L{Deferred} of them if
            the store answers later).
        """
        if not isinstance(requests, list) or len(requests) > MAX_BATCH:
            raise pb.Error(
                f"bad request: expected a list of at most {MAX_BATCH} requests"
            )
        return self.realm.runBatch(self, requests)


@implementer(IRealm)
class SessionRealm:
    """
    Hands a L{SessionAvatar} to each client that logs in, and pushes every
    change the store reports to the other clients.

    Changes made by a client's own call reach the others right after that
    call; changes made by the store on its own (expiry sweeps) are batched
    and sent on the next turn of the reactor.

    @ivar store: the store, which must offer C{addObserver} and C{stats}.
    @ivar clock: the store's clock (session times).
    @ivar avatars: the logged-in clients.
    """

    def __init__(
        self,
        store: Any,
        clock: IReactorTime,
        reactor: Optional[IReactorTime] = None,
        maxOutstandingPushes: int = 1000,
    ) -> None:
        """
        @param store: the session store the daemon serves.
        @param clock: the clock the store keeps its times by.
        @param reactor: schedules batched pushes and reads the time for
            statistics (C{clock} if C{None}).
        @param maxOutstandingPushes: push messages a client may leave
            unacknowledged before it is disconnected (it cannot be keeping
            its near cache right, and would make the daemon buffer without
            bound).
        """
        self.store = store
        self.clock = clock
        self.reactor = reactor if reactor is not None else clock
        self.maxOutstandingPushes = maxOutstandingPushes
        self.avatars: list[SessionAvatar] = []
        self._origin: Optional[SessionAvatar] = None
        self._subject: Optional[str] = None
        self._inCall = False
        self._stopped = False
        self._pending: list[tuple[Optional[SessionAvatar], str, Optional[int]]] = []
        self._flushCall: Optional[IDelayedCall] = None
        self.started = self.reactor.seconds()
        self._rateMark = (self.started, 0)
        self.counters = {
            "logins": 0,
            "pushMessages": 0,
            "invalidations": 0,
            "slowClientsDropped": 0,
        }
        #: More numbers for L{stats}: the connection counters of the
        #: factory serving the realm (L{SessionServerFactory.stats}).
        self.connectionStats: Callable[[], Dict[str, int]] = dict
        store.addObserver(self._changed)

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, SessionAvatar, Callable[[], None]]:
        """
        Make the avatar of a client that logged in.
        """
        if pb.IPerspective not in interfaces:
            raise TypeError("the session daemon serves Perspective Broker only")
        avatar = SessionAvatar(self, mind)
        self.avatars.append(avatar)
        self.counters["logins"] += 1

        def logout() -> None:
            avatar.connected = False
            if avatar in self.avatars:
                self.avatars.remove(avatar)

        return pb.IPerspective, avatar, logout

    def runBatch(self, avatar: SessionAvatar, requests: list[Any]) -> Any:
        """
        Run a batch of requests on behalf of C{avatar}, then push what they
        changed to the clients.

        @return: the answers, or a L{Deferred} of them when the store
            answers later.
        """
        answers = [self._run(avatar, request) for request in requests]
        self._flush()
        if all(isinstance(answer, bytes) for answer in answers):
            return answers
        return gatherResults(
            [a if isinstance(a, Deferred) else succeed(a) for a in answers]
        )

    def _run(self, avatar: SessionAvatar, request: object) -> Any:
        """
        Run one request: its answer, or a L{Deferred} of it.

        The caller learns what happened to the session a request is about
        from the answer, so it is not told again; it is told about every
        other session the request changed (sessions evicted or expired to
        make room).
        """
        try:
            operation, sessionID, version, data, idle = unpackRequest(request)
        except ValueError as e:
            return BAD + str(e).encode("utf-8")
        store = self.store
        now = self.clock.seconds()
        call: Callable[[], Deferred[Any]]
        encode: Callable[[Any], bytes]
        if operation == LOAD:
            call = partial(store.load, sessionID)
            encode = _packLoaded
        elif operation == SAVE:
            call = partial(store.save, sessionID, version, data, idle)
            # lastSeen as read just before the save: never later than the
            # one stored.
            encode = partial(_packSavedAt, now)
        elif operation == TOUCH:
            call = partial(store.touch, sessionID)
            encode = partial(_packSeenAt, now)
        elif operation == CREATE:
            call = partial(store.create, data, idle)
            encode = packRecord
        elif operation == ROTATE:
            call = partial(store.rotate, sessionID)
            encode = packRecord
        else:
            call = partial(store.delete, sessionID)
            encode = _packNothing
        self._origin, self._subject, self._inCall = avatar, sessionID, True
        try:
            result = maybeDeferred(call)
        finally:
            self._origin, self._subject, self._inCall = None, None, False
        result.addCallbacks(lambda value: OK + encode(value), self._refused)
        # The memory store answers at once: answer without a Deferred then.
        settled: list[Any] = []

        def keep(answer: Any) -> Any:
            settled.append(answer)
            return answer

        result.addBoth(keep)
        if settled:
            return settled[0]
        return result

    def _refused(self, failure: Failure) -> Any:
        """
        The answer to a store call that failed.
        """
        answer = packRefusal(failure)
        if isinstance(answer, bytes):
            return answer
        log.failure("tlsession: a store call failed", failure)
        return BAD + b"internal error"

    def _changed(self, sessionID: str, version: Optional[int]) -> None:
        """
        The store's observer: a session changed (C{version}) or went away
        (C{None}).
        """
        if self._stopped:
            # Every client is being disconnected, and drops its near cache.
            return
        origin = self._origin if sessionID == self._subject else None
        self._pending.append((origin, sessionID, version))
        if not self._inCall and self._flushCall is None:
            self._flushCall = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        """
        Send the pending invalidations, in batches, to every client but the
        one that caused each.
        """
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        for avatar in list(self.avatars):
            if avatar.mind is None:
                continue
            changes = [
                (sid, ver) for origin, sid, ver in pending if origin is not avatar
            ]
            for start in range(0, len(changes), PUSH_BATCH):
                self._push(avatar, changes[start : start + PUSH_BATCH])

    def _push(self, avatar: SessionAvatar, changes: list[Any]) -> None:
        """
        Send one batch to one client, which must keep up.
        """
        if not avatar.connected:
            return
        if avatar.outstandingPushes >= self.maxOutstandingPushes:
            self.counters["slowClientsDropped"] += 1
            log.warn(
                "tlsession: a client left {count} invalidation messages "
                "unanswered; disconnecting it (it drops its near cache and "
                "reconnects)",
                count=avatar.outstandingPushes,
            )
            avatar.connected = False
            _disconnect(avatar.mind)
            return
        try:
            sent = avatar.mind.callRemote("invalidate", packChanges(changes))
        except pb.DeadReferenceError:
            return
        avatar.outstandingPushes += 1
        self.counters["pushMessages"] += 1
        self.counters["invalidations"] += len(changes)

        def answered(result: object) -> None:
            avatar.outstandingPushes -= 1

        sent.addBoth(answered)

    def stop(self) -> None:
        """
        Send what is pending now and schedule nothing more (the daemon is
        stopping).
        """
        self._flush()
        self._stopped = True

    def stats(self) -> dict[str, Any]:
        """
        The store's counters plus the daemon's: C{clients}, C{logins},
        C{pushMessages}, C{invalidations}, C{slowClientsDropped},
        C{operations} (store calls answered), C{opsPerSecond} (since the
        previous summary line, or the start) and C{uptime} in seconds; and
        the connection counters of L{connectionStats}.
        """
        numbers = dict(self.store.stats())
        numbers.update(self.counters)
        numbers.update(self.connectionStats())
        now = self.reactor.seconds()
        operations = _operations(numbers)
        markTime, markOperations = self._rateMark
        elapsed = now - markTime
        numbers["operations"] = operations
        numbers["opsPerSecond"] = (
            (operations - markOperations) / elapsed if elapsed > 0 else 0.0
        )
        numbers["clients"] = len(self.avatars)
        numbers["uptime"] = now - self.started
        return numbers

    def markRate(self) -> None:
        """
        Start a new interval for C{opsPerSecond}.
        """
        self._rateMark = (self.reactor.seconds(), _operations(self.store.stats()))


def _packLoaded(record: Optional[SessionRecord]) -> bytes:
    return b"" if record is None else packRecord(record)


def _packSavedAt(lastSeen: float, version: int) -> bytes:
    return packSaved(version, lastSeen)


def _packSeenAt(lastSeen: float, ignored: object) -> bytes:
    return packSeen(lastSeen)


def _packNothing(ignored: object) -> bytes:
    return b""


_OPERATION_COUNTERS = ("creates", "loads", "saves", "deletes", "rotations", "touches")


def _operations(numbers: dict[str, Any]) -> int:
    return sum(int(numbers.get(name, 0)) for name in _OPERATION_COUNTERS)


def _disconnect(mind: Any) -> None:
    """
    Close the connection a remote reference came over.
    """
    broker = getattr(mind, "broker", None)
    transport = getattr(broker, "transport", None)
    if transport is not None:
        transport.loseConnection()


class LoginRefusedError(pb.Error, UnauthorizedLogin):
    """
    A login without the shared secret. It is a L{pb.Error}, so PB sends it
    to the peer without logging a traceback (the checker has logged one
    line); it does not say whether the user name or the secret was wrong.
    """


class _ClosingPortal(Portal):
    """
    A portal that refuses logins with L{LoginRefusedError} and closes the
    connection once the refusal has been sent: a peer without the secret
    gets one try per connection.
    """

    def __init__(self, realm: IRealm, checkers: Sequence[Any], clock: Any) -> None:
        super().__init__(realm, checkers)
        self.clock = clock

    def login(self, credentials: Any, mind: Any, *interfaces: Any) -> Any:
        attempt = super().login(credentials, mind, *interfaces)
        # PB's challenger credentials know their connection; a mind does too.
        broker = getattr(credentials, "broker", None) or getattr(mind, "broker", None)

        def accepted(result: Any) -> Any:
            loggedIn = getattr(broker, "loggedIn", None)
            if loggedIn is not None:
                loggedIn()
            return result

        def refused(failure: Failure) -> Failure:
            if not failure.check(LoginFailed):
                return failure
            transport = getattr(broker, "transport", None)
            if transport is not None:
                self.clock.callLater(0, transport.loseConnection)
            raise LoginRefusedError("login refused: wrong user name or secret")

        return attempt.addCallbacks(accepted, refused)


# The service.


class SessionDaemonService(MultiService):
    """
    The session daemon as a service: its listeners, the store's sweep and
    the periodic summary line. Stopping it stops listening, closes every
    client connection and stops the sweep.

    @ivar realm: the L{SessionRealm}.
    @ivar factory: the L{SessionServerFactory}.
    @ivar listeners: one service per listen endpoint.
    """

    def __init__(
        self,
        store: Any,
        secret: bytes,
        listen: Sequence[str],
        clock: IReactorTime,
        reactor: Any,
        statsInterval: float = 60.0,
        loginTimeout: float = DEFAULT_LOGIN_TIMEOUT,
        maxConnections: int = DEFAULT_MAX_CONNECTIONS,
        maxUnauthenticated: Optional[int] = None,
        maxUnauthenticatedPerAddress: int = DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
    ) -> None:
        """
        @param store: the store to serve, started and stopped with the
            daemon (an L{IService} with C{addObserver} and C{stats}, as
            L{tlsession.stores.memory.MemorySessionStore} is).
        @param secret: the shared secret clients log in with.
        @param listen: server endpoint strings (checked by the caller, see
            L{DaemonConfig}).
        @param clock: the store's clock.
        @param reactor: listens, and schedules pushes and summaries.
        @param loginTimeout: seconds a connection has to log in.
        @param maxConnections: connections served at once.
        @param maxUnauthenticated: connections that may be waiting to log
            in at once (L{defaultMaxUnauthenticated} if C{None}).
        @param maxUnauthenticatedPerAddress: of those, from one client
            address.
        """
        super().__init__()
        self.store = store
        self.reactor = reactor
        self.statsInterval = statsInterval
        self.realm = SessionRealm(store, clock, reactor)
        portal = _ClosingPortal(self.realm, [SecretChecker(secret)], reactor)
        self.factory = SessionServerFactory(
            portal,
            reactor,
            loginTimeout=loginTimeout,
            maxConnections=maxConnections,
            maxUnauthenticated=maxUnauthenticated,
            maxUnauthenticatedPerAddress=maxUnauthenticatedPerAddress,
        )
        self.realm.connectionStats = self.factory.stats
        self.listeners: list[ListenService] = []
        for description in listen:
            listener = ListenService(
                description,
                serverFromString(reactor, description),
                self.factory,
                who="the session daemon ",
            )
            listener.setServiceParent(self)
            self.listeners.append(listener)
        self._summary = LoopingCall(self.logSummary)
        self._summary.clock = reactor

    def startService(self) -> None:
        factory = self.factory
        log.info(
            "tlsession: session daemon listening on {listen}; up to {sessions} "
            "sessions, {megabytes:.0f} MiB; up to {connections} connections, "
            "{waiting} of them logging in ({perAddress} per address) for at "
            "most {timeout:g} s",
            listen=", ".join(listener.description for listener in self.listeners),
            sessions=getattr(self.store, "maxSessions", "?"),
            megabytes=getattr(self.store, "maxBytes", 0) / 2**20,
            connections=factory.maxConnections,
            waiting=factory.maxUnauthenticated,
            perAddress=factory.maxUnauthenticatedPerAddress,
            timeout=factory.loginTimeout,
        )
        self.store.startService()
        self.realm.markRate()
        if self.statsInterval > 0:
            self._summary.start(self.statsInterval, now=False)
        super().startService()

    def stopService(self) -> Deferred[None]:
        self.running = False
        stopped = DeferredList(
            [maybeDeferred(listener.stopService) for listener in self.listeners]
        )

        def rest(_: object) -> Deferred[None]:
            self.realm.stop()
            if self._summary.running:
                self._summary.stop()
            self.logSummary()
            return self.factory.disconnectAll()

        def stopStore(_: object) -> Deferred[None]:
            # Last: the connections closed above no longer call it.
            return maybeDeferred(self.store.stopService)

        return stopped.addCallback(rest).addCallback(stopStore)

    def stats(self) -> dict[str, Any]:
        """
        The daemon's counters (L{SessionRealm.stats}).
        """
        return self.realm.stats()

    def logSummary(self) -> None:
        """
        Log the one-line summary: sessions, bytes, evictions (of returning
        sessions among them), expiries, operations per second since the
        previous line, clients, connections logging in, and connections
        turned away since the start.
        """
        numbers = self.realm.stats()
        log.info(
            "tlsession: {sessions} sessions, {bytes} bytes, {evictions} "
            "evictions ({returning} returning), {expired} expired, {rate:.1f} "
            "ops/s, {clients} clients, {loggingIn} logging in, {turnedAway} "
            "connections turned away",
            sessions=numbers.get("sessions", 0),
            bytes=numbers.get("bytes", 0),
            evictions=numbers.get("evictions", 0),
            returning=numbers.get("evictedReturning", 0),
            expired=numbers.get("expired", 0),
            rate=numbers["opsPerSecond"],
            clients=numbers["clients"],
            loggingIn=numbers.get("loggingIn", 0),
            turnedAway=sum(int(numbers.get(name, 0)) for name in TURNED_AWAY_COUNTERS),
        )
        self.realm.markRate()
