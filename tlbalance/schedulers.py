# -*- test-case-name: tests.unit.test_schedulers -*-
"""
Schedulers: how one tier of backends shares new connections. Smooth weighted
round robin, weighted least connections, consistent source hashing and power
of two random choices.
"""

from __future__ import annotations

import random as _random
from bisect import bisect_left
from hashlib import blake2b
from math import gcd
from typing import (
    TYPE_CHECKING,
    Callable,
    Container,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
)

from zope.interface import Interface, implementer

if TYPE_CHECKING:
    from tlbalance.backends import Backend


class IScheduler(Interface):
    """
    Chooses a backend of one tier for a new connection.

    A scheduler is built with the tier's full list of backends and skips the
    ones that are not available (down, draining, in maintenance, weight 0,
    full) or that the caller excludes.
    """

    def pick(
        clientKey: Optional[bytes],  # noqa: N805
        exclude: Container[Backend],
    ) -> Optional[Backend]:
        """
        Choose a backend.

        @param clientKey: the packed client IP, or C{None} for unix clients.
        @param exclude: backends not to choose (already tried).
        @return: the backend, or C{None} when none can be chosen.
        """


def _lessLoaded(a: Backend, b: Backend) -> bool:
    # active/weight compared without division: exact, and no float ties.
    return a.active * b.weight < b.active * a.weight


@implementer(IScheduler)
class RoundRobinScheduler:
    """
    Smooth weighted round robin (as nginx does it): with weights 5, 1, 1 the
    choices interleave (a a b a c a a) instead of coming in bursts.

    A backend that was unavailable starts again from nothing, so coming back
    does not earn it a burst of connections.
    """

    def __init__(self, backends: Sequence[Backend]) -> None:
        """
        @param backends: the tier's backends.
        """
        self.backends = tuple(backends)
        self._current: Dict[Backend, int] = {b: 0 for b in self.backends}

    def pick(
        self, clientKey: Optional[bytes], exclude: Container[Backend] = ()
    ) -> Optional[Backend]:
        """
        See L{IScheduler.pick}; C{clientKey} is not used.
        """
        total = 0
        best: Optional[Backend] = None
        for backend in self.backends:
            if not backend.available():
                self._current[backend] = 0
                continue
            if backend in exclude:
                continue
            self._current[backend] += backend.weight
            total += backend.weight
            if best is None or self._current[backend] > self._current[best]:
                best = backend
        if best is not None:
            self._current[best] -= total
        return best


@implementer(IScheduler)
class LeastConnScheduler:
    """
    The backend with the fewest active connections for its weight; ties go
    round robin, so an idle farm is not all sent to the first backend.
    """

    def __init__(self, backends: Sequence[Backend]) -> None:
        """
        @param backends: the tier's backends.
        """
        self.backends = tuple(backends)
        self._last = -1

    def pick(
        self, clientKey: Optional[bytes], exclude: Container[Backend] = ()
    ) -> Optional[Backend]:
        """
        See L{IScheduler.pick}; C{clientKey} is not used.
        """
        count = len(self.backends)
        best: Optional[Backend] = None
        bestIndex = -1
        # Scanning from just after the last choice and keeping the first of
        # equals is what makes ties rotate.
        for step in range(1, count + 1):
            index = (self._last + step) % count
            backend = self.backends[index]
            if not backend.available() or backend in exclude:
                continue
            if best is None or _lessLoaded(backend, best):
                best, bestIndex = backend, index
        if best is not None:
            self._last = bestIndex
        return best


def _hash64(data: bytes) -> int:
    # A stable hash: Python's hash() is randomised per process, and every
    # balancer (and every restart) must map a client to the same backend.
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


@implementer(IScheduler)
class SourceHashScheduler:
    """
    Consistent hashing of the client address: the same client goes to the
    same backend, and when a backend goes away only its clients move.

    Each backend owns points on a ring in proportion to its weight (named
    after the backend, so balancers with the same backend names agree). A
    client's key is hashed onto the ring and walks clockwise to the first
    available, not excluded backend. Clients without a key (unix sockets) go
    round robin.

    @cvar pointsPerWeight: ring points per unit of weight, after dividing
        the weights by their greatest common divisor.
    @cvar maxPoints: the ring's size is kept near this for large weights.
    """

    pointsPerWeight = 160
    maxPoints = 65536

    def __init__(self, backends: Sequence[Backend]) -> None:
        """
        @param backends: the tier's backends.
        """
        self.backends = tuple(backends)
        self._fallback = RoundRobinScheduler(self.backends)
        self._weights: Optional[Tuple[int, ...]] = None
        self._hashes: List[int] = []
        self._owners: List[Backend] = []

    def pick(
        self, clientKey: Optional[bytes], exclude: Container[Backend] = ()
    ) -> Optional[Backend]:
        """
        See L{IScheduler.pick}.
        """
        if clientKey is None:
            return self._fallback.pick(clientKey, exclude)
        if not any(b.available() and b not in exclude for b in self.backends):
            return None
        self._buildRing()
        size = len(self._hashes)
        start = bisect_left(self._hashes, _hash64(clientKey))
        for step in range(size):
            owner = self._owners[(start + step) % size]
            if owner.available() and owner not in exclude:
                return owner
        return None

    def _buildRing(self) -> None:
        # Weights can change at run time; health cannot move points (that
        # would move other backends' clients), only weights do.
        weights = tuple(b.weight for b in self.backends)
        if weights == self._weights:
            return
        self._weights = weights
        divisor = 0
        for weight in weights:
            divisor = gcd(divisor, weight)
        units = sum(weights) // divisor if divisor else 0
        perUnit = max(1, min(self.pointsPerWeight, self.maxPoints // max(units, 1)))
        points = []
        for backend in self.backends:
            if backend.weight == 0:
                continue
            name = backend.name.encode("utf-8")
            for i in range(backend.weight // divisor * perUnit):
                points.append((_hash64(b"%s#%d" % (name, i)), backend))
        points.sort(key=lambda point: point[0])
        self._hashes = [h for h, _ in points]
        self._owners = [b for _, b in points]


@implementer(IScheduler)
class RandomTwoChoicesScheduler:
    """
    Power of two random choices: draw two different backends at random
    (weighted by weight) and take the one with fewer active connections for
    its weight. Nearly as good as least connections without its herd of
    balancers all choosing the same idle backend.
    """

    def __init__(
        self, backends: Sequence[Backend], random: Optional[_random.Random] = None
    ) -> None:
        """
        @param backends: the tier's backends.
        @param random: the source of randomness; a fresh L{random.Random}
            when not given (tests pass a seeded one).
        """
        self.backends = tuple(backends)
        self._random = random if random is not None else _random.Random()

    def pick(
        self, clientKey: Optional[bytes], exclude: Container[Backend] = ()
    ) -> Optional[Backend]:
        """
        See L{IScheduler.pick}; C{clientKey} is not used.
        """
        candidates = [b for b in self.backends if b.available() and b not in exclude]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        first = self._draw(candidates)
        second = self._draw([b for b in candidates if b is not first])
        return second if _lessLoaded(second, first) else first

    def _draw(self, candidates: Sequence[Backend]) -> Backend:
        point = self._random.random() * sum(b.weight for b in candidates)
        for backend in candidates:
            point -= backend.weight
            if point < 0:
                return backend
        return candidates[-1]


_SCHEDULERS: Dict[str, Callable[[Sequence[Backend]], IScheduler]] = {
    "roundrobin": RoundRobinScheduler,
    "leastconn": LeastConnScheduler,
    "source": SourceHashScheduler,
    "random": RandomTwoChoicesScheduler,
}


def schedulerFor(name: str) -> Callable[[Sequence[Backend]], IScheduler]:
    """
    The scheduler class for an algorithm name.

    @param name: C{roundrobin}, C{leastconn}, C{source} or C{random}.
    @return: a callable building the scheduler from a tier's backends.
    @raise ValueError: naming the valid choices when C{name} is none of them.
    """
    try:
        return _SCHEDULERS[name]
    except KeyError:
        choices = ", ".join(sorted(_SCHEDULERS))
        raise ValueError(
            f"unknown scheduling algorithm {name!r}; choose one of {choices}"
        ) from None
