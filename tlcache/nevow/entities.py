"""
The HTML character entities as stan L{Entity} objects: C{entities.nbsp},
C{entities.copy}, ... (built from the standard library's table).
"""

from __future__ import annotations

from html.entities import name2codepoint
from typing import Dict, Union

from tlcache.nevow.stan import Entity

__all__ = ["getEntity"]

_byNumber: Dict[int, Entity] = {}

for _name, _number in sorted(name2codepoint.items()):
    _entity = Entity(_name, _number)
    _byNumber.setdefault(_number, _entity)
    globals()[_name] = _entity
    __all__.append(_name)
del _name, _number, _entity


def getEntity(num: Union[int, str]) -> Entity:
    """
    The entity for a code point (or a one-character string).

    @raise KeyError: there is no named entity for it.
    """
    if isinstance(num, str):
        num = ord(num)
    return _byNumber[num]
