# -*- test-case-name: tests.unit.test_nevow_context -*-
"""
Contexts: the chain of objects a render or a traversal step sees.

Each context has a parent, a C{tag} and whatever was remembered on it;
C{ctx.locate(IFoo)} (or C{IFoo(ctx)}) walks up the chain. A request's chain
is: L{SiteContext} (from L{appserver.NevowSite}), L{RequestContext} (the
request), a L{PageContext} per resource traversed, then one
L{WovenContext} per tag with specials while a page renders.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from twisted.web.iweb import IRequest
from zope.interface import providedBy

from tlcache.nevow.inevow import (
    IQ,
    ICurrentSegments,
    IData,
    IRemainingSegments,
    IRenderer,
    IRendererFactory,
    ISession,
)
from tlcache.nevow.stan import NodeNotFound, PatternTag, Tag, TooManyNodes, Unset
from tlsession.interfaces import ISession as SharedSession

__all__ = [
    "NodeNotFound",
    "PageContext",
    "RequestContext",
    "SiteContext",
    "TooManyNodes",
    "WebContext",
    "WovenContext",
]

_NOTHING: Any = object()


class WebContext:
    """
    One link of a context chain.

    @ivar tag: the object this context is about (a tag, a resource, the
        request).
    @ivar parent: the enclosing context, or C{None}.
    """

    parent: Optional[WebContext] = None
    tag: Any = None
    isAttrib = False
    precompile = False
    inURL = False
    inJS = False
    inJSSingleQuoteString = False

    _remembrances: Optional[Dict[Any, Any]] = None
    _data: Any = _NOTHING
    _slotData: Optional[Dict[str, Any]] = None
    _sharedSlots = False
    _key: Optional[str] = None
    _locateHook: Any = None

    def __init__(
        self,
        parent: Optional[WebContext] = None,
        tag: Any = None,
        remembrances: Optional[Dict[Any, Any]] = None,
    ) -> None:
        self.parent = parent
        self.tag = tag
        slotData = getattr(tag, "slotData", None)
        if slotData is not None:
            self._slotData = slotData
            self._sharedSlots = True
        if remembrances:
            remembrances = dict(remembrances)
            data = remembrances.pop(IData, _NOTHING)
            if data is not _NOTHING:
                self._data = data
            self._remembrances = remembrances or None

    def remember(self, adapter: Any, interface: Any = None) -> WebContext:
        """
        Remember C{adapter} as the provider of C{interface} (or of every
        interface it provides, or as the data if it provides none) for
        L{locate} calls on this context and those below it.
        """
        if interface is None:
            interfaces = list(providedBy(adapter)) or [IData]
        else:
            interfaces = [interface]
        for iface in interfaces:
            if iface is IData:
                self._data = adapter
                continue
            if self._remembrances is None:
                self._remembrances = {}
            self._remembrances[iface] = adapter
        return self

    def locate(self, interface: Any, depth: int = 1) -> Any:
        """
        The nearest object remembered for C{interface}, looking from this
        context up (C{depth=2}: the second nearest; a negative depth counts
        from the top of the chain).

        @raise KeyError: nothing was remembered for it.
        """
        if depth < 0:
            found: List[Any] = []
            while True:
                try:
                    found.append(self.locate(interface, len(found) + 1))
                except KeyError:
                    break
            return found[depth] if found else None
        context: Optional[WebContext] = self
        if interface is IData:
            while context is not None:
                value = context._data
                if value is not _NOTHING:
                    depth -= 1
                    if not depth:
                        return value
                context = context.parent
            raise KeyError(f"Interface {interface.__name__} was not remembered.")
        while context is not None:
            remembered = context._remembrances
            if remembered is not None:
                value = remembered.get(interface, _NOTHING)
                if value is not _NOTHING:
                    depth -= 1
                    if not depth:
                        return value
            hook = context._locateHook
            if hook is not None:
                value = hook(interface)
                if value is not None:
                    return value
            context = context.parent
        raise KeyError(
            f"Interface {getattr(interface, '__name__', interface)} was not remembered."
        )

    def __conform__(self, interface: Any) -> Any:
        if interface is IQ:
            return _ContextQuery(self)
        try:
            return self.locate(interface)
        except KeyError:
            return None

    def fillSlots(self, name: str, stan: Any) -> None:
        """
        Fill the slots called C{name} rendered below this context with
        C{stan}.
        """
        if self._slotData is None:
            self._slotData = {}
        elif self._sharedSlots:
            # The dict came from the tag; do not write into the template.
            self._slotData = dict(self._slotData)
            self._sharedSlots = False
        self._slotData[name] = stan

    def locateSlotData(self, name: str) -> Any:
        """
        The nearest value filled for slot C{name}.

        @raise KeyError: the slot was not filled.
        """
        context: Optional[WebContext] = self
        while context is not None:
            filled = context._slotData
            if filled:
                value = filled.get(name, _NOTHING)
                if value is not _NOTHING:
                    return value
            context = context.parent
        raise KeyError(f"Slot named {name!r} was not filled.")

    def arg(self, get: Any, default: Any = None) -> Any:
        """
        The first value of the request argument C{get}, as C{str}, or
        C{default}.
        """
        request = self.locate(IRequest)
        name = get.encode("utf-8") if isinstance(get, str) else get
        values = request.args.get(name)
        if not values:
            return default
        value = values[0]
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value

    @property
    def key(self) -> Optional[str]:
        """
        The dotted key of the nearest tag with a C{key} special.
        """
        context: Optional[WebContext] = self
        while context is not None:
            if context._key is not None:
                return context._key
            context = context.parent
        return None

    def _setKey(self, key: Any) -> None:
        parentKey = self.parent.key if self.parent is not None else None
        self._key = f"{parentKey}.{key}" if parentKey else str(key)

    def clone(self, deep: bool = True, cloneTags: bool = True) -> WebContext:
        """
        A copy of this context (and, with C{deep}, of its parents, without
        copying their tags).
        """
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        if self.parent is not None and deep:
            new.parent = self.parent.clone(deep=True, cloneTags=False)
        if cloneTags and isinstance(self.tag, Tag):
            new.tag = self.tag.clone(deep=deep)
        if self._remembrances is not None:
            new._remembrances = dict(self._remembrances)
        if self._slotData is not None:
            new._slotData = dict(self._slotData)
            new._sharedSlots = False
        return new

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tag={self.tag!r})"


class WovenContext(WebContext):
    """
    The context of one tag while a page renders. Its tag's C{remember} and
    C{key} specials and filled slots take effect here.
    """

    def __init__(
        self,
        parent: Optional[WebContext] = None,
        tag: Any = None,
        precompile: Optional[bool] = None,
        remembrances: Optional[Dict[Any, Any]] = None,
        key: Optional[str] = None,
        isAttrib: Optional[bool] = None,
        inURL: Optional[bool] = None,
        inJS: Optional[bool] = None,
        inJSSingleQuoteString: Optional[bool] = None,
        inURLPath: Optional[bool] = None,
        inURLParam: Optional[bool] = None,
    ) -> None:
        WebContext.__init__(self, parent, tag, remembrances)
        if parent is not None:
            if parent.precompile:
                self.precompile = True
            if parent.isAttrib:
                self.isAttrib = True
        if precompile is not None:
            self.precompile = precompile
        if isAttrib is not None:
            self.isAttrib = isAttrib
        if tag is not None:
            remember = getattr(tag, "remember", Unset)
            if remember is not Unset and remember is not None:
                self.remember(remember)
            if key is None:
                key = getattr(tag, "key", None)
        if key is not None and key is not Unset:
            self._setKey(key)

    def patternGenerator(self, pattern: str, default: Any = None) -> PatternTag:
        """
        Same as C{self.tag.patternGenerator}.
        """
        return self.tag.patternGenerator(pattern, default)

    def allPatterns(self, pattern: str) -> list:
        """
        Same as C{self.tag.allPatterns}.
        """
        return self.tag.allPatterns(pattern)

    def onePattern(self, pattern: str) -> Tag:
        """
        Same as C{self.tag.onePattern}.
        """
        return self.tag.onePattern(pattern)


def _childContext(parent: WebContext, tag: Tag) -> WovenContext:
    # The flattener's way to make a WovenContext: the same result as
    # WovenContext(parent, tag), without the keyword handling.
    context = object.__new__(WovenContext)
    context.parent = parent
    context.tag = tag
    slotData = tag.slotData
    if slotData is not None:
        context._slotData = slotData
        context._sharedSlots = True
    if parent.isAttrib:
        context.isAttrib = True
    remember = tag.remember
    if remember is not Unset and remember is not None:
        context.remember(remember)
    key = tag.key
    if key is not Unset and key is not None:
        context._setKey(key)
    return context


class SiteContext(WebContext):
    """
    The root of every request's chain on a L{appserver.NevowSite}: what is
    remembered here is visible to the whole site.
    """


def _decodeSegments(segments: Any) -> tuple:
    return tuple(
        s.decode("utf-8", "surrogateescape") if isinstance(s, bytes) else s
        for s in segments
    )


def sessionForRequest(request: Any) -> Any:
    """
    The session of C{request}: the one tlsession loaded for it (below a
    C{tlsession.SessionResource}) if there is one, otherwise twisted.web's
    own (C{request.getSession()}, which sets the C{TWISTED_SESSION}
    cookie and lives in this process only), otherwise C{None}.
    """
    try:
        shared = SharedSession(request, None)
    except LookupError:
        # tlsession's adapter: no session was loaded for this request.
        shared = None
    if shared is not None:
        return shared
    getSession = getattr(request, "getSession", None)
    if getSession is None:
        return None
    return getSession()


class RequestContext(WebContext):
    """
    The context of a request (its C{tag}). Below it, C{IRequest(ctx)} is the
    request and C{ISession(ctx)} its session.
    """

    def __init__(
        self,
        parent: Optional[WebContext] = None,
        tag: Any = None,
        remembrances: Optional[Dict[Any, Any]] = None,
    ) -> None:
        WebContext.__init__(self, parent, tag, remembrances)
        if tag is not None:
            self.remember(tag, IRequest)

    def _locateHook(self, interface: Any) -> Any:
        request = self.tag
        if request is None:
            return None
        if interface is ISession:
            return sessionForRequest(request)
        if interface is ICurrentSegments:
            return _decodeSegments(getattr(request, "prepath", ()))
        if interface is IRemainingSegments:
            return _decodeSegments(getattr(request, "postpath", ()))
        return None


class PageContext(WebContext):
    """
    The context of one resource (its C{tag}) met while traversing or
    rendering. Objects the resource was told to C{remember} are remembered
    here.
    """

    def __init__(
        self,
        parent: Optional[WebContext] = None,
        tag: Any = None,
        remembrances: Optional[Dict[Any, Any]] = None,
    ) -> None:
        WebContext.__init__(self, parent, tag, remembrances)
        for obj, interface in getattr(tag, "toremember", ()):
            self.remember(obj, interface)

    def _locateHook(self, interface: Any) -> Any:
        if interface is IRenderer or interface is IRendererFactory:
            if interface.providedBy(self.tag):
                return self.tag
        return None


class _ContextQuery:
    """
    C{IQ(ctx)}: pattern queries over the context's tag.
    """

    def __init__(self, context: WebContext) -> None:
        self.context = context

    def patternGenerator(self, pattern: str, default: Any = None) -> PatternTag:
        return self.context.tag.patternGenerator(pattern, default)

    def allPatterns(self, pattern: str) -> list:
        return self.context.tag.allPatterns(pattern)

    def onePattern(self, pattern: str) -> Tag:
        return self.context.tag.onePattern(pattern)
