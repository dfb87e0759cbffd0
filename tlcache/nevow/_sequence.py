# -*- test-case-name: tests.unit.test_nevow_rend -*-
"""
The sequence renderer's rows, rendered quickly.

L{rend.sequence} puts a L{SequenceRun} in its tag. Each row copies an item
pattern with the item as data and calls the pattern's render function,
found once for the whole run. A row whose pattern holds only static markup
and slots, and whose render function returned its tag unchanged with text
in the slots, is written straight out, and its tag kept for the next row.
Every other row takes the engine's general path.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

from twisted.internet.defer import Deferred

from tlcache.nevow._data import (
    _PLAIN_DATA,
    _callStyle,
    callRenderer,
    findRenderer,
    resolveData,
)
from tlcache.nevow._flatten import (
    _DataArrived,
    _Flattener,
    _Static,
    _writeTag,
    addBuiltinHandler,
    escapeAttribute,
    tagForms,
)
from tlcache.nevow.context import _NOTHING, WebContext, WovenContext
from tlcache.nevow.inevow import IRendererFactory
from tlcache.nevow.stan import _SPECIALS as _SPECIAL_NAMES
from tlcache.nevow.stan import Tag, Unset, directive, slot

__all__ = ["SequenceRun"]


class SequenceRun:
    """
    The items of a sequence render: what L{rend.sequence} puts in its tag.
    Rendered row by row, each item pattern copied with its item as data.
    """

    __slots__ = ("items", "dividers", "data")

    def __init__(self, items: List[Tag], dividers: List[Tag], data: Any) -> None:
        self.items = items
        self.dividers = dividers
        self.data = data


class _Pushed:
    """
    What the row generator yields after pushing a row's frame itself.
    """

    __slots__ = ()


_PUSHED = _Pushed()


def _framePushed(fl: _Flattener, item: Any, ctx: WebContext, inAttribute: bool) -> bool:
    return True


class _RowPlan:
    """
    How to render the rows of one item pattern quickly.

    @ivar plain: the pattern's instance attributes without its specials.
    @ivar function: the render function, when it could be found once for
        the whole run; C{callStyle} says how to call it (see
        L{callRenderer}: 2 for C{f(ctx, data)}, 1 for C{f(data)}, 0 to go
        through L{callRenderer}).
    @ivar pieces: for a pattern whose children are only static markup and
        slots, the whole element as encoded markup and slot names (C{str})
        in order, else C{None}.
    @ivar spare: a row's tag, its attribute dict and children list, left
        unchanged by its render function, for the next row to use.
    """

    __slots__ = (
        "plain",
        "children",
        "attributes",
        "slotData",
        "render",
        "function",
        "callStyle",
        "pieces",
        "spare",
    )

    plain: Dict[str, Any]
    children: List[Any]
    attributes: Dict[str, Any]
    slotData: Optional[Dict[str, Any]]
    render: Any
    function: Any
    callStyle: int
    pieces: Optional[List[Any]]
    spare: Any


def _rowPlan(template: Tag, ctx: WebContext) -> Any:
    # False: a pattern the general path must handle. The part of the plan
    # that depends only on the pattern is kept on it (clones drop it), and
    # checked against the pattern's children and attributes.
    fingerprint = (
        id(template.children),
        len(template.children),
        id(template.attributes),
        len(template.attributes),
    )
    cached = template.__dict__.get("_rowPlanCache")
    if cached is not None and cached[0] == fingerprint:
        shape = cached[1]
    else:
        shape = _rowShape(template)
        template.__dict__["_rowPlanCache"] = (fingerprint, shape)
    if shape is False:
        return False
    plan = _RowPlan()
    plan.plain, plan.pieces = shape
    plan.children = plan.plain["children"]
    plan.attributes = plan.plain["attributes"]
    plan.slotData = plan.plain.get("slotData")
    plan.spare = None
    render = plan.render = template.render
    function = None
    if type(render) is directive:
        try:
            factory = ctx.locate(IRendererFactory)
        except KeyError:
            factory = None
        if getattr(getattr(type(factory), "renderer", None), "_cacheableLookup", False):
            function = factory.renderer(ctx, render.name)
    elif render:
        function = render
    plan.function = function
    plan.callStyle = _callStyle(function) if function is not None else 0
    return plan


def _rowShape(template: Tag) -> Any:
    if _isSet(template.remember) or _isSet(template.key) or template.macro:
        return False
    plain = {
        name: value
        for name, value in template.__dict__.items()
        if name not in _SPECIAL_NAMES and name not in ("_fresh", "_rowPlanCache")
    }
    name = template.tagName
    attributes = template.attributes
    if (
        name
        and all(type(v) is str for v in attributes.values())
        and not template.slotData
    ):
        forms = tagForms(name)
        start = [forms.open]
        for key, value in attributes.items():
            start.append(b" " + key.encode() + b'="' + escapeAttribute(value) + b'"')
        start.append(b">")
        pieces: List[Any] = [b"".join(start)]
        for child in template.children:
            if type(child) is _Static:
                if type(pieces[-1]) is bytes:
                    pieces[-1] += child
                else:
                    pieces.append(bytes(child))
            elif type(child) is slot and child.default is None:
                pieces.append(child.name)
            else:
                break
        else:
            if type(pieces[-1]) is bytes:
                pieces[-1] += forms.end
            else:
                pieces.append(forms.end)
            return plain, pieces
    return plain, None


def _isSet(value: Any) -> bool:
    return value is not Unset and value is not None


def _sequenceRows(
    fl: _Flattener, run: SequenceRun, ctx: WebContext, inAttribute: bool
) -> Iterator[Any]:
    stack = fl.stack
    out = fl.out
    append = out.append
    items = run.items
    count = len(items)
    dividers = run.dividers
    dividerCount = len(dividers)
    data = run.data
    plans: List[Any] = [None] * count
    inheritAttrib = ctx.isAttrib
    for index, element in enumerate(data):
        if index and dividerCount:
            yield dividers[(index - 1) % dividerCount]._patternClone(data[index - 1])
        position = index % count
        plan = plans[position]
        if plan is None:
            plan = plans[position] = _rowPlan(items[position], ctx)
        if plan is False:
            yield items[position]._patternClone(element)
            continue
        plain = plan.plain
        spare = plan.spare
        if spare is None:
            tag = Tag.__new__(Tag)
            attributes = plain.copy()
            children = attributes["children"] = plan.children[:]
            attributes["attributes"] = plan.attributes.copy()
            tag.__dict__ = attributes
        else:
            tag, attributes, children = spare
            plan.spare = None
        rowContext = object.__new__(WovenContext)
        rowContext.parent = ctx
        rowContext.tag = tag
        if plan.slotData is not None:
            rowContext._slotData = attributes["slotData"] = dict(plan.slotData)
        if inheritAttrib:
            rowContext.isAttrib = True
        if type(element) in _PLAIN_DATA:
            value = element
        else:
            value = resolveData(element, rowContext)
            if type(value) not in _PLAIN_DATA and isinstance(value, Deferred):
                arrived = value.addCallback(_DataArrived, tag, rowContext, plan.render)
                stack.append((iter((arrived,)), rowContext, inAttribute))
                yield _PUSHED
                continue
        rowContext._data = value
        size = len(attributes)
        render = plan.render
        if render:
            function = plan.function
            style = plan.callStyle
            if style == 2:
                result = function(rowContext, value)
            elif style == 1:
                result = function(value)
            else:
                if function is None:
                    function = render
                    if type(render) is directive:
                        function = findRenderer(rowContext, render.name)
                result = callRenderer(function, rowContext)
            if result is not tag or len(attributes) != size:
                stack.append((iter((result,)), rowContext, inAttribute))
                yield _PUSHED
                continue
        pieces = plan.pieces
        if (
            pieces is not None
            and tag.children is children
            and children == plan.children
            and tag.attributes == plan.attributes
            and not inAttribute
        ):
            # Static markup and slots filled with text on this row's own
            # context: write the row out directly (taking it back if a slot
            # is not that simple), and keep the unchanged tag for the next
            # row of this pattern.
            filled = rowContext._slotData or _NO_SLOTS
            mark = len(out)
            for piece in pieces:
                if type(piece) is bytes:
                    append(piece)
                    continue
                text = filled.get(piece, _NOTHING)
                if type(text) is not str:
                    del out[mark:]
                    break
                append(
                    text.replace("&", "&amp;")
                    .replace("<", "&lt;")
                    .replace(">", "&gt;")
                    .encode()
                )
            else:
                if plan.slotData is None:
                    plan.spare = (tag, attributes, children)
                continue
        if _writeTag(fl, tag, rowContext, inAttribute):
            yield _PUSHED


_NO_SLOTS: Dict[str, Any] = {}


def _renderSequenceRun(
    fl: _Flattener, run: SequenceRun, ctx: WebContext, inAttribute: bool
) -> bool:
    fl.stack.append((_sequenceRows(fl, run, ctx, inAttribute), ctx, inAttribute))
    return True


addBuiltinHandler(SequenceRun, _renderSequenceRun)
addBuiltinHandler(_Pushed, _framePushed)
