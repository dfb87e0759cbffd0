# -*- test-case-name: tests.unit.test_nevow_flat -*-
"""
The render engine: turns a (precompiled) stan tree into UTF-8 bytes.

One loop over a stack of iterators; static chunks and text go straight to
the output list, everything else is handled by a function chosen by the
item's type. The loop only leaves its synchronous path when a L{Deferred}
that has not fired yet turns up; it then suspends and resumes when it
fires.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from decimal import Decimal
from itertools import chain
from types import BuiltinFunctionType, BuiltinMethodType, FunctionType, MethodType
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.web import template as _twtemplate
from twisted.web.iweb import IRenderable, IRequest
from zope.interface import providedBy

from tlcache.nevow._data import (
    _PLAIN_DATA,
    callRenderer,
    currentData,
    findRenderer,
    resolveData,
    runMacro,
)
from tlcache.nevow.context import _NOTHING, WebContext, WovenContext, _childContext
from tlcache.nevow.inevow import IDocFactory, IFragmentCache, IRenderer
from tlcache.nevow.stan import (
    Comment,
    Entity,
    Proto,
    Tag,
    Unset,
    cached,
    directive,
    raw,
    slot,
    xml,
)

__all__ = [
    "FragmentRequestError",
    "SynchronousRenderError",
    "UnsupportedTypeError",
    "addBuiltinHandler",
    "flattenToBytes",
    "registerFlattener",
]


class _Static(bytes):
    """
    Markup that is already escaped and encoded: a precompiled chunk.
    """

    __slots__ = ()


class _AttrValue:
    """
    The dynamic value of an attribute, precompiled: rendered in attribute
    mode (quotes escaped, no tags).
    """

    __slots__ = ("items",)

    def __init__(self, items: List[Any]) -> None:
        self.items = items

    def __repr__(self) -> str:
        return f"_AttrValue({self.items!r})"


class SynchronousRenderError(RuntimeError):
    """
    A synchronous render (L{rend.Page.renderSynchronously},
    L{flat.flatten}) met a L{Deferred} that had not fired.
    """


class FragmentRequestError(RuntimeError):
    """
    A renderer inside a L{cached} fragment asked for the request, the
    session or the URL segments. Cached fragments are shared by every
    request (and refreshed with no request at all), so they cannot use
    them.
    """


class UnsupportedTypeError(TypeError):
    """
    An object in a stan tree that nothing knows how to render.
    """


def escapeText(text: str) -> bytes:
    """
    C{text} escaped for element content, as UTF-8.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").encode()


def escapeAttribute(text: str) -> bytes:
    """
    C{text} escaped for a double-quoted attribute value, as UTF-8.
    """
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .encode()
    )


# Elements written as <br /> when they have no children.
VOID_ELEMENTS = frozenset(
    "area base basefont br col embed frame hr img input isindex keygen link meta param "
    "source track wbr".split()
)


class TagForms:
    """
    The encoded pieces of an element's markup.

    @ivar start: C{b"<name>"}
    @ivar end: C{b"</name>"}, and C{endItems} the same as a one-chunk tuple.
    @ivar open: C{b"<name"}, the start tag without its end.
    @ivar emptyEnd: what ends the start tag of an element without children
        (C{b" />"} for void elements, C{b"></name>"} otherwise); C{empty}
        the whole element.
    """

    __slots__ = ("start", "end", "endItems", "open", "emptyEnd", "empty")

    def __init__(self, name: str) -> None:
        encoded = name.encode()
        self.start = b"<" + encoded + b">"
        self.end = b"</" + encoded + b">"
        self.endItems = (_Static(self.end),)
        self.open = b"<" + encoded
        self.emptyEnd = b" />" if name in VOID_ELEMENTS else b">" + self.end
        self.empty = self.open + self.emptyEnd


_TAG_FORMS: Dict[str, TagForms] = {}


def tagForms(name: str) -> TagForms:
    """
    The L{TagForms} of an element name.
    """
    forms = _TAG_FORMS.get(name)
    if forms is None:
        forms = _TAG_FORMS[name] = TagForms(name)
    return forms


def _tagInAttribute(tag: Any) -> UnsupportedTypeError:
    return UnsupportedTypeError(
        f"a tag cannot be rendered inside an attribute value: {tag!r}"
    )


# -- the engine ---------------------------------------------------------------

Frame = Tuple[Any, WebContext, bool]
Handler = Callable[["_Flattener", Any, WebContext, bool], bool]


class _Flattener:
    """
    One flattening run: an output list and a stack of frames
    C{(iterator, context, inAttribute)}.
    """

    __slots__ = ("out", "stack", "waiting", "done", "armed", "syncResult", "abandoned")

    def __init__(self, root: Any, ctx: WebContext, inAttribute: bool) -> None:
        self.out: List[bytes] = []
        self.stack: List[Frame] = [(iter((root,)), ctx, inAttribute)]
        self.waiting: Optional[Deferred] = None
        self.done: Optional[Deferred] = None
        self.armed = False
        self.syncResult: Any = _NOTHING
        self.abandoned = False

    def run(self) -> bool:
        """
        Flatten until done (C{True}) or until waiting on a L{Deferred}
        (C{False}).
        """
        append = self.out.append
        stack = self.stack
        pop = stack.pop
        handlers = _HANDLERS
        while stack:
            frame = stack[-1]
            ctx = frame[1]
            inAttribute = frame[2]
            for item in frame[0]:
                kind = type(item)
                if kind is _Static:
                    append(item)
                elif kind is str:
                    if inAttribute:
                        append(
                            item.replace("&", "&amp;")
                            .replace("<", "&lt;")
                            .replace(">", "&gt;")
                            .replace('"', "&quot;")
                            .encode()
                        )
                    else:
                        append(
                            item.replace("&", "&amp;")
                            .replace("<", "&lt;")
                            .replace(">", "&gt;")
                            .encode()
                        )
                elif kind is slot:
                    # Inlined: the slot filled with text, the common case.
                    name = item.name
                    context: Optional[WebContext] = ctx
                    while context is not None:
                        filled = context._slotData
                        if filled is not None and name in filled:
                            value = filled[name]
                            break
                        context = context.parent
                    else:
                        if item.default is None:
                            raise KeyError(f"Slot named {name!r} was not filled.")
                        value = item.default
                    if type(value) is str:
                        if inAttribute:
                            append(
                                value.replace("&", "&amp;")
                                .replace("<", "&lt;")
                                .replace(">", "&gt;")
                                .replace('"', "&quot;")
                                .encode()
                            )
                        else:
                            append(
                                value.replace("&", "&amp;")
                                .replace("<", "&lt;")
                                .replace(">", "&gt;")
                                .encode()
                            )
                    else:
                        stack.append((iter((value,)), ctx, inAttribute))
                        break
                else:
                    handler = handlers.get(kind)
                    if handler is None:
                        handler = _handlerFor(kind, item)
                    if handler(self, item, ctx, inAttribute):
                        break
            else:
                pop()
                continue
            if self.waiting is not None:
                return False
        return True

    def push(self, item: Any, ctx: WebContext, inAttribute: bool) -> bool:
        """
        Render C{item} next.
        """
        self.stack.append((iter((item,)), ctx, inAttribute))
        return True

    def awaitDeferred(self, d: Deferred, ctx: WebContext, inAttribute: bool) -> bool:
        """
        Render what C{d} fires with next: at once if it already fired,
        otherwise after suspending.
        """
        self.armed = True
        try:
            d.addBoth(self._fired, ctx, inAttribute)
        finally:
            self.armed = False
        result = self.syncResult
        if result is not _NOTHING:
            self.syncResult = _NOTHING
            if isinstance(result, Failure):
                result.raiseException()
            return self.push(result, ctx, inAttribute)
        self.waiting = d
        return True

    def _fired(self, result: Any, ctx: WebContext, inAttribute: bool) -> None:
        if self.armed:
            self.syncResult = result
            return None
        if self.abandoned:
            return None
        self.waiting = None
        if isinstance(result, Failure):
            self._finish(result)
            return None
        self.push(result, ctx, inAttribute)
        try:
            finished = self.run()
        except BaseException:
            self._finish(Failure())
            return None
        if finished:
            self._finish(b"".join(self.out))
        return None

    def _finish(self, result: Any) -> None:
        done = self.done
        if done is None or done.called:
            return
        if isinstance(result, Failure):
            done.errback(result)
        else:
            done.callback(result)

    def cancel(self, done: Deferred) -> None:
        """
        Stop: cancel the L{Deferred} being waited on.
        """
        self.abandoned = True
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.cancel()


def flattenToBytes(
    root: Any, ctx: WebContext, inAttribute: bool = False, synchronous: bool = False
) -> Union[bytes, Deferred]:
    """
    Flatten C{root} in C{ctx}: the bytes when everything rendered at once,
    otherwise a L{Deferred} firing with them.

    @param synchronous: raise L{SynchronousRenderError} instead of waiting.
    """
    flattener = _Flattener(root, ctx, inAttribute)
    if flattener.run():
        return b"".join(flattener.out)
    if synchronous:
        flattener.abandoned = True
        raise SynchronousRenderError(
            f"rendering needs {flattener.waiting!r}, which has not fired yet"
        )
    flattener.done = Deferred(flattener.cancel)
    return flattener.done


# -- handlers -----------------------------------------------------------------
# Each takes (flattener, item, ctx, inAttribute), writes output or pushes
# frames, and returns True when it pushed (the loop then starts on the new
# top frame).


def _renderTag(fl: _Flattener, tag: Tag, ctx: WebContext, inAttribute: bool) -> bool:
    pattern = tag.pattern
    if pattern is not Unset and pattern is not None:
        return False
    macro = tag.macro
    if macro:
        return fl.push(runMacro(macro, ctx, tag), ctx, inAttribute)
    data = tag.data
    render = tag.render
    if (
        data is not Unset
        or render
        or tag.slotData is not None
        or tag.remember is not Unset
        or tag.key is not Unset
    ):
        if render and not tag._fresh:
            # Never let a render function change the template itself.
            tag = tag.clone(deep=False)
        ctx = _childContext(ctx, tag)
        if data is not Unset:
            value = resolveData(data, ctx)
            if type(value) not in _PLAIN_DATA and isinstance(value, Deferred):
                return fl.awaitDeferred(
                    value.addCallback(_DataArrived, tag, ctx, render), ctx, inAttribute
                )
            ctx._data = value
        if render:
            return _callTagRenderer(fl, tag, ctx, inAttribute, render)
    return _writeTag(fl, tag, ctx, inAttribute)


class _DataArrived:
    """
    A tag whose data came from a L{Deferred}: continue with its renderer.
    """

    __slots__ = ("tag", "ctx", "render")

    def __init__(self, data: Any, tag: Tag, ctx: WebContext, render: Any) -> None:
        ctx._data = data
        self.tag = tag
        self.ctx = ctx
        self.render = render


def _continueTag(
    fl: _Flattener, item: _DataArrived, ctx: WebContext, inAttribute: bool
) -> bool:
    if item.render:
        return _callTagRenderer(fl, item.tag, item.ctx, inAttribute, item.render)
    return _writeTag(fl, item.tag, item.ctx, inAttribute)


def _callTagRenderer(
    fl: _Flattener, tag: Tag, ctx: WebContext, inAttribute: bool, render: Any
) -> bool:
    tag._clearSpecials()
    size = len(tag.__dict__)
    if type(render) is directive:
        render = findRenderer(ctx, render.name)
    result = callRenderer(render, ctx)
    if result is tag and len(tag.__dict__) == size:
        # The usual "return ctx.tag": no new specials or slots on it.
        return _writeTag(fl, tag, ctx, inAttribute)
    return fl.push(result, ctx, inAttribute)


def _writeTag(fl: _Flattener, tag: Tag, ctx: WebContext, inAttribute: bool) -> bool:
    name = tag.tagName
    children = tag.children
    if not name:
        if children:
            fl.stack.append((iter(children), ctx, inAttribute))
            return True
        return False
    if inAttribute:
        raise _tagInAttribute(tag)
    forms = _TAG_FORMS.get(name) or tagForms(name)
    attributes = tag.attributes
    if not attributes:
        if children:
            fl.out.append(forms.start)
            fl.stack.append((chain(children, forms.endItems), ctx, False))
            return True
        fl.out.append(forms.empty)
        return False
    parts = [forms.open]
    dynamic: Optional[List[Any]] = None
    for key, value in attributes.items():
        if value is None:
            continue
        if type(value) is str:
            parts.append(b" " + key.encode() + b'="' + escapeAttribute(value) + b'"')
            continue
        if dynamic is None:
            dynamic = []
        parts.append(b" " + key.encode() + b'="')
        dynamic.append(_Static(b"".join(parts)))
        dynamic.append(_AttrValue([value]))
        parts = [b'"']
    if dynamic is not None:
        parts.append(b">" if children else forms.emptyEnd)
        dynamic.append(_Static(b"".join(parts)))
        if children:
            fl.stack.append((chain(dynamic, children, forms.endItems), ctx, False))
        else:
            fl.stack.append((iter(dynamic), ctx, False))
        return True
    if children:
        parts.append(b">")
        fl.out.append(b"".join(parts))
        fl.stack.append((chain(children, forms.endItems), ctx, False))
        return True
    parts.append(forms.emptyEnd)
    fl.out.append(b"".join(parts))
    return False


def _renderComment(
    fl: _Flattener, item: Comment, ctx: WebContext, inAttribute: bool
) -> bool:
    if inAttribute:
        raise _tagInAttribute(item)
    fl.stack.append(
        (chain((_Static(b"<!--"),), item.children, (_Static(b"-->"),)), ctx, False)
    )
    return True


def _renderProto(
    fl: _Flattener, item: Proto, ctx: WebContext, inAttribute: bool
) -> bool:
    if not item:
        return False
    if inAttribute:
        raise _tagInAttribute(item)
    fl.out.append(tagForms(str(item)).empty)
    return False


def _renderAttrValue(
    fl: _Flattener, item: _AttrValue, ctx: WebContext, inAttribute: bool
) -> bool:
    if not ctx.isAttrib:
        ctx = WovenContext(ctx, ctx.tag, isAttrib=True)
    fl.stack.append((iter(item.items), ctx, True))
    return True


def _renderCallable(
    fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool
) -> bool:
    # A render function (or directive) standing alone among children acts as
    # invisible(render=item): it gets a context of its own.
    tag = Tag("")
    tag._fresh = True
    tag.render = item
    return _renderTag(fl, tag, ctx, inAttribute)


def _renderIterable(
    fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool
) -> bool:
    fl.stack.append((iter(item), ctx, inAttribute))
    return True


def _renderText(fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool) -> bool:
    text = str(item)
    fl.out.append(escapeAttribute(text) if inAttribute else escapeText(text))
    return False


def _renderBytes(
    fl: _Flattener, item: bytes, ctx: WebContext, inAttribute: bool
) -> bool:
    text = item.decode("utf-8")
    fl.out.append(escapeAttribute(text) if inAttribute else escapeText(text))
    return False


def _renderRaw(fl: _Flattener, item: raw, ctx: WebContext, inAttribute: bool) -> bool:
    fl.out.append(str(item).encode())
    return False


def _renderXML(fl: _Flattener, item: xml, ctx: WebContext, inAttribute: bool) -> bool:
    content = item.content
    fl.out.append(content if isinstance(content, bytes) else str(content).encode())
    return False


def _renderEntity(
    fl: _Flattener, item: Entity, ctx: WebContext, inAttribute: bool
) -> bool:
    fl.out.append(item.markup().encode())
    return False


def _renderNothing(
    fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool
) -> bool:
    return False


def _renderDeferred(
    fl: _Flattener, item: Deferred, ctx: WebContext, inAttribute: bool
) -> bool:
    return fl.awaitDeferred(item, ctx, inAttribute)


def _renderCoroutine(
    fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool
) -> bool:
    return fl.awaitDeferred(ensureDeferred(item), ctx, inAttribute)


def _renderContext(
    fl: _Flattener, item: WebContext, ctx: WebContext, inAttribute: bool
) -> bool:
    return fl.push(item.tag, item, inAttribute)


def _renderRenderer(
    fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool
) -> bool:
    return fl.push(item.rend(ctx, currentData(ctx)), ctx, inAttribute)


def _renderDocFactory(
    fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool
) -> bool:
    return fl.push(item.load(ctx), ctx, inAttribute)


def _renderTwistedTemplate(
    fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool
) -> bool:
    if inAttribute:
        raise _tagInAttribute(item)
    try:
        request = IRequest(ctx, None)
    except FragmentRequestError:
        # Inside a cached fragment: twisted.web.template renders without one.
        request = None
    d = _twtemplate.flattenString(request, item)
    return fl.awaitDeferred(d.addCallback(_Static), ctx, inAttribute)


def _renderCached(
    fl: _Flattener, item: cached, ctx: WebContext, inAttribute: bool
) -> bool:
    if inAttribute:
        raise _tagInAttribute(item)
    cache = item.cache
    if cache is None:
        try:
            cache = ctx.locate(IFragmentCache)
        except KeyError:
            from tlcache.fragment import defaultFragmentCache

            cache = defaultFragmentCache()
    body = cache.bytesFor(item, ctx)
    if type(body) is bytes:
        # Already escaped markup, made by this flattener: written as it is.
        fl.out.append(body)
        return False
    return fl.awaitDeferred(body.addCallback(_Static), ctx, inAttribute)


_HANDLERS: Dict[type, Handler] = {
    Tag: _renderTag,
    Comment: _renderComment,
    Proto: _renderProto,
    _AttrValue: _renderAttrValue,
    _DataArrived: _continueTag,
    directive: _renderCallable,
    FunctionType: _renderCallable,
    MethodType: _renderCallable,
    BuiltinFunctionType: _renderCallable,
    BuiltinMethodType: _renderCallable,
    list: _renderIterable,
    tuple: _renderIterable,
    bytes: _renderBytes,
    raw: _renderRaw,
    xml: _renderXML,
    Entity: _renderEntity,
    type(None): _renderNothing,
    int: _renderText,
    float: _renderText,
    bool: _renderText,
    Decimal: _renderText,
    dict: _renderText,
    Deferred: _renderDeferred,
    WovenContext: _renderContext,
    _twtemplate.Tag: _renderTwistedTemplate,
    _twtemplate.CDATA: _renderTwistedTemplate,
    _twtemplate.Comment: _renderTwistedTemplate,
    _twtemplate.CharRef: _renderTwistedTemplate,
    cached: _renderCached,
}

# Types and interfaces given flatteners with registerFlattener. _HANDLERS
# also caches the handler found for other types; a registration starts it
# afresh from the built-in ones.
_REGISTERED: Dict[Any, Callable[[Any, WebContext], Any]] = {}
_BUILTIN = dict(_HANDLERS)


def addBuiltinHandler(kind: type, handler: Handler) -> None:
    """
    Render instances of C{kind} with C{handler} (for the engine's own node
    types defined elsewhere).
    """
    _BUILTIN[kind] = handler
    _HANDLERS[kind] = handler


def _userFlattener(flattener: Callable[[Any, WebContext], Any]) -> Handler:
    def handler(fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool) -> bool:
        return fl.push(flattener(item, ctx), ctx, inAttribute)

    return handler


def registerFlattener(
    flattener: Callable[[Any, WebContext], Any], forType: Any
) -> None:
    """
    Render instances of C{forType} (a class or an interface) with
    C{flattener(obj, ctx)}; what it returns is rendered in turn.
    """
    _REGISTERED[forType] = flattener
    _HANDLERS.clear()
    _HANDLERS.update(_BUILTIN)
    for kind, registered in _REGISTERED.items():
        if isinstance(kind, type):
            _HANDLERS[kind] = _userFlattener(registered)


def getFlattener(obj: Any) -> Optional[Callable[[Any, WebContext], Any]]:
    """
    The flattener registered for C{obj}'s type (or an interface it
    provides), or C{None}.
    """
    for base in type(obj).__mro__:
        if base in _REGISTERED:
            return _REGISTERED[base]
    for interface in providedBy(obj):
        if interface in _REGISTERED:
            return _REGISTERED[interface]
    return None


def _handlerFor(kind: type, item: Any) -> Handler:
    handler = _findHandler(kind, item)
    _HANDLERS[kind] = handler
    return handler


def _findHandler(kind: type, item: Any) -> Handler:
    for base in kind.__mro__:
        if base in _REGISTERED:
            return _userFlattener(_REGISTERED[base])
    for interface in providedBy(item):
        flattener = _REGISTERED.get(interface)
        if flattener is not None:
            return _userFlattener(flattener)
    for base in kind.__mro__[1:]:
        handler = _BUILTIN.get(base)
        if handler is not None and base is not object:
            return handler
    if isinstance(item, WebContext):
        return _renderContext
    if IRenderer.providedBy(item):
        return _renderRenderer
    if IDocFactory.providedBy(item):
        return _renderDocFactory
    if IRenderable.providedBy(item):
        return _renderTwistedTemplate
    if inspect.iscoroutine(item):
        return _renderCoroutine
    if isinstance(item, Iterator):
        return _renderIterable
    if callable(item):
        return _renderCallable
    return _unsupported


def _unsupported(fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool) -> bool:
    raise UnsupportedTypeError(
        f"cannot render {item!r} (of type {type(item).__qualname__})"
    )
