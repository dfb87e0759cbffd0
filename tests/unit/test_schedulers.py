"""
Tests for L{tlbalance.schedulers}.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tlbalance.backends import AdminState, Backend
from tlbalance.schedulers import (
    IScheduler,
    LeastConnScheduler,
    RandomTwoChoicesScheduler,
    RoundRobinScheduler,
    SourceHashScheduler,
    schedulerFor,
)


def makeBackends(*weights: int) -> List[Backend]:
    """
    Backends called C{a}, C{b}, C{c}, ... with the given weights.
    """
    clock = Clock()
    return [
        Backend(
            name=chr(ord("a") + i),
            endpoint=f"tcp:host=10.0.0.{i + 1}:port=80",
            clock=clock,
            weight=weight,
        )
        for i, weight in enumerate(weights)
    ]


def names(backends: Sequence[Optional[Backend]]) -> str:
    """
    The picks as a string of names, C{-} for none.
    """
    return "".join(b.name if b is not None else "-" for b in backends)


def clientKeys(count: int) -> List[bytes]:
    """
    C{count} distinct, deterministic packed IPv4 addresses.
    """
    return [struct.pack("!I", 0x0A000000 + i * 7919) for i in range(count)]


class SchedulerForTests(SynchronousTestCase):
    """
    L{schedulerFor} maps algorithm names to schedulers.
    """

    def test_names(self) -> None:
        """
        The four algorithm names give their schedulers, each providing
        L{IScheduler}.
        """
        expected = {
            "roundrobin": RoundRobinScheduler,
            "leastconn": LeastConnScheduler,
            "source": SourceHashScheduler,
            "random": RandomTwoChoicesScheduler,
        }
        for name, cls in expected.items():
            factory = schedulerFor(name)
            self.assertIs(factory, cls)
            self.assertTrue(verifyObject(IScheduler, factory(makeBackends(1, 1))))

    def test_unknown(self) -> None:
        """
        An unknown name is refused with the valid choices in the message.
        """
        error = self.assertRaises(ValueError, schedulerFor, "weighted")
        message = str(error)
        self.assertIn("'weighted'", message)
        for name in ["leastconn", "random", "roundrobin", "source"]:
            self.assertIn(name, message)


class CommonSchedulerTests:
    """
    What every scheduler does with unavailable and excluded backends.
    """

    def scheduler(self, backends: Sequence[Backend]) -> Any:
        """
        The scheduler under test, built from C{backends}.
        """
        raise AssertionError("each test case builds its own scheduler")

    def test_nothingAvailable(self) -> None:
        """
        With every backend down, draining, in maintenance or weight 0 there is
        no pick; an empty tier has none either.
        """
        backends = makeBackends(1, 1, 1, 0)
        backends[0].markDown("refused")
        backends[1].setAdminState(AdminState.DRAIN)
        backends[2].setAdminState(AdminState.MAINT)
        scheduler = self.scheduler(backends)
        assert isinstance(self, SynchronousTestCase)
        self.assertIsNone(scheduler.pick(b"\x7f\x00\x00\x01", ()))
        self.assertIsNone(scheduler.pick(None, ()))
        self.assertIsNone(self.scheduler([]).pick(b"\x7f\x00\x00\x01", ()))

    def test_skipsUnavailableAndExcluded(self) -> None:
        """
        Only the available, not excluded backend is ever chosen.
        """
        backends = makeBackends(1, 1, 1, 1)
        backends[0].markDown("refused")
        backends[1].maxconn = 1
        backends[1].connectionStarted()
        scheduler = self.scheduler(backends)
        picks = {scheduler.pick(key, [backends[2]]) for key in clientKeys(50) + [None]}
        assert isinstance(self, SynchronousTestCase)
        self.assertEqual(picks, {backends[3]})

    def test_excludingEverything(self) -> None:
        """
        Excluding every available backend gives no pick.
        """
        backends = makeBackends(1, 2)
        scheduler = self.scheduler(backends)
        assert isinstance(self, SynchronousTestCase)
        self.assertIsNone(scheduler.pick(b"\x01\x01\x01\x01", backends))


class RoundRobinTests(CommonSchedulerTests, SynchronousTestCase):
    """
    L{RoundRobinScheduler}: smooth weighted round robin.
    """

    def scheduler(self, backends: Sequence[Backend]) -> RoundRobinScheduler:
        """
        A L{RoundRobinScheduler} of C{backends}.
        """
        return RoundRobinScheduler(backends)

    def test_equalWeights(self) -> None:
        """
        Equal weights take turns.
        """
        scheduler = self.scheduler(makeBackends(1, 1, 1))
        self.assertEqual(names([scheduler.pick(None, ()) for _ in range(6)]), "abcabc")

    def test_smooth(self) -> None:
        """
        Weights 5, 1, 1 interleave (a a b a c a a) instead of sending five in
        a row to C{a}: every run of seven picks has the 5:1:1 share.
        """
        scheduler = self.scheduler(makeBackends(5, 1, 1))
        picks = names([scheduler.pick(None, ()) for _ in range(700)])
        self.assertEqual(picks, "aabacaa" * 100)
        for start in range(0, 694):
            window = Counter(picks[start : start + 7])
            self.assertEqual(window, {"a": 5, "b": 1, "c": 1})

    def test_skipsDown(self) -> None:
        """
        While a backend is down the others share its turns.
        """
        backends = makeBackends(1, 1, 1)
        scheduler = self.scheduler(backends)
        backends[1].markDown("refused")
        self.assertEqual(names([scheduler.pick(None, ()) for _ in range(4)]), "acac")

    def test_noBurstOnReturn(self) -> None:
        """
        A heavy backend coming back after a long time down gets its share,
        not a burst making up for the time it missed.
        """
        backends = makeBackends(3, 1)
        scheduler = self.scheduler(backends)
        for _ in range(5):
            scheduler.pick(None, ())
        backends[0].markDown("refused")
        for _ in range(50):
            scheduler.pick(None, ())
        backends[0].markUp("ok")
        picks = names([scheduler.pick(None, ()) for _ in range(8)])
        self.assertNotIn("aaaa", picks)
        self.assertEqual(Counter(picks), {"a": 6, "b": 2})

    def test_weightChange(self) -> None:
        """
        A weight changed at run time applies to the next picks.
        """
        backends = makeBackends(1, 1)
        scheduler = self.scheduler(backends)
        backends[0].weight = 3
        picks = names([scheduler.pick(None, ()) for _ in range(400)])
        self.assertEqual(Counter(picks), {"a": 300, "b": 100})


class LeastConnTests(CommonSchedulerTests, SynchronousTestCase):
    """
    L{LeastConnScheduler}: fewest active connections for the weight.
    """

    def scheduler(self, backends: Sequence[Backend]) -> LeastConnScheduler:
        """
        A L{LeastConnScheduler} of C{backends}.
        """
        return LeastConnScheduler(backends)

    def test_fewestConnections(self) -> None:
        """
        The backend with the fewest active connections is chosen.
        """
        backends = makeBackends(1, 1, 1)
        for backend, active in zip(backends, [3, 1, 2]):
            backend.active = active
        self.assertIs(self.scheduler(backends).pick(None, ()), backends[1])

    def test_weighted(self) -> None:
        """
        Load is connections per unit of weight: a weight-3 backend with 5
        connections is less loaded than a weight-1 backend with 2.
        """
        backends = makeBackends(3, 1)
        backends[0].active = 5
        backends[1].active = 2
        self.assertIs(self.scheduler(backends).pick(None, ()), backends[0])
        backends[0].active = 7
        self.assertIs(self.scheduler(backends).pick(None, ()), backends[1])

    def test_tiesRotate(self) -> None:
        """
        Equally loaded backends take turns: short connections on an idle farm
        do not all land on the first backend.
        """
        backends = makeBackends(1, 1, 1)
        scheduler = self.scheduler(backends)
        self.assertEqual(names([scheduler.pick(None, ()) for _ in range(6)]), "abcabc")

    def test_tiesRotateAmongLeastLoaded(self) -> None:
        """
        Ties rotate among the least loaded only.
        """
        backends = makeBackends(1, 1, 1)
        backends[1].active = 4
        scheduler = self.scheduler(backends)
        self.assertEqual(names([scheduler.pick(None, ()) for _ in range(4)]), "acac")

    def test_followsConnections(self) -> None:
        """
        As connections start on the chosen backends, the picks spread them
        evenly by weight.
        """
        backends = makeBackends(2, 1)
        scheduler = self.scheduler(backends)
        for _ in range(30):
            chosen = scheduler.pick(None, ())
            assert chosen is not None
            chosen.connectionStarted()
        self.assertEqual([b.active for b in backends], [20, 10])


class SourceHashTests(CommonSchedulerTests, SynchronousTestCase):
    """
    L{SourceHashScheduler}: consistent hashing of the client address.
    """

    def scheduler(self, backends: Sequence[Backend]) -> SourceHashScheduler:
        """
        A L{SourceHashScheduler} of C{backends}.
        """
        return SourceHashScheduler(backends)

    def assignments(
        self, scheduler: SourceHashScheduler, keys: Sequence[bytes]
    ) -> Dict[bytes, Optional[Backend]]:
        """
        Where each key goes.
        """
        return {key: scheduler.pick(key, ()) for key in keys}

    def test_sticky(self) -> None:
        """
        A client goes to the same backend every time, and another balancer
        (or a restart) with the same backend names agrees.
        """
        keys = clientKeys(200)
        first = self.assignments(self.scheduler(makeBackends(1, 1, 1, 1)), keys)
        scheduler = self.scheduler(makeBackends(1, 1, 1, 1))
        for _ in range(3):
            again = self.assignments(scheduler, keys)
            self.assertEqual(
                {k: b.name for k, b in again.items() if b is not None},
                {k: b.name for k, b in first.items() if b is not None},
            )
        self.assertEqual(len(first), 200)

    def test_onlyItsClientsMove(self) -> None:
        """
        When one of five backends goes down only the clients that were on it
        move, and they come back when it does.
        """
        backends = makeBackends(1, 1, 1, 1, 1)
        scheduler = self.scheduler(backends)
        keys = clientKeys(2000)
        before = self.assignments(scheduler, keys)
        gone = backends[2]
        gone.markDown("refused")
        after = self.assignments(scheduler, keys)
        moved = {k for k in keys if before[k] is not after[k]}
        onGone = {k for k in keys if before[k] is gone}
        self.assertEqual(moved, onGone)
        self.assertGreater(len(onGone), 200)
        self.assertNotIn(gone, after.values())
        self.assertNotIn(None, after.values())
        gone.markUp("ok")
        self.assertEqual(self.assignments(scheduler, keys), before)

    def test_excludedMoveLikeDown(self) -> None:
        """
        Excluding a backend moves only its clients, as if it were down.
        """
        backends = makeBackends(1, 1, 1)
        scheduler = self.scheduler(backends)
        keys = clientKeys(500)
        before = self.assignments(scheduler, keys)
        for key in keys:
            chosen = scheduler.pick(key, [backends[0]])
            if before[key] is backends[0]:
                self.assertIsNot(chosen, backends[0])
            else:
                self.assertIs(chosen, before[key])

    def test_proportionalToWeight(self) -> None:
        """
        Clients spread roughly in proportion to the weights.
        """
        backends = makeBackends(1, 2, 3, 2)
        scheduler = self.scheduler(backends)
        counts = Counter(
            b.name for b in self.assignments(scheduler, clientKeys(8000)).values() if b
        )
        total = sum(b.weight for b in backends)
        for backend in backends:
            expected = 8000 * backend.weight / total
            self.assertTrue(
                0.7 * expected < counts[backend.name] < 1.3 * expected,
                (backend.name, counts[backend.name], expected),
            )

    def test_weightChange(self) -> None:
        """
        Raising a backend's weight at run time gives it more clients.
        """
        backends = makeBackends(1, 1)
        scheduler = self.scheduler(backends)
        keys = clientKeys(2000)
        before = Counter(
            b.name for b in self.assignments(scheduler, keys).values() if b
        )
        backends[0].weight = 4
        after = Counter(b.name for b in self.assignments(scheduler, keys).values() if b)
        self.assertGreater(after["a"], before["a"] + 500)

    def test_unixClientsRoundRobin(self) -> None:
        """
        Clients without an address (unix sockets) take turns.
        """
        scheduler = self.scheduler(makeBackends(1, 1, 1))
        self.assertEqual(names([scheduler.pick(None, ()) for _ in range(6)]), "abcabc")

    def test_ipv6Keys(self) -> None:
        """
        16-byte IPv6 keys work and stick like IPv4 ones.
        """
        scheduler = self.scheduler(makeBackends(1, 1, 1))
        key = bytes(range(16))
        self.assertEqual({scheduler.pick(key, ()) for _ in range(5)}.__len__(), 1)


class ScriptedRandom(random.Random):
    """
    A L{random.Random} whose C{random()} returns the given values in turn.
    """

    def __new__(cls, values: Sequence[float]) -> ScriptedRandom:
        # PyPy's Random.__new__ seeds itself from the constructor's
        # arguments; CPython's ignores them. Seed with a constant on both.
        return super().__new__(cls, 0)

    def __init__(self, values: Sequence[float]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        """
        The next scripted value.
        """
        return self.values.pop(0)


class RandomTwoChoicesTests(CommonSchedulerTests, SynchronousTestCase):
    """
    L{RandomTwoChoicesScheduler}: power of two random choices.
    """

    def scheduler(self, backends: Sequence[Backend]) -> RandomTwoChoicesScheduler:
        """
        A L{RandomTwoChoicesScheduler} of C{backends} with a seeded random source.
        """
        return RandomTwoChoicesScheduler(backends, random.Random(1234))

    def test_lessLoadedOfTwo(self) -> None:
        """
        Of the two backends drawn, the one with fewer connections for its
        weight is chosen.
        """
        backends = makeBackends(1, 1, 1)
        backends[0].active = 5
        # 0.1 draws a from [a, b, c]; 0.9 draws c from [b, c].
        scheduler = RandomTwoChoicesScheduler(backends, ScriptedRandom([0.1, 0.9]))
        self.assertIs(scheduler.pick(None, ()), backends[2])
        backends[0].active = 0
        backends[2].active = 5
        scheduler = RandomTwoChoicesScheduler(backends, ScriptedRandom([0.1, 0.9]))
        self.assertIs(scheduler.pick(None, ()), backends[0])

    def test_busiestNeverChosen(self) -> None:
        """
        The two draws are different backends, so the single busiest of three
        is never chosen, while both others are.
        """
        backends = makeBackends(1, 1, 1)
        backends[0].active = 10
        scheduler = self.scheduler(backends)
        picks = Counter(names([scheduler.pick(None, ()) for _ in range(300)]))
        self.assertEqual(set(picks), {"b", "c"})

    def test_drawsWeighted(self) -> None:
        """
        Draws follow the weights: among idle backends weighted 3 and 1, the
        heavier one is chosen about three times in four.
        """
        backends = makeBackends(3, 1)
        scheduler = self.scheduler(backends)
        picks = Counter(names([scheduler.pick(None, ()) for _ in range(4000)]))
        self.assertTrue(2600 < picks["a"] < 3400, picks)

    def test_oneAvailable(self) -> None:
        """
        With one available backend, it is chosen without drawing.
        """
        backends = makeBackends(1, 1)
        backends[1].markDown("refused")
        scheduler = RandomTwoChoicesScheduler(backends, ScriptedRandom([]))
        self.assertIs(scheduler.pick(None, ()), backends[0])

    def test_defaultRandom(self) -> None:
        """
        Without an injected random source the scheduler still spreads
        connections over the backends.
        """
        backends = makeBackends(1, 1)
        scheduler = RandomTwoChoicesScheduler(backends)
        picks = set()
        for _ in range(50):
            chosen = scheduler.pick(None, ())
            assert chosen is not None
            chosen.connectionStarted()
            picks.add(chosen)
        self.assertEqual(picks, set(backends))
