# -*- test-case-name: tests.unit.test_nevow_rend -*-
"""
Pages, fragments and the standard renderers.

L{Page} is a resource rendered from its C{docFactory} with its
C{render_*} and C{data_*} methods, and finds its children through
C{children}, C{child_*} and C{childFactory}. L{Fragment} is the same
without the resource part, for use inside other documents. L{sequence},
L{mapping}, L{string} and L{data} are the standard render functions (also
available as C{render="sequence"} and so on).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, fail
from twisted.web import resource
from zope.interface import implementer

from tlcache.nevow import _web, inevow, url
from tlcache.nevow._data import DataNotFoundError, cacheableLookup
from tlcache.nevow._flatten import SynchronousRenderError, flattenToBytes
from tlcache.nevow._sequence import SequenceRun
from tlcache.nevow.context import PageContext, WebContext, WovenContext
from tlcache.nevow.flat import flattenString
from tlcache.nevow.stan import NodeNotFound, Tag, patternsByName, xml

__all__ = [
    "DataFactory",
    "DataNotFoundError",
    "FourOhFour",
    "Fragment",
    "MacroFactory",
    "NotFound",
    "Page",
    "RenderFactory",
    "RendererNotFoundError",
    "SynchronousRenderError",
    "data",
    "mapping",
    "sequence",
    "string",
]

NotFound: Tuple[None, Tuple[()]] = (None, ())


class RendererNotFoundError(KeyError):
    """
    A C{render} (or C{macro}) directive names a method the renderer
    factory does not have.
    """


def _splitName(name: str) -> Tuple[str, List[str]]:
    # "name a, b" -> ("name", ["a", "b"])
    if " " not in name:
        return name, []
    name, rest = name.split(None, 1)
    return name, [arg.strip() for arg in rest.split(",")]


@implementer(inevow.IRendererFactory)
class RenderFactory:
    """
    Finds C{render_<name>} methods for C{render} directives.
    """

    @cacheableLookup
    def renderer(self, context: WebContext, name: str) -> Any:
        """
        The render function for C{name}; C{"name a,b"} calls
        C{render_name("a", "b")}, which must return the render function.

        @raise RendererNotFoundError: there is no C{render_<name>}.
        """
        args: List[str] = []
        if " " in name:
            name, args = _splitName(name)
        method = getattr(self, "render_" + name, None)
        if method is None:
            raise RendererNotFoundError(
                f"{type(self).__qualname__} has no renderer {name!r} (render_{name})"
            )
        if args:
            return method(*args)
        return method

    def render_sequence(self, context: WebContext, data: Any) -> Any:
        """
        The L{sequence} renderer.
        """
        return sequence(context, data)

    def render_mapping(self, context: WebContext, data: Any) -> Any:
        """
        The L{mapping} renderer.
        """
        return mapping(context, data)

    def render_string(self, context: WebContext, data: Any) -> Any:
        """
        The L{string} renderer.
        """
        return string(context, data)

    def render_xml(self, context: WebContext, data: Any) -> Any:
        """
        Replace the tag's children with the data, as markup (not escaped).
        """
        return context.tag.clear()[xml(data)]

    def render_data(self, context: WebContext, data_: Any) -> Any:
        """
        The L{data} renderer.
        """
        return data(context, data_)


@implementer(inevow.IMacroFactory)
class MacroFactory:
    """
    Finds C{macro_<name>} methods for C{macro} directives.
    """

    def macro(self, ctx: WebContext, name: str) -> Any:
        """
        The macro for C{name}; C{"name a,b"} calls it as
        C{macro_name(ctx, "a", "b")}.

        @raise RendererNotFoundError: there is no C{macro_<name>}.
        """
        args: List[str] = []
        if " " in name:
            name, args = _splitName(name)
        method = getattr(self, "macro_" + name, None)
        if method is None:
            raise RendererNotFoundError(
                f"{type(self).__qualname__} has no macro {name!r} (macro_{name})"
            )
        if args:
            return lambda ctx: method(ctx, *args)
        return method


@implementer(inevow.IContainer)
class DataFactory:
    """
    Finds C{data_<name>} methods for C{data} directives, and falls back to
    the data children of C{self.original}.
    """

    original: Any = None

    def child(self, context: WebContext, n: Any) -> Any:
        """
        The data called C{n}: the C{data_<n>} method (C{"n a,b"} calls
        C{data_n("a", "b")}, which must return the data), or
        C{IContainer(self.original).child(context, n)}.

        @raise DataNotFoundError: neither has it.
        """
        name = str(n)
        args: List[str] = []
        if " " in name:
            name, args = _splitName(name)
        method = getattr(self, "data_" + name, None)
        if method is None:
            container = inevow.IContainer(self.original, None)
            if container is None:
                raise DataNotFoundError(
                    f"{type(self).__qualname__} has no data {name!r} (data_{name})"
                )
            return container.child(context, n)
        if args:
            return method(*args)
        return method


_PREPROCESSORS: Dict[type, List[Any]] = {}


def _getPreprocessors(inst: Any) -> Sequence[Any]:
    # The preprocessors of every class of inst's hierarchy (base classes
    # first), unless the instance has its own.
    own = inst.__dict__.get("preprocessors")
    if own is not None:
        return own
    kind = type(inst)
    found = _PREPROCESSORS.get(kind)
    if found is None:
        found = []
        for base in reversed(kind.__mro__):
            found.extend(base.__dict__.get("preprocessors", ()))
        _PREPROCESSORS[kind] = found
    return found


@implementer(inevow.IRenderer, inevow.IGettable)
class Fragment(DataFactory, RenderFactory, MacroFactory):
    """
    A piece of a document with its own template, renderers and data: put
    it anywhere in a stan tree, or fill a slot with it.

    @ivar docFactory: the template (a loader).
    @ivar original: the object this fragment presents (its default data).
    """

    docFactory: Any = None
    original: Any = None
    preprocessors: Sequence[Any] = ()

    def __init__(self, original: Any = None, docFactory: Any = None) -> None:
        if original is not None:
            self.original = original
        self.toremember: List[Tuple[Any, Any]] = []
        if docFactory is not None:
            self.docFactory = docFactory

    def get(self, context: WebContext) -> Any:
        """
        The data this fragment stands for: C{self.original}.
        """
        return self.original

    def rend(self, context: WebContext, data: Any) -> WovenContext:
        """
        Render in a context of its own below C{context}.
        """
        ctx = WovenContext(parent=context)
        self.rememberStuff(ctx)
        doc = self._loadDocument(ctx)
        ctx.tag = Tag("", children=[doc])
        return ctx

    def _loadDocument(self, ctx: WebContext) -> Any:
        if self.docFactory is None:
            raise TypeError(f"{self!r} has no docFactory")
        return self.docFactory.load(ctx, _getPreprocessors(self))

    def remember(self, obj: Any, inter: Any = None) -> None:
        """
        Remember C{obj} (for C{inter}) in the contexts of this page from now
        on.
        """
        if "toremember" not in self.__dict__:
            self.toremember = []
        self.toremember.append((obj, inter))

    def rememberStuff(self, ctx: WebContext) -> None:
        """
        Remember this object as the renderer, renderer factory, macro
        factory and data of C{ctx}.
        """
        ctx.remember(self, inevow.IRenderer)
        ctx.remember(self, inevow.IRendererFactory)
        ctx.remember(self, inevow.IMacroFactory)
        ctx.remember(self, inevow.IData)


class ChildLookupMixin:
    """
    C{locateChild} through C{children}, C{child_*} and C{childFactory}.
    """

    children: Optional[Dict[str, Any]] = None

    def locateChild(self, ctx: WebContext, segments: Tuple[str, ...]) -> Any:
        """
        The child for C{segments[0]}, looked up in order in the C{children}
        dict, as a C{child_<name>} attribute (a resource) or method (called
        with C{ctx}; it may return a L{Deferred<twisted.internet.defer.Deferred>}), and
        through
        C{childFactory(ctx, name)}.

        @return: C{(child, segments[1:])}, or L{NotFound}.
        """
        name = segments[0]
        children = self.children
        if children is not None:
            child = children.get(name)
            if child is not None:
                return child, segments[1:]
        found = getattr(self, "child_" + name, None)
        if found is not None:
            if not callable(found) or _isResource(found):
                return found, segments[1:]
            child = found(ctx)
            if child is not None:
                return child, segments[1:]
        child = self.childFactory(ctx, name)
        if child is not None:
            return child, segments[1:]
        return NotFound

    def childFactory(self, ctx: WebContext, name: str) -> Any:
        """
        Make the child called C{name} when nothing else has it (override
        this; by default there is none).
        """
        return None

    def putChild(self, name: Any, child: Any) -> None:
        """
        Add C{child} to C{children} under C{name} (C{str}, or C{bytes} as
        twisted.web passes it).
        """
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        if self.children is None:
            self.children = {}
        self.children[name] = child


def _isResource(obj: Any) -> bool:
    return inevow.IResource.providedBy(obj) or resource.IResource.providedBy(obj)


@implementer(inevow.IResource, resource.IResource)
class Page(_web.WebResourceMixin, Fragment, ChildLookupMixin):
    """
    A web page rendered from C{docFactory}; also a twisted.web resource,
    so it can be the child of any twisted.web resource and have any as a
    child.

    @ivar addSlash: redirect C{/page} to C{/page/}, and serve the page at
        C{/page/}.
    @ivar buffered: accepted for compatibility. The page is always rendered
        completely before any of it is written, so that a failure anywhere
        becomes a clean 500 response.
    @ivar beforeRender: a method called with the context before rendering
        (it may return a L{Deferred<twisted.internet.defer.Deferred>}).
    @ivar afterRender: a method called with the context after the page was
        written (it may return a L{Deferred<twisted.internet.defer.Deferred>}).
    """

    buffered = False
    beforeRender: Any = None
    afterRender: Any = None
    addSlash: Any = None

    def renderHTTP(self, ctx: WebContext) -> Any:
        """
        Render this page for the request in C{ctx} and write it.

        @return: C{b""} (the page is already written), or a
            L{Deferred<twisted.internet.defer.Deferred>}
            firing with it.
        """
        if self.beforeRender is not None:
            ready = self.beforeRender(ctx)
            if isinstance(ready, Deferred):
                return ready.addCallback(lambda _: self._renderHTTP(ctx))
        return self._renderHTTP(ctx)

    def _renderHTTP(self, ctx: WebContext) -> Any:
        request = inevow.IRequest(ctx)
        if self.addSlash:
            current: Any = inevow.ICurrentSegments(ctx, ())
            if not current or current[-1] != "":
                here = url.URL.fromContext(ctx).child("")
                request.redirect(str(here).encode("utf-8"))
                return b""
        self.rememberStuff(ctx)
        doc = self._loadDocument(ctx)
        body = flattenToBytes(doc, WovenContext(ctx, Tag("", children=[doc])))
        if isinstance(body, Deferred):
            return body.addCallback(self._written, ctx, request)
        return self._written(body, ctx, request)

    def _written(self, body: bytes, ctx: WebContext, request: Any) -> Any:
        _web.writeBody(request, body)
        if self.afterRender is not None:
            done = self.afterRender(ctx)
            if isinstance(done, Deferred):
                return done.addCallback(lambda _: b"")
        return b""

    def rememberStuff(self, ctx: WebContext) -> None:
        """
        Remember this page as in L{Fragment.rememberStuff}, and as the
        resource.
        """
        Fragment.rememberStuff(self, ctx)
        ctx.remember(self, inevow.IResource)

    def _renderContext(self, ctx: Optional[WebContext]) -> Tuple[Any, WebContext]:
        pageContext = PageContext(parent=ctx, tag=self)
        self.rememberStuff(pageContext)
        doc = self._loadDocument(pageContext)
        return doc, WovenContext(pageContext, Tag("", children=[doc]))

    def renderString(self, ctx: Optional[WebContext] = None) -> Deferred:
        """
        Render this page outside of a request (below C{ctx} if given).

        @return: L{Deferred<twisted.internet.defer.Deferred>} firing with the page as
            UTF-8 bytes.
        """
        try:
            doc, wovenContext = self._renderContext(ctx)
        except BaseException:
            return fail()
        return flattenString(doc, wovenContext)

    def renderSynchronously(self, ctx: Optional[WebContext] = None) -> bytes:
        """
        Render this page now, outside of a request.

        @raise SynchronousRenderError: rendering needs a
            L{Deferred<twisted.internet.defer.Deferred>} that has
            not fired.
        """
        doc, wovenContext = self._renderContext(ctx)
        result = flattenToBytes(doc, wovenContext, synchronous=True)
        assert isinstance(result, bytes)
        return result

    def child_(self, ctx: WebContext) -> Any:
        """
        The empty segment (a trailing slash): this page itself, when
        C{addSlash} is set and it is the last segment.
        """
        remaining: Any = inevow.IRemainingSegments(ctx)
        if self.addSlash and len(remaining) == 1:
            return self
        return None


def sequence(context: WebContext, data: Any) -> Any:
    """
    Render each item of C{data} with the tag's C{item} patterns (cycled),
    C{divider} patterns between items, C{header} patterns before and
    C{footer} patterns after, or its C{empty} patterns when there are no
    items. Each item pattern gets its item as data.
    """
    tag = context.tag
    patterns = patternsByName(tag)
    items = patterns.get("item")
    if not items:
        raise NodeNotFound("pattern", "item")
    if not isinstance(data, (list, tuple)):
        data = list(data)
    headers = [
        t.clone(deep=False, clearPattern=True) for t in patterns.get("header", ())
    ]
    footers = [
        t.clone(deep=False, clearPattern=True) for t in patterns.get("footer", ())
    ]
    if data:
        content: Any = SequenceRun(items, patterns.get("divider", []), data)
    else:
        content = [
            t.clone(deep=False, clearPattern=True) for t in patterns.get("empty", ())
        ]
    return tag.clear()[headers, content, footers]


def mapping(context: WebContext, data: Any) -> Any:
    """
    Fill the slots below the tag from the dict C{data}.
    """
    for key, value in data.items():
        context.fillSlots(key, value)
    return context.tag


def string(context: WebContext, data: Any) -> Any:
    """
    Replace the tag's children with C{str(data)}.
    """
    return context.tag.clear()[str(data)]


def data(context: WebContext, data: Any) -> Any:
    """
    Replace the tag's children with the data itself.
    """
    return context.tag.clear()[data]


@implementer(inevow.IResource, resource.IResource)
class FourOhFour(_web.WebResourceMixin):
    """
    The 404 page: a site's own, if something providing
    L{inevow.ICanHandleNotFound} was remembered (on the site, say), or a
    short standard one.
    """

    isLeaf = True
    original: Any = None

    notFound = (
        "<html><head><title>Page Not Found</title></head><body>"
        "Sorry, but I couldn't find the object you requested.</body></html>"
    )

    def locateChild(self, ctx: WebContext, segments: Tuple[str, ...]) -> Any:
        """
        Nothing below a missing page.
        """
        return NotFound

    def renderHTTP(self, ctx: WebContext) -> Any:
        """
        Answer 404, with the site's own page if it has one.
        """
        inevow.IRequest(ctx).setResponseCode(404)
        try:
            handler = ctx.locate(inevow.ICanHandleNotFound)
        except KeyError:
            return self.notFound
        try:
            return handler.renderHTTP_notFound(PageContext(parent=ctx, tag=handler))
        except Exception:
            _web.log.failure("The site's not-found page failed")
            return self.notFound

    def putChild(self, path: Any, child: Any) -> None:
        """
        A missing page takes no children.
        """
        raise TypeError("FourOhFour takes no children")

    def __bool__(self) -> bool:
        return False
