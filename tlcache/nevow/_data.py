# -*- test-case-name: tests.unit.test_nevow_rend -*-
"""
Data and render functions: how C{data} specials become values and how
render functions are found and called.
"""

from __future__ import annotations

from decimal import Decimal
from types import BuiltinFunctionType, BuiltinMethodType, FunctionType, MethodType
from typing import Any, Callable, Dict, Optional

from twisted.internet.defer import Deferred

from tlcache.nevow.context import _NOTHING, WebContext, WovenContext
from tlcache.nevow.inevow import (
    IContainer,
    IGettable,
    IMacroFactory,
    IRenderer,
    IRendererFactory,
)
from tlcache.nevow.stan import Tag, Unset, directive, slot

__all__ = [
    "DataNotFoundError",
    "cacheableLookup",
    "callRenderer",
    "currentData",
    "findRenderer",
    "rawData",
    "resolveData",
    "runMacro",
]


class DataNotFoundError(KeyError):
    """
    A C{data} directive named data that neither the page nor its
    C{original} has.
    """


_PLAIN_DATA = frozenset(
    [
        str,
        bytes,
        int,
        float,
        bool,
        type(None),
        list,
        tuple,
        dict,
        set,
        frozenset,
        Decimal,
    ]
)
_CALLABLE_DATA = frozenset(
    [FunctionType, MethodType, BuiltinFunctionType, BuiltinMethodType]
)

# What resolving data of a type involves, found once per type.
_KIND_PLAIN = 0  # nothing: the object is the data
_KIND_DEFERRED = 1  # wait for it
_KIND_GETTER = 2  # the type provides IGettable: call its get(ctx)
_KIND_ADAPT = 3  # adapt to IGettable (a registered adapter, or per instance)
_DATA_KINDS: Dict[type, int] = {}


def _dataKind(value: Any) -> int:
    kind = type(value)
    if isinstance(value, Deferred):
        found = _KIND_DEFERRED
    elif IGettable.implementedBy(kind):
        found = _KIND_GETTER
    elif IGettable(value, None) is not None:
        found = _KIND_ADAPT
    else:
        found = _KIND_PLAIN
    if found != _KIND_ADAPT and "__provides__" in getattr(value, "__dict__", ()):
        # Interfaces declared on this one object: no verdict for the type.
        return _KIND_ADAPT
    _DATA_KINDS[kind] = found
    return found


def rawData(ctx: WebContext) -> Any:
    """
    The data remembered nearest to C{ctx} (not resolved), or C{None}.
    """
    context: Optional[WebContext] = ctx
    while context is not None:
        value = context._data
        if value is not _NOTHING:
            return value
        context = context.parent
    return None


def currentData(ctx: WebContext) -> Any:
    """
    The data render functions at C{ctx} are given: the nearest remembered
    data, resolved (a page or fragment stands for its C{original}).
    """
    context: Optional[WebContext] = ctx
    while context is not None:
        value = context._data
        if value is not _NOTHING:
            if type(value) in _PLAIN_DATA:
                return value
            return resolveData(value, ctx)
        context = context.parent
    return None


def resolveData(value: Any, ctx: WebContext) -> Any:
    """
    Resolve a C{data} special: directives are looked up in the enclosing
    data, slots in the filled slots, functions and methods called with
    C{(ctx, data)}, L{IGettable}s asked; until a plain value (or a
    L{Deferred}, which resolves further when it fires) remains.
    """
    while True:
        kind = type(value)
        if kind in _PLAIN_DATA:
            return value
        if kind is directive:
            parent = rawData(ctx)
            container = IContainer(parent, None)
            if container is None:
                raise DataNotFoundError(
                    f"no IContainer in {parent!r} to look up the data {value.name!r}"
                )
            value = container.child(ctx, value.name)
            continue
        if kind is slot:
            value = ctx.locateSlotData(value.name)
            continue
        if kind in _CALLABLE_DATA:
            value = value(ctx, currentData(ctx))
            continue
        found = _DATA_KINDS.get(kind)
        if found is None:
            found = _dataKind(value)
        if found == _KIND_PLAIN:
            return value
        if found == _KIND_DEFERRED:
            return value.addCallback(resolveData, ctx)
        if found == _KIND_GETTER:
            resolved = value.get(ctx)
        else:
            gettable = IGettable(value, None)
            if gettable is None:
                return value
            resolved = gettable.get(ctx)
        if resolved is value:
            return value
        value = resolved


# -- render functions ---------------------------------------------------------


def findRenderer(ctx: WebContext, name: str) -> Any:
    """
    The render function C{render=directive(name)} means at C{ctx}.
    """
    try:
        factory = ctx.locate(IRendererFactory)
    except KeyError:
        raise KeyError(
            f"no renderer factory to find the renderer {name!r} in"
        ) from None
    return factory.renderer(ctx, name)


def callRenderer(fn: Any, ctx: WebContext) -> Any:
    """
    Call a render function the way Nevow did: C{f(data)} for one-argument
    functions, classes and builtins, C{f(renderer, ctx, data)} for
    three-argument functions (unbound C{render_*} taken from a class body),
    C{f(ctx, data)} otherwise.
    """
    kind = type(fn)
    if kind is MethodType:
        code = getattr(fn.__func__, "__code__", None)
        if code is not None and code.co_argcount == 2:
            return fn(currentData(ctx))
        return fn(ctx, currentData(ctx))
    if kind is FunctionType:
        count = fn.__code__.co_argcount
        if count == 1:
            return fn(currentData(ctx))
        if count == 3:
            return fn(ctx.locate(IRenderer), ctx, currentData(ctx))
        return fn(ctx, currentData(ctx))
    if isinstance(fn, (type, BuiltinFunctionType)):
        return fn(currentData(ctx))
    rend = getattr(fn, "rend", None)
    if rend is not None and IRenderer.providedBy(fn):
        return rend(ctx, currentData(ctx))
    return fn(ctx, currentData(ctx))


def runMacro(macro: Any, ctx: WebContext, tag: Tag) -> Any:
    """
    Run C{tag}'s macro (a callable, or a directive found through the
    L{IMacroFactory}) and return what replaces the tag.
    """
    if isinstance(macro, directive):
        try:
            factory = ctx.locate(IMacroFactory)
        except KeyError:
            raise KeyError(
                f"no macro factory to find the macro {macro.name!r} in"
            ) from None
        macro = factory.macro(ctx, macro.name)
    clone = tag.clone(deep=False)
    clone.macro = Unset
    return macro(WovenContext(ctx, clone))


def cacheableLookup(method: Callable[..., Any]) -> Callable[..., Any]:
    """
    Mark a C{renderer(ctx, name)} method whose answer depends only on the
    name (and the object): the sequence renderer then asks once per render
    instead of once per row.
    """
    method._cacheableLookup = True  # type: ignore[attr-defined]
    return method


def _callStyle(function: Any) -> int:
    kind = type(function)
    if kind is MethodType:
        code = getattr(function.__func__, "__code__", None)
        if code is None:
            return 0
        return 1 if code.co_argcount == 2 else 2
    if kind is FunctionType:
        count = function.__code__.co_argcount
        return 1 if count == 1 else 0 if count == 3 else 2
    return 0
