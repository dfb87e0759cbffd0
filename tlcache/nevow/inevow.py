"""
The interfaces of the Nevow page API, as zope.interface interfaces.

C{IRequest} is twisted.web's own request interface, so C{IRequest(ctx)}
gives the twisted.web request. C{ISession(ctx)} gives the request's
session: the tlsession session when one was registered on the request, or
else twisted.web's own.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from twisted.web.iweb import IRequest
from zope.interface import Attribute, Interface

__all__ = [
    "ICanHandleNotFound",
    "IContainer",
    "ICurrentSegments",
    "IData",
    "IDocFactory",
    "IFragmentCache",
    "IGettable",
    "IMacroFactory",
    "IQ",
    "IRemainingSegments",
    "IRenderer",
    "IRendererFactory",
    "IRequest",
    "IResource",
    "ISession",
]


class IResource(Interface):
    """
    A node of the URL space in the Nevow style. (L{rend.Page} provides it
    and twisted.web's C{IResource} as well, so the two kinds of resource
    can be children of each other.)
    """

    def locateChild(ctx: Any, segments: Tuple[str, ...]) -> Any:
        """
        Find the child for the first of C{segments} (a tuple of C{str}).

        @return: C{(child, remainingSegments)}, or a
            L{Deferred<twisted.internet.defer.Deferred>} firing with
            it; the child may itself be a L{Deferred<twisted.internet.defer.Deferred>},
            and C{(None, ())}
            (L{rend.NotFound}) means there is none. A child may consume more
            than one segment.
        """

    def renderHTTP(ctx: Any) -> Any:
        """
        Render the response.

        @return: C{str} or C{bytes} to write, another resource to render
            instead, or a L{Deferred<twisted.internet.defer.Deferred>} firing with one
            of those.
        """


class IRenderer(Interface):
    """
    Something that renders itself where it appears in a stan tree
    (L{rend.Fragment} and L{rend.Page}).
    """

    def rend(ctx: Any, data: Any) -> Any:
        """
        Return what to render in place of this object.
        """


class IRendererFactory(Interface):
    """
    Finds the render function a C{render=directive("name")} asks for.
    """

    def renderer(ctx: Any, name: str) -> Any:
        """
        Return the render function called C{name} (C{"name a,b"} passes
        arguments to a parameterised renderer).
        """


class IMacroFactory(Interface):
    """
    Finds the macro a C{macro=directive("name")} asks for.
    """

    def macro(ctx: Any, name: str) -> Any:
        """
        Return the macro called C{name}; it is run once, when the template
        is precompiled.
        """


class IData(Interface):
    """
    The current data of a context (the marker under which data is
    remembered).
    """


class IGettable(Interface):
    """
    Data that must be asked for its real value.
    """

    def get(ctx: Any) -> Any:
        """
        Return the value (or a L{Deferred<twisted.internet.defer.Deferred>} firing with
        it).
        """


class IContainer(Interface):
    """
    Data with named children, which C{data=directive("name")} looks up.
    """

    def child(ctx: Any, name: Any) -> Any:
        """
        Return the child called C{name}.
        """


class IQ(Interface):
    """
    Pattern queries over a tag, a context's tag, a list of nodes or a
    document factory's document.
    """

    def patternGenerator(pattern: str, default: Any = None) -> Any:
        """
        Return an endless supply of copies of the C{pattern} patterns.
        """

    def allPatterns(pattern: str) -> List[Any]:
        """
        Return copies of all the C{pattern} patterns.
        """

    def onePattern(pattern: str) -> Any:
        """
        Return a copy of the only C{pattern} pattern.
        """


class IDocFactory(Interface):
    """
    A template loader (L{loaders.stan}, L{loaders.xmlstr}, L{loaders.xmlfile}).
    """

    pattern = Attribute("The name of the pattern to render, or None for the document.")

    def load(ctx: Any = None, preprocessors: Sequence[Any] = ()) -> List[Any]:
        """
        Return the precompiled document.
        """


class ISession(Interface):
    """
    The session of a request, as C{ISession(ctx)} returns it.
    """


class ICurrentSegments(Interface):
    """
    The path segments already traversed (a tuple of C{str}).
    """


class IRemainingSegments(Interface):
    """
    The path segments still to traverse (a tuple of C{str}).
    """


class ICanHandleNotFound(Interface):
    """
    Renders the site's own "not found" page.
    """

    def renderHTTP_notFound(ctx: Any) -> Any:
        """
        Return the body of the 404 response.
        """


class IFragmentCache(Interface):
    """
    Keeps the flattened bytes of L{tlcache.nevow.stan.cached} fragments
    (L{tlcache.fragment.FragmentCache}). Remember one on the site
    (C{site.remember(cache, IFragmentCache)}) or on a context for the
    fragments rendered below it.
    """

    def bytesFor(node: Any, ctx: Any) -> Any:
        """
        Return the fragment C{node}'s bytes (already escaped markup) as they
        are cached, or a L{Deferred<twisted.internet.defer.Deferred>} firing with them
        once rendered. C{ctx}
        is where the node appears in the page.
        """

    def invalidate(key: str) -> int:
        """
        Forget the bytes of every fragment named C{key}; return how many.
        """

    def invalidatePrefix(prefix: str) -> int:
        """
        Forget the bytes of every fragment whose name starts with
        C{prefix}; return how many.
        """

    def stats() -> Dict[str, int]:
        """
        Return the cache's counters and gauges.
        """
