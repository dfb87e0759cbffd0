# -*- test-case-name: tests.unit.test_cachedpage -*-
"""
The request a cached page is rendered into: a request made from the
L{CacheInputs<tlcache.keys.CacheInputs>} its key was made from, which keeps
the response instead of sending it.

Rendering into a copy, not into the client's request, is what makes the
render cache safe and shareable: the render sees only what the cache key is
made of, in the very form the key took it (the normalised Host, the path,
the canonical query, one value for each declared header and cookie), so
nothing else about the client can end up in a copy served to others: not an
undeclared header or cookie, not a second spelling of a declared one, not
C{Authorization}, not the session, not the client's address, not the
socket the request came in on. The render
cannot be cancelled by a client that goes away, and it can run with no
client at all (a background refresh, or a HEAD request answered from a GET
render). The first client is streamed what the copy writes, as it writes it
(see L{ShadowRequest.attach}).
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, List

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web import http, server
from twisted.web.http_headers import Headers

from tlcache.keys import CacheInputs
from tlcache.nevow._web import requestGone

__all__ = ["SessionInCachedRenderError", "ShadowRequest"]

# The address a copy's client has: nobody in particular, so that a page
# showing the client's address cannot put one client's into a shared copy.
NOBODY = IPv4Address("TCP", "0.0.0.0", 0)


class SessionInCachedRenderError(RuntimeError):
    """
    A page rendered for the cache asked for the session. Cached renders are
    shared between users, so they never see one; the page is served
    uncached instead.
    """


class _ShadowChannel:
    """
    What C{twisted.web.http.Request} asks of its channel, for a request
    that has no connection: no client address; as its own address, the
    port the client asked for in Host (the one the key has) or, with no
    Host, the address the original came in on; producers pulled on the
    clock.
    """

    transport = None
    site = None

    def __init__(self, original: Any, inputs: CacheInputs, clock: IReactorTime):
        self._peer = NOBODY
        if inputs.hostHeader is not None:
            self._host: Any = IPv4Address("TCP", "0.0.0.0", inputs.port)
        else:
            self._host = original.getHost()
        self._secure = inputs.secure
        self._clock = clock
        self._producer: Any = None

    def getPeer(self) -> Any:
        return self._peer

    def getHost(self) -> Any:
        return self._host

    def isSecure(self) -> bool:
        return self._secure

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer
        if streaming:
            producer.resumeProducing()
        else:
            self._clock.callLater(0, self._pull, producer)

    def _pull(self, producer: Any) -> None:
        if self._producer is producer:
            producer.resumeProducing()
            if self._producer is producer:
                self._clock.callLater(0, self._pull, producer)

    def unregisterProducer(self) -> None:
        self._producer = None


class ShadowRequest(server.Request):
    """
    A GET for the resource C{original} asked for, made from C{inputs}
    (what its cache key was made from) and C{original}'s place in the
    resource tree; it keeps what is written to it.

    @ivar chunks: the body written so far (unless over C{maxBytes}).
    @ivar overflowed: the body grew past C{maxBytes} and was not kept.
    @ivar failed: the render broke off after it began writing.
    @ivar sessionUsed: the render asked for the session.
    @ivar done: fires with this request when it is finished.
    """

    # Rendered into by the cache itself: never looked up in the cache.
    tlcacheUncached = True

    def __init__(
        self,
        original: Any,
        inputs: CacheInputs,
        clock: IReactorTime,
        maxBytes: int = 1024 * 1024,
    ) -> None:
        channel: Any = _ShadowChannel(original, inputs, clock)
        server.Request.__init__(self, channel, parsePOSTFormSubmission=False)
        self.site = getattr(original, "site", None)
        self.method = b"GET"
        self.uri = inputs.uri()
        self.path = inputs.path
        self.args = inputs.args()
        self.clientproto = b"HTTP/1.1"
        self.prepath = list(getattr(original, "prepath", []) or [])
        self.postpath = list(getattr(original, "postpath", []) or [])
        self.sitepath = list(getattr(original, "sitepath", []) or [])
        self.content = BytesIO()
        self.requestHeaders = _headersOf(inputs)
        if self.requestHeaders.hasHeader(b"cookie"):
            self.parseCookies()
        self.clock = clock
        self.maxBytes = maxBytes
        self.chunks: List[bytes] = []
        self.size = 0
        self.overflowed = False
        self.failed = False
        self.sessionUsed = False
        self.done: Deferred[ShadowRequest] = Deferred()
        self._live: Any = None
        self._liveStarted = False
        self._refused = False
        self._mayForward: Any = None
        self._whole: Any = None

    # -- what the page may do --------------------------------------------

    def getSession(
        self, sessionInterface: Any = None, forceNotSecure: bool = False
    ) -> Any:
        """
        Refused: see L{SessionInCachedRenderError}.
        """
        self.refuseSession()

    def refuseSession(self) -> None:
        """
        Note that the render wanted the session, and refuse it. tlsession's
        C{ISession(request)} calls this too.
        """
        self.sessionUsed = True
        raise SessionInCachedRenderError(
            f"{self.uri.decode('latin-1')} asked for the session while it was"
            " rendered for the cache; it is served uncached (a cached page is"
            " shared by every user and cannot see a session)"
        )

    def write(self, data: bytes) -> None:
        """
        Keep C{data} (and stream it to the attached client, if any).
        """
        if self.finished:
            raise RuntimeError("write called on a request after finish")
        if not self.startedWriting:
            self.startedWriting = 1
            if (
                self.code not in (http.NOT_MODIFIED, http.NO_CONTENT)
                and not self.responseHeaders.hasHeader(b"content-type")
                and self.defaultContentType is not None
            ):
                self.responseHeaders.setRawHeaders(
                    b"content-type", [self.defaultContentType]
                )
        if not data:
            return
        if self._live is not None:
            self._forward(data)
        self.size += len(data)
        if not self.overflowed:
            if self.size > self.maxBytes:
                self.overflowed = True
                self.chunks = []
            else:
                self.chunks.append(data)

    def finish(self) -> None:
        """
        The response is complete.
        """
        if self.finished:
            return
        if not self.startedWriting:
            self.write(b"")
        self.finished = 1
        if self._live is not None:
            self._forward(b"")
            if self._liveStarted:
                live, self._live = self._live, None
                if not requestGone(live):
                    live.finish()
        notifications, self.notifications = self.notifications, []
        for notification in notifications:
            notification.callback(None)
        self.done.callback(self)

    def loseConnection(self) -> None:
        """
        The render broke off after it began writing: the response is not
        complete.
        """
        self.failed = True
        if self._live is not None and self._liveStarted:
            live, self._live = self._live, None
            loseConnection = getattr(live, "loseConnection", None)
            if loseConnection is not None and not requestGone(live):
                loseConnection()
        self.finish()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.channel.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.channel.unregisterProducer()
        self.producer = None

    # -- the cache's side ------------------------------------------------

    def body(self) -> bytes:
        """
        The body written, whole.
        """
        return b"".join(self.chunks)

    def setsCookie(self) -> bool:
        """
        Did the render set a cookie?
        """
        return bool(self.cookies) or self.responseHeaders.hasHeader(b"set-cookie")

    def attach(self, live: Any, mayForward: Any, whole: Any = None) -> None:
        """
        Stream this response to C{live}, a client's request, from its first
        write on, if C{mayForward(self)} then agrees (it is asked once, at
        the first write; the cache says no to a response it would rather
        replace, such as an error when a stale copy can be served).
        C{whole(live, self, body)} is called before the first bytes go out
        with what has been written so far, so that headers can still be
        added.
        """
        self._live = live
        self._mayForward = mayForward
        self._whole = whole
        self._refused = False

    def detach(self) -> Any:
        """
        Stop streaming to the attached client; the client, or C{None} if it
        has already been given (some of) this response.
        """
        live, self._live = self._live, None
        return None if self._liveStarted else live

    def _forward(self, data: bytes) -> None:
        live = self._live
        if requestGone(live):
            self._live = None
            return
        if not self._liveStarted:
            if self._refused or not self._mayForward(self):
                self._refused = True
                return
            self._liveStarted = True
            live.setResponseCode(self.code, self.code_message)
            for name, values in self.responseHeaders.getAllRawHeaders():
                live.responseHeaders.setRawHeaders(name, values)
            live.cookies.extend(self.cookies)
            if self.lastModified is not None and live.lastModified is None:
                live.lastModified = self.lastModified
            if self.overflowed:
                # Bytes before this write were not kept: too late to stream.
                self.failed = True
                live.loseConnection()
                self._live = None
                return
            if self.chunks:
                data = b"".join(self.chunks) + data
            if self._whole is not None:
                self._whole(live, self, data)
        if data:
            live.write(data)


def _headersOf(inputs: CacheInputs) -> Headers:
    # Host (part of the key), the declared headers, the declared cookies:
    # each once, as the key has it.
    headers = Headers()
    if inputs.hostHeader is not None:
        headers.setRawHeaders(b"host", [inputs.hostHeader])
    for name, value in inputs.headers:
        if name != b"cookie":
            headers.setRawHeaders(name, [value])
    cookie = inputs.cookieHeader()
    if cookie is not None:
        headers.setRawHeaders(b"cookie", [cookie])
    return headers
