# -*- test-case-name: tests.unit.test_cachememory -*-
"""
What the render cache's in-process structures cost in memory, counted the
way CPython allocates it (C{sys.getsizeof}), so that a byte budget bounds
real memory; and the maps of keys kept beside a store, bounded by it too.

On PyPy, which has no C{sys.getsizeof}, the costs are estimates of the same
shape (length plus a fixed overhead per object).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Any, Callable, Dict, Tuple

from twisted.internet.interfaces import IReactorTime

__all__ = [
    "CPYTHON_SIZES",
    "DICT_BASE",
    "DICT_ITEM",
    "FLOAT",
    "ORDERED_BASE",
    "ORDERED_ITEM",
    "SET_BASE",
    "SET_ITEM",
    "Deadlines",
    "KeyMemo",
    "footprint",
    "sizeOf",
]


#: Whether C{sys.getsizeof} answers (CPython), or sizes are estimated.
CPYTHON_SIZES = sys.getsizeof(b"", -1) >= 0


def _estimate(obj: Any) -> int:
    # For interpreters without sys.getsizeof (PyPy): a header and the data.
    if isinstance(obj, (bytes, str)):
        return 48 + len(obj)
    if isinstance(obj, (tuple, frozenset)):
        return 48 + 16 * len(obj)
    return 48


def sizeOf(obj: Any) -> int:
    """
    The bytes C{obj} itself occupies, not counting what it refers to.
    """
    size: int = sys.getsizeof(obj, -1)
    return size if size >= 0 else _estimate(obj)


def footprint(*objects: Any) -> int:
    """
    The bytes C{objects} occupy with everything their tuples and
    frozensets hold, each object counted once however often it is reached.
    """
    seen = set()
    total = 0
    pending = list(objects)
    getsizeof = sys.getsizeof
    while pending:
        obj = pending.pop()
        identity = id(obj)
        if identity in seen:
            continue
        seen.add(identity)
        size: int = getsizeof(obj, -1)
        total += size if size >= 0 else _estimate(obj)
        kind = type(obj)
        if kind is tuple or kind is frozenset:
            pending.extend(obj)
    return total


def _perItem(
    make: Callable[[], Any], add: Callable[[Any, int], None], fallback: int
) -> Tuple[int, int]:
    """
    C{(base, item)}: a container made by C{make} holding C{n} items takes at
    most C{base + n * item} bytes, C{item} being the cost of an item just
    after the container's table has grown (the worst moment).
    """
    container = make()
    empty = sys.getsizeof(container, -1)
    if empty < 0:
        return 8 * fallback, fallback
    sizes = [empty]
    for n in range(1, 200):
        add(container, n)
        sizes.append(sys.getsizeof(container))
    item = max(-(-(size - empty) // n) for n, size in enumerate(sizes) if n >= 32)
    base = max(size - n * item for n, size in enumerate(sizes))
    return base, item


def _setItem(container: Any, n: int) -> None:
    container[n] = None


#: Bytes per key of an OrderedDict, a dict and a set (their tables, and an
#: OrderedDict's links), beyond the objects the keys and values are; and
#: what an OrderedDict and a set cost empty or nearly so.
ORDERED_BASE, ORDERED_ITEM = _perItem(OrderedDict, _setItem, 120)
DICT_BASE, DICT_ITEM = _perItem(dict, _setItem, 64)
SET_BASE, SET_ITEM = _perItem(set, set.add, 64)

#: A float (times kept per key).
FLOAT = sizeOf(0.5)


class KeyMemo(Dict[Tuple[Any, ...], bytes]):
    """
    Keys worked out before, by what each depends on (a tuple of what the
    request said), within a budget: the memory of the tuples, what they
    hold, and the keys. When full it is forgotten all at once, and keys are
    worked out again as they are asked for. Reading is a plain dict look-up.
    """

    __slots__ = ("maxBytes", "maxItems", "bytes")

    def __init__(self, maxBytes: int, maxItems: int) -> None:
        super().__init__()
        self.maxBytes = maxBytes
        self.maxItems = maxItems
        self.bytes = 0

    def remember(self, inputs: Tuple[Any, ...], key: bytes) -> None:
        """
        Keep C{key} as the key for C{inputs}.
        """
        if inputs in self:
            return
        cost = footprint(inputs, key) + DICT_ITEM
        if cost > self.maxBytes:
            return
        if self.bytes + cost > self.maxBytes or len(self) >= self.maxItems:
            self.clear()
            self.bytes = 0
        self[inputs] = key
        self.bytes += cost


def _holdCost(key: bytes) -> int:
    return sizeOf(key) + FLOAT + ORDERED_ITEM


class Deadlines:
    """
    Keys held until a time each: keys found uncacheable, keys whose refresh
    just failed. At most C{maxItems} keys and C{maxBytes} of them (with
    their times and the map's own cost); beyond either, the least recently
    held keys are let go.
    """

    def __init__(self, clock: IReactorTime, maxItems: int, maxBytes: int) -> None:
        self.clock = clock
        self.maxItems = maxItems
        self.maxBytes = maxBytes
        self.bytes = 0
        self._until: OrderedDict[bytes, float] = OrderedDict()

    def hold(self, key: bytes, seconds: float) -> None:
        """
        Hold C{key} for C{seconds} from now.
        """
        until = self._until
        if key in until:
            del until[key]
        else:
            self.bytes += _holdCost(key)
        until[key] = self.clock.seconds() + seconds
        while len(until) > self.maxItems or (self.bytes > self.maxBytes and until):
            oldest, _ = until.popitem(last=False)
            self.bytes -= _holdCost(oldest)

    def holds(self, key: bytes) -> bool:
        """
        Is C{key} held (or was it, so recently that it has not been looked
        at since)? A quick check, for the hot path.
        """
        return key in self._until

    def active(self, key: bytes) -> bool:
        """
        Is C{key} held now? Forgets it once its time has passed.
        """
        until = self._until.get(key)
        if until is None:
            return False
        if self.clock.seconds() < until:
            return True
        del self._until[key]
        self.bytes -= _holdCost(key)
        return False

    def __len__(self) -> int:
        return len(self._until)
