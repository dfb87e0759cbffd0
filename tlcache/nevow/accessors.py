# -*- test-case-name: tests.unit.test_nevow_rend -*-
"""
How C{data} specials find their values: the standard L{IContainer} and
L{IGettable} adapters.

Dicts, lists and tuples are containers (C{data=directive("key")},
C{directive("0")}, C{directive("1:3")}); functions and methods are called
with C{(ctx, data)}. L{ObjectContainer} exposes an object's attributes; it
is registered for no type by default:
C{compy.registerAdapter(ObjectContainer, MyClass, IContainer)}.
"""

from __future__ import annotations

from types import BuiltinFunctionType, FunctionType, MethodType
from typing import Any, Optional

from twisted.python.components import registerAdapter
from zope.interface import implementer

from tlcache.nevow._data import currentData, rawData, resolveData
from tlcache.nevow.context import WebContext
from tlcache.nevow.inevow import IContainer, IGettable
from tlcache.nevow.stan import directive, slot

__all__ = [
    "DictionaryContainer",
    "DirectiveAccessor",
    "FunctionAccessor",
    "ListContainer",
    "NoAccessor",
    "ObjectContainer",
    "SlotAccessor",
    "convertToData",
]


def convertToData(data: Any, context: WebContext) -> Any:
    """
    Resolve C{data} the way a C{data} special is resolved in C{context}.

    @return: the value, or a L{Deferred<twisted.internet.defer.Deferred>} firing with
        it.
    """
    return resolveData(data, context)


class NoAccessor(LookupError):  # noqa: N818 - Nevow's name
    """
    The current data has no L{IContainer} to look a directive up in.
    """


class _Adapter:
    def __init__(self, original: Any) -> None:
        self.original = original


@implementer(IGettable)
class DirectiveAccessor(_Adapter):
    """
    A directive as data: the child of that name of the enclosing data.
    """

    def get(self, context: WebContext) -> Any:
        """
        The child of the enclosing data named by the directive.
        """
        data = rawData(context)
        container = IContainer(data, None)
        if container is None:
            raise NoAccessor(f"{data!r} does not provide IContainer")
        return container.child(context, self.original.name)


@implementer(IGettable)
class SlotAccessor(_Adapter):
    """
    A slot as data: the value it was filled with.
    """

    def get(self, context: WebContext) -> Any:
        """
        The value the slot was filled with.
        """
        return context.locateSlotData(self.original.name)


@implementer(IGettable)
class FunctionAccessor(_Adapter):
    """
    A function as data: called with C{(ctx, data)}.
    """

    def get(self, context: WebContext) -> Any:
        """
        What the function returns for the context and the current data.
        """
        return self.original(context, currentData(context))


@implementer(IContainer)
class DictionaryContainer(_Adapter):
    """
    A dict's items as data children.
    """

    def child(self, context: WebContext, name: Any) -> Any:
        """
        The dict's item C{name}.
        """
        return self.original[name]


def _intOrNone(text: str) -> Optional[int]:
    try:
        return int(text)
    except ValueError:
        return None


@implementer(IContainer)
class ListContainer(_Adapter):
    """
    A sequence's items as data children: C{"2"} is an index, C{"1:3"} a
    slice.
    """

    def child(self, context: WebContext, name: Any) -> Any:
        """
        The item at index C{name}, or the slice C{"start:stop"}.
        """
        name = str(name)
        if ":" in name:
            return self.original[slice(*[_intOrNone(x) for x in name.split(":")])]
        return self.original[int(name)]


@implementer(IContainer)
class ObjectContainer(_Adapter):
    """
    An object's attributes as data children (never those starting with
    C{_}). Register it for your own types.
    """

    def child(self, context: WebContext, name: Any) -> Any:
        """
        The attribute C{name}.

        @raise ValueError: C{name} starts with an underscore.
        """
        if str(name)[:1] == "_":
            raise ValueError(
                f"ObjectContainer does not give out private attributes: {name!r}"
            )
        return getattr(self.original, name)


registerAdapter(DictionaryContainer, dict, IContainer)
registerAdapter(ListContainer, list, IContainer)
registerAdapter(ListContainer, tuple, IContainer)
for _kind in (FunctionType, MethodType, BuiltinFunctionType):
    registerAdapter(FunctionAccessor, _kind, IGettable)
registerAdapter(DirectiveAccessor, directive, IGettable)
registerAdapter(SlotAccessor, slot, IGettable)
del _kind
