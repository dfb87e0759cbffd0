# -*- test-case-name: tests.unit.test_nevow_flat -*-
"""
The precompiler: turns a stan tree into the list the render engine walks.

Static markup (tags without specials, text, entities, comments) becomes
escaped, UTF-8 encoded chunks, adjacent ones merged into one; tags with
specials or filled slots stay tags (with precompiled children), cached
fragments stay nodes (with precompiled children), and slots,
directives, render functions and other objects stay as they are, to be
rendered per request. Macros run here, once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, List, Optional

from tlcache.nevow._data import runMacro
from tlcache.nevow._flatten import (
    _AttrValue,
    _Static,
    escapeAttribute,
    escapeText,
    tagForms,
)
from tlcache.nevow.context import WebContext, WovenContext
from tlcache.nevow.inevow import IMacroFactory
from tlcache.nevow.stan import (
    Comment,
    Entity,
    Proto,
    Tag,
    Unset,
    cached,
    raw,
    slot,
    xml,
)

__all__ = ["precompile"]


class _Precompiler:
    """
    Collects the output of one precompilation: a list of L{_Static} chunks
    and dynamic nodes.
    """

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.out: List[Any] = []
        self.pending: List[bytes] = []
        self.usedMacros = False

    def static(self, chunk: bytes) -> None:
        self.pending.append(chunk)

    def dynamic(self, node: Any) -> None:
        self.flush()
        self.out.append(node)

    def flush(self) -> None:
        if self.pending:
            self.out.append(_Static(b"".join(self.pending)))
            self.pending = []

    def result(self) -> List[Any]:
        self.flush()
        return self.out

    def sub(self, nodes: Any, inAttribute: bool) -> List[Any]:
        inner = _Precompiler(self.ctx)
        inner.walk(nodes, inAttribute)
        self.usedMacros = self.usedMacros or inner.usedMacros
        return inner.result()

    def walk(self, node: Any, inAttribute: bool) -> None:
        kind = type(node)
        if kind is str:
            self.static(escapeAttribute(node) if inAttribute else escapeText(node))
        elif kind is _Static:
            self.static(node)
        elif kind is list or kind is tuple:
            for child in node:
                self.walk(child, inAttribute)
        elif kind is raw:
            self.static(str(node).encode())
        elif kind is xml:
            content = node.content
            self.static(
                content if isinstance(content, bytes) else str(content).encode()
            )
        elif kind is bytes:
            self.walk(node.decode("utf-8"), inAttribute)
        elif node is None:
            return
        elif kind in (int, float, bool, Decimal):
            self.walk(str(node), inAttribute)
        elif kind is Entity:
            self.static(node.markup().encode())
        elif kind is Proto or kind is Tag:
            self.walkTag(Tag(node) if kind is Proto else node, inAttribute)
        elif kind is Comment:
            self.static(b"<!--")
            self.walk(node.children, False)
            self.static(b"-->")
        elif kind is slot:
            compiled = slot(
                node.name,
                node.default,
                node.filename,
                node.lineNumber,
                node.columnNumber,
            )
            compiled.children = self.sub(node.children, inAttribute)
            self.dynamic(compiled)
        elif kind is cached:
            if inAttribute:
                raise TypeError(
                    f"a cached fragment cannot be inside an attribute value: {node!r}"
                )
            self.dynamic(node.withChildren(self.sub(node.children, False)))
        else:
            # Directives, render functions, fragments, URLs, Deferreds...:
            # whatever depends on the request is rendered per request.
            self.dynamic(node)

    def walkTag(self, tag: Tag, inAttribute: bool) -> None:
        macro = tag.macro
        if macro:
            self.usedMacros = True
            self.walk(runMacro(macro, self.ctx, tag), inAttribute)
            return
        if (
            _isSet(tag.data)
            or _isSet(tag.render)
            or _isSet(tag.pattern)
            or _isSet(tag.remember)
            or _isSet(tag.key)
            or tag.slotData
        ):
            compiled = tag.clone(deep=False)
            compiled.children = self.sub(tag.children, inAttribute)
            self.dynamic(compiled)
            return
        name = tag.tagName
        if not name:
            self.walk(tag.children, inAttribute)
            return
        if inAttribute:
            raise TypeError(
                f"a tag cannot be rendered inside an attribute value: {tag!r}"
            )
        forms = tagForms(name)
        self.static(forms.open)
        for key, value in tag.attributes.items():
            if value is None:
                continue
            self.static(b" " + str(key).encode() + b'="')
            compiledValue = self.sub(value, True)
            if all(type(item) is _Static for item in compiledValue):
                self.static(b"".join(compiledValue))
            else:
                self.dynamic(_AttrValue(compiledValue))
            self.static(b'"')
        if tag.children:
            self.static(b">")
            self.walk(tag.children, False)
            self.static(forms.end)
        else:
            self.static(forms.emptyEnd)


def _isSet(value: Any) -> bool:
    return value is not Unset and value is not None


def precompile(stan: Any, ctx: Optional[WebContext] = None) -> List[Any]:
    """
    Precompile C{stan} (macros are found through C{ctx}'s
    L{IMacroFactory}).

    @return: the list the render engine walks.
    """
    return precompileWithMacros(stan, ctx)[0]


def precompileWithMacros(stan: Any, ctx: Optional[WebContext] = None) -> tuple:
    """
    Like L{precompile}, and also say whether a macro ran (the result then
    depends on the macro factory).

    @return: C{(compiled, usedMacros)}
    """
    precompileContext = WovenContext(precompile=True)
    if ctx is not None:
        factory = IMacroFactory(ctx, None)
        if factory is not None:
            precompileContext.remember(factory, IMacroFactory)
    compiler = _Precompiler(precompileContext)
    compiler.walk(stan, False)
    return compiler.result(), compiler.usedMacros
