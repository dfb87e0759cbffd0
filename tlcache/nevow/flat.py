# -*- test-case-name: tests.unit.test_nevow_flat -*-
"""
Flattening: stan trees to UTF-8 bytes.

L{precompile} turns a tree into static byte chunks and the few dynamic
nodes; L{flatten}, L{flattenString} and L{flattenFactory} render a tree (or
a precompiled one). Text is escaped everywhere, attribute values included;
only L{stan.xml} and L{stan.raw} pass through as they are.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, fail, succeed

from tlcache.nevow import accessors as _accessors
from tlcache.nevow._flatten import (
    SynchronousRenderError,
    UnsupportedTypeError,
    flattenToBytes,
    getFlattener,
    registerFlattener,
)
from tlcache.nevow._precompile import precompile
from tlcache.nevow.context import WebContext, WovenContext

__all__ = [
    "SynchronousRenderError",
    "UnsupportedTypeError",
    "flatten",
    "flattenFactory",
    "flattenString",
    "getFlattener",
    "precompile",
    "registerFlattener",
]

# The accessors module registers the data adapters the flattener relies on.
del _accessors


def _context(ctx: Optional[WebContext]) -> WebContext:
    return WovenContext() if ctx is None else ctx


def flatten(stan: Any, ctx: Optional[WebContext] = None) -> bytes:
    """
    Render C{stan} now.

    @raise SynchronousRenderError: rendering needs a L{Deferred} that has
        not fired.
    """
    result = flattenToBytes(stan, _context(ctx), synchronous=True)
    assert isinstance(result, bytes)
    return result


def flattenString(stan: Any, ctx: Optional[WebContext] = None) -> Deferred:
    """
    Render C{stan}, waiting for any L{Deferred} in it.

    @return: L{Deferred} firing with the bytes.
    """
    try:
        result = flattenToBytes(stan, _context(ctx))
    except BaseException:
        return fail()
    if isinstance(result, Deferred):
        return result
    return succeed(result)


def flattenFactory(
    stan: Any,
    ctx: WebContext,
    writer: Callable[[bytes], Any],
    finisher: Callable[[Any], Any],
) -> Deferred:
    """
    Nevow's rendering entry point: render C{stan}, give the bytes to
    C{writer}, then call C{finisher}.

    @return: L{Deferred} firing with what C{finisher} returns.
    """

    def written(body: bytes) -> Any:
        writer(body)
        return finisher(b"")

    return flattenString(stan, ctx).addCallback(written)
