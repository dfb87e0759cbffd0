"""
Nevow's component helpers, which are zope.interface and Twisted's own.

Nevow's C{implements(...)} class advice cannot work on Python 3: use the
C{@implementer(...)} class decorator instead.
"""

from __future__ import annotations

from twisted.python.components import Adapter, Componentized, registerAdapter
from zope.interface import Interface, implementer, providedBy

__all__ = [
    "Adapter",
    "Componentized",
    "Interface",
    "implementer",
    "providedBy",
    "registerAdapter",
]
