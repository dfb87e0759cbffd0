# -*- test-case-name: tests.unit.test_memorystore -*-
"""
The interfaces of tlsession: the store behind the sessions (L{ISessionStore}),
the session a request holds (L{ISession}), and what applications use
(L{ISessionManager}).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import attrs
from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest
from zope.interface import Attribute, Interface


class SessionStoreError(Exception):
    """
    Base class of the errors a session store reports.
    """


class ConflictError(SessionStoreError):
    """
    C{save} was given a version that is no longer the record's: another
    request saved the session in between.

    @ivar current: the record's current version, when the store knows it.
    """

    def __init__(self, sessionID: str, expected: int, current: Optional[int] = None):
        super().__init__(
            f"session was saved by another request (expected version {expected}"
            + (f", now {current})" if current is not None else ")")
        )
        self.sessionID = sessionID
        self.expected = expected
        self.current = current


class SessionGoneError(SessionStoreError):
    """
    The session no longer exists (deleted, rotated or expired) and will not
    be brought back by a save.
    """

    def __init__(self, sessionID: str) -> None:
        super().__init__("the session no longer exists (logged out or expired)")
        self.sessionID = sessionID


class ValueTooLargeError(SessionStoreError):
    """
    The session's data is larger than the store accepts.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"session data of {size} bytes is over the limit of {limit} bytes"
        )
        self.size = size
        self.limit = limit


class StoreUnavailableError(SessionStoreError):
    """
    The store cannot be reached right now (the daemon or server is down);
    the request should fail fast (503) rather than wait.
    """


@attrs.frozen
class SessionRecord:
    """
    One stored session, as a store returns it.

    @ivar sessionID: the identifier (URL-safe text, 43 characters for the
        256-bit identifiers the stores generate).
    @ivar version: increases with every save; C{save} compares it.
    @ivar data: the session's value: opaque bytes to the store.
    @ivar created: when the session was created (store clock, seconds).
    @ivar lastSeen: when it was last created, saved or touched.
    @ivar idleTimeout: seconds of inactivity after which it expires.
    """

    sessionID: str
    version: int
    data: bytes
    created: float
    lastSeen: float
    idleTimeout: float


class ISessionStore(Interface):
    """
    Where sessions live. Every method returns a
    L{Deferred<twisted.internet.defer.Deferred>}; values are
    opaque bytes.

    Expiry is enforced on every read: a record idle for longer than its
    C{idleTimeout}, or older than the store's C{absoluteTimeout}, is gone
    (C{load} gives C{None}, C{save}/C{touch}/C{rotate} fail with
    L{SessionGoneError}), whether or not a sweep has reclaimed it yet.
    """

    idleTimeout = Attribute("Default seconds of inactivity before expiry.")
    absoluteTimeout = Attribute("Seconds after creation when a session ends.")
    maxValueBytes = Attribute("The largest C{data} accepted.")

    def create(
        data: bytes = b"", idleTimeout: Optional[float] = None
    ) -> Deferred[SessionRecord]:
        """
        Store a new session under a fresh random identifier.

        @return: L{Deferred<twisted.internet.defer.Deferred>} firing with the new
            L{SessionRecord} (version 1).
        @raise ValueTooLargeError: (in the Deferred) for oversized data.
        """

    def load(sessionID: str) -> Deferred[Optional[SessionRecord]]:
        """
        Read a session.

        @return: L{Deferred<twisted.internet.defer.Deferred>} firing with the
            L{SessionRecord}, or C{None}
            when there is no live session by that identifier (unknown,
            malformed, deleted or expired).
        """

    def save(
        sessionID: str,
        expectedVersion: int,
        data: bytes,
        idleTimeout: Optional[float] = None,
    ) -> Deferred[int]:
        """
        Replace a session's data if nobody saved it since C{expectedVersion}
        (compare-and-swap), and mark it seen.

        @param idleTimeout: a new idle timeout for this session, or C{None}
            to keep its own.
        @return: L{Deferred<twisted.internet.defer.Deferred>} firing with the new
            version.
        @raise ConflictError: the record's version is not C{expectedVersion}.
        @raise SessionGoneError: the session was deleted or expired; it is
            not brought back.
        @raise ValueTooLargeError: for oversized data.
        """

    def touch(sessionID: str) -> Deferred[None]:
        """
        Mark a session seen, restarting its idle timeout, without changing
        its data or version.

        @return: L{Deferred<twisted.internet.defer.Deferred>} firing with C{None}.
        @raise SessionGoneError: the session does not exist.
        """

    def rotate(sessionID: str) -> Deferred[SessionRecord]:
        """
        Move a session to a new random identifier, keeping its data; the old
        identifier stops working at once.

        @return: L{Deferred<twisted.internet.defer.Deferred>} firing with the new
            L{SessionRecord}.
        @raise SessionGoneError: the session does not exist.
        @raise ConflictError: other writers kept changing the session while
            it was being moved (stores that cannot rotate atomically retry a
            few times first).
        """

    def delete(sessionID: str) -> Deferred[None]:
        """
        Remove a session. Deleting a missing session is not an error.

        @return: L{Deferred<twisted.internet.defer.Deferred>} firing with C{None}.
        """


class ISession(Interface):
    """
    The session of one request: a mapping of JSON-serialisable values.

    Reading and writing it is synchronous (it was loaded before the
    resource rendered); the manager saves it after the response if it was
    modified.

    Concurrent requests of one session never lose each other's writes
    silently: when another request saved the session after this one read
    it, this request's changes are merged with that request's key by key.
    A key only one of them changed keeps that change; a key this request
    set or deleted that the other request changed too fails the commit (the
    client gets 409), unless this request changed it through L{modify} or
    L{increment}, which run again on the newer value.
    """

    sessionID = Attribute("The session identifier (C{None} before it is stored).")
    modified = Attribute("Whether the data changed and must be saved.")
    isNew = Attribute("Whether the session was created for this request.")

    def __getitem__(key: str) -> object:
        """
        The value stored under C{key}.
        """

    def __setitem__(key: str, value: object) -> None:
        """
        Store a JSON-serialisable value (marks the session modified).
        """

    def __delitem__(key: str) -> None:
        """
        Remove C{key} (marks the session modified).
        """

    def get(key: str, default: object = None) -> object:
        """
        The value under C{key}, or C{default}.
        """

    def modify(
        key: str, function: Callable[[Any], Any], default: object = None
    ) -> object:
        """
        Replace the value under C{key} (C{default} when missing) with
        C{function(value)}, now and again on the newer value whenever
        another request saved the session first, so that concurrent
        updates of one key all count. C{function} gets a copy, must only
        compute, and may run several times; if it raises on a newer value
        the commit fails as a conflict.

        @return: the new value.
        @raise TypeError: if the result is not JSON-serialisable.
        """

    def increment(key: str, delta: Union[int, float] = 1) -> Union[int, float]:
        """
        Add C{delta} to the number under C{key} (0 when missing), as
        L{modify} does.

        @return: the new value.
        @raise TypeError: if C{delta} or the value is not a number.
        """

    def cycleKey() -> None:
        """
        Give the session a new identifier (after login), keeping its data;
        takes effect when the request's session is committed.
        """

    def flush() -> None:
        """
        Empty the session and drop it (logout): the next request starts a
        new one.
        """

    def setExpiry(seconds: float) -> None:
        """
        Set this session's idle timeout in seconds (capped by the store's
        absolute timeout).
        """

    def csrfToken() -> str:
        """
        The session's CSRF token (created on first use).
        """

    def checkCSRFToken(token: str) -> bool:
        """
        Whether C{token} is this session's CSRF token (constant-time).
        """


class ISessionManager(Interface):
    """
    What applications use: sessions for requests, over an L{ISessionStore},
    with the cookie policy.
    """

    store = Attribute("The L{ISessionStore} sessions live in.")
    cookieName = Attribute("The session cookie's name (bytes).")

    def sessionForRequest(
        request: IRequest, create: bool = True
    ) -> Deferred[Optional[ISession]]:
        """
        Load (or, with C{create}, start) the session of C{request} and
        register it on the request so that C{ISession(request)} works.

        @return: L{Deferred<twisted.internet.defer.Deferred>} firing with the
            L{ISession}, or C{None} when
            there is none and C{create} is false.
        """

    def commit(request: IRequest) -> Deferred[None]:
        """
        Save the request's session if it was modified, and apply rotation
        and flushes. When another request saved the session meanwhile, this
        request's changes are merged into that version (see L{ISession});
        a change that cannot be merged fails the commit.

        @return: L{Deferred<twisted.internet.defer.Deferred>} firing when saved.
        """

    def expire(request: IRequest) -> Deferred[None]:
        """
        Delete the request's session and clear its cookie.

        @return: L{Deferred<twisted.internet.defer.Deferred>} firing when done.
        """
