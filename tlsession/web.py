# -*- test-case-name: tests.unit.test_web -*-
"""
Sessions for plain twisted.web resources: L{SessionResource} loads the
session before the resources below it are found and rendered, so that
C{ISession(request)} works synchronously in ordinary C{render_GET} methods,
and commits it before the response's headers go out.

A .tac file::

    from twisted.application import service, strports
    from twisted.internet import reactor
    from tlsession import MemorySessionStore, SessionManager, sessionSite

    application = service.Application("site")
    store = MemorySessionStore(reactor)
    store.setServiceParent(application)  # sweeps expired sessions
    site = sessionSite(MyRoot(), SessionManager(store, reactor))
    strports.service("tcp:8080", site).setServiceParent(application)

Put a gzip C{EncodingResourceWrapper} around resources below the wrapper
or around the wrapper itself; either works. Use one manager per site: an
inner wrapper uses the session and commit of the outer one.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.components import getAdapterFactory, registerAdapter
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from tlsession.interfaces import ISession, StoreUnavailableError, ValueTooLargeError
from tlsession.manager import SessionCommitError, SessionManager, registeredSession
from tlsuite._loglimit import LogLimiter
from tlsuite._twisted import encodingResourceEncoder

__all__ = ["NoSessionError", "SessionResource", "sessionSite"]

log = Logger()

_HOLD_ATTRIBUTE = "_tlsessionHold"

_GONE = (
    "Your session ended while this request was being handled (you may have "
    "logged out in another window), so what it changed was not kept. "
    "Please try again.\n"
)
_CONFLICT = (
    "Another request changed your session at the same time, so what this "
    "request changed was not kept. Please try again.\n"
)
_UNAVAILABLE = "Sessions are unavailable for a moment. Please try again shortly.\n"
_FAILED = "The session could not be saved.\n"
_TOO_LARGE = "The session could not be saved: it grew over the size limit.\n"

# Under an outage every request fails the same way: one log line per this
# many seconds says so, with a count.
_OUTAGE_LOG_INTERVAL = 10.0


class NoSessionError(LookupError):
    """
    C{ISession(request)} was asked for a request that has no session loaded.
    """


def _sessionOfRequest(request: IRequest) -> ISession:
    session = registeredSession(request)
    if session is None:
        # A request that must not have a session says so itself (tlcache's
        # renders for the cache, shared between users).
        refuse = getattr(request, "refuseSession", None)
        if refuse is not None:
            refuse()
        raise NoSessionError(
            "no session was loaded for this request: wrap the resource in "
            "tlsession.SessionResource, or call "
            "SessionManager.sessionForRequest(request) first"
        )
    return session


if getAdapterFactory(IRequest, ISession, None) is None:
    registerAdapter(_sessionOfRequest, IRequest, ISession)


@implementer(IResource)
class SessionResource:
    """
    Wraps C{wrapped} so that every request below it has its session loaded
    (C{ISession(request)}) and committed.

    The wrapper is a leaf to twisted.web: once the session is loaded, it
    finds the resource the request is for below C{wrapped} (so
    C{getChildWithDefault} methods can use the session too) and renders it.

    The session is committed when the response first writes or finishes,
    before its headers go out, so cookie changes (a new session, a rotation,
    a logout) reach the client; a session changed after the response began
    is saved again when it finishes. Responses with a 5xx status (a failed
    render) save nothing. When the store cannot be reached the client gets
    503 with C{Retry-After}; when the changes cannot be saved because the
    session ended meanwhile or another request changed the same keys, 409
    in place of the response, so that the client does not believe in a
    change that was lost. When the save at the finish fails, the status has
    gone out already: the response is cut off instead of finished (the
    connection, or the HTTP/2 stream, is aborted), for the same reason.
    """

    isLeaf = True

    def __init__(
        self, wrapped: IResource, manager: SessionManager, retryAfter: int = 5
    ) -> None:
        """
        @param wrapped: the resource (tree) to give sessions to.
        @param manager: the L{SessionManager}.
        @param retryAfter: the C{Retry-After} seconds of 503 answers.
        """
        self.wrapped = wrapped
        self.manager = manager
        self.retryAfter = retryAfter
        self._outageLog = LogLimiter(manager.clock, _OUTAGE_LOG_INTERVAL)

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        """
        The child of the wrapped resource, wrapped in turn (for code that
        traverses by hand).
        """
        child = self.wrapped.getChildWithDefault(name, request)
        return SessionResource(child, self.manager, self.retryAfter)

    def putChild(self, path: bytes, child: IResource) -> None:
        """
        Add a child to the wrapped resource.
        """
        self.wrapped.putChild(path, child)

    def render(self, request: IRequest) -> Any:
        """
        Load the session, then find and render the requested resource.
        """
        if getattr(request, _HOLD_ATTRIBUTE, None) is not None:
            # An outer wrapper loaded the session and will commit it.
            self._renderWrapped(request)
            return NOT_DONE_YET
        connection = _Connection(request)
        d = self.manager.sessionForRequest(request)
        d.addCallbacks(
            self._loaded,
            self._notLoaded,
            callbackArgs=(request, connection),
            errbackArgs=(request, connection),
        )
        d.addErrback(lambda f: log.failure("Rendering under a session failed", f))
        return NOT_DONE_YET

    def _loaded(self, session: Any, request: IRequest, connection: _Connection) -> None:
        if not session.isNew:
            # Read from the store: whatever outage there was is over.
            self._outageEnded()
        if connection.lost:
            return
        _CommitBeforeHeaders(request, self, connection)
        self._renderWrapped(request)

    def _renderWrapped(self, request: IRequest) -> None:
        try:
            child = getChildForRequest(self.wrapped, request)
            # As twisted.web's Request.process does: gzip and the like.
            encodingResourceEncoder(child, request)
            request.render(child)  # type: ignore[attr-defined]
        except Exception:
            request.processingFailed(Failure())  # type: ignore[attr-defined]

    def _notLoaded(
        self, failure: Failure, request: IRequest, connection: _Connection
    ) -> None:
        if connection.lost:
            return
        if failure.check(StoreUnavailableError):
            self._reportOutage(failure)
            write, finish = request.write, request.finish
            _respond(request, 503, _UNAVAILABLE, write, finish, self.retryAfter)
        else:
            request.processingFailed(failure)  # type: ignore[attr-defined]

    def _reportOutage(self, failure: Failure) -> None:
        """
        Log that the store cannot be reached, at most once per ten seconds
        while the outage lasts.
        """
        suppressed = self._outageLog.allow()
        if suppressed is not None:
            log.warn(
                "Answering 503: {error} ({count} request(s) since the last report)",
                error=failure.getErrorMessage(),
                count=suppressed + 1,
            )

    def _outageEnded(self) -> None:
        if self._outageLog.active:
            log.info("The session store answers again")
            self._outageLog.reset()


def sessionSite(
    resource: IResource, manager: SessionManager, **siteArguments: Any
) -> Site:
    """
    A L{Site} whose every resource has sessions from C{manager}.

    @param siteArguments: passed on to L{Site} (C{reactor}, C{logPath}...).
    """
    return Site(SessionResource(resource, manager), **siteArguments)


class _Connection:
    """
    Whether the client went away, so nothing is written to a lost request.
    """

    def __init__(self, request: Any) -> None:
        self.lost = False
        request.notifyFinish().addErrback(self._lost)

    def _lost(self, reason: Failure) -> None:
        self.lost = True


class _CommitBeforeHeaders:
    """
    Holds a response's first write (or its finish) until the session is
    committed, so the commit's cookies go out with the headers; commits again
    at the finish if the session changed after the response began.

    It stands in for the request's C{write} and C{finish} until the response
    is finished.
    """

    def __init__(
        self, request: Any, wrapper: SessionResource, connection: _Connection
    ) -> None:
        self.request = request
        self.wrapper = wrapper
        self.connection = connection
        self._write: Callable[[bytes], None] = request.write
        self._finish: Callable[[], None] = request.finish
        request.write = self.write
        request.finish = self.finish
        setattr(request, _HOLD_ATTRIBUTE, self)
        self._held: List[bytes] = []
        self._committing = False
        self._commits = 0
        self._finishWanted = False
        self._noSave = False
        self._replaced = False
        self._paused: Any = None

    def write(self, data: bytes) -> None:
        """
        Hold C{data} while a commit runs (starting the first one).
        """
        if self._replaced:
            return
        if self._committing or (self._commits == 0 and not self._noSave):
            self._held.append(data)
            if not self._committing:
                self._commit()
            return
        self._writeThrough(data)

    def finish(self) -> None:
        """
        Finish once the session is committed.
        """
        if self._replaced:
            return
        if self._committing:
            self._finishWanted = True
            return
        session = registeredSession(self.request)
        if not self._noSave and (
            self._commits == 0
            or (self._commits == 1 and session is not None and session.modified)
        ):
            self._finishWanted = True
            self._commit()
            return
        self._restore()
        if not self.connection.lost:
            self._finish()

    def _commit(self) -> None:
        if getattr(self.request, "code", 200) >= 500:
            # A failed render: what it changed is not to be trusted.
            self._noSave = True
            self._release()
            return
        self._committing = True
        d = maybeDeferred(self.wrapper.manager.commit, self.request)
        producer = getattr(self.request, "producer", None)
        if (
            not d.called
            and producer is not None
            and getattr(self.request, "streamingProducer", False)
        ):
            # Whatever it writes would only pile up in _held meanwhile.
            producer.pauseProducing()
            self._paused = producer
        d.addCallbacks(self._committed, self._failed)
        d.addErrback(lambda f: log.failure("Finishing a session response failed", f))

    def _committed(self, result: object) -> None:
        self._committing = False
        self._commits += 1
        self._resume()
        self._release()

    def _release(self) -> None:
        held, self._held = self._held, []
        for data in held:
            self._writeThrough(data)
        if self._finishWanted:
            self._finishWanted = False
            self.finish()

    def _failed(self, failure: Failure) -> None:
        self._committing = False
        self._commits += 1
        self._resume()
        if getattr(self.request, "startedWriting", False):
            self._cutOff(failure)
            return
        retryAfter = None
        if failure.check(SessionCommitError):
            reason = getattr(failure.value, "reason", "")
            code, body = 409, (_GONE if reason == "gone" else _CONFLICT)
        elif failure.check(StoreUnavailableError):
            self.wrapper._reportOutage(failure)
            code, body, retryAfter = 503, _UNAVAILABLE, self.wrapper.retryAfter
        elif failure.check(ValueTooLargeError):
            # The application stored too much: a known limit, not a crash.
            log.warn(
                "Session not saved for {uri}: {why}",
                uri=self.request.uri,
                why=failure.getErrorMessage(),
            )
            code, body = 500, _TOO_LARGE
        else:
            log.failure("Saving a session failed", failure)
            code, body = 500, _FAILED
        self._replace(code, body, retryAfter)

    def _replace(self, code: int, body: str, retryAfter: Optional[int]) -> None:
        """
        Answer C{code} instead of the held response, and ignore what the
        resource writes from now on.
        """
        self._stopResponse()
        if self.connection.lost:
            return
        _respond(self.request, code, body, self._write, self._finish, retryAfter)

    def _cutOff(self, failure: Failure) -> None:
        """
        The save at the response's finish failed after its status went out:
        a response that ended normally would report a change that was lost,
        so it ends abnormally instead.
        """
        if failure.check(StoreUnavailableError):
            self.wrapper._reportOutage(failure)
        elif failure.check(ValueTooLargeError):
            log.warn(
                "Session not saved for {uri}: {why}",
                uri=self.request.uri,
                why=failure.getErrorMessage(),
            )
        elif not failure.check(SessionCommitError):
            # (The manager logs the failures it raises.)
            log.failure("Saving a session failed", failure)
        self._stopResponse()
        if self.connection.lost:
            return
        log.info(
            "Cutting off the response to {uri}: its session changes were not saved",
            uri=self.request.uri,
        )
        # An HTTP/2 stream resets itself alone; HTTP/1 loses the connection.
        abort = getattr(self.request.channel, "abortConnection", None)
        if abort is None:
            abort = getattr(self.request.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.request.loseConnection()

    def _stopResponse(self) -> None:
        """
        Drop what is held, and ignore what the resource writes from now on.
        """
        self._replaced = True
        self._held = []
        self._finishWanted = False
        producer = getattr(self.request, "producer", None)
        if producer is not None:
            try:
                producer.stopProducing()
            finally:
                self.request.unregisterProducer()

    def _writeThrough(self, data: bytes) -> None:
        # For HEAD and bodiless statuses, twisted.web swaps request.write for
        # a no-op at the first write; later data must go there too.
        current = self.request.__dict__.get("write")
        if current is not None and current != self.write:
            current(data)
        else:
            self._write(data)

    def _resume(self) -> None:
        paused, self._paused = self._paused, None
        current: Any = getattr(self.request, "producer", None)
        # Resumed only if it is still the response's producer.
        if paused is not None and paused is current:
            paused.resumeProducing()

    def _restore(self) -> None:
        attributes = self.request.__dict__
        attributes.pop(_HOLD_ATTRIBUTE, None)
        if attributes.get("write") == self.write:
            del attributes["write"]
        if attributes.get("finish") == self.finish:
            del attributes["finish"]


def _respond(
    request: IRequest,
    code: int,
    body: str,
    write: Callable[[bytes], None],
    finish: Callable[[], None],
    retryAfter: Optional[int] = None,
) -> None:
    """
    Answer a short plain-text C{body} with status C{code}, in place of
    whatever the resource had set up.
    """
    request.setResponseCode(code)
    headers = request.responseHeaders
    for name in (
        b"content-length",
        b"content-range",
        b"content-disposition",
        b"etag",
        b"last-modified",
        b"location",
    ):
        headers.removeHeader(name)
    for attribute in ("etag", "lastModified"):
        if getattr(request, attribute, None) is not None:
            setattr(request, attribute, None)
    headers.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
    headers.setRawHeaders(b"cache-control", [b"no-store"])
    if retryAfter is not None:
        headers.setRawHeaders(b"retry-after", [b"%d" % retryAfter])
    write(body.encode("utf-8"))
    finish()
