# -*- test-case-name: tests.unit.test_nevow_site -*-
"""
The bridge between Nevow-style resources and twisted.web.

Shim pages are twisted.web resources: twisted.web's traversal calls
C{getChildWithDefault}, which asks the page's C{locateChild} (and moves the
segments it consumed from C{request.postpath} to C{request.prepath}), and
C{render}, which runs C{renderHTTP} and finishes the request. A child that
arrives in a L{Deferred} becomes a leaf that waits for it and then carries
on traversing. A render that fails ends in a 500 response with nothing of
the page in it.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.components import registerAdapter
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.util import formatFailure
from zope.interface import implementer

from tlcache.nevow import inevow
from tlcache.nevow.context import PageContext, RequestContext, SiteContext, WebContext

__all__ = [
    "WebResourceMixin",
    "asWebResource",
    "copyRequestState",
    "locateWebChild",
    "renderContext",
    "renderNevowResource",
    "requestGone",
    "writeBody",
]

log = Logger()

_STATE_ATTRIBUTE = "_tlcacheNevowState"

_ERROR_PAGE = (
    b"<html><head><title>500 - Internal Server Error</title></head>"
    b"<body><h1>Internal Server Error</h1>"
    b"<p>The page could not be rendered.</p></body></html>"
)

HTML_CONTENT_TYPE = b"text/html; charset=utf-8"


class _RequestState:
    """
    What the bridge keeps on a request: its L{RequestContext} and the
    context of the last shim resource traversed.
    """

    __slots__ = ("requestContext", "last")

    def __init__(self, requestContext: RequestContext) -> None:
        self.requestContext = requestContext
        self.last: Optional[WebContext] = None


def _requestState(request: Any) -> _RequestState:
    state = getattr(request, _STATE_ATTRIBUTE, None)
    if state is None:
        site = getattr(request, "site", None)
        siteContext = getattr(site, "context", None)
        if not isinstance(siteContext, SiteContext):
            siteContext = None
        state = _RequestState(RequestContext(parent=siteContext, tag=request))
        setattr(request, _STATE_ATTRIBUTE, state)
    return state


def copyRequestState(original: Any, copy: Any) -> None:
    """
    Give C{copy}, a request standing in for C{original}, the contexts
    C{original}'s traversal left behind (what the pages above remembered),
    re-rooted on a context of C{copy}'s own, so that C{IRequest(ctx)} is
    C{copy} when a page renders for it.
    """
    state = getattr(original, _STATE_ATTRIBUTE, None)
    if state is None:
        return
    old = state.requestContext
    remembered = dict(old._remembrances or {})
    remembered.pop(inevow.IRequest, None)
    newState = _RequestState(
        RequestContext(parent=old.parent, tag=copy, remembrances=remembered)
    )
    chain = []
    ctx = state.last
    while ctx is not None and ctx is not old:
        chain.append(ctx)
        ctx = ctx.parent
    if ctx is old:
        parent: WebContext = newState.requestContext
        for link in reversed(chain):
            parent = type(link)(
                parent=parent, tag=link.tag, remembrances=link._remembrances
            )
        newState.last = parent if chain else None
    setattr(copy, _STATE_ATTRIBUTE, newState)


def _decode(segments: Any) -> Tuple[str, ...]:
    return tuple(s.decode("utf-8", "surrogateescape") for s in segments)


def _encode(segment: Any) -> bytes:
    if isinstance(segment, bytes):
        return segment
    return str(segment).encode("utf-8", "surrogateescape")


def renderContext(request: Any, res: Any) -> PageContext:
    """
    The L{PageContext} C{res} renders in for C{request}.
    """
    state = _requestState(request)
    ctx = PageContext(parent=state.last or state.requestContext, tag=res)
    ctx.remember(_decode(request.prepath), inevow.ICurrentSegments)
    ctx.remember(_decode(request.postpath), inevow.IRemainingSegments)
    return ctx


def locateWebChild(res: Any, name: bytes, request: Any) -> Any:
    """
    twisted.web's C{getChildWithDefault} for a Nevow-style resource: ask
    C{res.locateChild} and return the twisted.web resource to continue
    with.
    """
    state = _requestState(request)
    segments = (name.decode("utf-8", "surrogateescape"),) + _decode(request.postpath)
    ctx = PageContext(parent=state.last or state.requestContext, tag=res)
    ctx.remember(_decode(request.prepath[:-1]), inevow.ICurrentSegments)
    ctx.remember(segments, inevow.IRemainingSegments)
    state.last = ctx
    result = res.locateChild(ctx, segments)
    if isinstance(result, Deferred):
        return _DeferredChild(result, ctx, res, name, segments)
    child, remaining = result
    if isinstance(child, Deferred):
        return _DeferredChild(
            child.addCallback(lambda found: (found, remaining)),
            ctx,
            res,
            name,
            segments,
        )
    return _applyChild(child, remaining, ctx, res, name, segments, request)


def _applyChild(
    child: Any,
    remaining: Any,
    ctx: PageContext,
    parent: Any,
    name: bytes,
    segments: Tuple[str, ...],
    request: Any,
) -> Any:
    if child is None:
        from tlcache.nevow.rend import FourOhFour

        return FourOhFour()
    consumed = len(segments) - len(remaining)
    if consumed <= 0:
        if child is parent:
            raise RuntimeError(
                f"{parent!r}.locateChild returned itself without consuming a segment"
            )
        # Nothing consumed: the child gets this segment too.
        request.prepath.pop()
    else:
        for _ in range(consumed - 1):
            request.prepath.append(request.postpath.pop(0))
    request.postpath = [_encode(s) for s in remaining]
    return asWebResource(child)


def asWebResource(obj: Any) -> Any:
    """
    A twisted.web resource for what C{locateChild} or C{renderHTTP}
    returned: twisted.web resources and shim pages as they are, text as an
    HTML page, URLs as redirects, other Nevow-style resources wrapped.
    """
    if resource.IResource.providedBy(obj):
        return obj
    if isinstance(obj, (str, bytes)):
        return _HTMLText(obj)
    adapted = resource.IResource(obj, None)
    if adapted is None:
        raise TypeError(f"{obj!r} is not a resource")
    return adapted


def _startedWriting(request: Any) -> bool:
    started = getattr(request, "startedWriting", None)
    if started is None:
        return bool(getattr(request, "written", None))
    return bool(started)


def requestGone(request: Any) -> bool:
    """
    Is C{request} finished, or its client gone (nothing more can be sent)?
    """
    return bool(
        getattr(request, "finished", False) or getattr(request, "_disconnected", False)
    )


def writeBody(request: Any, body: bytes) -> None:
    """
    Write a whole response body, with its C{Content-Length} when nothing
    was written before.
    """
    if requestGone(request):
        return
    if not _startedWriting(request) and not request.responseHeaders.hasHeader(
        b"content-length"
    ):
        request.setHeader(b"content-length", b"%d" % (len(body),))
    if body:
        request.write(body)


def renderFailed(reason: Failure, request: Any) -> None:
    """
    Log a failed render and answer 500, with none of the page in the
    response; if some of it was already written, drop the connection
    instead so that the client cannot take it for a complete response.
    """
    uri = getattr(request, "uri", b"").decode("latin-1")
    if getattr(request, "sessionUsed", False):
        # tlcache rendered the page without a session, to share it; it
        # serves the page uncached instead: not an error to log.
        request.setResponseCode(500)
        request.finish()
        return
    if requestGone(request):
        if not reason.check(CancelledError):
            log.failure("Rendering {uri} failed", failure=reason, uri=uri)
        return
    log.failure("Rendering {uri} failed", failure=reason, uri=uri)
    if _startedWriting(request):
        loseConnection = getattr(request, "loseConnection", None)
        if loseConnection is not None:
            loseConnection()
        return
    body = _ERROR_PAGE
    site = getattr(request, "site", None)
    if getattr(site, "displayTracebacks", False):
        body = (
            body[: -len(b"</body></html>")] + formatFailure(reason) + b"</body></html>"
        )
    request.setResponseCode(500)
    headers = request.responseHeaders
    for name in (b"content-length", b"location", b"set-cookie"):
        headers.removeHeader(name)
    cookies = getattr(request, "cookies", None)
    if cookies:
        del cookies[:]
    request.setHeader(b"content-type", HTML_CONTENT_TYPE)
    writeBody(request, body)
    request.finish()


def renderNevowResource(res: Any, request: Any) -> Any:
    """
    twisted.web's C{render} for a Nevow-style resource: run
    C{res.renderHTTP} in a fresh context and finish the request with what
    it returns.
    """
    ctx = renderContext(request, res)
    if not request.responseHeaders.hasHeader(b"content-type"):
        request.setHeader(b"content-type", HTML_CONTENT_TYPE)
    try:
        result = res.renderHTTP(ctx)
        if isinstance(result, Deferred):
            notify = getattr(request, "notifyFinish", None)
            if notify is not None:
                notify().addErrback(_cancelRender, result)
            result.addCallback(_rendered, ctx, request).addErrback(
                renderFailed, request
            )
            return NOT_DONE_YET
        _rendered(result, ctx, request)
    except BaseException:
        renderFailed(Failure(), request)
    return NOT_DONE_YET


def _cancelRender(reason: Failure, rendering: Deferred) -> None:
    # The client went away: stop waiting for the page.
    rendering.cancel()


def _rendered(result: Any, ctx: WebContext, request: Any) -> Any:
    if result is NOT_DONE_YET or requestGone(request):
        return None
    if isinstance(result, str):
        result = result.encode("utf-8")
    if result is None or isinstance(result, bytes):
        writeBody(request, result or b"")
        request.finish()
        return None
    child = asWebResource(result)
    if isinstance(child, _NevowResource):
        return _renderChildResource(child.original, request)
    if isinstance(child, WebResourceMixin):
        return _renderChildResource(child, request)
    request.render(child)
    return None


def _renderChildResource(child: Any, request: Any) -> None:
    # renderHTTP returned another Nevow-style resource: render it instead.
    ctx = renderContext(request, child)
    result = child.renderHTTP(ctx)
    if isinstance(result, Deferred):
        result.addCallback(_rendered, ctx, request).addErrback(renderFailed, request)
        return None
    _rendered(result, ctx, request)
    return None


class WebResourceMixin:
    """
    twisted.web's C{IResource} on top of C{locateChild} and C{renderHTTP}
    (the class using it declares C{IResource} and provides C{putChild}).
    """

    isLeaf = False

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        """
        Find the child through C{locateChild}.
        """
        return locateWebChild(self, path, request)

    def render(self, request: Any) -> Any:
        """
        Render through C{renderHTTP}.
        """
        return renderNevowResource(self, request)


@implementer(resource.IResource)
class _NevowResource(WebResourceMixin):
    """
    A Nevow-style resource that is not a shim page, as a twisted.web one.
    """

    def __init__(self, original: Any) -> None:
        self.original = original

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        return locateWebChild(self.original, path, request)

    def render(self, request: Any) -> Any:
        return renderNevowResource(self.original, request)

    def putChild(self, path: Any, child: Any) -> None:
        raise TypeError(f"{self.original!r} does not take children with putChild")


registerAdapter(_NevowResource, inevow.IResource, resource.IResource)


@implementer(resource.IResource)
class _HTMLText:
    """
    A text child (C{child_foo = "<p>hi</p>"}): served as an HTML page.
    """

    isLeaf = True

    def __init__(self, text: Any) -> None:
        self.body = text.encode("utf-8") if isinstance(text, str) else bytes(text)

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        return self

    def putChild(self, path: Any, child: Any) -> None:
        raise TypeError("a text page takes no children")

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", HTML_CONTENT_TYPE)
        return self.body


@implementer(resource.IResource)
class _DeferredChild:
    """
    A child still on its way: waits for it, then traverses and renders the
    rest of the path under it.
    """

    isLeaf = True

    def __init__(
        self,
        result: Deferred,
        ctx: PageContext,
        parent: Any,
        name: bytes,
        segments: Tuple[str, ...],
    ) -> None:
        self.result = result
        self.ctx = ctx
        self.parent = parent
        self.name = name
        self.segments = segments

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        return self

    def putChild(self, path: Any, child: Any) -> None:
        raise TypeError("a deferred child takes no children")

    def render(self, request: Any) -> Any:
        self.result.addCallback(self._located, request).addErrback(
            renderFailed, request
        )
        return NOT_DONE_YET

    def _located(self, result: Any, request: Any) -> Any:
        child, remaining = result
        if isinstance(child, Deferred):
            return child.addCallback(
                lambda found: self._located((found, remaining), request)
            )
        webChild = _applyChild(
            child, remaining, self.ctx, self.parent, self.name, self.segments, request
        )
        request.render(resource.getChildForRequest(webChild, request))
        return None
