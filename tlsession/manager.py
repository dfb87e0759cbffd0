# -*- test-case-name: tests.unit.test_manager -*-
"""
What applications use: the session of a request, read from its cookie and
kept in an L{ISessionStore}; commit (saving only changes, merging them with a
concurrent save, or failing when they cannot be merged), rotation, logout;
and the cookie policy.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Callable, Dict, Optional

import attrs
from twisted.internet import error as netError
from twisted.internet.defer import (
    Deferred,
    DeferredLock,
    TimeoutError,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from zope.interface import implementer

from tlsession.interfaces import (
    ConflictError,
    ISession,
    ISessionManager,
    ISessionStore,
    SessionGoneError,
    SessionRecord,
    SessionStoreError,
    StoreUnavailableError,
)
from tlsession.session import ConcurrentChangeError, Session
from tlsession.stores import isWellFormedSessionID

__all__ = ["SessionCommitError", "SessionManager", "registeredSession"]

# The request attribute the session is registered under (see web.py's
# adapter to ISession).
_SESSION_ATTRIBUTE = "_tlsessionSession"

_COOKIE_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_EPOCH = b"Thu, 01 Jan 1970 00:00:00 GMT"
_SAME_SITE = ("lax", "strict", "none")

# Failures that mean the store cannot be reached, whatever the store; they
# become StoreUnavailableError so that callers answer 503 for all of them.
_UNREACHABLE = (
    ConnectionError,
    netError.ConnectError,
    netError.ConnectionClosed,
    TimeoutError,
)


class SessionCommitError(SessionStoreError):
    """
    The request's changes to its session could not be saved.

    @ivar reason: C{"gone"} when the session was deleted or expired
        meanwhile (a logout in another tab, say): it is not brought back;
        C{"conflict"} when another request changed a key this request
        changed too since it read the session, or when other requests kept
        saving it through every retry.
    """

    def __init__(self, sessionID: Optional[str], reason: str, message: str) -> None:
        super().__init__(message)
        self.sessionID = sessionID
        self.reason = reason


def registeredSession(request: IRequest) -> Optional[Session]:
    """
    The session a L{SessionManager} registered on C{request}, or C{None}.
    """
    session = getattr(request, _SESSION_ATTRIBUTE, None)
    return session if isinstance(session, Session) else None


def logID(sessionID: Optional[str]) -> str:
    """
    A name for a session in logs that does not give its identifier away
    (the identifier is a credential).
    """
    if sessionID is None:
        return "(new)"
    return "s-" + hashlib.sha256(sessionID.encode("utf-8")).hexdigest()[:12]


@implementer(ISessionManager)
class SessionManager:
    """
    Sessions for requests, kept in C{store}.

    Cookie policy: C{HttpOnly}, C{Path=/}, no C{Domain}, C{SameSite=Lax};
    on TLS requests C{Secure} and the C{__Host-} prefixed name (a separate
    session from the plain-HTTP one). C{Max-Age} is the session's idle
    timeout (or what is left of its absolute lifetime), refreshed whenever
    the store is written or touched.

    @ivar store: the L{ISessionStore}.
    @ivar cookieName: the cookie of plain-HTTP requests.
    @ivar secureCookieName: the cookie of TLS requests.
    """

    log = Logger()

    def __init__(
        self,
        store: ISessionStore,
        clock: Optional[IReactorTime] = None,
        cookieName: bytes = b"TLSESSION",
        secureCookieName: bytes = b"__Host-TLSESSION",
        sameSite: Optional[str] = "lax",
        touchInterval: Optional[float] = None,
        persistentCookie: bool = True,
        forceSecure: bool = False,
        maxRetries: int = 10,
        storeTimeout: Optional[float] = 10.0,
    ) -> None:
        """
        @param clock: the time source (the global reactor by default); the
            store should use the same one.
        @param sameSite: C{"lax"}, C{"strict"}, C{"none"} or C{None} (no
            attribute).
        @param touchInterval: seconds a session may go unwritten before a
            request that does not change it marks it seen, restarting its
            idle timeout; by default a tenth of the session's idle timeout.
        @param persistentCookie: give the cookie a C{Max-Age}; if false it is
            a browser-session cookie.
        @param forceSecure: treat every request as TLS (for a site whose TLS
            ends in front of it, in a balancer or proxy).
        @param maxRetries: how many times a commit re-reads the session and
            merges its changes into the newer version after a concurrent
            save before giving up (commits of one session in this process
            take turns, so only other processes' saves use these up).
        @param storeTimeout: the longest wait for any store call, in
            seconds, after which the store counts as unavailable; C{None}
            waits for the store's own timeout.
        @raise ValueError: for an invalid cookie name or C{sameSite}.
        """
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        for name in (cookieName, secureCookieName):
            if not isinstance(name, bytes) or not _COOKIE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid cookie name")
        if cookieName.lower().startswith((b"__host-", b"__secure-")):
            raise ValueError(
                f"{cookieName!r} is sent over plain HTTP, so it cannot carry the "
                "__Host- or __Secure- prefix; use secureCookieName for that"
            )
        if sameSite is not None and sameSite not in _SAME_SITE:
            raise ValueError(f"sameSite must be one of {_SAME_SITE} or None")
        if touchInterval is not None and not touchInterval >= 0:
            raise ValueError("touchInterval must be a number of seconds >= 0")
        if maxRetries < 0:
            raise ValueError("maxRetries must be >= 0")
        if storeTimeout is not None and not (
            storeTimeout > 0 and math.isfinite(storeTimeout)
        ):
            raise ValueError("storeTimeout must be a positive number of seconds")
        self.store = store
        self.clock: IReactorTime = clock
        self.cookieName = cookieName
        self.secureCookieName = secureCookieName
        self.sameSite = sameSite
        self.touchInterval = touchInterval
        self.persistentCookie = persistentCookie
        self.forceSecure = forceSecure
        self.maxRetries = maxRetries
        self.storeTimeout = storeTimeout
        # The saves of one session from this process take turns: each then
        # conflicts at most with what other processes saved.
        self._saveTurns: Dict[str, DeferredLock] = {}

    # Reading

    def isSecure(self, request: IRequest) -> bool:
        """
        Whether C{request} gets the TLS cookie.
        """
        return self.forceSecure or bool(request.isSecure())

    def cookieNameFor(self, request: IRequest) -> bytes:
        """
        The session cookie's name for C{request}.
        """
        return self.secureCookieName if self.isSecure(request) else self.cookieName

    def sessionForRequest(
        self, request: IRequest, create: bool = True
    ) -> Deferred[Optional[ISession]]:
        """
        Load the session named by C{request}'s cookie and register it on the
        request, so that C{ISession(request)} works.

        A missing, malformed, repeated, unknown or expired cookie gives a
        new session if C{create} is true (it is stored, and its cookie set,
        only once something is put in it), and C{None} otherwise. An
        identifier the store does not hold is never adopted.

        @return: L{Deferred} firing with the L{Session} or C{None}; it fails
            with L{StoreUnavailableError} when the store cannot be reached.
        """
        existing = registeredSession(request)
        if existing is not None:
            return succeed(existing)
        sessionID = self._cookieSessionID(request)
        if sessionID is None:
            return succeed(self._register(request, Session()) if create else None)

        def loaded(record: Optional[SessionRecord]) -> Optional[ISession]:
            existing = registeredSession(request)
            if existing is not None:
                return existing
            if record is None:
                return self._register(request, Session()) if create else None
            return self._register(request, Session(record))

        return self._call(self.store.load, sessionID).addCallback(loaded)

    def _cookieSessionID(self, request: IRequest) -> Optional[str]:
        """
        The identifier in the request's session cookie, if there is exactly
        one cookie of that name and it is shaped like an identifier.
        """
        name = self.cookieNameFor(request)
        values = []
        for header in request.requestHeaders.getRawHeaders(b"cookie", []):
            for part in header.split(b";"):
                key, equals, value = part.strip().partition(b"=")
                if equals and key == name:
                    values.append(value.strip())
        if len(values) != 1:
            if values:
                # Two cookies of one name is what cookie tossing from a
                # sibling domain looks like: neither is trusted.
                self.log.debug(
                    "Ignoring {count} {name} cookies sent together",
                    count=len(values),
                    name=name.decode("ascii"),
                )
            return None
        try:
            sessionID = values[0].decode("ascii")
        except UnicodeDecodeError:
            return None
        return sessionID if isWellFormedSessionID(sessionID) else None

    def _register(self, request: IRequest, session: Session) -> Session:
        setattr(request, _SESSION_ATTRIBUTE, session)
        return session

    # Writing

    def commit(self, request: IRequest) -> Deferred[None]:
        """
        Apply the request's session changes: delete flushed sessions, store
        a new session that has data, rotate, save if modified, or mark an
        unchanged session seen once per C{touchInterval}; and set or clear
        the cookie. Call it before the response's first write: cookies
        cannot follow the headers.

        A save is a compare-and-swap on the version the request read. When
        another request saved first, the session is re-read and this
        request's changes merged into the newer version (L{Session.rebase}),
        up to C{maxRetries} times: keys only this request changed keep its
        values, atomic updates (C{modify}, C{increment}) run again, and a
        key this request set or deleted that the other request changed too
        fails the commit. No change based on a value that changed since it
        was read is reported saved.

        @return: L{Deferred} firing when done; it fails with
            L{SessionCommitError} when the changes cannot be saved (the
            session was deleted meanwhile, another request changed what this
            one changed, or saves kept conflicting), with
            L{StoreUnavailableError} when the store cannot be reached, and
            with L{ValueTooLargeError} when the session is over the store's
            size limit.
        """
        session = registeredSession(request)
        if session is None:
            return succeed(None)
        return Deferred.fromCoroutine(self._commit(request, session))

    async def _commit(self, request: IRequest, session: Session) -> None:
        headersSent = _headersSent(request)
        if session.accessed and not headersSent:
            _varyOnCookie(request)
        flushed = session.takeFlushedIDs()
        for sessionID in flushed:
            await self._call(self.store.delete, sessionID)
        if flushed and not headersSent:
            self._clearCookie(request)
        if session.isNew and session.record is None:
            await self._storeNew(request, session, headersSent)
            return
        if session.rotationRequested:
            if headersSent:
                self.log.warn(
                    "Session {session} was not rotated: cycleKey() was called "
                    "after the response started",
                    session=logID(session.storedID),
                )
            else:
                await self._rotate(request, session)
        if session.modified:
            await self._save(request, session)
            if not headersSent:
                self._setCookie(request, session)
        else:
            await self._touchIfDue(request, session, headersSent)

    async def _storeNew(
        self, request: IRequest, session: Session, headersSent: bool
    ) -> None:
        if not session.modified:
            return
        if headersSent:
            self.log.warn(
                "A new session was not stored: it was first written after the "
                "response started, too late for its cookie"
            )
            return
        record = await self._call(
            self.store.create, session.encode(), self._idleTimeout(session)
        )
        session.stored(record)
        self._setCookie(request, session)

    async def _rotate(self, request: IRequest, session: Session) -> None:
        oldID = session.storedID
        try:
            record = await self._call(self.store.rotate, oldID)
        except SessionGoneError:
            raise self._gone(request, session) from None
        # A save by another request between our load and the rotation is
        # merged (or found in conflict) when our changes are saved.
        session.moved(record)
        self._setCookie(request, session)

    async def _save(self, request: IRequest, session: Session) -> None:
        sessionID = session.storedID
        assert sessionID is not None
        turn = self._saveTurns.get(sessionID)
        if turn is None:
            turn = self._saveTurns[sessionID] = DeferredLock()
        await turn.acquire()
        try:
            await self._saveInTurn(request, session, sessionID)
        finally:
            turn.release()
            # (The next waiter, if any, holds it now, and may already be
            # done with it.)
            if not turn.locked and self._saveTurns.get(sessionID) is turn:
                del self._saveTurns[sessionID]

    async def _saveInTurn(
        self, request: IRequest, session: Session, sessionID: str
    ) -> None:
        for _ in range(self.maxRetries + 1):
            try:
                version = await self._call(
                    self.store.save,
                    sessionID,
                    session.version,
                    session.encode(),
                    self._idleTimeout(session),
                )
            except SessionGoneError:
                raise self._gone(request, session) from None
            except ConflictError:
                record = await self._call(self.store.load, sessionID)
                if record is None:
                    raise self._gone(request, session) from None
                try:
                    session.rebase(record)
                except ConcurrentChangeError as e:
                    message = f"session changes not saved: {e}"
                    raise self._conflict(sessionID, message) from e
                continue
            now = self.clock.seconds()
            assert session.record is not None
            session.stored(
                attrs.evolve(
                    session.record,
                    version=version,
                    data=session.encode(),
                    lastSeen=now,
                    idleTimeout=self._idleTimeout(session)
                    or session.record.idleTimeout,
                )
            )
            return
        raise self._conflict(
            sessionID,
            f"session changes not saved: other requests kept saving the session "
            f"({self.maxRetries + 1} attempts)",
        )

    def _conflict(self, sessionID: str, message: str) -> SessionCommitError:
        self.log.warn(
            "Session {session}: {message}", session=logID(sessionID), message=message
        )
        return SessionCommitError(sessionID, "conflict", message)

    async def _touchIfDue(
        self, request: IRequest, session: Session, headersSent: bool
    ) -> None:
        record = session.record
        if record is None:
            return
        interval = self.touchInterval
        if interval is None:
            interval = record.idleTimeout / 10
        now = self.clock.seconds()
        if now - record.lastSeen < interval:
            return
        try:
            await self._call(self.store.touch, record.sessionID)
        except SessionGoneError:
            # It expired while this request ran; the next request simply
            # starts a new one.
            return
        except StoreUnavailableError as e:
            # The response is right without it; only the idle timeout is
            # not restarted this time.
            self.log.warn(
                "Session {session} not marked seen: {error}",
                session=logID(record.sessionID),
                error=e,
            )
            return
        session.record = attrs.evolve(record, lastSeen=now)
        if not headersSent and self.persistentCookie:
            self._setCookie(request, session)

    def _gone(self, request: IRequest, session: Session) -> SessionCommitError:
        sessionID = session.storedID
        message = (
            "session changes not saved: the session ended while the request "
            "ran (logged out in another request, or expired)"
        )
        self.log.warn(
            "Session {session}: {message}", session=logID(sessionID), message=message
        )
        if not _headersSent(request):
            self._clearCookie(request)
        return SessionCommitError(sessionID, "gone", message)

    def expire(self, request: IRequest) -> Deferred[None]:
        """
        Delete the request's session now and clear its cookie (logout). The
        registered session, if any, is left empty and new.

        @return: L{Deferred} firing when the session is deleted.
        """
        session = registeredSession(request)
        if session is not None:
            session.flush()
            sessionIDs = session.takeFlushedIDs()
        else:
            cookieID = self._cookieSessionID(request)
            sessionIDs = [] if cookieID is None else [cookieID]

        async def expire() -> None:
            for sessionID in sessionIDs:
                await self._call(self.store.delete, sessionID)
            if not _headersSent(request):
                self._clearCookie(request)

        return Deferred.fromCoroutine(expire())

    # Cookies

    def _idleTimeout(self, session: Session) -> Optional[float]:
        if session.idleTimeout is None:
            return None
        return min(session.idleTimeout, float(self.store.absoluteTimeout))

    def _setCookie(self, request: IRequest, session: Session) -> None:
        record = session.record
        assert record is not None and session.storedID is not None
        maxAge: Optional[bytes] = None
        if self.persistentCookie:
            left = record.created + self.store.absoluteTimeout - self.clock.seconds()
            maxAge = b"%d" % max(0, int(min(record.idleTimeout, left)))
        self._addCookie(request, session.storedID.encode("ascii"), maxAge, None)

    def _clearCookie(self, request: IRequest) -> None:
        self._addCookie(request, b"", b"0", _EPOCH)

    def _addCookie(
        self,
        request: IRequest,
        value: bytes,
        maxAge: Optional[bytes],
        expires: Optional[bytes],
    ) -> None:
        name = self.cookieNameFor(request)
        cookies = getattr(request, "cookies", None)
        if isinstance(cookies, list):
            # One Set-Cookie per response for the session: a later decision
            # (a new session after a logout) replaces an earlier one.
            prefix = name + b"="
            cookies[:] = [c for c in cookies if not c.startswith(prefix)]
        addCookie: Any = request.addCookie  # IRequest predates httpOnly, sameSite
        addCookie(
            name,
            value,
            expires=expires,
            path=b"/",
            max_age=maxAge,
            secure=self.isSecure(request),
            httpOnly=True,
            sameSite=self.sameSite,
        )
        _varyOnCookie(request)

    # The store

    def _call(self, method: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Call a store method, bounded by C{storeTimeout}, with every way of
        not reaching the store reported as L{StoreUnavailableError}.
        """
        d = maybeDeferred(method, *args)
        if self.storeTimeout is not None and not d.called:
            d.addTimeout(self.storeTimeout, self.clock)
        return d.addErrback(self._unreachable)

    def _unreachable(self, failure: Failure) -> Failure:
        if failure.check(TimeoutError):
            raise StoreUnavailableError(
                f"the session store did not answer within {self.storeTimeout} seconds"
            )
        if failure.check(*_UNREACHABLE):
            raise StoreUnavailableError(
                f"the session store cannot be reached: {failure.getErrorMessage()}"
            )
        return failure


def _headersSent(request: IRequest) -> bool:
    return bool(getattr(request, "startedWriting", False))


def _varyOnCookie(request: IRequest) -> None:
    """
    Add C{Cookie} to the response's C{Vary} header, unless it is there.
    """
    headers = request.responseHeaders
    present = b",".join(headers.getRawHeaders(b"vary", []))
    tokens = {token.strip().lower() for token in present.split(b",")}
    if b"cookie" not in tokens and b"*" not in tokens:
        headers.addRawHeader(b"Vary", b"Cookie")
